"""
Response bodies the router re-frames: uWSGI's C{--http-auto-chunked} and
C{--http-auto-gzip} (reference section 5.6).

A response without C{Content-Length} or C{Transfer-Encoding} ends when its
node closes, so its client connection cannot carry another request.  To an
HTTP/1.1 client the router can send such a body chunked instead
(L{ChunkedBody}), and, when the application asks for it with a
C{uWSGI-Encoding: gzip} header and the client accepts gzip, compressed
(L{GzipChunkedBody}).  Both encode each piece as it comes: nothing is
buffered whole, and a compressed piece is flushed at once (C{Z_SYNC_FLUSH})
so that a streamed response (server-sent events, a long poll) is not held
back by the compressor.

No Twisted here: these are pure byte transforms.
"""

import zlib

from txrouter.wire.http1 import encodeChunk

__all__ = ["ChunkedBody", "GzipChunkedBody", "bodyCoding", "withHeaderLines"]

_LAST_CHUNK = b"0\r\n\r\n"


class ChunkedBody:
    """
    A body of unknown length sent with chunked transfer coding.

    @cvar headerLines: what the response head gains.
    """

    headerLines = b"Transfer-Encoding: chunked\r\n"

    def encode(self, data: bytes) -> bytes:
        """
        The chunk carrying C{data} (nothing for no data: an empty chunk
        would end the body).
        """
        return encodeChunk(data) if data else b""

    def finish(self) -> bytes:
        """
        The bytes that end the body.
        """
        return _LAST_CHUNK


class GzipChunkedBody(ChunkedBody):
    """
    A body of unknown length gzip-compressed, sent chunked: one gzip
    member, as uWSGI sends it.
    """

    headerLines = b"Content-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n"

    def __init__(self, level: int = 6) -> None:
        # wbits 31: a gzip header and trailer around the deflate stream.
        self._compressor = zlib.compressobj(level, zlib.DEFLATED, 31)

    def encode(self, data: bytes) -> bytes:
        if not data:
            return b""
        compressor = self._compressor
        return encodeChunk(compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH))

    def finish(self) -> bytes:
        tail = self._compressor.flush(zlib.Z_FINISH)
        return encodeChunk(tail) + _LAST_CHUNK


def _header(headers, name: bytes) -> "bytes | None":
    """
    The value of the first header called C{name} (lower case), or L{None}.
    """
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def bodyCoding(requestHeaders, responseHeaders, autoChunked: bool, autoGzip: bool):
    """
    How to send a close-delimited response body to an HTTP/1.1 client.

    @param requestHeaders: the request's C{(name, value)} header pairs.
    @param responseHeaders: the response's.
    @param autoChunked: C{--auto-chunked}: send it chunked.
    @param autoGzip: C{--auto-gzip}: send it gzipped (and chunked) when
        the response has C{uWSGI-Encoding: gzip}, no C{Content-Encoding},
        and the request's C{Accept-Encoding} names gzip (uWSGI looks for
        the substring; here a C{gzip} coding with a q-value of 0 is a
        refusal, as RFC 9110 says).
    @return: a L{ChunkedBody}, a L{GzipChunkedBody}, or L{None} to relay
        the body as it is until the node closes: always for a response
        with a C{Transfer-Encoding} (other than a lone C{chunked}, which
        is not close-delimited), already transfer-coded, and which
        chunking again would give two C{Transfer-Encoding} fields.
    """
    if _header(responseHeaders, b"transfer-encoding") is not None:
        return None
    if autoGzip and _wantsGzip(requestHeaders, responseHeaders):
        return GzipChunkedBody()
    if autoChunked:
        return ChunkedBody()
    return None


def _wantsGzip(requestHeaders, responseHeaders) -> bool:
    asked = _header(responseHeaders, b"uwsgi-encoding")
    if asked is None or asked.strip().lower() != b"gzip":
        return False
    if _header(responseHeaders, b"content-encoding") is not None:
        return False
    accepted = _header(requestHeaders, b"accept-encoding")
    return accepted is not None and _acceptsGzip(accepted)


def _acceptsGzip(accepted: bytes) -> bool:
    """
    Whether an C{Accept-Encoding} value accepts gzip (C{gzip}, C{x-gzip} or
    C{*}, without C{q=0}).
    """
    for item in accepted.lower().split(b","):
        coding, _, parameters = item.partition(b";")
        if coding.strip() not in (b"gzip", b"x-gzip", b"*"):
            continue
        quality = parameters.strip()
        if quality.startswith(b"q="):
            try:
                if float(quality[2:]) == 0:
                    return False
            except ValueError:
                return False
        return True
    return False


def withHeaderLines(head: bytes, lines: bytes) -> bytes:
    """
    A response head (blank line included) with header C{lines} (each
    ending in CRLF) added at its end.
    """
    return head[:-2] + lines + b"\r\n"
