"""
The .tac example builds the router the docs say, and txrouter.testing's
backend serves a real router over real sockets.
"""

import pathlib
import runpy

import pytest_twisted
import treq
from twisted.application.service import IServiceCollection
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint, UNIXServerEndpoint
from twisted.web.client import HTTPConnectionPool

from txrouter.routers.http import HTTPRouter
from txrouter.routing.nodes import parseNode
from txrouter.service import RouterService
from txrouter.testing import UwsgiWSGIBackend

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_example_tac_builds_the_documented_router():
    namespace = runpy.run_path(str(ROOT / "examples" / "router.tac"))
    [service] = list(IServiceCollection(namespace["application"]))
    assert isinstance(service, RouterService)
    router = service.router
    assert [n.name for n in router.forwarder.nodes] == [
        "/tmp/txrouter-demo/app1.sock", "/tmp/txrouter-demo/app2.sock"
    ]
    assert router.keepalive == 15 and router.accessLog is not None


@pytest_twisted.inlineCallbacks
def test_request_through_real_sockets(tmp_path):
    """
    A router and a txrouter.testing backend on real sockets, driven by treq.
    """
    path = str(tmp_path / "app.sock")
    backend = UwsgiWSGIBackend()
    backendPort = yield UNIXServerEndpoint(reactor, path).listen(backend)
    router = HTTPRouter(reactor, [parseNode(path)], keepalive=5)
    routerPort = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(router)
    try:
        port = routerPort.getHost().port
        pool = HTTPConnectionPool(reactor, persistent=False)
        response = yield treq.post(f"http://127.0.0.1:{port}/hello?x=1", data=b"payload", pool=pool)
        body = yield response.content()
        assert response.code == 200
        assert b"PATH_INFO=/hello" in body
        assert body.endswith(b"BODY=payload")
        [(vars, received, _)] = backend.requests
        assert vars[b"REMOTE_ADDR"] == b"127.0.0.1"
        assert received == b"payload"
        yield router.drain(1)
    finally:
        yield routerPort.stopListening()
        yield backendPort.stopListening()
