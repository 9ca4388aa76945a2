"""
C{--send-proxy} and C{--send-proxy-v2}: the node hears who the client is
from a PROXY header ahead of the client's bytes (HTTP nodes of the HTTP
router, every node of the raw router), once per node connection.
"""

import pytest
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.trial.unittest import SynchronousTestCase

from txrouter.config import HTTPRouterConfig, RawRouterConfig
from txrouter.routers.http import HTTPRouter
from txrouter.routers.raw import RawRouter
from txrouter.routing.nodes import parseNode
from txrouter.testing import MemoryNetwork
from txrouter.wire.proxy import ProxyHeaderParser


class _Capture(ServerFactory):
    """
    Keeps what each connection received; answers an HTTP request line with
    a small response.
    """

    def __init__(self):
        self.received = []

    def buildProtocol(self, addr):
        factory = self

        class Capture(Protocol):
            def connectionMade(self):
                self.data = b""
                factory.received.append(self)

            def dataReceived(self, data):
                self.data += data
                if self.data.endswith(b"\r\n\r\n"):
                    self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

        return Capture()


def parsed(data: bytes):
    header, rest = ProxyHeaderParser().feed(data)
    return header, rest


class SendProxyTests(SynchronousTestCase):
    def setUp(self):
        self.network = MemoryNetwork()
        self.node = _Capture()
        self.network.addBackend(("127.0.0.1", 8000), self.node)

    def test_an_http_node_gets_a_v1_header_then_the_request(self):
        router = HTTPRouter(self.network.reactor, [parseNode("http://127.0.0.1:8000")],
                            server_name="vm", send_proxy=1)
        client = self.network.connect(router, peer=("10.1.2.3", 40000))
        client.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        self.assertTrue(client.received().endswith(b"ok"))
        header, rest = parsed(self.node.received[0].data)
        self.assertEqual((header.version, header.source, header.destination),
                         (1, ("10.1.2.3", 40000), ("127.0.0.1", 8080)))
        self.assertTrue(rest.startswith(b"GET / HTTP/1.1\r\n"))

    def test_the_raw_router_sends_a_v2_header_first(self):
        router = RawRouter(self.network.reactor, [parseNode("127.0.0.1:8000")], key=b"k",
                           send_proxy=2)
        client = self.network.connect(router, peer=("10.1.2.3", 40000))
        client.send(b"hello")
        header, rest = parsed(self.node.received[0].data)
        self.assertEqual((header.version, header.source), (2, ("10.1.2.3", 40000)))
        self.assertEqual(rest, b"hello")

    def test_without_the_option_nothing_precedes_the_bytes(self):
        router = RawRouter(self.network.reactor, [parseNode("127.0.0.1:8000")], key=b"k")
        client = self.network.connect(router, peer=("10.1.2.3", 40000))
        client.send(b"hello")
        self.assertEqual(self.node.received[0].data, b"hello")


def test_send_proxy_and_node_keepalive_do_not_go_together():
    with pytest.raises(ValueError, match="--send-proxy"):
        HTTPRouterConfig(bind=["tcp:0"], to=["http://127.0.0.1:8000"], send_proxy=True,
                         node_keepalive=4)
    with pytest.raises(ValueError, match="not both"):
        RawRouterConfig(bind=["tcp:0"], to=[":3031"], send_proxy=True, send_proxy_v2=True)
