"""
TLS for a listener, with a handshake deadline and a log line for every
handshake that does not finish.

Twisted's C{TLSMemoryBIOFactory} waits for a handshake as long as the
client keeps its connection open, and a failed handshake leaves no trace.
L{TLSServerFactory} is the same factory with:

  - a deadline: a client whose handshake has not finished
    C{handshakeTimeout} seconds after it connected (it stopped after its
    ClientHello, or before) is cut.  Each deadline is an
    L{txrouter.timers.IdleTimer}, so thousands of stalled clients cost a
    set entry each and delay nobody: every connection is its own event;
  - one line per handshake that fails (C{tls_handshake_failed}: the
    client's address and OpenSSL's reasons, C{unsupported protocol},
    C{no shared cipher}, C{peer did not return a certificate}...) or
    times out (C{tls_handshake_timeout}: the address and how far the
    handshake got).  A client that closes before sending a byte (a port
    check) is not logged.  The lines go through a
    L{txrouter.routing.loglimit.LogLimiter}: a flood of bad handshakes
    logs C{burst} lines per C{interval} and a count;
  - a client that sends plain HTTP (C{curl http://host:443/}) is told so,
    as nginx tells it: its first bytes are looked at once, before OpenSSL
    sees them (L{txrouter.wire.http1.startsRequestLine}; a TLS record
    starts with C{0x16}, which settles it at the first byte), and a
    request line gets a plain-text C{400} written in the clear, then the
    close, and one C{http_on_tls_port} line.  Only a router that speaks
    HTTP (its factory's C{answersPlainHTTP} is true: the HTTP and HTTPS
    routers, unless C{--silent-errors}) answers; under the SSL router the
    connection is closed with the log line alone.

It relies on C{TLSMemoryBIOProtocol}'s C{_handshakeDone},
C{_checkHandshakeStatus}, C{_tlsShutdownFinished} and C{_tlsConnection}
(Twisted 26.4), which the tests exercise on real handshakes.
"""

from OpenSSL import SSL
from twisted.logger import Logger
from twisted.protocols.tls import BufferingTLSTransport, TLSMemoryBIOFactory

from txrouter.routing.loglimit import LogLimiter
from txrouter.timers import IdleTimer
from txrouter.wire.http1 import startsRequestLine
from txrouter.wire.responses import errorResponse

__all__ = [
    "DEFAULT_HANDSHAKE_TIMEOUT", "PLAIN_HTTP_ANSWER", "TLSServerFactory", "HandshakeDeadlineProtocol",
]

log = Logger(namespace="txrouter.tls")

#: Seconds a client has to finish its handshake (C{--tls-handshake-timeout}).
DEFAULT_HANDSHAKE_TIMEOUT = 10.0


#: The reason given for a client that closed during its handshake.
_CLOSED = "connection closed by the client during the handshake"

#: What a client that sent plain HTTP to a TLS listener is told.
PLAIN_HTTP_ANSWER = errorResponse(
    400, "The plain HTTP request was sent to a TLS port: use https:// instead.")


def _reasonText(value) -> str:
    """
    OpenSSL's reasons in an C{OpenSSL.SSL.Error}, or the exception's text.
    """
    if isinstance(value, SSL.SysCallError) and value.args[:1] == (-1,):
        return _CLOSED
    if isinstance(value, SSL.Error) and value.args and isinstance(value.args[0], list):
        reasons = [str(entry[-1]) for entry in value.args[0] if entry]
        if reasons:
            return "; ".join(reasons)
    return str(value) or type(value).__name__


