"""
Units of the health checks (C{--check-interval}): the fall/rise count of
L{NodeHealth}, the static forwarder and the retry plan leaving out what the
checks found down (and its interplay with quarantine), the probes over
fake connections (L{NodeProbe}), the checker's rounds on a clock
(L{HealthChecker}), the stats, metrics and page, and the options.
"""

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import globalLogPublisher
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tests.logs import named
from txrouter.build import buildService
from txrouter.checks import HealthChecker, NodeProbe, checkRequest, proxyHeaderFor
from txrouter.config import FastRouterConfig, HTTPRouterConfig, RawRouterConfig
from txrouter.routers.http import HTTPRouter
from txrouter.routing.health import DEFAULT_FALL, DEFAULT_RISE, NodeHealth
from txrouter.routing.nodes import parseNode
from txrouter.routing.retry import RetryPlan
from txrouter.routing.static import StaticForwarder
from txrouter.stats.metrics import metricsPage
from txrouter.stats.page import renderPage
from txrouter.tap.http import Options as HTTPOptions
from txrouter.testing import MemoryNetwork, UwsgiWSGIBackend
from txrouter.transports import NodeBusy

A = parseNode("127.0.0.1:3031")
B = parseNode("/run/b.sock")
F1 = parseNode("127.0.0.1:4001")
F2 = parseNode("127.0.0.1:4002")
WEB = parseNode("http://127.0.0.1:8000")


class Logged:
    """
    Mixin: C{self.events} collects the log events of the test.
    """

    def captureLog(self):
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)


def failTimes(health, node, times, reason="refused"):
    for _ in range(times):
        health.failed(node, reason)


def passTimes(health, node, times, reason="connected"):
    for _ in range(times):
        health.passed(node, reason)


class NodeHealthTests(SynchronousTestCase, Logged):
    def setUp(self):
        self.captureLog()
        self.clock = Clock()
        self.clock.advance(1000)
        self.health = NodeHealth(self.clock, [A, B], [F1], fall=3, rise=2)

    def test_defaults_are_haproxys(self):
        """
        HAProxy's C{fall 3} and C{rise 2}.
        """
        self.assertEqual((DEFAULT_FALL, DEFAULT_RISE), (3, 2))
        health = NodeHealth(self.clock, [A])
        self.assertEqual((health.fall, health.rise), (3, 2))

    def test_nodes_start_up(self):
        self.assertEqual(self.health.nodes, [A, B, F1])
        self.assertFalse(any(self.health.isDown(node) for node in self.health.nodes))

    def test_fall_failures_in_a_row_take_a_node_out(self):
        failTimes(self.health, A, 2)
        self.assertFalse(self.health.isDown(A))
        self.health.failed(A, "connect timed out")
        self.assertTrue(self.health.isDown(A))
        self.assertFalse(self.health.isDown(B))
        [event] = named(self.events, "node_check_failed")
        self.assertEqual((event["node"], event["reason"]), (A.name, "connect timed out"))

    def test_a_pass_between_starts_the_count_again(self):
        failTimes(self.health, A, 2)
        self.health.passed(A, "connected")
        failTimes(self.health, A, 2)
        self.assertFalse(self.health.isDown(A))

    def test_rise_passes_in_a_row_bring_it_back(self):
        failTimes(self.health, A, 3)
        self.health.passed(A, "connected")
        self.health.failed(A, "refused")
        self.health.passed(A, "connected")
        self.assertTrue(self.health.isDown(A))
        self.health.passed(A, "connected")
        self.assertFalse(self.health.isDown(A))
        [event] = named(self.events, "node_check_passed")
        self.assertEqual((event["node"], event["reason"]), (A.name, "connected"))

    def test_each_change_logged_once(self):
        failTimes(self.health, A, 10)
        passTimes(self.health, A, 10)
        failTimes(self.health, A, 10)
        self.assertEqual(len(named(self.events, "node_check_failed")), 2)
        self.assertEqual(len(named(self.events, "node_check_passed")), 1)

    def test_watchers_hear_changes(self):
        heard = []
        self.health.watch(lambda node, up: heard.append((node, up)))
        failTimes(self.health, A, 3)
        passTimes(self.health, A, 2)
        self.assertEqual(heard, [(A, False), (A, True)])

    def test_stats(self):
        failTimes(self.health, B, 3, "connect timed out")
        [(key, checks)] = self.health.statsFields()
        self.assertEqual(key, "node_checks")
        self.assertEqual(checks[1], {
            "name": B.name, "role": "to", "state": "down", "since": 1000, "fails": 3,
            "passes": 0, "reason": "connect timed out",
        })
        self.assertEqual((checks[2]["role"], checks[2]["state"], checks[2]["since"]),
                         ("fallback", "up", 0))


