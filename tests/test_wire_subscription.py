"""
Subscription datagrams, against datagrams captured from real uWSGI 2.0.21.
"""

import attr
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.captures import packets
from txrouter.wire.subscription import (
    MAX_ADDRESS,
    MAX_DATAGRAM,
    MAX_KEY,
    Subscription,
    SubscriptionError,
    encodeSignedPayload,
    encodeSubscription,
    parseSubscription,
)
from txrouter.wire.uwsgi import decodeVars, encodeHeader, encodeVars

BASIC = packets("subscribe-basic.json")
SIGNED_NOTIFY = packets("subscribe-port0-signed-notify.json")
CAPTURED = BASIC + SIGNED_NOTIFY

BASE = [
    (b"key", b"example.com"),
    (b"address", b"127.0.0.1:3031"),
    (b"modifier1", b"0"),
    (b"modifier2", b"0"),
    (b"cores", b"1"),
    (b"load", b"0"),
    (b"weight", b"7"),
]


def datagram(pairs, modifier1=224, command=0) -> bytes:
    """
    A datagram with a correct datasize for C{pairs}.
    """
    block = encodeVars(pairs)
    return encodeHeader(modifier1, len(block), command) + block


def refused(data: bytes) -> str:
    with pytest.raises(SubscriptionError) as e:
        parseSubscription(data)
    return e.value.event


@pytest.mark.parametrize("raw", CAPTURED, ids=range(len(CAPTURED)))
def test_captured_datagrams_reencode_byte_for_byte(raw):
    """
    Every captured datagram parses, and encoding the value gives its bytes.
    """
    assert encodeSubscription(parseSubscription(raw)) == raw


def test_captured_subscribe_fields():
    first = parseSubscription(BASIC[0])
    assert first == Subscription(
        b"example.com", b"127.0.0.1:3031", modifier1=0, modifier2=0, cores=1, load=0, weight=0
    )
    foo = parseSubscription(BASIC[2])
    assert (foo.key, foo.modifier1, foo.modifier2, foo.weight) == (b"foo.local:8080", 5, 3, 7)
    assert not foo.unsubscribe and foo.extra == () and foo.sign is None


def test_captured_unsubscribe_differs_only_by_command():
    """
    The captured unsubscribe is the refresh with byte 3 set to 1.
    """
    refresh, unsubscribe = parseSubscription(BASIC[6]), parseSubscription(BASIC[9])
    assert BASIC[9][3] == 1 and BASIC[9][4:] == BASIC[6][4:]
    assert unsubscribe.unsubscribe and not refresh.unsubscribe
    assert attr.evolve(unsubscribe, unsubscribe=False) == refresh


def test_captured_notify_and_port_only_address():
    port0, signed, sock1 = map(parseSubscription, SIGNED_NOTIFY[:3])
    assert port0.notify == b"127.0.0.1:7999"
    assert port0.address == b"127.0.0.1:38635"
    assert sock1.address == b":3033"


def test_captured_signed_datagram_keeps_the_signed_bytes():
    """
    The signed bytes are the vars before the C{sign} var, as received; for
    a datagram uWSGI wrote they are also the re-encoded vars.
    """
    raw = SIGNED_NOTIFY[1]
    signed = parseSubscription(raw)
    assert (signed.key, signed.unix, len(signed.sign)) == (b"signed.local", 1795480954, 256)
    assert signed.signedPayload == raw[4 : len(raw) - (2 + 4 + 2 + 256)]
    assert signed.signedPayload.endswith(b"\x04\x00unix\x0a\x001795480954")
    assert encodeSignedPayload(signed) == signed.signedPayload


def test_captured_signed_unsubscribe_has_now_plus_one():
    unsubscribe = parseSubscription(SIGNED_NOTIFY[7])
    assert unsubscribe.unsubscribe and unsubscribe.unix == 1795480957


@pytest.mark.parametrize("command", [1, 2, 7, 255])
def test_any_nonzero_command_is_an_unsubscribe(command):
    """
    As in uWSGI: only 0 subscribes (a router's resubscribe copies the byte).
    """
    assert parseSubscription(datagram(BASE, command=command)).unsubscribe


