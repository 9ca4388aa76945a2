"""
HTTP/1.1 message heads and chunked bodies, sans-IO and strict.

Requests are parsed the way nginx and HAProxy parse them, not the way
uWSGI's router does: anything that two parsers could read differently
(request smuggling material) is refused with an L{HTTPError} that carries
the status to answer with and a stable event name for the log.  Limits are
enforced while bytes arrive, so memory stays bounded whatever the client
sends.

Responses come from backends and are parsed more leniently, but still
bounded; the router relays their bytes verbatim and only needs their
framing (L{response_framing}).
"""

import re
from functools import partial
from typing import ClassVar, NamedTuple

from mypy_extensions import mypyc_attr

__all__ = [
    "HTTPError",
    "RequestHead",
    "RequestHeadParser",
    "ResponseHead",
    "ResponseHeadParser",
    "ChunkedDecoder",
    "ChunkedScanner",
    "responseFraming",
    "encodeChunk",
    "LAST_CHUNK",
    "startsRequestLine",
]

LAST_CHUNK = b"0\r\n\r\n"

_TOKEN_CHARS = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# Field values: visible ASCII, SP, HTAB and obs-text; everything else
# (NUL, CR, LF, other controls, DEL) is refused.
_VALUE_CHARS = bytes([9]) + bytes(range(0x20, 0x7F)) + bytes(range(0x80, 0x100))
#: What starts an obsolete folded header line.
_FOLD = (b" ", b"\t")
_TARGET_CHARS = bytes(range(0x21, 0x7F))
_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
#: The longest method (the longest registered one has 17 bytes): bytes that
#: go on as a token past it are refused before a line end arrives.
_MAX_METHOD = 32
_METHOD = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,32}"

_REQUEST_LINE = re.compile(rb"(" + _METHOD + rb") (\S+) (HTTP/(\d)\.(\d))\Z")
_RTSP_LINE = re.compile(rb"(" + _METHOD + rb") (\S+) (RTSP/1\.0)\Z")
#: The version of RTSP requests (uWSGI's --http-manage-rtsp).
RTSP_VERSION = b"RTSP/1.0"
_VERSION_SO_FAR = re.compile(rb"HTTP/\d(?:\.\d?)?\r?\Z")
# What a request line may be before its LF: all of it, or its beginning.
_LINE_SO_FAR = re.compile(
    _METHOD + rb" (?:[!-~]+ (?:H(?:T(?:T(?:P(?:/(?:1(?:\.(?:[01]\r?)?)?)?)?)?)?)?)?|[!-~]*)\Z"
    rb"|[!#$%&'*+\-.^_`|~0-9A-Za-z]{0,32}\Z"
)
_HOST = re.compile(
    rb"(?:[A-Za-z0-9\-._~!$&'()*+,;=%]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{0,5})?\Z"
)
_BARE_LF = re.compile(rb"(?<!\r)\n")
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}\Z")
_QUOTED = rb'"(?:[\t\x20\x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t\x20-\x7e\x80-\xff])*"'
_CHUNK_EXT = re.compile(
    rb"(?:[ \t]*;[ \t]*" + _TOKEN + rb"(?:[ \t]*=[ \t]*(?:" + _TOKEN + rb"|" + _QUOTED + rb"))?)*\Z"
)
_STATUS = rb"(HTTP/1\.[01]) ([0-9]{3})(?: ([^\r\n]*))?"
_STATUS_LINE = re.compile(_STATUS + rb"\Z")
# The usual request head, syntax checked in one match: a request line with
# an origin-form target, then "name: value" lines of legal bytes only (so no
# bare CR or LF, no control byte, no obs-fold, no space before a colon).
# Anything else takes the line-by-line checks, which name what is wrong.
_PLAIN_HEAD = re.compile(
    rb"(" + _METHOD + rb") (/[!-~]*) (HTTP/1\.[01])"
    rb"(?:\r\n" + _TOKEN + rb":[\t\x20-\x7e\x80-\xff]*)*\Z"
)



