"""
The HTTP/1.1 messages of the hop between the HTTP router and an HTTP node.

L{encodeRequestHead} turns a parsed client request head (a
L{txrouter.wire.http1.RequestHead}) into the head sent to a node that
speaks plain HTTP, and L{relayedResponseHead} turns the node's response head
into the one relayed to the client.  Each hop has its own connection
semantics, so the hop-by-hop headers of one never reach the other
(RFC 9110, section 7.6.1):

 - the request loses C{Connection} and every header it names, C{Keep-Alive},
   C{Proxy-Connection}, C{TE}, C{Trailer}, C{Transfer-Encoding} (unless the
   chunked body is passed on as it is) and C{Upgrade} (unless the request
   asks for an upgrade), and gets C{Connection: close} (one request per node
   connection, as with uwsgi nodes) or C{Connection: Upgrade};
 - the response loses C{Connection}, every header it names, C{Keep-Alive}
   and C{Proxy-Connection} (but for a C{101}, whose C{Upgrade} and
   C{Connection} are for the client), and its status line says the
   router's own version, C{HTTP/1.1}, so that whether the client's
   connection is kept is the router's decision alone.

C{Host}, C{Content-Length} and C{Transfer-Encoding} are never removed
because C{Connection} names them: they route and frame the message, and a
client or node naming them would otherwise desynchronise a hop.

Forwarding headers follow the trust of the client (C{--trust-forwarded-from},
as for uwsgi nodes): from a trusted peer the client's C{X-Forwarded-*} and
C{Forwarded} headers pass and its address is appended to
C{X-Forwarded-For}; from anyone else they are dropped, C{X-Forwarded-For}
is the client's address alone and C{X-Forwarded-Proto} the scheme the
client used.  C{X-Forwarded-Host} is never added: C{Host} is passed as the
client sent it.  As for uwsgi nodes, header names with an underscore and
C{Proxy} (httpoxy) are dropped.

Nothing here does I/O.
"""

from txrouter.wire.http1 import HTTPError

__all__ = ["encodeRequestHead", "relayedResponseHead"]

_CRLF = b"\r\n"

# Always removed from a request (RFC 9110 7.6.1, and Proxy-Connection);
# Transfer-Encoding and Upgrade are kept in the cases described above.
_REQUEST_HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
    b"transfer-encoding", b"upgrade",
})
_RESPONSE_HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-connection"})

# Never removed because Connection names them.
_FRAMING = frozenset({b"host", b"content-length", b"transfer-encoding"})

_FORWARDED = frozenset({
    b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host",
    b"x-forwarded-port", b"x-forwarded-ssl", b"x-forwarded-scheme", b"forwarded",
})

_CONNECTION = b"connection"
_UPGRADE = b"upgrade"
_TRANSFER_ENCODING = b"transfer-encoding"
_CONTENT_LENGTH = b"content-length"
_HOST = b"host"
_EXPECT = b"expect"
_PROXY = b"proxy"
_FORWARDED_FOR = b"x-forwarded-for"
_FORWARDED_PROTO = b"x-forwarded-proto"

_CLOSE = b"Connection: close\r\n"
_KEEP_ALIVE = b"Connection: keep-alive\r\n"
_CONNECTION_UPGRADE = b"Connection: Upgrade\r\n"
_PROTO_HTTP = b"X-Forwarded-Proto: http\r\n"
_PROTO_HTTPS = b"X-Forwarded-Proto: https\r\n"
_VERSION = b"HTTP/1.1"


def _named(headers) -> frozenset:
    """
    The lower-cased header names the C{Connection} headers list, but the
    framing ones.
    """
    tokens = set()
    for name, value in headers:
        if name.lower() == _CONNECTION:
            tokens.update(t.strip(b" \t").lower() for t in value.split(b","))
    return frozenset(tokens - _FRAMING)


def _checked(lines: list, limit: int) -> bytes:
    """
    Join the head's lines, each ending in CRLF; refuse a head over
    C{limit} bytes, and one where a CR or LF got inside a line.
    """
    head = b"".join(lines)
    count = len(lines)
    if head.count(_CRLF) != count or head.count(b"\r") != count or head.count(b"\n") != count:
        raise ValueError("CR or LF inside a header line")
    if len(head) > limit:
        raise HTTPError(
            431, "node_head_too_large",
            f"the request head for the node takes {len(head)} bytes, limit {limit}",
        )
    return head


