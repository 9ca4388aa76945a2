"""
The subscription server: datagrams in, registry changes out, refusals
logged under a rate limit, nothing a sender does ever raises.
"""

import collections
import socket

import pytest
import pytest_twisted
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.application.service import MultiService
from twisted.internet import reactor as realReactor
from twisted.internet.task import Clock, deferLater
from twisted.logger import LogLevel

from tests.captures import packets
from tests.logs import named
from txrouter.routing.admission import AddressPolicy
from txrouter.routing.subscriptions import SubscriptionRegistry
from txrouter.subscription.addresses import parseDatagramAddress
from txrouter.socketfiles import SocketFiles
from txrouter.subscription.server import (
    READ_BUFFER,
    DatagramListener,
    RegistryCloser,
    SenderCloser,
    SubscriptionProtocol,
    subscriptionServices,
)
from txrouter.wire.subscription import (
    MAX_DATAGRAM,
    Subscription,
    SubscriptionError,
    encodeSubscription,
    parseSubscription,
)
from txrouter.wire.uwsgi import encodeHeader, encodeVars

LOCAL = ("127.0.0.1", 40000)


@pytest.fixture
def clock():
    clock = Clock()
    clock.advance(1795480954.5)
    return clock


def announce(key=b"a.local", address=b"127.0.0.1:3031", **fields) -> bytes:
    return encodeSubscription(Subscription(key, address, **fields))


def oversized(size=5000) -> bytes:
    """
    A valid announce followed by a var that takes it past 4096 bytes.
    """
    block = encodeVars([(b"key", b"a.local"), (b"address", b"127.0.0.1:3031"), (b"pad", b"x" * size)])
    return encodeHeader(224, len(block), 0) + block


class FakeSender:
    def __init__(self):
        self.sent = []
        self.closed = False

    def send(self, datagram, address):
        self.sent.append((datagram, address))

    def close(self):
        self.closed = True


def test_captured_datagrams(clock):
    registry = SubscriptionRegistry(clock)
    protocol = SubscriptionProtocol(registry, clock)
    for datagram in packets("subscribe-basic.json")[:6]:
        protocol.datagramReceived(datagram, LOCAL)
    assert protocol.counts == {"accepted": 6}
    assert registry.keys() == [b"example.com", b"bar.local", b"foo.local:8080"]


def test_refusals_are_counted_and_logged_with_their_reason(clock, events):
    registry = SubscriptionRegistry(clock, allow=["10.0.0.0/8"])
    protocol = SubscriptionProtocol(registry, clock)
    protocol.datagramReceived(b"\x00" + announce()[1:], ("10.0.0.1", 1))
    protocol.datagramReceived(announce(), ("192.168.0.1", 1))
    protocol.datagramReceived(announce(), ("10.0.0.1", 1))
    assert protocol.counts == {"bad_modifier1": 1, "source_not_allowed": 1, "address_not_allowed": 1}
    refused = named(events, "subscription_refused")
    assert [(e["reason"], e["source"]) for e in refused] == [
        ("bad_modifier1", "10.0.0.1"), ("source_not_allowed", "192.168.0.1"),
        ("address_not_allowed", "10.0.0.1"),
    ]
    assert registry.keys() == []


def test_oversized_datagrams_are_refused_not_truncated(clock):
    """
    A datagram padded past 4096 bytes with a valid announce in front is
    refused whole; the read buffer is far larger than the limit.
    """
    assert READ_BUFFER > MAX_DATAGRAM
    registry = SubscriptionRegistry(clock)
    protocol = SubscriptionProtocol(registry, clock)
    padded = oversized(MAX_DATAGRAM - 40)
    assert MAX_DATAGRAM < len(padded) < 4096 + 64
    protocol.datagramReceived(padded, LOCAL)
    assert protocol.counts == {"datagram_too_large": 1}


