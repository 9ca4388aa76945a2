"""
Test doubles for txrouter's users and for its own tests.

 - L{UwsgiWSGIBackend}: a uwsgi-protocol server that runs a WSGI application
   in-process, the way a uWSGI worker would; listen on it with any server
   endpoint to test a router or a C{.tac} without uWSGI.
 - L{MemoryNetwork}: a L{MemoryReactorClock} where a router's connections to
   its nodes reach in-memory backends, and clients are in-memory too, so a
   whole request can be driven without a socket (like C{treq.testing}).
"""

import io
import sys

from twisted.internet.address import IPv4Address, UNIXAddress
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.test import iosim

from txrouter.wire.uwsgi import PacketParser, UwsgiPacketError


def echoApplication(environ, start_response):
    """
    A WSGI application answering with its str environ items and the body.

    The answer is C{text/plain}: one C{KEY=VALUE} line per var, sorted, then
    C{BODY=} and the body bytes.
    """
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else b""
    lines = [
        f"{key}={value}".encode("utf-8", "surrogateescape")
        for key, value in sorted(environ.items())
        if isinstance(value, str)
    ]
    payload = b"\n".join(lines) + b"\nBODY=" + body
    start_response(
        "200 OK",
        [("Content-Type", "text/plain"), ("Content-Length", str(len(payload)))],
    )
    return [payload]


class _UwsgiWSGIProtocol(Protocol):
    def __init__(self, backend) -> None:
        self.backend = backend
        self._parser = PacketParser()
        self._packet = None
        self._body = []
        self._remaining = 0

    def dataReceived(self, data: bytes) -> None:
        if self._packet is None:
            try:
                packet = self._parser.feed(data)
            except UwsgiPacketError:
                self.transport.loseConnection()
                return
            if packet is None:
                return
            self._packet = packet
            self._remaining = int(packet.get(b"CONTENT_LENGTH") or 0)
            data = self._parser.leftover
        if self._remaining:
            piece = data[: self._remaining]
            self._body.append(piece)
            self._remaining -= len(piece)
        if not self._remaining and self._packet is not None and not self.backend.hold:
            self.respond()

    def respond(self) -> None:
        """
        Run the application and write its whole response, then close.
        """
        packet, self._packet = self._packet, None
        body = b"".join(self._body)
        self.backend.requests.append((dict(packet.vars), body, packet))
        self.transport.write(self.backend.render(packet, body))
        self.transport.loseConnection()


class UwsgiWSGIBackend(ServerFactory):
    """
    A uwsgi server running a WSGI application, one request per connection.

    @ivar requests: C{(vars, body, packet)} of each request received, where
        C{vars} is a dict of the var bytes.
    @ivar hold: when true, requests are parsed but not answered until
        C{protocol.respond()} is called (see L{pending}).
    """

    noisy = False

    def __init__(self, application=echoApplication) -> None:
        self.application = application
        self.requests = []
        self.hold = False
        self.connections = []

    def buildProtocol(self, addr):
        protocol = _UwsgiWSGIProtocol(self)
        self.connections.append(protocol)
        return protocol

    def pending(self):
        """
        The connections that hold a complete request not yet answered.
        """
        return [c for c in self.connections if c._packet is not None and not c._remaining]

    def render(self, packet, body: bytes) -> bytes:
        """
        Call the application as a uWSGI worker would; return the response.
        """
        environ = {
            k.decode("latin-1"): v.decode("utf-8", "surrogateescape") for k, v in packet.vars
        }
        environ.update(
            {
                "wsgi.input": io.BytesIO(body),
                "wsgi.errors": sys.stderr,
                "wsgi.version": (1, 0),
                "wsgi.url_scheme": "https" if environ.get("HTTPS") == "on" else "http",
                "wsgi.multithread": False,
                "wsgi.multiprocess": True,
                "wsgi.run_once": False,
            }
        )
        started = []

        def start_response(status, headers, exc_info=None):
            started[:] = [status, headers]

        chunks = list(self.application(environ, start_response))
        status, headers = started
        protocol = environ.get("SERVER_PROTOCOL", "HTTP/1.1")
        head = [f"{protocol} {status}\r\n".encode("latin-1")]
        head += [f"{k}: {v}\r\n".encode("latin-1") for k, v in headers]
        return b"".join(head) + b"\r\n" + b"".join(chunks)


