"""
The raw router against fake transports: the client's (a
L{StringTransport} that can be half-closed) and the nodes' (connected by
hand from a L{MemoryReactorClock}'s connect calls).
"""

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.error import ConnectionLost, ConnectionRefusedError
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from txrouter.build import buildService
from txrouter.config import RawRouterConfig
from txrouter.routers.raw import MAX_GREETING, RawRouter, keyOfEndpoint, keyOfHost, xclientLine
from txrouter.routing.cache import CacheForwarder, InMemoryStore
from txrouter.routing.nodes import parseNode
from txrouter.routing.subscriptions import SubscriptionRegistry
from txrouter.wire.subscription import Subscription

CLIENT = IPv4Address("TCP", "192.0.2.7", 40000)


class HalfCloseableTransport(StringTransport):
    """
    A connection's transport whose write side can be closed (as Twisted's
    TCP transport, which tells a half-closeable protocol once its FIN is
    sent) and that records everything written before.

    @ivar writeClosedAfter: the bytes written when the write side was
        closed, or L{None} while it is open.
    """

    writeClosedAfter = None
    protocol = None

    def loseWriteConnection(self) -> None:
        if self.writeClosedAfter is not None:
            return
        self.writeClosedAfter = self.value()
        halfCloseable = IHalfCloseableProtocol(self.protocol, None)
        if halfCloseable is not None:
            halfCloseable.writeConnectionLost()

    def receiveFIN(self) -> None:
        """
        The peer half-closed: what Twisted's TCP transport does.
        """
        halfCloseable = IHalfCloseableProtocol(self.protocol, None)
        if halfCloseable is not None:
            halfCloseable.readConnectionLost()
        else:
            self.protocol.connectionLost(Failure(ConnectionLost()))

    @property
    def aborted(self) -> bool:
        """
        Whether the connection was aborted (StringTransport marks it
        disconnected).
        """
        return self.disconnected

    @property
    def cut(self) -> bool:
        """
        Whether the connection was closed (gracefully or not).
        """
        return self.disconnecting


class RawRouterTestCase(SynchronousTestCase):
    def setUp(self):
        self.reactor = MemoryReactorClock()
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def router(self, nodes=("127.0.0.1:5000",), **kwargs):
        if "forwarder" in kwargs:
            nodes = ()  # the forwarder finds the nodes
        return RawRouter(self.reactor, [parseNode(n) for n in nodes], **kwargs)

    def connect(self, router, listener="tcp:9100:interface=127.0.0.1", peer=CLIENT):
        """
        Accept a client on the listener bound with C{listener}.

        @return: the session and the client's transport.
        """
        session = router.listenerFactory(listener).buildProtocol(peer)
        transport = HalfCloseableTransport(
            hostAddress=IPv4Address("TCP", "127.0.0.1", 9100), peerAddress=peer,
        )
        transport.protocol = session
        session.makeConnection(transport)
        return session, transport

    def connecting(self) -> "list[tuple[str, int]]":
        """
        The addresses being connected to.
        """
        return [(host, port) for host, port, *rest in self.reactor.tcpClients]

    def acceptNode(self):
        """
        The node being connected to accepts.

        @return: the node connection's protocol and transport.
        """
        host, port, factory = self.reactor.tcpClients.pop(0)[:3]
        self.reactor.connectors.pop(0)
        protocol = factory.buildProtocol(IPv4Address("TCP", host, port))
        transport = HalfCloseableTransport(peerAddress=IPv4Address("TCP", host, port))
        transport.protocol = protocol
        protocol.makeConnection(transport)
        return protocol, transport

    def refuseNode(self) -> None:
        """
        The node being connected to refuses.
        """
        factory = self.reactor.tcpClients.pop(0)[2]
        connector = self.reactor.connectors.pop(0)
        factory.clientConnectionFailed(connector, Failure(ConnectionRefusedError()))

    def eventNames(self):
        return [e.get("event") for e in self.events if e.get("event")]