def test_unix_datagram_senders_have_no_source(clock):
    registry = SubscriptionRegistry(clock, address_policy=AddressPolicy())
    protocol = SubscriptionProtocol(registry, clock)
    protocol.datagramReceived(announce(address=b":3031"), None)
    protocol.datagramReceived(announce(b"b.local", b":3031"), "/tmp/client.sock")
    assert [e.name for e in registry.nodes(b"a.local")] == ["127.0.0.1:3031"]
    assert [e.name for e in registry.nodes(b"b.local")] == ["127.0.0.1:3031"]


def test_the_refusal_log_is_rate_limited(clock, events):
    registry = SubscriptionRegistry(clock)
    protocol = SubscriptionProtocol(registry, clock)
    for _ in range(1000):
        protocol.datagramReceived(b"junk", LOCAL)
    assert protocol.counts == {"bad_modifier1": 1000}
    assert len(named(events, "subscription_refused")) == 20
    clock.advance(10)
    [summary] = named(events, "log_lines_suppressed")
    assert summary["count"] == 980
    protocol.datagramReceived(b"junk", LOCAL)
    assert len(named(events, "subscription_refused")) == 21


def test_pool_changes_are_rate_limited_too(clock, events):
    registry = SubscriptionRegistry(clock)
    protocol = SubscriptionProtocol(registry, clock)
    for _ in range(200):
        protocol.datagramReceived(announce(), LOCAL)
        protocol.datagramReceived(announce(unsubscribe=True), LOCAL)
    assert protocol.counts == {"accepted": 400}
    changes = [e for e in events if str(e.get("event", "")).startswith("subscription_")]
    assert len(changes) == 100


class BrokenRegistry:
    def apply(self, subscription, source):
        raise RuntimeError("bug")


def test_a_bug_never_escapes(clock, events):
    protocol = SubscriptionProtocol(BrokenRegistry(), clock)
    protocol.datagramReceived(announce(), LOCAL)
    assert protocol.counts == {"error": 1}
    [error] = named(events, "subscription_server_error")
    assert error["log_failure"].check(RuntimeError)
    assert error["log_level"] == LogLevel.error


def test_notify_acknowledges_new_nodes(clock):
    policy = AddressPolicy(directories=["/run/acks", "@acks"])
    registry = SubscriptionRegistry(clock, notify=True, address_policy=policy)
    sender = FakeSender()
    protocol = SubscriptionProtocol(registry, clock, sender=sender)
    protocol.datagramReceived(announce(notify=b"/run/acks/w.sock"), LOCAL)
    protocol.datagramReceived(announce(notify=b"/run/acks/w.sock"), LOCAL)
    protocol.datagramReceived(announce(b"b.local", notify=b"@acks-w"), LOCAL)
    [(first, target), (second, abstract)] = sender.sent
    assert first == b"[subscription ack] a.local => new node: 127.0.0.1:3031"
    assert (target.family, target.path) == (socket.AF_UNIX, "/run/acks/w.sock")
    assert second == b"[subscription ack] b.local => new node: 127.0.0.1:3031"
    assert abstract.path == "\0acks-w"


class RaisingSender(FakeSender):
    def send(self, datagram, address):
        raise FileNotFoundError(2, "No such file or directory")


def test_a_dead_notify_socket_is_ignored(clock):
    policy = AddressPolicy(directories=["/run/acks"])
    registry = SubscriptionRegistry(clock, notify=True, address_policy=policy)
    protocol = SubscriptionProtocol(registry, clock, sender=RaisingSender())
    protocol.datagramReceived(announce(notify=b"/run/acks/gone.sock"), LOCAL)
    assert protocol.counts == {"accepted": 1}


class RecordingResubscriber:
    def __init__(self):
        self.forwarded = []

    def forward(self, subscription, applied):
        self.forwarded.append((subscription.key, applied.action))


def test_only_accepted_announces_are_forwarded(clock):
    registry = SubscriptionRegistry(clock, allow=["127.0.0.0/8"])
    resubscriber = RecordingResubscriber()
    protocol = SubscriptionProtocol(registry, clock, resubscriber=resubscriber)
    protocol.datagramReceived(announce(), LOCAL)
    protocol.datagramReceived(announce(b"b.local"), ("10.0.0.1", 1))
    protocol.datagramReceived(b"junk", LOCAL)
    assert resubscriber.forwarded == [(b"a.local", "added")]


