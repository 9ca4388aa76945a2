"""
HTTP/2 requests and responses as the HTTP router's nodes see them,
sans-IO.

A stream's request arrives as the header list C{h2} decoded (pseudo-headers
first, names lower-cased, connection-specific headers already refused by
C{h2}); L{requestHead} checks it as strictly as
L{txrouter.wire.http1.RequestHeadParser} checks an HTTP/1.1 head, with the
same limits and the same refusals, and makes the same
L{txrouter.wire.http1.RequestHead} of it, so that the uwsgi vars (version
C{HTTP/2}) and the HTTP/1.1 head for an HTTP node are built by the code
that builds them for HTTP/1.1 clients.

A node answers with an HTTP/1.x head; L{responseHeaders} makes the header
list of the HTTP/2 response of it: C{:status} first, names lower-cased,
the hop-by-hop headers (and those C{Connection} names) removed (RFC 9113,
section 8.2.2).
"""

import re

from txrouter.wire.http1 import (
    _HOST,
    _TARGET_CHARS,
    _TOKEN_CHARS,
    _VALUE_CHARS,
    HTTPError,
    RequestHead,
    ResponseHeadParser,
    plainResponseHead,
)
from txrouter.wire.responses import REASONS

__all__ = ["VERSION", "NodeResponseParser", "requestHead", "responseHeaders", "errorResponse"]

#: The version of every HTTP/2 request (C{SERVER_PROTOCOL}, the access log).
VERSION = b"HTTP/2"

_HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade", b"te",
})


class NodeResponseParser(ResponseHeadParser):
    """
    The parser of a node's response to an HTTP/2 stream's request: a uWSGI
    application answers in the version it was asked in (C{SERVER_PROTOCOL}
    C{HTTP/2}), so C{HTTP/2} status lines are taken too.
    """

    _STATUS = rb"(HTTP/1\.[01]|HTTP/2(?:\.0)?) ([0-9]{3})(?: ([^\r\n]*))?"
    statusLine = re.compile(_STATUS + rb"\Z")
    plainHead = plainResponseHead(_STATUS)


def _bad(event: str, detail: str, status: int = 400) -> HTTPError:
    return HTTPError(status, event, detail)


def requestHead(
    headers,
    maxRequestLine: int = 8192,
    maxHeaders: int = 100,
    maxHeadSize: int = 65536,
) -> RequestHead:
    """
    The request of a stream's header list.

    The limits are the HTTP/1.1 ones: C{:path} is the request line, the
    size of the head is counted as its HTTP/1.1 spelling would be.

    @param headers: C{(name, value)} byte pairs, as C{h2} decoded them.
    @raise HTTPError: a limit is passed or the request is malformed, with
        the status and event an HTTP/1.1 request would get.
    """
    method = path = authority = None
    fields = []
    host = None
    contentLength = None
    cookies = []
    expect = None
    size = 0
    for name, value in headers:
        size += len(name) + len(value) + 4
        if name[:1] == b":":
            if name == b":method":
                method = value
            elif name == b":path":
                path = value
            elif name == b":authority":
                authority = value
            continue
        if name.translate(None, _TOKEN_CHARS):
            raise _bad("bad_header_name", "header name is not a token")
        if value.translate(None, _VALUE_CHARS):
            raise _bad("bad_header_value", f"control byte in the value of {name[:40]!r}")
        if name == b"cookie":
            # Split into several fields by the client for compression; one
            # field again for the node (RFC 9113, section 8.2.3).
            cookies.append(value)
            continue
        if name == b"host":
            if host is not None:
                raise _bad("duplicate_host", "two Host headers")
            host = value
        elif name == b"content-length":
            if not value.isdigit() or len(value) > 19:
                raise _bad("bad_content_length", f"Content-Length {value[:20]!r}")
            if contentLength is not None and int(value) != contentLength:
                raise _bad("duplicate_content_length", "two Content-Length headers")
            contentLength = int(value)
        elif name == b"expect":
            expect = value
        fields.append((name, value))
    if cookies:
        fields.append((b"cookie", b"; ".join(cookies)))
    if method is None:
        raise _bad("bad_request_line", "no :method")
    if method == b"CONNECT":
        raise _bad("connect_refused", "CONNECT is not supported", 405)
    if path is None or not path:
        raise _bad("bad_target", "no :path")
    if len(method) + len(path) + 10 > maxRequestLine:
        raise _bad("request_line_too_long", f"request line over {maxRequestLine} bytes", 414)
    if size > maxHeadSize:
        raise _bad("head_too_large", f"request head over {maxHeadSize} bytes", 431)
    if path.translate(None, _TARGET_CHARS):
        raise _bad("bad_target", "request target with bytes outside visible ASCII")
    if path == b"*":
        if method != b"OPTIONS":
            raise _bad("bad_target", "* is a target for OPTIONS only")
    elif path[:1] != b"/":
        raise _bad("bad_target", "request target is not a path")
    if b"#" in path:
        raise _bad("bad_target", "fragment in the request target")
    if authority is not None:
        if not authority or b"@" in authority or not _HOST.match(authority):
            raise _bad("bad_host", f"malformed :authority {authority[:64]!r}")
        if host is not None and host.lower() != authority.lower():
            raise _bad("host_mismatch", ":authority and Host differ")
        if host is None:
            fields.insert(0, (b"host", authority))
        host = authority
    elif host is None:
        raise _bad("missing_host", "request without :authority or Host")
    elif not _HOST.match(host):
        raise _bad("bad_host", f"malformed Host {host[:64]!r}")
    if len(fields) > maxHeaders:
        # :authority counts as the Host line it stands for.
        raise _bad("too_many_headers", f"more than {maxHeaders} header lines", 431)
    return RequestHead(
        method, path, path, VERSION, fields, host, contentLength, False, True, None,
        expect is not None and expect.lower() == b"100-continue",
    )


def responseHeaders(head) -> list:
    """
    The HTTP/2 header list of a node's response head.

    @param head: a L{txrouter.wire.http1.ResponseHead}.
    @return: C{(name, value)} byte pairs, C{:status} first.
    @raise HTTPError: 502, a value holds a NUL, which HTTP/2 does not
        allow (CR and LF never pass the response head's parser), or the
        body has a transfer coding other than a lone C{chunked} (which the
        stream decodes): HTTP/2 has none to carry it in.
    """
    named = set()
    for name, value in head.headers:
        lower = name.lower()
        if lower == b"connection":
            named.update(t.strip(b" \t").lower() for t in value.split(b","))
        elif lower == b"transfer-encoding" and not head.chunked:
            raise HTTPError(
                502, "bad_response",
                f"Transfer-Encoding {value[:40]!r}, which HTTP/2 cannot carry",
            )
    named.discard(b"content-length")
    out = [(b":status", b"%d" % head.status)]
    for name, value in head.headers:
        lower = name.lower()
        if lower in _HOP_BY_HOP or lower in named:
            continue
        if lower == b"content-length" and head.chunked:
            continue
        if b"\x00" in value:
            raise HTTPError(502, "bad_response", f"NUL in the value of {name[:40]!r}")
        out.append((lower, value))
    return out


def errorResponse(status: int, detail: str = "") -> "tuple[list, bytes]":
    """
    The router's own short answer on a stream: its headers and body, as
    L{txrouter.wire.responses.errorResponse} for HTTP/1.1.
    """
    reason = REASONS.get(status, b"Error")
    body = b"%d %s\n" % (status, reason)
    if detail:
        body += detail.encode("ascii", "replace")[:200] + b"\n"
    return [
        (b":status", b"%d" % status),
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", b"%d" % len(body)),
    ], body