def test_absent_numbers_read_as_zero_and_absent_options_as_none():
    value = parseSubscription(datagram(BASE[:2]))
    assert value == Subscription(b"example.com", b"127.0.0.1:3031")
    assert (value.weight, value.backup, value.notify, value.unix) == (0, None, None, None)


def test_unknown_vars_are_kept_in_order_and_reencoded_before_notify():
    """
    uWSGI ignores unknown vars; they are kept, and written where uWSGI 2.1
    writes its own server-ignored var (C{inactive}).
    """
    pairs = BASE + [(b"inactive", b"1"), (b"x-extra", b""), (b"notify", b"/run/n.sock")]
    value = parseSubscription(datagram(pairs))
    assert value.extra == ((b"inactive", b"1"), (b"x-extra", b""))
    assert encodeSubscription(value) == datagram(pairs)


def test_uwsgi_2_1_subscribe2_layout_roundtrips():
    """
    The order uWSGI 2.1's C{--subscribe2} writes (from its source; no 2.1
    capture exists).
    """
    pairs = BASE + [
        (b"backup", b"2"),
        (b"vassal", b"app.ini"),
        (b"sni_key", b"/k.pem"),
        (b"sni_crt", b"/c.pem"),
        (b"sni_ca", b"/ca.pem"),
        (b"proto", b"h"),
        (b"algo", b"lrc"),
        (b"notify", b"/run/n.sock"),
        (b"clear", b"1"),
    ]
    value = parseSubscription(datagram(pairs))
    assert (value.backup, value.vassal, value.proto, value.algo, value.clear) == (
        2, b"app.ini", b"h", b"lrc", 1,
    )
    assert (value.sniKey, value.sniCrt, value.sniCa) == (b"/k.pem", b"/c.pem", b"/ca.pem")
    assert encodeSubscription(value) == datagram(pairs)


def test_limits_are_inclusive():
    pairs = [(b"key", b"k" * MAX_KEY), (b"address", b"a" * MAX_ADDRESS),
             (b"modifier1", b"255"), (b"weight", b"18446744073709551615")]
    value = parseSubscription(datagram(pairs))
    assert (len(value.key), len(value.address), value.modifier1, value.weight) == (
        255, 255, 255, 2**64 - 1,
    )
    big = datagram(BASE + [(b"x", b"v" * (MAX_DATAGRAM - len(datagram(BASE)) - 5))])
    assert len(big) == MAX_DATAGRAM
    assert parseSubscription(big).extra[0][0] == b"x"


SIGNED = BASE + [(b"unix", b"1795480954"), (b"sign", b"\x01" * 16)]
REFUSALS = {
    "empty": (b"", "truncated"),
    "short header": (b"\xe0\x05\x00", "truncated"),
    "datasize beyond the datagram": (datagram(BASE)[:-1], "truncated"),
    "var cut short": (encodeHeader(224, 5, 0) + b"\x03\x00key", "truncated"),
    "value cut short": (encodeHeader(224, 8, 0) + b"\x03\x00key\x05\x00a", "truncated"),
    "bytes after the vars": (datagram(BASE) + b"\x00", "bad_datasize"),
    "too large": (datagram([(b"key", b"k"), (b"address", b"a"), (b"x", b"v" * 4090)]),
                  "datagram_too_large"),
    "modifier1 0": (datagram(BASE, modifier1=0), "bad_modifier1"),
    "a uwsgi request": (b"GET / HTTP/1.0\r\n\r\n", "bad_modifier1"),
    "empty var name": (encodeHeader(224, 5, 0) + b"\x00\x00\x01\x00x", "empty_var_name"),
    "key twice": (datagram(BASE + [(b"key", b"other.com")]), "duplicate_var"),
    "unknown var twice": (datagram(BASE + [(b"x", b"1"), (b"x", b"2")]), "duplicate_var"),
    "sign not last": (datagram(BASE[:1] + [(b"sign", b"s")] + BASE[1:]), "sign_not_last"),
    "sign then unix": (datagram(BASE + [(b"sign", b"s"), (b"unix", b"1")]), "sign_not_last"),
    "empty sign": (datagram(BASE + [(b"sign", b"")]), "empty_sign"),
    "no key": (datagram(BASE[1:]), "missing_key"),
    "empty key": (datagram([(b"key", b"")] + BASE[1:]), "missing_key"),
    "no address": (datagram(BASE[:1] + BASE[2:]), "missing_address"),
    "empty address": (datagram(BASE[:1] + [(b"address", b"")]), "missing_address"),
    "key of 256": (datagram([(b"key", b"k" * 256)] + BASE[1:]), "key_too_long"),
    "address of 256": (datagram(BASE[:1] + [(b"address", b"a" * 256)]), "address_too_long"),
    "unix too large": (datagram(BASE + [(b"unix", b"9223372036854775808")]), "bad_number"),
}
BAD_NUMBERS = [
    (b"modifier1", b"256"), (b"modifier1", b"-1"), (b"modifier1", b" 1"),
    (b"modifier2", b"1 "), (b"cores", b""), (b"load", b"01"), (b"weight", b"0x10"),
    (b"weight", b"18446744073709551616"), (b"weight", b"1" * 21), (b"backup", b"+1"),
    (b"clear", b"256"), (b"unix", b"1.5"), (b"cores", "\N{ARABIC-INDIC DIGIT ONE}".encode()),
]


