"""
Forwarders (base, pattern, cache, code, static availability) and cheap mode.
"""

import os
import sys

import pytest
from hypothesis import given, strategies as st
from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.task import Clock

from txrouter.build import MappingFile
from txrouter.routing.cache import CacheForwarder, InMemoryStore, MappingFileError, parseMapping
from txrouter.routing.code import CodeForwarder, loadCallable
from txrouter.routing.interfaces import ForwarderTimeout, NoNodeForKey
from txrouter.routing.nodes import BadNodeAddress, Node, parseNode, parseNodeValue
from txrouter.routing.paths import PathForwarder, unsafeKeyReason
from txrouter.routing.static import StaticForwarder
from txrouter.service import Listener, RouterService


def mapper(key):
    """
    A --use-code function for the tests below.
    """
    return {"a": "/run/a.sock", "b": ["/run/b1.sock", "/run/b2.sock,5"]}.get(key)


# Path forwarders


@pytest.mark.parametrize(
    "key", [b"", b"a/b", b"..", b"a..b", b".", b"a\x00b", b"a\nb", b"x" * 256, b"\x7f"]
)
def test_unsafe_keys_are_refused(key):
    assert unsafeKeyReason(key) is not None
    with pytest.raises(NoNodeForKey):
        PathForwarder("/run/apps/%s.sock").pick(key)
    with pytest.raises(NoNodeForKey):
        PathForwarder.fromBase("/run/apps/").pick(key)


def test_base_and_pattern_paths():
    assert PathForwarder.fromBase("/run/apps/").pick(b"a.local").path == "/run/apps/a.local"
    assert PathForwarder.fromBase("/run/apps/app-").pick(b"a").path == "/run/apps/app-a"
    node = PathForwarder("/run/%s/uwsgi-%s.sock").pick(b"k.local:8080")
    assert node == Node(name="/run/k.local:8080/uwsgi-k.local:8080.sock",
                        path="/run/k.local:8080/uwsgi-k.local:8080.sock")
    assert (node.modifier1, node.modifier2) == (0, 0)
    assert PathForwarder("relative/%s.sock").pick(b"x").path == "relative/x.sock"
    assert PathForwarder("%s.sock").pick(b"x").path == "x.sock"
    abstract = PathForwarder("@apps-%s").pick(b"x")
    assert (abstract.name, abstract.path) == ("@apps-x", "\0apps-x")


@given(st.binary(max_size=300))
def test_no_key_leaves_the_directory(key):
    for forwarder in (PathForwarder("/srv/sock/%s/app.sock"), PathForwarder.fromBase("/srv/sock/")):
        try:
            path = forwarder.pick(key).path
        except NoNodeForKey:
            continue
        assert os.path.normpath(path).startswith("/srv/sock/")
        assert "\0" not in path


# Node values


def test_node_values():
    a, b = parseNodeValue("127.0.0.1:3031,5|/run/b.sock")
    assert (a.host, a.port, a.modifier1) == ("127.0.0.1", 3031, 5)
    assert (b.path, b.modifier1) == ("/run/b.sock", 0)
    for bad in ("", "a:1,x", "a:1,300", "a|"):
        with pytest.raises(BadNodeAddress):
            parseNodeValue(bad)


# Cache


def test_mapping_text():
    assert parseMapping(b"# apps\na.local /run/a.sock\n\r\n  b.local\t127.0.0.1:3031,5|/b \n") == {
        b"a.local": "/run/a.sock", b"b.local": "127.0.0.1:3031,5|/b",
    }
    with pytest.raises(MappingFileError, match="^apps.map:2: expected KEY VALUE"):
        parseMapping(b"a.local /run/a.sock\nonly-a-key\n", "apps.map")
    with pytest.raises(MappingFileError, match="^<mapping>:1: "):
        parseMapping(b"a.local host:notaport\n")


def test_replacing_the_store_is_all_or_nothing():
    store = InMemoryStore({"a": "/run/a.sock"})
    with pytest.raises(BadNodeAddress):
        store.replace({"b": "/run/b.sock", "c": "host:notaport"})
    assert store.mapping == {b"a": "/run/a.sock"}
    store.replace({"b": "/run/b.sock"})
    assert store.mapping == {b"b": "/run/b.sock"}


