"""
The PROXY protocol codec (txrouter.wire.proxy): every mistake named,
whether the header arrives in one write or byte by byte; any split of a
valid header reads the same; nothing but the parser's error comes out of
arbitrary bytes, and no more than one header's bytes are taken.
"""

import ipaddress
from struct import pack

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from txrouter.wire.proxy import (
    DEFAULT_MAX_TLV_BYTES, PP2_TYPE_ALPN, PP2_TYPE_AUTHORITY, PP2_TYPE_NOOP, PP2_TYPE_SSL, STUD,
    V1_MAX, V2_SIGNATURE, ProxyHeader, ProxyHeaderError, ProxyHeaderParser, StudPrefixParser,
    encodeV1, encodeV2, startsProxyHeader,
)

SIG = V2_SIGNATURE
INET = bytes([1, 2, 3, 4, 5, 6, 7, 8]) + pack("!HH", 1000, 443)


def v2(command: int, family: int, block: bytes, length=None) -> bytes:
    """
    A version 2 header with C{command} and C{family} bytes as given.
    """
    return SIG + bytes([command, family]) + pack("!H", len(block) if length is None else length) + block


def tlv(kind: int, value: bytes, length=None) -> bytes:
    return pack("!BH", kind, len(value) if length is None else length) + value


def wholly(data: bytes, parser=None):
    """
    Feed C{data} in one write.
    """
    return (parser or ProxyHeaderParser()).feed(data)


def byteByByte(data: bytes, parser=None):
    """
    Feed C{data} one byte at a time; the result of the last feed, which
    must be the first that is not L{None}.
    """
    parser = parser or ProxyHeaderParser()
    for i in range(len(data)):
        result = parser.feed(data[i:i + 1])
        if result is not None:
            assert i == len(data) - 1, f"done after {i + 1} of {len(data)} bytes"
            return result
    return None


# Valid headers


VALID = [
    (b"PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\r\n",
     ProxyHeader(1, "proxy", "tcp4", ("192.0.2.1", 56324), ("198.51.100.7", 443))),
    (b"PROXY TCP6 2001:DB8::1 ::1 0 65535\r\n",
     ProxyHeader(1, "proxy", "tcp6", ("2001:db8::1", 0), ("::1", 65535))),
    (b"PROXY TCP6 ::ffff:10.0.0.1 ::ffff:10.0.0.2 1 2\r\n",
     ProxyHeader(1, "proxy", "tcp6", ("::ffff:10.0.0.1", 1), ("::ffff:10.0.0.2", 2))),
    (b"PROXY UNKNOWN\r\n", ProxyHeader(1)),
    (b"PROXY UNKNOWN ffff:f...f:ffff 65535 whatever\r\n", ProxyHeader(1)),
    # The longest: 107 bytes with the CRLF.
    (b"PROXY UNKNOWN " + b"x" * (V1_MAX - 16) + b"\r\n", ProxyHeader(1)),
    (v2(0x21, 0x11, INET),
     ProxyHeader(2, "proxy", "tcp4", ("1.2.3.4", 1000), ("5.6.7.8", 443))),
    (v2(0x21, 0x21, bytes(15) + b"\x01" + bytes(15) + b"\x02" + pack("!HH", 7, 8)),
     ProxyHeader(2, "proxy", "tcp6", ("::1", 7), ("::2", 8))),
    (v2(0x21, 0x31, b"/run/a.sock".ljust(108, b"\0") + b"/b".ljust(108, b"\0")),
     ProxyHeader(2, "proxy", "unix", (b"/run/a.sock", None), (b"/b", None))),
    # UNSPEC: the connection's own addresses; TLVs all the same.
    (v2(0x21, 0x00, tlv(PP2_TYPE_AUTHORITY, b"a.example")),
     ProxyHeader(2, "proxy", None, None, None, ((PP2_TYPE_AUTHORITY, b"a.example"),))),
    # LOCAL: the block is skipped unread, whatever its family says.
    (v2(0x20, 0x00, b""), ProxyHeader(2, "local")),
    (v2(0x20, 0x11, b"junk of any length"), ProxyHeader(2, "local")),
    (v2(0x20, 0x99, b""), ProxyHeader(2, "local")),
    # TLVs: an empty one, one that fills the header exactly, SSL.
    (v2(0x21, 0x11, INET + tlv(PP2_TYPE_NOOP, b"") + tlv(PP2_TYPE_AUTHORITY, b"www.example.com")),
     ProxyHeader(2, "proxy", "tcp4", ("1.2.3.4", 1000), ("5.6.7.8", 443),
                 ((PP2_TYPE_NOOP, b""), (PP2_TYPE_AUTHORITY, b"www.example.com")))),
    (v2(0x21, 0x11, INET + tlv(PP2_TYPE_SSL, b"\x01\x00\x00\x00\x00")),
     ProxyHeader(2, "proxy", "tcp4", ("1.2.3.4", 1000), ("5.6.7.8", 443),
                 ((PP2_TYPE_SSL, b"\x01\x00\x00\x00\x00"),))),
    # The most TLV bytes allowed.
    (v2(0x21, 0x11, INET + tlv(0xE0, bytes(DEFAULT_MAX_TLV_BYTES - 3))),
     ProxyHeader(2, "proxy", "tcp4", ("1.2.3.4", 1000), ("5.6.7.8", 443),
                 ((0xE0, bytes(DEFAULT_MAX_TLV_BYTES - 3)),))),
]


