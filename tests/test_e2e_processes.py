"""
C{--processes 2}, end to end: a real twistd txrouter-http (and the other
routers) whose pool runs two worker processes in front of real uWSGI
workers, seen as a user sees it: both workers' CPU times grow under load,
a worker killed is replaced while the other serves every request, a
subscription reaches both workers' stats, and SIGTERM leaves no process.
"""

import json
import os
import signal
import socket
import threading
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.realpeers import (
    TWISTD_COMMAND,
    Process,
    free_port,
    pid_exists,
    raw_exchange,
    txrouter_http,
    uwsgi_worker,
    wait_for_log,
    wait_until,
)
from tests.subpeers import (
    free_udp_port,
    read_all,
    subscribing_worker,
    txrouter,
    uwsgi_request,
)
from tests.test_e2e_raw import node, read_line, withProject
from tests.test_e2e_ssl import client as sslClient
from tests.tlspki import PrivateCA

pytestmark = pytest.mark.e2e


def readStats(path) -> dict:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(str(path))
        chunks = []
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    return json.loads(b"".join(chunks))


def bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cpuTicks(pid: int) -> int:
    """
    The user and system CPU time of C{pid}, in clock ticks (/proc/PID/stat).
    """
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return int(fields[11]) + int(fields[12])


def workerPids(stats) -> list:
    return [worker.get("pid") for worker in readStats(stats)["workers"]]


def get(port: int, host: str = "example.com") -> bytes:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/", headers={"Host": host})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
        return response.read()


class ClientLoop(threading.Thread):
    """
    Requests one after another, each on a new connection, until stopped;
    counts the answered and the failed ones.
    """

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.answered = 0
        self.failures = []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                get(self.port)
                self.answered += 1
            except Exception as e:
                self.failures.append(repr(e))

    def stop(self) -> None:
        self.stopping.set()
        self.join(30)


@pytest.fixture
def pool(tmp_path):
    node = str(tmp_path / "node.sock")
    backend = uwsgi_worker(tmp_path, node, processes=2)
    port, stats = free_port(), tmp_path / "stats.sock"
    router = txrouter_http(tmp_path, port, node, [
        "--processes", "2", "--stats", f"unix:{stats}", "--graceful-timeout", "5",
    ])
    wait_until(lambda: all(workerPids(stats)), "both workers answering stats", process=router)
    try:
        yield dict(port=port, stats=stats, router=router, tmp=tmp_path)
    finally:
        router.stop()
        backend.stop()


def test_both_workers_serve_under_load(pool):
    """
    Under a load of several clients, both workers' CPU times grow and both
    count requests.
    """
    pids = workerPids(pool["stats"])
    before = {pid: cpuTicks(pid) for pid in pids}
    clients = [ClientLoop(pool["port"]) for _ in range(4)]
    for client in clients:
        client.start()
    try:
        wait_until(lambda: all(cpuTicks(pid) >= before[pid] + 20 for pid in pids),
                   "both workers' CPU times grown by 0.2 s", timeout=60, process=pool["router"])
    finally:
        for client in clients:
            client.stop()
    workers = readStats(pool["stats"])["workers"]
    started = [worker["requests"]["started"] for worker in workers]
    assert all(count > 0 for count in started), started
    total = readStats(pool["stats"])["requests"]["started"]
    assert total == sum(started)
    assert not [f for client in clients for f in client.failures]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL])
def test_killed_worker_replaced(pool, signum):
    """
    A worker that is killed is started again, while the other one serves
    a client that keeps asking: a worker stopped by SIGTERM drains its
    request, none fails; one killed by SIGKILL can fail only the one
    request the client may have had in it.
    """
    victim, other = workerPids(pool["stats"])
    client = ClientLoop(pool["port"])
    client.start()
    try:
        wait_until(lambda: client.answered >= 20, "the client served")
        os.kill(victim, signum)
        wait_for_log(pool["router"], "worker_died: worker 0", timeout=20)
        wait_until(lambda: victim not in workerPids(pool["stats"]) and all(workerPids(pool["stats"])),
                   "a new worker 0", process=pool["router"])
        served = client.answered
        wait_until(lambda: client.answered >= served + 20, "the client served after")
    finally:
        client.stop()
    assert pid_exists(other)
    assert workerPids(pool["stats"])[1] == other
    assert len(client.failures) <= (0 if signum == signal.SIGTERM else 1), client.failures