def test_mapping_file_and_reload(tmp_path, events):
    path = tmp_path / "map"
    path.write_text("# apps\na.local /run/a.sock\n\nb.local  127.0.0.1:3031,5|/run/b.sock\n")
    store = InMemoryStore()
    mappingFile = MappingFile(str(path), store)
    mappingFile.load()
    forwarder = CacheForwarder(store)
    assert forwarder.pick(b"a.local").path == "/run/a.sock"
    picks = [forwarder.pick(b"b.local") for _ in range(4)]
    assert [n.name for n in picks] == ["127.0.0.1:3031", "/run/b.sock"] * 2
    assert picks[0].modifier1 == 5
    with pytest.raises(NoNodeForKey):
        forwarder.pick(b"c.local")
    path.write_text("a.local /run/new.sock\nbroken\n")
    with pytest.raises(MappingFileError, match=":2:"):
        mappingFile.load()
    assert forwarder.pick(b"a.local").path == "/run/a.sock"
    # A reload (SIGHUP) logs the refusal and keeps the mapping.
    mappingFile.reload()
    assert [e["event"] for e in events if "cache_file" in e.get("event", "")] == [
        "cache_file_loaded", "cache_file_refused",
    ]
    assert forwarder.pick(b"a.local").path == "/run/a.sock"
    path.write_text("c.local /run/c.sock\n")
    mappingFile.reload()
    assert forwarder.pick(b"c.local").path == "/run/c.sock"
    with pytest.raises(NoNodeForKey):
        forwarder.pick(b"a.local")


def test_store_from_python_and_bad_values():
    store = InMemoryStore({"a": "/run/a.sock"})
    store.set(b"b", "/run/b.sock")
    with pytest.raises(BadNodeAddress):
        store.set("c", "host:notaport")
    store.delete("a")
    forwarder = CacheForwarder(store)
    with pytest.raises(NoNodeForKey):
        forwarder.pick(b"a")
    assert forwarder.pick(b"b").path == "/run/b.sock"


class LaterStore:
    """
    A store that answers with the Deferreds it is given, one per lookup.
    """

    def __init__(self, *answers):
        self.answers = list(answers)

    def get(self, key):
        return self.answers.pop(0)


def test_store_answering_later():
    picked = CacheForwarder(LaterStore(succeed("/run/late.sock"))).pick(b"k")
    assert isinstance(picked, Deferred)
    assert picked.result.path == "/run/late.sock"


def test_store_answering_later_has_a_deadline():
    clock = Clock()
    cancelled = []
    slow = Deferred(cancelled.append)
    forwarder = CacheForwarder(LaterStore(slow, succeed("/run/quick.sock")), clock, timeout=2)
    failures = []
    forwarder.pick(b"k").addErrback(failures.append)
    clock.advance(1.9)
    assert failures == []
    clock.advance(0.1)
    assert cancelled == [slow] and failures[0].check(ForwarderTimeout)
    assert forwarder.pick(b"k").result.path == "/run/quick.sock"
    assert clock.getDelayedCalls() == []


# Code


def test_load_callable_forms(tmp_path):
    assert loadCallable("tests.test_forwarders:mapper") is mapper
    script = tmp_path / "route.py"
    script.write_text("def route(key):\n    return '/run/' + key + '.sock'\n")
    assert loadCallable(f"0:{script}:route")("x") == "/run/x.sock"
    for bad in ("nomodule", "tests.test_forwarders:missing", "os:sep", "a:b:c:d", "0::f"):
        with pytest.raises(ValueError):
            loadCallable(bad)


