"""
The hot path's socket transports, on real sockets with the real reactor:
writes made while nothing is queued reach the kernel before the reactor
runs again, everything else behaves as Twisted's transports do (order,
back-pressure, pull producers, half-close, TLS listeners and startTLS,
the interfaces they declare); connectNode calls nothing but
startedConnecting before it returns, whatever the node and the outcome;
closeNow never re-enters and nothing is read or written after it.
"""

import errno
import io
import os
import socket

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.address import IPv4Address, UNIXAddress
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.epollreactor import EPollReactor
from twisted.internet.error import ConnectionDone, ConnectError, NotConnectingError, UserError
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.protocols.basic import FileSender
from zope.interface import implementer
from twisted.internet.interfaces import IPushProducer

from txrouter import transports
from txrouter.routing.nodes import parseNode
from txrouter.reactor import RouterReactor
from txrouter.transports import connectNode, listeningReactor

MIB = 1 << 20


def deadline(d: Deferred, seconds: float = 10) -> Deferred:
    """
    Fail the test rather than hang if C{d} never fires.
    """
    call = reactor.callLater(seconds, d.cancel)
    return d.addBoth(lambda r: (call.active() and call.cancel(), r)[1])


class Collector(Protocol):
    """
    Keeps what it receives; C{done} fires with it when the connection ends.
    """

    def __init__(self) -> None:
        self.chunks = []
        self.made = Deferred()
        self.done = Deferred()
        self.reason = None

    def connectionMade(self) -> None:
        self.made.callback(self)

    def dataReceived(self, data: bytes) -> None:
        self.chunks.append(data)

    def connectionLost(self, reason) -> None:
        self.reason = reason
        self.done.callback(b"".join(self.chunks))


class OneProtocolFactory(ClientFactory):
    def __init__(self, protocol) -> None:
        self.protocol_ = protocol

    def buildProtocol(self, addr):
        return self.protocol_


@pytest_twisted.inlineCallbacks
def listen(description: str, protocol):
    port = yield serverFromString(listeningReactor(reactor), description).listen(
        OneProtocolFactory(protocol)
    )
    return port


def plainClient(port) -> socket.socket:
    address = port.getHost()
    if isinstance(address, UNIXAddress):
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(address.name)
    else:
        client = socket.create_connection(("127.0.0.1", address.port))
    client.settimeout(10)
    return client


def test_other_reactors_are_left_alone():
    memory = MemoryReactorClock()
    assert listeningReactor(memory) is memory
    factory = ClientFactory()
    connectNode(memory, parseNode("/run/app.sock"), factory)
    connectNode(memory, parseNode("127.0.0.1:3031"), factory)
    assert [c[0] for c in memory.unixClients] == ["/run/app.sock"]
    assert [c[:2] for c in memory.tcpClients] == [("127.0.0.1", 3031)]


@pytest.mark.parametrize("kind", ["tcp", "unix"])
@pytest_twisted.inlineCallbacks
def test_a_write_on_an_idle_connection_is_sent_at_once(kind, tmp_path):
    """
    The bytes are in the client's socket before the reactor runs again;
    Twisted's own transports would only send them on its next iteration.
    """
    description = "tcp:0:interface=127.0.0.1" if kind == "tcp" else f"unix:{tmp_path}/s.sock"
    server = Collector()
    port = yield listen(description, server)
    client = plainClient(port)
    try:
        yield deadline(server.made)
        server.transport.write(b"hello")
        assert client.recv(100, socket.MSG_DONTWAIT) == b"hello"
        client.sendall(b"ping")
        yield deadline(Deferred.fromCoroutine(waitFor(lambda: server.chunks)))
        assert server.chunks == [b"ping"]
        server.transport.loseConnection()
        yield deadline(server.done)
    finally:
        client.close()
        yield port.stopListening()


@implementer(IPushProducer)
class CountingProducer:
    def __init__(self) -> None:
        self.pauses = self.resumes = 0

    def pauseProducing(self) -> None:
        self.pauses += 1

    def resumeProducing(self) -> None:
        self.resumes += 1

    def stopProducing(self) -> None:
        pass