class StaticForwarderTests(SynchronousTestCase, Logged):
    def setUp(self):
        self.captureLog()
        self.clock = Clock()
        self.clock.advance(1000)
        self.health = NodeHealth(self.clock, [A, B], fall=1, rise=2)

    def forwarder(self, **kwargs):
        return StaticForwarder([A, B], self.clock, gracetime=30, health=self.health, **kwargs)

    def test_round_robin_skips_a_node_down(self):
        forwarder = self.forwarder()
        self.health.failed(B, "refused")
        self.assertEqual([forwarder.pick(b"k") for _ in range(4)], [A] * 4)
        passTimes(self.health, B, 2)
        self.assertEqual({forwarder.pick(b"k") for _ in range(4)}, {A, B})

    def test_balancer_skips_a_node_down(self):
        forwarder = self.forwarder(algo="lrc")
        self.health.failed(A, "refused")
        picks = []
        for _ in range(3):
            node = forwarder.pick(b"k")
            forwarder.connected(b"k", node)
            picks.append(node)
        self.assertEqual(picks, [B] * 3)

    def test_checks_take_even_the_last_node_out(self):
        """
        Unlike a failed request's quarantine, the checks take the last node
        out: the request then finds none (503 C{all_nodes_dead}).
        """
        forwarder = self.forwarder()
        self.health.failed(A, "refused")
        self.health.failed(B, "refused")
        self.assertIsNone(forwarder.pick(b"k"))
        self.assertEqual([n["check"] for n in dict(forwarder.statsFields())["static_nodes"]],
                         ["down", "down"])

    def test_availability_follows_the_checks(self):
        forwarder = self.forwarder()
        heard = []
        forwarder.watchAvailability(heard.append)
        self.health.failed(A, "refused")
        self.health.failed(B, "refused")
        self.assertEqual((heard, forwarder.available), ([False], False))
        passTimes(self.health, B, 2)
        self.assertEqual((heard, forwarder.available), ([False, True], True))

    def test_quarantine_spares_the_last_node_in_rotation(self):
        """
        A failed request does not quarantine the last node the checks left
        in rotation.
        """
        forwarder = self.forwarder()
        self.health.failed(B, "refused")
        forwarder.failed(b"k", A)
        self.assertFalse(forwarder.isDead(A))
        self.assertEqual(forwarder.pick(b"k"), A)

    def test_passing_checks_end_a_quarantine(self):
        """
        A node a failed request put in quarantine is back once it passed
        C{rise} probes in a row since, long before C{gracetime}; the passes
        it had before the failure do not count.
        """
        forwarder = self.forwarder()
        passTimes(self.health, A, 5)
        forwarder.failed(b"k", A)
        self.assertTrue(forwarder.isDead(A))
        self.health.passed(A, "connected")
        self.assertTrue(forwarder.isDead(A))
        self.clock.advance(2)
        self.health.passed(A, "connected")
        self.assertFalse(forwarder.isDead(A))
        self.assertEqual({forwarder.pick(b"k") for _ in range(2)}, {A, B})
        [event] = named(self.events, "node_check_passed")
        self.assertEqual(event["node"], A.name)
        self.assertIn("quarantine over", event["reason"])

    def test_a_quarantine_already_over_is_not_logged(self):
        forwarder = self.forwarder()
        forwarder.failed(b"k", A)
        self.clock.advance(31)
        passTimes(self.health, A, 2)
        self.assertEqual(named(self.events, "node_check_passed"), [])

    def test_without_checks_as_before(self):
        forwarder = StaticForwarder([A, B], self.clock)
        self.assertNotIn("check", dict(forwarder.statsFields())["static_nodes"][0])


class RetryPlanTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.health = NodeHealth(self.clock, [A], [F1, F2], fall=1, rise=1)
        self.forwarder = StaticForwarder([A], self.clock, health=self.health)

    def test_fallback_down_passed_over(self):
        self.health.failed(F1, "refused")
        plan = RetryPlan(self.forwarder, b"k", 3, (F1, F2), health=self.health)
        self.assertEqual(plan.first(), A)
        self.assertEqual(plan.afterFailure(A), F2)
        self.assertIsNone(plan.afterFailure(F2))

    def test_every_node_down_goes_to_the_fallback(self):
        """
        With checks, a request whose forwarder has no node in rotation goes
        to the fallback nodes (HAProxy's backup servers).
        """
        self.health.failed(A, "refused")
        plan = RetryPlan(self.forwarder, b"k", 3, (F1, F2), health=self.health)
        self.assertEqual(plan.first(), F1)
        self.assertEqual(plan.afterFailure(F1), F2)

    def test_everything_down(self):
        for node in (A, F1, F2):
            self.health.failed(node, "refused")
        plan = RetryPlan(self.forwarder, b"k", 3, (F1, F2), health=self.health)
        self.assertIsNone(plan.first())

    def test_without_checks_no_node_no_fallback(self):
        """
        uWSGI's rule stays without checks: no node, no fallback.
        """
        forwarder = StaticForwarder([A], self.clock)
        forwarder.watchAvailability(lambda available: None)
        forwarder.failed(b"k", A)
        plan = RetryPlan(forwarder, b"k", 3, (F1, F2))
        self.assertIsNone(plan.first())


