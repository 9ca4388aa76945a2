"""
A router's Prometheus metrics (C{--metrics}, and C{/metrics} under
C{--stats-http}), in the text format of C{prometheus_client}.

Nothing is counted for Prometheus on the hot path: requests bump plain
integers (L{txrouter.lifecycle.RequestCounts}, L{RetryCounts},
L{TunnelCounts}), and L{RouterCollector} reads them, the router's
sessions and its forwarder's stats fields when scraped.
"""

from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from txrouter.routing.interfaces import IStatsSource

__all__ = ["CONTENT_TYPE_LATEST", "RouterCollector", "metricsPage"]


def _statusClass(status: int) -> str:
    return f"{status}xx" if status else "none"


class RouterCollector:
    """
    The metrics of one router, read when collected.

    @ivar router: the router factory (its C{requestSettings}, C{sessions},
        C{forwarder}, and the HTTP router's C{nodePool}).
    @ivar name: the router's label (uWSGI's short name: C{http},
        C{fastrouter}, C{rawrouter}, C{sslrouter}).
    """

    def __init__(self, router, name: str) -> None:
        self.router = router
        self.name = name

    def collect(self):
        router, name = self.router, self.name
        settings = router.requestSettings
        counts = settings.requestCounts
        labels = ["router"]

        requests = CounterMetricFamily(
            "txrouter_requests", "Requests answered, by status class and node (HTTP routers).",
            labels=["router", "status_class", "node"],
        )
        for (status, node), value in sorted(counts.statuses.items()):
            requests.add_metric([name, _statusClass(status), node], value)
        yield requests
        started = CounterMetricFamily("txrouter_requests_started", "Requests begun.", labels=labels)
        started.add_metric([name], counts.started)
        yield started
        inFlight = GaugeMetricFamily("txrouter_requests_in_flight", "Requests under way.", labels=labels)
        inFlight.add_metric([name], counts.inFlight)
        yield inFlight
        refusals = CounterMetricFamily(
            "txrouter_refusals", "Requests refused by the router, by event name.",
            labels=["router", "event"],
        )
        for event, value in sorted(counts.refusals.items()):
            refusals.add_metric([name, event], value)
        yield refusals
        retries = CounterMetricFamily(
            "txrouter_retries", "Requests that went on to another attempt, by cause.",
            labels=["router", "cause"],
        )
        for cause, value in settings.retryCounts.asDict().items():
            retries.add_metric([name, cause], value)
        yield retries
        for metric, help, value in [
            ("txrouter_node_bytes_sent", "Bytes written to nodes.", counts.sentToNodes),
            ("txrouter_node_bytes_received", "Bytes read from nodes.", counts.receivedFromNodes),
            ("txrouter_tunnels_opened", "Tunnels opened (after a 101).", settings.tunnelCounts.opened),
            ("txrouter_spooled_bodies", "Request bodies stored in a spool.", counts.spooled),
        ]:
            family = CounterMetricFamily(metric, help, labels=labels)
            family.add_metric([name], value)
            yield family
        for metric, help, value in [
            ("txrouter_client_connections", "Open client connections.", len(router.sessions)),
            ("txrouter_tunnels_open", "Tunnels open now.", settings.tunnelCounts.open),
            ("txrouter_spooled_bodies_open", "Spooled request bodies not yet closed.",
             counts.spooled - counts.spoolsClosed),
        ]:
            family = GaugeMetricFamily(metric, help, labels=labels)
            family.add_metric([name], value)
            yield family
        yield self._firstByte(counts)
        pool = getattr(router, "nodePool", None)
        if pool is not None:
            idle = GaugeMetricFamily(
                "txrouter_node_keepalive_idle", "Idle kept node connections.", labels=labels)
            idle.add_metric([name], pool.idleCount())
            yield idle
            reused = CounterMetricFamily(
                "txrouter_node_keepalive_reused", "Requests sent on a kept node connection.",
                labels=labels)
            reused.add_metric([name], pool.reused)
            yield reused
        http2 = getattr(router, "http2", None)
        if http2 is not None:
            yield from self._http2(http2.counts)
        source = IStatsSource(router.forwarder, None)
        if source is not None:
            yield from self._forwarder(dict(source.statsFields()))
        health = getattr(router, "health", None)
        if health is not None:
            yield self._checks(dict(health.statsFields())["node_checks"])

    def _checks(self, checks):
        up = GaugeMetricFamily(
            "txrouter_node_check_up",
            "1 while the health checks find a --to or --fallback node up, 0 while down.",
            labels=["router", "node", "role"])
        for check in checks:
            up.add_metric([self.name, check["name"], check["role"]], int(check["state"] == "up"))
        return up

    def _http2(self, counts):
        """
        With C{--http2}: HTTP/2 connections and streams, and the bounds
        clients hit (L{txrouter.routers.h2connection.HTTP2Counts}).
        """
        name = self.name
        labels = ["router"]
        for metric, help, value in [
            ("txrouter_http2_connections", "HTTP/2 connections accepted.", counts.connections),
            ("txrouter_http2_streams", "HTTP/2 streams (requests) opened by clients.",
             counts.streams),
        ]:
            family = CounterMetricFamily(metric, help, labels=labels)
            family.add_metric([name], value)
            yield family
        open = GaugeMetricFamily(
            "txrouter_http2_connections_open", "HTTP/2 connections open now.", labels=labels)
        open.add_metric([name], counts.open)
        yield open
        bounds = CounterMetricFamily(
            "txrouter_http2_bounds", "HTTP/2 bounds hit by clients, by bound.",
            labels=["router", "bound"])
        for bound, value in sorted(counts.bounds.items()):
            bounds.add_metric([name, bound], value)
        yield bounds

    def _firstByte(self, counts):
        buckets, total = [], 0
        for bound, value in zip(tuple(counts.buckets) + (float("inf"),), counts.firstByte):
            total += value
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), total))
        family = HistogramMetricFamily(
            "txrouter_first_byte_seconds",
            "Seconds from a request's start to its node's first response byte.",
            labels=["router"],
        )
        family.add_metric([self.name], buckets, counts.firstByteSum)
        return family

    def _forwarder(self, fields: dict):
        name = self.name
        static = fields.get("static_nodes")
        if static is not None:
            hits = CounterMetricFamily(
                "txrouter_static_node_hits", "Connections a --to node accepted.",
                labels=["router", "node"])
            dead = GaugeMetricFamily(
                "txrouter_static_node_quarantined", "1 while a --to node is in quarantine.",
                labels=["router", "node"])
            for node in static:
                hits.add_metric([name, node["name"]], node["hits"])
                dead.add_metric([name, node["name"]], int(node["grace"] != 0))
            yield hits
            yield dead
        pools = fields.get("subscriptions")
        if pools is not None:
            count = GaugeMetricFamily(
                "txrouter_subscription_pools", "Subscribed pools (keys).", labels=["router"])
            count.add_metric([name], len(pools))
            yield count
            nodes = GaugeMetricFamily(
                "txrouter_subscription_nodes", "Nodes of a subscribed pool.",
                labels=["router", "pool"])
            nodeLabels = ["router", "pool", "node"]
            requests = CounterMetricFamily(
                "txrouter_subscription_node_requests", "Requests a subscribed node served.",
                labels=nodeLabels)
            inFlight = GaugeMetricFamily(
                "txrouter_subscription_node_in_flight", "Requests a subscribed node serves now.",
                labels=nodeLabels)
            failures = GaugeMetricFamily(
                "txrouter_subscription_node_failures", "A subscribed node's failed connects.",
                labels=nodeLabels)
            dead = GaugeMetricFamily(
                "txrouter_subscription_node_dead", "1 while a subscribed node is marked dead.",
                labels=nodeLabels)
            for pool in pools:
                key = pool["key"]
                nodes.add_metric([name, key], len(pool["nodes"]))
                for node in pool["nodes"]:
                    values = [name, key, node["name"]]
                    requests.add_metric(values, node["requests"])
                    inFlight.add_metric(values, node["ref"])
                    failures.add_metric(values, node["failcnt"])
                    dead.add_metric(values, node["death_mark"])
            yield from (nodes, requests, inFlight, failures, dead)


def metricsPage(router, name: str):
    """
    A callable of no argument giving the Prometheus text of C{router}'s
    metrics (L{RouterCollector}), as bytes.
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RouterCollector(router, name))
    return lambda: generate_latest(registry)
