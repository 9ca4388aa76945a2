"""
The subscription options of every router build the registry, its servers
and federation they describe.
"""

import datetime
from unittest.mock import Mock

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from twisted.internet.testing import MemoryReactorClock
from twisted.python.usage import UsageError

from txrouter.routing.admission import SOURCE, parseNetwork
from txrouter.routing.subscriptions import SubscriptionRegistry
from txrouter.subscription.server import DatagramListener, SenderCloser
from txrouter.tap import fast, http
from txrouter.wire.subscription import Subscription, encodeSubscription


def build(module, *args, bind="tcp:3017:interface=127.0.0.1"):
    options = module.Options()
    options.parseOptions(["--bind", bind, *args])
    return module.makeService(options, MemoryReactorClock())


def selfSignedPEM() -> bytes:
    """
    A private key and a self-signed certificate for it, in one PEM file.
    """
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "txrouter")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(1)
        .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ) + certificate.public_bytes(serialization.Encoding.PEM)


def children(service, kind):
    return [s for s in service if isinstance(s, kind)]


@pytest.mark.parametrize("module", [fast, http])
def test_subscription_server_is_a_forwarder(module):
    service = build(module, "--subscription-server", "127.0.0.1:7000",
                    "--subscription-server", "/run/subs.sock", "--cheap")
    registry = service.router.forwarder
    assert isinstance(registry, SubscriptionRegistry)
    listeners = children(service, DatagramListener)
    assert [listener.address.text for listener in listeners] == ["127.0.0.1:7000", "/run/subs.sock"]
    assert all(listener.protocol.registry is registry for listener in listeners)
    assert all(listener.protocol.resubscriber is None for listener in listeners)
    assert children(service, SenderCloser) == []
    # No node yet: cheap mode starts cheap, as uWSGI's.
    assert service.cheap is True


def test_stopping_the_router_stops_the_expiry_timer():
    """
    The registry's expiry timer does not outlive the router's services.
    """
    class Reactor(MemoryReactorClock):
        def listenUDP(self, port, protocol, interface="", maxPacketSize=8192):
            return Mock()

    reactor = Reactor()
    options = fast.Options()
    options.parseOptions(["--bind", "tcp:3017", "--subscription-server", "127.0.0.1:7000"])
    service = fast.makeService(options, reactor)
    registry = service.router.forwarder
    service.startService()
    registry.apply(Subscription(b"a.local", b"127.0.0.1:3031"), "127.0.0.1")

    def expiryTimers():
        return [c for c in reactor.getDelayedCalls() if getattr(c.func, "__self__", None) is registry]

    assert len(expiryTimers()) == 1
    service.stopService()
    assert expiryTimers() == []


class StoppingPort:
    """
    A datagram port that, like Twisted's, stops its protocol when it stops
    listening.
    """

    def __init__(self, protocol):
        self.protocol = protocol
        protocol.doStart()

    def stopListening(self):
        self.protocol.doStop()


def test_stopping_the_router_leaves_no_call_pending(tmp_path, events):
    """
    A flood of announces fills every log rate limit (the server's
    refusals, the registry's lines, the resubscriber's failures), each of
    which arms a report; stopping the router cancels them all and reports
    the dropped lines at once.
    """
    class Reactor(MemoryReactorClock):
        def listenUDP(self, port, protocol, interface="", maxPacketSize=8192):
            return StoppingPort(protocol)

    reactor = Reactor()
    options = fast.Options()
    options.parseOptions([
        "--bind", "tcp:3017", "--subscription-server", "127.0.0.1:7000",
        "--resubscribe", str(tmp_path / "no-such.sock"),
    ])
    service = fast.makeService(options, reactor)
    service.startService()
    [listener] = children(service, DatagramListener)
    for n in range(150):
        announce = encodeSubscription(Subscription(b"k%d.local" % n, b"127.0.0.1:3031"))
        listener.protocol.datagramReceived(announce, ("127.0.0.1", 5000))
        listener.protocol.datagramReceived(b"garbage", ("127.0.0.1", 5000))
    assert len(reactor.getDelayedCalls()) >= 3
    service.stopService()
    assert reactor.getDelayedCalls() == []
    reports = [e for e in events if e.get("event") == "log_lines_suppressed"]
    assert len(reports) == 3 and all(e["count"] > 0 for e in reports)


def test_defaults():
    registry = build(fast, "--subscription-server", ":7000").router.forwarder
    assert (registry.algo, registry.tolerance, registry.dotsplit, registry.fallbackKey) == (
        "wrr", 17.0, False, None,
    )
    assert (registry.maxPools, registry.maxNodes) == (1024, 64)
    assert registry.sourcePolicy.networks == ()
    policy = registry.addressPolicy
    assert (policy.networks, policy.ports, policy.directories) == ((SOURCE,), ((1024, 65535),), ())
    assert policy.ownPorts == {3017}
    assert registry.signCheck is None and not registry.notify and not registry.sni
    assert registry.pendingTimeout == 60