@pytest_twisted.inlineCallbacks
def test_what_the_kernel_does_not_take_is_queued_in_order_with_back_pressure():
    server = Collector()
    port = yield listen("tcp:0:interface=127.0.0.1", server)
    client = Collector()
    connector = reactor.connectTCP("127.0.0.1", port.getHost().port,
                                   OneProtocolFactory(client))
    try:
        yield deadline(server.made)
        yield deadline(client.made)
        producer = CountingProducer()
        server.transport.registerProducer(producer, True)
        big = os.urandom(8 * MIB)
        client.transport.pauseProducing()
        server.transport.write(big)
        server.transport.write(b"after")
        assert producer.pauses >= 1, "8 MiB should fill the socket buffer"
        client.transport.resumeProducing()
        yield deadline(Deferred.fromCoroutine(waitFor(lambda: producer.resumes)))
        server.transport.unregisterProducer()
        server.transport.loseConnection()
        received = yield deadline(client.done)
        assert received == big + b"after"
    finally:
        connector.disconnect()
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_a_pull_producer_is_asked_for_more_until_the_end(tmp_path):
    """
    FileSender (a pull producer, as the body spool uses) must be asked
    for every chunk: its writes go through Twisted's queue.
    """
    server = Collector()
    port = yield listen(f"unix:{tmp_path}/s.sock", server)
    client = Collector()
    reactor.connectUNIX(f"{tmp_path}/s.sock", OneProtocolFactory(client))
    try:
        yield deadline(server.made)
        body = os.urandom(4 * MIB)
        yield deadline(FileSender().beginFileTransfer(io.BytesIO(body), server.transport))
        server.transport.loseConnection()
        assert (yield deadline(client.done)) == body
    finally:
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_a_half_close_comes_after_the_writes_before_it():
    """
    As with Twisted's transports, the write side is shut once everything
    written before the shutdown was flushed, whichever way it was sent.
    """
    server = Collector()
    port = yield listen("tcp:0:interface=127.0.0.1", server)
    client = Collector()
    reactor.connectTCP("127.0.0.1", port.getHost().port, OneProtocolFactory(client))
    try:
        yield deadline(server.made)
        server.transport.write(b"sent at once")
        server.transport.loseWriteConnection()
        server.transport.write(b", queued")
        assert (yield deadline(client.done)) == b"sent at once, queued"
    finally:
        server.transport.loseConnection()
        yield port.stopListening()


class BackendFactory(ClientFactory):
    """
    Records what happens to one connection attempt.
    """

    def __init__(self) -> None:
        self.protocol_ = Collector()
        self.failed = Deferred()
        self.reason = None
        self.started = None

    def startedConnecting(self, connector) -> None:
        self.started = connector

    def buildProtocol(self, addr):
        self.protocol_.peer = addr
        return self.protocol_

    def clientConnectionFailed(self, connector, reason) -> None:
        self.reason = reason
        self.failed.callback(None)


@pytest_twisted.inlineCallbacks
def test_a_unix_node_is_connected_after_connect_node_returns(tmp_path):
    path = str(tmp_path / "app.sock")
    backends = []

    class Backend(Collector):
        def connectionMade(self) -> None:
            backends.append(self)
            Collector.connectionMade(self)

    port = yield UNIXListen(path, Backend)
    try:
        first, second = BackendFactory(), BackendFactory()
        node = parseNode(path)
        connector = connectNode(reactor, node, first)
        assert first.started is connector and connector.factory is first
        assert first.protocol_.transport is None, "connected inside connectNode"
        assert connector.getDestination() == UNIXAddress(path)
        yield deadline(first.protocol_.made)
        assert connector.factory is None, "a reference cycle with a factory that keeps it"
        skt = first.protocol_.transport.socket
        assert not skt.getblocking() and not os.get_inheritable(skt.fileno())
        first.protocol_.transport.write(b"head")
        connectNode(reactor, node, second)
        yield deadline(second.protocol_.made)
        assert first.protocol_.peer == UNIXAddress(path)
        assert second.protocol_.transport.getPeer() is first.protocol_.transport.getPeer()
        with pytest.raises(NotConnectingError):
            connector.stopConnecting()

        yield deadline(Deferred.fromCoroutine(waitFor(lambda: len(backends) == 2)))
        backends[0].transport.write(b"response")
        yield deadline(Deferred.fromCoroutine(waitFor(lambda: first.protocol_.chunks)))
        assert first.protocol_.chunks == [b"response"]

        first.protocol_.transport.closeNow()
        assert first.protocol_.reason is None, "connectionLost ran inside closeNow"
        yield deadline(first.protocol_.done)
        assert first.protocol_.reason.check(ConnectionDone)
        assert (yield deadline(backends[0].done)) == b"head"
        second.protocol_.transport.closeNow()
        yield deadline(backends[1].done)
    finally:
        yield port.stopListening()


