"""
SIGHUP's reload (txrouter.reload): the configuration read again swaps the
nodes, fallbacks and forwarder in one step; requests under way keep what
they started with; what needs a restart is said once and ignored; a
configuration that cannot be read or built is refused and the running one
kept.
"""

import signal

import attr
import pytest
from twisted.internet.testing import MemoryReactorClock

from tests.logs import named
from txrouter.build import buildService
from txrouter.checks import HealthChecker
from txrouter.reload import ConfigReload
from txrouter.config import FastRouterConfig, HTTPRouterConfig
from txrouter.routing.cache import CacheForwarder
from txrouter.routing.paths import PathForwarder
from txrouter.routing.static import StaticForwarder
from txrouter.signals import OnSignal
from txrouter.tap import http


class Reread:
    """
    What the config files say now: a configuration, or a mistake.
    """

    def __init__(self, config) -> None:
        self.config = config

    def __call__(self):
        if isinstance(self.config, Exception):
            raise self.config
        return self.config


def built(config, reread=None):
    service = buildService(config, MemoryReactorClock(), reread=reread)
    [sighup] = [s for s in service if isinstance(s, OnSignal) and s.signum == signal.SIGHUP
                and isinstance(s.action, ConfigReload)]
    return service, sighup.action


def names(nodes) -> list:
    return [node.name for node in nodes]


BASE = dict(bind=["tcp:8080"], to=["/run/a.sock"], fallback=["/run/spare.sock"])


def test_new_nodes_for_new_requests_old_ones_for_requests_under_way(events):
    config = HTTPRouterConfig(**BASE)
    reread = Reread(config)
    service, reload = built(config, reread)
    router = service.router
    underWay = router.requestSettings
    reread.config = attr.evolve(config, to=["/run/b.sock", "/run/c.sock"],
                                fallback=["/run/spare2.sock"], fallback_on_no_key=True)
    reload()
    settings = router.requestSettings
    assert names(settings.forwarder.nodes) == ["/run/b.sock", "/run/c.sock"]
    assert names(settings.fallback) == ["/run/spare2.sock"] and settings.fallbackOnNoKey
    assert router.forwarder is settings.forwarder
    # A request that started before keeps its forwarder and fallbacks...
    assert names(underWay.forwarder.nodes) == ["/run/a.sock"]
    assert names(underWay.fallback) == ["/run/spare.sock"]
    # ...and counts with the router's counters still.
    assert underWay.requestCounts is settings.requestCounts
    assert settings.accessLog is underWay.accessLog
    [line] = named(events, "config_reloaded")
    assert line["changes"] == "--to, --fallback, --fallback-on-no-key changed"
    assert named(events, "config_needs_restart") == []


def test_fallbacks_alone_keep_the_forwarder_and_its_quarantine():
    config = HTTPRouterConfig(**BASE)
    reread = Reread(attr.evolve(config, fallback=[]))
    service, reload = built(config, reread)
    forwarder = service.router.forwarder
    reload()
    assert service.router.forwarder is forwarder
    assert service.router.requestSettings.fallback == ()


def test_what_needs_a_restart_is_said_and_ignored(events):
    config = HTTPRouterConfig(**BASE)
    reread = Reread(attr.evolve(config, to=["/run/b.sock"], timeout=5, bind=["tcp:9090"]))
    service, reload = built(config, reread)
    reload()
    assert names(service.router.forwarder.nodes) == ["/run/b.sock"]
    assert service.router.timeout == 60
    [line] = named(events, "config_needs_restart")
    assert line["options"] == "--bind, --timeout"
    # Said once: not again while the file says the same...
    reload()
    assert len(named(events, "config_needs_restart")) == 1
    # ...but a new change is said, alone.
    reread.config = attr.evolve(reread.config, timeout=6)
    reload()
    assert named(events, "config_needs_restart")[1]["options"] == "--timeout"


