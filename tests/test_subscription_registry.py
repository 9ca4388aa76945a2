"""
The subscription registry keeps pools as uWSGI does (reference sections
2.6 to 2.9), with a timer for expiry, and admits only what its policies
allow.
"""

import shutil

import attr
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from tests.captures import FIXTURES, load, packets
from tests.logs import named
from txrouter.routing.admission import AddressPolicy
from txrouter.routing.interfaces import IAvailability, IForwarder, NoNodeForKey
from txrouter.routing.subscriptions import (
    ABSENT,
    ADDED,
    REFRESHED,
    REMOVED,
    SubscriptionRegistry,
)
from txrouter.stats.document import IStatsSource
from txrouter.subscription.signing import SignatureChecker, signSubscription
from txrouter.wire.subscription import Subscription, SubscriptionError, parseSubscription

START = 1795480954.5
LOCAL = "127.0.0.1"


@pytest.fixture
def clock():
    clock = Clock()
    clock.advance(START)
    return clock


def sub(key=b"a.local", address=b"127.0.0.1:3031", **fields):
    return Subscription(key, address, **fields)


def unsub(key=b"a.local", address=b"127.0.0.1:3031", **fields):
    return Subscription(key, address, unsubscribe=True, **fields)


def names(registry, key=b"a.local"):
    return [entry.name for entry in registry.nodes(key)]


def picks(registry, count, key=b"a.local"):
    return [registry.pick(key, None).name.rsplit(":", 1)[1] for _ in range(count)]


def refuses(event, call, *args):
    with pytest.raises(SubscriptionError) as raised:
        call(*args)
    assert raised.value.event == event
    return raised.value


def test_interfaces(clock):
    registry = SubscriptionRegistry(clock)
    assert verifyObject(IForwarder, registry)
    assert verifyObject(IAvailability, registry)
    assert verifyObject(IStatsSource, registry)


def test_captured_announces_of_a_real_uwsgi(clock):
    """
    The three keys of the capture get pools; their nodes carry the
    modifiers of the announces; the final unsubscribes empty them.
    """
    registry = SubscriptionRegistry(clock)
    datagrams = packets("subscribe-basic.json")
    actions = [registry.apply(parseSubscription(d), LOCAL).action for d in datagrams]
    assert actions[:3] == [ADDED, ADDED, ADDED]
    assert set(actions[3:-3]) == {REFRESHED}
    assert actions[-3:] == [REMOVED, REMOVED, REMOVED]
    assert registry.keys() == [] and not registry.available
    for datagram in datagrams[:3]:
        registry.apply(parseSubscription(datagram), LOCAL)
    assert registry.keys() == [b"example.com", b"bar.local", b"foo.local:8080"]
    node = registry.pick(b"foo.local:8080")
    assert (node.name, node.host, node.port) == ("127.0.0.1:3031", LOCAL, 3031)
    assert (node.modifier1, node.modifier2) == (5, 3)
    assert registry.pick(b"bar.local").modifier1 == 9
    # Keys are exact bytes: case and port matter.
    for key in (b"foo.local", b"Example.com"):
        with pytest.raises(NoNodeForKey):
            registry.pick(key)


def test_new_pool_and_node_are_logged_like_uwsgi(clock, events):
    registry = SubscriptionRegistry(clock)
    applied = registry.apply(sub(b"example.com"), LOCAL)
    assert applied == attr.evolve(applied, action=ADDED, newPool=True, poolLeft=True)
    [created] = named(events, "subscription_pool_created")
    assert (created["key"], created["hash"]) == ("example.com", 30778)
    [added] = named(events, "subscription_node_added")
    assert (added["key"], added["node"]) == ("example.com", "127.0.0.1:3031")
    registry.apply(sub(b"example.com"), LOCAL)
    assert len(named(events, "subscription_node_added")) == 1


def test_keys_cannot_forge_log_lines(clock, events):
    registry = SubscriptionRegistry(clock)
    registry.apply(sub(b"a\n2026-01-01 [txrouter#info] forged\xff"), LOCAL)
    [added] = named(events, "subscription_node_added")
    assert added["key"] == "a\\x0a2026-01-01 [txrouter#info] forged\\xff"
    assert registry.statsFields()[0][1][0]["key"] == "a\n2026-01-01 [txrouter#info] forged\\xff"