def test_a_module_next_to_the_command_line_is_found(tmp_path, monkeypatch):
    """
    C{--use-code myrouting:route} run where C{myrouting.py} is: twistd's
    path does not have the current directory, so the router adds it.
    """
    (tmp_path / "txrouter_cwd_routing.py").write_text("def route(key):\n    return 'here'\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    monkeypatch.delitem(sys.modules, "txrouter_cwd_routing", raising=False)
    assert loadCallable("txrouter_cwd_routing:route")("k") == "here"
    assert str(tmp_path) in sys.path


def test_load_callable_failures_are_usage_errors(tmp_path, monkeypatch):
    """
    Whatever goes wrong loading the user's code is a ValueError (a usage
    error for twistd) that says what, not a traceback.
    """
    missing = tmp_path / "missing.py"
    broken = tmp_path / "broken.py"
    broken.write_text("def route(key):\n    return (\n")
    raising = tmp_path / "raising.py"
    raising.write_text("raise RuntimeError('no config file')\n")
    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n")
    cases = {
        f"0:{missing}:route": f"cannot run '{missing}': No such file or directory",
        f"0:{broken}:route": f"cannot run '{broken}': syntax error at line 2:",
        f"0:{raising}:route": f"cannot run '{raising}': RuntimeError: no config file",
        f"0:{empty}:route": f"'{empty}' defines no 'route'",
        f"0:{empty}:x": f"'0:{empty}:x' is not callable",
        "broken:route": "cannot load 'broken:route': syntax error at line 2:",
    }
    monkeypatch.syspath_prepend(str(tmp_path))
    for spec, message in cases.items():
        with pytest.raises(ValueError) as raised:
            loadCallable(spec)
        assert str(raised.value).startswith(message), spec


def test_code_forwarder_answers():
    clock = Clock()
    forwarder = CodeForwarder(mapper, clock)
    assert forwarder.pick(b"a").path == "/run/a.sock"
    picks = [forwarder.pick(b"b") for _ in range(2)]
    assert [(n.path, n.modifier1) for n in picks] == [("/run/b1.sock", 0), ("/run/b2.sock", 5)]
    with pytest.raises(NoNodeForKey):
        forwarder.pick(b"c")


def test_code_forwarder_deadline():
    clock = Clock()
    pending = Deferred()
    forwarder = CodeForwarder(lambda key: pending, clock, timeout=3)
    picked = forwarder.pick(b"k")
    failures = []
    picked.addErrback(failures.append)
    clock.advance(3)
    assert failures and failures[0].check(ForwarderTimeout)
    quick = Deferred()
    picked = CodeForwarder(lambda key: quick, clock, timeout=3).pick(b"k")
    quick.callback(Node(name="/x", path="/x"))
    assert picked.result.path == "/x"
    assert clock.getDelayedCalls() == []


def test_code_forwarder_answer_cancelled_by_its_caller():
    """
    A caller that gives up (the client left) can cancel the pick: the
    user's Deferred is cancelled, the deadline is gone, and the failure is
    the caller's CancelledError, not a timeout.
    """
    clock = Clock()
    cancelled = []
    pending = Deferred(cancelled.append)
    picked = CodeForwarder(lambda key: pending, clock, timeout=3).pick(b"k")
    failures = []
    picked.addErrback(failures.append)
    picked.cancel()
    assert cancelled == [pending]
    assert failures[0].check(CancelledError) and not failures[0].check(ForwarderTimeout)
    assert clock.getDelayedCalls() == []


# Static availability and cheap mode


def test_static_availability_follows_quarantine():
    clock = Clock()
    a, b = parseNode("/a.sock"), parseNode("/b.sock")
    forwarder = StaticForwarder([a, b], clock, gracetime=30)
    changes = []
    forwarder.watchAvailability(changes.append)
    forwarder.failed(None, a)
    assert forwarder.available and changes == []
    clock.advance(10)
    forwarder.failed(None, b)
    assert not forwarder.available and changes == [False]
    clock.advance(20)
    assert forwarder.available and changes == [False, True]
    forwarder.failed(None, a)
    forwarder.failed(None, b)
    forwarder.connected(None, a)
    assert changes == [False, True, False, True]


class FakePort:
    def __init__(self):
        self.reading = True

    def stopReading(self):
        self.reading = False

    def startReading(self):
        self.reading = True

    def stopListening(self):
        return None


class FakeEndpoint:
    def __init__(self):
        self.port = FakePort()

    def listen(self, factory):
        return succeed(self.port)


class FakeRouter:
    def __init__(self, forwarder):
        self.forwarder = forwarder

    def drain(self, timeout):
        return succeed(None)


def test_cheap_mode_pauses_and_resumes_listeners():
    clock = Clock()
    a = parseNode("/a.sock")
    forwarder = StaticForwarder([a], clock, gracetime=5)
    service = RouterService(clock, FakeRouter(forwarder), [], cheap=True)
    listener = Listener(FakeEndpoint(), None)
    service.listeners.append(listener)
    listener.setServiceParent(service)
    service.startService()
    assert listener.port.reading
    forwarder.failed(None, a)
    assert not listener.port.reading and service.cheap
    clock.advance(5)
    assert listener.port.reading and not service.cheap


def test_cheap_mode_needs_a_forwarder_that_knows():
    with pytest.raises(ValueError):
        RouterService(Clock(), FakeRouter(PathForwarder("/x/%s")), [], cheap=True)


def test_a_bind_error_fails_start_up():
    class Refusing:
        def listen(self, factory):
            from twisted.internet.defer import fail
            from twisted.internet.error import CannotListenError

            return fail(CannotListenError("127.0.0.1", 1, OSError("in use")))

    listener = Listener(Refusing(), None)
    with pytest.raises(Exception, match="in use"):
        listener.privilegedStartService()
    assert isinstance(listener, Service)