class KeyTests(RawRouterTestCase):
    def test_key_is_the_uwsgi_spelling_of_the_bind(self):
        """
        A connection is routed by its listener's bind in uWSGI's spelling,
        as uWSGI routes by its bind string and nodes subscribe under it.
        """
        self.assertEqual(keyOfEndpoint("tcp:9100:interface=127.0.0.1"), b"127.0.0.1:9100")
        self.assertEqual(keyOfEndpoint("tcp:9100"), b":9100")
        self.assertEqual(keyOfEndpoint("tcp6:9100:interface=\\:\\:1"), b"[::1]:9100")
        self.assertEqual(keyOfEndpoint("unix:/run/r.sock"), b"/run/r.sock")
        self.assertEqual(keyOfEndpoint("systemd:domain=INET:index=0"), b"systemd:domain=INET:index=0")

    def test_each_listener_routes_by_its_own_key(self):
        store = InMemoryStore({b"127.0.0.1:9100": "127.0.0.1:5000", b":9200": "127.0.0.1:5001"})
        router = self.router(nodes=(), forwarder=CacheForwarder(store))
        self.connect(router, "tcp:9100:interface=127.0.0.1")
        self.connect(router, "tcp:9200")
        self.assertEqual(self.connecting(), [("127.0.0.1", 5000), ("127.0.0.1", 5001)])

    def test_fixed_key(self):
        store = InMemoryStore({b"db": "127.0.0.1:5432"})
        router = self.router(nodes=(), forwarder=CacheForwarder(store), key="db")
        self.connect(router, "tcp:9100")
        self.assertEqual(self.connecting(), [("127.0.0.1", 5432)])

    def test_without_a_listener_the_accepting_address_is_the_key(self):
        """
        A router given to a listener directly (a C{.tac} file's own
        endpoint) routes by the address the connection was accepted on.
        """
        store = InMemoryStore({b"127.0.0.1:9100": "127.0.0.1:5000"})
        router = self.router(nodes=(), forwarder=CacheForwarder(store))
        session = router.buildProtocol(CLIENT)
        transport = HalfCloseableTransport(
            hostAddress=IPv4Address("TCP", "127.0.0.1", 9100), peerAddress=CLIENT,
        )
        session.makeConnection(transport)
        self.assertEqual(self.connecting(), [("127.0.0.1", 5000)])
        self.assertEqual(keyOfHost(IPv6Address("TCP", "::1", 9)), b"[::1]:9")
        self.assertEqual(keyOfHost(UNIXAddress(b"/run/r.sock")), b"/run/r.sock")