def test_a_refused_configuration_keeps_the_running_one(events, tmp_path):
    config = HTTPRouterConfig(**BASE)
    reread = Reread(ValueError("r.toml: timeout: --timeout: 'x' is not a valid value"))
    service, reload = built(config, reread)
    forwarder = service.router.forwarder
    reload()
    [line] = named(events, "config_reload_refused")
    assert line["error"] == "r.toml: timeout: --timeout: 'x' is not a valid value"
    assert service.router.forwarder is forwarder
    # A forwarder that cannot be built (its mapping file is bad) too.
    mapping = tmp_path / "map"
    mapping.write_text("only-a-key\n")
    reread.config = attr.evolve(config, to=[], use_cache=True, cache_file=str(mapping))
    reload()
    assert "--cache-file" in named(events, "config_reload_refused")[1]["error"]
    assert service.router.forwarder is forwarder
    assert named(events, "config_reloaded") == []


def test_another_forwarder(tmp_path):
    mapping = tmp_path / "map"
    mapping.write_text("a.local /run/a.sock\n")
    config = FastRouterConfig(**BASE)
    reread = Reread(attr.evolve(config, to=[], use_cache=True, cache_file=str(mapping)))
    service, reload = built(config, reread)
    reload()
    forwarder = service.router.forwarder
    assert isinstance(forwarder, CacheForwarder)
    assert forwarder.pick(b"a.local").path == "/run/a.sock"
    # The mapping file is read again on the next reload, as without files.
    mapping.write_text("a.local /run/b.sock\n")
    reload()
    assert service.router.forwarder is forwarder
    assert forwarder.pick(b"a.local").path == "/run/b.sock"
    reread.config = attr.evolve(config, to=[], use_pattern="/run/%s.sock")
    reload()
    assert isinstance(service.router.forwarder, PathForwarder)
    reread.config = config
    reload()
    assert isinstance(service.router.forwarder, StaticForwarder)


def test_subscriptions_are_not_swapped(events):
    config = HTTPRouterConfig(bind=["tcp:8080"], subscription_server=["127.0.0.1:7000"])
    reread = Reread(attr.evolve(config, subscription_server=[], to=["/run/a.sock"],
                                fallback=["/run/spare.sock"]))
    service, reload = built(config, reread)
    registry = service.router.forwarder
    reload()
    assert service.router.forwarder is registry
    assert names(service.router.requestSettings.fallback) == ["/run/spare.sock"]
    [line] = named(events, "config_needs_restart")
    assert line["options"] == "--to, --subscription-server"


def test_a_redis_store_is_not_swapped(events):
    config = HTTPRouterConfig(bind=["tcp:8080"], use_cache=True,
                              cache_store="redis://127.0.0.1:6379/0")
    reread = Reread(attr.evolve(config, cache_store=None, cache_file="/etc/map"))
    service, reload = built(config, reread)
    forwarder = service.router.forwarder
    reload()
    assert service.router.forwarder is forwarder
    [line] = named(events, "config_needs_restart")
    assert line["options"] == "--cache-file, --cache-store"


def test_cheap_mode_follows_the_new_forwarder():
    config = HTTPRouterConfig(**BASE, cheap=True)
    reread = Reread(attr.evolve(config, to=["/run/b.sock"]))
    service, reload = built(config, reread)
    old = service.router.forwarder
    reload()
    new = service.router.forwarder
    # The new forwarder's only node fails: no node, so no accepting.
    new.failed(b"k", new.nodes[0])
    assert service.cheap
    # The old one no longer counts.
    old.failed(b"k", old.nodes[0])
    old.connected(b"k", old.nodes[0])
    assert service.cheap
    new.connected(b"k", new.nodes[0])
    assert not service.cheap


def test_without_files_sighup_reads_the_mapping_file(tmp_path):
    mapping = tmp_path / "map"
    mapping.write_text("a.local /run/a.sock\n")
    config = HTTPRouterConfig(bind=["tcp:8080"], use_cache=True, cache_file=str(mapping))
    service, reload = built(config)
    mapping.write_text("a.local /run/b.sock\n")
    reload()
    assert service.router.forwarder.pick(b"a.local").path == "/run/b.sock"


def test_without_files_or_mapping_no_sighup():
    service = buildService(HTTPRouterConfig(**BASE), MemoryReactorClock())
    assert [s for s in service if isinstance(s, OnSignal) and s.signum == signal.SIGHUP] == []


