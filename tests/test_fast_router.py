"""
The FastRouter against in-memory clients (nginx's place) and uwsgi backends.
"""

import os
import shutil
import tempfile

from hypothesis import HealthCheck, given, settings, strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tests.captures import packets
from txrouter.limits import LINGER_IDLE, LINGER_TOTAL
from txrouter.routers.base import DRAIN_SILENT_GRACE
from txrouter.routers.fast import FastRouter
from txrouter.routing.cache import CacheForwarder, InMemoryStore
from txrouter.routing.code import CodeForwarder
from txrouter.routing.nodes import parseNode
from txrouter.routing.paths import PathForwarder
from txrouter.routing.subscriptions import SubscriptionRegistry
from txrouter.testing import MemoryNetwork, UwsgiWSGIBackend
from txrouter.wire.subscription import Subscription
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


def spoolFiles(directory) -> int:
    """
    How many of this process's descriptors are on unlinked files in
    C{directory}: the post-buffering temporary files there.
    """
    prefix = os.path.realpath(directory) + "/"
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        count += target.startswith(prefix) and target.endswith(" (deleted)")
    return count


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
        if "forwarder" in kwargs:
            nodes = ()  # the forwarder finds the nodes
        return FastRouter(self.network.reactor, [parseNode(n) for n in nodes], **kwargs)

    def eventNames(self):
        return [e.get("event") for e in self.events if e.get("event")]

    def assertNoTraceback(self):
        self.assertEqual([e for e in self.events if e.get("log_failure")], [])

    def spoolDirectory(self) -> str:
        directory = tempfile.mkdtemp(prefix="txrouter-spool-")
        self.addCleanup(shutil.rmtree, directory, True)
        return directory

    def settle(self, seconds: float = LINGER_TOTAL + 120) -> None:
        """
        Let every timer of the router run out.
        """
        reactor = self.network.reactor
        while seconds > 0:
            reactor.advance(min(seconds, 5))
            self.network.flush()
            seconds -= 5


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
            ([(b"SERVER_NAME", b"s")], ("127.0.0.1", 3031)),
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

    def test_store_answering_too_late(self):
        """
        A key/value store whose answer does not come within the cache
        forwarder's timeout: 504, as for user code.
        """
        class SlowStore:
            def get(self, key):
                return Deferred()

        forwarder = CacheForwarder(SlowStore(), self.network.reactor, timeout=2)
        client = self.network.connect(self.router(forwarder=forwarder))
        client.send(request())
        self.network.reactor.advance(2)
        self.network.flush()
        self.assertEqual(statusOf(client.received()), 504)
        self.assertIn("forwarder_timeout", self.eventNames())

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

    def test_a_client_that_leaves_cancels_the_pending_user_code(self):
        """
        The client went away while the user's function was still
        answering: its Deferred is cancelled (it may stop its own work),
        and nothing is logged as a failure.
        """
        answers = []

        def later(key):
            answers.append(Deferred(lambda d: cancelled.append(key)))
            return answers[-1]

        cancelled = []
        router = self.router(forwarder=CodeForwarder(later, self.network.reactor))
        client = self.network.connect(router)
        client.send(request())
        client.close()
        self.assertEqual(cancelled, ["a.local"])
        self.assertNotIn("forwarder_failed", self.eventNames())
        self.assertEqual(router.sessions, set())

    def test_subscribed_nodes_count_the_bytes_they_relay(self):
        """
        The stats of a subscribed node show what went to it (C{rx}: the
        packet and its body) and what came back (C{tx}: the response), as
        uWSGI's do.
        """
        registry = SubscriptionRegistry(self.network.reactor)
        registry.apply(Subscription(b"a.local", b"127.0.0.1:3031"), "127.0.0.1")
        router = self.router(forwarder=registry)
        packet = request(body=b"payload")
        client = self.network.connect(router)
        client.send(packet)
        self.assertEqual(statusOf(client.received()), 200)
        [(name, [pool])] = registry.statsFields()
        [node] = pool["nodes"]
        self.assertEqual((node["rx"], node["tx"]), (len(packet), len(client.received())))
        self.assertEqual(node["requests"], 1)

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

    def test_body_arriving_with_the_packet_connects_once(self):
        """
        The whole body in the packet's segment (nginx's usual small POST):
        one connection to the node, one request.
        """
        backend = self.backends[("127.0.0.1", 3031)]
        for body in (b"s" * 50, b"b" * 5000):
            client = self.network.connect(self.router(post_buffering=1000))
            client.send(request(body=body))
            self.assertTrue(client.received().endswith(b"BODY=" + body))
        self.assertEqual(len(backend.connections), 2)
        self.assertEqual(len(backend.requests), 2)

    def test_bad_content_length(self):
        """
        With post-buffering (or a body limit) CONTENT_LENGTH is parsed
        strictly: digits only, at most 19 of them, so that a 5000-digit
        value is a 400 and not a ValueError out of int().
        """
        bad = [b"12x", b"-1", b" 12", b"1e3", b"+5", b"\xd9\xa3", b"1" * 20, b"9" * 5000]
        for options in (dict(post_buffering=100), dict(limit_post=1000)):
            router = self.router(**options)
            for value in bad:
                client = self.network.connect(router)
                client.send(request(extra=[(b"CONTENT_LENGTH", value)]))
                response = client.received()
                self.assertEqual(statusOf(response), 400, value[:20])
                self.assertIn(b"is not a number of at most 19 digits", response)
                client.close()
            self.assertEqual(router.sessions, set())
        self.assertEqual(self.eventNames().count("bad_content_length"), 2 * len(bad))
        self.assertNoTraceback()

    def test_limit_post(self):
        """
        limit_post refuses a declared body over the limit with 413 before
        reading it, whether the body is streamed or post-buffered.
        """
        backend = self.backends[("127.0.0.1", 3031)]
        for options in (dict(), dict(post_buffering=100)):
            router = self.router(limit_post=1000, **options)
            client = self.network.connect(router)
            client.send(request(body=b"z" * 1001))
            response = client.received()
            self.assertEqual(statusOf(response), 413)
            self.assertIn(b"body of 1001 bytes, limit 1000", response)
            client = self.network.connect(router)
            client.send(request(body=b"z" * 1000))
            self.assertEqual(statusOf(client.received()), 200)
            self.assertEqual(backend.requests[-1][1], b"z" * 1000)
            client = self.network.connect(router)
            client.send(request(extra=[(b"CONTENT_LENGTH", b"9" * 19)]))
            self.assertEqual(statusOf(client.received()), 413)
        self.assertEqual(self.eventNames().count("body_too_large"), 4)

    def test_spool_directory_checked_when_built(self):
        missing = os.path.join(self.spoolDirectory(), "missing")
        with self.assertRaises(ValueError) as raised:
            self.router(post_buffering=100, post_buffering_dir=missing)
        self.assertEqual(str(raised.exception),
                         f"post_buffering_dir: {missing}: No such file or directory")
        # Streaming routers never spool: nothing to check.
        self.router(post_buffering_dir=missing)

    def test_spool_directory_gone_is_a_503(self):
        """
        The directory disappears after start-up: the body that needs a
        file is refused with 503 and an error line naming the directory
        (the client is not told where), never a traceback; small bodies
        still pass.
        """
        directory = self.spoolDirectory()
        router = self.router(post_buffering=100, post_buffering_dir=directory)
        os.rmdir(directory)
        client = self.network.connect(router)
        client.send(request(body=b"b" * 1000))
        response = client.received()
        self.assertEqual(statusOf(response), 503)
        self.assertIn(b"the request body could not be stored", response)
        self.assertNotIn(directory.encode(), response)
        # One error line for the operator (the refusal's own line is info).
        [event] = [
            e for e in self.events
            if e.get("event") == "spool_failed" and e["log_level"].name == "error"
        ]
        self.assertEqual(event["error"], f"{directory}: No such file or directory")
        self.assertEqual(self.backends[("127.0.0.1", 3031)].connections, [])
        client.close()
        client = self.network.connect(router)
        client.send(request(body=b"s" * 50))
        self.assertIn(b"BODY=" + b"s" * 50, client.received())
        self.assertNoTraceback()
        self.assertEqual(router.sessions, set())

    def test_full_disk_is_a_503_before_connecting(self):
        """
        A full disk (/dev/full) shows when the body is complete, at the
        latest: 503, and the node is never connected.
        """
        self.patch(tempfile, "TemporaryFile", lambda dir=None: open("/dev/full", "w+b"))
        router = self.router(post_buffering=100)
        client = self.network.connect(router)
        client.send(request(body=b"f" * 1000))
        self.assertEqual(statusOf(client.received()), 503)
        self.assertIn("spool_failed", self.eventNames())
        self.assertEqual(self.backends[("127.0.0.1", 3031)].connections, [])
        self.assertNoTraceback()


