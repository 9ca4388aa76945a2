"""
Test doubles for txrouter's users and for its own tests.

 - L{UwsgiWSGIBackend}: a uwsgi-protocol server that runs a WSGI application
   in-process, the way a uWSGI worker would; listen on it with any server
   endpoint to test a router or a C{.tac} without uWSGI.
 - L{HTTPWSGIBackend}: the same over plain HTTP/1.1, for the HTTP router's
   HTTP nodes (C{http://} addresses), recording the exact request heads.
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

from txrouter.wire.http1 import ChunkedDecoder, HTTPError, RequestHeadParser
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


class _WSGIBackend(ServerFactory):
    """
    What the backends share: the application, the requests received, the
    connections made, and holding answers back.

    @cvar protocol: the protocol class, built with the factory.
    """

    noisy = False

    def __init__(self, application=echoApplication) -> None:
        self.application = application
        self.requests = []
        self.hold = False
        self.connections = []

    def buildProtocol(self, addr):
        protocol = self.protocol(self)
        self.connections.append(protocol)
        return protocol


class UwsgiWSGIBackend(_WSGIBackend):
    """
    A uwsgi server running a WSGI application, one request per connection.

    @ivar requests: C{(vars, body, packet)} of each request received, where
        C{vars} is a dict of the var bytes.
    @ivar hold: when true, requests are parsed but not answered until
        C{protocol.respond()} is called (see L{pending}).
    """

    protocol = _UwsgiWSGIProtocol

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


def _wsgiEnviron(head, body: bytes) -> dict:
    """
    The environ a WSGI server builds for an HTTP request.
    """
    path, _, query = head.path.partition(b"?")
    environ = {
        "REQUEST_METHOD": head.method.decode("latin-1"),
        "SCRIPT_NAME": "",
        "PATH_INFO": path.decode("latin-1"),
        "QUERY_STRING": query.decode("latin-1"),
        "SERVER_PROTOCOL": head.version.decode("latin-1"),
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "CONTENT_LENGTH": str(len(body)) if body else "",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    for name, value in head.headers:
        key = name.decode("latin-1").upper().replace("-", "_")
        if key in ("CONTENT_LENGTH", "TRANSFER_ENCODING"):
            continue
        if key != "CONTENT_TYPE":
            key = "HTTP_" + key
        text = value.decode("latin-1")
        environ[key] = environ[key] + "," + text if key in environ else text
    return environ


class HTTPRequestRecord:
    """
    One request an L{HTTPWSGIBackend} received.

    @ivar raw: the head exactly as received, blank line included.
    @ivar head: it parsed (a L{txrouter.wire.http1.RequestHead}).
    @ivar body: the body, de-chunked if it came chunked.
    """

    def __init__(self, raw: bytes, head, body: bytes) -> None:
        self.raw = raw
        self.head = head
        self.body = body

    def header(self, name: bytes) -> "list[bytes]":
        """
        The values of the header C{name} (any case), in order.
        """
        name = name.lower()
        return [v for n, v in self.head.headers if n.lower() == name]


class _HTTPWSGIProtocol(Protocol):
    def __init__(self, backend) -> None:
        self.backend = backend
        self._parser = RequestHeadParser()
        self._received = b""
        self._raw = None
        self._head = None
        self._decoder = None
        self._body = []
        self._remaining = 0
        self.complete = False

    def dataReceived(self, data: bytes) -> None:
        if self._head is None:
            self._received += data
            try:
                head = self._parser.feed(data)
            except HTTPError as e:
                self._refuse(e)
                return
            if head is None:
                return
            data = self._parser.leftover
            self._raw = self._received[: len(self._received) - len(data)]
            self._received = b""
            self._head = head
            if head.chunked:
                self._decoder = ChunkedDecoder()
            else:
                self._remaining = head.contentLength or 0
        if self._decoder is not None:
            try:
                self._body += self._decoder.feed(data)
            except HTTPError as e:
                self._refuse(e)
                return
            self.complete = self._decoder.done
        else:
            piece = data[: self._remaining]
            self._body.append(piece)
            self._remaining -= len(piece)
            self.complete = not self._remaining
        if self.complete and not self.backend.hold:
            self.respond()

    def _refuse(self, error: HTTPError) -> None:
        self.backend.errors.append(error)
        self.transport.write(b"HTTP/1.1 %d Bad\r\nConnection: close\r\n\r\n" % error.status)
        self.transport.loseConnection()

    def respond(self) -> None:
        """
        Run the application and write its response; close unless the
        request allows the connection to be kept.
        """
        head, self._head = self._head, None
        body = b"".join(self._body)
        self._body, self._decoder, self.complete = [], None, False
        self.backend.requests.append(HTTPRequestRecord(self._raw, head, body))
        keep = head.keepAlive and not self.backend.closeAlways
        self.transport.write(self.backend.render(head, body, keep))
        if keep:
            self._parser.reset()
        else:
            self.transport.loseConnection()


class HTTPWSGIBackend(_WSGIBackend):
    """
    An HTTP/1.1 server running a WSGI application, as gunicorn or
    C{twisted.web} would, for the HTTP router's HTTP nodes.  Requests are
    parsed strictly (L{RequestHeadParser}): one that is not valid HTTP/1.1
    gets a 400 and lands in L{errors}.

    @ivar requests: the L{HTTPRequestRecord} of each request received.
    @ivar errors: the L{HTTPError} of each request refused.
    @ivar hold: when true, requests are read but not answered until
        C{protocol.respond()} is called (see L{pending}).
    @ivar closeAlways: close after every response, saying
        C{Connection: close}, even when the request allows keeping the
        connection (a server does so anyway when the request says close).
    """

    protocol = _HTTPWSGIProtocol

    def __init__(self, application=echoApplication) -> None:
        super().__init__(application)
        self.errors = []
        self.closeAlways = False

    def pending(self):
        """
        The connections that hold a complete request not yet answered.
        """
        return [c for c in self.connections if c._head is not None and c.complete]

    def render(self, head, body: bytes, keep: bool) -> bytes:
        """
        Call the application as a WSGI server would; return the response,
        with C{Connection: close} unless C{keep}.
        """
        started = []

        def start_response(status, headers, exc_info=None):
            started[:] = [status, headers]

        chunks = list(self.application(_wsgiEnviron(head, body), start_response))
        status, headers = started
        lines = [f"HTTP/1.1 {status}\r\n".encode("latin-1")]
        lines += [f"{k}: {v}\r\n".encode("latin-1") for k, v in headers]
        if not keep:
            lines.append(b"Connection: close\r\n")
        return b"".join(lines) + b"\r\n" + b"".join(chunks)


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
        Deliver bytes, complete connects and make the calls due now
        (C{callLater(0)}) until nothing changes.
        """
        reactor = self.reactor
        for _ in range(rounds):
            progressed = self._completeConnects()
            now = reactor.seconds()
            if any(call.getTime() <= now for call in reactor.getDelayedCalls()):
                # What was asked for "once the current events are handled".
                reactor.advance(0)
                progressed = True
            for pump in list(self._pumps):
                if pump.pump(advanceClock=False):
                    progressed = True
                if pump.clientIO.disconnected and pump.serverIO.disconnected:
                    self._pumps.remove(pump)
            if not progressed:
                return
