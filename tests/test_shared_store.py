"""
The local copy of a fleet's shared map (L{txrouter.routing.shared}) over a
fake remote map, what the Redis side makes of channels and URLs
(L{txrouter.redisclient}, L{txrouter.storeurl}), and the checks of the
operator's tool (L{txrouter.cachetool}).  The real Redis server is in
test_e2e_fleet.py.
"""

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python import usage
from zope.interface import implementer
from zope.interface.verify import verifyObject

from tests.logs import named
from txrouter.config import HTTPRouterConfig
from txrouter.routing.cache import CacheForwarder
from txrouter.routing.interfaces import IKeyValueStore, IRemoteMap, NoNodeForKey
from txrouter.routing.nodes import parseNode
from txrouter.routing.shared import REACHABLE, UNREACHABLE, SharedStore
from txrouter.storeurl import parseStoreURL


@implementer(IRemoteMap)
class FakeMap:
    """
    A remote map whose reads are answered by the test: each read is a
    C{(keys, Deferred)} in L{reads}; L{answer} answers the oldest from
    L{data}.
    """

    def __init__(self, data=None) -> None:
        self.data = dict(data or {})
        self.reads = []

    def read(self, keys):
        answer = Deferred()
        self.reads.append((list(keys), answer))
        return answer

    def answer(self) -> None:
        keys, answer = self.reads.pop(0)
        answer.callback([self.data.get(key) for key in keys])

    def answerAll(self) -> None:
        while self.reads:
            self.answer()


def store(data=None, reachable=True, **kwargs):
    remote = FakeMap(data)
    shared = SharedStore(remote, Clock(), name="fake", **kwargs)
    if reachable:
        shared.reachable()
    return shared, remote


def result(d):
    results = []
    d.addBoth(results.append)
    assert results, "the Deferred has not fired"
    return results[0]


def test_it_is_a_key_value_store():
    shared, _ = store()
    assert verifyObject(IKeyValueStore, shared)
    assert verifyObject(IRemoteMap, FakeMap())


def test_a_key_is_read_once_and_then_answered_at_once():
    shared, remote = store({b"a.local": b"127.0.0.1:3031"})
    first, second = shared.get(b"a.local"), shared.get(b"a.local")
    assert len(remote.reads) == 1
    assert not first.called and not second.called
    remote.answer()
    assert result(first) == result(second) == "127.0.0.1:3031"
    assert shared.get(b"a.local") == "127.0.0.1:3031"
    assert remote.reads == []


def test_a_key_the_map_lacks_is_remembered_as_absent_within_a_bound():
    shared, remote = store(maxAbsent=2)
    for key in (b"x", b"y", b"z"):
        d = shared.get(key)
        remote.answer()
        assert result(d) is None
    assert shared.get(b"z") is None and shared.get(b"y") is None
    assert remote.reads == []
    # The oldest absent key was forgotten: it is read again.
    assert isinstance(shared.get(b"x"), Deferred)
    assert len(remote.reads) == 1


def test_an_announced_change_is_read_at_once_and_the_old_value_served_meanwhile():
    shared, remote = store({b"a": b"/run/a.sock"})
    shared.get(b"a")
    remote.answer()
    remote.data[b"a"] = b"/run/b.sock|/run/c.sock,5"
    shared.changed(b"a")
    assert shared.get(b"a") == "/run/a.sock"
    remote.answer()
    assert shared.get(b"a") == "/run/b.sock|/run/c.sock,5"
    del remote.data[b"a"]
    shared.changed(b"a")
    remote.answer()
    assert shared.get(b"a") is None
    assert remote.reads == []


def test_a_change_of_a_key_never_looked_up_costs_nothing():
    shared, remote = store()
    shared.changed(b"other")
    assert remote.reads == []


def test_a_key_set_after_it_was_found_absent_is_read_when_announced():
    shared, remote = store()
    shared.get(b"new")
    remote.answer()
    remote.data[b"new"] = b"/run/new.sock"
    shared.changed(b"new")
    remote.answer()
    assert shared.get(b"new") == "/run/new.sock"


