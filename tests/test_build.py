"""
The configuration values and the builder: what the command line can set, a
.tac file sets with the same names, and gets the same services.
"""

import signal
from unittest.mock import Mock

import attr
import pytest
from twisted.internet.testing import MemoryReactorClock

from txrouter.build import buildService, checkConfig
from txrouter.config import (
    FastRouterConfig,
    HTTPRouterConfig,
    HTTPSRouterConfig,
    RawRouterConfig,
    SSLRouterConfig,
)
from txrouter.routing.admission import SOURCE, parseNetwork
from txrouter.routing.code import CodeForwarder
from txrouter.routing.nodes import parseNode
from txrouter.routing.subscriptions import SubscriptionRegistry
from txrouter.service import Listener, RouterService
from txrouter.signals import OnSignal
from txrouter.stats.server import StatsFactory
from txrouter.subscription.server import DatagramListener
from txrouter.tap import fast, http, https, raw, ssl


@pytest.mark.parametrize(
    "module, config",
    [(http, HTTPRouterConfig), (fast, FastRouterConfig), (raw, RawRouterConfig),
     (https, HTTPSRouterConfig), (ssl, SSLRouterConfig)],
)
def test_every_option_is_a_field_of_the_same_name(module, config):
    """
    The command line only parses: each of its options is the field with
    its name (dashes become underscores), and there is no other field.
    """
    options = module.Options()
    names = {name.rstrip("=") for name in options.longOpt} - {"help", "version"}
    # --keepalive-timeout N is the command line's spelling of --keepalive N.
    names.discard("keepalive-timeout")
    # --http-websockets is uWSGI's spelling of --websockets.
    names.discard("http-websockets")
    # --https2 and --sslrouter2 add to --https and --sslrouter.
    names -= {"https2", "sslrouter2"}
    # --config and --ini name files of options.
    names -= {"config", "ini"}
    assert {field.name.replace("_", "-") for field in attr.fields(config)} == names


def test_text_values_are_parsed_as_on_the_command_line():
    config = HTTPRouterConfig(
        bind=["tcp:8080"], to=["/run/a.sock", parseNode("127.0.0.1:3031")],
        fallback=["@spare"], http_var=["A=b", ("C", "d=e")],
        trust_forwarded_from=["10.0.0.0/8"],
    )
    assert config.to == (parseNode("/run/a.sock"), parseNode("127.0.0.1:3031"))
    assert config.fallback == (parseNode("@spare"),)
    assert config.http_var == (("A", "b"), ("C", "d=e"))
    subscribed = FastRouterConfig(
        bind=["tcp:3017"], subscription_server=["127.0.0.1:7000", "/run/subs.sock"],
        subscription_allow=["10.0.0.0/8"], subscription_node_network=["source", "10.1.0.0/16"],
        subscription_node_ports=["3031", (8000, 8100)], resubscribe=["10.0.0.9:7000"],
    )
    assert [a.text for a in subscribed.subscription_server] == ["127.0.0.1:7000", "/run/subs.sock"]
    assert subscribed.subscription_allow == (parseNetwork("10.0.0.0/8"),)
    assert subscribed.subscription_node_network == (SOURCE, parseNetwork("10.1.0.0/16"))
    assert subscribed.subscription_node_ports == ((3031, 3031), (8000, 8100))
    assert subscribed.announcedAddress() == ":3017"


