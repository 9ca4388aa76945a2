"""
HTTPS: the HTTP router behind C{--bind ssl:} and C{--bind tls:}, the forms
README.md and docs/http-router.md show.

Twisted (26.4 and later) fails the handshake of a client that offers ALPN
(curl, browsers) to a listening factory that names no application
protocol, with an internal error alert and nothing in the log: the HTTP
router names HTTP/1.1 and HTTP/1.0 (L{txrouter.service}).
"""

import json
import os

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import ClientFactory, Protocol
from twisted.internet.ssl import Certificate, optionsForClientTLS

from tests.certs import selfSigned
from tests.realpeers import (
    ROOT, TWISTD_COMMAND, Process, curl, free_port, uwsgi_worker, wait_for_tcp,
)
from txrouter.routers.http import HTTPRouter
from txrouter.routing.nodes import parseNode
from txrouter.service import RouterService
from txrouter.testing import UwsgiWSGIBackend


def _bind(kind: str, port: int, directory) -> str:
    if kind == "ssl":
        return (f"ssl:{port}:interface=127.0.0.1:privateKey={directory / 'key.pem'}"
                f":certKey={directory / 'cert.pem'}")
    return f"tls:{directory / 'pems'}:port={port}:interface=127.0.0.1"


@pytest.mark.e2e
@pytest.mark.parametrize("kind", ["ssl", "tls"])
def test_curl_over_https_to_uwsgi_workers(kind, tmp_path):
    """
    C{twistd -n txrouter-http --bind ssl:…} (or C{tls:…}) in front of real
    uWSGI workers: curl, which offers h2 and http/1.1 over ALPN, gets the
    worker's answer over HTTP/1.1, and the worker sees an HTTPS request.
    """
    _, _, certPEM = selfSigned(tmp_path)
    sock, port = str(tmp_path / "app.sock"), free_port()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    command = [*TWISTD_COMMAND, "-n", "--pidfile=", "txrouter-http",
               "--bind", _bind(kind, port, tmp_path), "--to", sock]
    with uwsgi_worker(tmp_path, sock), \
            Process(command, tmp_path / "router.log", env=env) as router:
        wait_for_tcp(port, process=router)
        result = curl("--cacert", tmp_path / "cert.pem", "-w", "\\n%{http_version}",
                      f"https://localhost:{port}/hello?x=1",
                      "--resolve", f"localhost:{port}:127.0.0.1")
        assert result.returncode == 0, result.stderr + router.log().encode()
        body, _, version = result.stdout.rpartition(b"\n")
        assert version == b"1.1"
        environ = json.loads(body)
        assert environ["PATH_INFO"] == "/hello"
        assert environ["QUERY_STRING"] == "x=1"
        assert environ["HTTPS"] == "on"


@pytest.mark.e2e
def test_plain_http_to_a_bind_ssl_port_gets_a_400(tmp_path):
    """
    C{curl http://} to C{txrouter-http --bind ssl:…}: the 400 of the HTTPS
    router's listeners (the same C{listenSSL}), then HTTPS as before.
    """
    selfSigned(tmp_path)
    sock, port = str(tmp_path / "app.sock"), free_port()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    command = [*TWISTD_COMMAND, "-n", "--pidfile=", "txrouter-http",
               "--bind", _bind("ssl", port, tmp_path), "--to", sock]
    with uwsgi_worker(tmp_path, sock), \
            Process(command, tmp_path / "router.log", env=env) as router:
        wait_for_tcp(port, process=router)
        result = curl("-s", "-i", f"http://127.0.0.1:{port}/")
        assert result.stdout.startswith(b"HTTP/1.1 400 Bad Request\r\n"), result.stdout
        assert b"use https://" in result.stdout
        result = curl("--cacert", tmp_path / "cert.pem", f"https://localhost:{port}/",
                      "--resolve", f"localhost:{port}:127.0.0.1")
        assert json.loads(result.stdout)["HTTPS"] == "on"
    assert "http_on_tls_port: 400" in router.log()


class _Reading(Protocol):
    def __init__(self) -> None:
        self.received = []
        self.done = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(b"GET /x HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")

    def dataReceived(self, data: bytes) -> None:
        self.received.append(data)

    def connectionLost(self, reason) -> None:
        self.done.callback(b"".join(self.received))


@pytest.mark.parametrize("kind", ["ssl", "tls"])
@pytest_twisted.inlineCallbacks
def test_an_alpn_offer_gets_http_1_1(kind, tmp_path):
    """
    A client offering h2 and http/1.1 over ALPN to a router's TLS listener
    completes the handshake with http/1.1 and gets its response.
    """
    _, _, certPEM = selfSigned(tmp_path)
    path = str(tmp_path / "app.sock")
    backend = yield serverFromString(reactor, f"unix:{path}").listen(UwsgiWSGIBackend())
    service = RouterService(reactor, HTTPRouter(reactor, [parseNode(path)]),
                            [_bind(kind, 0, tmp_path)])
    service.startService()
    client = _Reading()
    factory = ClientFactory.forProtocol(lambda: client)
    options = optionsForClientTLS("localhost", trustRoot=Certificate.loadPEM(certPEM),
                                  acceptableProtocols=[b"h2", b"http/1.1"])
    timeout = reactor.callLater(10, client.done.cancel)
    try:
        port = service.listeners[0].port.getHost().port
        reactor.connectSSL("127.0.0.1", port, factory, options)
        response = yield client.done
        assert client.transport.negotiatedProtocol == b"http/1.1"
        assert response.startswith(b"HTTP/1.1 200 OK\r\n")
    finally:
        if timeout.active():
            timeout.cancel()
        yield service.stopService()
        yield backend.stopListening()
