"""
The FastRouter against in-memory clients (nginx's place) and uwsgi backends.
"""

import os

from hypothesis import HealthCheck, given, settings, strategies as st
from twisted.internet.defer import Deferred
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from tests.captures import packets
from txrouter.routers.fast import FastRouter
from txrouter.routing.cache import CacheForwarder, InMemoryStore
from txrouter.routing.code import CodeForwarder
from txrouter.routing.nodes import parseNode
from txrouter.routing.paths import PathForwarder
from txrouter.testing import MemoryNetwork, UwsgiWSGIBackend
from txrouter.wire.uwsgi import encodePacket

NGINX_PACKETS = packets("nginx-via-fastrouter-to-backend.json")


def request(key=b"a.local", body=b"", modifier1=0, modifier2=0, keyVar=b"HTTP_HOST", extra=()):
    pairs = [(b"REQUEST_METHOD", b"POST" if body else b"GET"), (b"PATH_INFO", b"/")]
    if body:
        pairs.append((b"CONTENT_LENGTH", b"%d" % len(body)))
    if key is not None:
        pairs.append((keyVar, key))
    pairs += list(extra)
    return encodePacket(pairs, modifier1, modifier2) + body


def statusOf(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def openFiles() -> int:
    return len(os.listdir("/proc/self/fd"))


class FastRouterTestCase(SynchronousTestCase):
    """
    A FastRouter in front of in-memory uwsgi backends running the echo app.
    """

    def setUp(self):
        self.network = MemoryNetwork()
        self.backends = {}
        for address in [("127.0.0.1", 3031), "/run/a.sock", "/run/b.sock", "/run/apps/a.local.sock"]:
            self.backends[address] = UwsgiWSGIBackend()
            self.network.addBackend(address, self.backends[address])
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def router(self, nodes=("127.0.0.1:3031",), **kwargs):
        return FastRouter(self.network.reactor, [parseNode(n) for n in nodes], **kwargs)

    def eventNames(self):
        return [e.get("event") for e in self.events if e.get("event")]

    def assertNoTraceback(self):
        self.assertEqual([e for e in self.events if e.get("log_failure")], [])


class ForwardingTests(FastRouterTestCase):
    def test_captured_nginx_packets_reach_the_backend_byte_for_byte(self):
        """
        The packets nginx sent through uWSGI's fastrouter, replayed: the
        backend gets the same header, vars and body, unchanged.
        """
        router = self.router()
        backend = self.backends[("127.0.0.1", 3031)]
        for raw in NGINX_PACKETS:
            client = self.network.connect(router)
            client.send(raw)
            self.assertEqual(statusOf(client.received()), 200)
            self.assertTrue(client.closed)
            vars_, body, packet = backend.requests[-1]
            self.assertEqual(packet.raw + body, raw)
        self.assertNoTraceback()

    def test_key_precedence(self):
        store = InMemoryStore({b"k": "/run/a.sock", b"h": "/run/b.sock", b"s": "127.0.0.1:3031"})
        router = self.router(forwarder=CacheForwarder(store))
        cases = [
            ([(b"SERVER_NAME", b"s"), (b"HTTP_HOST", b"h"), (b"UWSGI_FASTROUTER_KEY", b"k")], "/run/a.sock"),
            ([(b"SERVER_NAME", b"s"), (b"HTTP_HOST", b"h")], "/run/b.sock"),
            ([(b"SERVER_NAME", b"s"), (b"HTTP_HOST", b"x" * 256)], ("127.0.0.1", 3031)),
        ]
        for extra, address in cases:
            before = len(self.backends[address].requests)
            client = self.network.connect(router)
            client.send(request(key=None, extra=extra))
            self.assertEqual(statusOf(client.received()), 200)
            self.assertEqual(len(self.backends[address].requests), before + 1)

    def test_forced_key(self):
        store = InMemoryStore({b"forced": "/run/b.sock"})
        router = self.router(forwarder=CacheForwarder(store), force_key="forced")
        client = self.network.connect(router)
        client.send(request(key=b"anything"))
        self.assertEqual(len(self.backends["/run/b.sock"].requests), 1)

    def test_modifiers_forced_to_zero_for_static_nodes(self):
        router = self.router()
        client = self.network.connect(router)
        client.send(request(modifier1=5, modifier2=7))
        packet = self.backends[("127.0.0.1", 3031)].requests[-1][2]
        self.assertEqual((packet.modifier1, packet.modifier2), (0, 0))

    def test_keep_modifiers(self):
        router = self.router(keep_modifiers=True)
        client = self.network.connect(router)
        client.send(request(modifier1=5, modifier2=7))
        packet = self.backends[("127.0.0.1", 3031)].requests[-1][2]
        self.assertEqual((packet.modifier1, packet.modifier2), (5, 7))

    def test_cache_value_sets_modifier1(self):
        store = InMemoryStore({b"a.local": "/run/a.sock,9"})
        router = self.router(forwarder=CacheForwarder(store))
        client = self.network.connect(router)
        client.send(request(modifier1=5, modifier2=7))
        packet = self.backends["/run/a.sock"].requests[-1][2]
        self.assertEqual((packet.modifier1, packet.modifier2), (9, 0))

    def test_cache_round_robin(self):
        store = InMemoryStore({b"a.local": "/run/a.sock|/run/b.sock"})
        router = self.router(forwarder=CacheForwarder(store))
        for _ in range(4):
            self.network.connect(router).send(request())
        self.assertEqual(len(self.backends["/run/a.sock"].requests), 2)
        self.assertEqual(len(self.backends["/run/b.sock"].requests), 2)

    def test_pattern_forwarder(self):
        router = self.router(forwarder=PathForwarder("/run/apps/%s.sock"))
        client = self.network.connect(router)
        client.send(request(key=b"a.local", body=b"hello"))
        self.assertIn(b"BODY=hello", client.received())
        client = self.network.connect(router)
        client.send(request(key=b"../a"))
        self.assertEqual(statusOf(client.received()), 404)
        self.assertIn("unsafe_key", self.eventNames())

    def test_body_streams_and_half_close_passes_on(self):
        backend = self.backends[("127.0.0.1", 3031)]
        router = self.router()
        client = self.network.connect(router)
        body = os.urandom(300000)
        client.send(request(body=body)[: -len(body)])
        self.assertEqual(len(backend.connections), 1)
        for offset in range(0, len(body), 65536):
            client.send(body[offset : offset + 65536])
        self.assertEqual(backend.requests[-1][1], body)
        self.assertEqual(statusOf(client.received()), 200)


class RefusalTests(FastRouterTestCase):
    def test_http_client_on_the_uwsgi_port(self):
        client = self.network.connect(self.router())
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        response = client.received()
        self.assertEqual(statusOf(response), 400)
        self.assertIn(b"uwsgi", response)
        self.assertTrue(client.closed)
        self.assertIn("http_on_uwsgi_port", self.eventNames())

    def test_http_client_in_small_pieces(self):
        client = self.network.connect(self.router())
        for byte in b"GET / HTTP/1.1\r\n":
            client.send(bytes([byte]))
        self.assertEqual(statusOf(client.received()), 400)

    def test_tls_client_on_the_uwsgi_port(self):
        client = self.network.connect(self.router())
        client.send(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
        self.assertEqual(client.received(), b"")
        self.assertTrue(client.closed)
        self.assertIn("tls_on_uwsgi_port", self.eventNames())

    def test_no_key(self):
        client = self.network.connect(self.router())
        client.send(request(key=None))
        self.assertEqual(statusOf(client.received()), 400)
        self.assertIn("no_key", self.eventNames())

    def test_no_node_for_key(self):
        router = self.router(forwarder=CacheForwarder(InMemoryStore({})))
        client = self.network.connect(router)
        client.send(request())
        self.assertEqual(statusOf(client.received()), 404)

    def test_fallback_on_no_key(self):
        router = self.router(
            forwarder=CacheForwarder(InMemoryStore({})),
            fallback=[parseNode("/run/b.sock")], fallback_on_no_key=True,
        )
        client = self.network.connect(router)
        client.send(request())
        self.assertEqual(statusOf(client.received()), 200)
        self.assertEqual(len(self.backends["/run/b.sock"].requests), 1)

    def test_unreachable_backend_then_fallback(self):
        router = self.router(nodes=("/run/none.sock",), fallback=[parseNode("/run/a.sock")])
        client = self.network.connect(router)
        client.send(request())
        self.assertEqual(statusOf(client.received()), 200)
        self.assertIn("backend_unreachable", self.eventNames())

    def test_unreachable_backend(self):
        client = self.network.connect(self.router(nodes=("/run/none.sock",)))
        client.send(request())
        self.assertEqual(statusOf(client.received()), 502)

    def test_silent_errors(self):
        client = self.network.connect(self.router(nodes=("/run/none.sock",), silent_errors=True))
        client.send(request())
        self.assertEqual(client.received(), b"")
        self.assertTrue(client.closed)

    def test_oversized_vars_block(self):
        client = self.network.connect(self.router(buffer_size=100))
        client.send(request(extra=[(b"X", b"y" * 200)]))
        self.assertEqual(statusOf(client.received()), 400)
        self.assertIn("packet_too_large", self.eventNames())

    def test_slow_head_times_out(self):
        router = self.router(timeout=10)
        client = self.network.connect(router)
        raw = request()
        for i in range(5):
            client.send(raw[i : i + 1])
            self.network.reactor.advance(3)
            self.network.flush()
        self.assertEqual(statusOf(client.received()), 408)

    def test_code_forwarder_slow_and_raising(self):
        def slow(key):
            return Deferred()

        router = self.router(forwarder=CodeForwarder(slow, self.network.reactor, timeout=2))
        client = self.network.connect(router)
        client.send(request())
        self.assertEqual(client.received(), b"")
        self.network.reactor.advance(2)
        self.network.flush()
        self.assertEqual(statusOf(client.received()), 504)

        def broken(key):
            raise RuntimeError("user bug")

        router = self.router(forwarder=CodeForwarder(broken, self.network.reactor))
        client = self.network.connect(router)
        client.send(request())
        self.assertEqual(statusOf(client.received()), 502)
        self.assertIn("forwarder_failed", self.eventNames())
        self.flushLoggedErrors(RuntimeError)

    def test_code_forwarder_failing_later_is_a_502_at_once(self):
        """
        A user function whose Deferred fails (not a timeout) gets the client
        a 502 and a logged traceback straight away, not a stuck session.
        """
        answers = []

        def failingLater(key):
            answers.append(Deferred())
            return answers[-1]

        router = self.router(forwarder=CodeForwarder(failingLater, self.network.reactor))
        client = self.network.connect(router)
        client.send(request())
        answers[0].errback(RuntimeError("user bug, later"))
        self.network.flush()
        self.assertEqual(statusOf(client.received()), 502)
        failures = [e for e in self.events
                    if e.get("event") == "forwarder_failed" and "log_failure" in e]
        self.assertEqual(len(failures), 1)
        self.assertIn("user bug, later", str(failures[0]["log_failure"].value))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_code_forwarder_answers_later(self):
        answers = []

        def later(key):
            answers.append(Deferred())
            return answers[-1]

        router = self.router(forwarder=CodeForwarder(later, self.network.reactor))
        client = self.network.connect(router)
        client.send(request())
        answers[0].callback("/run/b.sock")
        self.network.flush()
        self.assertEqual(statusOf(client.received()), 200)
        self.assertEqual(len(self.backends["/run/b.sock"].requests), 1)

    def test_backend_closes_mid_response(self):
        """
        The response is opaque to the FastRouter: what the backend sent is
        relayed and the connection closed, and the client (nginx) judges
        the response by its own framing.
        """
        backend = self.backends[("127.0.0.1", 3031)]
        backend.hold = True
        client = self.network.connect(self.router())
        client.send(request())
        connection = backend.pending()[0]
        connection.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npart")
        self.network.flush()
        connection.transport.abortConnection()
        self.network.flush()
        self.assertTrue(client.received().endswith(b"part"))
        self.assertTrue(client.closed)
        self.assertEqual(self.network.reactor.getDelayedCalls(), [])

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.one_of(
        st.binary(max_size=300),
        st.builds(lambda raw, cut, junk: raw[:cut] + junk,
                  st.sampled_from(NGINX_PACKETS), st.integers(0, 500), st.binary(max_size=20)),
    ))
    def test_fuzzed_packets_never_crash_or_leak(self, data):
        router = self.router()
        client = self.network.connect(router)
        client.send(data)
        client.close()
        self.network.reactor.advance(120)
        self.network.flush()
        self.assertNoTraceback()
        self.assertEqual(router.sessions, set())


class PostBufferingTests(FastRouterTestCase):
    def test_node_connected_only_after_the_whole_body(self):
        backend = self.backends[("127.0.0.1", 3031)]
        router = self.router(post_buffering=1000)
        client = self.network.connect(router)
        body = b"x" * 5000
        raw = request(body=body)
        client.send(raw[:-10])
        self.assertEqual(backend.connections, [])
        client.send(raw[-10:] + b"surplus")
        self.assertEqual(backend.requests[-1][1], body)
        self.assertEqual(statusOf(client.received()), 200)

    def test_temporary_file_gone_on_every_path(self):
        before = openFiles()
        router = self.router(post_buffering=100)
        body = b"y" * 10000
        raw = request(body=body)
        # Success.
        client = self.network.connect(router)
        client.send(raw)
        self.assertIn(b"BODY=" + body, client.received())
        # Client abort mid-body.
        client = self.network.connect(router)
        client.send(raw[:-100])
        client.close()
        # Backend failure.
        failing = self.router(nodes=("/run/none.sock",), post_buffering=100)
        client = self.network.connect(failing)
        client.send(raw)
        self.assertEqual(statusOf(client.received()), 502)
        # Shutdown while buffering.
        client = self.network.connect(router)
        client.send(raw[:-100])
        router.drain(1)
        self.network.reactor.advance(1)
        self.network.flush()
        self.assertEqual(openFiles(), before)

    def test_bad_content_length(self):
        client = self.network.connect(self.router(post_buffering=100))
        client.send(request(extra=[(b"CONTENT_LENGTH", b"12x")]))
        self.assertEqual(statusOf(client.received()), 400)


class DrainTests(FastRouterTestCase):
    def test_drain_finishes_in_flight_requests(self):
        backend = self.backends[("127.0.0.1", 3031)]
        backend.hold = True
        router = self.router()
        busy = self.network.connect(router)
        busy.send(request())
        idle = self.network.connect(router)
        drained = router.drain(30)
        self.network.flush()
        self.assertTrue(idle.closed)
        self.assertNoResult(drained)
        backend.pending()[0].respond()
        self.network.flush()
        self.assertEqual(statusOf(busy.received()), 200)
        self.successResultOf(drained)
