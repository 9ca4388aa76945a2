"""
The request head sent to an HTTP node and the response head relayed from
one (txrouter.wire.http2http): exact bytes, hop-by-hop headers, forwarding
headers and their trust, and fuzzing through h11's parsers.
"""

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from txrouter.wire.http1 import HTTPError, RequestHeadParser, ResponseHeadParser
from txrouter.wire.http2http import encodeRequestHead, relayedResponseHead


def parsed(raw: bytes):
    head = RequestHeadParser().feed(raw)
    assert head is not None
    return head


def encoded(raw: bytes, remote=b"10.0.0.9", **kwargs) -> bytes:
    return encodeRequestHead(parsed(raw), remote, **kwargs)


def response(raw: bytes):
    head = ResponseHeadParser().feed(raw)
    assert head is not None
    return head


def test_get():
    assert encoded(b"GET /a%20b?x=1 HTTP/1.1\r\nHost: example.com:8080\r\nUser-Agent: t\r\n\r\n") == (
        b"GET /a%20b?x=1 HTTP/1.1\r\n"
        b"Host: example.com:8080\r\n"
        b"User-Agent: t\r\n"
        b"X-Forwarded-For: 10.0.0.9\r\n"
        b"X-Forwarded-Proto: http\r\n"
        b"Connection: close\r\n"
        b"\r\n"
    )


def test_hop_by_hop_headers_and_those_connection_names_are_removed():
    raw = (
        b"GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, X-Secret\r\nKeep-Alive: 300\r\n"
        b"Proxy-Connection: keep-alive\r\nTE: trailers\r\nTrailer: X-T\r\nUpgrade: websocket\r\n"
        b"X-Secret: s\r\nAccept: */*\r\n\r\n"
    )
    assert encoded(raw) == (
        b"GET / HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n"
        b"X-Forwarded-For: 10.0.0.9\r\nX-Forwarded-Proto: http\r\nConnection: close\r\n\r\n"
    )


def test_connection_cannot_remove_host_or_the_body_length():
    """
    A client naming Content-Length in Connection would otherwise make the
    node read its body as the next request.
    """
    raw = b"POST / HTTP/1.1\r\nHost: h\r\nConnection: Host, Content-Length\r\nContent-Length: 4\r\n\r\n"
    head = encoded(raw)
    assert b"\r\nHost: h\r\n" in head
    assert b"\r\nContent-Length: 4\r\n" in head


