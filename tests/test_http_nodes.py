"""
HTTP nodes: the HTTP router speaking plain HTTP/1.1 to backends that are
not uWSGI (in-memory, through txrouter.testing.HTTPWSGIBackend), nodes
announced with uWSGI 2.1's C{proto}, and the FastRouter refusing them.
"""

import pytest
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from txrouter.routers.fast import FastRouter
from txrouter.routers.http import HTTPRouter
from txrouter.routing.nodes import HTTP, UWSGI, parseNode
from txrouter.routing.static import StaticForwarder
from txrouter.routing.subscriptions import SubscriptionRegistry
from txrouter.testing import HTTPWSGIBackend, MemoryNetwork, UwsgiWSGIBackend
from txrouter.wire.subscription import Subscription, SubscriptionError
from txrouter.wire.uwsgi import encodeHeader, encodeVars

NODE = "http://127.0.0.1:8000"
GET = b"GET /x?y=1 HTTP/1.1\r\nHost: example.com\r\n\r\n"


def statusOf(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def headOf(response: bytes) -> bytes:
    return response.partition(b"\r\n\r\n")[0] + b"\r\n\r\n"


def respond(*headers, body=b"ok", status="200 OK"):
    """
    A WSGI application answering C{body} with these extra headers.
    """

    def application(environ, start_response):
        start_response(status, [("Content-Length", str(len(body))), *headers])
        return [body]

    return application


class HTTPNodeTestCase(SynchronousTestCase):
    """
    A router in front of an in-memory HTTP node on 127.0.0.1:8000 (echo
    app) and a uwsgi node on /run/u.sock.
    """

    def setUp(self):
        self.network = MemoryNetwork()
        self.node = HTTPWSGIBackend()
        self.uwsgi = UwsgiWSGIBackend()
        self.network.addBackend(("127.0.0.1", 8000), self.node)
        self.network.addBackend("/run/u.sock", self.uwsgi)
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def router(self, nodes=(NODE,), **kwargs):
        kwargs.setdefault("server_name", "vm")
        if "forwarder" in kwargs:
            nodes = ()  # the forwarder finds the nodes
        return HTTPRouter(self.network.reactor, [parseNode(n) for n in nodes], **kwargs)

    def request(self, router, data, peer=("127.0.0.1", 40000)):
        client = self.network.connect(router, peer=peer)
        client.send(data)
        return client

    def loggedEvents(self):
        return [e.get("event") for e in self.events if "event" in e]


class RequestTests(HTTPNodeTestCase):
    def test_get_reaches_the_node_as_an_http_request(self):
        client = self.request(self.router(), GET.replace(b"\r\n\r\n", b"\r\nAccept: */*\r\n\r\n"))
        [request] = self.node.requests
        self.assertEqual(request.raw, (
            b"GET /x?y=1 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n"
            b"X-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Proto: http\r\nConnection: close\r\n\r\n"
        ))
        response = client.received()
        self.assertEqual(statusOf(response), 200)
        self.assertIn(b"HTTP_HOST=example.com\n", response)
        self.assertIn(b"QUERY_STRING=y=1\n", response)

    def test_post_body_is_streamed_with_its_content_length(self):
        client = self.network.connect(self.router())
        client.send(b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n\r\nhello")
        self.assertEqual(len(self.node.connections), 1, "connected before the whole body")
        client.send(b"world")
        [request] = self.node.requests
        self.assertEqual(request.raw, (
            b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n"
            b"X-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Proto: http\r\nConnection: close\r\n\r\n"
        ))
        self.assertEqual(request.body, b"helloworld")
        self.assertTrue(client.received().endswith(b"BODY=helloworld"))

    def test_chunked_body_is_dechunked_and_sent_with_a_content_length(self):
        self.request(self.router(), (
            b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        ))
        [request] = self.node.requests
        self.assertEqual(request.raw, (
            b"POST /c HTTP/1.1\r\nHost: h\r\n"
            b"X-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Proto: http\r\n"
            b"Content-Length: 11\r\nConnection: close\r\n\r\n"
        ))
        self.assertEqual(request.body, b"hello world")

    def test_chunked_input_passes_the_chunks_on(self):
        client = self.request(self.router(chunked_input=True), (
            b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n0\r\n\r\n"
        ))
        [request] = self.node.requests
        self.assertEqual(request.header(b"Transfer-Encoding"), [b"chunked"])
        self.assertEqual(request.header(b"Content-Length"), [])
        self.assertEqual(request.body, b"hello")
        self.assertEqual(statusOf(client.received()), 200)

    def test_hop_by_hop_headers_do_not_reach_the_node(self):
        self.request(self.router(keepalive=5), (
            b"GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, X-Hop\r\nKeep-Alive: 300\r\n"
            b"X-Hop: 1\r\nTE: trailers\r\nProxy-Connection: keep-alive\r\nUpgrade: h2c\r\nX-End: 2\r\n\r\n"
        ))
        [request] = self.node.requests
        self.assertEqual(
            [name for name, _ in request.head.headers],
            [b"Host", b"X-End", b"X-Forwarded-For", b"X-Forwarded-Proto", b"Connection"],
        )
        self.assertEqual(request.header(b"Connection"), [b"close"])

    def test_forwarding_headers_from_an_untrusted_client_are_replaced(self):
        self.request(
            self.router(trust_forwarded_from=["10.0.0.0/8"]),
            b"GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\n"
            b"X-Forwarded-Host: evil\r\n\r\n",
            peer=("192.0.2.7", 5000),
        )
        [request] = self.node.requests
        self.assertEqual(request.header(b"X-Forwarded-For"), [b"192.0.2.7"])
        self.assertEqual(request.header(b"X-Forwarded-Proto"), [b"http"])
        self.assertEqual(request.header(b"X-Forwarded-Host"), [])

    def test_forwarding_headers_from_a_trusted_client_are_kept_and_extended(self):
        self.request(
            self.router(trust_forwarded_from=["10.0.0.0/8"]),
            b"GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\n"
            b"X-Forwarded-Host: front\r\n\r\n",
            peer=("10.1.2.3", 5000),
        )
        [request] = self.node.requests
        self.assertEqual(request.header(b"X-Forwarded-For"), [b"6.6.6.6, 10.1.2.3"])
        self.assertEqual(request.header(b"X-Forwarded-Proto"), [b"https"])
        self.assertEqual(request.header(b"X-Forwarded-Host"), [b"front"])

    def test_expect_continue_is_answered_by_the_router_not_passed_on(self):
        client = self.network.connect(self.router())
        client.send(b"PUT /u HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
        self.assertEqual(client.received(), b"HTTP/1.1 100 Continue\r\n\r\n")
        client.send(b"ok")
        [request] = self.node.requests
        self.assertEqual(request.header(b"Expect"), [])
        self.assertEqual(request.body, b"ok")

    def test_the_uwsgi_buffer_size_does_not_apply_to_http_nodes(self):
        big = b"GET / HTTP/1.1\r\nHost: h\r\nCookie: " + b"c" * 5000 + b"\r\n\r\n"
        client = self.request(self.router(buffer_size=4096), big)
        self.assertEqual(statusOf(client.received()), 200)
        self.assertEqual(self.node.requests[0].header(b"Cookie"), [b"c" * 5000])

    def test_a_head_the_node_cannot_be_sent_within_max_head_size_is_a_431(self):
        router = self.router(max_head_size=300)
        head = b"GET / HTTP/1.1\r\nHost: h\r\nX: " + b"a" * 230 + b"\r\n\r\n"
        client = self.request(router, head)
        self.assertEqual(statusOf(client.received()), 431)
        self.assertEqual(self.node.connections, [])
        self.assertIn("node_head_too_large", self.loggedEvents())

    def test_each_node_gets_the_head_in_its_own_protocol_across_retries(self):
        """
        A request retried from an unreachable uwsgi node to an HTTP node
        (and the other way) is sent to each in its protocol.
        """
        router = self.router(nodes=("/run/none.sock", NODE))
        self.assertEqual(statusOf(self.request(router, GET).received()), 200)
        self.assertEqual(len(self.node.requests), 1)
        router = self.router(nodes=("http://127.0.0.1:1", "/run/u.sock"))
        self.assertEqual(statusOf(self.request(router, GET).received()), 200)
        [(vars, _, _)] = self.uwsgi.requests
        self.assertEqual(vars[b"PATH_INFO"], b"/x")


class ResponseTests(HTTPNodeTestCase):
    def test_keep_alive_client_gets_several_responses_from_a_node_that_closes(self):
        """
        The node says C{Connection: close} (it was asked to) and more
        hop-by-hop headers: none reaches the client, whose connection stays.
        """
        self.node.application = respond(("Keep-Alive", "timeout=5"), ("Connection", "X-Node"),
                                        ("X-Node", "n"), ("X-App", "a"))
        client = self.request(self.router(keepalive=15), GET)
        client.send(GET.replace(b"/x", b"/z"))
        client.send(GET)
        responses = client.received()
        self.assertEqual(responses.count(b"HTTP/1.1 200 OK\r\n"), 3)
        self.assertEqual(
            headOf(responses), b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-App: a\r\n\r\n"
        )
        self.assertFalse(client.closed)
        self.assertEqual([r.head.path for r in self.node.requests], [b"/x?y=1", b"/z?y=1", b"/x?y=1"])
        self.assertEqual(len(self.node.connections), 3)

    def test_without_keep_alive_the_client_gets_one_connection_close(self):
        client = self.request(self.router(), GET)
        head = headOf(client.received())
        self.assertEqual(head.count(b"Connection:"), 1)
        self.assertIn(b"\r\nConnection: close\r\n", head)
        self.assertTrue(client.closed)

    def test_http10_response_with_a_length_keeps_the_client_connection(self):
        class Old(Protocol):
            def dataReceived(self, data):
                self.transport.write(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nold")
                self.transport.loseConnection()

        self.network.addBackend(("127.0.0.1", 8000), ServerFactory.forProtocol(Old))
        client = self.request(self.router(keepalive=15), GET)
        client.send(GET)
        self.assertEqual(client.received(), b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nold" * 2)
        self.assertFalse(client.closed)

    def test_response_ending_at_eof_closes_the_client_connection(self):
        class Unframed(Protocol):
            def dataReceived(self, data):
                self.transport.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil eof")
                self.transport.loseConnection()

        self.network.addBackend(("127.0.0.1", 8000), ServerFactory.forProtocol(Unframed))
        client = self.request(self.router(keepalive=15), GET)
        self.assertEqual(client.received(), b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil eof")
        self.assertTrue(client.closed)

    def test_a_transfer_coding_other_than_chunked_does_not_keep_the_client_connection(self):
        class Gzipped(Protocol):
            def dataReceived(self, data):
                self.transport.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nzzz")
                self.transport.loseConnection()

        self.network.addBackend(("127.0.0.1", 8000), ServerFactory.forProtocol(Gzipped))
        client = self.request(self.router(keepalive=15), GET)
        self.assertIn(b"\r\nConnection: close\r\n", headOf(client.received()))
        self.assertTrue(client.closed)

    def test_content_length_with_transfer_encoding_is_refused_with_a_502(self):
        self.node.application = respond(("Transfer-Encoding", "chunked"), body=b"2\r\nok\r\n0\r\n\r\n")
        client = self.request(self.router(keepalive=15), GET)
        response = client.received()
        self.assertEqual(statusOf(response), 502)
        self.assertNotIn(b"Transfer-Encoding", response)
        self.assertTrue(client.closed)
        self.assertIn("response_cl_te", self.loggedEvents())

    def test_head_and_204_responses_end_without_a_body(self):
        self.node.application = respond(status="204 No Content", body=b"")
        client = self.request(self.router(keepalive=15), GET)
        client.send(b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n")
        self.assertEqual(client.received().count(b"HTTP/1.1 204 No Content\r\n"), 2)
        self.assertFalse(client.closed)


class _WebSocketNode(ServerFactory):
    """
    Answers an upgrade with 101, then echoes what it gets, upper-cased.
    """

    def __init__(self):
        self.heads = []

    def buildProtocol(self, addr):
        node = self

        class Tunnel(Protocol):
            upgraded = False
            buffer = b""

            def dataReceived(self, data):
                if self.upgraded:
                    self.transport.write(data.upper())
                    return
                self.buffer += data
                head, found, rest = self.buffer.partition(b"\r\n\r\n")
                if not found:
                    return
                node.heads.append(head + found)
                self.upgraded = True
                self.transport.write(
                    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
                )
                if rest:
                    self.transport.write(rest.upper())

        return Tunnel()


class UpgradeTests(HTTPNodeTestCase):
    def test_websocket_upgrade_is_forwarded_and_the_101_opens_a_tunnel(self):
        node = _WebSocketNode()
        self.network.addBackend(("127.0.0.1", 8000), node)
        client = self.request(self.router(keepalive=15), (
            b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\nhello"
        ))
        client.send(b" again")
        [head] = node.heads
        self.assertEqual(head, (
            b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            b"X-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Proto: http\r\nConnection: Upgrade\r\n\r\n"
        ))
        received = client.received()
        self.assertEqual(headOf(received), (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
        ))
        self.assertTrue(received.endswith(b"\r\n\r\nHELLO AGAIN"))


class FastRouterTests(SynchronousTestCase):
    def test_an_http_node_is_refused_with_a_502_and_a_log_line(self):
        network = MemoryNetwork()
        node = HTTPWSGIBackend()
        network.addBackend(("127.0.0.1", 8000), node)
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        router = FastRouter(network.reactor, [parseNode(NODE)])
        block = encodeVars([(b"REQUEST_METHOD", b"GET"), (b"PATH_INFO", b"/"), (b"HTTP_HOST", b"h")])
        client = network.connect(router)
        client.send(encodeHeader(0, len(block), 0) + block)
        self.assertEqual(statusOf(client.received()), 502)
        self.assertEqual(node.connections, [])
        [line] = [e for e in events if e.get("event") == "http_node_on_fastrouter"]
        self.assertEqual(line["node"], NODE)


def announce(proto=None, address=b"127.0.0.1:8000", **kwargs):
    return Subscription(b"a.local", address, proto=proto, **kwargs)


class SubscribedHTTPNodeTests(SynchronousTestCase):
    def test_proto_h_makes_an_http_node_and_shows_in_the_stats(self):
        registry = SubscriptionRegistry(Clock())
        registry.apply(announce(b"http"), None)
        registry.apply(announce(address=b"127.0.0.1:3031"), None)
        node, other = (entry.node for entry in registry.nodes(b"a.local"))
        self.assertEqual((node.protocol, other.protocol), (HTTP, UWSGI))
        [(_, [pool])] = registry.statsFields()
        self.assertEqual([n.get("proto") for n in pool["nodes"]], ["h", None])

    def test_only_the_first_byte_counts_and_u_is_uwsgi(self):
        registry = SubscriptionRegistry(Clock())
        for proto, address in [(b"h", b"127.0.0.1:8001"), (b"hTTP/anything", b"127.0.0.1:8002"),
                               (b"uwsgi", b"127.0.0.1:8003"), (b"", b"127.0.0.1:8004")]:
            registry.apply(announce(proto, address), None)
        self.assertEqual(
            [entry.node.protocol for entry in registry.nodes(b"a.local")],
            [HTTP, HTTP, UWSGI, UWSGI],
        )

    def test_protocols_txrouter_does_not_speak_are_refused(self):
        registry = SubscriptionRegistry(Clock())
        for proto in (b"fastcgi", b"scgi", b"x"):
            with self.assertRaises(SubscriptionError) as caught:
                registry.apply(announce(proto), None)
            self.assertEqual(caught.exception.event, "unsupported_proto")
        self.assertEqual(registry.keys(), [])

    def test_the_protocol_is_that_of_the_announce_that_created_the_node(self):
        registry = SubscriptionRegistry(Clock())
        registry.apply(announce(b"http"), None)
        registry.apply(announce(), None)
        [entry] = registry.nodes(b"a.local")
        self.assertEqual(entry.node.protocol, HTTP)
        registry.apply(announce(unsubscribe=True), None)
        registry.apply(announce(), None)
        [entry] = registry.nodes(b"a.local")
        self.assertEqual(entry.node.protocol, UWSGI)

    def test_a_subscribed_http_node_serves_the_http_router(self):
        network = MemoryNetwork()
        node = HTTPWSGIBackend()
        network.addBackend(("127.0.0.1", 8000), node)
        registry = SubscriptionRegistry(network.reactor)
        registry.apply(announce(b"http"), None)
        router = HTTPRouter(network.reactor, forwarder=registry, server_name="vm")
        client = network.connect(router)
        client.send(b"GET / HTTP/1.1\r\nHost: a.local\r\n\r\n")
        self.assertEqual(statusOf(client.received()), 200)
        self.assertEqual(node.requests[0].header(b"Host"), [b"a.local"])


def test_static_stats_name_http_nodes_by_their_address():
    forwarder = StaticForwarder([parseNode(NODE)], Clock())
    [(_, [stats])] = forwarder.statsFields()
    assert stats["name"] == NODE


def test_the_command_line_takes_http_nodes():
    from twisted.python import usage

    from txrouter.tap.http import Options

    options = Options()
    options.parseOptions(["--bind", "tcp:8080", "--to", NODE, "--to", "/run/a.sock",
                          "--fallback", "http://unix:/run/b.sock"])
    config = options.config
    assert [n.protocol for n in config.to] == [HTTP, UWSGI]
    assert [(n.protocol, n.path) for n in config.fallback] == [(HTTP, "/run/b.sock")]
    with pytest.raises(usage.UsageError) as caught:
        Options().parseOptions(["--bind", "tcp:8080", "--to", "http://127.0.0.1:8000/app"])
    assert "http://127.0.0.1:8000/app" in str(caught.value)