def test_sigterm_leaves_no_process(pool):
    pids = workerPids(pool["stats"])
    pool["router"].signal(signal.SIGTERM)
    # twistd ends by the signal it was stopped with, as Twisted's runner does.
    assert pool["router"].wait(30) in (0, -signal.SIGTERM)
    assert not [pid for pid in pids if pid_exists(pid)]
    assert not os.path.exists(pool["stats"])


def test_subscription_in_both_workers(tmp_path):
    """
    A uWSGI worker announcing itself to the pool's subscription server is
    in both workers' registries, and each serves its requests.
    """
    port, udp, stats = free_port(), free_udp_port(), tmp_path / "stats.sock"
    node = str(tmp_path / "sub.sock")
    router = txrouter(tmp_path, "http", port, [
        "--processes", "2", "--stats", f"unix:{stats}",
        "--subscription-server", f"127.0.0.1:{udp}", "--subscription-node-dir", str(tmp_path),
    ])
    backend = subscribing_worker(tmp_path, node, ["--subscribe-to", f"127.0.0.1:{udp}:example.com"],
                                 "one")
    try:
        def inBoth():
            workers = readStats(stats)["workers"]
            keys = [[pool["key"] for pool in worker.get("subscriptions", [])] for worker in workers]
            return keys == [["example.com"], ["example.com"]]

        wait_until(inBoth, "the subscription in both workers", process=router)
        assert b"WORKER" in get(port)
        for worker in readStats(stats)["workers"]:
            assert worker["subscriptions"][0]["nodes"][0]["name"] == node
    finally:
        backend.stop()
        router.stop()


def _fast(tmp_path, port, node, ca):
    return ["txrouter-fast", "--bind", f"tcp:{port}:interface=127.0.0.1", "--to", node], \
        lambda: uwsgi_request(port, "example.com")


def _raw(tmp_path, port, node, ca):
    return ["txrouter-raw", "--bind", f"tcp:{port}:interface=127.0.0.1", "--to", node], \
        lambda: raw_exchange(port, b"ping\n", shutdownWrite=True)


def _ssl(tmp_path, port, node, ca):
    certificate = ca.issue("server", ["ssl.local"])

    def exchange():
        with sslClient(ca, port, "ssl.local") as sock:
            sock.sendall(b"ping\n")
            return read_line(sock)

    return ["txrouter-ssl", "--sslrouter",
            f"127.0.0.1:{port},{certificate.certificatePath},{certificate.keyPath}",
            "--to", node], exchange


def _https(tmp_path, port, node, ca):
    certificate = ca.issue("server", ["https.local"])

    def exchange():
        with sslClient(ca, port, "https.local") as sock:
            sock.sendall(b"GET / HTTP/1.0\r\nHost: https.local\r\n\r\n")
            return read_all(sock)

    return ["txrouter-https", "--https",
            f"127.0.0.1:{port},{certificate.certificatePath},{certificate.keyPath}",
            "--to", node], exchange


ROUTERS = {"fast": (_fast, "uwsgi", b"WORKER"), "raw": (_raw, "echo", b"ping\n"),
           "ssl": (_ssl, "echo", b"ping\n"), "https": (_https, "uwsgi", b"200 OK")}


