"""
Units of what an operator reads: the Prometheus metrics (parsed by
C{prometheus_client}'s own parser), the stats server's answers by path
(JSON, the HTML page, C{/metrics}), the C{--metrics} listener, the JSON
access log and twistd's log as JSON lines, and their options.
"""

import io
import json
from types import SimpleNamespace

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import LogLevel
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from txrouter.accesslog import JSONAccessLog
from txrouter.build import buildService
from txrouter.config import FastRouterConfig, HTTPRouterConfig
from txrouter.lifecycle import RequestCounts, RequestSettings
from txrouter.logging import JSONLinesObserver
from txrouter.routing.nodes import parseNode
from txrouter.routing.static import StaticForwarder
from txrouter.stats.metrics import RouterCollector, metricsPage
from txrouter.stats.page import renderPage
from txrouter.stats.server import MetricsFactory, StatsFactory
from txrouter.tap.fast import Options as FastOptions

NODE = parseNode("127.0.0.1:3031")
DEAD = parseNode("127.0.0.1:3032")


def samples(text: bytes) -> dict:
    """
    C{{(name, sorted labels): value}} of a Prometheus text page.
    """
    found = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            found[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return found


def fakeRouter(clock):
    forwarder = StaticForwarder([NODE, DEAD], clock, 30.0, 1, None)
    settings = RequestSettings(reactor=clock, forwarder=forwarder)
    return SimpleNamespace(requestSettings=settings, sessions={1, 2}, forwarder=forwarder)


class MetricsTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1000)
        self.router = fakeRouter(self.clock)
        counts = self.router.requestSettings.requestCounts
        counts.started, counts.finished = 7, 5
        counts.statuses = {(2, NODE.name): 4, (5, ""): 1}
        counts.refusals = {"backend_unreachable": 1}
        counts.firstByte[0] = 3
        counts.firstByte[-1] = 1
        counts.firstByteSum = 12.5
        counts.sentToNodes, counts.receivedFromNodes = 100, 2000
        self.router.requestSettings.retryCounts.connectFailed = 2
        self.router.forwarder.failed(b"", DEAD)

    def test_text_format(self):
        """
        The page parses with prometheus_client's parser and shows each
        count under its labels.
        """
        found = samples(metricsPage(self.router, "http")())
        http = ("router", "http")
        self.assertEqual(found["txrouter_requests_total", (("node", NODE.name), http,
                                                             ("status_class", "2xx"))], 4)
        self.assertEqual(found["txrouter_requests_total", (("node", ""), http,
                                                             ("status_class", "5xx"))], 1)
        self.assertEqual(found["txrouter_requests_in_flight", (http,)], 2)
        self.assertEqual(found["txrouter_requests_started_total", (http,)], 7)
        self.assertEqual(found["txrouter_refusals_total", (("event", "backend_unreachable"), http)], 1)
        self.assertEqual(found["txrouter_retries_total", (("cause", "connect_failed"), http)], 2)
        self.assertEqual(found["txrouter_client_connections", (http,)], 2)
        self.assertEqual(found["txrouter_node_bytes_received_total", (http,)], 2000)
        self.assertEqual(found["txrouter_static_node_quarantined", (("node", DEAD.name), http)], 1)
        self.assertEqual(found["txrouter_static_node_quarantined", (("node", NODE.name), http)], 0)

    def test_histogram(self):
        """
        The time-to-first-byte buckets are cumulative, ending with +Inf,
        with the count and sum.
        """
        found = samples(metricsPage(self.router, "http")())
        bucket = "txrouter_first_byte_seconds_bucket"
        self.assertEqual(found[bucket, (("le", "0.005"), ("router", "http"))], 3)
        self.assertEqual(found[bucket, (("le", "10.0"), ("router", "http"))], 3)
        self.assertEqual(found[bucket, (("le", "+Inf"), ("router", "http"))], 4)
        self.assertEqual(found["txrouter_first_byte_seconds_count", (("router", "http"),)], 4)
        self.assertEqual(found["txrouter_first_byte_seconds_sum", (("router", "http"),)], 12.5)

    def test_subscriptions(self):
        """
        A subscription registry's pools and nodes become gauges and
        counters by pool and node.
        """
        node = {"name": "10.0.0.1:3031", "requests": 9, "ref": 1, "failcnt": 0, "death_mark": 0}
        source = SimpleNamespace(statsFields=lambda: [("subscriptions", [
            {"key": "example.com", "nodes": [node]}])])
        from zope.interface import directlyProvides

        from txrouter.routing.interfaces import IStatsSource

        directlyProvides(source, IStatsSource)
        self.router.forwarder = source
        found = samples(metricsPage(self.router, "fastrouter")())
        labels = (("node", "10.0.0.1:3031"), ("pool", "example.com"), ("router", "fastrouter"))
        self.assertEqual(found["txrouter_subscription_pools", (("router", "fastrouter"),)], 1)
        self.assertEqual(found["txrouter_subscription_node_requests_total", labels], 9)
        self.assertEqual(found["txrouter_subscription_node_in_flight", labels], 1)

    def test_collector_reads_at_scrape_time(self):
        """
        Counts bumped after the collector was made show at the next scrape.
        """
        page = metricsPage(self.router, "http")
        self.router.requestSettings.requestCounts.finished = 7
        self.assertEqual(samples(page())["txrouter_requests_in_flight", (("router", "http"),)], 0)
        self.assertIsInstance(RouterCollector(self.router, "http").router, SimpleNamespace)