def plainResponseHead(statusLine: bytes):
    """
    The usual response head, syntax checked in one match: a status line
    that C{statusLine} (a pattern) matches, then C{name: value} lines of a
    token, a colon and no CR or LF (so no bare CR or LF anywhere), without
    the blank line.  Anything else takes the line-by-line checks, which
    name what is wrong.
    """
    return re.compile(statusLine + rb"(?:\r\n" + _TOKEN + rb":[^\r\n]*)*\Z")


_PLAIN_RESPONSE = plainResponseHead(_STATUS)

#: Empty lines tolerated before a request line (RFC 9112, section 2.2).
_MAX_LEADING_EMPTY_LINES = 8


class HTTPError(Exception):
    """
    A message the router refuses.

    @ivar status: the HTTP status to answer with.
    @ivar event: a short, stable, snake_case name for the log.
    @ivar detail: human-readable explanation.
    @ivar silent: no answer makes sense to this peer (a TLS client): close
        without one.
    """

    def __init__(self, status: int, event: str, detail: str, silent: bool = False) -> None:
        super().__init__(f"{status} {event}: {detail}")
        self.status = status
        self.event = event
        self.detail = detail
        self.silent = silent


#: What a method sent to a TLS port is made of: nginx's method bytes.
_METHOD_CHARS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ_-"


def startsRequestLine(data: bytes) -> "bool | None":
    """
    Whether the first bytes of a connection begin an HTTP/1.x request
    line: an upper-case method (nginx's letters, C{_} and C{-}; up to
    C{_MAX_METHOD} bytes) and a space.  A TLS record (C{0x16}), an SSH
    banner (C{SSH-2.0-...}: a digit, a dot) or a lower-case word is not.

    @return: C{True} or C{False}, or L{None} while C{data} is a method's
        beginning without its space: more bytes will tell.
    """
    space = data.find(b" ", 0, _MAX_METHOD + 1)
    if space == -1:
        if len(data) > _MAX_METHOD or data.translate(None, _METHOD_CHARS):
            return False
        return None
    return space > 0 and not data[:space].translate(None, _METHOD_CHARS)


def _bad(event: str, detail: str, status: int = 400) -> HTTPError:
    return HTTPError(status, event, detail)


def _tokens(value: bytes) -> list:
    return [t.strip(b" \t").lower() for t in value.split(b",")]


class RequestHead(NamedTuple):
    """
    A parsed and validated request head: an immutable value.

    (A named tuple rather than a frozen attrs class: one is made per
    request, and a tuple is made in one step where a frozen class sets its
    fields one by one.)

    @ivar method: the method token.
    @ivar target: the request target as sent.
    @ivar path: the origin-form path and query (for an absolute-form target,
        the part after its authority).
    @ivar version: C{b"HTTP/1.1"} or C{b"HTTP/1.0"} (or C{b"RTSP/1.0"}, if allowed).
    @ivar headers: C{(name, value)} pairs in arrival order; names as sent,
        values without surrounding whitespace.
    @ivar host: the Host value (or the absolute-form authority), or L{None}.
    @ivar contentLength: the body length, or L{None}.
    @ivar chunked: the body is chunked.
    @ivar keepAlive: the client allows the connection to be reused.
    @ivar upgrade: the lower-cased Upgrade value when Connection asks for
        an upgrade, else L{None}.
    @ivar expectContinue: the client waits for C{100 Continue}.
    """

    method: bytes
    target: bytes
    path: bytes
    version: bytes
    headers: list
    host: "bytes | None"
    contentLength: "int | None"
    chunked: bool
    keepAlive: bool
    upgrade: "bytes | None"
    expectContinue: bool