class RelayTests(RawRouterTestCase):
    def test_the_node_speaks_first(self):
        """
        The node is connected as soon as the client is accepted, so its
        greeting reaches a client that has sent nothing.
        """
        session, client = self.connect(self.router())
        self.assertEqual(self.connecting(), [("127.0.0.1", 5000)])
        node, nodeTransport = self.acceptNode()
        node.dataReceived(b"220 mail.example ESMTP\r\n")
        self.assertEqual(client.value(), b"220 mail.example ESMTP\r\n")
        self.assertEqual(nodeTransport.value(), b"")

    def test_bytes_go_both_ways_verbatim(self):
        session, client = self.connect(self.router())
        session.dataReceived(b"early ")
        node, nodeTransport = self.acceptNode()
        session.dataReceived(b"\x00\xffbinary")
        node.dataReceived(b"\r\n\x00answer")
        self.assertEqual(nodeTransport.value(), b"early \x00\xffbinary")
        self.assertEqual(client.value(), b"\r\n\x00answer")

    def test_an_http_node_is_relayed_to_as_tcp(self):
        """
        An C{http://} node gets the client's bytes, nothing added.
        """
        session, client = self.connect(self.router(nodes=("http://127.0.0.1:5000",)))
        node, nodeTransport = self.acceptNode()
        session.dataReceived(b"anything")
        self.assertEqual(nodeTransport.value(), b"anything")

    def test_a_failed_connect_is_retried_on_the_next_node(self):
        """
        Bytes the client sent while a node refused go to the next node,
        once.
        """
        router = self.router(nodes=("127.0.0.1:5000", "127.0.0.1:5001"))
        session, client = self.connect(router)
        session.dataReceived(b"hello")
        self.refuseNode()
        self.assertEqual(self.connecting(), [("127.0.0.1", 5001)])
        node, nodeTransport = self.acceptNode()
        self.assertEqual(nodeTransport.value(), b"hello")
        self.assertFalse(client.cut)
        self.assertIn("backend_unreachable", self.eventNames())

    def test_fallback_after_failed_connects(self):
        router = self.router(fallback=[parseNode("127.0.0.1:6000")])
        self.connect(router)
        self.refuseNode()
        self.assertEqual(self.connecting(), [("127.0.0.1", 6000)])

    def test_no_retry_once_connected(self):
        """
        A node that goes away after it was connected (and may have got the
        client's bytes) is never replaced: the client is closed.
        """
        router = self.router(nodes=("127.0.0.1:5000", "127.0.0.1:5001"))
        session, client = self.connect(router)
        node, nodeTransport = self.acceptNode()
        session.dataReceived(b"INSERT ...")
        node.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(self.connecting(), [])
        self.assertTrue(client.cut)
        self.assertEqual(router.requestSettings.retryCounts.asDict()["node_closed"], 0)

    def test_no_retry_after_bytes_were_relayed(self):
        router = self.router(nodes=("127.0.0.1:5000", "127.0.0.1:5001"))
        session, client = self.connect(router)
        node, nodeTransport = self.acceptNode()
        node.dataReceived(b"+OK")
        session.dataReceived(b"QUIT")
        node.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(self.connecting(), [])
        self.assertTrue(client.aborted)

    def test_retries_run_out(self):
        """
        When no node can be reached the client is closed (there is nothing
        to answer in), with one line saying why.
        """
        router = self.router(nodes=("127.0.0.1:5000", "127.0.0.1:5001"), max_retries=1)
        session, client = self.connect(router)
        self.refuseNode()
        self.assertFalse(client.cut)
        self.refuseNode()
        self.assertTrue(client.cut)
        self.assertEqual(client.value(), b"")
        # A line per failed attempt, and the refusal's.
        self.assertEqual(self.eventNames().count("backend_unreachable"), 3)
        self.assertEqual(router.sessions, {session})
        session.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(router.sessions, set())

    def test_no_node_for_the_key(self):
        router = self.router(nodes=(), forwarder=CacheForwarder(InMemoryStore({})))
        session, client = self.connect(router)
        self.assertTrue(client.cut)
        self.assertEqual(self.eventNames(), ["no_node_for_key"])
        [event] = [e for e in self.events if e.get("event") == "no_node_for_key"]
        self.assertEqual(event["key"], b"127.0.0.1:9100")

    def test_bytes_are_counted_per_node(self):
        registry = SubscriptionRegistry(self.reactor)
        registry.apply(Subscription(b"127.0.0.1:9100", b"127.0.0.1:5000"), "127.0.0.1")
        router = self.router(nodes=(), forwarder=registry)
        session, client = self.connect(router)
        node, nodeTransport = self.acceptNode()
        session.dataReceived(b"12345")
        node.dataReceived(b"123")
        session.connectionLost(Failure(ConnectionLost()))
        [(name, [pool])] = registry.statsFields()
        [entry] = pool["nodes"]
        self.assertEqual((entry["rx"], entry["tx"], entry["requests"]), (5, 3, 1))