def test_every_option_reaches_the_registry(tmp_path):
    keys = tmp_path / "keys"
    keys.mkdir()
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    keyFile = tmp_path / "router.pem"
    keyFile.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ))
    service = build(
        http, "--subscription-server", "127.0.0.1:7000",
        "--subscription-algo", "lrc", "--subscription-tolerance", "3",
        "--subscription-dotsplit", "--subscription-fallback-key", "default.local",
        "--subscription-allow", "10.0.0.0/8", "--subscription-allow", "127.0.0.1",
        "--subscription-max-pools", "5", "--subscription-max-nodes", "2",
        "--subscription-node-network", "source", "--subscription-node-network", "10.1.0.0/16",
        "--subscription-node-ports", "3031", "--subscription-node-ports", "8000-8100",
        "--subscription-node-dir", "/run/apps", "--subscription-node-dir", "@apps",
        "--subscriptions-sign-check", f"SHA256:{keys}",
        "--subscriptions-sign-check-tolerance", "600",
        "--subscription-notify", "--subscription-sni",
        "--resubscribe", "10.0.0.9:7000", "--resubscribe", "/run/up.sock",
        "--resubscribe-sign", f"SHA256:{keyFile}", "--connect-timeout", "4",
        bind="tcp:8080",
    )
    registry = service.router.forwarder
    assert (registry.algo, registry.tolerance, registry.dotsplit) == ("lrc", 3.0, True)
    assert registry.fallbackKey == b"default.local"
    assert registry.sourcePolicy.networks == (parseNetwork("10.0.0.0/8"), parseNetwork("127.0.0.1"))
    assert (registry.maxPools, registry.maxNodes) == (5, 2)
    policy = registry.addressPolicy
    assert policy.networks == (SOURCE, parseNetwork("10.1.0.0/16"))
    assert policy.ports == ((3031, 3031), (8000, 8100))
    assert policy.directories == ("/run/apps", "@apps")
    assert policy.ownPorts == {8080}
    assert (registry.signCheck.directory, registry.signCheck.tolerance) == (str(keys), 600)
    assert registry.notify and registry.sni and registry.pendingTimeout == 4
    [listener] = children(service, DatagramListener)
    resubscriber = listener.protocol.resubscriber
    assert [t.text for t in resubscriber.targets] == ["10.0.0.9:7000", "/run/up.sock"]
    assert resubscriber.address == b":8080"
    # The HTTP router's listeners speak HTTP: an upstream txrouter-http
    # must know (the FastRouter's resubscriptions carry no proto).
    assert resubscriber.proto == b"http"
    assert resubscriber.sign[0] == "SHA256" and b"PRIVATE KEY" in resubscriber.sign[1]
    assert listener.protocol.sender is resubscriber.sender
    assert children(service, SenderCloser)[0].sender is resubscriber.sender


def test_resubscribe_address(tmp_path):
    service = build(fast, "--subscription-server", ":7000", "--resubscribe", "127.0.0.1:7001",
                    "--resubscribe-address", "10.0.0.5:3017")
    [listener] = children(service, DatagramListener)
    assert listener.protocol.resubscriber.address == b"10.0.0.5:3017"
    assert listener.protocol.resubscriber.proto is None
    # A TLS listener has no address a uWSGI router could forward to.
    pem = tmp_path / "server.pem"
    pem.write_bytes(selfSignedPEM())
    with pytest.raises(UsageError, match="--resubscribe-address"):
        build(fast, "--subscription-server", ":7000", "--resubscribe", "127.0.0.1:7001",
              bind=f"ssl:443:privateKey={pem}")


@pytest.mark.parametrize("args, message", [
    (("--subscription-server", "localhost:7000"), "--subscription-server"),
    (("--subscription-server", ":7000", "--to", "/a.sock"), "choose one way"),
    (("--subscription-server", ":7000", "--subscription-algo", "rr"), "wrr, lrc"),
    (("--subscription-server", ":7000", "--subscription-allow", "10.0.0.0/33"), "--subscription-allow"),
    (("--subscription-server", ":7000", "--subscription-node-network", "x"), "node-network"),
    (("--subscription-server", ":7000", "--subscription-node-ports", "0-10"), "node-ports"),
    (("--subscription-server", ":7000", "--subscription-node-dir", "run"), "not absolute"),
    (("--subscription-server", ":7000", "--subscriptions-sign-check", "/keys"), "DIGEST:PATH"),
    (("--subscription-server", ":7000", "--subscriptions-sign-check", "SHA0:/k"), "unknown digest"),
    (("--subscription-server", ":7000", "--subscriptions-sign-check", "SHA1:/no/such/keys"),
     "--subscriptions-sign-check: /no/such/keys: no such directory"),
    (("--subscription-server", ":7000", "--resubscribe", "127.0.0.1:0"), "--resubscribe"),
    (("--subscription-server", ":7000", "--resubscribe-sign", "SHA1:/no/such.pem"), "--resubscribe-sign"),
    (("--to", "/a.sock", "--resubscribe", "127.0.0.1:7001"), "needs a --subscription-server"),
])
def test_usage_errors(args, message):
    with pytest.raises(UsageError, match=message):
        build(fast, *args)