@pytest.mark.parametrize("feed", [wholly, byteByByte])
@pytest.mark.parametrize("raw, expected", VALID, ids=range(len(VALID)))
def test_valid_headers(raw, expected, feed):
    """
    Each header reads as expected, and the bytes after it are left to the
    connection, in one write or byte by byte.
    """
    assert feed(raw) == (expected, b"")
    assert wholly(raw + b"GET / HTTP/1.1\r\n") == (expected, b"GET / HTTP/1.1\r\n")


def test_header_values():
    header = wholly(VALID[13][0])[0]
    assert header.authority == "www.example.com"
    assert header.tlv(PP2_TYPE_NOOP) == b""
    assert header.tlv(PP2_TYPE_ALPN) is None
    assert not header.clientTLS
    assert wholly(VALID[14][0])[0].clientTLS
    assert ProxyHeader(2, tlvs=((PP2_TYPE_AUTHORITY, b"\xff"),)).authority is None


def test_a_second_header_is_the_connections():
    """
    Bytes after the header, a second header among them, are not read.
    """
    raw = VALID[0][0]
    assert wholly(raw + raw) == (VALID[0][1], raw)


def test_nothing_more_after_the_header():
    parser = ProxyHeaderParser()
    parser.feed(VALID[0][0])
    with pytest.raises(RuntimeError):
        parser.feed(b"x")


def test_empty_writes_wait():
    parser = ProxyHeaderParser()
    assert parser.feed(b"") is None
    assert parser.feed(b"PROXY ") is None
    assert parser.feed(b"") is None
    assert parser.feed(b"UNKNOWN\r\n") == (ProxyHeader(1), b"")


# Mistakes


def v1(protocol=b"TCP4", source=b"1.2.3.4", destination=b"5.6.7.8", sport=b"1", dport=b"2") -> bytes:
    return b"PROXY %s %s %s %s %s\r\n" % (protocol, source, destination, sport, dport)