def test_upgrade_request_keeps_upgrade_and_says_connection_upgrade():
    raw = (
        b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    assert encoded(raw) == (
        b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        b"X-Forwarded-For: 10.0.0.9\r\nX-Forwarded-Proto: http\r\nConnection: Upgrade\r\n\r\n"
    )


def test_dechunked_body_gets_a_content_length():
    raw = b"POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Type: a/b\r\n\r\n"
    assert encoded(raw, contentLength=b"11") == (
        b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Type: a/b\r\n"
        b"X-Forwarded-For: 10.0.0.9\r\nX-Forwarded-Proto: http\r\n"
        b"Content-Length: 11\r\nConnection: close\r\n\r\n"
    )


def test_chunked_body_passed_on_keeps_transfer_encoding():
    raw = b"POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
    head = encoded(raw)
    assert b"\r\nTransfer-Encoding: chunked\r\n" in head
    assert b"Content-Length" not in head


def test_expect_continue_is_the_routers_business():
    raw = b"PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n"
    assert b"Expect" not in encoded(raw)


def test_forwarding_headers_from_an_untrusted_client_are_replaced():
    raw = (
        b"GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 1.2.3.4\r\nX-Forwarded-Proto: https\r\n"
        b"X-Forwarded-Host: evil\r\nForwarded: for=1.2.3.4\r\nX-Real: 1\r\n\r\n"
    )
    assert encoded(raw, https=True) == (
        b"GET / HTTP/1.1\r\nHost: h\r\nX-Real: 1\r\n"
        b"X-Forwarded-For: 10.0.0.9\r\nX-Forwarded-Proto: https\r\nConnection: close\r\n\r\n"
    )


def test_forwarding_headers_from_a_trusted_client_pass_and_the_address_is_appended():
    raw = (
        b"GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 1.2.3.4\r\nX-Forwarded-Proto: https\r\n"
        b"X-Forwarded-For: 5.6.7.8, 9.9.9.9\r\nForwarded: for=1.2.3.4\r\n\r\n"
    )
    assert encoded(raw, trustForwarded=True) == (
        b"GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-Proto: https\r\nForwarded: for=1.2.3.4\r\n"
        b"X-Forwarded-For: 1.2.3.4, 5.6.7.8, 9.9.9.9, 10.0.0.9\r\nConnection: close\r\n\r\n"
    )


def test_trusted_client_without_forwarding_headers_gets_the_routers():
    head = encoded(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", trustForwarded=True)
    assert b"X-Forwarded-For: 10.0.0.9\r\nX-Forwarded-Proto: http\r\n" in head


def test_unix_socket_client_adds_no_address():
    head = encoded(b"GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n", remote=b"")
    assert b"X-Forwarded-For" not in head


def test_underscore_names_and_proxy_are_dropped():
    head = encoded(b"GET / HTTP/1.1\r\nHost: h\r\nX_Forwarded_For: 1\r\nProxy: http://evil\r\n\r\n")
    assert b"X_Forwarded_For" not in head
    assert b"Proxy:" not in head


def test_absolute_form_target_becomes_origin_form_and_http10_stays_http10():
    head = encoded(b"GET http://example.com/a?b HTTP/1.0\r\n\r\n")
    assert head.startswith(b"GET /a?b HTTP/1.0\r\nHost: example.com\r\n")


def test_http10_without_host_sends_none():
    head = encoded(b"GET / HTTP/1.0\r\n\r\n")
    assert b"Host" not in head


def test_a_head_over_the_limit_is_a_431():
    raw = b"GET / HTTP/1.1\r\nHost: h\r\nX: " + b"a" * 200 + b"\r\n\r\n"
    with pytest.raises(HTTPError) as caught:
        encoded(raw, limit=200)
    assert (caught.value.status, caught.value.event) == (431, "node_head_too_large")
    assert len(encoded(raw, limit=303)) == 303


def test_a_crlf_that_did_not_come_through_the_parser_is_refused():
    head = parsed(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    head = head._replace(headers=head.headers + [(b"X", b"a\r\nInjected: 1")])
    with pytest.raises(ValueError):
        encodeRequestHead(head, b"10.0.0.9")
    with pytest.raises(ValueError):
        encodeRequestHead(parsed(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"), b"1\r\nX: y")


# Responses


def test_response_hop_by_hop_headers_are_removed_and_the_version_is_the_routers():
    head, reusable = relayedResponseHead(response(
        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: close, X-Node\r\nKeep-Alive: timeout=5\r\n"
        b"Proxy-Connection: close\r\nX-Node: n\r\nServer:   s  \r\n\r\n"
    ))
    assert head == b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nServer:   s  \r\n\r\n"
    assert reusable


def test_response_without_reason():
    head, _ = relayedResponseHead(response(b"HTTP/1.1 204\r\n\r\n"))
    assert head == b"HTTP/1.1 204\r\n\r\n"


def test_101_is_relayed_as_received():
    raw = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    assert relayedResponseHead(response(raw)) == (raw, True)


def test_connection_cannot_remove_the_response_framing():
    head, reusable = relayedResponseHead(response(
        b"HTTP/1.1 200 OK\r\nConnection: Content-Length, Transfer-Encoding\r\nContent-Length: 2\r\n\r\n"
    ))
    assert head == b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"
    assert reusable


@pytest.mark.parametrize("framing", [
    # (Content-Length beside Transfer-Encoding never gets here: the parser
    # refuses it, response_cl_te.)
    b"Transfer-Encoding: gzip\r\n",
    b"Transfer-Encoding: gzip, chunked\r\n",
])
def test_ambiguous_framing_is_not_reusable(framing):
    _, reusable = relayedResponseHead(response(b"HTTP/1.1 200 OK\r\n" + framing + b"\r\n"))
    assert not reusable


def test_chunked_response_is_reusable():
    head, reusable = relayedResponseHead(response(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    ))
    assert reusable
    assert b"Transfer-Encoding: chunked" in head


# Fuzzing

_TOKEN = st.text(
    alphabet="!#$%&'*+-.^`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
    min_size=1, max_size=12,
).map(str.encode)
_VALUE = st.binary(max_size=24).map(
    lambda b: bytes(c for c in b if c == 9 or 0x20 <= c < 0x7F).strip(b" \t")
)
_NAMES = st.one_of(
    _TOKEN,
    st.sampled_from([
        b"Connection", b"Keep-Alive", b"Proxy-Connection", b"TE", b"Trailer", b"Upgrade",
        b"X-Forwarded-For", b"X-Forwarded-Proto", b"X-Forwarded-Host", b"Forwarded",
        b"Expect", b"Proxy", b"Accept", b"Cookie",
    ]),
)
_HEADERS = st.lists(st.tuples(_NAMES, _VALUE), max_size=12).filter(
    lambda hs: all(n.lower() not in (b"host", b"content-length", b"transfer-encoding") for n, _ in hs)
)
_TARGET = st.text(
    alphabet="abcXYZ019/-._~%?=&;", min_size=0, max_size=20,
).map(lambda t: b"/" + t.encode().replace(b"#", b""))
_HOP = {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"upgrade",
        b"transfer-encoding"}
_FORWARDING = {b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"forwarded"}


def _clientHead(method, target, headers, body):
    lines = [method + b" " + target + b" HTTP/1.1", b"Host: example.com"]
    lines += [name + b": " + value for name, value in headers]
    if body is not None:
        lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n"


@settings(max_examples=300, deadline=None)
@given(
    method=st.sampled_from([b"GET", b"POST", b"PUT", b"DELETE", b"PATCH", b"OPTIONS"]),
    target=_TARGET,
    headers=_HEADERS,
    body=st.one_of(st.none(), st.binary(max_size=8)),
    trusted=st.booleans(),
    https=st.booleans(),
    remote=st.sampled_from([b"127.0.0.1", b"::1", b""]),
)
def test_fuzz_the_node_reads_a_valid_request_without_hop_by_hop_headers(
    method, target, headers, body, trusted, https, remote
):
    """
    Whatever the client's headers, the head is one h11 parses (no CR or LF
    inside a header), with the client's method, target, Host and body
    length, none of the hop-by-hop headers or those Connection names
    (unless an upgrade), and forwarding headers only as the trust allows.
    """
    try:
        head = parsed(_clientHead(method, target, headers, body))
    except HTTPError:
        return
    out = encodeRequestHead(head, remote, https, trusted)
    server = h11.Connection(h11.SERVER)
    server.receive_data(out + (body or b""))
    request = server.next_event()
    assert isinstance(request, h11.Request)
    assert (request.method, request.target) == (method, target)
    received = [(n.lower(), v) for n, v in request.headers]
    names = [n for n, _ in received]
    assert (b"host", b"example.com") in received
    named = set()
    for n, v in head.headers:
        if n.lower() == b"connection":
            named |= {t.strip(b" \t").lower() for t in v.split(b",")}
    upgrade = head.upgrade is not None
    ours = {b"connection", b"host", b"content-length", b"x-forwarded-for", b"x-forwarded-proto"}
    for name in names:
        if name in _HOP or name in named:
            assert name in ours or (upgrade and name == b"upgrade"), name
        assert b"_" not in name
        if name in _FORWARDING - {b"x-forwarded-for", b"x-forwarded-proto"}:
            assert trusted
    assert names.count(b"connection") == 1
    assert dict(received)[b"connection"] == (b"Upgrade" if upgrade else b"close")
    forwardedFor = [v for n, v in received if n == b"x-forwarded-for"]
    if remote:
        [value] = forwardedFor
        assert value.endswith(remote)
        if not trusted:
            assert value == remote
    proto = [v for n, v in received if n == b"x-forwarded-proto"]
    if not trusted:
        assert proto == [b"https" if https else b"http"]
    if body:
        data = server.next_event()
        assert isinstance(data, h11.Data) and data.data == body


@settings(max_examples=300, deadline=None)
@given(
    status=st.sampled_from([200, 201, 204, 301, 404, 500]),
    version=st.sampled_from([b"HTTP/1.0", b"HTTP/1.1"]),
    headers=st.lists(st.tuples(_NAMES, _VALUE), max_size=10).filter(
        lambda hs: all(n.lower() not in (b"content-length", b"transfer-encoding") for n, _ in hs)
    ),
    length=st.integers(0, 100),
)
def test_fuzz_the_relayed_response_parses_with_the_same_length(status, version, headers, length):
    """
    The relayed head is a valid HTTP/1.1 response to h11, with the node's
    status and Content-Length, and no Connection, Keep-Alive or
    Proxy-Connection header nor one Connection named.
    """
    lines = [version + b" %d Reason" % status] + [n + b": " + v for n, v in headers]
    if status != 204:
        lines.append(b"Content-Length: %d" % length)
    try:
        head = response(b"\r\n".join(lines) + b"\r\n\r\n")
    except HTTPError:
        return
    out, reusable = relayedResponseHead(head)
    assert reusable
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="GET", target="/", headers=[("Host", "h")]))
    client.receive_data(out)
    event = client.next_event()
    assert isinstance(event, h11.Response)
    assert (event.status_code, event.http_version) == (status, b"1.1")
    named = set()
    for n, v in head.headers:
        if n.lower() == b"connection":
            named |= {t.strip(b" \t").lower() for t in v.split(b",")}
    kept = [n.lower() for n, _ in event.headers]
    for name in kept:
        assert name not in {b"connection", b"keep-alive", b"proxy-connection"}
        assert name not in named or name == b"content-length"
    if status != 204:
        assert (b"content-length", b"%d" % length) in [(n.lower(), v) for n, v in event.headers]