class RecordingFactory(BackendFactory):
    """
    Records, in order, every call the connect makes to the factory and its
    protocol.
    """

    def __init__(self) -> None:
        BackendFactory.__init__(self)
        self.calls = []
        factory = self

        class Recorded(Collector):
            def makeConnection(self, transport) -> None:
                factory.calls.append("makeConnection")
                Collector.makeConnection(self, transport)

        self.protocol_ = Recorded()

    def startedConnecting(self, connector) -> None:
        self.calls.append("startedConnecting")
        BackendFactory.startedConnecting(self, connector)

    def buildProtocol(self, addr):
        self.calls.append("buildProtocol")
        return BackendFactory.buildProtocol(self, addr)

    def clientConnectionFailed(self, connector, reason) -> None:
        self.calls.append("clientConnectionFailed")
        BackendFactory.clientConnectionFailed(self, connector, reason)


@pytest.mark.parametrize("kind", ["unix", "missing unix", "tcp", "refused tcp"])
@pytest_twisted.inlineCallbacks
def test_connect_node_calls_back_after_it_returns(kind, tmp_path):
    """
    One rule whatever the node and the outcome: the factory hears
    C{startedConnecting} before C{connectNode} returns, and everything else
    (the protocol's connection, or the failure) afterwards.
    """
    path = str(tmp_path / "app.sock")
    unixPort = yield UNIXListen(path, Collector)
    tcpPort = yield serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(
        Factory.forProtocol(Collector))
    refusedPort = free_port()
    address = {
        "unix": path, "missing unix": str(tmp_path / "none.sock"),
        "tcp": f"127.0.0.1:{tcpPort.getHost().port}", "refused tcp": f"127.0.0.1:{refusedPort}",
    }[kind]
    try:
        factory = RecordingFactory()
        connector = connectNode(reactor, parseNode(address), factory)
        assert factory.calls == ["startedConnecting"]
        assert factory.started is connector and connector.factory is factory
        if kind.startswith(("missing", "refused")):
            yield deadline(factory.failed)
            assert factory.calls == ["startedConnecting", "clientConnectionFailed"]
        else:
            yield deadline(factory.protocol_.made)
            assert factory.calls == ["startedConnecting", "buildProtocol", "makeConnection"]
            factory.protocol_.transport.closeNow()
            yield deadline(factory.protocol_.done)
    finally:
        yield unixPort.stopListening()
        yield tcpPort.stopListening()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest_twisted.inlineCallbacks
def test_stop_connecting_before_the_protocol_is_connected(tmp_path):
    """
    A UNIX node accepts at once, but the connection can still be given up
    until its protocol is connected: the factory hears of it as from
    Twisted's connectors, and the node sees the connection end unused.
    """
    path = str(tmp_path / "app.sock")
    backend = Collector()
    port = yield UNIXListen(path, lambda: backend)
    try:
        factory = RecordingFactory()
        connector = connectNode(reactor, parseNode(path), factory)
        connector.stopConnecting()
        assert factory.calls == ["startedConnecting", "clientConnectionFailed"]
        assert factory.reason.check(UserError)
        assert (yield deadline(backend.done)) == b""
        assert factory.calls == ["startedConnecting", "clientConnectionFailed"]
        with pytest.raises(NotConnectingError):
            connector.stopConnecting()
    finally:
        yield port.stopListening()


