"""
Federation: what a router announces to its --resubscribe targets, and the
datagrams it sends.
"""

import os
import socket

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from twisted.internet.task import Clock

from txrouter.routing.nodes import HTTP
from txrouter.routing.subscriptions import SubscriptionRegistry
from txrouter.subscription.addresses import parseDatagramAddress, uwsgiAddressOfEndpoint
from txrouter.subscription.federation import DatagramSender, Resubscriber, ackMessage
from txrouter.subscription.server import SubscriptionProtocol
from txrouter.subscription.signing import SignatureChecker, keyFileName
from txrouter.wire.subscription import Subscription, encodeSubscription, parseSubscription

LOCAL = ("127.0.0.1", 40000)
TARGETS = [parseDatagramAddress("10.0.0.9:7000"), parseDatagramAddress("/run/up.sock")]


class FakeSender:
    def __init__(self):
        self.sent = []

    def send(self, datagram, address):
        self.sent.append((parseSubscription(datagram), address.text))


@pytest.fixture
def clock():
    clock = Clock()
    clock.advance(1795480954.0)
    return clock


def router(clock, sign=None):
    """
    A registry and server protocol that resubscribe as 127.0.0.1:3017.
    """
    sender = FakeSender()
    resubscriber = Resubscriber(clock, TARGETS, "127.0.0.1:3017", sender, sign)
    registry = SubscriptionRegistry(clock)
    return registry, SubscriptionProtocol(registry, clock, resubscriber), sender


def announce(address=b"127.0.0.1:3031", **fields):
    return encodeSubscription(Subscription(b"a.local", address, **fields))


def test_new_announce_with_the_routers_address(clock):
    """
    Same key, modifiers and sni_*; our address; cores, load, weight 0;
    no notify, no signature; to every target.
    """
    registry, protocol, sender = router(clock)
    protocol.datagramReceived(
        announce(modifier1=5, modifier2=3, cores=4, load=2, weight=7, sniKey=b"/k",
                 sniCrt=b"/c", notify=b"/n", unix=5, sign=b"s"),
        LOCAL,
    )
    assert [target for _, target in sender.sent] == ["10.0.0.9:7000", "/run/up.sock"]
    forwarded = sender.sent[0][0]
    assert forwarded == Subscription(
        b"a.local", b"127.0.0.1:3017", modifier1=5, modifier2=3, sniKey=b"/k", sniCrt=b"/c",
    )


def test_an_http_router_says_it_speaks_http(clock):
    """
    The HTTP router's re-announces carry uWSGI 2.1's C{proto}, so that the
    registry upstream makes an HTTP node of it.
    """
    sender = FakeSender()
    resubscriber = Resubscriber(clock, TARGETS, "127.0.0.1:8080", sender, proto=b"http")
    protocol = SubscriptionProtocol(SubscriptionRegistry(clock), clock, resubscriber)
    protocol.datagramReceived(announce(), LOCAL)
    forwarded = sender.sent[0][0]
    assert forwarded.proto == b"http"
    upstream = SubscriptionRegistry(clock)
    upstream.apply(forwarded, "127.0.0.1")
    assert upstream.pick(b"a.local").protocol == HTTP


def test_subscribes_at_most_once_a_second_per_key(clock):
    registry, protocol, sender = router(clock)
    protocol.datagramReceived(announce(), LOCAL)
    protocol.datagramReceived(announce(b"127.0.0.1:3032"), LOCAL)
    protocol.datagramReceived(announce(), LOCAL)
    assert len(sender.sent) == 2
    clock.advance(1)
    protocol.datagramReceived(announce(), LOCAL)
    assert len(sender.sent) == 4


def test_unsubscribe_only_when_the_key_has_no_node_left(clock):
    registry, protocol, sender = router(clock)
    protocol.datagramReceived(announce(), LOCAL)
    protocol.datagramReceived(announce(b"127.0.0.1:3032"), LOCAL)
    clock.advance(1)
    protocol.datagramReceived(announce(unsubscribe=True), LOCAL)
    assert [s.unsubscribe for s, _ in sender.sent] == [False, False, False, False]
    protocol.datagramReceived(announce(b"127.0.0.1:3032", unsubscribe=True), LOCAL)
    assert [s.unsubscribe for s, _ in sender.sent[4:]] == [True, True]
    # Unsubscribing what is not there forwards nothing, nor do refusals.
    protocol.datagramReceived(announce(b"127.0.0.1:3032", unsubscribe=True), LOCAL)
    protocol.datagramReceived(announce(b"169.254.169.254:80"), LOCAL)
    assert len(sender.sent) == 6


