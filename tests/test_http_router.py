"""
The HTTP router against in-memory clients and uwsgi backends.
"""

import os
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from tests.captures import packets
from txrouter.routers.base import DRAIN_SILENT_GRACE
from txrouter.routers.http import HTTPRouter
from txrouter.routing.nodes import parseNode
from txrouter.testing import MemoryNetwork, UwsgiWSGIBackend
from txrouter.wire.uwsgi import PacketParser

NODE_A = "127.0.0.1:3031"
NODE_B = "/run/b.sock"

GET = b"GET /x HTTP/1.1\r\nHost: example.com\r\n\r\n"


def capturedVars(index):
    """
    The vars uWSGI's router sent for captured request C{index}, with the
    ports this test's router uses: listener 8080, and the real client port
    40000 where uWSGI printed it byte-swapped.
    """
    parser = PacketParser()
    ports = {b"SERVER_PORT": b"8080", b"REMOTE_PORT": b"40000"}
    return [
        (k, ports.get(k, v))
        for k, v in parser.feed(packets("httprouter-to-backend.json")[index]).vars
    ]


def statusOf(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def bodyOf(response: bytes) -> bytes:
    return response.partition(b"\r\n\r\n")[2]


class RouterTestCase(SynchronousTestCase):
    """
    A router in front of two in-memory uwsgi backends running the echo app.
    """

    def setUp(self):
        self.network = MemoryNetwork()
        self.backendA = UwsgiWSGIBackend()
        self.backendB = UwsgiWSGIBackend()
        self.network.addBackend(("127.0.0.1", 3031), self.backendA)
        self.network.addBackend("/run/b.sock", self.backendB)
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def router(self, nodes=(NODE_A,), **kwargs):
        kwargs.setdefault("server_name", "vm")
        if "forwarder" in kwargs:
            nodes = ()  # the forwarder finds the nodes
        return HTTPRouter(self.network.reactor, [parseNode(n) for n in nodes], **kwargs)

    def loggedEvents(self):
        return [e.get("event") for e in self.events if "event" in e]

    def request(self, router, data, peer=("127.0.0.1", 40000)):
        client = self.network.connect(router, peer=peer)
        client.send(data)
        return client


class VarsTests(RouterTestCase):
    def test_vars_match_what_uwsgi_sent_for_the_same_request(self):
        """
        The packet is uWSGI's, byte for byte, but for the REMOTE_PORT value
        that uWSGI byte-swaps.
        """
        router = self.router(http_vars=[("FOO", "bar")])
        self.request(
            router,
            b"GET /a%20b/c?x=1&y=%20 HTTP/1.1\r\nHost: example.com:8081\r\n"
            b"User-Agent: t\r\nX-Dup: 1\r\nX-Dup: 2\r\nAccept-Encoding: gzip\r\n\r\n",
            peer=("127.0.0.1", 40000),
        )
        [(_, _, packet)] = self.backendA.requests
        self.assertEqual(packet.vars, capturedVars(0))
        self.assertEqual((packet.modifier1, packet.modifier2), (0, 0))

    def test_post_vars_and_body_match_uwsgi(self):
        router = self.router(http_vars=[("FOO", "bar")])
        self.request(
            router,
            b"POST /p HTTP/1.0\r\nHost: example.com\r\nContent-Type: text/plain\r\n"
            b"Content-Length: 5\r\n\r\nhello",
        )
        [(_, body, packet)] = self.backendA.requests
        self.assertEqual(packet.vars, capturedVars(1))
        self.assertEqual(body, b"hello")

    def test_spoofing_headers_are_dropped(self):
        router = self.router()
        self.request(
            router,
            b"GET / HTTP/1.1\r\nHost: h\r\nContent_Length: 7\r\nX_Foo: a\r\nX-Foo: b\r\n"
            b"Proxy: http://evil\r\nX-Forwarded-Proto: https\r\n\r\n",
        )
        [(vars, _, _)] = self.backendA.requests
        self.assertNotIn(b"CONTENT_LENGTH", vars)
        self.assertNotIn(b"HTTP_PROXY", vars)
        self.assertNotIn(b"HTTP_X_FORWARDED_PROTO", vars)
        self.assertEqual(vars[b"HTTP_X_FOO"], b"b")

    def test_forwarded_headers_pass_from_trusted_peers(self):
        router = self.router(trust_forwarded_from=["10.0.0.0/8"])
        self.request(
            router, b"GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-Proto: https\r\n\r\n",
            peer=("10.1.2.3", 5000),
        )
        [(vars, _, _)] = self.backendA.requests
        self.assertEqual(vars[b"HTTP_X_FORWARDED_PROTO"], b"https")
        self.assertEqual(vars[b"REMOTE_ADDR"], b"10.1.2.3")

    def test_modifiers(self):
        router = self.router(modifier1=5, modifier2=2)
        self.request(router, GET)
        [(_, _, packet)] = self.backendA.requests
        self.assertEqual((packet.modifier1, packet.modifier2), (5, 2))

    def test_packet_over_buffer_size_gets_431_and_reaches_no_backend(self):
        router = self.router(buffer_size=512)
        client = self.request(router, b"GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + b"a" * 600 + b"\r\n\r\n")
        self.assertEqual(statusOf(client.received()), 431)
        self.assertEqual(self.backendA.requests, [])
        self.assertIn("packet_too_large", self.loggedEvents())


class ExchangeTests(RouterTestCase):
    def test_get_is_relayed_and_connection_closed_without_keepalive(self):
        router = self.router()
        client = self.request(router, GET)
        response = client.received()
        self.assertEqual(statusOf(response), 200)
        self.assertIn(b"PATH_INFO=/x", bodyOf(response))
        self.assertIn(b"Connection: close\r\n", response)
        self.assertTrue(client.closed)

    def test_round_robin_over_nodes(self):
        router = self.router(nodes=(NODE_A, NODE_B))
        for _ in range(4):
            self.request(router, GET)
        self.assertEqual((len(self.backendA.requests), len(self.backendB.requests)), (2, 2))

    def test_keepalive_serves_two_requests_on_one_connection(self):
        router = self.router(keepalive=15)
        client = self.request(router, GET)
        client.send(GET.replace(b"/x", b"/y"))
        responses = client.received()
        self.assertEqual(responses.count(b"HTTP/1.1 200 OK"), 2)
        self.assertFalse(client.closed)
        self.assertEqual(
            [v[b"PATH_INFO"] for v, _, _ in self.backendA.requests], [b"/x", b"/y"]
        )

    def test_pipelined_requests_are_answered_in_order(self):
        router = self.router(keepalive=15)
        client = self.request(
            router, GET + GET.replace(b"/x", b"/y") + GET.replace(b"/x", b"/z")
        )
        paths = [
            line for line in client.received().split(b"\n") if line.startswith(b"PATH_INFO=")
        ]
        self.assertEqual(paths, [b"PATH_INFO=/x", b"PATH_INFO=/y", b"PATH_INFO=/z"])

    def test_pipelined_request_waits_for_the_previous_response(self):
        router = self.router(keepalive=15)
        self.backendA.hold = True
        client = self.request(router, GET + GET.replace(b"/x", b"/y"))
        self.assertEqual(len(self.backendA.pending()), 1)
        self.assertEqual(client.received(), b"")
        self.backendA.pending()[0].respond()
        self.network.flush()
        self.assertEqual(len(self.backendA.pending()), 1)
        self.assertEqual(client.received().count(b"200 OK"), 1)

    def test_pipelined_requests_are_answered_after_a_half_close(self):
        """
        A client that pipelines requests, then half-closes, gets each
        complete one answered in order (as from nginx), then the
        connection is closed; an incomplete one after them is dropped.
        """
        router = self.router(keepalive=15)
        self.backendA.hold = True
        client = self.request(
            router, GET + GET.replace(b"/x", b"/y") + GET.replace(b"/x", b"/z") + b"GET /w HT"
        )
        [session] = router.sessions
        session.readConnectionLost()
        for _ in range(3):
            [pending] = self.backendA.pending()
            pending.respond()
            self.network.flush()
        self.assertEqual(self.backendA.pending(), [])
        paths = [
            line for line in client.received().split(b"\n") if line.startswith(b"PATH_INFO=")
        ]
        self.assertEqual(paths, [b"PATH_INFO=/x", b"PATH_INFO=/y", b"PATH_INFO=/z"])
        self.assertTrue(client.closed)

    def test_pipelined_body_cut_by_a_half_close(self):
        """
        A pipelined request whose body the client's half-close cuts short
        reaches no node: it is dropped with a log line, and the
        connection closed.
        """
        router = self.router(keepalive=15)
        self.backendA.hold = True
        client = self.request(
            router, GET + b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc"
        )
        [session] = router.sessions
        session.readConnectionLost()
        [pending] = self.backendA.pending()
        pending.respond()
        self.network.flush()
        self.assertEqual(len(self.backendA.requests), 1)
        self.assertEqual(client.received().count(b"HTTP/1.1 "), 1)
        self.assertIn("client_body_truncated", self.loggedEvents())
        self.assertTrue(client.closed)

    def test_no_request_is_read_once_the_connection_is_closing(self):
        """
        A node may answer before it has read the body, and the router
        then closes the client's connection, the rest of the body unread.
        Client bytes the reactor still hands over (a read event of the
        same poll) are dropped, never parsed as a next request: that
        would run a request hidden in a body (request smuggling).
        """
        class Early(Protocol):
            def dataReceived(self, data):
                requests.append(data)
                self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                self.transport.loseConnection()

        requests = []
        self.network.addBackend(("127.0.0.1", 3050), ServerFactory.forProtocol(Early))
        router = self.router(nodes=("http://127.0.0.1:3050",), keepalive=15)
        client = self.network.connect(router)
        [session] = router.sessions
        client.send(b"POST /early HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\nabc")
        self.assertTrue(client.received().endswith(b"ok"))
        session.dataReceived(b"GET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n")
        self.network.flush()
        self.assertEqual(len(requests), 1)
        self.assertNotIn(b"smuggled", b"".join(requests))

    def test_bytes_past_the_response_end_are_never_relayed(self):
        def liar(environ, start_response):
            start_response("200 OK", [("Content-Length", "2")])
            return [b"okHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nforged"]

        self.backendA.application = liar
        router = self.router(keepalive=15)
        client = self.request(router, GET)
        client.send(GET)
        received = client.received()
        self.assertNotIn(b"forged", received)
        self.assertEqual(received.count(b"HTTP/1.1 200 OK"), 1)
        self.assertIn("response_surplus", self.loggedEvents())
        # Known before the head went out: it says the close that follows.
        self.assertIn(b"\r\nConnection: close\r\n", received)
        self.assertTrue(client.closed)

    def test_content_length_body_is_streamed(self):
        router = self.router()
        client = self.network.connect(router)
        client.send(b"PUT /u HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n01234")
        self.assertEqual(self.backendA.requests, [])
        client.send(b"56789")
        [(vars, body, _)] = self.backendA.requests
        self.assertEqual((vars[b"CONTENT_LENGTH"], body), (b"10", b"0123456789"))

    def test_chunked_body_is_dechunked_with_content_length(self):
        router = self.router()
        client = self.request(
            router,
            b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n",
        )
        [(vars, body, _)] = self.backendA.requests
        self.assertEqual((vars[b"CONTENT_LENGTH"], body), (b"11", b"hello world"))
        self.assertNotIn(b"HTTP_TRANSFER_ENCODING", vars)
        self.assertEqual(statusOf(client.received()), 200)

    def test_chunked_input_passes_the_chunks_through(self):
        router = self.router(chunked_input=True)
        self.backendA.hold = True
        self.request(
            router,
            b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        )
        [connection] = self.backendA.connections
        self.assertEqual(connection._packet.get(b"HTTP_TRANSFER_ENCODING"), b"chunked")
        self.assertIsNone(connection._packet.get(b"CONTENT_LENGTH"))

    def test_expect_continue_is_answered(self):
        router = self.router()
        client = self.request(
            router, b"PUT /u HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n"
        )
        self.assertEqual(client.received(), b"HTTP/1.1 100 Continue\r\n\r\n")
        client.send(b"ok")
        self.assertEqual(self.backendA.requests[0][1], b"ok")

    def test_limit_post(self):
        router = self.router(limit_post=10)
        client = self.request(
            router, b"PUT /u HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n"
        )
        self.assertEqual(statusOf(client.received()), 413)
        self.assertEqual(self.backendA.connections, [])


class ErrorTests(RouterTestCase):
    def test_smuggling_attempt_gets_400_and_reaches_no_backend(self):
        router = self.router()
        client = self.request(
            router,
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"0\r\n\r\nGET /admin HTTP/1.1\r\nHost: h\r\n\r\n",
        )
        response = client.received()
        self.assertEqual(statusOf(response), 400)
        self.assertIn(b"Connection: close", response)
        self.assertTrue(client.closed)
        self.assertEqual(self.backendA.connections, [])

    def test_silent_errors_close_without_a_byte(self):
        router = self.router(silent_errors=True)
        client = self.request(router, b"GET /\r\n\r\n")
        self.assertEqual(client.received(), b"")
        self.assertTrue(client.closed)

    def test_unreachable_nodes_get_502_after_the_retries(self):
        router = self.router(nodes=("127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3", "127.0.0.1:4", "127.0.0.1:5"))
        client = self.request(router, GET)
        self.assertEqual(statusOf(client.received()), 502)
        self.assertEqual(self.loggedEvents().count("backend_unreachable"), 5)

    def test_a_lone_node_that_failed_is_still_tried_by_the_next_requests(self):
        """
        One failed connect does not quarantine the only node (nginx's
        rule): every request tries it, once.
        """
        router = self.router(nodes=("127.0.0.1:1",), max_retries=3, gracetime=30)
        self.assertEqual(statusOf(self.request(router, GET).received()), 502)
        self.assertEqual(statusOf(self.request(router, GET).received()), 502)
        # Per request, one failed connect and the refusal: the node was
        # tried once by each (a request never tries a node twice).
        self.assertEqual(self.loggedEvents().count("backend_unreachable"), 4)

    def test_in_cheap_mode_all_nodes_dead_gets_503_until_gracetime_passes(self):
        router = self.router(nodes=("127.0.0.1:1",), max_retries=0, gracetime=30)
        router.forwarder.watchAvailability(lambda available: None)
        self.assertEqual(statusOf(self.request(router, GET).received()), 502)
        self.assertEqual(statusOf(self.request(router, GET).received()), 503)
        self.network.reactor.advance(30)
        self.assertEqual(statusOf(self.request(router, GET).received()), 502)

    def test_a_failed_node_is_retried_on_the_next_one(self):
        router = self.router(nodes=("127.0.0.1:1", NODE_A))
        client = self.request(router, GET)
        self.assertEqual(statusOf(client.received()), 200)

    def test_fallback(self):
        router = self.router(nodes=("127.0.0.1:1",), fallback=[parseNode(NODE_B)])
        self.assertEqual(statusOf(self.request(router, GET).received()), 200)
        self.assertEqual(len(self.backendB.requests), 1)

    def test_head_timeout_gets_408(self):
        router = self.router(headers_timeout=5)
        client = self.request(router, b"GET / HTTP/1.1\r\nHost:")
        self.network.reactor.advance(4)
        client.send(b" h\r\n")
        self.network.reactor.advance(1.1)
        self.network.flush()
        self.assertEqual(statusOf(client.received()), 408)

    def test_an_idle_keepalive_connection_closes_after_the_keepalive_timeout(self):
        """
        Between requests the client has C{--keepalive} seconds to send the
        next head, counted from the end of the last response: the deadline
        of a head that came in time does not carry over.
        """
        router = self.router(keepalive=15, headers_timeout=5)
        client = self.request(router, GET)
        self.network.reactor.advance(14)
        self.network.flush()
        self.assertFalse(client.closed)
        client.send(GET)
        self.network.reactor.advance(14)
        self.network.flush()
        self.assertEqual(client.received().count(b"HTTP/1.1 200 OK"), 2)
        self.assertFalse(client.closed)
        self.network.reactor.advance(1.1)
        self.network.flush()
        self.assertTrue(client.closed)

    def test_backend_that_does_not_answer_gets_504(self):
        """
        504, and a warning that says what a node that never answers a uwsgi
        request usually is: a plain HTTP server, to be named http://.
        """
        router = self.router(timeout=10)
        self.backendA.hold = True
        client = self.request(router, GET)
        self.network.reactor.advance(10.1)
        self.network.flush()
        self.assertEqual(statusOf(client.received()), 504)
        [warning] = [e for e in self.events if e.get("log_format", "").startswith("backend_timeout")]
        self.assertIn("http://{node}", warning["log_format"])
        self.assertEqual(warning["node"], NODE_A)

    def test_harakiri(self):
        router = self.router(harakiri=3)
        self.backendA.hold = True
        client = self.request(router, GET)
        for _ in range(4):
            self.network.reactor.advance(1)
        self.network.flush()
        self.assertEqual(statusOf(client.received()), 504)

    def test_backend_closing_without_answer_gets_502(self):
        self.backendA.hold = True
        router = self.router()
        client = self.request(router, GET)
        connection = self.backendA.pending()[0]
        connection.transport.loseConnection()
        self.network.flush()
        self.assertEqual(statusOf(client.received()), 502)
        self.assertIn("backend_closed", self.loggedEvents())
        [closed] = [e for e in self.events if e.get("event") == "backend_closed" and "hint" in e]
        # What a uWSGI --http-socket does with a uwsgi packet: a hint.
        self.assertIn("as uWSGI's --http-socket does, name it http://127.0.0.1:3031",
                      formatEvent(closed))

    def test_a_response_with_both_content_length_and_transfer_encoding_gets_502(self):
        """
        Relayed, such a response would be read one way by a cache in front
        and another by the client (response smuggling): it is refused, as
        nginx does, and neither header reaches the client.
        """

        def ambiguous(environ, start_response):
            start_response("200 OK", [("Content-Length", "5"), ("Transfer-Encoding", "chunked")])
            return [b"0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged"]

        self.backendA.application = ambiguous
        client = self.request(self.router(keepalive=15), GET)
        response = client.received()
        self.assertEqual(statusOf(response), 502)
        self.assertNotIn(b"Transfer-Encoding", response)
        self.assertNotIn(b"forged", response)
        self.assertTrue(client.closed)
        self.assertIn("response_cl_te", self.loggedEvents())

    def test_a_response_head_over_max_response_head_size_gets_502(self):
        """
        100 KB of response headers are not relayed (the default limit is
        64 KiB, as for requests); a larger limit lets them through.
        """

        def bloated(environ, start_response):
            start_response("200 OK", [("X-Big-%d" % i, "a" * 1000) for i in range(100)])
            return [b"ok"]

        self.backendA.application = bloated
        client = self.request(self.router(), GET)
        response = client.received()
        self.assertEqual(statusOf(response), 502)
        self.assertNotIn(b"X-Big", response)
        self.assertIn("response_head_too_large", self.loggedEvents())

        client = self.request(self.router(max_response_head_size=200000), GET)
        self.assertEqual(statusOf(client.received()), 200)

    def test_client_going_away_cuts_the_backend_connection(self):
        router = self.router()
        self.backendA.hold = True
        client = self.request(router, GET)
        [connection] = self.backendA.connections
        client.close()
        self.assertTrue(connection.transport.disconnected or connection.transport.disconnecting)
        self.assertEqual(router.sessions, set())


class MisdirectedTests(RouterTestCase):
    """
    Bytes that cannot begin a request are refused as they arrive, not when
    the head deadline passes.
    """

    def test_a_tls_client_is_closed_at_once_without_an_http_answer(self):
        client = self.request(self.router(), bytes.fromhex("160301020001000100fc0303") + b"\x8a" * 32)
        self.assertEqual(client.received(), b"")
        self.assertTrue(client.closed)
        self.assertIn("tls_on_http_port", self.loggedEvents())
        self.assertEqual(self.backendA.connections, [])

    def test_a_uwsgi_packet_gets_400_at_once(self):
        client = self.request(self.router(), b"\x00\x2a\x00\x00\x0e\x00REQUEST_METHOD\x03\x00GET")
        self.assertEqual(statusOf(client.received()), 400)
        self.assertTrue(client.closed)
        self.assertIn("uwsgi_on_http_port", self.loggedEvents())

    def test_bytes_that_cannot_begin_a_method_get_400_at_once(self):
        for garbage in (b"G@T", b"{\"json\": 1}", b"A" * 33):
            client = self.request(self.router(), garbage)
            self.assertEqual(statusOf(client.received()), 400, garbage)
            self.assertTrue(client.closed, garbage)
        self.assertNotIn("headers_timeout", self.loggedEvents())

    def test_a_request_line_on_its_way_is_waited_for(self):
        client = self.request(self.router(), b"GET /x HTTP/1.")
        self.assertEqual(client.received(), b"")
        client.send(b"1\r\nHost: h\r\n\r\n")
        self.assertEqual(statusOf(client.received()), 200)


class DrainTests(RouterTestCase):
    def test_drain_finishes_in_flight_and_closes_idle(self):
        router = self.router(keepalive=15)
        idle = self.request(router, GET)
        self.backendA.hold = True
        busy = self.request(router, GET)
        drained = router.drain(30)
        self.network.flush()
        self.assertTrue(idle.closed)
        self.assertFalse(busy.closed)
        self.assertNoResult(drained)
        self.backendA.pending()[0].respond()
        self.network.flush()
        self.assertEqual(statusOf(busy.received()), 200)
        self.assertTrue(busy.closed)
        self.successResultOf(drained)

    def test_a_request_sent_as_the_drain_begins_is_answered(self):
        """
        A connection accepted before the drain, whose request arrives just
        after it began, is answered (saying C{Connection: close}) and then
        closed, not cut: its client sent the request before it could know.
        """
        router = self.router(keepalive=15)
        fresh = self.network.connect(router)
        drained = router.drain(30)
        self.network.flush()
        self.assertFalse(fresh.closed)
        self.network.reactor.advance(DRAIN_SILENT_GRACE - 0.5)
        fresh.send(GET)
        response = fresh.received()
        self.assertEqual(statusOf(response), 200)
        self.assertIn(b"\r\nConnection: close\r\n", response.partition(b"\r\n\r\n")[0] + b"\r\n")
        self.assertTrue(fresh.closed)
        self.successResultOf(drained)

    def test_a_head_under_way_as_the_drain_begins_is_answered(self):
        router = self.router(keepalive=15)
        served = self.request(router, GET)
        served.send(GET[:10])
        drained = router.drain(30)
        self.network.flush()
        self.network.reactor.advance(DRAIN_SILENT_GRACE + 1)
        self.assertFalse(served.closed)
        served.send(GET[10:])
        self.assertEqual(served.received().count(b"HTTP/1.1 200 OK\r\n"), 2)
        self.assertTrue(served.closed)
        self.successResultOf(drained)

    def test_a_connection_silent_through_the_grace_is_closed(self):
        router = self.router()
        silent = self.network.connect(router)
        drained = router.drain(30)
        self.network.reactor.advance(DRAIN_SILENT_GRACE)
        self.network.flush()
        self.assertTrue(silent.closed)
        self.assertEqual(silent.received(), b"")
        self.successResultOf(drained)
        self.assertEqual(self.network.reactor.getDelayedCalls(), [])

    def test_drain_deadline_aborts_the_rest(self):
        router = self.router()
        self.backendA.hold = True
        self.request(router, GET)
        drained = router.drain(5)
        self.network.reactor.advance(5)
        self.network.flush()
        self.successResultOf(drained)


class _TunnelBackend(ServerFactory):
    """
    Answers 101 to the packet, then echoes every byte upper-cased.
    """

    def buildProtocol(self, addr):
        factory = self

        class Tunnel(Protocol):
            def connectionMade(self):
                self.parser = PacketParser()
                self.open = False
                factory.protocol = self

            def dataReceived(self, data):
                if not self.open:
                    if self.parser.feed(data) is None:
                        return
                    self.open = True
                    self.transport.write(
                        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                        b"Connection: Upgrade\r\n\r\n"
                    )
                    data = self.parser.leftover
                if data:
                    self.transport.write(data.upper())

        return Tunnel()


class _SplitResponseBackend(ServerFactory):
    """
    Answers each packet with the head and half of a 10-byte body, and the
    rest when L{finish} is called.
    """

    protocol = None

    def buildProtocol(self, addr):
        factory = self

        class Split(Protocol):
            def connectionMade(self):
                factory.protocol = self
                self.parser = PacketParser()

            def dataReceived(self, data):
                if self.parser is not None and self.parser.feed(data) is not None:
                    self.parser = None
                    self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n01234")

            def finish(self):
                self.transport.write(b"56789")

        return Split()


class MoreExchangeTests(RouterTestCase):
    def test_101_opens_a_tunnel_both_ways(self):
        backend = _TunnelBackend()
        self.network.addBackend(("127.0.0.1", 3031), backend)
        router = self.router()
        client = self.request(
            router,
            b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nhello",
        )
        client.send(b" again")
        received = client.received()
        self.assertTrue(received.startswith(b"HTTP/1.1 101 Switching Protocols\r\n"))
        self.assertTrue(received.endswith(b"\r\n\r\nHELLO AGAIN"))
        self.assertNotIn(b"Connection: close", received)

    def openTunnel(self, **options):
        backend = _TunnelBackend()
        self.network.addBackend(("127.0.0.1", 3031), backend)
        router = self.router(**options)
        client = self.request(
            router,
            b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        )
        self.assertTrue(client.received().startswith(b"HTTP/1.1 101 "))
        return router, client, backend.protocol

    def test_a_tunnel_lives_while_either_side_sends(self):
        """
        A tunnel is idle only when neither side sends: a node that pushes to
        a silent client keeps it open past C{--websocket-timeout}, and
        neither C{--harakiri} nor the body deadlines end it.
        """
        router, client, node = self.openTunnel(timeout=60, websocket_timeout=10, harakiri=5)
        for _ in range(5):
            self.network.reactor.advance(8)
            node.transport.write(b"ping")
            self.network.flush()
        self.assertFalse(client.closed)
        self.assertTrue(client.received().endswith(b"ping" * 5))
        client.send(b"up")
        self.network.reactor.advance(8)
        self.network.flush()
        self.assertFalse(client.closed)
        self.network.reactor.advance(2.1)
        self.network.flush()
        self.assertTrue(client.closed)
        self.assertIn("tunnel_closed", self.loggedEvents())
        self.assertNotIn("response_truncated", self.loggedEvents())

    def test_tunnels_are_counted_in_the_stats(self):
        router, client, node = self.openTunnel()
        self.assertIn(("tunnels", {"open": 1, "opened": 1}), router.statsFields())
        node.transport.loseConnection()
        self.network.flush()
        self.assertTrue(client.closed)
        self.assertIn(("tunnels", {"open": 0, "opened": 1}), router.statsFields())

    def test_a_response_that_comes_in_parts_is_paced_by_the_client(self):
        """
        While a response is being relayed, the client's connection is the
        producer of the node's (a slow client pauses the node); a response
        that arrives whole is relayed without that set-up.
        """
        backend = _SplitResponseBackend()
        self.network.addBackend(("127.0.0.1", 3031), backend)
        self.network.addBackend(("127.0.0.1", 3032), UwsgiWSGIBackend())
        router = self.router(nodes=("127.0.0.1:3031", "127.0.0.1:3032"), keepalive=5)
        client = self.request(router, GET)
        [session] = router.sessions
        self.assertIs(session.transport.producer, session.exchange.relay.upstream.transport)
        backend.protocol.finish()
        self.network.flush()
        self.assertTrue(client.received().endswith(b"\r\n\r\n0123456789"))
        self.assertIsNone(session.transport.producer)

        registered = []
        self.patch(session.transport, "registerProducer", lambda *a: registered.append(a))
        client.send(GET)
        self.assertEqual(client.received().count(b"HTTP/1.1 200 OK"), 2)
        self.assertEqual(registered, [])

    def test_101_without_upgrade_request_is_a_bad_response(self):
        backend = _TunnelBackend()
        self.network.addBackend(("127.0.0.1", 3031), backend)
        client = self.request(self.router(), GET)
        self.assertEqual(statusOf(client.received()), 502)

    def test_no_100_continue_before_a_431(self):
        router = self.router(buffer_size=300)
        client = self.request(
            router,
            b"PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nExpect: 100-continue\r\nX: "
            + b"a" * 400 + b"\r\n\r\n",
        )
        self.assertTrue(client.received().startswith(b"HTTP/1.1 431 "))

    def test_the_access_log_counts_the_body_bytes_sent(self):
        """
        An access log line's size is the response body's (nginx's
        C{$body_bytes_sent}), not the head's.
        """
        lines = []

        class Log:
            def log(self, addr, head, status, size):
                lines.append((status, size))

        router = self.router(access_log=Log(), keepalive=5)
        client = self.request(router, GET)
        self.assertEqual(lines, [(200, len(bodyOf(client.received())))])

    def test_abandoned_request_is_logged_499(self):
        lines = []

        class Log:
            def log(self, addr, head, status, size):
                lines.append((head.path, status))

        router = self.router(access_log=Log())
        self.backendA.hold = True
        client = self.request(router, GET)
        client.close()
        self.request(router, GET.replace(b"/x", b"/bad") + b"\x00")
        self.assertEqual(lines, [(b"/x", 499)])


class ForwarderAndPostBufferingTests(RouterTestCase):
    def test_a_connect_given_up_is_reported_to_the_forwarder(self):
        """
        A client that leaves while its node is being connected to stops the
        connect, and the forwarder hears the pick was abandoned (balancers
        counting picks in flight would otherwise count it).
        """
        from twisted.internet.testing import MemoryReactorClock, StringTransport

        from txrouter.routing.static import StaticForwarder

        reports = []

        class Recording(StaticForwarder):
            def abandoned(self, key, node):
                reports.append(("abandoned", key, node.name))

            def released(self, key, node):
                reports.append(("released", key, node.name))

        reactor = MemoryReactorClock()
        nodes = [parseNode(NODE_A)]
        router = HTTPRouter(reactor, forwarder=Recording(nodes, clock=reactor))
        protocol = router.buildProtocol(None)
        protocol.makeConnection(StringTransport())
        protocol.dataReceived(GET)
        [connector] = reactor.connectors
        connector.factory = reactor.tcpClients[0][2]  # as a real connector has
        protocol.connectionLost(None)
        self.assertEqual(reports, [("abandoned", b"example.com", NODE_A)])
        self.assertTrue(connector.stoppedConnecting)

    def test_pattern_forwarder_routes_by_host(self):
        from txrouter.routing.paths import PathForwarder

        self.network.addBackend("/run/apps/a.local.sock", self.backendB)
        router = self.router(forwarder=PathForwarder("/run/apps/%s.sock"))
        client = self.network.connect(router)
        client.send(b"GET / HTTP/1.1\r\nHost: a.local\r\n\r\n")
        self.assertEqual(statusOf(client.received()), 200)
        self.assertEqual(len(self.backendB.requests), 1)
        client = self.network.connect(router)
        client.send(b"GET / HTTP/1.1\r\nHost: ..\r\n\r\n")
        self.assertEqual(statusOf(client.received()), 404)

    def test_cache_forwarder_with_fallback_on_no_key(self):
        from txrouter.routing.cache import CacheForwarder, InMemoryStore

        router = self.router(
            forwarder=CacheForwarder(InMemoryStore({"a.local": "/run/b.sock"})),
            fallback=[parseNode(NODE_A)], fallback_on_no_key=True,
        )
        for host, backend in ((b"a.local", self.backendB), (b"other", self.backendA)):
            client = self.network.connect(router)
            client.send(b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
            self.assertEqual(statusOf(client.received()), 200)
            self.assertEqual(len(backend.requests), 1)

    def test_post_buffering_connects_after_the_whole_body(self):
        router = self.router(post_buffering=1000)
        client = self.network.connect(router)
        body = b"z" * 5000
        client.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n" + body[:4000])
        self.assertEqual(self.backendA.connections, [])
        client.send(body[4000:])
        self.assertEqual(self.backendA.requests[-1][1], body)
        self.assertEqual(statusOf(client.received()), 200)

    def test_spool_directories_are_checked_when_the_router_is_built(self):
        missing = self.mktemp()
        for option in ("spool_dir", "post_buffering_dir"):
            with self.assertRaises(ValueError) as raised:
                self.router(post_buffering=10, **{option: missing})
            self.assertIn(option, str(raised.exception))

    def test_a_body_that_cannot_be_stored_is_a_503_with_an_error_line(self):
        """
        The spool directory vanished, or the disk is full: the request gets
        a 503 (no node is connected), the operator an error line naming the
        directory; the next request, with room again, goes through.
        """
        import tempfile

        directory = self.mktemp()
        os.mkdir(directory)
        post = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n" + b"z" * 5000
        chunked = (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                   b"1388\r\n" + b"z" * 5000 + b"\r\n0\r\n\r\n")
        for options, request in [
            (dict(post_buffering=10, post_buffering_dir=directory), post),
            (dict(spool_memory=10, spool_dir=directory), chunked),
        ]:
            router = self.router(**options)
            os.rmdir(directory)
            connections = len(self.backendA.connections)
            client = self.network.connect(router)
            client.send(request)
            self.assertEqual(statusOf(client.received()), 503)
            # The router cannot know the whole body came: it lingers over
            # the rest until the client closes.
            self.assertFalse(client.closed)
            client.close()
            self.assertEqual(router.sessions, set())
            self.assertEqual(len(self.backendA.connections), connections)
            [line] = [e for e in self.events if e.get("event") == "spool_failed" and e["log_level"].name == "error"]
            self.assertIn(directory, line["error"])
            self.events.clear()
            os.mkdir(directory)
            client = self.network.connect(router)
            client.send(request)
            self.assertEqual(statusOf(client.received()), 200)
            self.assertEqual(self.backendA.requests[-1][1], b"z" * 5000)

        self.patch(tempfile, "TemporaryFile", lambda dir=None: open("/dev/full", "w+b"))
        client = self.network.connect(self.router(post_buffering=10))
        client.send(post)
        self.assertEqual(statusOf(client.received()), 503)
        self.assertIn("No space left", [e for e in self.events if e.get("event") == "spool_failed"][0]["error"])

    def test_post_buffering_temporary_file_is_closed_when_the_client_leaves(self):
        import os

        before = len(os.listdir("/proc/self/fd"))
        router = self.router(post_buffering=10)
        client = self.network.connect(router)
        client.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n" + b"z" * 4000)
        self.assertEqual(len(os.listdir("/proc/self/fd")), before + 1)
        client.close()
        self.assertEqual(len(os.listdir("/proc/self/fd")), before)


class ClientAddressTests(RouterTestCase):
    def test_forwarders_get_the_client_address_as_text(self):
        """
        Both routers hand a forwarder the client's IP address as text, so
        that iphash sends one client to one node, the same node for the
        same address whichever router it came through.
        """
        from txrouter.routers.fast import FastRouter
        from txrouter.routing.balancing import IPHash
        from txrouter.routing.static import StaticForwarder
        from txrouter.wire.uwsgi import encodePacket

        seen = []

        class Recording(StaticForwarder):
            def pick(self, key=None, client=None):
                seen.append(client)
                return StaticForwarder.pick(self, key, client)

        nodes = [parseNode(NODE_A), parseNode(NODE_B)]
        http = self.router(forwarder=Recording(nodes, self.network.reactor))
        fast = FastRouter(self.network.reactor, forwarder=Recording(nodes, self.network.reactor))
        self.request(http, GET, peer=("10.1.2.3", 40000))
        self.request(fast, encodePacket([(b"HTTP_HOST", b"h")]), peer=("10.1.2.3", 40001))
        self.assertEqual(seen, ["10.1.2.3", "10.1.2.3"])
        self.assertNotEqual(IPHash.hash(seen[0]), 0)


class LingerTests(RouterTestCase):
    """
    A refusal while the client may still be sending its body is answered,
    then the router half-closes and drops what still comes, so that the
    client reads the answer instead of a connection reset.
    """

    def refusedUpload(self):
        router = self.router(limit_post=10)
        client = self.request(
            router, b"PUT /u HTTP/1.1\r\nHost: h\r\nContent-Length: 100000\r\n\r\n" + b"a" * 1000,
        )
        self.assertEqual(statusOf(client.received()), 413)
        return router, client

    def test_the_rest_of_a_refused_body_is_dropped_until_the_client_closes(self):
        router, client = self.refusedUpload()
        client.send(b"a" * 5000)
        self.assertFalse(client.closed)
        self.assertEqual(statusOf(client.received()), 413)
        self.assertEqual(client.received().count(b"HTTP/1.1"), 1)
        client.close()
        self.assertEqual(router.sessions, set())
        self.assertEqual(self.backendA.connections, [])

    def test_lingering_is_bounded(self):
        """
        Silence for LINGER_IDLE seconds, or LINGER_TOTAL seconds in all,
        ends it.
        """
        from txrouter.limits import LINGER_IDLE, LINGER_TOTAL

        router, client = self.refusedUpload()
        self.network.reactor.advance(LINGER_IDLE)
        self.network.flush()
        self.assertTrue(client.closed)
        router, client = self.refusedUpload()
        for _ in range(int(LINGER_TOTAL / (LINGER_IDLE - 1)) + 1):
            client.send(b"a")
            self.network.reactor.advance(LINGER_IDLE - 1)
            self.network.flush()
        self.assertTrue(client.closed)

    def test_lingering_after_an_early_answer(self):
        """
        A node may answer an upload before reading it whole (and close):
        the router then lingers over the rest of the body as after a
        refusal, so that the client reads the answer rather than a reset.
        """
        from txrouter.limits import LINGER_IDLE

        class Early(Protocol):
            def dataReceived(self, data):
                self.transport.write(b"HTTP/1.1 413 Too Big\r\nContent-Length: 3\r\n\r\nbig")
                self.transport.loseConnection()

        self.network.addBackend(("127.0.0.1", 3050), ServerFactory.forProtocol(Early))
        router = self.router(nodes=("http://127.0.0.1:3050",), keepalive=15)
        client = self.request(
            router, b"PUT /u HTTP/1.1\r\nHost: h\r\nContent-Length: 100000\r\n\r\n" + b"a" * 1000,
        )
        self.assertTrue(client.received().endswith(b"\r\n\r\nbig"))
        self.assertFalse(client.closed)
        client.send(b"a" * 5000)
        self.assertEqual(client.received().count(b"HTTP/1.1"), 1)
        self.network.reactor.advance(LINGER_IDLE)
        self.network.flush()
        self.assertTrue(client.closed)

    def test_an_early_answer_says_connection_close(self):
        """
        The router closes after an answer that came before the body was
        read whole: the answer says so (C{Connection: close}), whether the
        node speaks HTTP or uwsgi, so that a keep-alive client sends no
        next request into a closing connection.
        """
        class Early(Protocol):
            def dataReceived(self, data):
                self.transport.write(b"HTTP/1.1 413 Too Big\r\nContent-Length: 3\r\n\r\nbig")
                self.transport.loseConnection()

        self.network.addBackend(("127.0.0.1", 3050), ServerFactory.forProtocol(Early))
        for node in ("http://127.0.0.1:3050", "127.0.0.1:3050"):
            router = self.router(nodes=(node,), keepalive=15)
            client = self.request(
                router, b"PUT /u HTTP/1.1\r\nHost: h\r\nContent-Length: 100000\r\n\r\n" + b"a" * 1000,
            )
            head, _, body = client.received().partition(b"\r\n\r\n")
            self.assertEqual(body, b"big")
            self.assertEqual(head.lower().count(b"\r\nconnection: close"), 1, (node, head))

    def test_no_half_close_under_tls(self):
        """
        Over TLS the lingering connection is not half-closed (the TCP
        socket's half-close would cut the TLS stream under the answer,
        which the client then never reads); it is closed, with
        C{close_notify}, once the client closes or the deadlines pass.
        """
        from twisted.internet.interfaces import ISSLTransport
        from twisted.internet.testing import StringTransport
        from zope.interface import implementer

        from txrouter.limits import LINGER_IDLE
        from txrouter.routers.linger import Lingering

        class HalfCloseable(StringTransport):
            halfClosed = False

            def loseWriteConnection(self):
                self.halfClosed = True

        @implementer(ISSLTransport)
        class TLS(HalfCloseable):
            pass

        plain, tls = HalfCloseable(), TLS()
        Lingering(self.network.reactor, plain)
        lingering = Lingering(self.network.reactor, tls)
        self.assertTrue(plain.halfClosed)
        self.assertFalse(tls.halfClosed or tls.disconnecting)
        lingering.dataReceived()
        self.network.reactor.advance(LINGER_IDLE)
        self.assertTrue(tls.disconnecting)

    def test_no_lingering_without_a_body_or_when_silent(self):
        router = self.router(nodes=("127.0.0.1:9",))
        client = self.request(router, GET)
        self.assertEqual(statusOf(client.received()), 502)
        self.assertTrue(client.closed)
        router = self.router(limit_post=10, silent_errors=True)
        client = self.request(
            router, b"PUT /u HTTP/1.1\r\nHost: h\r\nContent-Length: 100000\r\n\r\naaa",
        )
        self.assertEqual(client.received(), b"")
        self.assertTrue(client.closed)


class SlowBodyTests(RouterTestCase):
    """
    A body drip-fed a byte at a time, each within the idle timeout, is cut
    once it falls below --min-body-rate; one that keeps up passes.
    """

    PUT = b"PUT /u HTTP/1.1\r\nHost: h\r\nContent-Length: 4000\r\n\r\n"

    def drip(self, router, chunk: bytes, every: float, seconds: float):
        client = self.request(router, self.PUT)
        for _ in range(int(seconds / every)):
            if client.received():
                break
            self.network.reactor.advance(every)
            client.send(chunk)
        return client

    def test_a_drip_fed_body_is_cut_with_408(self):
        router = self.router(body_timeout=10)
        client = self.drip(router, b"a", 2, 30)
        self.assertEqual(statusOf(client.received()), 408)
        self.assertIn("body_too_slow", self.loggedEvents())
        # Cut soon after the first 10 seconds, not at the end of the drip.
        self.assertLessEqual(self.network.reactor.seconds(), 14)

    def test_a_body_that_keeps_up_passes(self):
        router = self.router(min_body_rate=100, body_timeout=10)
        client = self.drip(router, b"a" * 400, 2, 20)
        self.assertEqual(statusOf(client.received()), 200)
        self.assertEqual(self.backendA.requests[-1][1], b"a" * 4000)

    def test_zero_turns_the_minimum_off_leaving_the_idle_timeout(self):
        router = self.router(body_timeout=10, min_body_rate=0)
        client = self.drip(router, b"a", 2, 30)
        self.assertEqual(client.received(), b"")
        self.assertFalse(client.closed)


class _ClosingBackend(ServerFactory):
    """
    A node that reads a request and closes, after writing C{answer}.
    """

    def __init__(self, answer: bytes = b"") -> None:
        self.answer = answer
        self.received = []

    def buildProtocol(self, addr):
        factory = self

        class Closing(Protocol):
            def dataReceived(self, data):
                factory.received.append(data)
                self.transport.write(factory.answer)
                self.transport.loseConnection()

        return Closing()


class RetryAfterCloseTests(RouterTestCase):
    """
    nginx's rule: a request with an idempotent method and an empty (or
    spooled) body goes to the next node when its node closes before any
    byte of a response; never a POST, never after a response byte.
    """

    def setUp(self):
        super().setUp()
        self.closing = _ClosingBackend()
        self.network.addBackend(("127.0.0.1", 3039), self.closing)

    def router(self, **kwargs):
        return super().router(nodes=("127.0.0.1:3039", NODE_A), **kwargs)

    def test_an_idempotent_request_goes_to_the_next_node(self):
        for method in (b"GET", b"HEAD", b"PUT", b"DELETE", b"OPTIONS"):
            self.backendA.requests.clear()
            client = self.request(self.router(), GET.replace(b"GET", method))
            self.assertEqual(statusOf(client.received()), 200, method)
            self.assertEqual(len(self.backendA.requests), 1, method)
        self.assertEqual(len(self.closing.received), 5)
        self.assertIn("backend_closed", self.loggedEvents())

    def test_retries_are_counted_in_the_stats(self):
        """
        The stats' C{retries} count the requests sent on to another node,
        by cause.
        """
        router = self.router()
        self.request(router, GET)
        self.request(router, GET.replace(b"GET", b"POST"))
        (key, counts) = router.statsFields()[0]
        self.assertEqual(key, "retries")
        self.assertEqual(counts, {"connect_failed": 0, "node_closed": 1, "node_busy": 0})
        unreachable = super().router(nodes=("127.0.0.1:9", NODE_A))
        self.request(unreachable, GET.replace(b"GET", b"POST"))
        self.assertEqual(unreachable.statsFields()[0][1]["connect_failed"], 1)

    def test_a_spooled_body_is_sent_again(self):
        put = b"PUT /u HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nbody"
        client = self.request(self.router(post_buffering=1024), put)
        self.assertEqual(statusOf(client.received()), 200)
        self.assertEqual(self.backendA.requests[-1][1], b"body")

    def test_never_a_post_nor_a_streamed_body(self):
        post = b"POST /u HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nbody"
        put = post.replace(b"POST", b"PUT")
        for request in (GET.replace(b"GET", b"POST"), post, put):
            client = self.request(self.router(), request)
            self.assertEqual(statusOf(client.received()), 502, request)
        self.assertEqual(self.backendA.requests, [])

    def test_never_after_a_response_byte(self):
        self.closing.answer = b"HTTP/1.1 200 OK\r\n"
        client = self.request(self.router(), GET)
        self.assertEqual(statusOf(client.received()), 502)
        self.assertEqual(self.backendA.requests, [])

    def test_the_methods_are_an_option(self):
        client = self.request(self.router(retry_methods=["HEAD"]), GET)
        self.assertEqual(statusOf(client.received()), 502)
        client = self.request(self.router(retry_methods=["GET", "POST"]),
                              GET.replace(b"GET", b"POST"))
        self.assertEqual(statusOf(client.received()), 200)

    def test_the_fastrouter_follows_the_same_rule(self):
        from txrouter.routers.fast import FastRouter
        from txrouter.wire.uwsgi import encodePacket

        for method, status in ((b"GET", 200), (b"POST", 502)):
            router = FastRouter(
                self.network.reactor, [parseNode("127.0.0.1:3039"), parseNode(NODE_A)],
            )
            client = self.request(router, encodePacket(
                [(b"REQUEST_METHOD", method), (b"PATH_INFO", b"/"), (b"HTTP_HOST", b"h")]))
            self.assertEqual(statusOf(client.received()), status, method)


class AccessLogEventTests(RouterTestCase):
    def test_a_refusal_made_by_the_session_names_its_event_in_the_json_log(self):
        """
        A refusal the HTTP session makes itself (an invalid response from
        the node, here a 101 to a request without Upgrade) carries its
        event name into the JSON access log, as the lifecycle's own do.
        """
        import io
        import json

        from txrouter.accesslog import JSONAccessLog

        lines = io.StringIO()
        self.network.addBackend(("127.0.0.1", 3031), _TunnelBackend())
        router = self.router(access_log=JSONAccessLog(lines, self.network.reactor))
        client = self.request(router, GET)
        self.assertEqual(statusOf(client.received()), 502)
        [line] = lines.getvalue().splitlines()
        self.assertEqual((json.loads(line)["status"], json.loads(line)["event"]),
                         (502, "bad_response"))
