"""
One byte pipe between a client connection and a node connection.

Every router ends in the same place: bytes flow from the client to the node
and from the node to the client, each direction at the pace of its reader.
A L{Relay} is that pipe: it holds (boundedly) what the client sends while
the node is still being connected, then streams both ways with
back-pressure (each side's transport is the push producer of the other's),
passes a client's half-close on to the node, and counts the bytes.  The
node side's idle timeout and harakiri deadline are those of the
L{txrouter.upstream.Upstream} it streams to, which every byte in either
direction touches.

The HTTP router streams a request body and relays a response through one,
and turns it into a tunnel after a C{101 Switching Protocols}; the
FastRouter relays a whole session through one; the raw, SSL and pty
routers are a relay and a node choice.

Nothing here costs a Deferred or a log line per chunk.
"""

from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

from txrouter.limits import PENDING_LIMIT


@implementer(IPushProducer)
class Relay:
    """
    Bytes both ways between a client and one node.

    The relay is the producer of the node's connection on the client's
    behalf: pausing and resuming it pause and resume the client, but the
    node's connection ending (Twisted then stops its producer) does not
    close the client's, whose request the lifecycle may still answer, or
    send to another node.

    @ivar sentToClient: bytes written to the client so far.
    @ivar upstream: the L{txrouter.upstream.Upstream} once connected.
    """

    sentToClient = 0
    upstream = None
    _pendingSize = 0
    _pausedForConnect = False
    _clientStreaming = False
    _nodeStreaming = False
    _clientEOF = False
    _spoolSending = False

    def __init__(self, clientProducer, clientTransport) -> None:
        """
        @param clientProducer: the C{IPushProducer} that reads the client
            (its transport, or a session that nests pauses).
        @param clientTransport: the client's transport, written to.
        """
        self._clientProducer = clientProducer
        self._clientTransport = clientTransport
        self._pending = []

    # Client to node

    def toNode(self, data: bytes) -> None:
        """
        Send client bytes to the node, or hold them until it is connected;
        past L{PENDING_LIMIT} held bytes the client is paused.
        """
        upstream = self.upstream
        if upstream is not None:
            upstream.write(data)
            return
        self._pending.append(data)
        self._pendingSize += len(data)
        if self._pendingSize > PENDING_LIMIT and not self._pausedForConnect:
            self._pausedForConnect = True
            self._clientProducer.pauseProducing()

    def attach(self, upstream, streaming: bool, spooled: bool = False) -> None:
        """
        The node is connected: send what was held and, if C{streaming},
        let the node's reading pace the client from now on.

        @param streaming: more client bytes are expected for the node.
        @param spooled: the body is being sent from a spool; a client's
            half-close is passed on after L{spoolSent}.
        """
        self.upstream = upstream
        self._spoolSending = spooled
        if self._pending:
            upstream.write(b"".join(self._pending))
            self._pending = []
        if self._clientEOF:
            streaming = False
            if not spooled:
                upstream.transport.loseWriteConnection()
        if self._pausedForConnect:
            self._pausedForConnect = False
            self._clientProducer.resumeProducing()
        if streaming:
            self.streamFromClient()

    def streamFromClient(self) -> None:
        """
        Make the client the producer of the node's connection (once).
        """
        if not self._clientStreaming and self.upstream is not None:
            self._clientStreaming = True
            self.upstream.transport.registerProducer(self, True)

    def clientDone(self) -> None:
        """
        No more client bytes go to the node (the request body is complete).
        """
        if self._clientStreaming:
            self._clientStreaming = False
            self.upstream.transport.unregisterProducer()

    def spoolSent(self) -> None:
        """
        The spooled body has been written to the node.
        """
        self._spoolSending = False
        if self._clientEOF and self.upstream is not None:
            self.upstream.transport.loseWriteConnection()

    def clientEOF(self) -> None:
        """
        The client half-closed: half-close towards the node, now or once
        connected, after the bytes before it.
        """
        self._clientEOF = True
        if self.upstream is not None and not self._spoolSending:
            self.upstream.transport.loseWriteConnection()

    # IPushProducer, for the node's connection

    def pauseProducing(self) -> None:
        self._clientProducer.pauseProducing()

    def resumeProducing(self) -> None:
        self._clientProducer.resumeProducing()

    def stopProducing(self) -> None:
        """
        The node's connection ended: the lifecycle decides what becomes of
        the client's.
        """

    # Node to client

    def fromNode(self, data: bytes, last: bool = False) -> None:
        """
        Relay node bytes to the client; C{last} when they end what the node
        has to say.

        What arrives whole never waits on the client; otherwise the client's
        transport becomes the producer of the node's from the first bytes,
        so that a slow client slows the node down.
        """
        self.sentToClient += len(data)
        if not (last or self._nodeStreaming):
            self._nodeStreaming = True
            self._clientTransport.registerProducer(self.upstream.transport, True)
        self._clientTransport.write(data)

    # Ending

    def detach(self):
        """
        Undo the producer wiring and forget the node.

        @return: the upstream, for its owner to close.
        """
        upstream, self.upstream = self.upstream, None
        if self._nodeStreaming:
            self._nodeStreaming = False
            self._clientTransport.unregisterProducer()
        if self._clientStreaming:
            self._clientStreaming = False
            if upstream is not None and upstream.transport is not None:
                upstream.transport.unregisterProducer()
        if self._pausedForConnect:
            self._pausedForConnect = False
            self._clientProducer.resumeProducing()
        self._pending = []
        return upstream