# Fuzzing

def _protocol(max_pools=1024, max_nodes=64):
    clock = Clock()
    registry = SubscriptionRegistry(
        clock, max_pools=max_pools, max_nodes=max_nodes,
        address_policy=AddressPolicy(networks=["0.0.0.0/0", "::/0"]),
    )
    return registry, SubscriptionProtocol(registry, clock, RecordingResubscriber(), FakeSender())


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=300), max_size=20))
def test_random_datagrams_never_raise(datagrams):
    """
    Each datagram is counted once; those that do not parse under the
    parser's refusal.
    """
    registry, protocol = _protocol()
    refusals = collections.Counter()
    for datagram in datagrams:
        protocol.datagramReceived(datagram, LOCAL)
        try:
            parseSubscription(datagram)
        except SubscriptionError as e:
            refusals[e.event] += 1
    assert "error" not in protocol.counts
    assert sum(protocol.counts.values()) == len(datagrams)
    assert protocol.counts & refusals == refusals


_CAPTURED = packets("subscribe-basic.json") + packets("subscribe-port0-signed-notify.json")


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(_CAPTURED),
    st.lists(st.tuples(st.integers(0, 600), st.integers(0, 255)), max_size=8),
    st.integers(0, 600),
)
def test_mutated_captures_never_raise(datagram, flips, cut):
    """
    A captured announce with bytes changed or cut short is counted once,
    under the parser's refusal when it does not parse; it leaves the
    registry empty unless accepted as a subscribe, which makes exactly
    its key's pool with its one node.
    """
    data = bytearray(datagram)
    for position, value in flips:
        if position < len(data):
            data[position] = value
    data = bytes(data[: cut or len(data)])
    registry, protocol = _protocol()
    protocol.datagramReceived(data, LOCAL)
    [(outcome, count)] = protocol.counts.items()
    assert count == 1
    try:
        subscription = parseSubscription(data)
    except SubscriptionError as e:
        assert outcome == e.event
        assert registry.keys() == []
        return
    assert outcome != "error"
    if outcome == "accepted" and not (subscription.unsubscribe or subscription.clear):
        assert registry.keys() == [subscription.key]
        assert len(registry.nodes(subscription.key)) == 1
    else:
        assert registry.keys() == []


_keys = st.binary(min_size=1, max_size=40)
_ports = st.integers(1024, 65535)


@settings(max_examples=50, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(_keys, _ports, st.booleans()), min_size=50, max_size=400))
def test_caps_hold_under_a_flood_of_keys(flood):
    registry, protocol = _protocol(max_pools=8, max_nodes=3)
    for key, port, unsubscribe in flood:
        protocol.datagramReceived(
            announce(key, b"10.0.0.1:%d" % port, unsubscribe=unsubscribe), ("10.0.0.1", 1),
        )
    assert "error" not in protocol.counts
    assert len(registry.keys()) <= 8
    assert all(len(registry.nodes(key)) <= 3 for key in registry.keys())
    refused = protocol.counts["too_many_pools"] + protocol.counts["too_many_nodes"]
    assert protocol.counts["accepted"] + refused == len(flood)


# Listening

class FakeReactor(Clock):
    def __init__(self):
        super().__init__()
        self.udp = []
        self.unix = []

    def listenUDP(self, port, protocol, interface="", maxPacketSize=8192):
        self.udp.append((port, protocol, interface, maxPacketSize))
        return FakePort()

    def listenUNIXDatagram(self, address, protocol, maxPacketSize=8192, mode=0o666):
        self.unix.append((address, protocol, maxPacketSize, mode))
        return FakePort()


class FakePort:
    stopped = False

    def stopListening(self):
        self.stopped = True


