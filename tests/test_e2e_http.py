"""
End to end: curl and raw sockets -> twistd txrouter-http -> real uWSGI 2.0
workers, side by side with uWSGI's own HTTP router where that teaches
something.
"""

import hashlib
import json
import os
import signal
import socket
import subprocess
import threading
import urllib.parse

import pytest

from tests.realpeers import (
    curl,
    freePort,
    rawExchange,
    tcpRefuses,
    txrouterHTTP,
    uwsgiHTTPRouter,
    uwsgiWorker,
    waitForLog,
    waitUntil,
)

pytestmark = pytest.mark.e2e

MIB = 1 << 20


@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="module")
def workerProcesses(tmp):
    path = str(tmp / "app.sock")
    address = f"127.0.0.1:{freePort()}"
    with uwsgiWorker(tmp, path, processes=4) as unix, \
            uwsgiWorker(tmp, address, name="tcpworker") as tcp:
        unix.address, tcp.address = path, address
        yield unix, tcp


@pytest.fixture(scope="module")
def workerSocket(workerProcesses):
    return workerProcesses[0].address


@pytest.fixture(scope="module")
def workerTCP(workerProcesses):
    return workerProcesses[1].address


@pytest.fixture(scope="module")
def router(tmp, workerSocket, workerTCP):
    """
    txrouter-http with keep-alive in front of a unix and a TCP worker.
    """
    port = freePort()
    with txrouterHTTP(
        tmp, port, [workerSocket, workerTCP],
        ["--keepalive", "5", "--access-log", str(tmp / "access.log"), "--limit-post", str(80 * MIB)],
    ) as process:
        process.port = port
        yield process


def jsonBody(result):
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_get_head_post(router):
    answer = jsonBody(curl(f"http://127.0.0.1:{router.port}/a%20b/c?x=1&y=%20"))
    assert answer["UWSGI_ROUTER"] == "http"
    assert answer["PATH_INFO"] == "/a b/c"
    assert answer["QUERY_STRING"] == "x=1&y=%20"
    assert answer["REQUEST_METHOD"] == "GET"

    head = curl("-I", f"http://127.0.0.1:{router.port}/")
    assert head.stdout.startswith(b"HTTP/1.1 200 OK")
    assert b"Content-Length:" in head.stdout

    answer = jsonBody(curl("--data-binary", "hello world", f"http://127.0.0.1:{router.port}/p"))
    assert (answer["REQUEST_METHOD"], answer["CONTENT_LENGTH"], answer["body_len"]) == ("POST", "11", 11)
    assert answer["body_sha256"] == hashlib.sha256(b"hello world").hexdigest()


def test_round_robin_reaches_the_unix_and_the_tcp_worker(router, workerProcesses):
    for i in range(4):
        assert jsonBody(curl(f"http://127.0.0.1:{router.port}/rr{i}"))["PATH_INFO"] == f"/rr{i}"
    for worker in workerProcesses:
        assert worker.log().count("GET /rr") == 2, worker.log()[-2000:]
    # A request's access log line follows its response's last byte.
    accessLog = router.logPath.parent / "access.log"
    waitUntil(lambda: accessLog.read_text().count('"GET /rr') == 4, "four access log lines",
               process=router)


def test_chunked_upload_is_dechunked_for_the_worker(router, tmp):
    data = os.urandom(300_000)
    (tmp / "chunked.bin").write_bytes(data)
    answer = jsonBody(curl("-H", "Transfer-Encoding: chunked", "--data-binary", f"@{tmp / 'chunked.bin'}",
                           f"http://127.0.0.1:{router.port}/c"))
    assert answer["CONTENT_LENGTH"] == str(len(data))
    assert answer["body_sha256"] == hashlib.sha256(data).hexdigest()
    assert "HTTP_TRANSFER_ENCODING" not in answer


def test_keepalive_reuses_one_connection(router):
    result = curl("-o", "/dev/null", "-o", "/dev/null", "-w", "%{num_connects} ",
                  f"http://127.0.0.1:{router.port}/1", f"http://127.0.0.1:{router.port}/2")
    assert result.stdout.split() == [b"1", b"0"]