def test_two_routers_resubscribing_to_each_other_do_not_echo_forever(clock):
    """
    A and B forward to each other; one announce to A makes a bounded
    number of datagrams within a second.
    """
    queue = []

    class Wire:
        def __init__(self, to):
            self.to = to

        def send(self, datagram, address):
            queue.append((self.to, datagram))

    registries, protocols = {}, {}
    for name, other, port in (("A", "B", 3017), ("B", "A", 3018)):
        registries[name] = SubscriptionRegistry(clock)
        resubscriber = Resubscriber(
            clock, [parseDatagramAddress("127.0.0.1:7000")], f"127.0.0.1:{port}", Wire(other),
        )
        protocols[name] = SubscriptionProtocol(registries[name], clock, resubscriber)
    protocols["A"].datagramReceived(announce(), LOCAL)
    delivered = 0
    while queue and delivered < 100:
        to, datagram = queue.pop(0)
        protocols[to].datagramReceived(datagram, LOCAL)
        delivered += 1
    assert delivered == 2
    assert [e.name for e in registries["B"].nodes(b"a.local")] == ["127.0.0.1:3017"]
    assert [e.name for e in registries["A"].nodes(b"a.local")] == ["127.0.0.1:3031", "127.0.0.1:3018"]


@pytest.fixture(scope="module")
def routerKey():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def test_signed_resubscriptions_pass_a_replay_protected_target(clock, tmp_path, routerKey):
    """
    Each forwarded announce of a key carries a larger unix, even several
    within one second (subscribe, unsubscribe, subscribe again).
    """
    pem = routerKey.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    (tmp_path / keyFileName(b"a.local")).write_bytes(routerKey.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo,
    ))
    checker = SignatureChecker("SHA256", str(tmp_path), clock=clock)
    registry, protocol, sender = router(clock, ("SHA256", pem))
    protocol.datagramReceived(announce(), LOCAL)
    protocol.datagramReceived(announce(unsubscribe=True), LOCAL)
    protocol.datagramReceived(announce(), LOCAL)
    clock.advance(1)
    protocol.datagramReceived(announce(), LOCAL)
    forwarded = [s for s, target in sender.sent if target == "/run/up.sock"]
    assert [(s.unsubscribe, s.unix) for s in forwarded] == [
        (False, 1795480954), (True, 1795480955), (False, 1795480956), (False, 1795480957),
    ]
    for subscription in forwarded:
        checker.check(subscription)


def test_datagram_sender_on_real_sockets(tmp_path):
    path = str(tmp_path / "ack.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as unix, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        unix.bind(path)
        udp.bind(("127.0.0.1", 0))
        sender = DatagramSender()
        sender.send(ackMessage(b"a.local", "127.0.0.1:3031"), parseDatagramAddress(path))
        sender.send(b"hello", parseDatagramAddress("127.0.0.1:%d" % udp.getsockname()[1]))
        unix.settimeout(5)
        udp.settimeout(5)
        assert unix.recv(100) == b"[subscription ack] a.local => new node: 127.0.0.1:3031"
        assert udp.recv(100) == b"hello"
        with pytest.raises(OSError):
            sender.send(b"x", parseDatagramAddress(str(tmp_path / "missing.sock")))
        sender.close()
        assert not os.path.exists(tmp_path / "missing.sock")


@pytest.mark.parametrize("endpoint, address", [
    ("tcp:3017:interface=127.0.0.1", "127.0.0.1:3017"),
    ("tcp:port=3017:interface=10.0.0.1", "10.0.0.1:3017"),
    ("tcp:3017", ":3017"),
    ("tcp:3017:50:0.0.0.0", ":3017"),
    ("tcp6:3017:interface=\\:\\:1", "[::1]:3017"),
    ("unix:/run/r.sock", "/run/r.sock"),
    ("unix:address=/run/r.sock:mode=600", "/run/r.sock"),
    ("ssl:443:privateKey=k.pem", None),
    ("systemd:domain=INET:index=0", None),
])
def test_uwsgi_address_of_endpoint(endpoint, address):
    assert uwsgiAddressOfEndpoint(endpoint) == address