def test_refresh_updates_what_uwsgi_updates(clock):
    """
    cores, load, weight (0 is 1) and the requests since the last announce;
    not modifier1/modifier2 nor the backup level.
    """
    registry = SubscriptionRegistry(clock)
    registry.apply(sub(modifier1=5, modifier2=2, cores=1, load=0, weight=0, backup=0), LOCAL)
    [entry] = registry.nodes(b"a.local")
    assert entry.weight == 1
    node = registry.pick(b"a.local")
    registry.connected(b"a.local", node)
    assert (entry.requests, entry.lastRequests) == (1, 1)
    clock.advance(5)
    applied = registry.apply(sub(modifier1=9, modifier2=9, cores=4, load=7, weight=3, backup=2), LOCAL)
    assert applied.action == REFRESHED and not applied.newPool
    assert (entry.cores, entry.load, entry.weight) == (4, 7, 3)
    assert (entry.requests, entry.lastRequests) == (1, 0)
    assert entry.lastSeen == START + 5
    assert registry.pick(b"a.local") is node
    assert (node.modifier1, node.modifier2, entry.backup) == (5, 2, 0)


def test_nodes_join_at_the_end(clock):
    registry = SubscriptionRegistry(clock)
    for port in (3031, 3032, 3033):
        registry.apply(sub(address=b"127.0.0.1:%d" % port), LOCAL)
    registry.apply(unsub(address=b"127.0.0.1:3031"), LOCAL)
    registry.apply(sub(address=b"127.0.0.1:3031"), LOCAL)
    assert names(registry) == ["127.0.0.1:3032", "127.0.0.1:3033", "127.0.0.1:3031"]


def test_unsubscribe_removes_at_once_and_the_pool_with_its_last_node(clock, events):
    registry = SubscriptionRegistry(clock)
    changes = []
    registry.watchAvailability(changes.append)
    registry.apply(sub(address=b"127.0.0.1:3031"), LOCAL)
    registry.apply(sub(address=b"127.0.0.1:3032"), LOCAL)
    applied = registry.apply(unsub(address=b"127.0.0.1:3031"), LOCAL)
    assert (applied.action, applied.poolLeft) == (REMOVED, True)
    assert names(registry) == ["127.0.0.1:3032"]
    applied = registry.apply(unsub(address=b"127.0.0.1:3032"), LOCAL)
    assert (applied.action, applied.poolLeft) == (REMOVED, False)
    assert registry.keys() == [] and changes == [True, False]
    assert registry.apply(unsub(address=b"127.0.0.1:3032"), LOCAL).action == ABSENT
    assert len(named(events, "subscription_node_removed")) == 2
    assert len(named(events, "subscription_pool_removed")) == 1
    # uWSGI 2.1's clear=1 on a subscribe asks for removal too.
    registry.apply(sub(), LOCAL)
    assert registry.apply(sub(clear=1), LOCAL).action == REMOVED


def test_expiry_by_timer_without_traffic(clock, events):
    """
    A node not announced for the tolerance goes by itself, on time; each
    announce pushes its deadline back.
    """
    registry = SubscriptionRegistry(clock, tolerance=17)
    changes = []
    registry.watchAvailability(changes.append)
    registry.apply(sub(address=b"127.0.0.1:3031"), LOCAL)
    clock.advance(10)
    registry.apply(sub(address=b"127.0.0.1:3032"), LOCAL)
    clock.advance(6.9)
    assert len(registry.nodes(b"a.local")) == 2
    registry.apply(sub(address=b"127.0.0.1:3031"), LOCAL)
    clock.advance(0.2)
    assert names(registry) == ["127.0.0.1:3031", "127.0.0.1:3032"]
    clock.advance(10)
    assert names(registry) == ["127.0.0.1:3031"]
    [expired] = named(events, "subscription_node_expired")
    assert (expired["key"], expired["node"], expired["tolerance"]) == ("a.local", "127.0.0.1:3032", 17)
    clock.advance(7)
    assert registry.keys() == [] and changes == [True, False]
    assert clock.getDelayedCalls() == []