class HalfCloseTests(RawRouterTestCase):
    def test_client_fin_reaches_the_node_which_may_still_answer(self):
        router = self.router()
        session, client = self.connect(router)
        node, nodeTransport = self.acceptNode()
        session.dataReceived(b"question")
        client.receiveFIN()
        self.assertEqual(nodeTransport.writeClosedAfter, b"question")
        self.assertFalse(client.cut)
        node.dataReceived(b"answer")
        self.assertEqual(client.value(), b"answer")
        nodeTransport.receiveFIN()
        self.assertEqual(client.writeClosedAfter, b"answer")
        # Both directions are over: the session ends.
        self.assertTrue(client.cut)
        self.assertTrue(nodeTransport.cut)

    def test_node_fin_reaches_the_client_which_may_still_send(self):
        router = self.router()
        session, client = self.connect(router)
        node, nodeTransport = self.acceptNode()
        node.dataReceived(b"banner")
        nodeTransport.receiveFIN()
        self.assertEqual(client.writeClosedAfter, b"banner")
        self.assertFalse(nodeTransport.cut)
        session.dataReceived(b"upload")
        self.assertEqual(nodeTransport.value(), b"upload")
        client.receiveFIN()
        self.assertEqual(nodeTransport.writeClosedAfter, b"upload")
        self.assertTrue(client.cut)
        self.assertTrue(nodeTransport.cut)

    def test_client_fin_while_connecting_follows_its_bytes(self):
        session, client = self.connect(self.router())
        session.dataReceived(b"all of it")
        client.receiveFIN()
        node, nodeTransport = self.acceptNode()
        self.assertEqual(nodeTransport.writeClosedAfter, b"all of it")


class TimeoutTests(RawRouterTestCase):
    def test_an_idle_relay_is_cut_both_ways(self):
        router = self.router(timeout=30)
        session, client = self.connect(router)
        node, nodeTransport = self.acceptNode()
        node.dataReceived(b"hi")
        self.reactor.advance(29)
        session.dataReceived(b"still here")
        self.reactor.advance(29)
        self.assertFalse(nodeTransport.cut)
        self.reactor.advance(2)
        self.assertTrue(nodeTransport.aborted)
        # What the reactor does next:
        node.connectionLost(Failure(ConnectionLost()))
        self.assertTrue(client.aborted)
        self.assertIn("relay_cut", self.eventNames())

    def test_a_silent_node_gets_no_uwsgi_hint(self):
        """
        A node that closes, or stays silent, before any byte is logged
        without the HTTP and uwsgi routers' hint to name it C{http://}:
        the raw router sent it no uwsgi packet, and relays to an
        C{http://} node as to any other.
        """
        router = self.router(timeout=30, max_retries=0)
        self.connect(router)
        node, nodeTransport = self.acceptNode()
        node.connectionLost(Failure(ConnectionLost()))
        self.connect(router)
        node, nodeTransport = self.acceptNode()
        self.reactor.advance(31)
        node.connectionLost(Failure(ConnectionLost()))
        self.assertIn("backend_closed", self.eventNames())
        lines = [formatEvent(e) for e in self.events]
        self.assertFalse([line for line in lines if "uwsgi" in line or "http://" in line], lines)

    def test_a_node_that_never_accepts(self):
        router = self.router(timeout=30, max_retries=0)
        session, client = self.connect(router)
        connector = self.reactor.connectors[0]
        self.reactor.advance(30)
        self.assertTrue(connector.stoppedConnecting)


class BackPressureTests(RawRouterTestCase):
    def test_a_full_node_pauses_the_client(self):
        session, client = self.connect(self.router())
        node, nodeTransport = self.acceptNode()
        nodeTransport.producer.pauseProducing()
        self.assertEqual(client.producerState, "paused")
        nodeTransport.producer.resumeProducing()
        self.assertEqual(client.producerState, "producing")

    def test_a_full_client_pauses_the_node(self):
        session, client = self.connect(self.router())
        node, nodeTransport = self.acceptNode()
        node.dataReceived(b"x" * 100000)
        client.producer.pauseProducing()
        self.assertEqual(nodeTransport.producerState, "paused")
        client.producer.resumeProducing()
        self.assertEqual(nodeTransport.producerState, "producing")

    def test_the_client_waits_while_too_much_is_held(self):
        session, client = self.connect(self.router())
        session.dataReceived(b"x" * 70000)
        self.assertEqual(client.producerState, "paused")
        self.acceptNode()
        self.assertEqual(client.producerState, "producing")


