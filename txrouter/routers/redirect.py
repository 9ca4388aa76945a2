"""
C{--http-to-https ADDR[,PORT]}: a plain HTTP listener that sends every
request to the same place over HTTPS.

As uWSGI's (reference section 5.7), every request gets a C{301} whose
C{Location} is C{https://}, the C{Host} without its port, C{:PORT} if one
was given, and the request target as sent (uWSGI's C{REQUEST_URI}).
Unlike uWSGI's, the answer has a C{Content-Length} and a short body (uWSGI
sends neither, so a client that does not read to the close cannot tell the
answer has ended), and a request the router would refuse (a malformed head,
no C{Host}) gets a 400 rather than a redirect to nowhere.  The connection
is closed after the answer, as uWSGI does: a redirected client goes to
another port anyway.

A head not received within C{timeout} seconds closes the connection.
"""

from twisted.internet.protocol import Protocol, ServerFactory
from twisted.logger import Logger

from txrouter.wire.http1 import HTTPError, RequestHeadParser
from txrouter.wire.responses import errorResponse

__all__ = ["RedirectFactory", "RedirectSession", "httpsLocation", "redirectResponse"]

log = Logger(namespace="txrouter.redirect")


def httpsLocation(host: bytes, target: bytes, port: "int | None" = None) -> bytes:
    """
    The C{https://} URL for a request to C{host} (a C{Host} value, its
    port removed; an IPv6 literal keeps its brackets) for C{target},
    with C{:port} when given.
    """
    if host.startswith(b"["):
        end = host.find(b"]")
        name = host[:end + 1] if end > 0 else host
    else:
        name = host.partition(b":")[0]
    if port is not None:
        name += b":%d" % port
    return b"https://" + name + target


def redirectResponse(location: bytes, withBody: bool = True) -> bytes:
    """
    The C{301} to C{location}: a C{Content-Length} and a one-line body
    (none, with the same length, for a C{HEAD}), then the close.
    """
    body = b"Moved to " + location + b"\n"
    return b"".join([
        b"HTTP/1.1 301 Moved Permanently\r\n",
        b"Location: ", location, b"\r\n",
        b"Content-Type: text/plain\r\n",
        b"Content-Length: %d\r\n" % len(body),
        b"Connection: close\r\n\r\n",
        body if withBody else b"",
    ])


class RedirectSession(Protocol):
    """
    One client of a C{--http-to-https} listener: one request head, one
    answer, the close.
    """

    def __init__(self, factory: "RedirectFactory") -> None:
        self.factory = factory
        self._parser = RequestHeadParser()
        self._deadline = None
        self._answered = False

    def connectionMade(self) -> None:
        self._deadline = self.factory.reactor.callLater(self.factory.timeout, self._timedOut)

    def dataReceived(self, data: bytes) -> None:
        if self._answered:
            return
        try:
            head = self._parser.feed(data)
        except HTTPError as e:
            self._refuse(e.status, e.event, e.detail, e.silent)
            return
        if head is None:
            return
        if not head.host:
            self._refuse(400, "no_host", "a request without Host cannot be redirected")
            return
        location = httpsLocation(head.host, head.path, self.factory.port)
        self._answer(redirectResponse(location, head.method != b"HEAD"))

    def _refuse(self, status: int, event: str, detail: str, silent: bool = False) -> None:
        """
        Answer C{status} and close; only close if C{silent} (a TLS client
        on this plain port would not read an answer).
        """
        peer = getattr(self.transport.getPeer(), "host", None)
        log.info("{event}: {status} {detail} (client {client})",
                 event=event, status=status, detail=detail, client=peer or "unix")
        self._answer(b"" if silent else errorResponse(status, detail))

    def _answer(self, response: bytes) -> None:
        self._answered = True
        self._stopDeadline()
        if response:
            self.transport.write(response)
        self.transport.loseConnection()

    def _timedOut(self) -> None:
        self._deadline = None
        self.transport.abortConnection()

    def _stopDeadline(self) -> None:
        deadline, self._deadline = self._deadline, None
        if deadline is not None and deadline.active():
            deadline.cancel()

    def connectionLost(self, reason) -> None:
        self._stopDeadline()


class RedirectFactory(ServerFactory):
    """
    The factory of a C{--http-to-https} listener.

    @ivar port: the port written into every C{Location}, or L{None}.
    @ivar timeout: seconds a client has to send its request head.
    """

    noisy = False

    def __init__(self, reactor, port: "int | None" = None, timeout: float = 60.0) -> None:
        self.reactor = reactor
        self.port = port
        self.timeout = timeout

    def buildProtocol(self, addr):
        return RedirectSession(self)
