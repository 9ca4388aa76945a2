"""
The upstream client: one connection to one node, carrying one request.

Every router hands its requests to this module (the "Resource-free
ProxyClient"): it connects with a deadline, writes the request head it is
given (a uwsgi packet, say), then moves bytes both ways while telling its
receiver what happens.  It knows nothing about HTTP; back-pressure is wired
by the receiver through the transports' producer interfaces.
"""

from twisted.internet.error import ConnectionDone, TimeoutError as ConnectTimeout
from twisted.internet.protocol import ClientFactory, Protocol
from zope.interface import Interface

from txrouter.timers import IdleTimer


class IUpstreamReceiver(Interface):
    """
    What the front end of a router learns from its upstream.
    """

    def upstreamConnected(upstream):
        """
        The node accepted the connection and the head has been written.
        """

    def upstreamConnectFailed(reason, timedOut):
        """
        The node could not be reached; nothing was sent to it.

        @param reason: text for the log.
        @param timedOut: the connect deadline passed.
        """

    def upstreamDataReceived(data):
        """
        Bytes from the node.
        """

    def upstreamLost(reason, timedOut):
        """
        The connection to the node ended.

        @param reason: L{None} for a clean close by the node, else text.
        @param timedOut: the idle timeout or the response deadline passed.
        """


class Upstream(Protocol):
    """
    The protocol of one upstream connection.

    @ivar node: the node this connection goes to.
    """

    def __init__(self, receiver, node, head: bytes, clock, idleTimeout, deadline) -> None:
        self.receiver = receiver
        self.node = node
        self._head = head
        self._clock = clock
        self._idleTimeout = idleTimeout
        self._deadline = deadline
        self._idle = None
        self._deadlineCall = None
        self._timedOut = False

    def connectionMade(self) -> None:
        self._idle = IdleTimer(self._clock, self._idleTimeout, self._timeout)
        if self._deadline:
            self._deadlineCall = self._clock.callLater(self._deadline, self._timeout)
        self.transport.write(self._head)
        self._head = b""
        self.receiver.upstreamConnected(self)

    def write(self, data: bytes) -> None:
        """
        Send request bytes (the body) to the node.
        """
        self._idle.touch()
        self.transport.write(data)

    def dataReceived(self, data: bytes) -> None:
        self._idle.touch()
        self.receiver.upstreamDataReceived(data)

    def _timeout(self) -> None:
        self._timedOut = True
        self.transport.abortConnection()

    def connectionLost(self, reason) -> None:
        self._idle.cancel()
        if self._deadlineCall is not None and self._deadlineCall.active():
            self._deadlineCall.cancel()
        receiver, self.receiver = self.receiver, None
        if receiver is None:
            return
        if self._timedOut:
            receiver.upstreamLost("timed out", True)
        elif reason.check(ConnectionDone):
            receiver.upstreamLost(None, False)
        else:
            receiver.upstreamLost(reason.getErrorMessage(), False)

    def detach(self) -> None:
        """
        Forget the receiver and close: its exchange is over.
        """
        self.receiver = None
        if self.transport is not None:
            self.transport.loseConnection()


class _UpstreamFactory(ClientFactory):
    noisy = False

    def __init__(self, receiver, node, head, clock, idleTimeout, deadline) -> None:
        self.receiver = receiver
        self.node = node
        self.head = head
        self.clock = clock
        self.idleTimeout = idleTimeout
        self.deadline = deadline

    def buildProtocol(self, addr):
        return Upstream(
            self.receiver, self.node, self.head, self.clock,
            self.idleTimeout, self.deadline,
        )

    def clientConnectionFailed(self, connector, reason) -> None:
        receiver, self.receiver = self.receiver, None
        if receiver is not None:
            receiver.upstreamConnectFailed(
                reason.getErrorMessage(), bool(reason.check(ConnectTimeout))
            )


def connectUpstream(
    reactor, node, receiver, head: bytes,
    connectTimeout: float = 60.0, idleTimeout: float = 60.0, deadline: float = 0,
):
    """
    Connect to C{node}, write C{head}, and report to C{receiver}.

    @param receiver: an L{IUpstreamReceiver}.
    @param connectTimeout: seconds allowed for the connect.
    @param idleTimeout: seconds without traffic before the connection is cut.
    @param deadline: seconds from connect to the end of the exchange before
        it is cut (uWSGI's harakiri); 0 for none.
    @return: the C{IConnector}.
    """
    factory = _UpstreamFactory(receiver, node, head, reactor, idleTimeout, deadline)
    return node.connect(reactor, factory, connectTimeout)
