"""
The stats listener: on each connection, write the stats document and close
(uWSGI's C{--R-stats}); with C{http}, first read one request head and
answer it as HTTP (uWSGI's C{--stats-http}): the JSON document, the HTML
stats page at C{/} for a browser (a request accepting C{text/html}), and
the Prometheus metrics at C{/metrics}.  The C{--metrics} listener
(L{MetricsFactory}) answers C{/metrics} only.
"""

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.logger import Logger

from txrouter.endpoints import parseServerEndpoint
from txrouter.stats.document import encodeStats
from txrouter.stats.metrics import CONTENT_TYPE_LATEST
from txrouter.stats.page import renderPage

#: Longest request head read in HTTP mode.
_MAX_REQUEST = 8192

log = Logger(namespace="txrouter.stats")

_JSON = b"application/json"
_HTML = b"text/html; charset=utf-8"


def _httpAnswer(status: bytes, contentType: bytes, body: bytes) -> bytes:
    return (
        b"HTTP/1.0 " + status + b"\r\n"
        b"Connection: close\r\n"
        b"Access-Control-Allow-Origin: *\r\n"
        b"Content-Type: " + contentType + b"\r\n"
        b"Content-Length: %d\r\n"
        b"\r\n" % len(body)
    ) + body


def _pathAndAccept(request: bytes) -> "tuple[bytes, bytes]":
    """
    The path (without its query) of a request head, and its C{Accept}
    value (empty if none).
    """
    lines = request.replace(b"\r\n", b"\n").split(b"\n")
    parts = lines[0].split(b" ")
    path = parts[1].partition(b"?")[0] if len(parts) > 1 else b"/"
    accept = b""
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"accept":
            accept = value.strip().lower()
    return path, accept


def _escaped(value: str) -> str:
    """
    C{value} as one argument of an endpoint string: backslashes, colons
    and equals signs escaped with a backslash.
    """
    return "".join("\\" + c if c in "\\:=" else c for c in value)


def uwsgiAddressToEndpoint(address: str) -> str:
    """
    Accept uWSGI's spelling of a listening address as well as endpoint
    strings: C{host:port}, C{[v6]:port} and C{:port} become C{tcp:}, a
    path C{unix:} (any path: its C{\\}, C{:} and C{=} are escaped).
    """
    kind = address.partition(":")[0]
    if kind in ("tcp", "tcp6", "unix", "ssl", "systemd"):
        return address
    if address.startswith("/") or ":" not in address:
        return "unix:" + _escaped(address)
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    return f"tcp:{_escaped(port)}:interface={_escaped(host)}" if host else f"tcp:{_escaped(port)}"


def statsEndpoint(reactor, address: str):
    """
    The server endpoint for a stats address (see L{uwsgiAddressToEndpoint}).

    Nothing is bound yet: given a C{MemoryReactor}, this checks an address
    before start-up.

    @raise ValueError: C{address} names no endpoint; the message quotes it
        and says why.
    """
    try:
        return parseServerEndpoint(reactor, address and uwsgiAddressToEndpoint(address))
    except ValueError as e:
        raise ValueError(
            f"{address!r} is not a listening address ({e}); give an endpoint"
            " string (tcp:9191, unix:/run/r.stats), host:port or a path"
        ) from None


def _then(value, f):
    """
    C{f(value)}, or once C{value} has fired if it is a L{Deferred} (the
    documents of a C{--processes} pool, gathered from its workers).
    """
    if isinstance(value, Deferred):
        return value.addCallback(f)
    return f(value)


class _StatsProtocol(Protocol):
    _request = b""
    _timeout = None

    def connectionMade(self) -> None:
        factory = self.factory
        if not factory.http:
            self._answer()
            return
        self._timeout = factory.reactor.callLater(factory.timeout, self.transport.abortConnection)

    def dataReceived(self, data: bytes) -> None:
        if self._request is None:
            return
        self._request += data
        if b"\r\n\r\n" in self._request or b"\n\n" in self._request:
            request, self._request = self._request, None
            self._answer(request)
        elif len(self._request) > _MAX_REQUEST:
            self._request = None
            peer = self.transport.getPeer()
            log.info(
                "stats_request_too_large: 431 a request head over {limit} bytes (client {client})",
                event="stats_request_too_large", limit=_MAX_REQUEST,
                client=getattr(peer, "host", None) or "unix",
            )
            self._send(_httpAnswer(
                b"431 Request Header Fields Too Large", b"text/plain",
                b"request head over %d bytes\n" % _MAX_REQUEST,
            ))

    def _answer(self, request: bytes = b"") -> None:
        factory = self.factory
        if factory.http:
            _then(factory.answer(*_pathAndAccept(request)), self._send)
        else:
            _then(factory.document(), lambda document: self._send(
                encodeStats(document, factory.minified)))

    def _send(self, data: bytes) -> None:
        self.transport.write(data)
        self.transport.loseConnection()

    def connectionLost(self, reason) -> None:
        if self._timeout is not None and self._timeout.active():
            self._timeout.cancel()


class StatsFactory(ServerFactory):
    """
    Serves the document C{document()} returns.

    @ivar timeout: seconds an HTTP client has to send its request (uWSGI's
        socket timeout, 4 s).
    @ivar metrics: a callable giving the Prometheus text served at
        C{/metrics} in HTTP mode, or L{None}.
    @ivar shortName: uWSGI's name of the router, for the HTML page served
        at C{/} in HTTP mode to clients accepting C{text/html}; L{None}:
        no page.
    """

    protocol = _StatsProtocol
    noisy = False
    metrics = None
    shortName = None

    def answer(self, path: bytes, accept: bytes) -> bytes:
        """
        The HTTP answer to a request for C{path} accepting C{accept}:
        every path is the JSON document (as uWSGI's), but C{/metrics} and
        a browser's C{/}.
        """
        if path == b"/metrics" and self.metrics is not None:
            return _then(self.metrics(), lambda text: _httpAnswer(
                b"200 OK", CONTENT_TYPE_LATEST.encode(), text))
        if path == b"/" and b"text/html" in accept and self.shortName is not None:
            return _then(self.document(), lambda document: _httpAnswer(
                b"200 OK", _HTML, renderPage(document, self.shortName)))
        return _then(self.document(), lambda document: _httpAnswer(
            b"200 OK", _JSON, encodeStats(document, self.minified)))

    def __init__(self, reactor, document, http: bool = False, minified: bool = False,
                 timeout: float = 4.0) -> None:
        self.reactor = reactor
        self.document = document
        self.http = http
        self.minified = minified
        self.timeout = timeout


class MetricsFactory(ServerFactory):
    """
    The C{--metrics} listener: answers an HTTP request for C{/metrics}
    with the Prometheus text C{metrics()} returns, any other with a 404.
    """

    protocol = _StatsProtocol
    noisy = False
    http = True

    def __init__(self, reactor, metrics, timeout: float = 4.0) -> None:
        self.reactor = reactor
        self.metrics = metrics
        self.timeout = timeout

    def answer(self, path: bytes, accept: bytes) -> bytes:
        if path == b"/metrics":
            return _then(self.metrics(), lambda text: _httpAnswer(
                b"200 OK", CONTENT_TYPE_LATEST.encode(), text))
        return _httpAnswer(b"404 Not Found", b"text/plain", b"metrics are at /metrics\n")