def test_the_command_line_reads_its_files_again(tmp_path, monkeypatch):
    """
    The command line's reread parses the same arguments again: the file's
    new content, under the same command-line options.
    """
    path = tmp_path / "r.toml"
    path.write_text('bind = ["tcp:8080"]\nto = ["/run/a.sock"]\ntimeout = 30\n')
    options = http.Options()
    monkeypatch.chdir(tmp_path)
    options.parseOptions(["--config", "r.toml", "--timeout", "5"])
    reread = options.rereader()
    # twistd may change directory: the path is absolute.
    monkeypatch.chdir("/")
    assert reread.paths == (str(path),)
    path.write_text('bind = ["tcp:8080"]\nto = ["/run/b.sock"]\ntimeout = 30\n')
    config = reread()
    assert names(config.to) == ["/run/b.sock"] and config.timeout == 5
    path.write_text('bind = ["tcp:8080"]\nto = 3.5.1\n')
    with pytest.raises(ValueError, match="r.toml: not TOML"):
        reread()
    options = http.Options()
    options.parseOptions(["--bind", "tcp:1", "--to", "/a"])
    assert options.rereader() is None


def test_health_checks_follow_the_new_nodes():
    """
    With --check-interval, the new nodes are probed from then on; a node of
    both lists keeps what the checks know of it.
    """
    config = HTTPRouterConfig(bind=["tcp:8080"], to=["/run/a.sock", "/run/b.sock"],
                              fallback=["/run/spare.sock"], check_interval=5)
    reread = Reread(attr.evolve(config, to=["/run/a.sock", "/run/c.sock"]))
    service, reload = built(config, reread)
    [checker] = [s for s in service if isinstance(s, HealthChecker)]
    router = service.router
    a = router.forwarder.nodes[0]
    for _ in range(3):
        router.health.failed(a, "connect refused")
    reload()
    health = router.health
    assert checker.health is health is router.requestSettings.health
    assert names(health.nodes) == ["/run/a.sock", "/run/c.sock", "/run/spare.sock"]
    assert health.isDown(a)
    assert router.forwarder.health is health
    # A probe of the node taken out, answered after the reload, is dropped.
    b = config.to[1]
    probe = type("Probe", (), {"node": b})()
    checker._probes[b] = probe
    checker._outcome((False, "connect refused"), probe)
    assert not health.isDown(b) and b not in health.nodes
    # The checks' down node is left out of the new rotation.
    assert {router.forwarder.pick(b"k").name for _ in range(4)} == {"/run/c.sock"}
    # A fallback alone changes the checked nodes too.
    reread.config = attr.evolve(reread.config, fallback=[])
    reload()
    assert names(router.health.nodes) == ["/run/a.sock", "/run/c.sock"]
    assert checker.health is router.health and router.forwarder.health is router.health


def test_reread_checks_no_file_a_restart_would_need(tmp_path):
    """
    The files only a restart would use again (the access log, certificates)
    are not checked when SIGHUP reads the configuration: after --uid they
    may not be readable or writable by the router's user any more.
    """
    logs = tmp_path / "logs"
    logs.mkdir()
    path = tmp_path / "r.toml"
    path.write_text(f'bind = ["tcp:8080"]\nto = ["/run/a.sock"]\naccess-log = "{logs}/a.log"\n')
    options = http.Options()
    options.parseOptions(["--config", str(path)])
    (logs / "a.log").unlink()
    logs.rmdir()
    assert names(options.rereader()().to) == ["/run/a.sock"]


def test_a_use_code_script_is_loaded_again(tmp_path, events):
    script = tmp_path / "route.py"
    script.write_text("def route(key):\n    return '/run/a.sock'\n")
    path = tmp_path / "r.toml"
    path.write_text(f'bind = ["tcp:8080"]\nuse-code = "0:{script}:route"\n')
    options = http.Options()
    options.parseOptions(["--config", str(path)])
    service = http.makeService(options, MemoryReactorClock())
    [reload] = [s.action for s in service if isinstance(s, OnSignal) and s.signum == signal.SIGHUP]
    script.write_text("def route(key):\n    return '/run/b.sock'\n")
    reload()
    assert service.router.forwarder.pick(b"k").path == "/run/b.sock"
    [line] = named(events, "config_reloaded")
    assert line["changes"] == "no node changes; --use-code loaded again"