class RequestHeadParser:
    """
    Incremental parser of one request head.

    L{feed} bytes until it returns a L{RequestHead}; L{leftover} then holds
    the bytes after the head.  Call L{reset} before the next request.
    """

    def __init__(
        self,
        maxRequestLine: int = 8192,
        maxHeaderCount: int = 100,
        maxHeadSize: int = 65536,
        allowRTSP: bool = False,
    ) -> None:
        """
        @param allowRTSP: also take C{RTSP/1.0} requests (their target may
            be an C{rtsp://} URI, whose authority becomes the head's
            C{host}); their heads are checked as HTTP/1.0 ones.
        """
        self.maxRequestLine = maxRequestLine
        self.maxHeaderCount = maxHeaderCount
        self.maxHeadSize = maxHeadSize
        self.allowRTSP = allowRTSP
        self.reset()

    def reset(self) -> None:
        """
        Forget everything; ready for a new request.
        """
        self._buffer = b""
        self._scanned = 0
        self._lines = 0
        self._linesCountedTo = 0
        self._emptyLines = 0
        self._lineChecked = False
        self._lineScanned = 0
        self.leftover = b""

    @property
    def begun(self) -> bool:
        """
        Whether part of a head has been fed (a request is arriving).
        """
        return bool(self._buffer)

    def feed(self, data: bytes):
        """
        Add bytes.

        @return: the L{RequestHead} once the head is complete, else L{None}.
        @raise HTTPError: a limit is exceeded or the head is malformed.
        """
        buf = self._buffer + data if self._buffer else data
        if buf[:1] == b"\r" or buf[:1] == b"\n":
            buf = self._skipEmptyLines(buf)
        start = self._scanned
        end = buf.find(b"\r\n\r\n", start)
        if end == -1:
            self._buffer = buf
            self._checkPartial(buf, start)
            return None
        self._buffer = b""
        self.leftover = buf[end + 4 :]
        return self._parse(buf[:end])

    def _skipEmptyLines(self, buf: bytes) -> bytes:
        # Counted across feeds: a client sending them a few bytes at a time
        # gets the same answer as one sending them at once.
        while buf[:2] == b"\r\n":
            buf = buf[2:]
            self._emptyLines += 1
            if self._emptyLines > _MAX_LEADING_EMPTY_LINES:
                raise _bad("bad_request_line", "too many empty lines before the request")
        if buf[:1] == b"\n":
            raise _bad("bare_lf", "line ending in a bare LF")
        return buf

    def _checkPartial(self, buf: bytes, start: int) -> None:
        """
        Enforce the limits on a head that has not ended yet.
        """
        scanFrom = max(start - 3, 0)
        if _BARE_LF.search(buf, scanFrom):
            raise _bad("bare_lf", "line ending in a bare LF")
        # Each line end is counted once, whatever the feeds' sizes: from
        # where the last count stopped (a CR at the very end may still
        # become a line end).
        self._lines += buf.count(b"\r\n", self._linesCountedTo)
        self._linesCountedTo = max(len(buf) - 1, 0)
        self._scanned = max(len(buf) - 3, 0)
        if not self._lineChecked:
            lineEnd = buf.find(b"\r\n")
            if lineEnd == -1:
                if len(buf) > self.maxRequestLine:
                    raise _bad("request_line_too_long", f"request line over {self.maxRequestLine} bytes", 414)
                if self._lineScanned or _LINE_SO_FAR.match(buf) is None:
                    self._checkLineSoFar(buf)
                else:
                    self._lineScanned = len(buf)
            else:
                self._lineChecked = True
                self._requestLine(buf[:lineEnd])
        if len(buf) > self.maxHeadSize:
            raise _bad("head_too_large", f"request head over {self.maxHeadSize} bytes", 431)
        if self._lines > self.maxHeaderCount + 1:
            raise _bad("too_many_headers", f"more than {self.maxHeaderCount} header lines", 431)

    def _checkLineSoFar(self, buf: bytes) -> None:
        """
        Refuse a request line that, its CRLF not in yet, can no longer
        become C{method SP target SP HTTP/1.x} (as nginx answers at the
        first byte that cannot begin a method): a TLS or uwsgi client, or
        garbage without a line end, is not left waiting for the head
        deadline.  The target's form is checked once the line is whole.
        The first look is one match of L{_LINE_SO_FAR} (made by the
        caller); later ones only look at the new bytes (and the version's
        few), so that a line sent a byte at a time costs no more than one
        sent whole.
        """
        scanned = self._lineScanned
        if not scanned:
            if buf == b"\r" and self._emptyLines < _MAX_LEADING_EMPTY_LINES:
                # An empty line may be on its way.
                return
            raise self._hopeless(buf)
        first = buf.find(b" ", 0, _MAX_METHOD + 1)
        if first == -1:
            if buf[scanned:].translate(None, _TOKEN_CHARS) or len(buf) > _MAX_METHOD:
                raise self._hopeless(buf)
        # The slices below are only taken where they are not empty: mypyc's
        # bytes slice fails on a start past the end (mypy 2.4).
        elif first == 0 or (scanned < first and buf[scanned:first].translate(None, _TOKEN_CHARS)):
            raise self._hopeless(buf)
        else:
            start = first + 1 if scanned <= first else scanned
            second = buf.find(b" ", first + 1)
            if second == -1:
                if buf[start:].translate(None, _TARGET_CHARS):
                    raise self._hopeless(buf)
            elif second == first + 1 or (start < second and buf[start:second].translate(None, _TARGET_CHARS)):
                raise self._hopeless(buf)
            else:
                version = buf[second + 1 :]
                if not (
                    b"HTTP/1.1\r".startswith(version) or b"HTTP/1.0\r".startswith(version)
                    or (self.allowRTSP and b"RTSP/1.0\r".startswith(version))
                ):
                    raise self._hopeless(buf)
        self._lineScanned = len(buf)

    def _hopeless(self, buf: bytes) -> HTTPError:
        """
        The refusal of a request line that cannot become valid, named as
        when its line end has come, or after the protocol it looks like.
        """
        if buf[:2] == b"\x16\x03":
            return HTTPError(
                400, "tls_on_http_port", "a TLS handshake on a plain HTTP port", silent=True
            )
        if buf[:1] == b"\x00":
            return _bad(
                "uwsgi_on_http_port",
                "a uwsgi packet on the HTTP port (uwsgi_pass where proxy_pass was meant?)",
            )
        first = buf.find(b" ")
        if 0 < first <= _MAX_METHOD and not buf[:first].translate(None, _TOKEN_CHARS):
            second = buf.find(b" ", first + 1)
            target = buf[first + 1 : second] if second != -1 else buf[first + 1 :]
            if second == -1 and target[-1:] == b"\r" and len(target) > 1:
                if not target[:-1].translate(None, _TARGET_CHARS):
                    return _bad("http09", "HTTP/0.9 requests are not supported")
            if target.translate(None, _TARGET_CHARS):
                return _bad("bad_target", "request target with bytes outside visible ASCII")
            if target and second != -1 and _VERSION_SO_FAR.match(buf, second + 1):
                if buf[:first] == b"PRI":
                    return _bad("http2_preface", "HTTP/2 is not spoken here", 505)
                return _bad("bad_version", "unsupported version", 505)
        return _bad("bad_request_line", "malformed request line")

    def _requestLine(self, line: bytes):
        if len(line) > self.maxRequestLine:
            raise _bad("request_line_too_long", f"request line over {self.maxRequestLine} bytes", 414)
        match = _REQUEST_LINE.match(line)
        if match is None and self.allowRTSP:
            rtsp = _RTSP_LINE.match(line)
            if rtsp is not None:
                method, target, version = rtsp.groups()
                if target.translate(None, _TARGET_CHARS):
                    raise _bad("bad_target", "request target with bytes outside visible ASCII")
                return method, target, version
        if match is None:
            if line.startswith(b"PRI * HTTP/2"):
                raise _bad("http2_preface", "HTTP/2 is not spoken here", 505)
            if line.count(b" ") == 1 and not line.endswith(b" "):
                raise _bad("http09", "HTTP/0.9 requests are not supported")
            raise _bad("bad_request_line", "malformed request line")
        method, target, version, major, minor = match.groups()
        if major != b"1" or minor not in (b"0", b"1"):
            if method == b"PRI":
                raise _bad("http2_preface", "HTTP/2 is not spoken here", 505)
            raise _bad("bad_version", f"unsupported version {version!r}", 505)
        if target.translate(None, _TARGET_CHARS):
            raise _bad("bad_target", "request target with bytes outside visible ASCII")
        return method, target, version

    def _checkedLines(self, head: bytes):
        """
        Check a request head line by line, naming the first fault.

        @return: the method, target, version and C{(name, value)} headers.
        """
        unfolded = head.replace(b"\r\n", b"")
        # find(), not "in": a bytes operand of "in" is first tried as an
        # integer, and the TypeError that makes costs more than the search.
        if unfolded.find(b"\n") != -1 or unfolded.find(b"\r") != -1:
            raise _bad("bare_lf", "bare CR or LF in the request head")
        lines = head.split(b"\r\n")
        if len(lines) > self.maxHeaderCount + 1:
            raise _bad("too_many_headers", f"more than {self.maxHeaderCount} header lines", 431)
        method, target, version = self._requestLine(lines[0])
        headers = []
        for line in lines[1:]:
            if line.startswith(_FOLD):
                raise _bad("obs_fold", "folded header line (obs-fold)")
            name, colon, value = line.partition(b":")
            if not colon or not name:
                raise _bad("bad_header", "header line without a name and a colon")
            if name.translate(None, _TOKEN_CHARS):
                if name[-1:] in b" \t":
                    raise _bad("space_before_colon", "whitespace between header name and colon")
                raise _bad("bad_header_name", "header name is not a token")
            value = value.strip(b" \t")
            if value.translate(None, _VALUE_CHARS):
                raise _bad("bad_header_value", f"control byte in the value of {name[:40]!r}")
            headers.append((name, value))
        return method, target, version, headers

    def _parse(self, head: bytes) -> RequestHead:
        if len(head) + 4 > self.maxHeadSize:
            raise _bad("head_too_large", f"request head over {self.maxHeadSize} bytes", 431)
        plain = _PLAIN_HEAD.match(head)
        if plain is not None:
            method, target, version = plain.groups()
            lines = head.split(b"\r\n")
            if len(lines) > self.maxHeaderCount + 1:
                raise _bad("too_many_headers", f"more than {self.maxHeaderCount} header lines", 431)
            if len(lines[0]) > self.maxRequestLine:
                raise _bad(
                    "request_line_too_long", f"request line over {self.maxRequestLine} bytes", 414
                )
            headers = []
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                headers.append((name, value.strip(b" \t")))
        else:
            method, target, version, headers = self._checkedLines(head)

        host = contentLength = transferEncoding = connection = upgrade = expect = None
        for name, value in headers:
            lower = name.lower()
            if lower == b"host":
                if host is not None:
                    raise _bad("duplicate_host", "two Host headers")
                host = value
            elif lower == b"content-length":
                if contentLength is not None:
                    raise _bad("duplicate_content_length", "two Content-Length headers")
                if not value.isdigit() or len(value) > 19:
                    raise _bad("bad_content_length", f"Content-Length {value[:20]!r}")
                contentLength = int(value)
            elif lower == b"transfer-encoding":
                if transferEncoding is not None:
                    raise _bad("duplicate_transfer_encoding", "two Transfer-Encoding headers")
                transferEncoding = value
            elif lower == b"connection":
                connection = value if connection is None else connection + b"," + value
            elif lower == b"upgrade":
                upgrade = value
            elif lower == b"expect":
                expect = value

        isOneOne = version == b"HTTP/1.1"

        if transferEncoding is not None:
            if contentLength is not None:
                raise _bad("smuggling_cl_te", "both Content-Length and Transfer-Encoding")
            if not isOneOne:
                raise _bad("transfer_encoding_http10", "Transfer-Encoding in an HTTP/1.0 request")
            if transferEncoding.lower() != b"chunked":
                raise _bad(
                    "bad_transfer_encoding",
                    f"Transfer-Encoding {transferEncoding[:40]!r}: only a lone chunked is accepted",
                    501,
                )

        if host is not None and not _HOST.match(host):
            raise _bad("bad_host", f"malformed Host {host[:64]!r}")
        if isOneOne and host is None:
            raise _bad("missing_host", "HTTP/1.1 request without Host")

        first = target[:1]
        if first == b"/":
            path = target
        elif target == b"*":
            if method != b"OPTIONS":
                raise _bad("bad_target", "* is a target for OPTIONS only")
            path = target
        elif method == b"CONNECT":
            raise _bad("connect_refused", "CONNECT is not supported", 405)
        else:
            scheme, sep, rest = target.partition(b"://")
            schemes = (b"rtsp",) if version == RTSP_VERSION else (b"http", b"https")
            if not sep or scheme.lower() not in schemes:
                raise _bad("bad_target", "request target is neither a path nor an http(s) URI")
            cut = len(rest)
            for delimiter in (b"/", b"?", b"#"):
                index = rest.find(delimiter)
                if index != -1 and index < cut:
                    cut = index
            authority = rest[:cut]
            path = rest[cut:] or b"/"
            if path[:1] == b"?":
                path = b"/" + path
            if not authority or b"@" in authority or not _HOST.match(authority):
                raise _bad("bad_target", "malformed authority in the request target")
            if host is None:
                host = authority
            elif authority.lower() != host.lower():
                raise _bad("host_mismatch", "absolute-form target and Host differ")
        if path.find(b"#") != -1:
            raise _bad("bad_target", "fragment in the request target")
        tokens = _tokens(connection) if connection is not None else ()
        # Made from a tuple in the fields' order: a keyword call would
        # cost twice as much, once per request.
        return _newRequestHead((
            method,
            target,
            path,
            version,
            headers,
            host,
            contentLength,
            transferEncoding is not None,
            (b"close" not in tokens) if isOneOne else (b"keep-alive" in tokens),
            upgrade.lower() if upgrade is not None and b"upgrade" in tokens else None,
            expect is not None and expect.lower() == b"100-continue",
        ))