MALFORMED = [
    (b"GET / HTTP/1.1\r\n\r\n", "proxy_missing"),
    (b"\x16\x03\x01\x00\xa5", "proxy_missing"),
    (b"PROXZ TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "proxy_missing"),
    (b"PRO\r\n", "proxy_missing"),
    (b"PROXY\r\n", "proxy_malformed"),
    (b"PROXYTCP4 1.2.3.4 5.6.7.8 1 2\r\n", "proxy_malformed"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "proxy_malformed"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n", "proxy_malformed"),
    (b"PROXY TCP4 1.2.3.4\r5.6.7.8 1 2\r\n", "proxy_malformed"),
    (b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", "proxy_malformed"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", "proxy_malformed"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "proxy_malformed"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", "proxy_malformed"),
    (b"PROXY TCP4\r\n", "proxy_malformed"),
    (b"PROXY \r\n", "proxy_malformed"),
    (b"PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "proxy_malformed"),
    (b"PROXY\tTCP4 1.2.3.4 5.6.7.8 1 2\r\n", "proxy_malformed"),
    (v1(b"tcp4"), "proxy_malformed"),
    (v1(b"UDP4"), "proxy_unsupported"),
    (v1(b"UNKNOWNX"), "proxy_unsupported"),
    (v1(source=b"1.2.3.256"), "proxy_bad_address"),
    (v1(source=b"01.2.3.4"), "proxy_bad_address"),
    (v1(source=b"1.2.3"), "proxy_bad_address"),
    (v1(source=b"1.2.3.4\x00"), "proxy_bad_address"),
    (v1(destination=b"::1"), "proxy_bad_address"),
    (v1(destination=b"localhost"), "proxy_bad_address"),
    (v1(b"TCP6", b"::1", b"1.2.3.4"), "proxy_bad_address"),
    (v1(b"TCP6", b"fe80::1%eth0", b"::1"), "proxy_bad_address"),
    (v1(b"TCP6", b"::g", b"::1"), "proxy_bad_address"),
    (v1(sport=b"65536"), "proxy_bad_address"),
    (v1(sport=b"01"), "proxy_bad_address"),
    (v1(sport=b"+1"), "proxy_bad_address"),
    (v1(dport=b"-1"), "proxy_bad_address"),
    (v1(dport=b"1a"), "proxy_bad_address"),
    (v1(dport=b"\xd9\xa1"), "proxy_bad_address"),
    (v1(dport=b"100000"), "proxy_bad_address"),
    (b"PROXY UNKNOWN " + b"x" * (V1_MAX - 15) + b"\r\n", "proxy_too_long"),
    (b"PROXY UNKNOWN " + b"x" * 500, "proxy_too_long"),
    (SIG[:11] + b"X" + b"\x21\x11\x00\x0c" + INET, "proxy_missing"),
    (b"\r\nGET / HTTP/1.1\r\n", "proxy_missing"),
    (v2(0x11, 0x11, INET), "proxy_unsupported"),
    (v2(0x31, 0x11, INET), "proxy_unsupported"),
    (v2(0x22, 0x11, INET), "proxy_malformed"),
    (v2(0x2F, 0x11, INET), "proxy_malformed"),
    (v2(0x21, 0x41, INET), "proxy_unsupported"),
    (v2(0x21, 0x12, INET), "proxy_unsupported"),
    (v2(0x21, 0x10, INET), "proxy_unsupported"),
    (v2(0x21, 0x13, INET), "proxy_malformed"),
    (v2(0x21, 0x11, INET[:11]), "proxy_malformed"),
    (v2(0x21, 0x21, INET), "proxy_malformed"),
    (v2(0x21, 0x31, bytes(215)), "proxy_malformed"),
    (v2(0x21, 0x11, INET, length=12 + DEFAULT_MAX_TLV_BYTES + 1), "proxy_too_long"),
    (v2(0x21, 0x11, INET, length=0xFFFF), "proxy_too_long"),
    (v2(0x20, 0x00, b"", length=216 + DEFAULT_MAX_TLV_BYTES + 1), "proxy_too_long"),
    # The three ways TLVs can fail to fill the header.
    (v2(0x21, 0x11, INET + b"\x02"), "proxy_bad_tlv"),
    (v2(0x21, 0x11, INET + b"\x02\x00"), "proxy_bad_tlv"),
    (v2(0x21, 0x11, INET + tlv(PP2_TYPE_AUTHORITY, b"abc", length=4)), "proxy_bad_tlv"),
    (v2(0x21, 0x11, INET + tlv(PP2_TYPE_AUTHORITY, b"ab") + tlv(PP2_TYPE_ALPN, b"h2", length=0xFFFF)),
     "proxy_bad_tlv"),
]


@pytest.mark.parametrize("feed", [wholly, byteByByte])
@pytest.mark.parametrize("raw, event", MALFORMED, ids=range(len(MALFORMED)))
def test_malformed_headers(raw, event, feed):
    """
    Each mistake is refused under its name, in one write or byte by byte;
    the parser then refuses everything with the same error.
    """
    parser = ProxyHeaderParser()
    with pytest.raises(ProxyHeaderError) as raised:
        feed(raw, parser)
    assert raised.value.event == event
    assert raised.value.detail
    with pytest.raises(ProxyHeaderError) as again:
        parser.feed(VALID[0][0])
    assert again.value is raised.value


def test_refused_at_the_first_wrong_byte():
    """
    A connection that is not a PROXY header is refused at once, not after
    107 bytes or a deadline.
    """
    parser = ProxyHeaderParser()
    assert parser.feed(b"PRO") is None
    with pytest.raises(ProxyHeaderError, match="proxy_missing"):
        parser.feed(b"P")
    parser = ProxyHeaderParser()
    assert parser.feed(SIG[:5]) is None
    with pytest.raises(ProxyHeaderError, match="proxy_missing"):
        parser.feed(b"X")


def test_tlv_bound_is_a_parameter():
    raw = v2(0x21, 0x11, INET + tlv(0xE0, bytes(97)))
    assert wholly(raw, ProxyHeaderParser(maxTLVBytes=100))[0].tlvs == ((0xE0, bytes(97)),)
    with pytest.raises(ProxyHeaderError, match="proxy_too_long"):
        wholly(raw, ProxyHeaderParser(maxTLVBytes=99))
    assert ProxyHeaderParser(maxTLVBytes=99).maxHeaderSize == 16 + 216 + 99


# The stud prefix


@pytest.mark.parametrize("feed", [wholly, byteByByte])
def test_stud_prefix(feed):
    assert feed(b"\x02\x7f\x00\x00\x02", StudPrefixParser()) == (
        ProxyHeader(STUD, "proxy", "tcp4", ("127.0.0.2", 0), None), b""
    )
    header, rest = wholly(b"\x02\x0a\x00\x00\x01GET", StudPrefixParser())
    assert rest == b"GET"
    assert header.clientTLS


@pytest.mark.parametrize("feed", [wholly, byteByByte])
@pytest.mark.parametrize("raw", [b"\x0a\x7f\x00\x00\x02", b"GET /", b"\x00"])
def test_stud_prefix_malformed(raw, feed):
    with pytest.raises(ProxyHeaderError) as raised:
        feed(raw, StudPrefixParser())
    assert raised.value.event == "stud_prefix_malformed"


# The first bytes


@pytest.mark.parametrize("data, verdict", [
    (b"", None), (b"P", None), (b"PROXY", None), (b"PROXY ", True), (b"PROXY TCP4", True),
    (b"PUT", False), (b"PROPFIND", False), (b"PROXY\r\n", False), (b"G", False),
    (b"\x16\x03", False), (b"\r", None), (SIG[:11], None), (SIG, True), (SIG[:6] + b"X", False),
    (b"\r\n\r\nGET", False),
])
def test_starts_proxy_header(data, verdict):
    assert startsProxyHeader(data) is verdict


# Properties


def splits(data: bytes):
    """
    Strategy: C{data} cut into pieces at random places.
    """
    return st.lists(st.integers(0, len(data)), max_size=8).map(
        lambda cuts: [data[a:b] for a, b in zip([0, *sorted(cuts)], [*sorted(cuts), len(data)])]
    )


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([raw for raw, _ in VALID]), st.binary(max_size=20), st.data())
def test_any_split_reads_the_same(raw, after, data):
    """
    A valid header followed by the connection's bytes, cut anywhere: the
    same header, and every byte after it given back exactly once.
    """
    pieces = data.draw(splits(raw + after))
    parser = ProxyHeaderParser()
    header, rest = None, b""
    for i, piece in enumerate(pieces):
        result = parser.feed(piece)
        if result is not None:
            header, rest = result
            rest += b"".join(pieces[i + 1:])
            break
    assert (header, rest) == wholly(raw + after)
    assert rest == after


interesting = st.one_of(
    st.binary(max_size=300),
    st.binary(max_size=300).map(lambda b: b"PROXY " + b),
    st.builds(lambda protocol, rest: b"PROXY " + protocol + rest,
              st.sampled_from([b"TCP4 ", b"TCP6 ", b"UNKNOWN"]),
              st.text("0123456789abcdef:. \r\n", max_size=80).map(str.encode)),
    st.binary(min_size=4, max_size=400).map(lambda b: SIG + b),
    st.builds(lambda head, rest: SIG + head + rest,
              st.sampled_from([b"\x21\x11", b"\x21\x21", b"\x21\x31", b"\x20\x00", b"\x21\x00"]),
              st.binary(max_size=400)),
)


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
@given(interesting, st.data())
def test_arbitrary_bytes(raw, data):
    """
    Whatever the bytes and however they are cut: the parser's own error or
    a header, never more than a header's bytes taken or held, and the same
    outcome as in one write.
    """
    pieces = data.draw(splits(raw))
    parser = ProxyHeaderParser(maxTLVBytes=data.draw(st.integers(0, 300)))
    outcome = None
    fed = 0
    try:
        for piece in pieces:
            fed += len(piece)
            result = parser.feed(piece)
            assert len(parser._buffer) <= parser.maxHeaderSize
            if result is not None:
                header, rest = result
                assert isinstance(header, ProxyHeader)
                consumed = fed - len(rest)
                assert 0 < consumed <= parser.maxHeaderSize
                outcome = ("header", header, raw[consumed:])
                break
    except ProxyHeaderError as e:
        outcome = ("error", e.event)
    if outcome is None:
        return
    try:
        whole = ProxyHeaderParser(parser.maxTLVBytes).feed(raw)
    except ProxyHeaderError as e:
        assert outcome == ("error", e.event)
    else:
        assert whole is not None
        assert outcome == ("header", whole[0], whole[1])


@settings(max_examples=300)
@given(st.binary(min_size=1, max_size=20))
def test_not_a_start_is_missing(data):
    """
    Bytes L{startsProxyHeader} says begin no header are refused by the
    parser as C{proxy_missing}, or at least as a mistake.
    """
    if startsProxyHeader(data) is False:
        with pytest.raises(ProxyHeaderError):
            wholly(data + b"\r\n" + bytes(300))


# Writing


ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
ports = st.integers(0, 65535)
tlvLists = st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=60)), max_size=6)


