"""
The HTTPS and SSL routers without sockets: their command lines and
configuration values, the built services (listeners, contexts, SIGHUP),
the C{--http-to-https} answers, a TLS connection's vars and key, and the
subscription registry's SNI look-up by name.
"""

import signal

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.usage import UsageError
from zope.interface import directlyProvides

from tests.tlspki import PrivateCA
from txrouter.build import buildService, statsAddresses
from txrouter.config import HTTPRouterConfig, HTTPSRouterConfig, SSLRouterConfig
from txrouter.routers.http import HTTPRouter
from txrouter.routers.redirect import RedirectFactory, httpsLocation
from txrouter.routers.ssl import SSLRouter
from txrouter.routing.nodes import parseNode
from txrouter.routing.subscriptions import SubscriptionRegistry, sniNameOfKey
from txrouter.signals import OnSignal
from txrouter.tap import http, https, ssl
from txrouter.tls.listener import ListenerContexts
from txrouter.wire.subscription import Subscription
from txrouter.wire.uwsgi import PacketParser


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    directory = tmp_path_factory.mktemp("pki")
    ca = PrivateCA(directory)
    return ca, ca.issue("server", ["server.local"])


def parse(module, *args):
    options = module.Options()
    options.parseOptions(["--to", "/a.sock", *args])
    return options


# Command lines and configuration values


def test_https_and_https2_add_listeners_in_order(pki):
    ca, server = pki
    pair = f"{server.certificatePath},{server.keyPath}"
    options = parse(
        https, "--https", f"127.0.0.1:8443,{pair}",
        "--https2", f"addr=[::1]:9443,crt={server.certificatePath},key={server.keyPath},"
                    f"client_ca=!{ca.path}",
        "--https", f":10443,{pair},ECDHE+AESGCM,{ca.path}",
        "--sni", f"A.Example.COM {pair}", "--sni-regexp", rf"\.local$ {pair}",
        "--https-export-cert", "--ssl-verify-depth", "2", "--tls-handshake-timeout", "3",
        "--http-to-https", "127.0.0.1:8080,8443",
    )
    config = options.config
    assert isinstance(config, HTTPSRouterConfig)
    assert [spec.address for spec in config.https] == ["127.0.0.1:8443", "[::1]:9443", ":10443"]
    assert config.https[1].files.clientCertificateRequired
    assert config.https[2].files.ciphers == "ECDHE+AESGCM"
    assert not config.https[2].files.clientCertificateRequired
    assert config.sni[0].name == "a.example.com"
    assert config.https_export_cert and config.ssl_verify_depth == 2
    assert config.tls_handshake_timeout == 3.0
    assert [(r.endpoint, r.port) for r in config.http_to_https] == [
        ("tcp:8080:interface=127.0.0.1", 8443)]
    assert config.listenerAddresses() == ["127.0.0.1:8443", "[::1]:9443", ":10443"]


