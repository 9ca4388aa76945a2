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
write to report, as Twisted would.  A transport that speaks TLS (an C{ssl:}
or C{tls:} listener, whose TLS layer is a protocol above the transport, or
one after C{startTLS}) never sends application bytes itself: they go
through the TLS layer, which writes records.

Listening: L{listeningReactor} wraps a reactor so that the C{tcp:},
C{tcp6:}, C{unix:}, C{ssl:} and C{tls:} server endpoints (through
C{serverFromString}) build ports with these transports; every other
endpoint is the reactor's own.

Connecting: L{connectNode} opens a backend connection with transports
that also read with C{recv} (Twisted's UNIX transports use C{recvmsg},
for file descriptors a backend never sends), reuse one peer address per
node instead of building one per connection, and can be closed without a
graceful shutdown once their exchange is over
(L{UpstreamTransport.closeNow}).

When things are called back, one rule: nothing C{connectNode} or
C{closeNow} start calls back into the caller before they return.
C{connectNode} calls C{factory.startedConnecting(connector)} before it
returns, as Twisted's connectors do, and everything else later:
C{buildProtocol} and the protocol's C{makeConnection}, or
C{clientConnectionFailed}.  C{closeNow} stops every read and write at
once, even one the poller reported in the same event, and the protocol
hears C{connectionLost} later.  "Later" is right after the reactor has
handled the events of its current poll (L{txrouter.reactor.RouterReactor.
afterEvents}), or on its next iteration with other reactors: a UNIX
node that accepts at once (a listening UNIX socket does) is connected with
no reactor trip in between, as before this rule, and a backend socket is
closed before the reactor polls again.