def test_every_ttl_every_known_key_is_read_again_in_batches():
    data = {b"k%d" % i: b"/run/%d.sock" % i for i in range(5)}
    shared, remote = store(data, ttl=30, batch=2)
    for key in data:
        shared.get(key)
    shared.get(b"absent")
    remote.answerAll()
    shared.start()
    remote.data[b"k0"] = b"/run/changed.sock"
    shared.clock.advance(29)
    assert remote.reads == []
    shared.clock.advance(1)
    assert [len(keys) for keys, _ in remote.reads] == [2, 2, 1]
    remote.answerAll()
    assert shared.get(b"k0") == "/run/changed.sock"
    # The absent key is asked for again at its next lookup.
    assert isinstance(shared.get(b"absent"), Deferred)
    shared.stop()


def test_an_outage_is_logged_once_and_known_keys_are_still_served(events):
    shared, remote = store({b"a": b"/run/a.sock"})
    shared.get(b"a")
    remote.answer()
    pending = shared.get(b"b")
    shared.unreachable("connection lost")
    shared.unreachable("Connection refused")
    assert shared.state is UNREACHABLE
    assert result(pending) is None
    assert shared.get(b"a") == "/run/a.sock"
    assert shared.get(b"c") is None
    shared.changed(b"a")
    shared.refreshAll()
    reads = len(remote.reads)
    [event] = named(events, "cache_store_unreachable")
    assert event["reason"] == "connection lost" and event["count"] == 1
    assert event["log_level"].name == "warn"
    shared.clock.advance(12)
    shared.reachable()
    shared.reachable()
    assert shared.state is REACHABLE
    back = named(events, "cache_store_reachable")
    assert [e.get("seconds") for e in back] == [None, 12]
    # Back: what changed meanwhile is read.
    assert len(remote.reads) == reads + 1


def test_lookups_while_first_connecting_wait_for_the_map():
    shared, remote = store({b"a": b"/run/a.sock"}, reachable=False)
    waiting = shared.get(b"a")
    assert remote.reads == []
    shared.reachable()
    remote.answer()
    assert result(waiting) == "/run/a.sock"
    other, _ = store(reachable=False)
    waiting = other.get(b"a")
    other.unreachable("Connection refused")
    assert result(waiting) is None


def test_a_bad_value_is_logged_when_read_and_is_no_value(events):
    shared, remote = store({b"a": b"no such:node:value"})
    d = shared.get(b"a")
    remote.answer()
    assert result(d) is None
    assert shared.get(b"a") is None
    [event] = named(events, "bad_mapped_value")
    assert event["key"] == b"a"


def test_a_failed_read_answers_no_node_and_is_logged(events):
    shared, remote = store()
    d = shared.get(b"a")
    remote.reads.pop()[1].errback(ConnectionError("Reply timeout"))
    assert result(d) is None
    assert named(events, "cache_store_read_failed")[0]["error"] == "Reply timeout"


def test_a_lookup_that_gives_up_leaves_the_read_to_the_others():
    shared, remote = store({b"a": b"/run/a.sock"})
    impatient, patient = shared.get(b"a"), shared.get(b"a")
    impatient.cancel()
    impatient.addErrback(lambda f: None)
    remote.answer()
    assert result(patient) == "/run/a.sock"


def test_the_cache_forwarder_over_a_shared_store():
    shared, remote = store({b"a": b"/run/a1.sock|/run/a2.sock"})
    forwarder = CacheForwarder(shared, shared.clock)
    first = forwarder.pick(b"a")
    remote.answer()
    assert result(first) == parseNode("/run/a1.sock")
    assert forwarder.pick(b"a") == parseNode("/run/a2.sock")
    missing = forwarder.pick(b"b")
    remote.answer()
    assert result(missing).check(NoNodeForKey)
    with pytest.raises(NoNodeForKey):
        forwarder.pick(b"b")


# The Redis side


def test_channels_of_a_prefix():
    from txrouter.redisclient import changesChannel, keyspacePattern

    url = parseStoreURL("redis://h/3?prefix=fleet*1:")
    assert changesChannel(url) == b"txrouter-changed:fleet*1:"
    assert keyspacePattern(url) == b"__keyspace@3__:fleet\\*1:*"