class ResponseHead(NamedTuple):
    """
    A parsed response head from a backend: an immutable value.

    @ivar headBytes: the head exactly as received, blank line included.
    @ivar connectionClose: the head asks for the connection to close after
        it (C{Connection: close}, or HTTP/1.0 without C{keep-alive}); a
        body that ends at the close (L{responseFraming}) is another reason.
    """

    version: bytes
    status: int
    reason: "bytes | None"
    headers: list
    contentLength: "int | None"
    chunked: bool
    connectionClose: bool
    headBytes: bytes


#: Make a head from a tuple of its fields, in order (what C{_make} does,
#: without its length check and method call).
_newRequestHead = partial(tuple.__new__, RequestHead)
_newResponseHead = partial(tuple.__new__, ResponseHead)


def _badResponse(detail: str) -> HTTPError:
    return HTTPError(502, "bad_response", detail)


# The HTTP/2 node's parser (txrouter.wire.h2messages) is a subclass.
@mypyc_attr(allow_interpreted_subclasses=True)
class ResponseHeadParser:
    """
    Incremental parser of one response head (same contract as
    L{RequestHeadParser}).

    Lines must end in CRLF, as every uWSGI plugin writes them.  Header
    values are not validated beyond the absence of CR and LF: they are
    relayed, not interpreted, except for the framing headers.

    @ivar maxHeadSize: the largest head in bytes, blank line included.
    @ivar maxHeaderCount: the most header lines.
    @cvar statusLine: the status lines taken (HTTP/1.0 and HTTP/1.1).
    @cvar plainHead: L{plainResponseHead} of the pattern of C{statusLine}.
    """

    statusLine: ClassVar["re.Pattern[bytes]"] = _STATUS_LINE
    plainHead: ClassVar["re.Pattern[bytes]"] = _PLAIN_RESPONSE

    def __init__(self, maxHeadSize: int = 65536, maxHeaderCount: int = 1000) -> None:
        self.maxHeadSize = maxHeadSize
        self.maxHeaderCount = maxHeaderCount
        self._buffer = b""
        self.leftover = b""

    def feed(self, data: bytes):
        """
        @return: the L{ResponseHead} once complete, else L{None}.
        @raise HTTPError: 502, the head is malformed or too large.
        """
        buf = self._buffer + data if self._buffer else data
        resume = len(self._buffer) - 3
        end = buf.find(b"\r\n\r\n", resume if resume > 0 else 0)
        if end == -1:
            if len(buf) > self.maxHeadSize:
                raise self._tooLarge()
            if len(buf) >= 5 and buf[:5] != b"HTTP/":
                raise _badResponse("response does not start with HTTP/")
            self._buffer = buf
            return None
        if end + 4 > self.maxHeadSize:
            raise self._tooLarge()
        self._buffer = b""
        self.leftover = buf[end + 4 :]
        return self._parse(buf[: end + 4])

    def _tooLarge(self) -> HTTPError:
        return HTTPError(
            502, "response_head_too_large", f"response head over {self.maxHeadSize} bytes"
        )

    def _checkedLines(self, block: bytes):
        """
        Check a response head line by line, naming the first fault.

        @return: the version, status and reason of its status line.
        """
        if block.count(b"\n") != block.count(b"\r\n") or block.count(b"\r") != block.count(b"\n"):
            # Relayed as it is, a lone CR or LF could end a line for the
            # client where it did not for the router.
            raise _badResponse("bare CR or LF in the response head")
        lines = block.split(b"\r\n")
        match = self.statusLine.match(lines[0])
        if match is None:
            raise _badResponse(f"malformed status line {lines[0][:60]!r}")
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon or not name or name.translate(None, _TOKEN_CHARS):
                raise _badResponse(f"malformed header line {line[:60]!r}")
        return match.groups()

    def _parse(self, raw: bytes) -> ResponseHead:
        block = raw[:-4]
        plain = self.plainHead.match(block)
        if plain is None:
            version, status, reason = self._checkedLines(block)
        else:
            version, status, reason = plain.groups()
        lines = block.split(b"\r\n")
        if len(lines) > self.maxHeaderCount + 1:
            raise HTTPError(
                502, "response_too_many_headers",
                f"more than {self.maxHeaderCount} header lines in the response",
            )
        headers = []
        contentLength = None
        chunked = False
        close = version == b"HTTP/1.0"
        transferEncoding = None
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            value = value.strip(b" \t")
            headers.append((name, value))
            lower = name.lower()
            if lower == b"content-length":
                if not value.isdigit() or len(value) > 19:
                    raise _badResponse(f"bad Content-Length {value[:20]!r}")
                if contentLength is not None and int(value) != contentLength:
                    raise _badResponse("conflicting Content-Length headers")
                contentLength = int(value)
            elif lower == b"transfer-encoding":
                transferEncoding = (
                    value if transferEncoding is None else transferEncoding + b"," + value
                )
            elif lower == b"connection":
                tokens = _tokens(value)
                if b"close" in tokens:
                    close = True
                elif b"keep-alive" in tokens and version == b"HTTP/1.0":
                    close = False
        if transferEncoding is not None:
            if contentLength is not None:
                # A sender must not send both (RFC 9112, 6.2); relayed, a
                # cache or client in front could read the body by the
                # length where the router reads it by the coding
                # (response smuggling).  nginx refuses it too.
                raise HTTPError(
                    502, "response_cl_te", "both Content-Length and Transfer-Encoding"
                )
            # Another coding: the body ends when the node closes (see
            # responseFraming), whatever the head says.
            chunked = _tokens(transferEncoding) == [b"chunked"]
        return _newResponseHead(
            (version, int(status), reason, headers, contentLength, chunked, close, raw)
        )