def test_close_cancels_the_expiry_timer(clock):
    """
    A stopped registry leaves no call in the reactor, arms none for new
    nodes, and still never serves a node past its tolerance.
    """
    registry = SubscriptionRegistry(clock, tolerance=17)
    registry.apply(sub(address=b"127.0.0.1:3031"), LOCAL)
    assert len(clock.getDelayedCalls()) == 1
    registry.close()
    registry.close()
    assert clock.getDelayedCalls() == []
    registry.apply(sub(address=b"127.0.0.1:3032"), LOCAL)
    assert clock.getDelayedCalls() == []
    clock.advance(17)
    with pytest.raises(NoNodeForKey):
        registry.pick(b"a.local")
    assert registry.keys() == []


def test_pick_never_returns_an_expired_node(clock):
    """
    Even before the timer ran (a pick in the same reactor turn).
    """
    registry = SubscriptionRegistry(clock, tolerance=3)
    registry.apply(sub(), LOCAL)
    clock.rightNow += 3
    with pytest.raises(NoNodeForKey):
        registry.pick(b"a.local")


def test_churn_does_not_pile_up_deadlines(clock):
    registry = SubscriptionRegistry(clock)
    for _ in range(5000):
        registry.apply(sub(), LOCAL)
        registry.apply(unsub(), LOCAL)
    assert len(registry._deadlines) < 200


def test_failed_node_is_dead_until_announced_again(clock, events):
    """
    uWSGI's death mark: a node that failed to connect serves no more; its
    next announce brings it back in place.
    """
    registry = SubscriptionRegistry(clock)
    registry.apply(sub(address=b"127.0.0.1:3031"), LOCAL)
    registry.apply(sub(address=b"127.0.0.1:3032"), LOCAL)
    node = registry.pick(b"a.local")
    registry.failed(b"a.local", node)
    registry.failed(b"a.local", node)
    [failed] = named(events, "subscription_node_failed")
    assert failed["node"] == node.name == "127.0.0.1:3032"
    assert [registry.pick(b"a.local").name for _ in range(3)] == ["127.0.0.1:3031"] * 3
    stats = registry.statsFields()[0][1][0]["nodes"]
    assert [(n["death_mark"], n["failcnt"]) for n in stats] == [(0, 0), (1, 1)]
    assert registry.apply(sub(address=b"127.0.0.1:3032"), LOCAL).action == REFRESHED
    assert names(registry) == ["127.0.0.1:3031", "127.0.0.1:3032"]
    assert registry.pick(b"a.local") is node


def test_a_pool_of_dead_nodes_has_no_node_now(clock):
    """
    pick answers None (a retry gets 502/503, not 404); availability goes;
    the dead node expires like any other.
    """
    registry = SubscriptionRegistry(clock)
    changes = []
    registry.watchAvailability(changes.append)
    registry.apply(sub(), LOCAL)
    registry.failed(b"a.local", registry.pick(b"a.local"))
    assert registry.pick(b"a.local") is None
    assert changes == [True, False] and not registry.available
    registry.apply(sub(), LOCAL)
    assert changes == [True, False, True]
    registry.failed(b"a.local", registry.pick(b"a.local"))
    clock.advance(17)
    assert registry.keys() == [] and changes == [True, False, True, False]
    with pytest.raises(NoNodeForKey):
        registry.pick(b"a.local")


def test_wrr_order_in_a_pool(clock):
    registry = SubscriptionRegistry(clock)
    registry.apply(sub(address=b"127.0.0.1:3031", weight=3), LOCAL)
    registry.apply(sub(address=b"127.0.0.1:3032", weight=1), LOCAL)
    assert picks(registry, 8) == ["3032", "3031", "3031", "3031"] * 2


def test_lrc_counts_requests_in_flight(clock):
    registry = SubscriptionRegistry(clock, algo="lrc")
    registry.apply(sub(address=b"127.0.0.1:3031"), LOCAL)
    registry.apply(sub(address=b"127.0.0.1:3032"), LOCAL)
    first = registry.pick(b"a.local")
    registry.connected(b"a.local", first)
    second = registry.pick(b"a.local")
    assert second is not first
    registry.connected(b"a.local", second)
    registry.released(b"a.local", first)
    assert registry.pick(b"a.local") is first
    stats = registry.statsFields()[0][1][0]
    assert [n["ref"] for n in stats["nodes"]] == [1, 1]