@pytest.mark.parametrize("kind", sorted(ROUTERS))
def test_every_router_runs_two_workers(tmp_path, kind):
    """
    txrouter-fast, -raw, -ssl and -https with --processes 2: clients on
    new connections are served by both workers, each counting some.
    """
    make, nodeKind, expected = ROUTERS[kind]
    ca = PrivateCA(tmp_path)
    port, stats = free_port(), tmp_path / "stats.sock"
    if nodeKind == "echo":
        backend = node(tmp_path, "echo")
        address = backend.address
    else:
        address = str(tmp_path / "node.sock")
        backend = subscribing_worker(tmp_path, address, [], "one")
    arguments, exchange = make(tmp_path, port, address, ca)
    router = Process(
        [*TWISTD_COMMAND, "-n", "--pidfile=", *arguments, "--processes", "2",
         "--stats", f"unix:{stats}"],
        tmp_path / f"{kind}.log", env=withProject(),
    )
    try:
        wait_until(lambda: all(workerPids(stats)), "both workers answering stats", process=router)

        def bothServed():
            assert expected in exchange()
            return all(worker["requests"]["started"] for worker in readStats(stats)["workers"])

        wait_until(bothServed, "requests served by both workers", timeout=60, process=router)
    finally:
        router.stop()
        backend.stop()


def test_socket_activation_unix_listener_and_metrics(tmp_path):
    """
    systemd hands the pool a TCP socket below 1024 (systemd-socket-activate
    binds it, as root): the workers serve on it and on a unix socket; one
    worker stopped with SIGTERM leaves the unix socket file (made with the
    --chmod-socket mode by the pool) in place for the other and its
    successor; --metrics labels every worker's samples.
    (twistd's --uid is not tried: this machine's Python is under /root,
    which no other user may enter.)
    """
    node = str(tmp_path / "node.sock")
    backend = uwsgi_worker(tmp_path, node, processes=1)
    port = next(p for p in range(900, 1000) if bindable(p))
    front, stats, metrics = (str(tmp_path / name) for name in ("front.sock", "stats.sock",
                                                               "metrics.sock"))
    router = Process(
        # systemd-socket-activate passes on only the variables it is told;
        # Twisted wants LISTEN_FDNAMES, as systemd sets it (--fdname).
        ["systemd-socket-activate", "-l", f"127.0.0.1:{port}", "-E", "PYTHONPATH",
         "--fdname", "http",
         *TWISTD_COMMAND, "-n", "--pidfile=",
         "txrouter-http", "--bind", "systemd:domain=INET:index=0", "--bind", f"unix:{front}",
         "--to", node, "--processes", "2", "--stats", f"unix:{stats}",
         "--metrics", f"unix:{metrics}", "--chmod-socket", "640"],
        tmp_path / "router.log", env=withProject(),
    )
    try:
        wait_for_log(router, "Listening on")
        # systemd-socket-activate starts twistd at the first connection,
        # which waits in the queue for a worker.
        assert b"HTTP_HOST" in get(port)
        wait_until(lambda: os.path.exists(stats) and all(workerPids(stats)),
                   "both workers answering stats", process=router)
        workers = readStats(stats)["workers"]
        request = b"GET / HTTP/1.0\r\nHost: example.com\r\n\r\n"

        def overUnix():
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(10)
                s.connect(front)
                s.sendall(request)
                return read_all(s)

        assert b"HTTP_HOST" in overUnix()
        assert os.stat(front).st_mode & 0o777 == 0o640
        os.kill(workers[0]["pid"], signal.SIGTERM)
        wait_for_log(router, "worker_died: worker 0", timeout=20)
        assert os.path.exists(front)
        assert b"HTTP_HOST" in overUnix()
        wait_until(lambda: all(workerPids(stats)) and workerPids(stats)[0] != workers[0]["pid"],
                   "worker 0 started again", process=router)
        for _ in range(20):
            assert b"HTTP_HOST" in overUnix()
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(metrics)
            s.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
            text = read_all(s).partition(b"\r\n\r\n")[2].decode()
        labelled = {
            sample.labels.get("worker")
            for family in text_string_to_metric_families(text) for sample in family.samples
            if sample.name == "txrouter_requests_started_total"
        }
        assert labelled == {"0", "1"}
    finally:
        router.stop()
        backend.stop()