class SpoolCleanupTests(FastRouterTestCase):
    """
    The post-buffering temporary file is gone on every path.  Each test
    first sees the file among the process's descriptors, in the directory
    given: a body over the 100-byte threshold goes to disk.
    """

    body = os.urandom(300_000)

    def setUp(self):
        super().setUp()
        self.directory = self.spoolDirectory()
        self.raw = request(body=self.body)

    def spoolingRouter(self, nodes=("127.0.0.1:3031",)):
        return self.router(nodes, post_buffering=100, post_buffering_dir=self.directory)

    def sendAllButTheEnd(self, router):
        client = self.network.connect(router)
        client.send(self.raw[:-10])
        self.assertEqual(spoolFiles(self.directory), 1)
        self.assertEqual(os.listdir(self.directory), [])
        return client

    def assertNoSpoolFile(self, router):
        self.assertEqual(spoolFiles(self.directory), 0)
        self.assertEqual(router.sessions, set())
        self.assertNoTraceback()

    def test_success(self):
        router = self.spoolingRouter()
        client = self.sendAllButTheEnd(router)
        self.assertEqual(self.backends[("127.0.0.1", 3031)].connections, [])
        client.send(self.raw[-10:])
        self.assertTrue(client.received().endswith(b"BODY=" + self.body))
        self.assertNoSpoolFile(router)

    def test_client_abort(self):
        router = self.spoolingRouter()
        client = self.sendAllButTheEnd(router)
        client.close()
        self.assertNoSpoolFile(router)

    def test_connect_failure(self):
        router = self.spoolingRouter(nodes=("/run/none.sock",))
        client = self.sendAllButTheEnd(router)
        client.send(self.raw[-10:])
        self.assertEqual(statusOf(client.received()), 502)
        self.assertIn("backend_unreachable", self.eventNames())
        self.assertNoSpoolFile(router)

    def test_backend_dies_while_the_body_is_sent(self):
        """
        The node goes away when only part of the spooled body has been
        read back from the file and sent to it.  (Driven by hand: the
        in-memory network would deliver the whole file before it lets a
        connection close.)
        """
        reactor = MemoryReactorClock()
        router = FastRouter(reactor, [parseNode("/run/a.sock")],
                            post_buffering=100, post_buffering_dir=self.directory)
        session = router.buildProtocol(None)
        client = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
        session.makeConnection(client)
        session.dataReceived(self.raw[:-10])
        self.assertEqual(spoolFiles(self.directory), 1)
        session.dataReceived(self.raw[-10:])
        [(path, factory, *_)] = reactor.unixClients
        upstream = factory.buildProtocol(None)
        node = StringTransport()
        upstream.makeConnection(node)
        for _ in range(3):
            node.producer.resumeProducing()
        head = len(self.raw) - len(self.body)
        self.assertTrue(head < len(node.value()) < len(self.raw))
        upstream.connectionLost(Failure(ConnectionLost("the worker was killed")))
        self.assertEqual(statusOf(client.value()), 502)
        self.assertIn("backend_closed", self.eventNames())
        self.assertEqual(spoolFiles(self.directory), 0)
        session.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(router.sessions, set())
        self.assertEqual(reactor.getDelayedCalls(), [])
        self.assertNoTraceback()

    def test_shutdown_while_buffering(self):
        router = self.spoolingRouter()
        self.sendAllButTheEnd(router)
        drained = router.drain(1)
        self.network.flush()
        self.assertNoResult(drained)
        self.network.reactor.advance(1)
        self.network.flush()
        self.successResultOf(drained)
        self.assertNoSpoolFile(router)

    def test_shutdown_while_the_node_holds_the_request(self):
        backend = self.backends[("127.0.0.1", 3031)]
        backend.hold = True
        router = self.spoolingRouter()
        client = self.sendAllButTheEnd(router)
        client.send(self.raw[-10:])
        self.assertEqual(len(backend.pending()), 1)
        drained = router.drain(1)
        self.network.reactor.advance(1)
        self.network.flush()
        self.successResultOf(drained)
        self.assertNoSpoolFile(router)


