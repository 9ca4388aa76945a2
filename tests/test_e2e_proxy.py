"""
The PROXY protocol with a real HAProxy (2.6) in front: C{send-proxy} and
C{send-proxy-v2} to a server listening through
C{listeningReactor(reactor, proxyProtocolWrapper(...))}, as a router's
listeners do, with the router's own socket transports.  The client
connects to HAProxy from 127.0.0.2; the server's protocol must see that
address and the client's real port, and a client sending a header itself
from an untrusted 127.0.0.3 is refused.
"""

import shutil

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import ClientFactory, Factory, Protocol

from tests.realpeers import Process, free_port, wait_for_tcp
from txrouter.proxyprotocol import proxyHeaderOf, proxyProtocolWrapper
from txrouter.transports import listeningReactor
from txrouter.wire.proxy import encodeV1

HAPROXY = shutil.which("haproxy") or shutil.which("/usr/sbin/haproxy")

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed (scripts/setup installs it)"),
]


class _Reporting(Protocol):
    """
    Answers the line a client sends with the address it sees the client
    at and the PROXY header's version, then closes.
    """

    def connectionMade(self) -> None:
        self.buffer = b""

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        if b"\n" in self.buffer:
            peer = self.transport.getPeer()
            header = proxyHeaderOf(self.transport)
            version = header.version if header is not None else "-"
            line = self.buffer.partition(b"\n")[0]
            self.transport.write(f"{peer.host} {peer.port} v{version} ".encode() + line + b"\n")
            self.transport.loseConnection()


class _Client(Protocol):
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.received = []
        self.done = Deferred()

    def connectionMade(self) -> None:
        self.port = self.transport.getHost().port
        self.transport.write(self.data)

    def dataReceived(self, data: bytes) -> None:
        self.received.append(data)

    def connectionLost(self, reason) -> None:
        self.done.callback(b"".join(self.received))


def _exchange(port: int, source: str, data: bytes):
    """
    Connect to 127.0.0.1:C{port} from C{source}, send C{data}, and give
    the client once the connection is closed (10 s at most).
    """
    client = _Client(data)
    reactor.connectTCP("127.0.0.1", port, ClientFactory.forProtocol(lambda: client),
                       timeout=5, bindAddress=(source, 0))
    timeout = reactor.callLater(10, client.done.cancel)
    client.done.addBoth(lambda result: (timeout.active() and timeout.cancel(), result)[1])
    return client.done.addCallback(lambda _: client)


def _haproxy(tmp_path, front: int, server, sendProxy: str) -> Process:
    config = tmp_path / "haproxy.cfg"
    config.write_text(f"""
global
    maxconn 100

defaults
    mode tcp
    timeout connect 5s
    timeout client 10s
    timeout server 10s

listen front
    bind 127.0.0.1:{front}
    server app {server} {sendProxy}
""")
    return Process([HAPROXY, "-db", "-f", config], tmp_path / "haproxy.log")


@pytest.mark.parametrize("sendProxy, version", [("send-proxy", 1), ("send-proxy-v2", 2)])
@pytest_twisted.inlineCallbacks
def test_haproxy_in_front(sendProxy, version, tmp_path):
    """
    HAProxy's header from 127.0.0.1 (trusted): the server's protocol sees
    the client at 127.0.0.2 and its real port; the client's bytes follow.
    A client at 127.0.0.3 (untrusted) sending a header of its own is
    refused, and served as itself when it sends none.
    """
    wrap = proxyProtocolWrapper(reactor, True, ["127.0.0.1"], 5.0)
    listening = listeningReactor(reactor, wrap)
    port = yield serverFromString(listening, "tcp:0:interface=127.0.0.1").listen(
        Factory.forProtocol(_Reporting)
    )
    front = free_port()
    try:
        with _haproxy(tmp_path, front, f"127.0.0.1:{port.getHost().port}", sendProxy) as haproxy:
            wait_for_tcp(front, process=haproxy)

            client = yield _exchange(front, "127.0.0.2", b"hello\n")
            answer = b"".join(client.received)
            assert answer == f"127.0.0.2 {client.port} v{version} hello\n".encode(), haproxy.log()

            server = port.getHost().port
            spoof = encodeV1(("10.6.6.6", 1234), ("127.0.0.1", server))
            client = yield _exchange(server, "127.0.0.3", spoof + b"hello\n")
            assert client.received == []

            client = yield _exchange(server, "127.0.0.3", b"hello\n")
            assert b"".join(client.received) == f"127.0.0.3 {client.port} v- hello\n".encode()
    finally:
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_haproxy_in_front_of_a_unix_listener(tmp_path):
    """
    On a UNIX socket listener (C{--proxy-protocol-from unix}), HAProxy's
    v2 header gives the client's TCP address all the same.
    """
    path = str(tmp_path / "router.sock")
    wrap = proxyProtocolWrapper(reactor, True, ["unix"], 5.0)
    port = yield serverFromString(listeningReactor(reactor, wrap), f"unix:{path}").listen(
        Factory.forProtocol(_Reporting)
    )
    front = free_port()
    try:
        with _haproxy(tmp_path, front, path, "send-proxy-v2") as haproxy:
            wait_for_tcp(front, process=haproxy)
            client = yield _exchange(front, "127.0.0.2", b"hello\n")
            answer = b"".join(client.received)
            assert answer == f"127.0.0.2 {client.port} v2 hello\n".encode(), haproxy.log()
    finally:
        yield port.stopListening()