def responseFraming(head: ResponseHead, requestMethod: bytes):
    """
    How the body of a response ends.

    @return: C{("none", 0)} (HEAD, 1xx, 204, 304), C{("length", n)},
        C{("chunked", 0)}, or C{("close", 0)} (the body ends at EOF).
    """
    status = head.status
    if requestMethod == b"HEAD" or status < 200 or status == 204 or status == 304:
        return ("none", 0)
    if head.chunked:
        return ("chunked", 0)
    if head.contentLength is not None:
        if head.contentLength == 0:
            return ("none", 0)
        return ("length", head.contentLength)
    return ("close", 0)


_SIZE, _DATA, _DATA_CRLF, _TRAILER, _DONE = range(5)


class _ChunkedMachine:
    """
    The chunked-coding state machine behind L{ChunkedDecoder} and
    L{ChunkedScanner}.
    """

    def __init__(self, status: int, event: str, maxChunkLine: int, maxTrailerSize: int) -> None:
        self._status = status
        self._event = event
        self._maxLine = maxChunkLine
        self._maxTrailer = maxTrailerSize
        self._state = _SIZE
        self._line = b""
        self._remaining = 0
        self._trailerSize = 0
        self.done = False

    def _error(self, detail: str) -> HTTPError:
        return HTTPError(self._status, self._event, detail)

    def _run(self, data: bytes, out):
        """
        Consume C{data}; append payload slices to C{out} unless it is None.

        @return: the index just past the end of the message, or L{None}.
        """
        pos = 0
        n = len(data)
        while pos < n:
            state = self._state
            if state == _DATA:
                take = self._remaining if self._remaining < n - pos else n - pos
                if out is not None:
                    out.append(data[pos : pos + take] if take != n or pos else data)
                pos += take
                self._remaining -= take
                if not self._remaining:
                    self._state = _DATA_CRLF
            elif state == _DATA_CRLF:
                piece = data[pos : pos + 2 - len(self._line)]
                self._line += piece
                pos += len(piece)
                if len(self._line) == 2:
                    if self._line != b"\r\n":
                        raise self._error("chunk data not followed by CRLF")
                    self._line = b""
                    self._state = _SIZE
            elif state == _DONE:
                return pos
            else:
                index = data.find(b"\n", pos)
                limit = self._maxLine if state == _SIZE else self._maxTrailer
                if index == -1:
                    self._line += data[pos:]
                    if len(self._line) > limit:
                        raise self._error("chunk size or trailer line too long")
                    return None
                line = self._line + data[pos : index + 1]
                self._line = b""
                pos = index + 1
                if len(line) > limit + 2:
                    raise self._error("chunk size or trailer line too long")
                if line[-2:-1] != b"\r" or b"\r" in line[:-2]:
                    raise self._error("bare CR or LF in chunked framing")
                line = line[:-2]
                if state == _SIZE:
                    self._sizeLine(line)
                else:
                    if not line:
                        self._state = _DONE
                        self.done = True
                        return pos
                    self._trailerLine(line)
        return pos if self._state == _DONE else None

    def _sizeLine(self, line: bytes) -> None:
        size, semicolon, extensions = line.partition(b";")
        if semicolon:
            size = size.rstrip(b" \t")
            if not _CHUNK_EXT.match(b";" + extensions):
                raise self._error("malformed chunk extension")
        if not _CHUNK_SIZE.match(size):
            raise self._error(f"malformed chunk size {size[:20]!r}")
        self._remaining = int(size, 16)
        self._state = _DATA if self._remaining else _TRAILER

    def _trailerLine(self, line: bytes) -> None:
        self._trailerSize += len(line) + 2
        if self._trailerSize > self._maxTrailer:
            raise self._error("trailer section too large")
        name, colon, value = line.partition(b":")
        if (
            not colon
            or not name
            or name.translate(None, _TOKEN_CHARS)
            or value.strip(b" \t").translate(None, _VALUE_CHARS)
        ):
            raise self._error("malformed trailer field")