def withVar(name: bytes, value: bytes) -> bytes:
    """
    The datagram of C{BASE} with the var C{name} set to C{value}.
    """
    pairs = [(n, value if n == name else v) for n, v in BASE]
    if name not in dict(BASE):
        pairs.append((name, value))
    return datagram(pairs)


REFUSALS.update(
    {f"{name.decode()}={value!r}": (withVar(name, value), "bad_number") for name, value in BAD_NUMBERS}
)


@pytest.mark.parametrize("raw, event", REFUSALS.values(), ids=REFUSALS.keys())
def test_refusals(raw, event):
    assert refused(raw) == event


def test_signed_datagram_is_accepted_when_sign_is_last():
    assert parseSubscription(datagram(SIGNED)).sign == b"\x01" * 16


def test_errors_are_value_errors_with_event_and_detail():
    with pytest.raises(ValueError) as e:
        parseSubscription(datagram([(b"key", b"k" * 300)] + BASE[1:]))
    assert e.value.event == "key_too_long"
    assert "300" in e.value.detail and str(e.value).startswith("key_too_long: ")


@pytest.mark.parametrize(
    "kwargs, event",
    [
        ({"key": b""}, "missing_key"),
        ({"address": b"a" * 256}, "address_too_long"),
        ({"modifier2": 256}, "bad_number"),
        ({"weight": -1}, "bad_number"),
        ({"sign": b""}, "empty_sign"),
        ({"extra": [(b"key", b"x")]}, "duplicate_var"),
        ({"extra": [(b"x", b"1"), (b"x", b"2")]}, "duplicate_var"),
        ({"extra": [(b"", b"1")]}, "empty_var_name"),
    ],
)
def test_values_refuse_what_parsing_refuses(kwargs, event):
    with pytest.raises(SubscriptionError) as e:
        Subscription(**{"key": b"k", "address": b"a", **kwargs})
    assert e.value.event == event


def test_values_are_hashable_whatever_the_extra_pairs_were_given_as():
    value = Subscription(b"k", b"a", extra=[[b"x", b"1"]])
    assert value.extra == ((b"x", b"1"),)
    assert {value: 1}[Subscription(b"k", b"a", extra=((b"x", b"1"),))] == 1


def test_wrong_types_are_programming_errors():
    with pytest.raises(TypeError):
        Subscription("example.com", b"a")
    with pytest.raises(TypeError):
        Subscription(b"k", b"a", weight="1")


def test_encode_refuses_oversized_datagrams():
    for size in (MAX_DATAGRAM, 70000):
        with pytest.raises(SubscriptionError) as e:
            encodeSubscription(Subscription(b"k", b"a", notify=b"/" * size))
        assert e.value.event == "datagram_too_large"