@pytest.mark.parametrize("fields, message", [
    (dict(to=["h:bad"]), "^--to: "),
    (dict(to="/run/a.sock"), "^--to: a list"),
    (dict(to=["/a"], modifier1=256), "^--modifier1: must be 0..255"),
    (dict(to=["/a"], timeout=-1), "^--timeout: must be at least 0"),
    (dict(to=["/a"], max_head_size=70000), "^--max-head-size: "),
    (dict(to=["/a"], max_response_head_size=0), "^--max-response-head-size: "),
    (dict(to=["/a"], http_var=["novalue"]), "^--http-var: "),
    (dict(subscription_server=["localhost:7000"]), "^--subscription-server: "),
    (dict(subscription_server=[":7000"], subscription_algo="rr"), "^--subscription-algo: one of wrr"),
    (dict(subscription_server=[":7000"], subscription_node_dir=["run"]), "not absolute"),
    (dict(subscription_server=[":7000"], subscriptions_sign_check="SHA0:/k"), "unknown digest"),
    (dict(to=["/a"], use_base="/b/"), "^choose one way to find nodes, not --use-base, --to$"),
    (dict(), "^no nodes"),
    (dict(use_pattern="/run/x.sock"), "needs %s"),
    (dict(use_base="/run/", cheap=True), "^--cheap: "),
    (dict(bind=[], to=["/a"]), "at least one --bind"),
])
def test_mistakes_are_value_errors_naming_the_option(fields, message):
    with pytest.raises(ValueError, match=message):
        HTTPRouterConfig(**{"bind": ["tcp:8080"], **fields})


def test_name_separator_strip():
    config = FastRouterConfig(bind=["tcp:0"], use_pattern=":/run/%s.sock:", name_separator_strip=True)
    assert config.use_pattern == "/run/%s.sock"


def children(service, kind):
    return [child for child in service if isinstance(child, kind)]


def test_a_router_with_subscriptions_stats_and_an_access_log(tmp_path):
    """
    Everything the command line builds comes from the config value alone.
    """
    class Reactor(MemoryReactorClock):
        udpServers = []

        def listenUDP(self, port, protocol, interface="", maxPacketSize=8192):
            self.udpServers.append((port, protocol, interface, maxPacketSize))
            return Mock()

    reactor = Reactor()
    service = buildService(
        HTTPRouterConfig(
            bind=["tcp:8080:interface=127.0.0.1", "unix:/run/r.sock"],
            subscription_server=["127.0.0.1:7000"], stats="127.0.0.1:9191",
            access_log=str(tmp_path / "access.log"), keepalive=15,
            max_response_head_size=200000,
        ),
        reactor,
    )
    assert isinstance(service, RouterService)
    assert isinstance(service.router.forwarder, SubscriptionRegistry)
    assert service.router.keepalive == 15
    assert service.router.maxResponseHeadSize == 200000
    [subscriptions] = children(service, DatagramListener)
    assert subscriptions.address.text == "127.0.0.1:7000"
    assert [s.signum for s in children(service, OnSignal)] == [signal.SIGUSR1]
    assert (tmp_path / "access.log").exists()
    service.privilegedStartService()
    [(port, stats, _, interface)] = [
        server for server in reactor.tcpServers if isinstance(server[1], StatsFactory)
    ]
    assert (port, interface) == (9191, "127.0.0.1")
    assert [(port, interface) for port, _, interface, _ in reactor.udpServers] == [
        (7000, "127.0.0.1")
    ]
    assert stats.document()["http"] == ["127.0.0.1:8080", "/run/r.sock", "127.0.0.1:7000"]
    assert len(children(service, Listener)) == 3


@pytest.mark.parametrize("fields, message", [
    (dict(bind=["tcp:port=http"], to=["/a"]), "^--bind: "),
    (dict(to=["/a"], stats="tcp:9191:colour=blue"), "^--stats: .* is not a listening address"),
    (dict(to=["/a"], spool_dir="{missing}"), "^--spool-dir: .*No such file"),
    (dict(use_cache=True, cache_file="{missing}"), "^--cache-file: .*No such file"),
    (dict(use_cache=True, cache_file="{bad}"), "^--cache-file: .*:1: expected KEY VALUE"),
    (dict(use_code="nosuchmodule:f"), "^--use-code: "),
    (dict(to=["/a"], access_log="{missing}/access.log"), "^--access-log: .*No such file"),
    (dict(subscription_server=[":0"], resubscribe=["127.0.0.1:7001"],
          resubscribe_sign="SHA256:{missing}"), "^--resubscribe-sign: "),
])
def test_build_time_mistakes_are_value_errors_naming_the_option(tmp_path, fields, message):
    """
    checkConfig finds what buildService would, binding nothing.
    """
    bad = tmp_path / "bad.map"
    bad.write_text("only-a-key\n")
    fields = {
        name: value.format(missing=tmp_path / "gone", bad=bad) if isinstance(value, str) else value
        for name, value in fields.items()
    }
    config = HTTPRouterConfig(**{"bind": ["tcp:0"], **fields})
    with pytest.raises(ValueError, match=message):
        checkConfig(config)
    with pytest.raises(ValueError, match=message):
        buildService(config, MemoryReactorClock())