class DrainTests(RawRouterTestCase):
    def test_an_open_relay_finishes(self):
        router = self.router()
        session, client = self.connect(router)
        node, nodeTransport = self.acceptNode()
        drained = router.drain(30)
        self.assertNoResult(drained)
        self.assertFalse(client.cut)
        session.dataReceived(b"last words")
        self.assertEqual(nodeTransport.value(), b"last words")
        client.receiveFIN()
        nodeTransport.receiveFIN()
        session.connectionLost(Failure(ConnectionLost()))
        self.successResultOf(drained)

    def test_an_open_relay_is_aborted_at_the_deadline(self):
        router = self.router()
        session, client = self.connect(router)
        self.acceptNode()
        drained = router.drain(30)
        self.reactor.advance(30)
        self.assertTrue(client.aborted)
        session.connectionLost(Failure(ConnectionLost()))
        self.successResultOf(drained)


class XClientTests(RawRouterTestCase):
    def test_greeting_withheld_and_xclient_sent(self):
        """
        The node's first line is not relayed; XCLIENT with the client's
        address is sent in its place, and what follows is relayed.
        """
        session, client = self.connect(self.router(xclient=True))
        # The client's bytes must not reach the node before XCLIENT.
        self.assertEqual(client.producerState, "paused")
        node, nodeTransport = self.acceptNode()
        node.dataReceived(b"220 mx ESMTP")
        self.assertEqual(nodeTransport.value(), b"")
        node.dataReceived(b" Postfix\r\n")
        self.assertEqual(nodeTransport.value(), b"XCLIENT ADDR=192.0.2.7\r\n")
        self.assertEqual(client.value(), b"")
        self.assertEqual(client.producerState, "producing")
        node.dataReceived(b"220 mx ESMTP Postfix\r\n")
        self.assertEqual(client.value(), b"220 mx ESMTP Postfix\r\n")
        session.dataReceived(b"EHLO c\r\n")
        self.assertEqual(nodeTransport.value(), b"XCLIENT ADDR=192.0.2.7\r\nEHLO c\r\n")
        self.assertIs(nodeTransport.producer, session.relay)

    def test_bytes_after_the_greeting_line_are_relayed(self):
        session, client = self.connect(self.router(xclient=True))
        node, nodeTransport = self.acceptNode()
        node.dataReceived(b"220 first\r\n220 again\r\n")
        self.assertEqual(client.value(), b"220 again\r\n")

    def test_ipv6_client(self):
        peer = IPv6Address("TCP", "2001:db8::1", 40000)
        session, client = self.connect(self.router(xclient=True), peer=peer)
        node, nodeTransport = self.acceptNode()
        node.dataReceived(b"220 hi\r\n")
        self.assertEqual(nodeTransport.value(), b"XCLIENT ADDR=IPV6:2001:db8::1\r\n")

    def test_addresses(self):
        self.assertEqual(xclientLine(IPv4Address("TCP", "10.0.0.1", 1)), b"XCLIENT ADDR=10.0.0.1\r\n")
        self.assertEqual(
            xclientLine(IPv6Address("TCP", "::ffff:10.0.0.1", 1)), b"XCLIENT ADDR=10.0.0.1\r\n",
        )
        self.assertEqual(
            xclientLine(IPv6Address("TCP", "2001:0db8:0::1", 1)),
            b"XCLIENT ADDR=IPV6:2001:db8::1\r\n",
        )
        self.assertEqual(xclientLine(UNIXAddress(None)), b"XCLIENT ADDR=[UNAVAILABLE]\r\n")

    def test_long_greeting_refused(self):
        session, client = self.connect(self.router(xclient=True))
        node, nodeTransport = self.acceptNode()
        node.dataReceived(b"2" * (MAX_GREETING - 1))
        self.assertFalse(client.cut)
        node.dataReceived(b"2\r\n")
        self.assertTrue(client.cut)
        self.assertEqual(client.value(), b"")
        self.assertEqual(nodeTransport.value(), b"")
        self.assertIn("xclient_greeting_too_long", self.eventNames())

    def test_greeting_at_the_limit_accepted(self):
        session, client = self.connect(self.router(xclient=True))
        node, nodeTransport = self.acceptNode()
        node.dataReceived(b"2" * (MAX_GREETING - 2) + b"\r\n")
        self.assertEqual(nodeTransport.value(), b"XCLIENT ADDR=192.0.2.7\r\n")

    def test_missing_greeting_refused(self):
        session, client = self.connect(self.router(xclient=True, timeout=10))
        node, nodeTransport = self.acceptNode()
        self.reactor.advance(10)
        self.assertTrue(nodeTransport.aborted)
        node.connectionLost(Failure(ConnectionLost()))
        self.assertTrue(client.cut)
        self.assertEqual(nodeTransport.value(), b"")
        self.assertIn("xclient_no_greeting", self.eventNames())

    def test_node_closing_before_its_greeting(self):
        session, client = self.connect(self.router(xclient=True))
        node, nodeTransport = self.acceptNode()
        nodeTransport.receiveFIN()
        self.assertTrue(client.cut)
        self.assertIn("xclient_no_greeting", self.eventNames())


