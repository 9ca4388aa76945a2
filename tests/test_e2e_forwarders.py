"""
Every forwarder on the HTTP router, end to end: twistd txrouter-http in front
of two real uWSGI workers, one per application socket, routed by Host.

(The FastRouter gets the same forwarders behind nginx in test_e2e_fast.py.)
"""

import hashlib
import json
import os
import signal

import pytest

from tests.realpeers import curl, free_port, txrouter_http, uwsgi_worker, wait_until

pytestmark = pytest.mark.e2e

MIB = 1 << 20


@pytest.fixture(scope="module")
def apps(tmp_path_factory):
    """
    Workers for a.local and b.local on TMP/apps/<host>.sock; each adds the
    var WORKER=a or WORKER=b to its requests, so answers tell them apart.
    """
    tmp = tmp_path_factory.mktemp("forwarders")
    (tmp / "apps").mkdir()
    with uwsgi_worker(tmp, str(tmp / "apps" / "a.local.sock"), 1,
                      ["--route-run", "addvar:WORKER=a"], name="a"), \
            uwsgi_worker(tmp, str(tmp / "apps" / "b.local.sock"), 1,
                         ["--route-run", "addvar:WORKER=b"], name="b"):
        yield tmp


def worker(port, host):
    """
    Which worker answered a GET with this Host, or the HTTP status.
    """
    result = curl("-H", f"Host: {host}", "-w", "\n%{http_code}", f"http://127.0.0.1:{port}/")
    body, _, status = result.stdout.rpartition(b"\n")
    if status != b"200":
        return int(status)
    return json.loads(body)["WORKER"]


@pytest.mark.parametrize("how", ["pattern", "base"])
def test_socket_paths_from_the_host(apps, how):
    directory = apps / "apps"
    arguments = (["--use-pattern", f"{directory}/%s.sock"] if how == "pattern"
                 else ["--use-base", f"{directory}/"])
    port = free_port()
    if how == "base":
        # --use-base appends the key as is: name the sockets after it.
        os.symlink(directory / "a.local.sock", directory / "a.local")
        os.symlink(directory / "b.local.sock", directory / "b.local")
    with txrouter_http(apps, port, (), arguments):
        assert worker(port, "a.local") == "a"
        assert worker(port, "b.local") == "b"
        assert worker(port, "c.local") == 502
        assert worker(port, "..") == 404


def test_cache_file_and_sighup_reload(apps):
    mapping = apps / "apps.map"
    mapping.write_text(f"x.local {apps}/apps/a.local.sock\n")
    port = free_port()
    with txrouter_http(apps, port, (), ["--use-cache", "--cache-file", str(mapping)]) as router:
        assert worker(port, "x.local") == "a"
        assert worker(port, "y.local") == 404
        mapping.write_text(
            f"x.local {apps}/apps/b.local.sock\n"
            f"y.local {apps}/apps/a.local.sock|{apps}/apps/b.local.sock\n"
        )
        router.signal(signal.SIGHUP)
        wait_until(lambda: "cache_file_loaded: 2 keys" in router.log(), "the reload")
        assert worker(port, "x.local") == "b"
        assert sorted(worker(port, "y.local") for _ in range(4)) == ["a", "a", "b", "b"]
        mapping.write_text("only-a-key\n")
        router.signal(signal.SIGHUP)
        wait_until(lambda: "cache_file_refused" in router.log(), "the refusal")
        assert worker(port, "x.local") == "b"


def test_user_code(apps):
    script = apps / "route.py"
    script.write_text(
        "def route(key):\n"
        f"    return {{'a.local': '{apps}/apps/a.local.sock',\n"
        f"            'b.local': ['{apps}/apps/b.local.sock']}}.get(key)\n"
    )
    port = free_port()
    with txrouter_http(apps, port, (), ["--use-code", f"0:{script}:route"]):
        assert worker(port, "a.local") == "a"
        assert worker(port, "b.local") == "b"
        assert worker(port, "c.local") == 404


def test_post_buffering_50_mib(apps):
    """
    With post-buffering the body is read whole, into an unlinked temporary
    file, before the worker is connected; memory stays bounded and the file
    is gone afterwards.
    """
    big = apps / "big.bin"
    with big.open("wb") as f:
        for _ in range(50):
            f.write(os.urandom(MIB))
    digest = hashlib.sha256(big.read_bytes()).hexdigest()
    spool = apps / "spool"
    spool.mkdir()
    port = free_port()
    with txrouter_http(apps, port, f"{apps}/apps/a.local.sock",
                       ["--post-buffering", "65536", "--post-buffering-dir", str(spool)]) as router:
        before = router.peak_rss_kib()
        answer = json.loads(curl("--data-binary", f"@{big}", f"http://127.0.0.1:{port}/up",
                                 timeout=60).stdout)
        assert (answer["body_len"], answer["body_sha256"]) == (50 * MIB, digest)
        growth = router.peak_rss_kib() - before
        assert growth < 20 * 1024, f"router peak memory grew by {growth} KiB"
        assert not [f for f in router.open_files() if "(deleted)" in f]
        assert list(spool.iterdir()) == []