class LingerTests(FastRouterTestCase):
    """
    A refusal while the client may still be sending its body is answered,
    then the rest of the body is read and dropped until the client closes,
    so that the kernel does not reset the connection over unread bytes
    (nginx would then show its own 502 instead of the answer).
    """

    def refusedMidBody(self, **options):
        router = self.router(forwarder=CacheForwarder(InMemoryStore({})), **options)
        client = self.network.connect(router)
        client.send(request(body=b"u" * 100_000)[:2000])
        self.assertEqual(statusOf(client.received()), 404)
        return router, client

    def test_the_rest_of_the_body_is_dropped_until_the_client_closes(self):
        router, client = self.refusedMidBody()
        answered = client.received()
        self.assertFalse(client.closed)
        for _ in range(10):
            client.send(b"u" * 10_000)
        self.assertEqual(client.received(), answered)
        client.close()
        self.assertEqual(router.sessions, set())
        self.assertEqual(self.network.reactor.getDelayedCalls(), [])

    def test_lingering_is_bounded(self):
        router, client = self.refusedMidBody()
        self.network.reactor.advance(LINGER_IDLE)
        self.network.flush()
        self.assertTrue(client.closed)
        router, client = self.refusedMidBody()
        for _ in range(int(LINGER_TOTAL / (LINGER_IDLE - 1)) + 1):
            self.network.reactor.advance(LINGER_IDLE - 1)
            client.send(b"u")
        self.assertTrue(client.closed)
        self.assertEqual(router.sessions, set())

    def test_drain_ends_lingering_sessions(self):
        router, client = self.refusedMidBody()
        drained = router.drain(30)
        self.network.flush()
        self.successResultOf(drained)
        self.assertTrue(client.closed)

    def test_no_lingering_without_a_body_or_when_silent(self):
        router = self.router(forwarder=CacheForwarder(InMemoryStore({})))
        client = self.network.connect(router)
        client.send(request())
        self.assertEqual(statusOf(client.received()), 404)
        self.assertTrue(client.closed)
        router = self.router(forwarder=CacheForwarder(InMemoryStore({})), silent_errors=True)
        client = self.network.connect(router)
        client.send(request(body=b"u" * 100_000)[:2000])
        self.assertEqual(client.received(), b"")
        self.assertTrue(client.closed)


    def answeredEarly(self, packet: bytes):
        """
        A client that sent C{packet} (and perhaps some of its body) to a
        node that answers at its first byte and closes.
        """
        self.network.addBackend("/run/early.sock", AnsweringBackend())
        router = self.router(nodes=("/run/early.sock",))
        client = self.network.connect(router)
        client.send(packet)
        self.assertEqual(statusOf(client.received()), 200)
        return router, client

    def test_lingering_after_an_early_answer(self):
        """
        A node may answer before reading the whole body (an application
        refusing an upload): the router then lingers over the rest of the
        body as after a refusal, so that the client reads the answer rather
        than a reset.
        """
        router, client = self.answeredEarly(request(body=b"u" * 100_000)[:2000])
        answered = client.received()
        self.assertFalse(client.closed)
        client.send(b"u" * 50_000)
        self.assertEqual(client.received(), answered)
        client.close()
        self.assertEqual(router.sessions, set())
        self.assertEqual(self.network.reactor.getDelayedCalls(), [])
        router, client = self.answeredEarly(request(body=b"u" * 100_000)[:2000])
        self.network.reactor.advance(LINGER_IDLE)
        self.network.flush()
        self.assertTrue(client.closed)

    def test_a_body_without_content_length_ends_at_the_half_close(self):
        """
        Bytes after a packet without C{CONTENT_LENGTH} (or past it) are a
        body that ends when the client half-closes: an answer before that
        is followed by lingering too.
        """
        for packet in (request() + b"more", request(body=b"u" * 10) + b"more"):
            router, client = self.answeredEarly(packet)
            self.assertFalse(client.closed)
            client.close()
            self.assertEqual(router.sessions, set())

    def test_no_lingering_once_the_body_was_read_whole(self):
        """
        An answer after the whole body, or to a request without one, closes
        at once.
        """
        for packet in (request(), request(body=b"u" * 2000)):
            router, client = self.answeredEarly(packet)
            self.assertTrue(client.closed)
            self.assertEqual(router.sessions, set())