def test_abandoned_picks_stop_counting_after_the_pending_timeout(clock):
    """
    A pick whose connect is abandoned is never reported; it counts as in
    flight until the connect timeout, then no more.
    """
    registry = SubscriptionRegistry(clock, algo="lrc", pending_timeout=5)
    registry.apply(sub(address=b"127.0.0.1:3031"), LOCAL)
    registry.apply(sub(address=b"127.0.0.1:3032"), LOCAL)
    abandoned = registry.pick(b"a.local")
    assert abandoned.name == "127.0.0.1:3032"
    for _ in range(3):
        node = registry.pick(b"a.local")
        assert node is not abandoned
        registry.connected(b"a.local", node)
        registry.released(b"a.local", node)
    clock.advance(5.5)
    assert registry.pick(b"a.local") is abandoned


def test_an_abandoned_pick_stops_counting_at_once(clock):
    """
    A pick the router reports abandoned (the client left during the
    connect) no longer counts as in flight.
    """
    registry = SubscriptionRegistry(clock, algo="lrc", pending_timeout=60)
    registry.apply(sub(address=b"127.0.0.1:3031"), LOCAL)
    registry.apply(sub(address=b"127.0.0.1:3032"), LOCAL)
    abandoned = registry.pick(b"a.local")
    registry.abandoned(b"a.local", abandoned)
    assert registry.pick(b"a.local") is abandoned


def test_pool_algo_from_the_creating_announce(clock):
    """
    uWSGI 2.1's algo var chooses the algorithm of a new pool; an unknown
    name falls back to the registry's.
    """
    registry = SubscriptionRegistry(clock)
    registry.apply(sub(b"l.local", algo=b"lrc"), LOCAL)
    registry.apply(sub(b"x.local", algo=b"nonsense"), LOCAL)
    pools = {p["key"]: p["algo"] for p in registry.statsFields()[0][1]}
    assert pools == {"l.local": "lrc", "x.local": "wrr"}


def test_dotsplit(clock):
    registry = SubscriptionRegistry(clock, dotsplit=True, fallback_key="a.local")
    registry.apply(sub(b".example.com"), LOCAL)
    registry.apply(sub(b"a.local"), LOCAL)
    assert registry.pick(b"www.example.com").name == "127.0.0.1:3031"
    assert registry.pick(b"a.b.c.example.com") is not None
    # Five lookups at most: a.b.c.d.example.com, .b.c.d..., .c.d..., .d..., .example.com
    registry.pick(b"a.b.c.d.example.com")
    with pytest.raises(NoNodeForKey):
        registry.pick(b"a.b.c.d.e.example.com")
    # The fallback key is ignored with dotsplit, as in uWSGI.
    with pytest.raises(NoNodeForKey):
        registry.pick(b"other.org")
    with pytest.raises(NoNodeForKey):
        registry.pick(b"example.com")


def test_dotsplit_outcomes_reach_the_suffix_pool(clock):
    registry = SubscriptionRegistry(clock, dotsplit=True)
    # Watched for cheap mode: a lone node that fails is marked dead.
    registry.watchAvailability(lambda available: None)
    registry.apply(sub(b".example.com"), LOCAL)
    node = registry.pick(b"www.example.com")
    registry.connected(b"www.example.com", node)
    assert registry.nodes(b".example.com")[0].requests == 1
    registry.failed(b"www.example.com", node)
    assert registry.pick(b"www.example.com") is None
    # uWSGI moves on to the next suffix when a pool has no live node.
    registry.apply(sub(b".com", b"127.0.0.1:3099"), LOCAL)
    assert registry.pick(b"www.example.com").name == "127.0.0.1:3099"
    assert registry.pick(b".example.com").name == "127.0.0.1:3099"
    registry.failed(b".com", registry.pick(b".com"))
    assert registry.pick(b"www.example.com") is None


def test_fallback_key(clock):
    registry = SubscriptionRegistry(clock, fallback_key=b"default.local")
    with pytest.raises(NoNodeForKey):
        registry.pick(b"x.local")
    registry.apply(sub(b"default.local", address=b"127.0.0.1:3040"), LOCAL)
    registry.apply(sub(b"a.local"), LOCAL)
    assert registry.pick(b"x.local").name == "127.0.0.1:3040"
    assert registry.pick(b"a.local").name == "127.0.0.1:3031"