def runWithAnsweringPeer(testReactor, tmp_path, protocol):
    """
    Connect C{protocol} with L{connectNode} to a plain UNIX socket that
    answers C{b"response"} at once, and run C{testReactor} until the
    protocol stops it (10 s at most).

    @return: the peer's socket and the listening socket, for the test to
        look at and close.
    """
    path = str(tmp_path / "app.sock")
    listening = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listening.bind(path)
    listening.listen(1)
    connectNode(testReactor, parseNode(path), OneProtocolFactory(protocol))
    peer, _ = listening.accept()
    peer.settimeout(10)
    peer.sendall(b"response")
    testReactor.callLater(10, testReactor.stop)
    testReactor.run()
    return peer, listening


@pytest.mark.parametrize("reactorType", [RouterReactor, EPollReactor])
def test_close_now_from_a_read_that_also_found_the_socket_writable(reactorType, tmp_path, events):
    """
    closeNow() called by the protocol while the reactor handles an event
    that reported the socket readable and writable: the write half of
    that event is not handled (the connection is closed), nothing is
    logged, and the protocol hears connectionLost once, after closeNow
    has returned.
    """
    testReactor = reactorType()
    lost = []

    class ClosingOnRead(Protocol):
        closing = False

        def connectionMade(self) -> None:
            # Registered for both: the first event reports both.
            self.transport.startWriting()

        def dataReceived(self, data) -> None:
            self.closing = True
            self.transport.closeNow()
            self.closing = False

        def connectionLost(self, reason) -> None:
            lost.append((self.closing, reason))
            testReactor.stop()

    peer, listening = runWithAnsweringPeer(testReactor, tmp_path, ClosingOnRead())
    try:
        assert [e for e in events if e.get("log_failure") or e.get("isError")] == []
        assert [(closing, reason.type) for closing, reason in lost] == [(False, ConnectionDone)]
        assert peer.recv(10) == b"", "the connection was not closed"
    finally:
        peer.close()
        listening.close()


async def waitFor(condition) -> None:
    from twisted.internet.task import deferLater

    while not condition():
        await deferLater(reactor, 0.01, lambda: None)


def UNIXListen(path, protocolClass):
    return serverFromString(reactor, f"unix:{path}").listen(Factory.forProtocol(protocolClass))


@pytest_twisted.inlineCallbacks
def test_a_missing_unix_socket_fails_later_not_inside_connect_node(tmp_path):
    factory = BackendFactory()
    connectNode(reactor, parseNode(str(tmp_path / "none.sock")), factory)
    assert not factory.failed.called
    yield deadline(factory.failed)
    reason = factory.reason
    assert reason.check(ConnectError)
    assert "No such file" in reason.getErrorMessage()


@pytest_twisted.inlineCallbacks
def test_out_of_descriptors_is_a_failed_connect(tmp_path, monkeypatch):
    def emfile(*args):
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))

    path = str(tmp_path / "app.sock")
    port = yield UNIXListen(path, Collector)
    monkeypatch.setattr(transports, "socket", emfile)
    factory = BackendFactory()
    connector = connectNode(reactor, parseNode(path), factory)
    assert factory.started is connector is not None
    yield deadline(factory.failed)
    reason = factory.reason
    assert reason.check(ConnectError)
    assert "Too many open files" in reason.getErrorMessage()
    yield port.stopListening()