class ChunkedDecoder(_ChunkedMachine):
    """
    Decodes a chunked request body; trailers are validated and dropped.

    @ivar done: the last chunk and the trailer section have been read.
    @ivar leftover: once done, the bytes that followed the body.
    """

    def __init__(self, maxChunkLine: int = 4096, maxTrailerSize: int = 8192) -> None:
        super().__init__(400, "bad_chunk", maxChunkLine, maxTrailerSize)
        self.leftover = b""

    def feed(self, data: bytes) -> list:
        """
        @return: the payload pieces found in C{data} (possibly none).
        @raise HTTPError: 400, the framing is malformed.
        """
        if self.done:
            self.leftover += data
            return []
        out: "list[bytes]" = []
        end = self._run(data, out)
        if end is not None:
            self.leftover = data[end:]
        return out


class ChunkedScanner(_ChunkedMachine):
    """
    Finds the end of a chunked response without changing its bytes.
    """

    def __init__(self, maxChunkLine: int = 4096, maxTrailerSize: int = 65536) -> None:
        super().__init__(502, "bad_response_chunk", maxChunkLine, maxTrailerSize)

    def feed(self, data: bytes):
        """
        @return: L{None} while the message goes on past C{data}, else the
            index in C{data} just past the message's end.
        @raise HTTPError: 502, the framing is malformed.
        """
        return self._run(data, None)


def encodeChunk(data: bytes) -> bytes:
    """
    One chunk of chunked transfer coding.
    """
    return b"%x\r\n%s\r\n" % (len(data), data)
