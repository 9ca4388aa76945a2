"""
The stats server: uWSGI's corerouter stats document, always valid JSON.
"""

import json
import re

import pytest

from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import ServerFactory
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import globalLogPublisher

from tests.captures import FIXTURES
from txrouter.routers.fast import FastRouter
from txrouter.routing.nodes import parseNode
from txrouter.service import RouterService
from txrouter.stats.document import encodeStats, statsDocument
from txrouter.stats.server import StatsFactory, statsEndpoint, uwsgiAddressToEndpoint


def keysOf(document):
    return list(document)


def test_top_level_keys_are_uwsgis():
    uwsgi = json.loads((FIXTURES / "httprouter-stats.json").read_text())
    ours = statsDocument("http", ["127.0.0.1:8083"], 0, [], False)
    expected = [k for k in keysOf(uwsgi) if k not in ("subscriptions", "static_nodes")]
    assert keysOf(ours) == expected


def test_static_nodes_hits_and_grace():
    clock = Clock()
    clock.advance(1000)
    a, b = parseNode("/run/a.sock"), parseNode("127.0.0.1:3031")
    router = FastRouter(clock, [a, b])
    router.forwarder.connected(None, a)
    router.forwarder.connected(None, a)
    router.forwarder.failed(None, b)
    document = statsDocument("fastrouter", ["tcp:3017"], 2, [router.forwarder], True)
    assert document["static_nodes"] == [
        {"name": "/run/a.sock", "hits": 2, "grace": 0},
        {"name": "127.0.0.1:3031", "hits": 0, "grace": 1000},
    ]
    assert (document["active_sessions"], document["cheap"]) == (2, 1)
    assert keysOf(document)[-2:] == ["static_nodes", "cheap"]


def test_strings_are_escaped():
    document = statsDocument('fast"router', ['a"b\\c\n'], 0, [], False)
    assert json.loads(encodeStats(document)) == document
    assert json.loads(encodeStats(document, minified=True)) == document
    assert b"\n" not in encodeStats(document, minified=True)
    assert b'\t"pid":' in encodeStats(document)


def served(http, request=b""):
    factory = StatsFactory(MemoryReactorClock(), lambda: {"a": 1}, http=http)
    protocol = factory.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    if request:
        protocol.dataReceived(request)
    return transport, factory.reactor


def test_plain_stats_are_written_at_once_then_closed():
    transport, _ = served(False)
    assert json.loads(transport.value()) == {"a": 1}
    assert transport.disconnecting


def test_stats_http_answers_a_request():
    transport, reactor = served(True)
    assert transport.value() == b""
    transport, reactor = served(True, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _, body = transport.value().partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200 OK") and b"application/json" in head
    assert json.loads(body) == {"a": 1}


def test_stats_http_silent_client_is_cut():
    transport, reactor = served(True)
    reactor.advance(4)
    assert transport.disconnecting and transport.value() == b""


def test_stats_http_request_too_large_is_431():
    """
    A request head over 8 KiB (or bytes that are no HTTP at all) gets a
    431 and a log line, not a reset; nothing more is read.
    """
    seen = []
    globalLogPublisher.addObserver(seen.append)
    try:
        transport, reactor = served(True, bytes(range(256)) * 40)
    finally:
        globalLogPublisher.removeObserver(seen.append)
    assert transport.value().startswith(b"HTTP/1.0 431 ")
    assert transport.disconnecting
    assert [e["event"] for e in seen if "event" in e] == ["stats_request_too_large"]


def test_uwsgi_addresses():
    assert uwsgiAddressToEndpoint("127.0.0.1:5005") == "tcp:5005:interface=127.0.0.1"
    assert uwsgiAddressToEndpoint("/run/stats.sock") == "unix:/run/stats.sock"
    assert uwsgiAddressToEndpoint("tcp:0") == "tcp:0"
    assert uwsgiAddressToEndpoint("[::1]:5005") == r"tcp:5005:interface=\:\:1"


def test_uwsgi_paths_with_endpoint_syntax_in_them():
    """
    Colons, equals signs and backslashes of a socket path are escaped, so
    the stats socket is at exactly that path.
    """
    reactor = MemoryReactorClock()
    path = "/run/a:b=c\\d.sock"
    serverFromString(reactor, uwsgiAddressToEndpoint(path)).listen(ServerFactory())
    assert reactor.unixServers[0][0] == path


def test_router_service_serves_stats():
    reactor = MemoryReactorClock()
    router = FastRouter(reactor, [parseNode("/run/a.sock")])
    service = RouterService(reactor, router, ["tcp:3017"])
    service.serveStats(reactor, "127.0.0.1:5005", "fastrouter", ["tcp:3017"])
    service.privilegedStartService()
    service.startService()
    port, factory = reactor.tcpServers[-1][:2]
    assert port == 5005
    document = factory.document()
    assert document["fastrouter"] == ["tcp:3017"]
    assert document["static_nodes"][0]["name"] == "/run/a.sock"


@pytest.mark.parametrize(
    "address", ["", "tcp:abc", "tcp:9191:colour=blue", "ssl:9191:privateKey=/no/such.pem", "h:x"],
)
def test_a_bad_stats_address_is_a_value_error_naming_it(address):
    """
    A stats address Twisted cannot parse (whatever its parser raises) is a
    ValueError that quotes it, from the service as from the parser, and
    nothing is added to the service.
    """
    reactor = MemoryReactorClock()
    with pytest.raises(ValueError, match=re.escape(repr(address))):
        statsEndpoint(reactor, address)
    service = RouterService(reactor, FastRouter(reactor, [parseNode("/run/a.sock")]), ["tcp:3017"])
    with pytest.raises(ValueError, match="is not a listening address"):
        service.serveStats(reactor, address, "fastrouter", ["tcp:3017"])
    assert len(list(service)) == 1