def test_sighup_reloads_every_worker(tmp_path):
    """
    SIGHUP to the pool reaches both workers: each reads the --cache-file
    again, and a key added to it is served by both.
    """
    node = str(tmp_path / "node.sock")
    backend = uwsgi_worker(tmp_path, node, processes=1)
    mapping = tmp_path / "apps.map"
    mapping.write_text(f"old.example {node}\n")
    port, stats = free_port(), tmp_path / "stats.sock"
    router = Process(
        [*TWISTD_COMMAND, "-n", "--pidfile=", "txrouter-http",
         "--bind", f"tcp:{port}:interface=127.0.0.1", "--use-cache", "--cache-file", mapping,
         "--processes", "2", "--stats", f"unix:{stats}"],
        tmp_path / "router.log", env=withProject(),
    )
    try:
        wait_until(lambda: all(workerPids(stats)), "both workers answering stats", process=router)
        wait_for_log(router, "cache_file_loaded", count=2)
        mapping.write_text(f"old.example {node}\nnew.example {node}\n")
        router.signal(signal.SIGHUP)
        for index in (0, 1):
            wait_for_log(router, f"worker-{index}] cache_file_loaded: 2 keys")

        def bothServeTheNewKey():
            assert b"new.example" in get(port, "new.example")
            now = [worker["requests"]["started"] for worker in readStats(stats)["workers"]]
            return all(count > 0 for count in now)

        wait_until(bothServeTheNewKey, "both workers serving new.example", process=router)
        assert router.alive()
    finally:
        router.stop()
        backend.stop()


def test_sighup_reads_the_config_file_in_every_worker(tmp_path):
    """
    With --config, SIGHUP to the pool makes both workers read the file
    again: a --to changed there is where both send requests from then on.
    """
    nodes = [str(tmp_path / f"node{i}.sock") for i in (0, 1)]
    backends = [uwsgi_worker(tmp_path, node, processes=1) for node in nodes]
    config = tmp_path / "router.toml"
    config.write_text(f'to = ["{nodes[0]}"]\n')
    port, stats = free_port(), tmp_path / "stats.sock"
    router = Process(
        [*TWISTD_COMMAND, "-n", "--pidfile=", "txrouter-http", "--config", config,
         "--bind", f"tcp:{port}:interface=127.0.0.1", "--processes", "2", "--stats", f"unix:{stats}"],
        tmp_path / "router.log", env=withProject(),
    )
    try:
        wait_until(lambda: all(workerPids(stats)), "both workers answering stats", process=router)
        config.write_text(f'to = ["{nodes[1]}"]\n')
        router.signal(signal.SIGHUP)
        for index in (0, 1):
            wait_for_log(router, f"worker-{index}] config_reloaded")

        def hits():
            return [{node["name"]: node["hits"] for node in worker.get("static_nodes", [])}
                    for worker in readStats(stats)["workers"]]

        def bothUseTheNewNode():
            get(port)
            return all(worker.get(nodes[1], 0) > 0 for worker in hits())

        wait_until(bothUseTheNewNode, "both workers sending to the new node", process=router)
        assert all(nodes[0] not in worker for worker in hits())
    finally:
        router.stop()
        for backend in backends:
            backend.stop()


def test_workers_stop_when_the_pool_is_killed(pool):
    """
    The pool killed with SIGKILL cannot stop its workers: each sees its
    channel close and stops by itself, releasing the port.
    """
    pids = workerPids(pool["stats"])
    os.kill(pool["router"].pid, signal.SIGKILL)
    pool["router"].wait(10)
    wait_until(lambda: not any(pid_exists(pid) for pid in pids), "the workers gone", timeout=30)
    assert bindable(pool["port"])
