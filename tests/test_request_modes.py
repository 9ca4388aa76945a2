"""
uWSGI's request options of the HTTP router: C{--manage-expect [N]},
C{--raw-body} and C{--manage-source} (reference section 5.5).
"""

from twisted.internet.protocol import Protocol, ServerFactory
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from txrouter.routers.http import HTTPRouter
from txrouter.routing.nodes import parseNode
from txrouter.testing import MemoryNetwork, UwsgiWSGIBackend
from txrouter.wire.uwsgi import PacketParser


class _RawNode(ServerFactory):
    """
    Answers a request packet with C{answer} at once, then echoes every
    byte that follows it upper-cased, until the router closes.
    """

    def __init__(self, answer=b"HTTP/1.1 200 OK\r\n\r\n"):
        self.answer = answer
        self.packets = []
        self.protocol = None

    def buildProtocol(self, addr):
        factory = self

        class Echo(Protocol):
            def connectionMade(self):
                factory.protocol = self
                self.parser = PacketParser()
                self.eof = False

            def dataReceived(self, data):
                if self.parser is not None:
                    packet = self.parser.feed(data)
                    if packet is None:
                        return
                    factory.packets.append(packet)
                    data, self.parser = self.parser.leftover, None
                    self.transport.write(factory.answer)
                if data:
                    self.transport.write(data.upper())

            def readConnectionLost(self):
                self.eof = True
                self.transport.loseConnection()

        return Echo()


class RequestModesTests(SynchronousTestCase):
    def setUp(self):
        self.network = MemoryNetwork()
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def router(self, backend, **options):
        self.network.addBackend(("127.0.0.1", 3031), backend)
        return HTTPRouter(
            self.network.reactor, [parseNode("127.0.0.1:3031")], server_name="vm", **options,
        )

    def send(self, router, data: bytes):
        client = self.network.connect(router, peer=("127.0.0.1", 40000))
        client.send(data)
        return client

    def loggedEvents(self):
        return [e.get("event") for e in self.events if "event" in e]

    def test_manage_expect_refuses_other_expectations_with_417(self):
        backend = UwsgiWSGIBackend()
        router = self.router(backend, manage_expect=0)
        client = self.send(
            router, b"PUT / HTTP/1.1\r\nHost: h\r\nExpect: teapot\r\nContent-Length: 2\r\n\r\n",
        )
        self.assertTrue(client.received().startswith(b"HTTP/1.1 417 Expectation Failed\r\n"))
        self.assertEqual(backend.requests, [])
        self.assertIn("expectation_failed", self.loggedEvents())

    def test_without_manage_expect_other_expectations_reach_the_node(self):
        backend = UwsgiWSGIBackend()
        router = self.router(backend)
        client = self.send(
            router, b"PUT / HTTP/1.1\r\nHost: h\r\nExpect: teapot\r\nContent-Length: 2\r\n\r\nab",
        )
        self.assertTrue(client.received().startswith(b"HTTP/1.1 200 OK\r\n"))
        self.assertEqual(dict(backend.requests[0][0])[b"HTTP_EXPECT"], b"teapot")

    def test_manage_expect_limit_refuses_a_large_body_before_reading_it(self):
        backend = UwsgiWSGIBackend()
        router = self.router(backend, manage_expect=100)
        head = b"PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n"
        client = self.send(router, head % 101)
        received = client.received()
        self.assertTrue(received.startswith(b"HTTP/1.1 413 "), received)
        self.assertNotIn(b"100 Continue", received)
        client = self.send(router, head % 100)
        self.assertEqual(client.received(), b"HTTP/1.1 100 Continue\r\n\r\n")
        client.send(b"x" * 100)
        self.assertIn(b"HTTP/1.1 200 OK", client.received())

    def test_raw_body_streams_what_follows_the_head_until_the_client_closes(self):
        node = _RawNode()
        router = self.router(node, raw_body=True)
        client = self.send(router, b"GET /stream HTTP/1.1\r\nHost: h\r\n\r\nhello")
        client.send(b" world")
        received = client.received()
        self.assertTrue(received.startswith(b"HTTP/1.1 200 OK\r\n"), received)
        self.assertTrue(received.endswith(b"HELLO WORLD"), received)
        self.assertNotIn(b"CONTENT_LENGTH", dict(node.packets[0].vars))

    def test_without_raw_body_bytes_after_the_head_are_the_next_request(self):
        node = _RawNode()
        router = self.router(node)
        client = self.send(router, b"GET /stream HTTP/1.1\r\nHost: h\r\n\r\nhello")
        self.assertNotIn(b"HELLO", client.received())

    def test_manage_source_makes_only_source_requests_raw(self):
        node = _RawNode()
        router = self.router(node, manage_source=True)
        client = self.send(router, b"SOURCE /live.mp3 HTTP/1.0\r\nHost: h\r\n\r\nID3")
        client.send(b"frames")
        self.assertTrue(client.received().endswith(b"ID3FRAMES"))
        client = self.send(router, b"GET /live.mp3 HTTP/1.1\r\nHost: h\r\n\r\nxyz")
        self.assertNotIn(b"XYZ", client.received())


class _RecordingForwarder:
    """
    Sends every request to C{127.0.0.1:3031}, keeping the keys it is asked.
    """

    def __init__(self):
        self.keys = []

    def pick(self, key, client=None):
        self.keys.append(key)
        return parseNode("127.0.0.1:3031")

    def failed(self, key, node):
        pass

    connected = released = abandoned = failed


class RTSPTests(SynchronousTestCase):
    def setUp(self):
        self.network = MemoryNetwork()
        self.node = _RawNode(b"RTSP/1.0 200 OK\r\nCSeq: 2\r\n\r\n")
        self.network.addBackend(("127.0.0.1", 3031), self.node)

    def send(self, router, data: bytes):
        client = self.network.connect(router, peer=("127.0.0.1", 40000))
        client.send(data)
        return client

    def test_an_rtsp_request_is_routed_by_its_uri_and_relayed_raw(self):
        """
        uWSGI's --http-manage-rtsp: the key is the authority of the
        C{rtsp://} target, the node's RTSP answer and everything after it
        are relayed unparsed, both ways.
        """
        forwarder = _RecordingForwarder()
        router = HTTPRouter(self.network.reactor, forwarder=forwarder, server_name="vm",
                            manage_rtsp=True)
        client = self.send(router, b"DESCRIBE rtsp://cam.local:554/live RTSP/1.0\r\nCSeq: 2\r\n\r\n")
        client.send(b"interleaved")
        received = client.received()
        self.assertTrue(received.startswith(b"RTSP/1.0 200 OK\r\nCSeq: 2\r\n\r\n"), received)
        self.assertTrue(received.endswith(b"INTERLEAVED"))
        self.assertEqual(forwarder.keys, [b"cam.local:554"])
        packet = dict(self.node.packets[0].vars)
        self.assertEqual((packet[b"SERVER_PROTOCOL"], packet[b"PATH_INFO"]), (b"RTSP/1.0", b"/live"))

    def test_without_the_option_rtsp_is_refused(self):
        router = HTTPRouter(self.network.reactor, [parseNode("127.0.0.1:3031")], server_name="vm")
        client = self.send(router, b"DESCRIBE rtsp://cam.local/live RTSP/1.0\r\nCSeq: 2\r\n\r\n")
        self.assertTrue(client.received().startswith(b"HTTP/1.1 400 "))
        self.assertEqual(self.node.packets, [])