def sameFamily(version):
    hosts = ipv4 if version == 4 else ipv6
    return st.tuples(st.tuples(hosts, ports), st.tuples(hosts, ports))


def normal(host: str) -> str:
    address = ipaddress.ip_address(host)
    if address.version == 6 and address.ipv4_mapped is not None:
        return f"::ffff:{address.ipv4_mapped}"
    return str(address)


@settings(max_examples=300)
@given(st.sampled_from([4, 6]).flatmap(sameFamily))
def test_v1_round_trip(addresses):
    source, destination = addresses
    raw = encodeV1(source, destination)
    assert len(raw) <= V1_MAX
    header, rest = wholly(raw)
    assert rest == b""
    assert header.family == ("tcp4" if ":" not in source[0] else "tcp6")
    assert header.source == (normal(source[0]), source[1])
    assert header.destination == (normal(destination[0]), destination[1])


@settings(max_examples=300)
@given(st.sampled_from([4, 6]).flatmap(sameFamily), tlvLists,
       st.none() | st.text(min_size=1, max_size=40))
def test_v2_round_trip(addresses, tlvs, sni):
    source, destination = addresses
    raw = encodeV2(source, destination, tlvs, sni=sni)
    header, rest = byteByByte(raw, ProxyHeaderParser(maxTLVBytes=1000))
    assert rest == b""
    assert (header.version, header.command) == (2, "proxy")
    assert header.source == (normal(source[0]), source[1])
    assert header.destination == (normal(destination[0]), destination[1])
    expected = ([(PP2_TYPE_AUTHORITY, sni.encode())] if sni is not None else []) + list(tlvs)
    assert list(header.tlvs) == expected
    if sni is not None:
        assert header.authority == sni


