"""
A fleet end to end: two twistd txrouter-http sharing one key→node map in a
real redis-server (on a unix socket), changed with txrouter-cache, in front
of two real uWSGI workers; then Redis stopped and started again.
"""

import json
import pathlib
import subprocess
import sys

import pytest

from tests.realpeers import (
    ROOT,
    Process,
    curl,
    free_port,
    txrouter_http,
    uwsgi_worker,
    wait_for_log,
    wait_for_tcp,
    wait_for_unix,
    wait_until,
)
from tests.tlspki import PrivateCA

pytestmark = pytest.mark.e2e

PREFIX = "fleet1:"


def redis_server(tmp_path, socket: str) -> Process:
    """
    redis-server on the unix socket C{socket} only, its data in
    C{tmp_path} (append-only file, so a restart keeps the map), keyspace
    notifications on for string commands.  Returns once the socket accepts.
    """
    process = Process(
        ["redis-server", "--port", "0", "--unixsocket", socket, "--unixsocketperm", "700",
         "--dir", tmp_path, "--appendonly", "yes", "--save", "",
         "--notify-keyspace-events", "K$g"],
        pathlib.Path(tmp_path) / "redis.log",
    )
    try:
        wait_for_unix(socket, process=process)
    except BaseException:
        process.stop()
        raise
    return process


def cache_tool(store: str, *args) -> subprocess.CompletedProcess:
    """
    C{txrouter-cache --cache-store STORE ARGS} (its module, with the
    checkout on the path).
    """
    return subprocess.run(
        [sys.executable, "-m", "txrouter.cachetool", "--cache-store", store, *args],
        capture_output=True, text=True, timeout=30, cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )


def answer(port: int, host: str):
    """
    Which worker answered a GET with this Host, or the HTTP status.
    """
    result = curl("-H", f"Host: {host}", "-w", "\n%{http_code}", f"http://127.0.0.1:{port}/")
    body, _, status = result.stdout.rpartition(b"\n")
    if status != b"200":
        return int(status)
    return json.loads(body)["WORKER"]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """
    Workers a and b (each adds WORKER=a or b to its requests), Redis, and
    two routers reading the map from it: the second with
    --fallback-on-no-key to worker a.
    """
    tmp = tmp_path_factory.mktemp("fleet")
    sockets = {name: str(tmp / f"{name}.sock") for name in "ab"}
    redis = str(tmp / "redis.sock")
    store = f"unix://{redis}?prefix={PREFIX}"
    ports = free_port(), free_port()
    # A long --cache-ttl: only the announcements can make the routers follow.
    routing = ["--use-cache", "--cache-store", store, "--cache-ttl", "3600"]
    with uwsgi_worker(tmp, sockets["a"], 1, ["--route-run", "addvar:WORKER=a"], name="a"), \
            uwsgi_worker(tmp, sockets["b"], 1, ["--route-run", "addvar:WORKER=b"], name="b"):
        server = redis_server(tmp, redis)
        try:
            with txrouter_http(tmp, ports[0], (), routing) as first, \
                    txrouter_http(tmp, ports[1], (), routing + [
                        "--fallback-on-no-key", "--fallback", sockets["a"]]) as second:
                yield dict(tmp=tmp, redis=redis, store=store, sockets=sockets, ports=ports,
                           routers=(first, second), server=[server])
        finally:
            server.stop()


def both(fleet, host):
    return [answer(port, host) for port in fleet["ports"]]