class _Answering(Protocol):
    def dataReceived(self, data):
        self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        self.transport.loseConnection()


class AnsweringBackend(ServerFactory):
    """
    A node that answers at the first byte, whatever it is: the streaming
    routers of the fuzz test pass malformed bodies and CONTENT_LENGTHs on
    unchecked, as uWSGI does, and the echo backend would choke on them.
    """

    noisy = False
    protocol = _Answering


#: CONTENT_LENGTH values: absent, plausible, past int()'s 4300 digits, junk.
CONTENT_LENGTHS = st.one_of(
    st.none(),
    st.integers(0, 4000).map(lambda n: b"%d" % n),
    st.one_of(st.integers(19, 25), st.integers(4290, 6000)).map(lambda n: b"9" * n),
    st.binary(max_size=24),
)

#: Keys, including those a path forwarder must refuse.
KEYS = st.one_of(
    st.sampled_from([b"a.local", b"../a.local", b"a/b", b".", b"..", b"a\x00b", b"x" * 256, b""]),
    st.binary(max_size=64),
)

KEY_VARS = [b"UWSGI_FASTROUTER_KEY", b"HTTP_HOST", b"SERVER_NAME"]

FUZZED_ROUTERS = [
    "static, post-buffering", "pattern, post-buffering", "base, post-buffering, limit",
    "cache, post-buffering", "pattern, streaming", "pattern, streaming, limit",
]