class ProbeTests(SynchronousTestCase):
    def setUp(self):
        self.reactor = MemoryReactorClock()
        self.outcomes = []

    def probe(self, node=A, timeout=2.0, path="/", proxyHeader=b""):
        probe = NodeProbe(self.reactor, node, timeout, path, proxyHeader)
        probe.deferred.addCallback(self.outcomes.append)
        probe.start()
        return probe

    def connect(self, probe):
        transport = StringTransport()
        protocol = probe.buildProtocol(None)
        protocol.makeConnection(transport)
        return protocol, transport

    def test_connect_passes(self):
        probe = self.probe()
        [(host, port, factory, _, _)] = self.reactor.tcpClients
        self.assertEqual((host, port, factory), (A.host, A.port, probe))
        self.assertEqual(self.outcomes, [])
        protocol, transport = self.connect(probe)
        self.assertEqual(self.outcomes, [(True, "connected")])
        self.assertEqual(transport.value(), b"")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_proxy_header_first(self):
        """
        Nodes sent a PROXY protocol header get one that names no client.
        """
        self.assertEqual(proxyHeaderFor(1), b"PROXY UNKNOWN\r\n")
        self.assertEqual(proxyHeaderFor(2)[12:16], b"\x20\x00\x00\x00")
        self.assertEqual(proxyHeaderFor(0), b"")
        protocol, transport = self.connect(self.probe(proxyHeader=b"PROXY UNKNOWN\r\n"))
        self.assertEqual(transport.value(), b"PROXY UNKNOWN\r\n")
        self.assertEqual(self.outcomes, [(True, "connected")])
        protocol, transport = self.connect(self.probe(WEB, proxyHeader=b"PROXY UNKNOWN\r\n"))
        self.assertTrue(transport.value().startswith(b"PROXY UNKNOWN\r\nGET / HTTP/1.1\r\n"))

    def test_unix_node(self):
        self.probe(B)
        [(path, factory, _, _)] = self.reactor.unixClients
        self.assertEqual(path, B.path)

    def test_refused_fails(self):
        probe = self.probe()
        probe.clientConnectionFailed(None, Failure(ConnectionRefusedError()))
        [(passed, reason)] = self.outcomes
        self.assertFalse(passed)
        self.assertIn("refused", reason)

    def test_busy_passes(self):
        probe = self.probe(B)
        probe.clientConnectionFailed(None, Failure(NodeBusy()))
        self.assertEqual(self.outcomes, [(True, "busy (listen queue full)")])

    def test_connect_timeout(self):
        probe = self.probe(timeout=2.0)
        self.reactor.advance(1.9)
        self.assertEqual(self.outcomes, [])
        self.reactor.advance(0.1)
        self.assertEqual(self.outcomes, [(False, "connect timed out")])
        self.assertTrue(self.reactor.connectors[0].stoppedConnecting)
        probe.clientConnectionFailed(None, Failure(ConnectionRefusedError()))
        self.assertEqual(len(self.outcomes), 1)

    def test_http_request(self):
        probe = self.probe(WEB, path="/health?x=1")
        protocol, transport = self.connect(probe)
        self.assertEqual(
            transport.value(),
            b"GET /health?x=1 HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nUser-Agent: txrouter-check\r\n"
            b"Accept: */*\r\nConnection: close\r\n\r\n")
        self.assertEqual(self.outcomes, [])

    def test_host_of_unix_and_v6_nodes(self):
        self.assertIn(b"Host: localhost\r\n", checkRequest(parseNode("http://unix:/run/a"), "/"))
        self.assertIn(b"Host: [::1]:80\r\n", checkRequest(parseNode("http://[::1]:80"), "/"))

    def answer(self, data):
        probe = self.probe(WEB)
        protocol, transport = self.connect(probe)
        for byte in range(len(data)):
            protocol.dataReceived(data[byte:byte + 1])
        return protocol, transport

    def test_status_below_500_passes(self):
        for status in (200, 302, 404):
            self.outcomes = []
            protocol, transport = self.answer(
                b"HTTP/1.1 %d X\r\nContent-Length: 5\r\n\r\nhello" % status)
            self.assertEqual(self.outcomes, [(True, f"status {status}")])
            self.assertTrue(transport.disconnecting)

    def test_body_after_the_head_ignored(self):
        protocol, transport = self.answer(b"HTTP/1.1 200 OK\r\n\r\n")
        protocol.dataReceived(b"<html>a body that is no head</html>")
        self.assertEqual(self.outcomes, [(True, "status 200")])
        self.assertFalse(transport.disconnected)

    def test_5xx_fails(self):
        self.answer(b"HTTP/1.0 503 Service Unavailable\r\n\r\n")
        self.assertEqual(self.outcomes, [(False, "status 503")])

    def test_not_http_fails(self):
        self.answer(b"SSH-2.0-OpenSSH\r\n")
        [(passed, reason)] = self.outcomes
        self.assertFalse(passed)
        self.assertIn("HTTP/", reason)

    def test_close_before_a_response_fails(self):
        probe = self.probe(WEB)
        protocol, transport = self.connect(probe)
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\n")
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.outcomes, [(False, "closed before a response")])

    def test_silent_node_times_out(self):
        probe = self.probe(WEB, timeout=3)
        protocol, transport = self.connect(probe)
        self.reactor.advance(3)
        self.assertEqual(self.outcomes, [(False, "no response in time")])
        self.assertTrue(transport.disconnected)


class CheckerTests(SynchronousTestCase):
    def setUp(self):
        self.reactor = MemoryReactorClock()
        self.health = NodeHealth(self.reactor, [A], [F1], fall=2, rise=1)
        self.checker = HealthChecker(self.reactor, self.health, interval=5, timeout=1)

    def probes(self):
        return [factory for host, port, factory, _, _ in self.reactor.tcpClients]

    def refuseAll(self):
        for probe in self.probes():
            if probe.deferred is not None:
                probe.clientConnectionFailed(None, Failure(ConnectionRefusedError()))

    def test_rounds(self):
        """
        Every node is probed at start, then each interval; outcomes go to
        the health.
        """
        self.checker.startService()
        self.assertEqual([p.node for p in self.probes()], [A, F1])
        self.refuseAll()
        self.assertFalse(self.health.isDown(A))
        self.reactor.advance(5)
        self.assertEqual(len(self.probes()), 4)
        self.refuseAll()
        self.assertTrue(self.health.isDown(A))
        self.assertTrue(self.health.isDown(F1))
        self.reactor.advance(5)
        for probe in self.probes()[4:]:
            probe.buildProtocol(None).makeConnection(StringTransport())
        self.assertFalse(self.health.isDown(A))

    def test_timeout_defaults_to_the_interval(self):
        self.assertEqual(HealthChecker(self.reactor, self.health, interval=4).timeout, 4)

    def test_one_probe_at_a_time(self):
        checker = HealthChecker(self.reactor, self.health, interval=1, timeout=5)
        checker.startService()
        self.reactor.advance(1)
        self.reactor.advance(1)
        self.assertEqual(len(self.probes()), 2)

    def test_stop(self):
        """
        Stopping abandons the probes under way and leaves no timer.
        """
        self.checker.startService()
        self.checker.stopService()
        self.assertTrue(all(c.stoppedConnecting for c in self.reactor.connectors))
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.refuseAll()
        self.assertFalse(self.health.isDown(A))


