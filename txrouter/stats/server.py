"""
The stats listener: on each connection, write the stats document and close
(uWSGI's C{--R-stats}); with C{http}, first read one request head and
answer it as HTTP (uWSGI's C{--stats-http}).
"""

from twisted.internet.protocol import Protocol, ServerFactory

from txrouter.endpoints import parseServerEndpoint
from txrouter.stats.document import encodeStats

#: Longest request head read in HTTP mode.
_MAX_REQUEST = 8192

_HTTP_HEAD = (
    b"HTTP/1.0 200 OK\r\n"
    b"Connection: close\r\n"
    b"Access-Control-Allow-Origin: *\r\n"
    b"Content-Type: application/json\r\n"
    b"\r\n"
)


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
            self._request = None
            self._answer()
        elif len(self._request) > _MAX_REQUEST:
            self._request = None
            self.transport.abortConnection()

    def _answer(self) -> None:
        factory = self.factory
        body = encodeStats(factory.document(), factory.minified)
        self.transport.write(_HTTP_HEAD + body if factory.http else body)
        self.transport.loseConnection()

    def connectionLost(self, reason) -> None:
        if self._timeout is not None and self._timeout.active():
            self._timeout.cancel()


class StatsFactory(ServerFactory):
    """
    Serves the document C{document()} returns.

    @ivar timeout: seconds an HTTP client has to send its request (uWSGI's
        socket timeout, 4 s).
    """

    protocol = _StatsProtocol
    noisy = False

    def __init__(self, reactor, document, http: bool = False, minified: bool = False,
                 timeout: float = 4.0) -> None:
        self.reactor = reactor
        self.document = document
        self.http = http
        self.minified = minified
        self.timeout = timeout