def test_what_the_map_hears_becomes_changes():
    from twisted.internet.testing import MemoryReactorClock

    from txrouter.redisclient import RedisMap

    class Recorder:
        def __init__(self):
            self.seen = []

        def changed(self, key):
            self.seen.append(key)

        def refreshAll(self):
            self.seen.append("all")

    url = parseStoreURL("redis://h/2?prefix=p:")
    remote = RedisMap(url, MemoryReactorClock(), Recorder())
    remote._heard(None, b"txrouter-changed:p:", b"a.local")
    remote._heard(None, b"txrouter-changed:p:", b"")
    remote._heard(b"__keyspace@2__:p:*", b"__keyspace@2__:p:b.local", b"set")
    assert remote.store.seen == [b"a.local", "all", b"b.local"]


def _linkUnderAuth(lostWith):
    """
    A command link to a server with a password whose connection, with
    C{AUTH} sent, is lost with C{lostWith} (an exception), or refused by
    the server when C{lostWith} is L{None}; and what the link reported.
    """
    from twisted.internet.testing import MemoryReactorClock, StringTransport
    from twisted.python.failure import Failure

    from txrouter.redisclient import _CommandProtocol, _Link

    reports = []
    link = _Link(parseStoreURL("redis://:pw@h/1"), MemoryReactorClock(), _CommandProtocol,
                 lambda protocol: None, reports.append)
    link.service.startService()
    protocol = link.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    assert transport.value().startswith(b"*2\r\n$4\r\nAUTH\r\n")
    if lostWith is None:
        protocol.dataReceived(b"-WRONGPASS invalid username-password pair\r\n")
    else:
        protocol.connectionLost(Failure(lostWith))
    return link, reports


def test_a_connection_lost_during_auth_is_made_again():
    """
    A connection lost while AUTH waits (here a TLS handshake that failed
    on the certificate) is reported with its reason, not as a refused
    password, and the link keeps trying.
    """
    from OpenSSL import SSL

    link, reports = _linkUnderAuth(SSL.Error(
        [("SSL routines", "", "certificate verify failed")]))
    assert reports == ["connection lost before it was ready: TLS: certificate verify failed"]
    assert link.service.running


def test_a_refused_password_stops_the_link():
    link, reports = _linkUnderAuth(None)
    [report] = [report for report in reports if "WRONGPASS" in report]
    assert report.endswith("not trying again")
    assert not link.service.running


@pytest.mark.parametrize("text, fields", [
    ("redis://10.0.0.5:6380/2?prefix=fleet:",
     dict(scheme="redis", host="10.0.0.5", port=6380, db=2, prefix=b"fleet:")),
    ("redis://:secret@cache", dict(host="cache", port=6379, db=0, password="secret",
                                   prefix=b"txrouter:")),
    ("rediss://u:p@cache:6390/1?ca=/etc/ca.pem", dict(scheme="rediss", username="u", ca="/etc/ca.pem")),
    ("unix:///run/redis.sock?db=4&prefix=", dict(scheme="unix", path="/run/redis.sock", db=4,
                                                  prefix=b"")),
    ("unix:///run/redis.sock?prefix=%FF", dict(prefix=b"\xff")),
])
def test_store_urls(text, fields):
    url = parseStoreURL(text)
    for name, value in fields.items():
        assert getattr(url, name) == value


@pytest.mark.parametrize("text", [
    "memcached://h", "redis://", "redis://h:0", "redis://h/x", "redis://h?db=1", "unix://h/x",
    "unix:///s?db=-1", "redis://h?ca=/x", "unix:///s?nope=1",
])
def test_bad_store_urls(text):
    with pytest.raises(ValueError):
        parseStoreURL(text)


def test_a_password_is_not_shown():
    url = parseStoreURL("redis://:secret@h:1")
    assert "secret" not in str(url) and "secret" not in repr(url)
    with pytest.raises(ValueError) as e:
        parseStoreURL("redis://:secret@h/x")
    assert "secret" not in str(e.value)


