"""
The command line of txrouter-fast builds the router and forwarder it describes.
"""

import signal

import pytest
from twisted.internet.testing import MemoryReactorClock
from twisted.python.usage import UsageError

from txrouter.routing.cache import CacheForwarder
from txrouter.routing.code import CodeForwarder
from txrouter.routing.paths import PathForwarder
from txrouter.signals import OnSignal
from txrouter.stats.server import StatsFactory
from txrouter.tap.fast import Options, makeService


def build(*args):
    options = Options()
    options.parseOptions(["--bind", "tcp:0", *args])
    return makeService(options, MemoryReactorClock())


def test_static_nodes_and_options():
    service = build(
        "--to", "127.0.0.1:3031", "--to", "/run/b.sock", "--fallback", "@spare",
        "--force-key", "k", "--keep-modifiers", "--post-buffering", "8192",
        "--post-buffering-dir", "/var/tmp", "--timeout", "9", "--max-retries", "1",
    )
    router = service.router
    assert [n.name for n in router.forwarder.nodes] == ["127.0.0.1:3031", "/run/b.sock"]
    assert [n.name for n in router.fallback] == ["@spare"]
    assert router.forceKey == b"k" and router.keepModifiers
    assert (router.postBuffering, router.postBufferingDir) == (8192, "/var/tmp")
    assert (router.timeout, router.connectTimeout, router.maxRetries) == (9, 9, 1)


def test_each_forwarder(tmp_path):
    mapping = tmp_path / "map"
    mapping.write_text("a.local /run/a.sock\n")
    router = build("--use-base", "/run/apps/").router
    assert isinstance(router.forwarder, PathForwarder)
    assert router.forwarder.pick(b"x").path == "/run/apps/x"
    router = build("--use-pattern", "/run/%s/sock").router
    assert router.forwarder.pick(b"x").path == "/run/x/sock"
    service = build("--use-cache", "--cache-file", str(mapping))
    assert isinstance(service.router.forwarder, CacheForwarder)
    assert [s.signum for s in service if isinstance(s, OnSignal)] == [signal.SIGHUP]
    router = build("--use-code", "tests.test_forwarders:mapper").router
    assert isinstance(router.forwarder, CodeForwarder)
    assert router.forwarder.pick(b"a").path == "/run/a.sock"


def test_name_separator_strip():
    router = build("--use-pattern", ":/run/%s.sock:", "--name-separator-strip").router
    assert router.forwarder.pick(b"x").path == "/run/x.sock"


def test_cheap_mode_is_on_the_service():
    service = build("--to", "/run/a.sock", "--cheap")
    assert service.cheap is False


@pytest.mark.parametrize(
    "args",
    [(), ("--to", "/a", "--use-base", "/b/"), ("--use-pattern", "/no/pattern"),
     ("--use-cache",), ("--use-code", "nosuchmodule:f"), ("--use-base", "/b/", "--cheap"),
     ("--to", "/a", "--buffer-size", "-1")],
)
def test_usage_errors(args):
    with pytest.raises((UsageError, ValueError)):
        build(*args)


def test_bad_mapping_file_is_a_usage_error(tmp_path):
    mapping = tmp_path / "map"
    mapping.write_text("only-a-key\n")
    with pytest.raises(UsageError, match=":1:"):
        build("--use-cache", "--cache-file", str(mapping))


def test_stats_options_serve_the_document():
    service = build(
        "--subscription-server", "127.0.0.1:7000", "--stats", "127.0.0.1:5005",
        "--stats-http", "--stats-minified",
    )
    [stats] = [s.factory for s in service if isinstance(getattr(s, "factory", None), StatsFactory)]
    assert stats.http and stats.minified
    document = stats.document()
    assert document["fastrouter"] == [":0", "127.0.0.1:7000"]
    assert document["subscriptions"] == []
    assert document["cheap"] == 0


def test_bad_stats_address_is_a_usage_error():
    with pytest.raises(UsageError, match="--stats"):
        build("--to", "/run/a.sock", "--stats", "nonsense:x:y")


def test_limit_post_reaches_the_router():
    assert build("--to", "/run/a.sock", "--limit-post", "10").router.limitPost == 10
    assert build("--to", "/run/a.sock").router.limitPost == 0


@pytest.mark.parametrize(
    "address", ["tcp:9191:colour=blue", "ssl:9191:privateKey=/no/such.pem", "", "h:x"],
)
def test_bad_stats_addresses_stop_option_parsing(address):
    """
    twistd turns an error of parseOptions into a usage message, one of
    makeService into a traceback: the address is checked in the first.
    """
    options = Options()
    with pytest.raises(UsageError, match="--stats: .* is not a listening address"):
        options.parseOptions(["--bind", "tcp:0", "--to", "/run/a.sock", "--stats", address])


def test_a_missing_post_buffering_dir_is_a_usage_error(tmp_path):
    missing = str(tmp_path / "gone")
    options = Options()
    with pytest.raises(UsageError, match=f"--post-buffering-dir: {missing}: No such file"):
        options.parseOptions(["--bind", "tcp:0", "--to", "/run/a.sock",
                              "--post-buffering", "10", "--post-buffering-dir", missing])
    # Without post-buffering the router never uses it, and does not check it.
    build("--to", "/run/a.sock", "--post-buffering-dir", missing)