def answer(factory, request: bytes) -> bytes:
    transport = StringTransport()
    protocol = factory.buildProtocol(None)
    protocol.makeConnection(transport)
    protocol.dataReceived(request)
    return transport.value()


class StatsServerTests(SynchronousTestCase):
    def setUp(self):
        self.document = {"version": "txrouter-x", "pid": 1, "active_sessions": 0,
                         "http": ["127.0.0.1:80"], "static_nodes": [
                             {"name": "127.0.0.1:3031", "hits": 5, "grace": 0},
                             {"name": "127.0.0.1:3032", "hits": 0, "grace": 990}],
                         "requests": {"started": 6, "in_flight": 1, "statuses": {"2xx": 5},
                                      "refusals": {"backend_unreachable": 1}},
                         "retries": {"connect_failed": 1}, "cheap": 0}
        self.factory = StatsFactory(MemoryReactorClock(), lambda: self.document, http=True)
        self.factory.metrics = lambda: b"txrouter_x 1\n"
        self.factory.shortName = "http"

    def test_json_by_default(self):
        """
        A client that does not ask for HTML gets the JSON, at any path, as
        from uWSGI's --stats-http.
        """
        for request in [b"GET / HTTP/1.0\r\nAccept: */*\r\n\r\n", b"GET /stats.json HTTP/1.0\r\n\r\n"]:
            response = answer(self.factory, request)
            self.assertIn(b"Content-Type: application/json", response)
            self.assertEqual(json.loads(response.partition(b"\r\n\r\n")[2])["pid"], 1)

    def test_page_for_a_browser(self):
        response = answer(self.factory, b"GET / HTTP/1.1\r\nAccept: text/html,*/*\r\n\r\n")
        self.assertIn(b"Content-Type: text/html", response)
        self.assertIn(b"127.0.0.1:3032", response)
        self.assertIn(b"quarantined", response)

    def test_metrics(self):
        response = answer(self.factory, b"GET /metrics HTTP/1.1\r\n\r\n")
        self.assertIn(b"Content-Type: text/plain; version=", response)
        self.assertTrue(response.endswith(b"\r\n\r\ntxrouter_x 1\n"))

    def test_metrics_listener(self):
        """
        The --metrics listener answers /metrics, and 404 elsewhere.
        """
        factory = MetricsFactory(MemoryReactorClock(), lambda: b"txrouter_x 1\n")
        self.assertTrue(answer(factory, b"GET /metrics HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.0 200 OK"))
        self.assertTrue(answer(factory, b"GET / HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.0 404"))


class PageTests(SynchronousTestCase):
    def test_escaped(self):
        """
        Pool keys and node names come from subscribers: they are escaped.
        """
        page = renderPage({"http": [], "subscriptions": [{
            "key": "<script>", "hits": 0, "algo": "wrr", "nodes": [{
                "name": "<b>", "requests": 0, "ref": 0, "failcnt": 0, "death_mark": 1,
                "weight": 1, "last_check": 990}]}]}, "http", now=1000)
        self.assertNotIn(b"<script>", page)
        self.assertIn(b"&lt;b&gt;", page)
        self.assertIn(b"10 s ago", page)