Reactors that are not Twisted's POSIX socket reactors (the in-memory
ones of the tests) get the plain Twisted calls.
"""

from errno import EAGAIN
from socket import AF_UNIX, SOCK_NONBLOCK, SOCK_STREAM

# The C socket type under socket.socket, whose __init__ and close() are
# Python code: a backend connection needs none of what that wrapper adds
# (makefile, dup, enum-valued family), and every method Twisted calls on a
# socket is the C type's own.
from _socket import socket

from twisted.internet import tcp, unix
from twisted.internet.abstract import FileDescriptor, isIPAddress, isIPv6Address
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.error import ConnectError, ConnectionDone, NotConnectingError, UserError
from twisted.internet.interfaces import (
    IHalfCloseableDescriptor, ISystemHandle, ITCPTransport, ITLSTransport, IUNIXTransport,
)
from twisted.internet.posixbase import PosixReactorBase
from twisted.python.failure import Failure
from zope.interface import implementer

from txrouter.tls.handshake import DEFAULT_HANDSHAKE_TIMEOUT, TLSServerFactory

__all__ = ["NodeBusy", "connectNode", "listeningReactor"]


class NodeBusy(ConnectError):
    """
    The UNIX node's listen queue is full (C{EAGAIN}): it is alive, every
    worker is busy and the kernel holds as many waiting connections as it
    may.  Not a dead node: trying again shortly may succeed.
    """

    def __str__(self) -> str:
        return "the node's listen queue is full (EAGAIN): every worker is busy"

#: Peer addresses kept for reuse, per node address; cleared when full.
_MAX_PEERS = 4096
_peers = {}


class _EagerWriting:
    """
    Mixin for Twisted's socket transports: a write made while nothing is
    queued goes to the socket at once.

    Not while a pull (non-streaming) producer is registered: Twisted asks
    such a producer for more once a queued write has been flushed, so its
    writes must be queued.  Not once C{startTLS} was called: the bytes must
    be encrypted first (Twisted's C{write} hands them to the TLS layer).

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


@implementer(ITCPTransport, ISystemHandle, IHalfCloseableDescriptor, ITLSTransport)
class _EagerTCPServer(_EagerWriting, tcp.Server):
    """
    An accepted TCP connection with immediate writes.
    """


@implementer(IUNIXTransport, ISystemHandle, IHalfCloseableDescriptor, ITLSTransport)
class _EagerUNIXServer(_EagerWriting, unix.Server):
    """
    An accepted UNIX connection with immediate writes, read with C{recv}.

    A descriptor given to C{sendFileDescriptor} goes with the next bytes
    written, so those take Twisted's queue.
    """

    doRead = tcp.Connection.doRead

    def write(self, data):
        if self._sendmsgQueue:
            unix.Server.write(self, data)
        else:
            _EagerWriting.write(self, data)


class _EagerTCPPort(tcp.Port):
    transport = _EagerTCPServer


class _EagerTLSPort(_EagerTCPPort):
    """
    A TCP port whose connections speak TLS (the protocol is a
    C{TLSMemoryBIOProtocol}); named so in Twisted's log lines.
    """

    _type = "TLS"


class _EagerUNIXPort(unix.Port):
    transport = _EagerUNIXServer


class _SharedAccepting:
    """
    Mixin for a port whose listening socket other processes accept on too
    (the workers of C{--processes}).  One readable event asks the port's
    C{admission} (L{txrouter.workers.balance.SessionBalance}) once how many
    clients it may accept, and accepts what Twisted's port would, but no
    more: when it allows none, the port stops reading for a moment and the
    other processes accept.

    Twisted's C{doRead} reads C{numberAccepts} two or three times per
    event; it gives the allowance of that event, not a new one each time.
    """

    admission = None
    _numberAccepts = 100
    #: What the admission allowed on the current readable event.
    _allowed = 1 << 30

    @property
    def numberAccepts(self) -> int:
        return max(1, min(self._numberAccepts, self._allowed))

    @numberAccepts.setter
    def numberAccepts(self, value: int) -> None:
        self._numberAccepts = value

    def doRead(self):
        if self.admission is not None:
            self._allowed = self.admission.allowance()
            if self._allowed <= 0:
                self.admission.pause(self)
                return None
        return super().doRead()


class _InheritedTCPPort(_SharedAccepting, _EagerTCPPort):
    pass


class _InheritedTLSPort(_SharedAccepting, _EagerTLSPort):
    pass


class _InheritedUNIXPort(_SharedAccepting, _EagerUNIXPort):
    """
    A UNIX port on a socket bound by another process, which owns its file
    and shares the socket with others: starting leaves the file's mode as
    it is, and stopping leaves the file where it is (Twisted's port removes
    it) and the socket listening for them (Twisted's port shuts it down, as
    it does not for an inherited TCP socket).
    """

    _shouldShutdown = False

    def startListening(self) -> None:
        # Twisted's port chmods the file, even one it did not bind (to its
        # default 0666, over the pool's --chmod-socket, and as a user that
        # may not own the file any more): the pool made the file as asked.
        tcp._reservedFD.reserve()
        self.factory.doStart()
        skt, self._preexistingSocket = self._preexistingSocket, None
        skt.listen(self.backlog)
        self.connected = True
        self.socket = skt
        self.fileno = skt.fileno
        self.startReading()

    def connectionLost(self, reason):
        tcp.Port.connectionLost(self, reason)


_INHERITED = {_EagerTCPPort: _InheritedTCPPort, _EagerTLSPort: _InheritedTLSPort}


class _EagerListening:
    """
    A reactor whose C{listenTCP}, C{listenSSL}, C{listenUNIX} and
    C{adoptStreamPort} make ports with immediate-write transports; anything
    else is the wrapped reactor's.

    With C{inherited} (the sockets of a C{--processes} worker,
    L{txrouter.workers.listeners.InheritedListeners}), a listener whose
    address is among them listens on the inherited socket instead of
    binding: C{inherited.take(kind, address)} gives its descriptor and
    family, or L{None}.

    C{ssl:} endpoints (and the HTTPS and SSL routers' listeners) call
    C{listenSSL}, whose TLS layer is a L{TLSServerFactory}: a handshake
    deadline of C{handshakeTimeout} seconds and a log line per failed
    handshake.  C{tls:} endpoints wrap the factory in Twisted's TLS
    protocol themselves and call C{listenTCP}.  Either way, C{wrap} (if
    given) wraps the outermost factory: a TLS listener's TLS factory.
    """

    def __init__(
        self, reactor: PosixReactorBase, wrap=None,
        handshakeTimeout: float = DEFAULT_HANDSHAKE_TIMEOUT, inherited=None,
    ) -> None:
        self._reactor = reactor
        self._wrap = wrap
        self._handshakeTimeout = handshakeTimeout
        self._inherited = inherited

    def __getattr__(self, name):
        return getattr(self._reactor, name)

    def _take(self, kind: str, address):
        if self._inherited is None:
            return None
        return self._inherited.take(kind, address)

    def _outermost(self, factory):
        return factory if self._wrap is None else self._wrap(factory)

    def listenTCP(self, port, factory, backlog=50, interface=""):
        return self._listenTCP(_EagerTCPPort, port, self._outermost(factory), backlog, interface)

    def listenSSL(self, port, factory, contextFactory, backlog=50, interface=""):
        # What Twisted's reactors do: TLS is a protocol above a TCP transport.
        tlsFactory = TLSServerFactory(
            contextFactory, False, factory, self._reactor, self._handshakeTimeout)
        return self._listenTCP(_EagerTLSPort, port, self._outermost(tlsFactory), backlog, interface)

    def _listenTCP(self, portType, port, factory, backlog, interface):
        inherited = self._take("tcp", (port, interface))
        if inherited is None:
            listening = portType(port, factory, backlog, interface, self._reactor)
        else:
            fd, family = inherited
            listening = _INHERITED[portType]._fromListeningDescriptor(
                self._reactor, fd, family, factory)
            listening.admission = self._inherited.admission
        listening.startListening()
        return listening

    def listenUNIX(self, address, factory, backlog=50, mode=0o666, wantPID=0):
        inherited = self._take("unix", address)
        if inherited is None:
            listening = _EagerUNIXPort(
                address, self._outermost(factory), backlog, mode, self._reactor, wantPID
            )
        else:
            listening = _InheritedUNIXPort._fromListeningDescriptor(
                self._reactor, inherited[0], self._outermost(factory))
            listening.backlog = backlog
            listening.admission = self._inherited.admission
        listening.startListening()
        return listening

    def adoptStreamPort(self, fileDescriptor, addressFamily, factory):
        """
        A listening socket given by systemd (C{systemd:} endpoints) or any
        other parent, served as C{listenTCP} and C{listenUNIX} serve theirs.
        """
        if addressFamily == AF_UNIX:
            listening = _EagerUNIXPort._fromListeningDescriptor(
                self._reactor, fileDescriptor, self._outermost(factory))
        else:
            listening = _EagerTCPPort._fromListeningDescriptor(
                self._reactor, fileDescriptor, addressFamily, self._outermost(factory))
        listening.startListening()
        return listening


class _WrappedListening:
    """
    A reactor of another kind whose TCP, TLS and UNIX listeners have their
    outermost factory wrapped (TLS made a protocol above TCP here, so that
    the wrapping is outside it); anything else is the wrapped reactor's.
    """

    def __init__(self, reactor, wrap, handshakeTimeout: float = DEFAULT_HANDSHAKE_TIMEOUT) -> None:
        self._reactor = reactor
        self._wrap = wrap
        self._handshakeTimeout = handshakeTimeout

    def __getattr__(self, name):
        return getattr(self._reactor, name)

    def listenTCP(self, port, factory, backlog=50, interface=""):
        return self._reactor.listenTCP(port, self._wrap(factory), backlog, interface)

    def listenSSL(self, port, factory, contextFactory, backlog=50, interface=""):
        tlsFactory = TLSServerFactory(
            contextFactory, False, factory, self._reactor, self._handshakeTimeout)
        return self.listenTCP(port, tlsFactory, backlog, interface)

    def listenUNIX(self, address, factory, backlog=50, mode=0o666, wantPID=0):
        return self._reactor.listenUNIX(address, self._wrap(factory), backlog, mode, wantPID)


def listeningReactor(
    reactor, wrap=None, handshakeTimeout: float = DEFAULT_HANDSHAKE_TIMEOUT, inherited=None,
):
    """
    The reactor to give C{serverFromString} (or a TLS listener's
    C{SSL4ServerEndpoint}) for a router's listeners.

    @param wrap: L{None}, or a callable given the outermost factory of
        each TCP, TLS or UNIX listener (a TLS listener's
        L{TLSServerFactory}) and returning the factory to listen with
        (L{txrouter.proxyprotocol.proxyProtocolWrapper} makes one).
    @param handshakeTimeout: the seconds a client of a C{listenSSL}
        listener has to finish its TLS handshake (0: no limit).
    @param inherited: the listening sockets a C{--processes} worker
        inherited, listened on instead of binding (L{_EagerListening}).
    @return: C{reactor} wrapped so that TCP, TLS and UNIX listeners get
        immediate-write transports (and C{wrap}), and C{listenSSL} a
        L{TLSServerFactory}; a reactor that is not one of Twisted's POSIX
        socket reactors (the tests' memory reactors) is returned as it is,
        or, with C{wrap}, wrapped for C{wrap} and the L{TLSServerFactory}
        alone.
    """
    if isinstance(reactor, PosixReactorBase):
        return _EagerListening(reactor, wrap, handshakeTimeout, inherited)
    if wrap is not None:
        return _WrappedListening(reactor, wrap, handshakeTimeout)
    return reactor


class _MadeFailure(Failure):
    """
    A L{Failure} made here, whose L{check} is an C{isinstance} of its
    value: L{Failure.check} compares the qualified names of the classes
    it is given with those of its type's ancestors (so that it also
    works on a failure from another process), which costs more than the
    close that asks it.
    """

    def check(self, *errorTypes):
        value = self.value
        for errorType in errorTypes:
            if isinstance(value, errorType):
                return errorType
        return None


#: The reason L{UpstreamTransport.closeNow} gives, built once (a Failure
#: costs more than the rest of the close).
_CLOSED = _MadeFailure(ConnectionDone("the exchange is over"))
_CLOSED.cleanFailure()
_CLOSED_ARGS = (_CLOSED,)

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

    def doWrite(self):
        # Not once closeNow was called: the reactor may call doWrite right
        # after the doRead that called it, for the same event.
        if self._aborting:
            return None
        return super().doWrite()

    def closeNow(self) -> None:
        """
        Close the connection, dropping anything still queued: its exchange
        is over, so nothing more will be read or written.

        What C{abortConnection} guarantees holds: nothing is read, written
        or called back from now on, not even for a write readiness the
        poller reported along with the event being handled, and the
        protocol's C{connectionLost} (with C{ConnectionDone}) runs after
        this returns, when the socket is closed.  Unlike
        C{abortConnection}, on L{txrouter.reactor.RouterReactor} and while
        it handles events, that is as soon as it has handled them all, not
        in a delayed call (see the module's docstring).
        """
        if self.disconnected or self._aborting:
            return
        if not self.connected:
            self.abortConnection()
            return
        self._aborting = True
        self._writeDisconnected = True
        afterEvents = getattr(self.reactor, "afterEvents", None)
        if afterEvents is None:
            # The reactor may poll before the call: nothing to find then.
            self.stopReading()
            self.stopWriting()
            self.reactor.callLater(0, self.connectionLost, _CLOSED)
        else:
            # connectionLost, made before the reactor polls again, takes
            # the socket out of the poller; until then only the write half
            # of the event being handled can find it (see doWrite).
            afterEvents.append((self.connectionLost, _CLOSED_ARGS))


@implementer(ITCPTransport, ISystemHandle, IHalfCloseableDescriptor, ITLSTransport)
class _UpstreamTCPClient(UpstreamTransport, tcp.Client):
    """
    A TCP connection to a backend.
    """

    def getPeer(self):
        if self.connector.peer is None:
            return tcp.Client.getPeer(self)
        return self.connector.peer

    def connectionLost(self, reason) -> None:
        connector = self.connector
        super().connectionLost(reason)
        # Twisted's connector keeps its transport and its factory once the
        # connection is over, each pointing back at it: a cycle per request
        # for the garbage collector.  Nothing reconnects a node's connector.
        connector.transport = connector.factory = None


class _UNIXMixin:
    def getHost(self):
        return _UNNAMED

    def getTcpNoDelay(self) -> bool:
        return False

    def setTcpNoDelay(self, enabled: bool) -> None:
        """
        Meaningless on a UNIX socket.
        """


@implementer(ITCPTransport, ISystemHandle, IHalfCloseableDescriptor, ITLSTransport)
class _UNIXUpstream(_UNIXMixin, UpstreamTransport, tcp._TLSClientMixin, tcp.Connection):
    """
    A UNIX stream connection to a backend, accepted at once, without a
    connector (see L{_UNIXAccepted}); read with C{recv}.

    Like Twisted's UNIX transports, it answers the TCP calls (no delay,
    keep-alive) and can start TLS as a client; unlike them it passes no
    file descriptors.
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


class _UNIXAccepted:
    """
    The connector L{connectNode} returns for a UNIX node that accepted the
    connection at once (a listening UNIX socket does, unless its backlog
    is full): the protocol is built and connected soon after (see the
    module's docstring), with no reactor trip or poller change in between.

    @ivar factory: the client factory; L{None} once the protocol is
        connected or the connect given up, so that a factory that keeps
        its connector makes no reference cycle with it.
    """

    def __init__(self, reactor, skt, path: str, factory) -> None:
        self.reactor = reactor
        self.factory = factory
        self._socket = skt
        self._path = path
        factory.startedConnecting(self)
        afterCurrentEvents(reactor, self._connect)

    def getDestination(self):
        path = self._path
        return _peer(path, lambda: UNIXAddress(path))

    def stopConnecting(self) -> None:
        """
        Give up the connection before its protocol is connected: the
        factory hears C{clientConnectionFailed} with C{UserError}, as from
        Twisted's connectors.

        @raise NotConnectingError: the protocol is connected already.
        """
        skt, self._socket = self._socket, None
        if skt is None:
            raise NotConnectingError("we're not trying to connect")
        skt.close()
        factory, self.factory = self.factory, None
        factory.clientConnectionFailed(self, Failure(UserError()))

    def _connect(self) -> None:
        skt, self._socket = self._socket, None
        if skt is None:
            return
        path = self._path
        peer = _peers.get(path) or _peer(path, lambda: UNIXAddress(path))
        factory, self.factory = self.factory, None
        protocol = factory.buildProtocol(peer)
        if protocol is None:
            skt.close()
            return
        transport = _UNIXUpstream(skt, protocol, peer, self.reactor)
        transport.startReading()
        protocol.makeConnection(transport)


class _UNIXBusy(_UNIXAccepted):
    """
    The connector L{connectNode} returns for a UNIX node whose listen
    queue is full: the factory hears C{clientConnectionFailed} with
    L{NodeBusy} soon after, as it would hear of a connection (Twisted's
    connector would take C{EAGAIN} for a connect in progress, wait for
    the socket to be writable, and report a confusing
    C{ConnectionDone}).
    """

    def _connect(self) -> None:
        skt, self._socket = self._socket, None
        if skt is None:
            return
        skt.close()
        factory, self.factory = self.factory, None
        factory.clientConnectionFailed(self, Failure(NodeBusy(osError=EAGAIN)))


def afterCurrentEvents(reactor, f, *args) -> None:
    """
    Call C{f(*args)} once the events being handled are: right after them
    on a L{txrouter.reactor.RouterReactor} (no reactor trip), on the
    reactor's next iteration with others.  Never inside the caller's stack.
    """
    afterEvents = getattr(reactor, "afterEvents", None)
    if afterEvents is None:
        reactor.callLater(0, f, *args)
    else:
        afterEvents.append((f, args))


def _connectUNIXAtOnce(reactor, path, factory):
    """
    Connect to the UNIX socket C{path} now; its protocol is connected soon
    after.

    A UNIX socket whose server is listening accepts at once: connecting on
    the spot saves the reactor iteration Twisted's connector waits for,
    and the connector's own objects.

    @return: the L{_UNIXAccepted} connector, or L{None} if the connection
        was not made (no socket, a full backlog, nobody listening), in
        which case nothing was started.
    """
    try:
        skt = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK)
    except OSError:
        return None
    try:
        result = skt.connect_ex(path)
    except (OSError, ValueError):
        result = -1
    if result == EAGAIN:
        return _UNIXBusy(reactor, skt, path, factory)
    if result:
        skt.close()
        return None
    return _UNIXAccepted(reactor, skt, path, factory)


@implementer(ITCPTransport, ISystemHandle, IHalfCloseableDescriptor, ITLSTransport)
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


#: Whether a reactor class is a L{PosixReactorBase}.
_posixReactors = {}


def connectNode(reactor, node, factory):
    """
    Start connecting C{factory} to C{node}, with no deadline of its own
    (the caller keeps the time).

    Before this returns, C{factory.startedConnecting(connector)} is called
    and nothing else; the protocol is built and connected, or
    C{factory.clientConnectionFailed} called, afterwards, in every case
    (see the module's docstring for when).

    @param node: a L{txrouter.routing.nodes.Node}.
    @return: the connector: its C{stopConnecting()} gives up the connect
        while the protocol is not connected yet (the factory then hears
        C{clientConnectionFailed} with C{UserError}); its C{factory} is
        C{factory}.
    """
    posix = _posixReactors.get(reactor.__class__)
    if posix is None:
        # PosixReactorBase is an abstract class: isinstance would run its
        # metaclass's check, in Python, once per request.
        posix = _posixReactors[reactor.__class__] = isinstance(reactor, PosixReactorBase)
    if not posix:
        if node.path is not None:
            return reactor.connectUNIX(node.path, factory, timeout=None)
        return reactor.connectTCP(node.host, node.port, factory, timeout=None)
    if node.path is not None:
        accepted = _connectUNIXAtOnce(reactor, node.path, factory)
        if accepted is not None:
            return accepted
        connector = _UpstreamUNIXConnector(node.path, factory, reactor)
    else:
        connector = _UpstreamTCPConnector(node.host, node.port, factory, reactor)
    connector.connect()
    return connector
