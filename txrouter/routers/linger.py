"""
Lingering after a refusal, as nginx does.

A router that refuses a request while the client may still be sending its
body (a 413 for an upload over the limit, a 502 for a node that cannot be
reached while nginx streams the body) writes its answer and half-closes;
closing outright would make the kernel reset the connection over the
unread bytes, and the client (or nginx in front) would see a reset instead
of the answer.  L{Lingering} reads and drops what still comes until the
client closes, or for L{LINGER_IDLE} seconds of silence, or
L{LINGER_TOTAL} seconds in all.

Over TLS there is no half-close to make (Twisted's TLS layer has none, and
the TCP socket's would cut the TLS stream under it, losing the answer):
the answer stays written and the connection open, read and dropped the
same way, and the close that ends it sends C{close_notify}.
"""

from twisted.internet.interfaces import ISSLTransport

from txrouter.limits import LINGER_IDLE, LINGER_TOTAL
from txrouter.timers import IdleTimer
from txrouter.wire.responses import errorResponse


def answerAndClose(reactor, transport, status: int, detail: str, bodyMayFollow: bool, silent: bool):
    """
    End a refused connection: the short error response (none if
    C{silent}), then a close, or lingering if C{bodyMayFollow}.

    @return: the L{Lingering}, or L{None} if the connection is closing.
    """
    if silent:
        transport.loseConnection()
        return None
    transport.write(errorResponse(status, detail))
    if bodyMayFollow:
        return Lingering(reactor, transport)
    transport.loseConnection()
    return None


class Lingering:
    """
    A refused connection that half-closed and drops what it still reads.
    """

    def __init__(self, reactor, transport) -> None:
        """
        Half-close C{transport} (after what was written; not a TLS one)
        and start the deadlines.
        """
        self._transport = transport
        self._timer = IdleTimer(reactor, LINGER_IDLE, transport.loseConnection, LINGER_TOTAL)
        if not ISSLTransport.providedBy(transport):
            transport.loseWriteConnection()

    def dataReceived(self) -> None:
        """
        The client sent more: dropped, but it is alive.
        """
        self._timer.touch()

    def clientClosed(self) -> None:
        """
        The client half-closed too: the connection is over.
        """
        self._transport.loseConnection()

    def stop(self) -> None:
        """
        The connection is gone.
        """
        self._timer.cancel()