def test_a_use_code_script_runs_once(tmp_path):
    """
    The command line checks the script when it parses the options; the
    router uses the function that check loaded rather than running the
    script a second time.
    """
    runs = tmp_path / "runs"
    script = tmp_path / "route.py"
    script.write_text(
        f"with open({str(runs)!r}, 'a') as f:\n    f.write('ran\\n')\n"
        "def route(key):\n    return '/run/a.sock'\n"
    )
    options = fast.Options()
    options.parseOptions(["--bind", "tcp:0", "--use-code", f"0:{script}:route"])
    service = fast.makeService(options, MemoryReactorClock())
    assert isinstance(service.router.forwarder, CodeForwarder)
    assert service.router.forwarder.pick(b"k").path == "/run/a.sock"
    assert runs.read_text() == "ran\n"


def test_a_python_callable_as_use_code():
    config = FastRouterConfig(bind=["tcp:0"], use_code=lambda key: "/run/%s.sock" % key)
    forwarder = buildService(config, MemoryReactorClock()).router.forwarder
    assert forwarder.pick(b"a").path == "/run/a.sock"


@pytest.mark.parametrize("module", [http, fast])
def test_body_rate_and_retry_methods_reach_the_router(module):
    """
    --max-fails, --min-body-rate and --retry-methods go from the command line through
    the config value to the requests' settings; a method that is not a
    token is a usage error naming the option.
    """
    from twisted.python import usage

    options = module.Options()
    options.parseOptions(["--bind", "tcp:0", "--to", "/run/a.sock", "--max-fails", "3",
                          "--min-body-rate", "0", "--retry-methods", "get, POST"])
    assert options.config.min_body_rate == 0
    assert options.config.retry_methods == ("GET", "POST")
    service = buildService(options.config, MemoryReactorClock())
    assert service.router.forwarder.maxFails == 3
    settings = service.router.requestSettings
    assert (settings.minBodyRate, settings.retryMethods) == (0, {b"GET", b"POST"})
    defaults = module.Options()
    defaults.parseOptions(["--bind", "tcp:0", "--to", "/run/a.sock"])
    settings = buildService(defaults.config, MemoryReactorClock()).router.requestSettings
    assert settings.minBodyRate == 500
    assert b"POST" not in settings.retryMethods and b"PUT" in settings.retryMethods
    with pytest.raises(usage.UsageError, match="--retry-methods"):
        module.Options().parseOptions(
            ["--bind", "tcp:0", "--to", "/run/a.sock", "--retry-methods", "GET,BAD METHOD"])


def test_a_cache_store_connects_on_the_given_reactor():
    """
    --cache-store builds the shared store and the service that connects
    it, over the reactor it is given (a command and a subscriber
    connection), and SIGHUP reads the map again.
    """
    from txrouter.redisclient import RedisStoreService
    from txrouter.routing.cache import CacheForwarder
    from txrouter.routing.shared import SharedStore

    reactor = MemoryReactorClock()
    service = buildService(
        HTTPRouterConfig(bind=["tcp:0"], use_cache=True, cache_ttl=5,
                         cache_store="unix:///run/redis.sock?db=2&prefix=web:"),
        reactor,
    )
    forwarder = service.router.forwarder
    assert isinstance(forwarder, CacheForwarder) and isinstance(forwarder.store, SharedStore)
    assert forwarder.store.ttl == 5 and forwarder.clock is reactor
    [store] = children(service, RedisStoreService)
    assert store.store is forwarder.store
    assert [s.action for s in children(service, OnSignal) if s.signum == signal.SIGHUP] == [
        forwarder.store.refreshAll]
    store.startService()
    assert [client[0] for client in reactor.unixClients] == ["/run/redis.sock"] * 2
    store.stopService()
