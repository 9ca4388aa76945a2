"""
A pool's stats: each worker's document, and their total.
"""

import json

from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.internet.protocol import Factory, Protocol

from txrouter.stats.document import statsDocument

__all__ = ["gather", "labelledMetrics", "mergeDocuments", "parseDocument", "poolDocument", "readAll"]

#: The counters a pool's total sums; every other value is the first
#: worker's (a node's weight, name or address is the same in all).
SUMMED = frozenset({
    "active_sessions", "hits", "requests", "last_requests", "tx", "rx", "ref", "failcnt",
    "started", "in_flight", "idle", "reused", "accepted",
})

#: The maps whose every value is a counter.
COUNTERS = frozenset({"statuses", "refusals", "subscriptions_refused"})

#: Each worker's own, never merged.
_OWN = ("version", "pid", "uid", "gid", "cwd", "active_sessions", "cheap")


def _identity(item):
    if isinstance(item, dict):
        for field in ("key", "name"):
            if field in item:
                return field, item[field]
    return None


def _merge(total, value, summed: bool):
    if isinstance(total, dict) and isinstance(value, dict):
        for key, item in value.items():
            if key in total:
                total[key] = _merge(total[key], item, summed or key in COUNTERS or key in SUMMED)
            else:
                total[key] = item
        return total
    if isinstance(total, list) and isinstance(value, list):
        known = {_identity(item): item for item in total if _identity(item) is not None}
        for item in value:
            identity = _identity(item)
            if identity is not None and identity in known:
                _merge(known[identity], item, summed)
            elif identity is not None:
                total.append(item)
        return total
    if summed and isinstance(total, (int, float)) and isinstance(value, (int, float)) \
            and not isinstance(total, bool):
        return total + value
    return total


def mergeDocuments(documents) -> dict:
    """
    The fields of several workers' documents merged: counters summed
    (pools and nodes matched by key and name), other values the first
    worker's.
    """
    total = {}
    for document in documents:
        fields = {key: value for key, value in document.items() if key not in _OWN}
        total = _merge(total, json.loads(json.dumps(fields)), False) if total else \
            json.loads(json.dumps(fields))
    return total


def poolDocument(shortName: str, addresses, documents) -> dict:
    """
    A pool's document: uWSGI's keys with the total of the workers that
    answered (C{documents}: each worker's index and document, or L{None}
    for one that did not answer), and C{workers}: each worker's own.
    """
    answered = [document for index, document in documents if document is not None]
    document = statsDocument(
        shortName, addresses, sum(d.get("active_sessions", 0) for d in answered), [],
        bool(answered) and all(d.get("cheap") for d in answered),
    )
    cheap = document.pop("cheap")
    for key, value in mergeDocuments(answered).items():
        if key != shortName:
            document[key] = value
    document["cheap"] = cheap
    document["workers"] = [
        dict(own, worker=index) if own is not None else {"worker": index, "running": False}
        for index, own in documents
    ]
    return document


class _ReadAll(Protocol):
    def __init__(self, request: bytes) -> None:
        self.request = request
        self.chunks = []
        self.done = Deferred()

    def connectionMade(self) -> None:
        if self.request:
            self.transport.write(self.request)

    def dataReceived(self, data: bytes) -> None:
        self.chunks.append(data)

    def connectionLost(self, reason) -> None:
        self.done.callback(b"".join(self.chunks))


def readAll(reactor, path: str, request: bytes = b"", timeout: float = 2.0) -> Deferred:
    """
    What the unix socket at C{path} sends until it closes, after
    C{request}.
    """
    protocol = _ReadAll(request)
    factory = Factory.forProtocol(lambda: protocol)
    factory.noisy = False
    connected = UNIXClientEndpoint(reactor, path, timeout).connect(factory)
    connected.addCallback(lambda _: protocol.done)
    timer = reactor.callLater(timeout, lambda: protocol.transport and protocol.transport.abortConnection())

    def stop(result):
        if timer.active():
            timer.cancel()
        return result

    return connected.addBoth(stop)


def gather(deferreds) -> Deferred:
    """
    The results of C{deferreds}, each L{None} where one failed.
    """
    return gatherResults([d.addErrback(lambda _: None) for d in deferreds])


def parseDocument(data: bytes):
    """
    A worker's stats document, or L{None} if it sent nothing.
    """
    return json.loads(data) if data else None


def labelledMetrics(answers) -> bytes:
    """
    The workers' metrics texts (HTTP answers) as one, each sample with a
    C{worker} label.
    """
    from prometheus_client.core import CollectorRegistry, Metric
    from prometheus_client.exposition import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    merged = {}
    for index, answer in enumerate(answers):
        if not answer:
            continue
        body = answer.partition(b"\r\n\r\n")[2].decode("utf-8", "replace")
        for family in text_string_to_metric_families(body):
            total = merged.get(family.name)
            if total is None:
                total = merged[family.name] = Metric(family.name, family.documentation, family.type)
            for sample in family.samples:
                labels = dict(sample.labels, worker=str(index))
                total.samples.append(sample._replace(labels=labels))

    class Collected:
        def collect(self):
            return list(merged.values())

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collected())
    return generate_latest(registry)
