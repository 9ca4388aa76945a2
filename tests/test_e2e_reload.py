"""
Config files and reload, end to end: twistd txrouter-http --config in
front of two real uWSGI workers, under a steady load of keep-alive
clients, across SIGHUPs that switch --to from one worker to the other and
back: no request fails, the connections stay open, and every request
begun after a reload is logged goes to the new node; a file with a mistake
is refused and the running configuration still serves.  And a uWSGI ini
file that uWSGI's own HTTP router runs, run as it is by twistd
txrouter-http --ini.
"""

import http.client
import json
import os
import pathlib
import pwd
import shutil
import signal
import tempfile
import threading
import time

import pytest

from tests.realpeers import (
    TXROUTER_COMMAND,
    Process,
    ROOT,
    curl,
    free_port,
    txrouter_http,
    uwsgi_worker,
    wait_for_log,
    wait_for_tcp,
    wait_until,
)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def workers(tmp_path_factory):
    """
    Two uWSGI workers, on TMP/a.sock and TMP/b.sock, each adding the var
    WORKER=a or WORKER=b to its requests so that answers tell them apart.
    """
    tmp = tmp_path_factory.mktemp("reload")
    with uwsgi_worker(tmp, str(tmp / "a.sock"), 2, ["--route-run", "addvar:WORKER=a"], name="a"), \
            uwsgi_worker(tmp, str(tmp / "b.sock"), 2, ["--route-run", "addvar:WORKER=b"],
                         name="b"):
        yield tmp


def worker(port: int) -> str:
    result = curl(f"http://127.0.0.1:{port}/")
    return json.loads(result.stdout)["WORKER"]