def _addressText(transport) -> str:
    peer = transport.getPeer() if transport is not None else None
    host, port = getattr(peer, "host", None), getattr(peer, "port", None)
    if host is None:
        return str(peer)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class HandshakeDeadlineProtocol(BufferingTLSTransport):
    """
    One TLS connection of a L{TLSServerFactory}.
    """

    _deadline = None
    _received = False
    _reported = False
    #: The first bytes, while they may still be a request line's beginning.
    _sniffed = b""

    def makeConnection(self, transport):
        # TLS writes several records per exchange (a TLS 1.3 server's
        # session tickets, then the response): with Nagle's algorithm the
        # second waits for the client's delayed ACK, 40 ms on Linux.
        setNoDelay = getattr(transport, "setTcpNoDelay", None)
        if setNoDelay is not None:
            setNoDelay(True)
        timeout = self.factory.handshakeTimeout
        if timeout:
            self._deadline = IdleTimer(self.factory._clock, timeout, self._handshakeTimedOut)
        self.dataReceived = self._firstBytes
        BufferingTLSTransport.makeConnection(self, transport)

    def dataReceived(self, data):
        self._received = True
        BufferingTLSTransport.dataReceived(self, data)

    def _firstBytes(self, data: bytes) -> None:
        """
        The connection's first bytes: a TLS record is handed to OpenSSL, and
        so is every later byte, through the class's C{dataReceived}; an
        HTTP request line is refused in the clear.
        """
        self._received = True
        data = self._sniffed + data
        plainHTTP = startsRequestLine(data)
        if plainHTTP is None:
            self._sniffed = data
            return
        self._sniffed = b""
        del self.dataReceived
        if plainHTTP:
            self._refusePlainHTTP()
        else:
            self.dataReceived(data)

    def _refusePlainHTTP(self) -> None:
        """
        Answer a plain HTTP request (if the router speaks HTTP) on the
        socket itself, not through TLS, and close.
        """
        detail = "a plain HTTP request on a TLS port"
        if getattr(self.factory.wrappedFactory, "answersPlainHTTP", False):
            self.transport.write(PLAIN_HTTP_ANSWER)
            self._report("info", "{event}: {status} {detail} (client {client})",
                         event="http_on_tls_port", status=400, detail=detail)
        else:
            self._report("info", "{event}: {detail}, closed (client {client})",
                         event="http_on_tls_port", status=None, detail=detail)
        self.dataReceived = self._ignore
        self.transport.loseConnection()

    def _ignore(self, data: bytes) -> None:
        """
        Bytes after a refused plain HTTP request: they are not TLS.
        """

    def _checkHandshakeStatus(self):
        BufferingTLSTransport._checkHandshakeStatus(self)
        if self._handshakeDone:
            self._stopDeadline()

    def _stopDeadline(self) -> None:
        deadline, self._deadline = self._deadline, None
        if deadline is not None:
            deadline.cancel()

    def _report(self, method: str, format: str, **fields) -> None:
        self._reported = True
        self._stopDeadline()
        self.factory.log.emit(method, format, client=_addressText(self.transport), **fields)

    def _handshakeTimedOut(self) -> None:
        self._deadline = None
        state = self._tlsConnection.get_state_string() if self._tlsConnection else b""
        self._report(
            "info",
            "tls_handshake_timeout: {client} did not finish its handshake in {timeout} s ({state})",
            event="tls_handshake_timeout", timeout=self.factory.handshakeTimeout,
            state=state.decode("ascii", "replace"),
        )
        self.abortConnection()

    def _tlsShutdownFinished(self, reason):
        if reason is not None and self._received and not self._handshakeDone and not self._reported:
            self._report(
                "info",
                "tls_handshake_failed: {client}: {reason}",
                event="tls_handshake_failed", reason=_reasonText(reason.value),
            )
        BufferingTLSTransport._tlsShutdownFinished(self, reason)

    def connectionLost(self, reason):
        if not self._handshakeDone and not self._reported and self._received:
            self._report(
                "info",
                "tls_handshake_failed: {client}: {reason}",
                event="tls_handshake_failed", reason=_CLOSED,
            )
        self._stopDeadline()
        BufferingTLSTransport.connectionLost(self, reason)


class TLSServerFactory(TLSMemoryBIOFactory):
    """
    Twisted's C{TLSMemoryBIOFactory} for a listener, with a handshake
    deadline and logged failures (see the module's docstring).

    It takes C{TLSMemoryBIOFactory}'s arguments, so a listener swaps one
    for the other; the clock is required (no global reactor here).
    """

    protocol = HandshakeDeadlineProtocol

    def __init__(
        self,
        contextFactory,
        isClient: bool,
        wrappedFactory,
        clock,
        handshakeTimeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
        logBurst: int = 20,
        logInterval: float = 10.0,
    ) -> None:
        """
        @param contextFactory: an C{IOpenSSLServerConnectionCreator} (a
            L{txrouter.tls.listener.ListenerContexts}), or anything Twisted
            takes there.
        @param isClient: must be C{False}: this is for listeners.
        @param clock: an C{IReactorTime}, for the deadlines, the log budget
            and Twisted's write aggregation.
        @param handshakeTimeout: seconds; 0 turns the deadline off.
        @param logBurst: handshake lines logged per C{logInterval} seconds.
        """
        if isClient:
            raise ValueError("TLSServerFactory is for listeners (isClient=False)")
        TLSMemoryBIOFactory.__init__(self, contextFactory, False, wrappedFactory, clock)
        self.handshakeTimeout = handshakeTimeout
        self.log = LogLimiter(log, clock, logBurst, logInterval)

    def stopFactory(self) -> None:
        self.log.close()
        TLSMemoryBIOFactory.stopFactory(self)
