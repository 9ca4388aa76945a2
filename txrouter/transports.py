"""
Socket transports for a router's hot path.

Twisted's TCP and UNIX transports queue every write until the reactor next
finds the socket writable: each write costs one more trip through the
reactor and two changes of the poller's registration.  A router writes
each request head to a fresh backend connection and most responses to a
client whose socket buffer is empty, so the transports here send a write
at once when nothing is queued, and queue only what the kernel did not
take; from then on Twisted's own buffering, producers and back-pressure
apply unchanged, and an error of the immediate send is left for the queued
write to report, as Twisted would.

Listening: L{listeningReactor} wraps a reactor so that the C{tcp:},
C{tcp6:} and C{unix:} server endpoints (through C{serverFromString}) build
ports with these transports; every other endpoint is the reactor's own.

Connecting: L{connectNode} opens a backend connection with transports
that also read with C{recv} (Twisted's UNIX transports use C{recvmsg},
for file descriptors a backend never sends), reuse one peer address per
node instead of building one per connection, and can be closed at once
once their exchange is over (L{UpstreamTransport.closeNow}) instead of
one reactor iteration later.

Reactors that are not Twisted's POSIX socket reactors (the in-memory
ones of the tests) get the plain Twisted calls.
"""

from socket import AF_UNIX, SOCK_NONBLOCK, SOCK_STREAM

# The C socket type under socket.socket, whose __init__ and close() are
# Python code: a backend connection needs none of what that wrapper adds
# (makefile, dup, enum-valued family), and every method Twisted calls on a
# socket is the C type's own.
from _socket import socket

from twisted.internet import tcp, unix
from twisted.internet.abstract import FileDescriptor, isIPAddress, isIPv6Address
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.error import ConnectError, ConnectionDone
from twisted.internet.posixbase import PosixReactorBase
from twisted.python.failure import Failure

__all__ = ["connectNode", "listeningReactor"]

#: Peer addresses kept for reuse, per node address; cleared when full.
_MAX_PEERS = 4096
_peers = {}


class _EagerWriting:
    """
    Mixin for Twisted's socket transports: a write made while nothing is
    queued goes to the socket at once.

    Not while a pull (non-streaming) producer is registered: Twisted asks
    such a producer for more once a queued write has been flushed, so its
    writes must be queued.

    Closing skips the C{shutdown()} Twisted makes before C{close()}: the
    process holds the only descriptor of the socket (close-on-exec), so
    C{close()} alone ends the connection, as Twisted's own comment there
    says.
    """

    _shouldShutdown = False

    def write(self, data):
        if (
            self.connected
            and not self._tempDataLen
            and self.offset == len(self.dataBuffer)
            and not self._writeDisconnected
            and not self.TLS
            and (self.producer is None or self.streamingProducer)
            and type(data) is bytes
            and data
        ):
            try:
                sent = self.socket.send(data)
            except OSError:
                # EAGAIN, or an error the queued write will report.
                sent = 0
            if sent == len(data):
                return
            data = data[sent:]
        super().write(data)


class _EagerTCPServer(_EagerWriting, tcp.Server):
    """
    An accepted TCP connection with immediate writes.
    """


class _EagerUNIXServer(_EagerWriting, unix.Server):
    """
    An accepted UNIX connection with immediate writes, read with C{recv}.
    """

    doRead = tcp.Connection.doRead


class _EagerTCPPort(tcp.Port):
    transport = _EagerTCPServer


class _EagerUNIXPort(unix.Port):
    transport = _EagerUNIXServer


class _EagerListening:
    """
    A reactor whose C{listenTCP} and C{listenUNIX} make ports with
    immediate-write transports; anything else is the wrapped reactor's.
    """

    def __init__(self, reactor: PosixReactorBase) -> None:
        self._reactor = reactor

    def __getattr__(self, name):
        return getattr(self._reactor, name)

    def listenTCP(self, port, factory, backlog=50, interface=""):
        listening = _EagerTCPPort(port, factory, backlog, interface, self._reactor)
        listening.startListening()
        return listening

    def listenUNIX(self, address, factory, backlog=50, mode=0o666, wantPID=0):
        listening = _EagerUNIXPort(address, factory, backlog, mode, self._reactor, wantPID)
        listening.startListening()
        return listening


def listeningReactor(reactor):
    """
    The reactor to give C{serverFromString} for a router's listeners.

    @return: C{reactor} wrapped so that TCP and UNIX listeners get
        immediate-write transports, or C{reactor} itself if it is not one
        of Twisted's POSIX socket reactors.
    """
    if isinstance(reactor, PosixReactorBase):
        return _EagerListening(reactor)
    return reactor


#: The reason L{UpstreamTransport.closeNow} gives, built once (a Failure
#: costs more than the rest of the close).
_CLOSED = Failure(ConnectionDone("the exchange is over"))
_CLOSED.cleanFailure()

_UNNAMED = UNIXAddress(None)


class UpstreamTransport(_EagerWriting):
    """
    Mixin for the transports of backend connections.
    """

    def createInternetSocket(self):
        # One system call where Twisted's makes four (the socket, then
        # non-blocking and close-on-exec one by one): Python opens every
        # socket close-on-exec.
        return socket(self.addressFamily, self.socketType | SOCK_NONBLOCK)

    def closeNow(self) -> None:
        """
        Close the connection now, dropping anything still queued: its
        exchange is over, so nothing more will be read or written.

        Unlike C{abortConnection}, the protocol's C{connectionLost} runs
        before this returns, with C{ConnectionDone}.
        """
        if not self.connected or self.disconnected:
            self.abortConnection()
            return
        self.connectionLost(_CLOSED)