class Load:
    """
    Clients sending requests one after the other, each on its own
    keep-alive connection, until stopped.

    @ivar answers: C{(began, worker)} of every request answered, C{began}
        from C{time.monotonic()}.
    @ivar errors: what went wrong, as text.
    @ivar connections: each client's local address, as first and as last
        seen (a reconnection would change it).
    """

    def __init__(self, port: int, clients: int = 4) -> None:
        self.port = port
        self.answers = []
        self.errors = []
        self.connections = {}
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(n,), daemon=True)
                         for n in range(clients)]

    def __enter__(self):
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def _run(self, number: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
        while not self._stop.is_set():
            began = time.monotonic()
            try:
                connection.request("GET", f"/?client={number}")
                response = connection.getresponse()
                body = response.read()
                if response.status != 200:
                    self.errors.append(f"status {response.status}: {body[:200]!r}")
                    continue
                local = connection.sock.getsockname()
                first = self.connections.setdefault(number, [local, local])
                first[1] = local
                self.answers.append((began, json.loads(body)["WORKER"]))
            except Exception as e:
                self.errors.append(repr(e))
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
        connection.close()

    def since(self, moment: float) -> "list[str]":
        return [name for began, name in list(self.answers) if began > moment]


def writeConfig(path: pathlib.Path, node: pathlib.Path, **extra) -> None:
    lines = [f'to = ["{node}"]', "keepalive = 30"]
    lines += [f"{key} = {value}" for key, value in extra.items()]
    path.write_text("\n".join(lines) + "\n")


def reload(router, path, node, count: int, event: str = "config_reloaded", **extra) -> float:
    """
    Point the config file at C{node}, send SIGHUP, wait for the C{count}th
    C{event} in the log; the moment it was seen.
    """
    if node is not None:
        writeConfig(path, node, **extra)
    router.signal(signal.SIGHUP)
    wait_for_log(router, event, count)
    return time.monotonic()


def test_reload_under_load_switches_nodes_without_an_error(workers):
    tmp = workers
    config = tmp / "router.toml"
    writeConfig(config, tmp / "a.sock")
    port = free_port()
    with txrouter_http(tmp, port, (), ["--config", str(config)]) as router, Load(port) as load:
        wait_until(lambda: len(load.since(0)) >= 20, "answers before the reload", process=router)
        assert set(load.since(0)) == {"a"}
        toB = reload(router, config, tmp / "b.sock", 1)
        wait_until(lambda: len(load.since(toB)) >= 20, "answers after the first reload",
                   process=router)
        assert set(load.since(toB)) == {"b"}
        toA = reload(router, config, tmp / "a.sock", 2)
        wait_until(lambda: len(load.since(toA)) >= 20, "answers after the second reload",
                   process=router)
        assert set(load.since(toA)) == {"a"}
    assert load.errors == []
    assert len(load.connections) == 4
    assert all(first == last for first, last in load.connections.values())
    log = router.log()
    assert log.count("config_reloaded: --to changed") == 2
    assert "Traceback" not in log


def test_a_broken_config_is_refused_and_the_old_one_serves(workers):
    tmp = workers
    config = tmp / "broken.toml"
    writeConfig(config, tmp / "a.sock")
    port = free_port()
    with txrouter_http(tmp, port, (), ["--config", str(config)]) as router:
        assert worker(port) == "a"
        config.write_text(f'to = ["{tmp / "b.sock"}"]\ntimeout = "soon"\n')
        reload(router, config, None, 1, "config_reload_refused")
        assert f"{config}: timeout: --timeout: 'soon' is not a valid value" in router.log()
        assert [worker(port) for _ in range(4)] == ["a"] * 4
        config.write_text("to = [\n")
        reload(router, config, None, 2, "config_reload_refused")
        assert [worker(port) for _ in range(4)] == ["a"] * 4
        # A good one again, with an option that needs a restart.
        reload(router, config, tmp / "b.sock", 1, timeout=5)
        assert [worker(port) for _ in range(4)] == ["b"] * 4
        wait_for_log(router, "config_needs_restart: --timeout changed")
        assert router.alive()


INI = """\
; An existing uWSGI HTTP router configuration.
[uwsgi]
plugins = http
master = true
die-on-term = true
http = 127.0.0.1:$(ROUTER_PORT)
http-to = %(sockets)/a.sock
http-keepalive = 1
http-timeout = 30
sockets = {sockets}
"""


def test_a_uwsgi_ini_runs_under_uwsgi_and_under_txrouter(workers):
    tmp = workers
    ini = tmp / "router.ini"
    ini.write_text(INI.format(sockets=tmp))
    uwsgiPort, port = free_port(), free_port()
    env = dict(os.environ, ROUTER_PORT=str(uwsgiPort))
    with Process(["uwsgi", "--ini", ini], tmp / "uwsgi-ini.log", env=env) as uwsgi:
        wait_for_tcp(uwsgiPort, process=uwsgi)
        assert worker(uwsgiPort) == "a"
    env = dict(os.environ, ROUTER_PORT=str(port))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    with Process([*TXROUTER_COMMAND, "--ini", ini], tmp / "txrouter-ini.log", env=env) as router:
        wait_for_tcp(port, process=router)
        assert worker(port) == "a"
        assert "config_keys_ignored: " in router.log()
        assert "left aside: plugins, master, die-on-term" in router.log()
        # The ini file is read again on SIGHUP too.
        ini.write_text(INI.format(sockets=tmp).replace("/a.sock", "/b.sock"))
        router.signal(signal.SIGHUP)
        wait_for_log(router, "config_reloaded: --to changed")
        assert worker(port) == "b"
        assert router.log().count("config_keys_ignored") == 1


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root (CI runs as root)")
def test_reload_after_switching_to_nobody(tmp_path):
    """
    With --uid nobody, SIGHUP reads the config file as nobody and swaps
    the nodes; the access log, opened as root in a directory of root's
    alone, is not checked again (it needs a restart anyway).
    """
    ports = [free_port(), free_port()]
    public = pathlib.Path(tempfile.mkdtemp(prefix="txrouter-conf-"))
    os.chmod(public, 0o755)
    config = public / "router.toml"
    try:
        with uwsgi_worker(tmp_path, f"127.0.0.1:{ports[0]}", 1,
                          ["--route-run", "addvar:WORKER=a"], name="a"), \
                uwsgi_worker(tmp_path, f"127.0.0.1:{ports[1]}", 1,
                             ["--route-run", "addvar:WORKER=b"], name="b"):
            config.write_text(f'to = ["127.0.0.1:{ports[0]}"]\n')
            port = free_port()
            with txrouter_http(tmp_path, port, (), [
                "--config", str(config), "--uid", "nobody", "--gid", "nogroup",
                "--access-log", str(tmp_path / "access.log"),
            ]) as router:
                wait_until(lambda: _uid(router.pid) == pwd.getpwnam("nobody").pw_uid,
                           "the switch to nobody", process=router)
                assert worker(port) == "a"
                config.write_text(f'to = ["127.0.0.1:{ports[1]}"]\n')
                router.signal(signal.SIGHUP)
                wait_for_log(router, "config_reloaded: --to changed")
                assert worker(port) == "b"
                assert "config_reload_refused" not in router.log()
    finally:
        shutil.rmtree(public)


def _uid(pid: int) -> int:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise LookupError(pid)