class ConfigurationTests(SynchronousTestCase):
    def test_body_options_refused(self):
        for name, value in [("post_buffering", 10), ("limit_post", 10)]:
            with self.assertRaises(ValueError) as caught:
                RawRouter(MemoryReactorClock(), [parseNode(":5000")], **{name: value})
            self.assertIn(name, str(caught.exception))

    def test_config_refuses_body_options(self):
        """
        The options about request bodies are refused by name, whatever
        their value but the default.
        """
        for name, value in [("post_buffering", 10), ("post_buffering_dir", "/tmp"),
                            ("limit_post", 10), ("min_body_rate", 0), ("retry_methods", "GET")]:
            with self.assertRaises(ValueError) as caught:
                RawRouterConfig(bind=["tcp:9100"], to=[":5000"], **{name: value})
            self.assertIn("--" + name.replace("_", "-"), str(caught.exception))

    def test_config_key_bounds(self):
        with self.assertRaises(ValueError):
            RawRouterConfig(bind=["tcp:9100"], to=[":5000"], key="")
        with self.assertRaises(ValueError):
            RawRouterConfig(bind=["tcp:9100"], to=[":5000"], key="k" * 256)

    def test_each_listener_of_the_built_service_has_its_key(self):
        config = RawRouterConfig(
            bind=["tcp:9100:interface=127.0.0.1", "tcp:9200"], to=["127.0.0.1:5000"],
            xclient=True, max_retries=1,
        )
        service = buildService(config, MemoryReactorClock())
        self.assertEqual([listener.factory.key for listener in service.listeners],
                         [b"127.0.0.1:9100", b":9200"])
        router = service.router
        self.assertIsInstance(router, RawRouter)
        self.assertTrue(router.xclient)
        self.assertEqual(router.maxRetries, 1)
        self.assertTrue(all(listener.factory.router is router for listener in service.listeners))

    def test_a_fixed_key_for_every_listener(self):
        config = RawRouterConfig(bind=["tcp:9100", "tcp:9200"], to=["127.0.0.1:5000"], key="db")
        service = buildService(config, MemoryReactorClock())
        self.assertEqual([listener.factory.key for listener in service.listeners], [b"db", b"db"])
