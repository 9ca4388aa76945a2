"""
C{--node-keepalive}: connections to HTTP nodes kept open and reused by the
next requests, never after a response that was not read to its end.
"""

from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from txrouter.routers.http import HTTPRouter
from txrouter.routing.nodes import parseNode
from txrouter.testing import HTTPWSGIBackend, MemoryNetwork

NODE = "http://127.0.0.1:8000"
GET = b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n"


def chunkedApp(environ, start_response):
    start_response("200 OK", [("Transfer-Encoding", "chunked")])
    return [b"3\r\nabc\r\n0\r\n\r\n"]


class NodeKeepAliveTests(SynchronousTestCase):
    def setUp(self):
        self.network = MemoryNetwork()
        self.backend = HTTPWSGIBackend()
        self.network.addBackend(("127.0.0.1", 8000), self.backend)
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def router(self, **options):
        options.setdefault("node_keepalive", 4)
        return HTTPRouter(self.network.reactor, [parseNode(NODE)], server_name="vm", **options)

    def get(self, router, data=GET):
        client = self.network.connect(router)
        client.send(data)
        return client.received()

    def pool(self, router):
        return dict(router.statsFields())["node_keepalive"]

    def test_the_next_request_reuses_the_connection(self):
        router = self.router()
        for _ in range(3):
            self.assertTrue(self.get(router).startswith(b"HTTP/1.1 200 OK\r\n"))
        self.assertEqual(len(self.backend.connections), 1)
        self.assertEqual(len(self.backend.requests), 3)
        self.assertEqual(self.pool(router), {"idle": 1, "reused": 2})

    def test_the_node_is_asked_to_keep_the_connection(self):
        self.get(self.router())
        headers = dict(self.backend.requests[0].head.headers)
        self.assertEqual(headers[b"Connection"], b"keep-alive")
        self.get(self.router(node_keepalive=0))
        headers = dict(self.backend.requests[1].head.headers)
        self.assertEqual(headers[b"Connection"], b"close")

    def test_without_the_option_each_request_connects(self):
        router = self.router(node_keepalive=0)
        self.get(router)
        self.get(router)
        self.assertEqual(len(self.backend.connections), 2)
        self.assertNotIn("node_keepalive", dict(router.statsFields()))

    def test_a_chunked_response_read_to_its_end_frees_the_connection(self):
        self.backend.application = chunkedApp
        router = self.router()
        self.assertTrue(self.get(router).endswith(b"0\r\n\r\n"))
        self.get(router)
        self.assertEqual(len(self.backend.connections), 1)

    def test_a_post_whose_body_was_sent_frees_the_connection(self):
        router = self.router()
        post = b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"
        self.get(router, post)
        self.get(router, post)
        self.assertEqual(len(self.backend.connections), 1)
        self.assertEqual([r.body for r in self.backend.requests], [b"abc", b"abc"])

    def test_a_node_that_says_close_is_not_kept(self):
        self.backend.closeAlways = True
        router = self.router()
        self.get(router)
        self.get(router)
        self.assertEqual(len(self.backend.connections), 2)

    def test_a_response_the_client_abandoned_is_not_kept(self):
        self.backend.hold = True
        router = self.router()
        client = self.network.connect(router)
        client.send(GET)
        client.close()
        self.network.flush()
        self.backend.hold = False
        self.get(router)
        self.assertEqual(len(self.backend.connections), 2)
        self.assertEqual(self.pool(router)["reused"], 0)

    def test_an_idle_connection_is_closed_after_the_timeout(self):
        router = self.router(node_keepalive_timeout=4)
        self.get(router)
        [connection] = self.backend.connections
        self.network.reactor.advance(4.1)
        self.network.flush()
        self.assertTrue(connection.transport.disconnected)
        self.assertEqual(self.pool(router)["idle"], 0)
        self.get(router)
        self.assertEqual(len(self.backend.connections), 2)

    def test_a_connection_the_node_closed_is_forgotten(self):
        router = self.router()
        self.get(router)
        self.backend.connections[0].transport.loseConnection()
        self.network.flush()
        self.assertEqual(self.pool(router)["idle"], 0)
        self.assertTrue(self.get(router).startswith(b"HTTP/1.1 200 OK\r\n"))
        self.assertEqual(len(self.backend.connections), 2)

    def test_a_node_that_speaks_unasked_loses_its_connection(self):
        router = self.router()
        self.get(router)
        self.backend.connections[0].transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
        self.network.flush()
        self.assertEqual(self.pool(router)["idle"], 0)
        self.assertTrue(self.get(router).startswith(b"HTTP/1.1 200 OK\r\n"))
        self.assertEqual(len(self.backend.connections), 2)

    def test_at_most_the_limit_is_kept(self):
        self.backend.hold = True
        router = self.router(node_keepalive=1)
        clients = []
        for _ in range(3):
            client = self.network.connect(router)
            client.send(GET)
            clients.append(client)
        for connection in self.backend.pending():
            connection.respond()
        self.network.flush()
        self.assertEqual(self.pool(router)["idle"], 1)

    def test_draining_closes_the_idle_connections(self):
        router = self.router()
        self.get(router)
        router.drain(5)
        self.network.flush()
        self.assertTrue(self.backend.connections[0].transport.disconnected)

    def closeTheKeptConnectionOnTheNextRequest(self, router, data):
        self.get(router)
        self.backend.hold = True
        client = self.network.connect(router)
        client.send(data)
        [kept] = self.backend.pending()
        self.backend.hold = False
        kept.transport.loseConnection()
        self.network.flush()
        return client.received()

    def test_a_kept_connection_closed_under_an_idempotent_request_is_replaced(self):
        """
        The node closed the kept connection as the request took it: the
        request goes over a fresh connection to the same node (a lone node
        is not tried "again": the connection failed, not the node).
        """
        router = self.router()
        answer = self.closeTheKeptConnectionOnTheNextRequest(router, GET)
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 OK\r\n"), answer)
        self.assertEqual(len(self.backend.connections), 2)
        events = [e.get("event") for e in self.events]
        self.assertIn("node_keepalive_closed", events)
        self.assertNotIn("backend_closed", events)

    def test_a_post_is_never_sent_twice(self):
        router = self.router()
        post = b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"
        answer = self.closeTheKeptConnectionOnTheNextRequest(router, post)
        self.assertTrue(answer.startswith(b"HTTP/1.1 502 "), answer)
        self.assertEqual(len(self.backend.connections), 2 - 1)

    def test_a_kept_connection_closed_before_its_hand_over_is_replaced(self):
        """
        The node closes the kept connection after a request took it from the
        pool but before it was handed over: a fresh connect takes its place.
        """
        router = self.router()
        self.get(router)
        [kept] = self.backend.connections
        client = self.network.connect(router)
        # The request takes the kept connection, to be handed over once the
        # current events are handled; the node closes it first.
        client.pump.client.transport.write(GET)
        client.pump.pump(advanceClock=False)
        kept.transport.loseConnection()
        for pump in list(self.network._pumps):
            pump.pump(advanceClock=False)
        self.network.flush()
        self.assertTrue(client.received().startswith(b"HTTP/1.1 200 OK\r\n"))
        self.assertEqual(len(self.backend.connections), 2)
        # Replaced before the request was sent: no close under it.
        self.assertNotIn("node_keepalive_closed", [e.get("event") for e in self.events])