class RouterWithChecksTests(SynchronousTestCase):
    """
    A router and its checker over an in-memory network: what the checks
    find decides where requests go, with no request failing first.
    """

    def setUp(self):
        self.network = MemoryNetwork()
        self.backends = {}
        for node in (A, B, F1):
            self.start(node)
        reactor = self.network.reactor
        self.health = NodeHealth(reactor, [A, B], [F1], fall=2, rise=2)
        self.router = HTTPRouter(reactor, [A, B], fallback=[F1], health=self.health,
                                 server_name="vm", max_retries=0)
        self.checker = HealthChecker(reactor, self.health, interval=1, timeout=0.5)
        self.checker.startService()
        self.addCleanup(self.checker.stopService)
        self.network.flush()

    def address(self, node):
        return node.path or (node.host, node.port)

    def start(self, node):
        self.backends[node] = UwsgiWSGIBackend()
        self.network.addBackend(self.address(node), self.backends[node])

    def stop(self, node):
        del self.network.backends[self.address(node)]

    def rounds(self, count):
        for _ in range(count):
            self.network.reactor.advance(1)
            self.network.flush()

    def servedBy(self, requests=4):
        """
        The nodes that served C{requests} requests (all answered 200).
        """
        before = {node: len(backend.requests) for node, backend in self.backends.items()}
        for _ in range(requests):
            client = self.network.connect(self.router)
            client.send(b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")
            self.assertTrue(client.received().startswith(b"HTTP/1.1 200 "), client.received())
        return {node for node, backend in self.backends.items()
                if len(backend.requests) > before[node]}

    def test_probes_leave_no_request_behind(self):
        self.rounds(3)
        self.assertEqual([len(b.requests) for b in self.backends.values()], [0, 0, 0])
        self.assertEqual(self.servedBy(), {A, B})

    def test_a_stopped_node_is_left_out_before_any_request(self):
        self.stop(A)
        self.rounds(2)
        self.assertTrue(self.health.isDown(A))
        self.assertEqual(self.servedBy(), {B})
        self.assertEqual(self.router.requestSettings.requestCounts.refusals, {})

    def test_every_to_node_down_goes_to_the_fallback(self):
        self.stop(A)
        self.stop(B)
        self.rounds(2)
        self.assertEqual(self.servedBy(), {F1})

    def test_back_after_rise_passes(self):
        self.stop(A)
        self.rounds(2)
        self.start(A)
        self.rounds(1)
        self.assertEqual(self.servedBy(), {B})
        self.rounds(1)
        self.assertEqual(self.servedBy(), {A, B})


class OperatorTests(SynchronousTestCase):
    """
    The checks in the stats document, the metrics and the page, and the
    options.
    """

    def router(self):
        clock = Clock()
        clock.advance(1000)
        health = NodeHealth(clock, [A, B], [F1], fall=1, rise=1)
        router = HTTPRouter(clock, [A, B], fallback=[F1], health=health)
        health.failed(B, "connect timed out")
        return router

    def test_stats_document(self):
        router = self.router()
        fields = dict(router.statsFields() + router.forwarder.statsFields())
        self.assertEqual([(n["name"], n["check"]) for n in fields["static_nodes"]],
                         [(A.name, "up"), (B.name, "down")])
        self.assertEqual([(c["name"], c["role"], c["state"]) for c in fields["node_checks"]],
                         [(A.name, "to", "up"), (B.name, "to", "down"), (F1.name, "fallback", "up")])

    def test_metrics(self):
        text = metricsPage(self.router(), "http")().decode()
        found = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "txrouter_node_check_up":
                    found[sample.labels["node"], sample.labels["role"]] = sample.value
        self.assertEqual(found, {(A.name, "to"): 1, (B.name, "to"): 0, (F1.name, "fallback"): 1})

    def test_page(self):
        router = self.router()
        document = dict(router.statsFields() + router.forwarder.statsFields())
        page = renderPage(document, "http", now=1010).decode()
        self.assertIn('<table id="node-checks">', page)
        self.assertIn('<tr class="down"><td class="name">/run/b.sock</td><td>to</td>'
                      "<td>down</td><td>10 s ago</td>", page)
        self.assertIn("<td>down (checks)</td>", page)

    def parse(self, *argv):
        options = HTTPOptions()
        options.parseOptions(["--bind", "tcp:0", *argv])
        return options.config

    def test_options(self):
        config = self.parse("--to", ":3031", "--check-interval", "2", "--check-timeout", "0.5",
                            "--check-fall", "4", "--check-rise", "3", "--check-path", "/up")
        self.assertEqual(
            (config.check_interval, config.check_timeout, config.check_fall, config.check_rise,
             config.check_path), (2.0, 0.5, 4, 3, "/up"))
        default = self.parse("--to", ":3031")
        self.assertEqual((default.check_interval, default.check_timeout, default.check_fall,
                          default.check_rise, default.check_path), (None, None, 3, 2, "/"))

    def test_bad_options(self):
        for argv, message in [
            (["--to", ":1", "--check-interval", "0"], "--check-interval: must be above 0"),
            (["--to", ":1", "--check-interval", "1", "--check-fall", "0"], "--check-fall"),
            (["--to", ":1", "--check-interval", "1", "--check-path", "up"], "--check-path"),
            (["--to", ":1", "--check-interval", "1", "--check-path", "/a b"], "--check-path"),
            (["--to", ":1", "--check-timeout", "1"], "--check-timeout needs --check-interval"),
            (["--use-base", "/run/", "--check-interval", "1"], "there is none"),
        ]:
            with self.assertRaises(usage.UsageError) as raised:
                self.parse(*argv)
            self.assertIn(message, str(raised.exception))

    def test_built(self):
        """
        L{buildService} runs the checker over the C{--to} and
        C{--fallback} nodes; the router's forwarder reads its health.
        """
        reactor = MemoryReactorClock()
        service = buildService(HTTPRouterConfig(
            bind=["tcp:0"], to=[":3031", "http://127.0.0.1:8000"], fallback=[":4001"],
            check_interval=2, check_fall=1), reactor)
        [checker] = [s for s in service if isinstance(s, HealthChecker)]
        self.assertEqual(checker.health.nodes, [
            parseNode(":3031"), parseNode("http://127.0.0.1:8000"), parseNode(":4001")])
        self.assertIs(service.router.forwarder.health, checker.health)
        self.assertIs(service.router.requestSettings.health, checker.health)
        self.assertEqual((checker.interval, checker.timeout, checker.health.fall), (2, 2, 1))

    def test_proxy_header_built(self):
        for config, header in [
            (HTTPRouterConfig(bind=["tcp:0"], to=[":1"], check_interval=1, send_proxy=True),
             b"PROXY UNKNOWN\r\n"),
            (RawRouterConfig(bind=["tcp:0"], to=[":1"], check_interval=1, send_proxy_v2=True),
             proxyHeaderFor(2)),
            (FastRouterConfig(bind=["tcp:0"], to=[":1"], check_interval=1), b""),
        ]:
            service = buildService(config, MemoryReactorClock())
            [checker] = [s for s in service if isinstance(s, HealthChecker)]
            self.assertEqual(checker.proxyHeader, header)

    def test_not_built_without_the_option(self):
        service = buildService(HTTPRouterConfig(bind=["tcp:0"], to=[":3031"]), MemoryReactorClock())
        self.assertEqual([s for s in service if isinstance(s, HealthChecker)], [])
        self.assertIsNone(service.router.health)