class _UpstreamTCPClient(UpstreamTransport, tcp.Client):
    """
    A TCP connection to a backend.
    """

    def getPeer(self):
        if self.connector.peer is None:
            return tcp.Client.getPeer(self)
        return self.connector.peer


class _UNIXMixin:
    def getHost(self):
        return _UNNAMED

    def getTcpNoDelay(self) -> bool:
        return False

    def setTcpNoDelay(self, enabled: bool) -> None:
        """
        Meaningless on a UNIX socket.
        """


class _UNIXUpstream(_UNIXMixin, UpstreamTransport, tcp.Connection):
    """
    A UNIX stream connection to a backend, made at once, without a
    connector (see L{_connectUNIXAtOnce}); read with C{recv}.
    """

    logstr = "Upstream,client"

    def __init__(self, skt, protocol, peer, reactor) -> None:
        # tcp.Connection.__init__ would make the (already non-blocking)
        # socket non-blocking once more.
        FileDescriptor.__init__(self, reactor=reactor)
        self.socket = skt
        self.fileno = skt.fileno
        self.protocol = protocol
        self._peer = peer
        self.connected = 1

    def getPeer(self):
        return self._peer


def _connectUNIXAtOnce(reactor, path, factory) -> bool:
    """
    Connect to the UNIX socket C{path} now and give the connection the
    protocol C{factory} builds.

    A UNIX socket whose server is listening accepts at once: connecting on
    the spot saves the reactor iteration Twisted's connector waits for,
    and the connector's own objects.

    @return: whether the connection was made; if not (no socket, a full
        backlog, nobody listening), nothing was started.
    """
    try:
        skt = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK)
    except OSError:
        return False
    try:
        result = skt.connect_ex(path)
    except (OSError, ValueError):
        result = -1
    if result:
        skt.close()
        return False
    peer = _peer(path, lambda: UNIXAddress(path))
    protocol = factory.buildProtocol(peer)
    transport = _UNIXUpstream(skt, protocol, peer, reactor)
    transport.startReading()
    protocol.makeConnection(transport)
    return True


class _UpstreamUNIXClient(_UNIXMixin, UpstreamTransport, tcp.BaseClient):
    """
    A UNIX stream connection to a backend made through a connector, read
    with C{recv}: what is left to Twisted's connect logic when a connect
    at once did not succeed.

    It derives from Twisted's TCP client base, as Twisted's UNIX client
    does, without that client's support for passing file descriptors.
    """

    addressFamily = AF_UNIX
    socketType = SOCK_STREAM

    def __init__(self, connector, reactor) -> None:
        self.connector = connector
        self.realAddress = self.addr = connector.address
        try:
            skt = self.createInternetSocket()
        except OSError as e:
            # Out of descriptors, say: the connect fails on the next
            # iteration, as any other failed connect (Twisted's UNIX
            # client would raise out of connectUNIX).
            self._finishInit(None, None, ConnectError(string=e.strerror), reactor)
        else:
            self._finishInit(self.doConnect, skt, None, reactor)

    def getPeer(self):
        return self.connector.peer


def _peer(key, make):
    peer = _peers.get(key)
    if peer is None:
        if len(_peers) >= _MAX_PEERS:
            _peers.clear()
        peer = _peers[key] = make()
    return peer


class _UpstreamUNIXConnector(unix.Connector):
    def __init__(self, path, factory, reactor) -> None:
        super().__init__(path, factory, None, reactor, False)
        self.peer = _peer(path, lambda: UNIXAddress(path))

    def _makeTransport(self):
        return _UpstreamUNIXClient(self, self.reactor)


class _UpstreamTCPConnector(tcp.Connector):
    def __init__(self, host, port, factory, reactor) -> None:
        super().__init__(host, port, factory, None, None, reactor)
        self.peer = None
        if isIPAddress(host):
            self.peer = _peer((host, port), lambda: IPv4Address("TCP", host, port))
        elif isIPv6Address(host):
            self.peer = _peer((host, port), lambda: IPv6Address("TCP", host, port))

    def _makeTransport(self):
        return _UpstreamTCPClient(self.host, self.port, None, self, self.reactor)


def connectNode(reactor, node, factory):
    """
    Start connecting C{factory} to C{node}, with no deadline of its own
    (the caller keeps the time).

    A UNIX node usually accepts at once: its connection is then made, and
    C{factory}'s protocol connected, before this returns.

    @param node: a L{txrouter.routing.nodes.Node}.
    @return: the C{IConnector} of the connect under way; L{None} if the
        connection is made already.
    """
    if not isinstance(reactor, PosixReactorBase):
        if node.path is not None:
            return reactor.connectUNIX(node.path, factory, timeout=None)
        return reactor.connectTCP(node.host, node.port, factory, timeout=None)
    if node.path is not None:
        if _connectUNIXAtOnce(reactor, node.path, factory):
            return None
        connector = _UpstreamUNIXConnector(node.path, factory, reactor)
    else:
        connector = _UpstreamTCPConnector(node.host, node.port, factory, reactor)
    connector.connect()
    return connector