@pytest.mark.parametrize(
    "args, message",
    [((), "at least one --bind or --https is required"),
     (("--https2", "addr=:1,cert=a,key=b,clientcert=c"), "--https2: unknown key 'clientcert'"),
     (("--https", "8443,a,b"), "--https: "),
     (("--https", ":8443,/nonexistent.crt,/k"), "/nonexistent.crt: no such certificate file"),
     (("--sni", "../x a,b", "--bind", "tcp:0"), "--sni: "),
     (("--http-to-https", ":80,https", "--bind", "tcp:0"), "--http-to-https: "),
     (("--tls-handshake-timeout", "-1", "--bind", "tcp:0"), "")],
)
def test_mistakes_are_usage_errors(args, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(") or None):
        parse(https, *args)


def test_the_http_router_takes_http_to_https():
    options = parse(http, "--bind", "tcp:0", "--http-to-https", ":8080")
    assert options.config.http_to_https[0].port is None


def test_ssl_router_options(pki):
    _, server = pki
    options = parse(
        ssl, "--sslrouter", f"127.0.0.1:8443,{server.certificatePath},{server.keyPath}",
        "--sslrouter2", f"addr=:9443,cert={server.certificatePath},key={server.keyPath}",
        "--sslrouter-sni", "--sslrouter-session-context", "ctx",
    )
    config = options.config
    assert isinstance(config, SSLRouterConfig)
    assert config.statsName == "sslrouter"
    assert [spec.address for spec in config.sslrouter] == ["127.0.0.1:8443", ":9443"]
    assert config.sslrouter_sni and config.sslrouter_session_context == "ctx"
    with pytest.raises(UsageError, match="--sslrouter2: unknown key 'spdy'"):
        parse(ssl, "--sslrouter2", "addr=:1,cert=a,key=b,spdy=1")
    with pytest.raises(UsageError, match="at least one --bind or --sslrouter"):
        parse(ssl)


# The built services


def test_the_built_https_service(pki):
    _, server = pki
    reactor = MemoryReactorClock()
    config = HTTPSRouterConfig(
        https=[f"127.0.0.1:8443,{server.certificatePath},{server.keyPath}",
               f"[::1]:9443,{server.certificatePath},{server.keyPath}"],
        bind=["tcp:8080"], to=["/a.sock"], http_to_https=["127.0.0.1:8081,8443"],
        https_export_cert=True,
    )
    service = buildService(config, reactor)
    assert isinstance(service.router, HTTPRouter) and service.router.exportCertificate
    assert len(service.listeners) == 3
    sighup = [s for s in service if isinstance(s, OnSignal) and s.signum == signal.SIGHUP]
    assert len(sighup) == 1
    service.startService()
    try:
        assert [(port, interface) for port, _, _, _, interface in reactor.sslServers] == [
            (8443, "127.0.0.1"), (9443, "::1")]
        assert all(isinstance(c, ListenerContexts) for _, _, c, _, _ in reactor.sslServers)
        ports = sorted(port for port, factory, _, _ in reactor.tcpServers)
        assert ports == [8080, 8081]
        redirect = [f for port, f, _, _ in reactor.tcpServers if port == 8081][0]
        assert isinstance(redirect, RedirectFactory) and redirect.port == 8443
    finally:
        service.stopService()
    assert statsAddresses(config) == [":8080", "127.0.0.1:8443", "[::1]:9443"]


def test_the_built_ssl_service(pki):
    _, server = pki
    reactor = MemoryReactorClock()
    config = SSLRouterConfig(
        sslrouter=[f"127.0.0.1:8443,{server.certificatePath},{server.keyPath}"],
        to=["127.0.0.1:25"], sslrouter_sni=True,
    )
    service = buildService(config, reactor)
    assert isinstance(service.router, SSLRouter) and service.router.sni
    service.startService()
    try:
        [(port, factory, contexts, _, interface)] = reactor.sslServers
        assert (port, interface, factory.key) == (8443, "127.0.0.1", b"127.0.0.1:8443")
    finally:
        service.stopService()


# --http-to-https


def answer(request: bytes, port=None) -> bytes:
    reactor = MemoryReactorClock()
    protocol = RedirectFactory(reactor, port, 5.0).buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(request)
    assert transport.disconnecting
    return transport.value()


def test_redirect_answer():
    response = answer(b"GET /a/b?c=1 HTTP/1.1\r\nHost: r.local:8080\r\n\r\n", 8443)
    body = b"Moved to https://r.local:8443/a/b?c=1\n"
    assert response == (
        b"HTTP/1.1 301 Moved Permanently\r\nLocation: https://r.local:8443/a/b?c=1\r\n"
        b"Content-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
        + body
    )


def test_redirect_location():
    assert httpsLocation(b"r.local:8080", b"/x") == b"https://r.local/x"
    assert httpsLocation(b"r.local", b"/x", 443) == b"https://r.local:443/x"
    assert httpsLocation(b"[::1]:8080", b"/", 8443) == b"https://[::1]:8443/"


def test_redirect_head_has_no_body_and_bad_requests_get_400():
    head = answer(b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert head.endswith(b"Connection: close\r\n\r\n") and b"Content-Length: 20\r\n" in head
    assert answer(b"GET / HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    assert answer(b"GET /\x00 HTTP/1.1\r\nHost: h\r\n\r\n").startswith(b"HTTP/1.1 400 ")


def test_redirect_head_deadline():
    reactor = MemoryReactorClock()
    protocol = RedirectFactory(reactor, None, 5.0).buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(b"GET / HT")
    reactor.advance(5)
    assert transport.disconnecting and transport.value() == b""


# A TLS connection's vars and key


class _Handle:
    def __init__(self, name, certificate) -> None:
        self._name, self._certificate = name, certificate

    def get_servername(self):
        return self._name

    def get_peer_certificate(self, as_cryptography=False):
        return self._certificate


def _tlsSession(name, certificate, **kwargs):
    router = HTTPRouter(MemoryReactorClock(), [parseNode("/a.sock")], server_name="vm", **kwargs)
    session = router.buildProtocol(None)
    transport = StringTransport()
    directlyProvides(transport, ISSLTransport)
    transport.getHandle = lambda: _Handle(name, certificate)
    session.makeConnection(transport)
    return session, transport


def _vars(session) -> dict:
    exchange = session.exchange
    block = exchange._uwsgiVars()
    packet = b"\x00" + len(block).to_bytes(2, "little") + b"\x00" + block
    return dict(PacketParser().feed(packet).vars)


def test_the_sni_name_is_the_key_without_host_and_host_overrides(pki):
    session, _ = _tlsSession(b"API.Example.com.", None)
    session.dataReceived(b"GET / HTTP/1.0\r\n\r\n")
    assert session.exchange.key == b"api.example.com"
    session, _ = _tlsSession(b"api.example.com", None)
    session.dataReceived(b"GET / HTTP/1.1\r\nHost: other.local\r\n\r\n")
    assert session.exchange.key == b"other.local"
    session, _ = _tlsSession(b"../x", None)
    session.dataReceived(b"GET / HTTP/1.0\r\n\r\n")
    assert session.exchange.key == b""


def test_client_certificate_vars_follow_https(pki):
    ca, _ = pki
    alice = ca.issue("alice", client=True, subject=x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, "alice")]))
    session, _ = _tlsSession(None, alice.certificate, https_export_cert=True)
    session.dataReceived(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    variables = _vars(session)
    names = list(variables)
    start = names.index(b"HTTPS")
    assert names[start:start + 5] == [
        b"HTTPS", b"HTTPS_CLIENT_CERTIFICATE", b"HTTPS_DN", b"HTTPS_CC", b"REMOTE_ADDR"]
    assert variables[b"HTTPS_DN"] == b"/CN=alice"
    assert variables[b"HTTPS_CLIENT_CERTIFICATE"] == alice.certificate.public_bytes(Encoding.DER)
    assert variables[b"HTTPS_CC"] == alice.certificate.public_bytes(Encoding.PEM)
    session, _ = _tlsSession(None, alice.certificate)
    session.dataReceived(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert b"HTTPS_CC" not in _vars(session) and b"HTTPS_DN" in _vars(session)


def test_a_certificate_too_large_for_a_var_is_431(pki, monkeypatch):
    import txrouter.routers.http as module

    def tooLarge(transport, export):
        raise ValueError("HTTPS_CC would be 70000 bytes, more than a uwsgi var holds")

    monkeypatch.setattr(module, "clientCertificateVars", tooLarge)
    session, transport = _tlsSession(None, None)
    session.dataReceived(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert transport.value().startswith(b"HTTP/1.1 431 ")
    assert session.exchange is None


# Subscriptions' SNI, by name


def test_sni_by_name_is_the_key_without_its_port():
    clock = Clock()
    registry = SubscriptionRegistry(clock, sni=True)
    announce = Subscription(b"Example.com:8443", b"127.0.0.1:3031", sniKey=b"/k", sniCrt=b"/c")
    registry.apply(announce, "127.0.0.1")
    assert registry.sniForName(b"example.com") == (b"/k", b"/c", None)
    assert registry.sniForName(b"example.com:8443") is None
    registry.apply(Subscription(b"example.com", b"127.0.0.1:3032", sniKey=b"/k2", sniCrt=b"/c2"),
                   "127.0.0.1")
    registry.apply(Subscription(b"Example.com:8443", b"127.0.0.1:3031", unsubscribe=True),
                   "127.0.0.1")
    assert registry.sniForName(b"example.com") == (b"/k2", b"/c2", None)
    registry.apply(Subscription(b"example.com", b"127.0.0.1:3032", unsubscribe=True), "127.0.0.1")
    assert registry.sniForName(b"example.com") is None
    assert sniNameOfKey(b"a.b.:80") == b"a.b"


def test_only_the_http_routers_answer_plain_http_on_their_tls_listeners():
    """
    The TLS layer answers C{curl http://} to a TLS port with a 400 when
    the router says it speaks HTTP: the HTTP and HTTPS routers, unless
    C{--silent-errors}; the SSL router relays bytes and only closes.
    """
    nodes = [parseNode("/a.sock")]
    assert HTTPRouter(MemoryReactorClock(), nodes).answersPlainHTTP is True
    assert HTTPRouter(MemoryReactorClock(), nodes, silent_errors=True).answersPlainHTTP is False
    ssl = SSLRouter(MemoryReactorClock(), nodes)
    assert not getattr(ssl.listenerFactory("tcp:8443"), "answersPlainHTTP", False)
    assert not getattr(ssl, "answersPlainHTTP", False)