names = st.binary(min_size=1, max_size=40).filter(
    lambda n: n not in {b"key", b"address", b"modifier1", b"modifier2", b"cores", b"load",
                        b"weight", b"backup", b"vassal", b"sni_key", b"sni_crt", b"sni_ca",
                        b"proto", b"algo", b"notify", b"clear", b"unix", b"sign"}
)
optionalBytes = st.none() | st.binary(max_size=40)
subscriptions = st.builds(
    Subscription,
    st.binary(min_size=1, max_size=MAX_KEY),
    st.binary(min_size=1, max_size=MAX_ADDRESS),
    unsubscribe=st.booleans(),
    modifier1=st.integers(0, 255),
    modifier2=st.integers(0, 255),
    cores=st.integers(0, 2**64 - 1),
    load=st.integers(0, 2**64 - 1),
    weight=st.integers(0, 2**64 - 1),
    backup=st.none() | st.integers(0, 2**64 - 1),
    vassal=optionalBytes,
    sniKey=optionalBytes,
    sniCrt=optionalBytes,
    sniCa=optionalBytes,
    proto=optionalBytes,
    algo=optionalBytes,
    extra=st.dictionaries(names, st.binary(max_size=20), max_size=4).map(
        lambda d: tuple(d.items())
    ),
    notify=optionalBytes,
    clear=st.none() | st.integers(0, 255),
    unix=st.none() | st.integers(0, 2**63 - 1),
    sign=st.none() | st.binary(min_size=1, max_size=300),
)


@settings(max_examples=300)
@given(subscriptions)
def test_roundtrip(value):
    """
    Any value encodes to a datagram that parses back to it; a signed one
    also gets the bytes its signature covers.
    """
    raw = encodeSubscription(value)
    parsed = parseSubscription(raw)
    assert parsed == attr.evolve(value, signedPayload=parsed.signedPayload)
    if value.sign is None:
        assert parsed.signedPayload is None
    else:
        assert parsed.signedPayload == encodeSignedPayload(value)
        assert raw.endswith(b"\x04\x00sign" + len(value.sign).to_bytes(2, "little") + value.sign)
    assert encodeSubscription(parsed) == raw


_ALWAYS_WRITTEN = {b"modifier1", b"modifier2", b"cores", b"load", b"weight"}


def parseOrRefuse(data: bytes) -> None:
    """
    Parsing C{data} either refuses it or gives a value that encodes and
    parses back to the same value, into a datagram with the same vars
    (perhaps in another order; the numbers every client writes added as
    0 where they were absent) and the same command (any non-zero byte
    written as 1): nothing lost, nothing made up.
    """
    try:
        parsed = parseSubscription(data)
    except SubscriptionError as e:
        assert e.event and e.detail
        return
    encoded = encodeSubscription(parsed)
    again = parseSubscription(encoded)
    assert again == attr.evolve(parsed, signedPayload=again.signedPayload)
    sent = decodeVars(data[4:])
    absent = _ALWAYS_WRITTEN - {name for name, _ in sent}
    assert sorted(decodeVars(encoded[4:])) == sorted(sent + [(name, b"0") for name in absent])
    assert encoded[3] == (1 if data[3] else 0)
    if parsed.sign is not None:
        assert again.signedPayload == encodeSignedPayload(parsed)
        assert (parsed.signedPayload == again.signedPayload) == (
            encoded[4:] == data[4:]), "the signed bytes are the datagram's own"


@settings(max_examples=500)
@given(st.binary(max_size=MAX_DATAGRAM + 8))
def test_fuzzed_bytes_only_raise_subscription_errors(data):
    parseOrRefuse(data)


@settings(max_examples=300)
@given(st.binary(min_size=0, max_size=300).map(lambda b: b"\xe0" + len(b).to_bytes(2, "little") + b"\x00" + b))
def test_fuzzed_blocks_behind_a_valid_header(data):
    parseOrRefuse(data)


@settings(max_examples=500)
@given(
    st.sampled_from(CAPTURED),
    st.lists(st.tuples(st.integers(0, 500), st.integers(0, 255)), min_size=1, max_size=4),
    st.integers(0, 500),
    st.binary(max_size=8),
)
def test_mutated_captures_only_raise_subscription_errors(raw, flips, cut, insert):
    """
    Captured datagrams with bytes changed, cut short, or with bytes
    inserted, whole.
    """
    data = bytearray(raw)
    for position, value in flips:
        data[position % len(data)] = value
    parseOrRefuse(bytes(data))
    parseOrRefuse(bytes(data[: cut % (len(data) + 1)]))
    at = cut % (len(data) + 1)
    parseOrRefuse(bytes(data[:at]) + insert + bytes(data[at:]))