def test_pipelined_requests_are_answered_in_order(router):
    requests = b"".join(
        b"GET /%d HTTP/1.1\r\nHost: example.com\r\n\r\n" % i for i in range(3)
    ) + b"GET /last HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n"
    data = rawExchange(router.port, requests)
    paths = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        length = int([l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")][0].split(b":")[1])
        paths.append(json.loads(rest[:length])["PATH_INFO"])
        data = rest[length:]
    assert paths == ["/0", "/1", "/2", "/last"]


def test_environ_matches_uwsgi_router(tmp, workerSocket):
    """
    The environ the app sees is the one uWSGI's router gives it, but for the
    port vars (REMOTE_PORT is byte-swapped by uWSGI; the listeners differ).
    """
    uwsgiPort, txPort = freePort(), freePort()
    with uwsgiHTTPRouter(tmp, uwsgiPort, workerSocket), txrouterHTTP(tmp, txPort, [workerSocket]):
        args = ["-H", "Host: example.com", "-H", "X-Dup: 1", "-H", "X-Dup: 2", "-H", "User-Agent: t",
                "--data-binary", "body", "-H", "Content-Type: text/plain"]
        theirs = jsonBody(curl(*args, f"http://127.0.0.1:{uwsgiPort}/a%20b?q=1"))
        ours = jsonBody(curl(*args, f"http://127.0.0.1:{txPort}/a%20b?q=1"))
    differing = {k for k in theirs.keys() | ours.keys() if theirs.get(k) != ours.get(k)}
    assert differing == {"REMOTE_PORT", "SERVER_PORT"}
    assert ours["SERVER_PORT"] == str(txPort)
    assert ours["HTTP_X_DUP"] == "1, 2"


def test_50_mib_up_and_down_with_bounded_memory(router, tmp):
    big = tmp / "big.bin"
    with big.open("wb") as f:
        for _ in range(50):
            f.write(os.urandom(MIB))
    digest = hashlib.sha256(big.read_bytes()).hexdigest()
    before = router.peakRSSKiB()

    answer = jsonBody(curl("--data-binary", f"@{big}", f"http://127.0.0.1:{router.port}/up", timeout=60))
    assert (answer["body_len"], answer["body_sha256"]) == (50 * MIB, digest)

    answer = jsonBody(curl("-H", "Transfer-Encoding: chunked", "--data-binary", f"@{big}",
                           f"http://127.0.0.1:{router.port}/up", timeout=60))
    assert (answer["body_len"], answer["body_sha256"]) == (50 * MIB, digest)

    result = curl("--limit-rate", "100M", "-o", str(tmp / "down.bin"), "-w", "%{size_download}",
                  f"http://127.0.0.1:{router.port}/bytes/{50 * MIB}", timeout=60)
    assert result.stdout == str(50 * MIB).encode()

    growth = router.peakRSSKiB() - before
    assert growth < 20 * 1024, f"router peak memory grew by {growth} KiB"
    assert not [f for f in router.openFiles() if "(deleted)" in f], "a spool file outlived its request"


def rawStatus(port, data: bytes) -> int:
    response = rawExchange(port, data, shutdownWrite=False)
    return int(response.split(b" ", 2)[1]) if response else 0


def test_client_errors(router):
    port = router.port
    assert rawStatus(port, b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n"
                           b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n") == 400
    assert rawStatus(port, b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n") == 400
    assert rawStatus(port, b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: h\r\n\r\n") == 414
    assert rawStatus(port, b"GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + b"b" * 70000 + b"\r\n\r\n") == 431
    # Fits the router's head limit, not the worker's 4 KiB buffer: uWSGI's
    # router would send it and the worker would drop it without a word.
    assert rawStatus(port, b"GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + b"b" * 5000 + b"\r\n\r\n") == 431
    assert rawStatus(port, b"PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % (81 * MIB)) == 413
    assert rawStatus(port, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n") == 505


def test_head_timeout_gets_408(tmp, workerSocket):
    port = freePort()
    with txrouterHTTP(tmp, port, [workerSocket], ["--headers-timeout", "1"]):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n")
            response = s.recv(4096)
        assert response.startswith(b"HTTP/1.1 408 ")


def hold(port: int, gate, **fields) -> str:
    """
    The URL of the echo app's /hold through the router on C{port}: the
    worker logs "holding /hold?..." when it gets the request and answers
    once the file C{gate} exists.
    """
    query = urllib.parse.urlencode({"file": str(gate), **fields})
    return f"http://127.0.0.1:{port}/hold?{query}"


def held(worker, url: str, timeout: float = 15.0) -> None:
    """
    Wait until the request for C{url} is at one of C{worker}'s processes.
    """
    uri = url.partition("/hold")[2]
    waitForLog(worker, f"holding /hold{uri}", timeout=timeout)


def test_backend_failures(tmp, workerProcesses):
    dead = str(tmp / "nobody.sock")
    port = freePort()
    with txrouterHTTP(tmp, port, [dead], ["--max-retries", "0", "--gracetime", "30"]) as process:
        first = curl("-o", "/dev/null", "-w", "%{http_code}", f"http://127.0.0.1:{port}/")
        second = curl("-o", "/dev/null", "-w", "%{http_code}", f"http://127.0.0.1:{port}/")
        # A lone node is never quarantined: each request tries it.
        assert (first.stdout, second.stdout) == (b"502", b"502")
        assert process.log().count("backend_unreachable") == 4
        assert "all_nodes_dead" not in process.log()

    worker = workerProcesses[0]
    gate = tmp / "harakiri.gate"
    port = freePort()
    try:
        with txrouterHTTP(tmp, port, [worker.address], ["--harakiri", "1"]):
            # The worker holds the request until the gate opens, which is
            # after the router has given up on it.
            slow = curl("-w", " %{http_code}", hold(port, gate))
            assert slow.stdout.endswith(b" 504")
    finally:
        gate.touch()


def test_killed_backend_gets_502(tmp):
    path = str(tmp / "doomed.sock")
    port = freePort()
    with uwsgiWorker(tmp, path, processes=1, name="doomed") as worker, \
            txrouterHTTP(tmp, port, [path]):
        result = {}
        url = hold(port, tmp / "never.gate")

        def request():
            result["r"] = curl("-w", " %{http_code}", url)

        thread = threading.Thread(target=request)
        thread.start()
        held(worker, url)
        os.killpg(worker.pid, signal.SIGKILL)
        thread.join(15)
        assert result["r"].stdout.endswith(b" 502")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_sigterm_drains_in_flight_requests(tmp, workerProcesses, signum):
    """
    On SIGTERM (or SIGINT, Ctrl-C: twistd stops the same way) the router
    stops listening at once, lets the requests in flight finish however
    long they take, then exits.
    """
    worker = workerProcesses[0]
    gate = tmp / f"drain-{signal.Signals(signum).name}.gate"
    port = freePort()
    router = txrouterHTTP(tmp, port, [worker.address], ["--graceful-timeout", "10"])
    try:
        urls = [hold(port, gate, n=i, router=port) for i in range(3)]
        clients = [
            subprocess.Popen(["curl", "-sS", "--max-time", "20", "-w", " %{http_code}", url],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for url in urls
        ]
        for url in urls:
            held(worker, url)
        router.signal(signum)
        waitUntil(lambda: tcpRefuses(port), "the router to stop listening", 10, router)
        # Draining: the three requests are still held by the worker.
        assert [c.poll() for c in clients] == [None] * 3
        gate.touch()
        outputs = [c.communicate(timeout=20)[0] for c in clients]
        assert [o.endswith(b" 200") for o in outputs] == [True] * 3
        assert sorted(json.loads(o[:-4])["QUERY_STRING"] for o in outputs) == [
            urllib.parse.urlencode({"file": str(gate), "n": i, "router": port}) for i in range(3)]
        # twistd re-raises the signal once it has shut down cleanly.
        assert router.wait(15) == -signum
        assert "Server Shut Down." in router.log()
    finally:
        gate.touch()
        router.stop()