def test_services_listen_on_each_address(tmp_path, events):
    reactor = FakeReactor()
    registry = SubscriptionRegistry(reactor)
    stale = tmp_path / "sub.sock"
    leftover = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    leftover.bind(str(stale))
    leftover.close()
    sender = FakeSender()
    services = subscriptionServices(
        reactor, ["127.0.0.1:7000", ":7001", str(stale), "@subs"], registry, sender=sender,
        listening=SocketFiles(reactor),
    )
    assert [type(s) for s in services] == [RegistryCloser] + [DatagramListener] * 4 + [SenderCloser]
    for service in services:
        service.privilegedStartService()
        service.startService()
    assert [(port, interface, size) for port, _, interface, size in reactor.udp] == [
        (7000, "127.0.0.1", READ_BUFFER), (7001, "", READ_BUFFER),
    ]
    assert [(address, size) for address, _, size, _ in reactor.unix] == [
        (str(stale), READ_BUFFER), ("\0subs", READ_BUFFER),
    ]
    assert not stale.exists()
    protocols = [p for _, p, _, _ in reactor.udp] + [p for _, p, _, _ in reactor.unix]
    assert len(set(map(id, protocols))) == 4
    assert all(p.registry is registry for p in protocols)
    # Only the wildcard UDP address is open to every host unchecked.
    [warning] = named(events, "subscription_server_open")
    assert warning["address"] == ":7001"
    stale.write_bytes(b"")
    for service in services:
        service.stopService()
    assert stale.exists(), "only socket files are removed"
    assert all(s.port is None for s in services[1:5]) and sender.closed


def test_no_warning_with_an_allow_list_or_signing(events):
    reactor = FakeReactor()
    subscriptionServices(reactor, [":7000"], SubscriptionRegistry(reactor, allow=["10.0.0.0/8"]))
    assert named(events, "subscription_server_open") == []


def test_bad_server_address():
    with pytest.raises(ValueError):
        subscriptionServices(FakeReactor(), ["localhost:7000"], SubscriptionRegistry(Clock()))


@pytest_twisted.inlineCallbacks
def test_real_sockets(tmp_path):
    """
    Through the kernel: UDP and a unix datagram socket; an oversized
    datagram is refused whole.
    """
    registry = SubscriptionRegistry(realReactor, address_policy=AddressPolicy())
    path = str(tmp_path / "subs.sock")
    services = MultiService()
    for service in subscriptionServices(realReactor, ["127.0.0.1:0", path], registry):
        service.setServiceParent(services)
    closer, udp, unix = services
    services.startService()
    try:
        port = udp.port.getHost().port
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.sendto(oversized(), ("127.0.0.1", port))
            client.sendto(announce(), ("127.0.0.1", port))
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as client:
            client.sendto(announce(b"b.local", b":3032"), path)
        # Polled with the reactor running, every 20 ms for up to 10 s.
        for _ in range(500):
            if len(registry.keys()) == 2:
                break
            yield deferLater(realReactor, 0.02, lambda: None)
        else:
            pytest.fail(f"the two announces not applied after 10 s: {registry.keys()}")
        assert udp.protocol.counts == {"datagram_too_large": 1, "accepted": 1}
        assert unix.protocol.counts == {"accepted": 1}
        assert [e.name for e in registry.nodes(b"b.local")] == ["127.0.0.1:3032"]
        assert any(call.func.__self__ is registry for call in realReactor.getDelayedCalls())
    finally:
        yield services.stopService()
    # The registry's expiry timer went with the services.
    assert not any(
        getattr(call.func, "__self__", None) is registry for call in realReactor.getDelayedCalls()
    )
    assert not (tmp_path / "subs.sock").exists()


def test_datagram_address_parsing():
    assert parseDatagramAddress("127.0.0.1:7000").sendTo() == ("127.0.0.1", 7000)
    assert parseDatagramAddress(":7000").sendTo() == ("127.0.0.1", 7000)
    assert parseDatagramAddress("[::1]:7000").family == socket.AF_INET6
    assert parseDatagramAddress("@name").sendTo() == "\0name"
    assert parseDatagramAddress("/run/s.sock").sendTo() == "/run/s.sock"
    for bad in ("localhost:7000", "7000", "1.2.3.4:0", "::1:7000", "[1.2.3.4]:7", "@", "x",
                "[]:7000", ":\u0663\u0660\u0663\u0661"):
        with pytest.raises(ValueError):
            parseDatagramAddress(bad)