class JSONAccessLogTests(SynchronousTestCase):
    def test_fields(self):
        """
        One JSON object per line, with the stable field names.
        """
        out = io.StringIO()
        clock = Clock()
        clock.advance(0)
        head = SimpleNamespace(method=b"GET", target=b"/a\"\xff", version=b"HTTP/1.1",
                               headers=[(b"User-Agent", b"curl")])
        JSONAccessLog(out, clock).logRequest(b"10.0.0.1", head, 502, 0, "backend_unreachable",
                                             NODE, 0.25)
        JSONAccessLog(out, clock).log(b"", head, 200, 5)
        first, second = map(json.loads, out.getvalue().splitlines())
        self.assertEqual(first, {
            "time": "1970-01-01T00:00:00Z", "client": "10.0.0.1", "method": "GET",
            "target": "/a\"\xff", "version": "HTTP/1.1", "status": 502, "bytes": 0,
            "node": NODE.name, "duration": 0.25, "event": "backend_unreachable",
            "user_agent": "curl", "referer": None,
        })
        self.assertEqual((second["client"], second["event"], second["node"]), (None, None, None))

    def test_built_from_the_option(self):
        """
        --log-format json makes the access log JSON; combined is the default.
        """
        reactor = MemoryReactorClock()
        router = buildService(HTTPRouterConfig(bind=["tcp:0"], to=["127.0.0.1:3031"],
                                               access_log="-", log_format="json"), reactor).router
        self.assertIsInstance(router.accessLog, JSONAccessLog)
        router = buildService(HTTPRouterConfig(bind=["tcp:0"], to=["127.0.0.1:3031"],
                                               access_log="-"), reactor).router
        self.assertNotIsInstance(router.accessLog, JSONAccessLog)


class JSONLinesObserverTests(SynchronousTestCase):
    def test_event(self):
        out = io.StringIO()
        JSONLinesObserver(out)({
            "log_format": "{event}: cannot connect to {node}", "log_level": LogLevel.warn,
            "log_namespace": "txrouter.lifecycle", "log_time": 1.5, "event": "backend_unreachable",
            "node": "127.0.0.1:3032", "attempt": 1, "log_logger": object(), "opaque": object(),
        })
        line = json.loads(out.getvalue())
        self.assertEqual(line, {
            "time": "1970-01-01T00:00:01.500Z", "level": "warn", "namespace": "txrouter.lifecycle",
            "event": "backend_unreachable",
            "message": "backend_unreachable: cannot connect to 127.0.0.1:3032",
            "node": "127.0.0.1:3032", "attempt": 1,
        })

    def test_failure(self):
        out = io.StringIO()
        try:
            1 / 0
        except ZeroDivisionError:
            failure = Failure()
        JSONLinesObserver(out)({"log_format": "oops", "log_failure": failure, "log_time": 0})
        line = json.loads(out.getvalue())
        self.assertIsNone(line["event"])
        self.assertIn("ZeroDivisionError", line["traceback"])


class OptionTests(SynchronousTestCase):
    def test_metrics_listener_built(self):
        reactor = MemoryReactorClock()
        service = buildService(FastRouterConfig(bind=["tcp:0"], to=["127.0.0.1:3031"],
                                                metrics="127.0.0.1:9100"), reactor)
        factories = [child.factory for child in service]
        self.assertEqual(len([f for f in factories if isinstance(f, MetricsFactory)]), 1)

    def test_bad_options(self):
        for argv, message in [
            (["--bind", "tcp:0", "--to", "127.0.0.1:3031", "--log-format", "xml"], "log-format"),
            (["--bind", "tcp:0", "--to", "127.0.0.1:3031", "--metrics", "tcp:1:colour=blue"],
             "--metrics"),
        ]:
            with self.assertRaises(usage.UsageError) as raised:
                FastOptions().parseOptions(argv)
            self.assertIn(message, str(raised.exception))

    def test_counts_kept_per_router(self):
        self.assertIsNot(RequestCounts().statuses, RequestCounts().statuses)