@pytest.mark.parametrize("reactorType", [RouterReactor, EPollReactor])
def test_close_now_outside_an_event(reactorType, tmp_path):
    """
    closeNow() called while no event is being handled (from connectionMade
    here, called from a delayed call), with bytes waiting to be read: they
    are not, even if the reactor polls before the connection is closed.
    """
    testReactor = reactorType()
    seen = []

    class ClosingAtOnce(Protocol):
        def connectionMade(self) -> None:
            self.transport.closeNow()
            seen.append("closeNow returned")

        def dataReceived(self, data) -> None:
            seen.append(data)

        def connectionLost(self, reason) -> None:
            seen.append(reason.type)
            testReactor.stop()

    peer, listening = runWithAnsweringPeer(testReactor, tmp_path, ClosingAtOnce())
    try:
        assert seen == ["closeNow returned", ConnectionDone]
        # Closed with bytes unread: the kernel resets the connection.
        with pytest.raises(ConnectionResetError):
            peer.recv(10)
    finally:
        peer.close()
        listening.close()


@pytest_twisted.inlineCallbacks
def test_tcp_nodes(tmp_path):
    backends = []

    class Backend(Collector):
        def connectionMade(self) -> None:
            backends.append(self)
            Collector.connectionMade(self)

    port = yield serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(
        Factory.forProtocol(Backend))
    try:
        node = parseNode(f"127.0.0.1:{port.getHost().port}")
        factory = BackendFactory()
        connectNode(reactor, node, factory)
        upstream = yield deadline(factory.protocol_.made)
        assert upstream.peer == IPv4Address("TCP", "127.0.0.1", node.port)
        upstream.transport.write(b"head")
        yield deadline(Deferred.fromCoroutine(waitFor(lambda: backends)))
        backends[0].transport.write(b"response")
        yield deadline(Deferred.fromCoroutine(waitFor(lambda: upstream.chunks)))
        upstream.transport.closeNow()
        assert upstream.reason is None, "connectionLost ran inside closeNow"
        yield deadline(upstream.done)
        assert upstream.reason.check(ConnectionDone)
        assert (yield deadline(backends[0].done)) == b"head"
    finally:
        yield port.stopListening()

    refused = BackendFactory()
    connectNode(reactor, node, refused)
    yield deadline(refused.failed)
    assert refused.reason.check(ConnectError)


@pytest.mark.parametrize("nodeKind", ["unix", "tcp"])
@pytest_twisted.inlineCallbacks
def test_requests_leave_no_reference_cycles(tmp_path, nodeKind):
    """
    What requests through either router allocate (the exchange or
    session, its lifecycle, its retry plan, the node connection and its
    connector, its timer) is freed as soon as each is over, by reference
    counting: nothing waits for the garbage collector's cycle search, which
    would cost every request CPU time.  For UNIX and TCP nodes alike.
    """
    import gc

    from txrouter.routers.exchange import Exchange
    from txrouter.routers.http import HTTPRouter
    from txrouter.routing.retry import RetryPlan
    from txrouter.testing import UwsgiWSGIBackend
    from txrouter.timers import IdleTimer
    from txrouter.upstream import Upstream

    from txrouter.routers.fast import FastRouter, FastSession
    from txrouter.wire.uwsgi import encodePacket

    from txrouter.lifecycle import RequestLifecycle
    from txrouter.upstream import _UpstreamFactory

    if nodeKind == "unix":
        node = str(tmp_path / "app.sock")
        backendPort = yield serverFromString(reactor, f"unix:{node}").listen(UwsgiWSGIBackend())
    else:
        backendPort = yield serverFromString(
            reactor, "tcp:0:interface=127.0.0.1").listen(UwsgiWSGIBackend())
        node = f"127.0.0.1:{backendPort.getHost().port}"
    http = HTTPRouter(reactor, [parseNode(node)], keepalive=5)
    fast = FastRouter(reactor, [parseNode(node)])
    ports = []
    for router in (http, fast):
        ports.append((yield serverFromString(
            listeningReactor(reactor), "tcp:0:interface=127.0.0.1").listen(router)))
    request = b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nbody"
    requests = [
        request * 2 + request.replace(b"Host: h", b"Host: h\r\nConnection: close"),
        encodePacket([(b"HTTP_HOST", b"h"), (b"CONTENT_LENGTH", b"4")]) + b"body",
    ]
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for port, data, responses in zip(ports, requests, (3, 1)):
            client = Collector()
            reactor.connectTCP("127.0.0.1", port.getHost().port, OneProtocolFactory(client))
            yield deadline(client.made)
            client.transport.write(data)
            received = yield deadline(client.done)
            assert received.count(b"HTTP/1.1 200 OK") == responses
        gc.collect()
        kinds = (
            Exchange, FastSession, RequestLifecycle, RetryPlan, IdleTimer, Upstream,
            _UpstreamFactory, transports._UNIXUpstream, transports._UpstreamTCPClient,
            transports._UpstreamTCPConnector,
        )
        assert [o for o in gc.garbage if isinstance(o, kinds)] == []
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        for port in ports:
            yield port.stopListening()
        yield backendPort.stopListening()