def test_cache_store_options():
    config = HTTPRouterConfig(bind=["tcp:1"], use_cache=True, cache_store="unix:///r.sock",
                              cache_ttl="5")
    assert config.cache_store.path == "/r.sock" and config.cache_ttl == 5
    for mistake, message in [
        (dict(use_cache=True), "--use-cache needs --cache-file or --cache-store"),
        (dict(to=["/a"], cache_store="unix:///r"), "--cache-store: give --use-cache"),
        (dict(use_cache=True, cache_store="unix:///r", cache_file="/m"), "--cache-file:"),
        (dict(use_cache=True, cache_store="unix:///r", cache_ttl=0), "--cache-ttl:"),
        (dict(use_cache=True, cache_store="redis://h/x"), "--cache-store:"),
        (dict(use_cache=True, cache_file="/m", cache_ttl=5), "--cache-ttl: only"),
    ]:
        with pytest.raises(ValueError) as e:
            HTTPRouterConfig(bind=["tcp:1"], **mistake)
        assert str(e.value).startswith(message)


# The operator's tool


def test_the_tool_checks_as_the_router_does(tmp_path):
    from txrouter.cachetool import Options

    def parsed(*args):
        options = Options()
        options.parseOptions(["--cache-store", "unix:///r.sock", *args])
        return options

    assert parsed("set", "a.local", "/run/a.sock|127.0.0.1:3031,5").subOptions["key"] == b"a.local"
    mapping = tmp_path / "apps.map"
    mapping.write_text("a.local /run/a.sock\n# comment\nb.local 127.0.0.1:3031\n")
    assert parsed("import", str(mapping)).subOptions["mapping"] == {
        b"a.local": "/run/a.sock", b"b.local": "127.0.0.1:3031"}
    mapping.write_text("a.local /run/a.sock\nb.local :99999\n")
    bad = [
        (("set", "x" * 256, "/run/a.sock"), "1 to 255 bytes"),
        (("set", "a", "127.0.0.1:99999"), "'127.0.0.1:99999'"),
        (("delete",), "give the keys"),
        (("import", str(mapping)), f"{mapping}:2:"),
        (("import", str(tmp_path / "none.map")), "No such file"),
        ((), "give a command"),
    ]
    for args, message in bad:
        with pytest.raises(usage.UsageError) as e:
            parsed(*args)
        assert message in str(e.value)


def test_reads_failed_by_the_outage_are_not_logged_one_by_one(events):
    shared, remote = store()
    d = shared.get(b"a")
    shared.unreachable("connection lost")
    remote.reads.pop()[1].errback(ConnectionError("Lost connection"))
    assert result(d) is None
    assert named(events, "cache_store_read_failed") == []
    assert len(named(events, "cache_store_unreachable")) == 1


def test_every_certificate_of_a_ca_bundle_is_trusted(tmp_path):
    from cryptography.hazmat.primitives.serialization import Encoding

    from tests.tlspki import PrivateCA
    from txrouter.redisclient import _certificates

    DER = Encoding.DER
    first, second = PrivateCA(tmp_path, "one"), PrivateCA(tmp_path, "two")
    bundle = open(first.path, "rb").read() + b"\n" + open(second.path, "rb").read()
    found = _certificates(bundle)
    assert [c.dump() for c in found] == [
        first.certificate.public_bytes(DER), second.certificate.public_bytes(DER)]


def test_the_stats_document_shows_the_store():
    from txrouter.stats.document import statsDocument

    shared, remote = store({b"a": b"/run/a.sock"})
    shared.get(b"a")
    shared.get(b"b")
    remote.answerAll()
    shared.unreachable("connection lost")
    document = statsDocument("http", [], 0, [CacheForwarder(shared)], False)
    assert document["cache_store"] == {
        "store": "fake", "state": "unreachable", "known_keys": 1, "absent_keys": 1, "reads": 2}
    from txrouter.routing.cache import InMemoryStore
    assert "cache_store" not in statsDocument("http", [], 0, [CacheForwarder(InMemoryStore())], False)
