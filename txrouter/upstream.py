"""
The upstream client: one connection to one node, carrying one request.

Every router hands its requests to this module (the "Resource-free
ProxyClient"): it connects with a deadline, writes the request head it is
given (a uwsgi packet, say), then moves bytes both ways while telling its
receiver what happens.  It knows nothing about HTTP; back-pressure is wired
by the receiver through the transports' producer interfaces.
"""

from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IConsumer, IHalfCloseableProtocol
from twisted.internet.protocol import ClientFactory, Protocol
from zope.interface import Interface, implementer

from txrouter.timers import IdleTimer
from txrouter.transports import NodeBusy, afterCurrentEvents, connectNode


class IUpstreamReceiver(Interface):
    """
    What the front end of a router learns from its upstream.
    """

    def upstreamConnected(upstream):
        """
        The node accepted the connection and the head has been written.
        """

    def upstreamConnectFailed(reason, timedOut, busy=False):
        """
        The node could not be reached; nothing was sent to it.

        @param reason: text for the log.
        @param timedOut: the connect deadline passed.
        @param busy: the node is alive but its listen queue is full
            (L{txrouter.transports.NodeBusy}).
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


class IHalfCloseReceiver(IUpstreamReceiver):
    """
    The receiver of an upstream that tells of the node's half-closes
    (C{connectUpstream(..., halfClose=True)}).
    """

    def upstreamReadConnectionLost():
        """
        The node half-closed (its FIN): it will send nothing more, and may
        still read.
        """

    def upstreamWriteConnectionLost():
        """
        The half-close made towards the node (C{loseWriteConnection} on
        its transport) is done.
        """


@implementer(IConsumer)
class Upstream(Protocol):
    """
    The protocol of one upstream connection; also the consumer a spooled
    request body is written to.

    @ivar node: the node this connection goes to.
    @ivar sent: bytes written to the node so far (head and body).
    @ivar received: bytes read from the node so far.
    """

    sent = 0
    received = 0
    #: The connection was kept from an earlier request (L{reuse}).
    reused = False

    def __init__(self, receiver, node, head: bytes, timer: IdleTimer, idleTimeout: float) -> None:
        self.receiver = receiver
        self.node = node
        self._head = head
        self._timer = timer
        self._idleTimeout = idleTimeout

    def connectionMade(self) -> None:
        self._timer.restart(self._idleTimeout)
        head = self._head
        self._head = b""
        self.sent = len(head)
        self.transport.write(head)
        self.receiver.upstreamConnected(self)

    def park(self, keeper, timer: IdleTimer) -> None:
        """
        Wait, between two requests, in a pool of kept connections
        (L{txrouter.nodepool}): C{keeper} hears what happens meanwhile,
        C{timer} ends the wait.
        """
        self._timer.cancel()
        self._timer = timer
        self.receiver = keeper
        # A slow client may have paused this connection: a parked one must
        # be read, to notice the node closing it.
        self.transport.resumeProducing()

    def unpark(self) -> None:
        """
        Leave the pool: stop the wait and forget the keeper.
        """
        self._timer.cancel()
        self.receiver = None

    def reuse(self, receiver, head: bytes, timer: IdleTimer, idleTimeout: float) -> None:
        """
        Carry another request over this kept-alive connection (see
        L{txrouter.nodepool}): as L{connectionMade}, with a new receiver and
        timer.
        """
        self.receiver = receiver
        self._timer = timer
        self._idleTimeout = idleTimeout
        self.reused = True
        self.sent = self.received = 0
        self._head = head
        self.connectionMade()

    def write(self, data: bytes) -> None:
        """
        Send request bytes (the body) to the node.
        """
        self._timer.touch()
        self.sent += len(data)
        self.transport.write(data)

    def registerProducer(self, producer, streaming) -> None:
        self.transport.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        self.transport.unregisterProducer()

    def dataReceived(self, data: bytes) -> None:
        self._timer.touch()
        self.received += len(data)
        self.receiver.upstreamDataReceived(data)

    def tunnel(self, idleTimeout: float) -> None:
        """
        The exchange became a tunnel: from now on the connection ends after
        C{idleTimeout} seconds without a byte either way, never at the
        response deadline (a tunnel has no end to wait for).
        """
        timer = self._timer
        timer.dropDeadline()
        timer.timeout = idleTimeout

    def timedOut(self) -> None:
        """
        The idle timeout or the deadline passed: cut the connection.
        """
        self.transport.abortConnection()

    def connectionLost(self, reason) -> None:
        timer = self._timer
        timer.cancel()
        receiver, self.receiver = self.receiver, None
        if receiver is None:
            return
        if timer.expired:
            receiver.upstreamLost("timed out", True)
        elif reason.check(ConnectionDone):
            receiver.upstreamLost(None, False)
        else:
            receiver.upstreamLost(reason.getErrorMessage(), False)

    def detach(self) -> None:
        """
        Forget the receiver and close: its exchange is over.

        The node has sent its whole response and everything it was sent, so
        the socket is closed at once instead of through a graceful shutdown
        that would wait for one more write-readiness event.
        """
        self.receiver = None
        transport = self.transport
        if transport is not None:
            closeNow = getattr(transport, "closeNow", None)
            if closeNow is None:
                transport.abortConnection()
            else:
                closeNow()


@implementer(IHalfCloseableProtocol)
class HalfCloseableUpstream(Upstream):
    """
    An upstream whose connection lives on after the node's FIN, for a
    relay of byte streams, each direction closed on its own: its receiver
    (an L{IHalfCloseReceiver}) hears of both half-closes.
    """

    def readConnectionLost(self) -> None:
        receiver = self.receiver
        if receiver is not None:
            receiver.upstreamReadConnectionLost()

    def writeConnectionLost(self) -> None:
        receiver = self.receiver
        if receiver is not None:
            receiver.upstreamWriteConnectionLost()


class _UpstreamFactory(ClientFactory):
    """
    Builds the L{Upstream} of one request and owns its single timer, which
    is first the connect deadline, then the idle timeout (and the
    harakiri deadline throughout).
    """

    noisy = False

    def __init__(
        self, reactor, receiver, node, head, connectTimeout, idleTimeout, deadline,
        upstreamClass=Upstream,
    ) -> None:
        self.upstreamClass = upstreamClass
        self.receiver = receiver
        self.node = node
        self.head = head
        self.idleTimeout = idleTimeout
        self.connector = None
        self.protocol = None
        self.timer = IdleTimer(reactor, connectTimeout, self._timedOut, deadline)

    def startedConnecting(self, connector) -> None:
        self.connector = connector

    def buildProtocol(self, addr):
        # Connected: the connector (which holds this factory) is no longer
        # needed to stop the connect, and keeping it would make a cycle.
        self.connector = None
        self.protocol = self.upstreamClass(
            self.receiver, self.node, self.head, self.timer, self.idleTimeout,
        )
        return self.protocol

    def _timedOut(self) -> None:
        if self.protocol is not None:
            self.protocol.timedOut()
        elif self.connector is not None:
            self.connector.stopConnecting()

    def clientConnectionFailed(self, connector, reason) -> None:
        self.connector = None
        self.timer.cancel()
        receiver, self.receiver = self.receiver, None
        if receiver is not None:
            receiver.upstreamConnectFailed(
                "connect timed out" if self.timer.expired else reason.getErrorMessage(),
                self.timer.expired,
                reason.check(NodeBusy) is not None,
            )


class _Reuse:
    """
    The connector of a request going over a kept-alive connection: the
    connection is handed over once the current events are handled, as a
    fresh connect would be (never inside the caller's stack).  If the node
    closed it meanwhile, a fresh connect takes its place.
    """

    _fresh = None

    def __init__(self, reactor, upstream, receiver, head, connect, idleTimeout, deadline) -> None:
        """
        @param connect: makes a fresh connect for C{receiver}, if need be.
        """
        self.upstream = upstream
        self.receiver = receiver
        self.head = head
        self.connect = connect
        self.idleTimeout = idleTimeout
        self.timer = IdleTimer(reactor, idleTimeout, upstream.timedOut, deadline)
        afterCurrentEvents(reactor, self._handOver)

    def _handOver(self) -> None:
        receiver, self.receiver = self.receiver, None
        if receiver is None:
            return
        upstream, self.upstream = self.upstream, None
        transport = upstream.transport
        if transport is None or transport.disconnecting or getattr(transport, "disconnected", False):
            self.timer.cancel()
            self._fresh = self.connect()
            return
        upstream.reuse(receiver, self.head, self.timer, self.idleTimeout)

    def stopConnecting(self) -> None:
        """
        The request is over before the connection was handed to it: close
        the connection (it may be reused only by a request that ended it).
        """
        self.receiver = None
        if self._fresh is not None:
            self._fresh.stopConnecting()
        self.timer.cancel()
        upstream, self.upstream = self.upstream, None
        if upstream is not None and upstream.transport is not None:
            upstream.transport.abortConnection()


def connectUpstream(
    reactor, node, receiver, head: bytes,
    connectTimeout: float = 60.0, idleTimeout: float = 60.0, deadline: float = 0,
    pool=None, halfClose: bool = False,
):
    """
    Connect to C{node}, write C{head}, and report to C{receiver}.

    @param receiver: an L{IUpstreamReceiver}.
    @param connectTimeout: seconds allowed for the connect.
    @param idleTimeout: seconds without traffic before the connection is cut.
    @param deadline: seconds from now to the end of the exchange before it
        is cut (uWSGI's harakiri); 0 for none.
    @param pool: a L{txrouter.nodepool.NodeConnectionPool} whose idle
        connection to C{node}, if it has one, is used instead of connecting.
    @param halfClose: the connection is a L{HalfCloseableUpstream}, and
        C{receiver} an L{IHalfCloseReceiver}: the node's FIN does not end
        it (a kept connection of C{pool} is not used then).
    C{receiver} is never told anything before this returns (see
    L{connectNode}).

    @return: the C{IConnector} of the connect under way; C{stopConnecting}
        on it abandons the node until it is connected.
    """
    if pool is not None and not halfClose:
        upstream = pool.take(node)
        if upstream is not None:
            return _Reuse(
                reactor, upstream, receiver, head,
                lambda: connectUpstream(
                    reactor, node, receiver, head, connectTimeout, idleTimeout, deadline,
                ),
                idleTimeout, deadline,
            )
    factory = _UpstreamFactory(
        reactor, receiver, node, head, connectTimeout, idleTimeout, deadline,
        HalfCloseableUpstream if halfClose else Upstream,
    )
    return connectNode(reactor, node, factory)