class TLSPeer(Collector):
    """
    A L{Collector} that writes C{greeting} as soon as it is connected and
    closes once it has received C{expected} bytes.
    """

    def __init__(self, greeting: bytes, expected: int) -> None:
        Collector.__init__(self)
        self.greeting = greeting
        self.expected = expected

    def connectionMade(self) -> None:
        Collector.connectionMade(self)
        self.transport.write(self.greeting)

    def dataReceived(self, data: bytes) -> None:
        Collector.dataReceived(self, data)
        if sum(map(len, self.chunks)) >= self.expected:
            self.transport.loseConnection()


def tlsOptions(tmp_path):
    """
    Server options for a new self-signed certificate, and client options
    that trust it.
    """
    from twisted.internet.ssl import Certificate, PrivateCertificate, optionsForClientTLS

    from tests.certs import selfSigned

    keyPath, certPath, certPEM = selfSigned(tmp_path)
    server = PrivateCertificate.loadPEM(keyPath.read_bytes() + certPEM).options()
    client = optionsForClientTLS("localhost", trustRoot=Certificate.loadPEM(certPEM))
    return server, client, keyPath, certPath


@pytest.mark.parametrize("kind", ["ssl", "tls"])
@pytest_twisted.inlineCallbacks
def test_a_tls_listener_runs_on_these_transports(kind, tmp_path):
    """
    C{ssl:} and C{tls:} listeners accept on the immediate-write transports,
    under a TLS layer: what the server writes, at once or later, small or
    large, reaches the client decrypted and in order.
    """
    from twisted.internet.interfaces import ISSLTransport

    _, clientOptions, keyPath, certPath = tlsOptions(tmp_path)
    description = {
        "ssl": f"ssl:0:interface=127.0.0.1:privateKey={keyPath}:certKey={certPath}",
        "tls": f"tls:{tmp_path / 'pems'}:port=0:interface=127.0.0.1",
    }[kind]
    big = os.urandom(2 * MIB)
    server = TLSPeer(b"hello" + big, 4)
    port = yield listen(description, server)
    client = TLSPeer(b"ping", 5 + len(big))
    reactor.connectSSL("127.0.0.1", port.getHost().port, OneProtocolFactory(client), clientOptions)
    try:
        yield deadline(server.made)
        assert ISSLTransport.providedBy(server.transport)
        assert type(server.transport.transport) is transports._EagerTCPServer
        assert (yield deadline(client.done)) == b"hello" + big
        assert (yield deadline(server.done)) == b"ping"
    finally:
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_start_tls_on_these_transports(tmp_path):
    """
    C{startTLS} on an accepted connection and on a backend connection, TCP
    and UNIX: what is written after it goes through TLS (the peer's TLS
    layer would fail on a byte sent in the clear), several writes in a
    row included.
    """
    from twisted.internet.interfaces import ISSLTransport

    serverOptions, clientOptions, _, _ = tlsOptions(tmp_path)

    class StartingTLS(Collector):
        def __init__(self, options, secret: bytes, expected: bytes) -> None:
            Collector.__init__(self)
            self.options, self.secret, self.expected = options, secret, expected

        def connectionMade(self) -> None:
            self.transport.startTLS(self.options)
            for byte in self.secret:
                self.transport.write(bytes([byte]))
            Collector.connectionMade(self)

        def dataReceived(self, data: bytes) -> None:
            Collector.dataReceived(self, data)
            if b"".join(self.chunks) == self.expected:
                self.transport.loseConnection()

    path = str(tmp_path / "app.sock")
    for description in ("tcp:0:interface=127.0.0.1", f"unix:{path}"):
        server = StartingTLS(serverOptions, b"server secret", b"client secret")
        port = yield listen(description, server)
        client = StartingTLS(clientOptions, b"client secret", b"server secret")
        node = parseNode(path if description.startswith("unix") else
                         f"127.0.0.1:{port.getHost().port}")
        connectNode(reactor, node, OneProtocolFactory(client))
        try:
            yield deadline(server.made)
            yield deadline(client.made)
            assert isinstance(server.transport, (transports._EagerTCPServer,
                                                 transports._EagerUNIXServer))
            assert isinstance(client.transport, transports.UpstreamTransport)
            assert ISSLTransport.providedBy(server.transport)
            assert ISSLTransport.providedBy(client.transport)
            assert (yield deadline(server.done)) == b"client secret"
            assert (yield deadline(client.done)) == b"server secret"
        finally:
            yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_the_transports_provide_what_they_declare(tmp_path):
    """
    Every interface a transport class declares is there on a live
    transport (zope.interface.verify), and the fast path declares those
    of Twisted's transports it stands in for.
    """
    from twisted.internet.interfaces import (
        IHalfCloseableDescriptor, ISystemHandle, ITCPTransport, ITLSTransport, IUNIXTransport,
    )
    from zope.interface import implementedBy
    from zope.interface.verify import verifyClass, verifyObject

    common = {ITCPTransport, ISystemHandle, IHalfCloseableDescriptor, ITLSTransport}
    path = str(tmp_path / "app.sock")
    live = []
    for description, node in (("tcp:0:interface=127.0.0.1", None), (f"unix:{path}", path)):
        server = Collector()
        port = yield listen(description, server)
        client = Collector()
        connectNode(reactor, parseNode(node or f"127.0.0.1:{port.getHost().port}"),
                    OneProtocolFactory(client))
        yield deadline(server.made)
        yield deadline(client.made)
        live += [server.transport, client.transport]
        client.transport.closeNow()
        yield deadline(server.done)
        yield port.stopListening()
    assert [type(t) for t in live] == [
        transports._EagerTCPServer, transports._UpstreamTCPClient,
        transports._EagerUNIXServer, transports._UNIXUpstream,
    ]
    for transport in live:
        for interface in implementedBy(type(transport)):
            verifyObject(interface, transport)
        declared = set(implementedBy(type(transport)))
        assert common <= declared
        assert (IUNIXTransport in declared) == isinstance(transport, transports._EagerUNIXServer)
    assert common <= set(implementedBy(transports._UpstreamUNIXClient))
    for interface in implementedBy(transports._UpstreamUNIXClient):
        verifyClass(interface, transports._UpstreamUNIXClient)



@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_UNIX], ids=["inet", "unix"])
def test_adopted_sockets_get_these_transports_and_the_wrapping(family, tmp_path):
    """
    A listening socket handed over (systemd's, through the C{systemd:}
    endpoint) is served as C{listenTCP}'s and C{listenUNIX}'s: the same
    port types, the outermost factory wrapped (the PROXY reader).
    """
    given = socket.socket(family, socket.SOCK_STREAM)
    given.bind(("127.0.0.1", 0) if family == socket.AF_INET else str(tmp_path / "s"))
    given.listen(5)
    given.setblocking(False)
    wrapped = []

    def wrap(factory):
        wrapped.append(factory)
        return factory

    factory = ClientFactory()
    port = listeningReactor(reactor, wrap).adoptStreamPort(given.fileno(), family, factory)
    try:
        direct = listeningReactor(reactor).listenTCP(0, factory, interface="127.0.0.1") \
            if family == socket.AF_INET else \
            listeningReactor(reactor).listenUNIX(str(tmp_path / "d"), factory)
        assert type(port) is type(direct)
        assert wrapped == [factory] and port.factory is factory
        direct.stopListening()
    finally:
        port.stopListening()
        given.close()