def test_backup_levels(clock):
    """
    Backups serve only while no node of a lower level is there.
    """
    registry = SubscriptionRegistry(clock)
    registry.apply(sub(address=b"127.0.0.1:3031", backup=0), LOCAL)
    registry.apply(sub(address=b"127.0.0.1:3032", backup=1), LOCAL)
    registry.apply(sub(address=b"127.0.0.1:3033", backup=2), LOCAL)
    assert set(picks(registry, 4)) == {"3031"}
    registry.apply(unsub(address=b"127.0.0.1:3031"), LOCAL)
    assert set(picks(registry, 4)) == {"3032"}
    registry.failed(b"a.local", registry.pick(b"a.local"))
    assert set(picks(registry, 4)) == {"3033"}
    registry.apply(sub(address=b"127.0.0.1:3032"), LOCAL)
    assert set(picks(registry, 4)) == {"3032"}
    registry.apply(sub(address=b"127.0.0.1:3031"), LOCAL)
    assert set(picks(registry, 4)) == {"3031"}


def test_caps_on_pools_and_nodes(clock):
    registry = SubscriptionRegistry(clock, max_pools=2, max_nodes=2)
    registry.apply(sub(b"a.local"), LOCAL)
    registry.apply(sub(b"b.local"), LOCAL)
    refuses("too_many_pools", registry.apply, sub(b"c.local"), LOCAL)
    registry.apply(sub(b"a.local", b"127.0.0.1:3032"), LOCAL)
    refuses("too_many_nodes", registry.apply, sub(b"a.local", b"127.0.0.1:3033"), LOCAL)
    # Refreshes and unsubscribes still work at the caps.
    assert registry.apply(sub(b"a.local", b"127.0.0.1:3032"), LOCAL).action == REFRESHED
    registry.apply(unsub(b"b.local"), LOCAL)
    registry.apply(sub(b"c.local"), LOCAL)
    assert registry.keys() == [b"a.local", b"c.local"]