@st.composite
def fuzzedRequests(draw):
    """
    A request packet with random key vars, CONTENT_LENGTH and extra vars in
    any order, a body, perhaps cut anywhere, junk appended, in up to four
    pieces.
    """
    pairs = [(b"REQUEST_METHOD", b"POST"), (b"PATH_INFO", b"/")]
    length = draw(CONTENT_LENGTHS)
    if length is not None:
        pairs.append((b"CONTENT_LENGTH", length))
    for name in draw(st.lists(st.sampled_from(KEY_VARS), max_size=3)):
        pairs.append((name, draw(KEYS)))
    pairs += draw(st.lists(st.tuples(st.binary(min_size=1, max_size=16), st.binary(max_size=32)),
                           max_size=4))
    raw = encodePacket(draw(st.permutations(pairs)), draw(st.integers(0, 255)),
                       draw(st.integers(0, 255)))
    raw += draw(st.binary(max_size=3000))
    if draw(st.booleans()):
        raw = raw[: draw(st.integers(0, len(raw)))]
    raw += draw(st.binary(max_size=16))
    cuts = sorted(draw(st.lists(st.integers(0, len(raw)), max_size=3)))
    return [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)])]


class FuzzTests(FastRouterTestCase):
    """
    Whatever a client sends, with any forwarder and with post-buffering on
    or off: no exception escapes, no traceback is logged, and once the
    client is gone (or the router's timers have run out) no session, timer
    or temporary file is left.
    """

    def setUp(self):
        super().setUp()
        self.network.addBackend("/run/sink/a.local.sock", AnsweringBackend())
        self.directory = self.spoolDirectory()
        spooling = dict(post_buffering=64, post_buffering_dir=self.directory, timeout=10)
        store = InMemoryStore({b"a.local": "/run/apps/a.local.sock|/run/a.sock"})
        self.routers = {
            "static, post-buffering": self.router(**spooling),
            "pattern, post-buffering": self.router(
                forwarder=PathForwarder("/run/apps/%s.sock"), **spooling),
            "base, post-buffering, limit": self.router(
                forwarder=PathForwarder.fromBase("/run/apps/"), limit_post=2000, **spooling),
            "cache, post-buffering": self.router(forwarder=CacheForwarder(store), **spooling),
            "pattern, streaming": self.router(
                forwarder=PathForwarder("/run/sink/%s.sock"), timeout=10),
            "pattern, streaming, limit": self.router(
                forwarder=PathForwarder("/run/sink/%s.sock"), limit_post=2000, timeout=10),
        }

    @settings(max_examples=300, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(st.sampled_from(FUZZED_ROUTERS), fuzzedRequests(), st.booleans())
    def test_fuzzed_requests_never_crash_or_leak(self, name, pieces, clientCloses):
        router = self.routers[name]
        client = self.network.connect(router)
        for piece in pieces:
            client.send(piece)
        if clientCloses:
            client.close()
        self.settle()
        self.assertNoTraceback()
        self.assertEqual(router.sessions, set())
        self.assertEqual(self.network.reactor.getDelayedCalls(), [])
        self.assertEqual(spoolFiles(self.directory), 0)


class DrainTests(FastRouterTestCase):
    def test_drain_finishes_in_flight_requests(self):
        backend = self.backends[("127.0.0.1", 3031)]
        backend.hold = True
        router = self.router()
        busy = self.network.connect(router)
        busy.send(request())
        silent = self.network.connect(router)
        drained = router.drain(30)
        self.network.flush()
        self.assertFalse(silent.closed)
        self.network.reactor.advance(DRAIN_SILENT_GRACE)
        self.network.flush()
        self.assertTrue(silent.closed)
        self.assertNoResult(drained)
        backend.pending()[0].respond()
        self.network.flush()
        self.assertEqual(statusOf(busy.received()), 200)
        self.successResultOf(drained)

    def test_a_packet_sent_as_the_drain_begins_is_served(self):
        """
        A connection accepted before the drain, whose packet arrives just
        after it began (its client could not know), is served, as is one
        whose packet had begun to arrive.
        """
        router = self.router()
        fresh = self.network.connect(router)
        begun = self.network.connect(router)
        begun.send(request()[:3])
        drained = router.drain(30)
        self.network.flush()
        self.network.reactor.advance(DRAIN_SILENT_GRACE - 0.5)
        fresh.send(request())
        self.network.reactor.advance(1)
        begun.send(request()[3:])
        self.network.flush()
        self.assertEqual(statusOf(fresh.received()), 200)
        self.assertEqual(statusOf(begun.received()), 200)
        self.successResultOf(drained)


class KeySelectionTests(FastRouterTestCase):
    """
    Which key a packet is routed by, over every combination of the three
    key vars being absent, empty, oversized, usable, or sent twice (with
    the same or another value), in either order: the first var present
    in UWSGI_FASTROUTER_KEY > HTTP_HOST > SERVER_NAME decides, and a
    deciding var that is empty or oversized is a refusal, never a fall
    through to the next (the client controls HTTP_HOST); a var sent twice
    with two values is a refusal too.
    """

    NAMES = (b"UWSGI_FASTROUTER_KEY", b"HTTP_HOST", b"SERVER_NAME")
    STATES = ("absent", "empty", "oversized", "usable", "twice", "two-values")

    def pairsFor(self, name: bytes, state: str) -> list:
        value = name.lower() + b".key"
        return {
            "absent": [],
            "empty": [(name, b"")],
            "oversized": [(name, b"k" * 256)],
            "usable": [(name, value)],
            "twice": [(name, value), (name, value)],
            "two-values": [(name, value), (name, b"other." + value)],
        }[state]

    def expected(self, states: dict):
        """
        The rule, stated on its own: C{("key", value)} or C{("refused",
        event)} or C{("none",)}.
        """
        if "two-values" in states.values():
            return ("refused", "ambiguous_key")
        for name in self.NAMES:
            state = states[name]
            if state == "absent":
                continue
            if state == "empty":
                return ("refused", "empty_key")
            if state == "oversized":
                return ("refused", "key_too_long")
            return ("key", name.lower() + b".key")
        return ("none",)

    def test_every_combination(self):
        from itertools import product

        from txrouter.routers.fast import KeyRefused, routingKey
        from txrouter.wire.uwsgi import PacketParser

        checked = 0
        for combination in product(self.STATES, repeat=3):
            states = dict(zip(self.NAMES, combination))
            pairs = [pair for name in self.NAMES for pair in self.pairsFor(name, states[name])]
            for ordered in (pairs, pairs[::-1]):
                packet = PacketParser().feed(encodePacket([(b"PATH_INFO", b"/")] + ordered))
                try:
                    key = routingKey(packet)
                    outcome = ("none",) if key is None else ("key", key)
                except KeyRefused as e:
                    outcome = ("refused", e.event)
                self.assertEqual(outcome, self.expected(states), (states, ordered))
                checked += 1
        self.assertEqual(checked, 2 * 6 ** 3)

    def test_an_empty_forced_key_is_refused_not_routed_by_the_host(self):
        """
        Behind C{uwsgi_param UWSGI_FASTROUTER_KEY $app} with C{$app}
        empty, nginx still sends the var: the request is refused (as uWSGI
        closes) and no node hears of it, whatever Host the client sent.
        """
        router = self.router(forwarder=CacheForwarder(InMemoryStore({"a.local": "127.0.0.1:3031"})))
        client = self.network.connect(router)
        client.send(request(extra=[(b"UWSGI_FASTROUTER_KEY", b"")]))
        self.assertEqual(statusOf(client.received()), 400)
        self.assertIn("empty_key", self.eventNames())
        self.assertEqual(self.backends[("127.0.0.1", 3031)].connections, [])
        client = self.network.connect(router)
        client.send(request())
        self.assertEqual(statusOf(client.received()), 200)


class SlowBodyTests(FastRouterTestCase):
    def test_a_drip_fed_post_buffered_body_is_cut_with_408(self):
        """
        With post-buffering, a body drip-fed below --min-body-rate is
        refused before any node is connected.
        """
        router = self.router(post_buffering=1 << 20, min_body_rate=100, timeout=10)
        client = self.network.connect(router)
        client.send(request(body=b"x" * 4000)[:-4000])
        while not client.received() and self.network.reactor.seconds() < 30:
            self.network.reactor.advance(2)
            client.send(b"x")
        self.assertEqual(statusOf(client.received()), 408)
        self.assertIn("body_too_slow", self.eventNames())
        self.assertLessEqual(self.network.reactor.seconds(), 14)
        self.assertEqual(self.backends[("127.0.0.1", 3031)].connections, [])