class _Client(Protocol):
    def __init__(self) -> None:
        self.received = []
        self.closed = False

    def dataReceived(self, data: bytes) -> None:
        self.received.append(data)

    def connectionLost(self, reason) -> None:
        self.closed = True


class MemoryClient:
    """
    The client side of an in-memory connection to a router.

    @ivar pump: the L{iosim.IOPump} between the client and the router.
    """

    def __init__(self, network, protocol, pump) -> None:
        self._network = network
        self._protocol = protocol
        self.pump = pump

    def send(self, data: bytes) -> None:
        """
        Write bytes to the router and let everything settle.
        """
        self.pump.client.transport.write(data)
        self._network.flush()

    def received(self) -> bytes:
        """
        Every byte the router has written to this client so far.
        """
        return b"".join(self._protocol.received)

    @property
    def closed(self) -> bool:
        """
        Whether the router closed the connection.
        """
        return self._protocol.closed

    def close(self) -> None:
        """
        Close the client side.
        """
        self.pump.client.transport.loseConnection()
        self._network.flush()


class MemoryNetwork:
    """
    An in-memory network: a router's node connections reach backends.

    Give the router C{network.reactor}; register backends under the node's
    host/port or path with L{addBackend}; open client connections with
    L{connect}.  L{flush} moves every byte until nothing more happens.
    Connections to an address with no backend are refused.
    """

    def __init__(self) -> None:
        self.reactor = MemoryReactorClock()
        self.backends = {}
        self._pumps = []

    def addBackend(self, address, factory) -> None:
        """
        @param address: C{(host, port)} or a UNIX path.
        """
        self.backends[address] = factory

    def connect(self, routerFactory, peer=("127.0.0.1", 40000)) -> MemoryClient:
        """
        Open a client connection to C{routerFactory}.
        """
        client = _Client()
        server = routerFactory.buildProtocol(None)
        serverTransport = iosim.FakeTransport(
            server, isServer=True,
            hostAddress=IPv4Address("TCP", "127.0.0.1", 8080),
            peerAddress=IPv4Address("TCP", *peer),
        )
        clientTransport = iosim.makeFakeClient(client)
        pump = iosim.connect(server, serverTransport, client, clientTransport, clock=self.reactor)
        self._pumps.append(pump)
        self.flush()
        return MemoryClient(self, client, pump)

    def _completeConnects(self) -> bool:
        reactor = self.reactor
        progressed = False
        while reactor.connectors:
            connector = reactor.connectors.pop(0)
            destination = connector.getDestination()
            progressed = True
            if isinstance(destination, UNIXAddress):
                path, factory = reactor.unixClients.pop(0)[:2]
                address = path
                peer = UNIXAddress(path)
            else:
                host, port, factory = reactor.tcpClients.pop(0)[:3]
                address = (host, port)
                peer = IPv4Address("TCP", host, port)
            if connector.stoppedConnecting:
                continue
            backend = self.backends.get(address)
            if backend is None:
                factory.clientConnectionFailed(connector, Failure(ConnectionRefusedError()))
                continue
            client = factory.buildProtocol(None)
            server = backend.buildProtocol(None)
            clientTransport = iosim.FakeTransport(client, isServer=False, peerAddress=peer)
            serverTransport = iosim.makeFakeServer(server)
            self._pumps.append(
                iosim.connect(server, serverTransport, client, clientTransport, clock=reactor)
            )
        return progressed

    def flush(self, rounds: int = 100) -> None:
        """
        Deliver bytes and complete connects until nothing changes.
        """
        for _ in range(rounds):
            progressed = self._completeConnects()
            for pump in list(self._pumps):
                if pump.pump(advanceClock=False):
                    progressed = True
                if pump.clientIO.disconnected and pump.serverIO.disconnected:
                    self._pumps.remove(pump)
            if not progressed:
                return