def test_an_announce_refused_at_the_caps_keeps_its_timestamp(clock, tmp_path):
    """
    The caps are checked before the signature, which remembers the
    timestamp of what it accepts: signed announces refused at the caps are
    accepted once there is room, and only once.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    for name in ("a.local", "b.local"):
        (tmp_path / f"{name}.pem").write_bytes(public)
    checker = SignatureChecker("SHA256", str(tmp_path), clock=clock)
    registry = SubscriptionRegistry(clock, sign_check=checker, max_pools=1, max_nodes=1)

    def signed(announce):
        return signSubscription(announce, "SHA256", private, int(clock.seconds()))

    registry.apply(signed(sub(b"a.local", b"127.0.0.1:3031")), LOCAL)
    newPool = signed(sub(b"b.local", b"127.0.0.1:3031"))
    newNode = signed(sub(b"a.local", b"127.0.0.1:3032"))
    refuses("too_many_pools", registry.apply, newPool, LOCAL)
    refuses("too_many_nodes", registry.apply, newNode, LOCAL)
    registry.apply(signed(unsub(b"a.local", b"127.0.0.1:3031")), LOCAL)
    assert registry.apply(newNode, LOCAL).action == ADDED
    refuses("replayed", registry.apply, newNode, LOCAL)
    registry.apply(signed(unsub(b"a.local", b"127.0.0.1:3032")), LOCAL)
    assert registry.apply(newPool, LOCAL).action == ADDED
    refuses("replayed", registry.apply, newPool, LOCAL)
    assert registry.keys() == [b"b.local"]


def test_source_allow_list(clock):
    registry = SubscriptionRegistry(
        clock, allow=["10.0.0.0/8"], address_policy=AddressPolicy(networks=["0.0.0.0/0"]),
    )
    registry.apply(sub(address=b"10.1.2.3:3031"), "10.1.2.3")
    refuses("source_not_allowed", registry.apply, sub(address=b"10.1.2.3:3031"), "192.168.0.1")
    refuses("source_not_allowed", registry.apply, unsub(address=b"10.1.2.3:3031"), "127.0.0.1")
    # Unix datagram senders are guarded by the socket file's permissions.
    registry.apply(sub(b"b.local"), None)
    assert registry.keys() == [b"a.local", b"b.local"]


def test_default_address_policy(clock):
    """
    A subscriber may announce only itself (a local one: any loopback
    address), on ports from 1024 up, no unix socket, not the router.
    """
    registry = SubscriptionRegistry(clock, address_policy=AddressPolicy(ownPorts={3017}))
    registry.apply(sub(address=b"127.0.0.1:3031"), LOCAL)
    registry.apply(sub(address=b"127.0.0.2:3031"), None)
    registry.apply(sub(address=b"192.168.0.5:3031"), "192.168.0.5")
    registry.apply(sub(address=b"[::1]:3031"), "::1")
    refuses("address_not_allowed", registry.apply, sub(address=b"127.0.0.1:3031"), "192.168.0.5")
    refuses("address_not_allowed", registry.apply, sub(address=b"192.168.0.6:3031"), "192.168.0.5")
    refuses("address_not_allowed", registry.apply, sub(address=b"169.254.169.254:8080"), LOCAL)
    refuses("address_not_allowed", registry.apply, sub(address=b"127.0.0.1:22"), LOCAL)
    refuses("address_not_allowed", registry.apply, sub(address=b"127.0.0.1:3017"), LOCAL)
    refuses("address_not_allowed", registry.apply, sub(address=b"224.0.0.1:3031"), LOCAL)
    refuses("address_not_allowed", registry.apply, sub(address=b"/run/app.sock"), LOCAL)
    refuses("address_not_allowed", registry.apply, sub(address=b"@app"), LOCAL)
    for bad in (b"app.sock", b"localhost:3031", b"127.0.0.1:0", b"127.0.0.1:",
                b"127.0.0.1:99999", b"::1:3031", b"[127.0.0.1]:3031", b"/a b", b"\xff:1"):
        refuses("bad_address", registry.apply, sub(address=bad), LOCAL)
    assert names(registry) == ["127.0.0.1:3031", "127.0.0.2:3031", "192.168.0.5:3031", "[::1]:3031"]


def test_configured_address_policy(clock):
    policy = AddressPolicy(
        networks=["10.0.0.0/8", "source"], ports=["3031", "8000-8010"],
        directories=["/run/apps/", "@apps-"],
    )
    registry = SubscriptionRegistry(clock, address_policy=policy)
    registry.apply(sub(address=b"10.9.9.9:8005"), "192.168.0.5")
    registry.apply(sub(address=b"192.168.0.5:3031"), "192.168.0.5")
    registry.apply(sub(address=b"/run/apps/a.sock"), LOCAL)
    registry.apply(sub(address=b"@apps-a"), LOCAL)
    refuses("address_not_allowed", registry.apply, sub(address=b"10.9.9.9:3032"), LOCAL)
    refuses("address_not_allowed", registry.apply, sub(address=b"/run/apps/../docker.sock"), LOCAL)
    refuses("address_not_allowed", registry.apply, sub(address=b"/run/appsx/a.sock"), LOCAL)
    refuses("address_not_allowed", registry.apply, sub(address=b"@other"), LOCAL)
    assert names(registry) == ["10.9.9.9:8005", "192.168.0.5:3031", "/run/apps/a.sock", "@apps-a"]
    paths = [e.node.path for e in registry.nodes(b"a.local")]
    assert paths == [None, None, "/run/apps/a.sock", "\0apps-a"]


def test_port_only_addresses_are_completed_with_the_sender(clock):
    """
    uWSGI connects a :port node to itself; here it is the subscriber's
    port, so two hosts announcing :3031 are two nodes, each removable by
    its own unsubscribe.
    """
    policy = AddressPolicy(networks=["source"])
    registry = SubscriptionRegistry(clock, address_policy=policy)
    assert registry.apply(sub(address=b":3033"), "192.168.0.5").node == "192.168.0.5:3033"
    assert registry.apply(sub(address=b":3033"), "192.168.0.6").node == "192.168.0.6:3033"
    assert registry.apply(sub(address=b":3033"), None).node == "127.0.0.1:3033"
    assert registry.apply(unsub(address=b":3033"), "192.168.0.5").action == REMOVED
    assert names(registry) == ["192.168.0.6:3033", "127.0.0.1:3033"]
    captured = [parseSubscription(p) for p in packets("subscribe-port0-signed-notify.json")]
    port0 = [s for s in captured if s.key == b"sock1.local"][0]
    assert registry.apply(port0, LOCAL).node == "127.0.0.1:3033"


@pytest.mark.parametrize("networks", [["source"], ["0.0.0.0/0", "::/0"]])
def test_unspecified_hosts_are_completed_with_the_sender(clock, networks):
    """
    uWSGI bound to 0.0.0.0:PORT announces exactly that, and uWSGI's router
    connects to 0.0.0.0:PORT, its own host; here, as for :PORT, the
    subscriber's host, whatever --subscription-node-network says, and its
    unsubscribe removes that node.
    """
    registry = SubscriptionRegistry(clock, address_policy=AddressPolicy(networks=networks))
    assert registry.apply(sub(address=b"0.0.0.0:3031"), "10.1.2.3").node == "10.1.2.3:3031"
    assert registry.apply(sub(address=b"0.0.0.0:3031"), None).node == "127.0.0.1:3031"
    assert registry.apply(sub(address=b"0.0.0.0:3031"), LOCAL).action == REFRESHED
    assert registry.apply(sub(address=b"[::]:3032"), "::1").node == "[::1]:3032"
    assert registry.apply(sub(address=b"[::]:3032"), "::ffff:10.1.2.3").node == "10.1.2.3:3032"
    refuses("address_not_allowed", registry.apply, sub(address=b"0.0.0.0:22"), LOCAL)
    refuses("address_not_allowed", registry.apply, sub(address=b"0.0.0.0:3031"), "224.0.0.1")
    assert registry.apply(unsub(address=b"0.0.0.0:3031"), "10.1.2.3").action == REMOVED
    assert names(registry) == ["127.0.0.1:3031", "[::1]:3032", "10.1.2.3:3032"]


def test_captured_port0_announce_carries_the_real_port(clock):
    registry = SubscriptionRegistry(clock)
    record = load("subscribe-port0-signed-notify.json")[0]
    applied = registry.apply(parseSubscription(bytes.fromhex(record["hex"])), record["from"][0])
    assert applied.node == "127.0.0.1:38635"


@pytest.fixture
def keys(tmp_path):
    directory = tmp_path / "keys"
    directory.mkdir()
    shutil.copy(FIXTURES / "signed.local.pub.pem", directory / "signed.local.pem")
    return str(directory)


def test_signed_announces_of_a_real_uwsgi(clock, keys):
    """
    The captured subscribe, refresh and unsubscribe are accepted in order;
    a replay, a flipped command byte and an unsigned announce are refused.
    """
    checker = SignatureChecker("SHA1", keys, clock=clock)
    registry = SubscriptionRegistry(clock, sign_check=checker)
    subscribe, refresh, unsubscribe = [
        parseSubscription(p) for p in packets("subscribe-port0-signed-notify.json")[1::3]
    ]
    assert registry.apply(subscribe, LOCAL).action == ADDED
    refuses("replayed", registry.apply, subscribe, LOCAL)
    assert registry.apply(refresh, LOCAL).action == REFRESHED
    flipped = attr.evolve(refresh, unsubscribe=True)
    refuses("replayed", registry.apply, flipped, LOCAL)
    assert registry.nodes(b"signed.local")
    refuses("unsigned", registry.apply, unsub(b"signed.local", subscribe.address), LOCAL)
    assert registry.apply(unsubscribe, LOCAL).action == REMOVED
    refuses("unsigned", registry.apply, sub(b"other.local"), LOCAL)


def test_policy_is_checked_before_the_signature(clock, keys):
    """
    A refused address does not consume the node's replay memory.
    """
    checker = SignatureChecker("SHA1", keys, clock=clock)
    subscribe = parseSubscription(packets("subscribe-port0-signed-notify.json")[1])
    strict = SubscriptionRegistry(
        clock, sign_check=checker, address_policy=AddressPolicy(ports=["1-1000"]),
    )
    refuses("address_not_allowed", strict.apply, subscribe, LOCAL)
    registry = SubscriptionRegistry(clock, sign_check=checker, allow=["127.0.0.0/8"])
    refuses("source_not_allowed", registry.apply, subscribe, "192.168.1.1")
    assert registry.apply(subscribe, LOCAL).action == ADDED


def test_notify_only_when_enabled_and_allowed(clock, events):
    announce = sub(notify=b"/run/acks/a.sock")
    registry = SubscriptionRegistry(clock)
    assert registry.apply(announce, LOCAL).notify is None
    assert named(events, "subscription_notify_ignored")
    registry = SubscriptionRegistry(clock, notify=True)
    assert registry.apply(announce, LOCAL).notify is None
    policy = AddressPolicy(directories=["/run/acks"])
    registry = SubscriptionRegistry(clock, notify=True, address_policy=policy)
    assert registry.apply(announce, LOCAL).notify == "/run/acks/a.sock"
    assert registry.apply(announce, LOCAL).notify is None
    assert registry.apply(sub(b"b.local", notify=b"127.0.0.1:7999"), LOCAL).notify is None


def test_sni_only_when_enabled(clock, events):
    announce = sub(sniKey=b"/k.pem", sniCrt=b"/c.pem")
    registry = SubscriptionRegistry(clock)
    registry.apply(announce, LOCAL)
    assert registry.sniFor(b"a.local") is None
    assert named(events, "subscription_sni_ignored")
    registry = SubscriptionRegistry(clock, sni=True)
    registry.apply(announce, LOCAL)
    registry.apply(sub(address=b"127.0.0.1:3032", sniKey=b"/x", sniCrt=b"/y"), LOCAL)
    assert registry.sniFor(b"a.local") == (b"/k.pem", b"/c.pem", None)
    assert registry.statsFields()[0][1][0]["sni_enabled"] == 1


def test_stats_fields(clock):
    registry = SubscriptionRegistry(clock)
    registry.apply(sub(b"example.com", weight=3, cores=2, load=1, modifier1=5), LOCAL)
    node = registry.pick(b"example.com")
    registry.connected(b"example.com", node)
    [(name, pools)] = registry.statsFields()
    assert name == "subscriptions"
    [pool] = pools
    assert (pool["key"], pool["hash"], pool["hits"], pool["sni_enabled"]) == ("example.com", 30778, 1, 0)
    [stats] = pool["nodes"]
    assert stats == {
        "name": "127.0.0.1:3031", "modifier1": 5, "modifier2": 0,
        "last_check": int(START), "pid": 0, "uid": 0, "gid": 0,
        "requests": 1, "last_requests": 1, "tx": 0, "rx": 0,
        "cores": 2, "load": 1, "weight": 3, "wrr": 0, "ref": 1,
        "failcnt": 0, "death_mark": 0, "backup": 0,
    }


def test_transferred_bytes_are_the_nodes_tx_and_rx(clock):
    """
    uWSGI's node C{rx} is what was written to the node, C{tx} what it
    answered; bytes reported for a node that is gone count nowhere.
    """
    registry = SubscriptionRegistry(clock)
    registry.apply(sub(), LOCAL)
    node = registry.pick(b"a.local")
    registry.connected(b"a.local", node)
    registry.transferred(b"a.local", node, 120, 360)
    registry.transferred(b"a.local", node, 30, 2)
    [stats] = registry.statsFields()[0][1][0]["nodes"]
    assert (stats["rx"], stats["tx"]) == (150, 362)
    registry.apply(unsub(), LOCAL)
    registry.apply(sub(), LOCAL)
    registry.transferred(b"a.local", node, 1, 1)
    [stats] = registry.statsFields()[0][1][0]["nodes"]
    assert (stats["rx"], stats["tx"]) == (0, 0)


def test_constructor_refuses_unknown_algorithms(clock):
    with pytest.raises(ValueError):
        SubscriptionRegistry(clock, algo="rr")


def test_the_last_live_node_of_a_pool_is_never_marked_dead(clock):
    """
    As nginx: a failed connect to the only live node of a pool leaves it
    serving (one failure must not refuse every request until the next
    announce); the other nodes are marked dead as uWSGI does.
    """
    registry = SubscriptionRegistry(clock)
    registry.apply(sub(b"a.local", b"127.0.0.1:3031"), LOCAL)
    registry.apply(sub(b"a.local", b"127.0.0.1:3032"), LOCAL)
    first = registry.pick(b"a.local")
    registry.failed(b"a.local", first)
    second = registry.pick(b"a.local")
    assert second != first
    registry.failed(b"a.local", second)
    assert registry.pick(b"a.local") == second
    assert registry.pick(b"a.local") == second


def test_in_cheap_mode_the_last_live_node_is_marked_dead(clock):
    """
    Cheap mode watches availability to stop accepting while no node can
    serve: there a lone node that fails is marked dead, as in uWSGI.
    """
    registry = SubscriptionRegistry(clock)
    changes = []
    registry.watchAvailability(changes.append)
    registry.apply(sub(b"a.local"), LOCAL)
    registry.failed(b"a.local", registry.pick(b"a.local"))
    assert registry.pick(b"a.local") is None
    assert changes[-1] is False