def test_two_routers_share_one_map_through_an_outage(fleet):
    store, sockets = fleet["store"], fleet["sockets"]
    first, second = fleet["routers"]

    # Set with the tool: served by both.
    done = cache_tool(store, "set", "x.local", sockets["a"])
    assert done.returncode == 0, done.stderr
    assert both(fleet, "x.local") == ["a", "a"]
    assert both(fleet, "unknown.local") == [404, "a"]

    # Changed: both follow, well within a second.
    assert cache_tool(store, "set", "x.local", f"{sockets['b']}|{sockets['b']}").returncode == 0
    wait_until(lambda: both(fleet, "x.local") == ["b", "b"], "the routers following the change",
               timeout=1.0)

    # Changed by any Redis client: keyspace notifications carry it too.
    subprocess.run(["redis-cli", "-s", fleet["redis"], "SET", PREFIX + "x.local", sockets["a"]],
                   check=True, capture_output=True, timeout=10)
    wait_until(lambda: both(fleet, "x.local") == ["a", "a"], "the routers following redis-cli",
               timeout=1.0)

    # A bad value is refused by the tool, and the map is unchanged.
    refused = cache_tool(store, "set", "x.local", "127.0.0.1:99999")
    assert refused.returncode == 2 and "99999" in refused.stderr
    assert cache_tool(store, "list").stdout == f"x.local {sockets['a']}\n"

    # Redis stopped: known keys still served, unknown ones refused cleanly
    # (or sent to the fallback), the outage logged once.
    fleet["server"][0].stop()
    for router in (first, second):
        wait_until(lambda: "cache_store_unreachable" in router.log(), "the outage", process=router)
    assert both(fleet, "x.local") == ["a", "a"]
    assert both(fleet, "never-seen.local") == [404, "a"]
    refused = curl("-i", "-H", "Host: never-seen.local", f"http://127.0.0.1:{fleet['ports'][0]}/")
    assert refused.stdout.startswith(b"HTTP/1.1 404")

    # Redis back (with its data): changes flow again.
    fleet["server"][0] = redis_server(fleet["tmp"], fleet["redis"])
    for router in (first, second):
        wait_until(lambda: "cache_store_reachable" in router.log().partition(
            "cache_store_unreachable")[2], "the end of the outage", process=router)
    assert cache_tool(store, "set", "x.local", sockets["b"]).returncode == 0
    assert cache_tool(store, "set", "new.local", sockets["b"]).returncode == 0
    wait_until(lambda: both(fleet, "x.local") == ["b", "b"], "the routers following again",
               timeout=1.0)
    assert both(fleet, "new.local") == ["b", "b"]

    # A mapping file imported in place of the map: deleted keys too.
    mapping = fleet["tmp"] / "apps.map"
    mapping.write_text(f"# the new map\ny.local {sockets['a']}\n")
    imported = cache_tool(store, "import", "--replace", str(mapping))
    assert imported.returncode == 0, imported.stderr
    wait_until(lambda: both(fleet, "x.local") == [404, "a"] and both(fleet, "y.local") == ["a", "a"],
               "the routers following the import", timeout=1.0)
    assert cache_tool(store, "list").stdout == f"y.local {sockets['a']}\n"
    assert cache_tool(store, "delete", "y.local").returncode == 0
    wait_until(lambda: both(fleet, "y.local") == [404, "a"], "the routers following the delete",
               timeout=1.0)

    for router in (first, second):
        log = router.log()
        assert log.count("cache_store_unreachable") == 1
        assert log.count("cache_store_reachable") == 2
        # No line per reconnection attempt.
        assert "retry" not in log.lower()
        assert "Traceback" not in log


def test_a_map_over_tls_with_a_password(fleet, tmp_path):
    """
    rediss:// with a password and a private CA: the tool and a router both
    reach the map; a wrong password is one line and exit status 1.
    """
    ca = PrivateCA(tmp_path)
    server = ca.issue("redis", ["localhost"])
    port = free_port()
    with Process(
        ["redis-server", "--port", "0", "--tls-port", port, "--bind", "127.0.0.1",
         "--tls-cert-file", server.certificatePath, "--tls-key-file", server.keyPath,
         "--tls-auth-clients", "no", "--requirepass", "s3cret", "--save", "",
         "--appendonly", "no", "--dir", tmp_path],
        tmp_path / "redis-tls.log",
    ) as redis:
        wait_for_tcp(port, process=redis)
        store = f"rediss://:s3cret@localhost:{port}/1?prefix=tls:&ca={ca.path}"
        done = cache_tool(store, "set", "t.local", fleet["sockets"]["b"])
        assert done.returncode == 0, done.stderr
        wrong = cache_tool(store.replace("s3cret", "wrong"), "list")
        assert wrong.returncode == 1 and "WRONGPASS" in wrong.stderr
        assert "wrong" not in wrong.stderr and len(wrong.stderr.splitlines()) == 1
        routerPort = free_port()
        with txrouter_http(tmp_path, routerPort, (),
                           ["--use-cache", "--cache-store", store]) as router:
            assert answer(routerPort, "t.local") == "b"
            assert "s3cret" not in router.log()
        # A server whose certificate the router does not trust: the reason
        # is said once, and it is not taken for a refused password.
        stranger = PrivateCA(tmp_path, name="stranger", commonName="another CA")
        untrusting = store.replace(ca.path, stranger.path)
        with txrouter_http(tmp_path, free_port(), (),
                           ["--use-cache", "--cache-store", untrusting]) as router:
            wait_for_log(router, "cache_store_unreachable")
            line = [line for line in router.log().splitlines() if "cache_store_unreachable" in line]
            assert "certificate verify failed" in line[0], line
            assert "could not auth" not in router.log()