def encodeRequestHead(
    head,
    remoteAddr: bytes,
    https: bool = False,
    trustForwarded: bool = False,
    contentLength: "bytes | None" = None,
    limit: int = 65536,
    keepAlive: bool = False,
) -> bytes:
    """
    Build the request head sent to an HTTP node.

    The request line is the client's method, its target in origin form
    (L{RequestHead.path}: an absolute-form target loses its scheme and
    authority, which C{Host} carries) and its version: an HTTP/1.0 client's
    request stays HTTP/1.0, so that the node does not answer with a chunked
    body such a client cannot read.  The client's headers follow in their
    order, less the hop-by-hop and dropped ones (see the module), then
    C{X-Forwarded-For}, C{X-Forwarded-Proto} (unless a trusted client sent
    one), C{Content-Length} for a de-chunked body, and C{Connection}.
    C{Expect: 100-continue} is not passed: the router answers it.

    @param head: a L{txrouter.wire.http1.RequestHead}.
    @param remoteAddr: the client's IP address (empty for a unix socket
        client: no address is added to C{X-Forwarded-For} then).
    @param https: the client came over TLS (C{X-Forwarded-Proto: https}).
    @param trustForwarded: the client may set forwarding headers.
    @param contentLength: when not L{None}, the chunked body was de-chunked
        by the router: C{Transfer-Encoding} becomes this C{Content-Length}.
        Otherwise a chunked body goes on chunked.
    @param limit: the most bytes the head may take.
    @param keepAlive: ask the node to keep the connection open after its
        response (C{Connection: keep-alive}) rather than close it.
    @return: the head, blank line included.
    @raise HTTPError: C{node_head_too_large} (431), over C{limit}.
    @raise ValueError: a CR or LF in a header name or value, which
        L{txrouter.wire.http1.RequestHeadParser} never lets through.
    """
    headers = head.headers
    upgrade = head.upgrade is not None
    named = _named(headers)
    dropExpect = head.expectContinue
    lines = [head.method + b" " + head.path + b" " + head.version + _CRLF]
    forwardedFor = []
    sentProto = hostSent = False
    for name, value in headers:
        lower = name.lower()
        if lower in _REQUEST_HOP_BY_HOP:
            if not (
                (lower == _UPGRADE and upgrade)
                or (lower == _TRANSFER_ENCODING and contentLength is None)
            ):
                continue
        elif lower in named or lower == _PROXY or b"_" in name:
            continue
        elif lower in _FORWARDED:
            if not trustForwarded:
                continue
            if lower == _FORWARDED_FOR:
                forwardedFor.append(value)
                continue
            if lower == _FORWARDED_PROTO:
                sentProto = True
        elif lower == _HOST:
            hostSent = True
        elif lower == _EXPECT and dropExpect:
            continue
        lines.append(name + b": " + value + _CRLF)
    if not hostSent and head.host is not None:
        # An absolute-form target without Host: its authority is the host.
        lines.insert(1, b"Host: " + head.host + _CRLF)
    if remoteAddr:
        forwardedFor.append(remoteAddr)
    if forwardedFor:
        lines.append(b"X-Forwarded-For: " + b", ".join(forwardedFor) + _CRLF)
    if not sentProto:
        lines.append(_PROTO_HTTPS if https else _PROTO_HTTP)
    if contentLength is not None:
        lines.append(b"Content-Length: " + contentLength + _CRLF)
    lines.append(_CONNECTION_UPGRADE if upgrade else _KEEP_ALIVE if keepAlive else _CLOSE)
    lines.append(_CRLF)
    return _checked(lines, limit)


def relayedResponseHead(head) -> "tuple[bytes, bool]":
    """
    The head of an HTTP node's response as relayed to the client.

    A C{101} is relayed as received.  Any other response gets the status
    line C{HTTP/1.1 STATUS REASON} and loses its hop-by-hop headers (see
    the module); the header lines kept are the node's bytes.

    @param head: a L{txrouter.wire.http1.ResponseHead} from the node.
    @return: C{(head, reusable)}: the head, blank line included; and
        whether its framing is unambiguous, so that the client's connection
        may carry another request after it (not when C{Transfer-Encoding}
        comes with C{Content-Length}, or is not a lone C{chunked}).
    """
    raw = head.headBytes
    if head.status == 101:
        return raw, True
    lines = raw[:-4].split(_CRLF)
    headers = head.headers
    named = _named(headers)
    kept = [_VERSION + lines[0][len(head.version):]]
    hasLength = False
    codings = None
    for line, (name, value) in zip(lines[1:], headers):
        lower = name.lower()
        if lower in _RESPONSE_HOP_BY_HOP or lower in named:
            continue
        if lower == _CONTENT_LENGTH:
            hasLength = True
        elif lower == _TRANSFER_ENCODING:
            codings = value if codings is None else codings + b"," + value
        kept.append(line)
    reusable = codings is None or (
        not hasLength
        and [c.strip(b" \t").lower() for c in codings.split(b",")] == [b"chunked"]
    )
    return _CRLF.join(kept) + b"\r\n\r\n", reusable
