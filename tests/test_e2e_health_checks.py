"""
Health checks end to end (C{--check-interval}): a real twistd txrouter-http
in front of two real backends, uWSGI workers (a connect probe) or Python
HTTP servers (an HTTP probe).  One backend is stopped: with no client
request at all, the stats show it down within a few intervals, and the
requests that follow all go to the other with no error; it is started
again: the checks bring it back and it serves again.
"""

import json
import pathlib
import sys
import urllib.error
import urllib.request

import pytest

from tests.realpeers import (
    Process,
    free_port,
    txrouter_http,
    wait_for_log,
    wait_for_tcp,
    wait_for_unix,
    wait_until,
)
from tests.subpeers import stats

pytestmark = pytest.mark.e2e

ECHO_APP = pathlib.Path(__file__).resolve().parent / "apps" / "echo.py"

#: Seconds between two probes of a node.
INTERVAL = 0.3

#: Seconds a probe may take: generous, so that a loaded machine never fails
#: a live node's probe (a dead node refuses at once).
TIMEOUT = 3


def uwsgi_node(tmp_path, sock: str, name: str) -> Process:
    """
    A uWSGI worker on C{sock} that adds C{WORKER=name} to its requests.
    """
    process = Process(
        ["uwsgi", "--plugin", "python3", "--master", "--die-on-term", "--socket", sock,
         "--wsgi-file", ECHO_APP, "--processes", "1", "--route-run", f"addvar:WORKER={name}"],
        tmp_path / f"worker-{name}.log",
    )
    wait_for_unix(sock, process=process)
    return process


def http_node(tmp_path, port: int, name: str) -> Process:
    """
    Python's HTTP server on 127.0.0.1:C{port}, whose C{/} answers C{name}.
    """
    root = tmp_path / name
    root.mkdir(exist_ok=True)
    (root / "index.html").write_text(json.dumps({"WORKER": name}))
    process = Process(
        [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory", root, port],
        tmp_path / f"http-{name}.log",
    )
    wait_for_tcp(port, process=process)
    return process


def served_by(port: int) -> "str | int":
    """
    The name of the backend that answered one request, or the error
    status.
    """
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
            return json.loads(response.read())["WORKER"]
    except urllib.error.HTTPError as e:
        return e.code


def check_states(statsPort: int) -> dict:
    """
    C{{node: state}} of the C{node_checks} of the stats document.
    """
    return {c["name"]: c["state"] for c in stats(statsPort)["node_checks"]}


def run_failover(tmp_path, nodes, start, extra=()):
    """
    The scenario, over two nodes: C{nodes} are their addresses for
    C{--to}, C{start(index)} starts backend C{index} (0 or 1) and returns
    its process.
    """
    backends = [start(0), start(1)]
    port, statsPort = free_port(), free_port()
    router = txrouter_http(tmp_path, port, nodes, [
        "--check-interval", str(INTERVAL), "--check-timeout", str(TIMEOUT),
        "--check-fall", "2", "--check-rise", "2",
        "--max-retries", "0", "--stats", f"127.0.0.1:{statsPort}", *extra,
    ])
    try:
        wait_for_tcp(statsPort, process=router)
        up = {nodes[0]: "up", nodes[1]: "up"}
        assert check_states(statsPort) == up
        assert {served_by(port) for _ in range(4)} == {"one", "two"}

        backends[1].stop()
        wait_until(lambda: check_states(statsPort)[nodes[1]] == "down",
                   "the stopped node down in the stats", timeout=15, process=router)
        wait_for_log(router, "node_check_failed")
        hits = {n["name"]: n["hits"] for n in stats(statsPort)["static_nodes"]}
        answers = [served_by(port) for _ in range(20)]
        assert answers == ["one"] * 20
        document = stats(statsPort)
        assert {n["name"]: n["hits"] for n in document["static_nodes"]} == {
            nodes[0]: hits[nodes[0]] + 20, nodes[1]: hits[nodes[1]]}
        assert [n["check"] for n in document["static_nodes"]] == ["up", "down"]
        assert document["requests"]["refusals"] == {}

        backends[1] = start(1)
        wait_until(lambda: check_states(statsPort) == up, "the node back up in the stats",
                   timeout=15, process=router)
        wait_for_log(router, "node_check_passed")
        assert {served_by(port) for _ in range(4)} == {"one", "two"}
        log = router.log()
        assert log.count("node_check_failed") == 1, log
        assert log.count("node_check_passed") == 1, log
        assert "Traceback" not in log
    finally:
        router.stop()
        for backend in backends:
            backend.stop()


def test_uwsgi_nodes(tmp_path):
    """
    uWSGI nodes are probed by a connect.
    """
    socks = [str(tmp_path / "one.sock"), str(tmp_path / "two.sock")]
    run_failover(tmp_path, socks,
                 lambda index: uwsgi_node(tmp_path, socks[index], ["one", "two"][index]))


def test_http_nodes(tmp_path):
    """
    HTTP nodes are probed by a GET of C{--check-path}.
    """
    ports = [free_port(), free_port()]
    nodes = [f"http://127.0.0.1:{p}" for p in ports]
    run_failover(tmp_path, nodes,
                 lambda index: http_node(tmp_path, ports[index], ["one", "two"][index]),
                 ["--check-path", "/index.html"])
