"""
The FastRouter from Python: examples/fast.tac builds the router its
docstring describes and serves a request over real sockets, and the
IForwarder example of docs/tac.md is code that works.
"""

import pathlib
import re
import runpy

import pytest_twisted
from twisted.application.service import IServiceCollection
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    TCP4ServerEndpoint,
    UNIXServerEndpoint,
    connectProtocol,
)
from twisted.internet.protocol import Protocol
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from txrouter.routers.fast import FastRouter
from txrouter.routing.cache import CacheForwarder
from txrouter.routing.interfaces import IForwarder
from txrouter.service import RouterService
from txrouter.testing import MemoryNetwork, UwsgiWSGIBackend
from txrouter.wire.uwsgi import encodePacket

ROOT = pathlib.Path(__file__).resolve().parent.parent
FAST_TAC = ROOT / "examples" / "fast.tac"
TAC_DOC = ROOT / "docs" / "tac.md"


def request(host: bytes, path: bytes = b"/") -> bytes:
    return encodePacket([(b"REQUEST_METHOD", b"GET"), (b"PATH_INFO", path), (b"HTTP_HOST", host)])


def test_example_builds_the_documented_router():
    namespace = runpy.run_path(str(FAST_TAC))
    [service] = list(IServiceCollection(namespace["application"]))
    assert isinstance(service, RouterService)
    router = service.router
    assert isinstance(router, FastRouter) and router is namespace["router"]
    assert (router.postBuffering, router.postBufferingDir, router.limitPost) == \
        (65536, "/var/tmp", 100 << 20)
    forwarder = router.forwarder
    assert isinstance(forwarder, CacheForwarder) and forwarder.clock is reactor
    assert forwarder.pick(b"app1.example.com").path == "/tmp/txrouter-demo/app1.sock"
    assert [forwarder.pick(b"app2.example.com").path for _ in range(2)] == \
        ["/tmp/txrouter-demo/app2a.sock", "/tmp/txrouter-demo/app2b.sock"]


class _Collector(Protocol):
    def __init__(self):
        self.data = b""
        self.done = Deferred()

    def dataReceived(self, data):
        self.data += data

    def connectionLost(self, reason):
        self.done.callback(self.data)


@pytest_twisted.inlineCallbacks
def test_example_serves_a_request_and_its_store_changes_live(tmp_path):
    """
    The example's router on real sockets, in front of a txrouter.testing
    backend that the store is pointed at while it runs.
    """
    namespace = runpy.run_path(str(FAST_TAC))
    router = namespace["router"]
    path = str(tmp_path / "app1.sock")
    backend = UwsgiWSGIBackend()
    backendPort = yield UNIXServerEndpoint(reactor, path).listen(backend)
    routerPort = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(router)
    try:
        port = routerPort.getHost().port
        namespace["store"].set("app1.example.com", path)
        client = yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), _Collector())
        client.transport.write(request(b"app1.example.com", b"/hello"))
        answer = yield client.done
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"PATH_INFO=/hello" in answer
        [(vars, body, _)] = backend.requests
        assert vars[b"HTTP_HOST"] == b"app1.example.com"
        client = yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), _Collector())
        client.transport.write(request(b"app3.example.com"))
        answer = yield client.done
        assert answer.startswith(b"HTTP/1.1 404 Not Found\r\n")
        yield router.drain(1)
    finally:
        yield routerPort.stopListening()
        yield backendPort.stopListening()


def documentedForwarder() -> dict:
    """
    Run the Python block of docs/tac.md that defines the ByHost forwarder;
    its namespace.
    """
    blocks = re.findall(r"```python\n(.*?)```", TAC_DOC.read_text(), re.S)
    [code] = [block for block in blocks if "class ByHost" in block]
    namespace = {}
    exec(compile(code, str(TAC_DOC), "exec"), namespace)
    return namespace


class DocumentedForwarderTests(SynchronousTestCase):
    def test_it_provides_the_interface(self):
        namespace = documentedForwarder()
        forwarder = namespace["router"].forwarder
        self.assertIsInstance(forwarder, namespace["ByHost"])
        self.assertTrue(verifyObject(IForwarder, forwarder))

    def test_it_routes_a_fast_router(self):
        ByHost = documentedForwarder()["ByHost"]
        network = MemoryNetwork()
        backend = UwsgiWSGIBackend()
        network.addBackend("/run/a.sock", backend)
        router = FastRouter(network.reactor, forwarder=ByHost({b"a.local": "/run/a.sock"}))
        client = network.connect(router)
        client.send(request(b"a.local", b"/routed"))
        self.assertIn(b"PATH_INFO=/routed", client.received())
        self.assertEqual(len(backend.requests), 1)
        client = network.connect(router)
        client.send(request(b"b.local"))
        self.assertTrue(client.received().startswith(b"HTTP/1.1 404 "))