def test_unknown_addresses():
    """
    A client with no IP address (a UNIX socket's) or addresses of two
    families: v1 C{UNKNOWN}, v2 C{LOCAL} (with its TLVs, as HAProxy).
    """
    assert encodeV1(None, ("127.0.0.1", 80)) == b"PROXY UNKNOWN\r\n"
    assert encodeV1(("::1", 1), ("127.0.0.1", 80)) == b"PROXY UNKNOWN\r\n"
    raw = encodeV2(None, None, sni="a.example")
    assert raw[12:14] == b"\x20\x00"
    assert wholly(raw) == (ProxyHeader(2, "local"), b"")


def test_mapped_beside_ipv4_is_ipv4():
    """
    An IPv4 client of an IPv6 listener sent on to an IPv4 address: TCP4.
    """
    raw = encodeV1(("::ffff:192.0.2.1", 5), ("10.0.0.1", 80))
    assert raw == b"PROXY TCP4 192.0.2.1 10.0.0.1 5 80\r\n"
    assert wholly(encodeV2(("10.0.0.1", 80), ("::ffff:192.0.2.1", 5)))[0].family == "tcp4"


def test_zone_left_out():
    assert encodeV1(("fe80::1%eth0", 5), ("fe80::2", 6)) == b"PROXY TCP6 fe80::1 fe80::2 5 6\r\n"


@pytest.mark.parametrize("call", [
    lambda: encodeV1(("example.com", 1), ("1.2.3.4", 2)),
    lambda: encodeV1(("1.2.3.4", 65536), ("1.2.3.4", 2)),
    lambda: encodeV2(("1.2.3.4", -1), ("1.2.3.4", 2)),
    lambda: encodeV2(("1.2.3.4", 1), ("1.2.3.4", 2), [(256, b"")]),
    lambda: encodeV2(("1.2.3.4", 1), ("1.2.3.4", 2), [(1, bytes(65536))]),
    lambda: encodeV2(("1.2.3.4", 1), ("1.2.3.4", 2), [(1, bytes(65000)), (2, bytes(600))]),
])
def test_encoding_refuses(call):
    with pytest.raises(ValueError):
        call()
