"""
The end-to-end harness (tests/realpeers.py, tests/apps/echo.py) proven
against uWSGI's own HTTP router, so that a failure in the txrouter
end-to-end tests is the router's and not the harness's.
"""

import hashlib
import json
import signal
import socket
import time

import pytest

from tests.realpeers import (
    Process,
    RSSSampler,
    curl,
    free_port,
    pid_exists,
    raw_exchange,
    uwsgi_http_router,
    uwsgi_worker,
    wait_for_log,
    wait_for_unix,
    wait_until,
)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def uwsgi(tmp_path_factory):
    """
    uWSGI workers on a unix socket behind uWSGI's router with keep-alive.
    """
    tmp = tmp_path_factory.mktemp("harness")
    sock, port = str(tmp / "app.sock"), free_port()
    with uwsgi_worker(tmp, sock) as worker, \
            uwsgi_http_router(tmp, port, sock, ["--http-keepalive"]) as router:
        router.port, router.worker = port, worker
        yield router


def test_echo_through_uwsgi_router(uwsgi):
    result = curl("-H", "X-Probe: 1", f"http://127.0.0.1:{uwsgi.port}/a%20b?q=1")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["UWSGI_ROUTER"] == "http"
    assert answer["PATH_INFO"] == "/a b"
    assert answer["QUERY_STRING"] == "q=1"
    assert answer["HTTP_X_PROBE"] == "1"
    assert answer["body_len"] == 0


def test_post_body_digest(uwsgi, tmp_path):
    body = bytes(range(256)) * 4000
    (tmp_path / "body").write_bytes(body)
    result = curl("-H", "Content-Type: application/octet-stream",
                  "--data-binary", f"@{tmp_path / 'body'}", f"http://127.0.0.1:{uwsgi.port}/")
    answer = json.loads(result.stdout)
    assert answer["body_len"] == len(body)
    assert answer["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert answer["CONTENT_LENGTH"] == str(len(body))


def test_status_bytes_and_slow(uwsgi):
    status = curl("-o", "/dev/null", "-w", "%{http_code}", f"http://127.0.0.1:{uwsgi.port}/status/418")
    assert status.stdout == b"418"
    size = curl("-o", "/dev/null", "-w", "%{size_download}",
                f"http://127.0.0.1:{uwsgi.port}/bytes/{5 << 20}")
    assert size.stdout == str(5 << 20).encode()
    started = time.monotonic()
    assert json.loads(curl(f"http://127.0.0.1:{uwsgi.port}/slow/0.5").stdout)["PATH_INFO"] == "/slow/0.5"
    assert time.monotonic() - started >= 0.5


def test_uwsgi_keepalive_and_no_length(uwsgi):
    """
    What uWSGI's router does with --http-keepalive: an HTTP/1.1 response
    with Content-Length keeps the connection open; one without is sent
    with C{Connection: close} added and ended by closing.
    """
    with socket.create_connection(("127.0.0.1", uwsgi.port), timeout=5) as s:
        for code in (200, 201):
            s.sendall(f"GET /status/{code} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            expected = f"HTTP/1.1 {code} Chosen\r\nContent-Length: 11\r\n\r\nstatus {code}\n".encode()
            received = b""
            while len(received) < len(expected):
                received += s.recv(65536)
            assert received == expected
    response = raw_exchange(uwsgi.port, b"GET /chunked HTTP/1.1\r\nHost: x\r\n\r\n")
    head, body = response.split(b"\r\n\r\n", 1)
    assert b"Connection: close" in head.split(b"\r\n")
    assert b"Content-Length" not in head
    assert body == b"".join(f"piece {i}\n".encode() for i in range(5))


def test_stop_by_pid(tmp_path):
    """
    stop() ends the master and its workers, by PID, within its bound,
    whether uWSGI's master exits by itself (it says goodbye) or, caught in
    uWSGI 2.0.21's shutdown race on a loaded machine, is SIGKILLed at the
    bound.
    """
    sock = str(tmp_path / "app.sock")
    worker = uwsgi_worker(tmp_path, sock, processes=2)
    # The master binds the socket before it forks its workers.
    wait_until(lambda: len(worker.children()) == 2, "two workers", 10, worker)
    children = worker.children()
    started = time.monotonic()
    worker.stop(timeout=10)
    assert time.monotonic() - started < 12
    assert not pid_exists(worker.pid)
    assert not [pid for pid in children if pid_exists(pid)]


def test_stop_escalates_to_sigkill(tmp_path):
    """
    A process that ignores SIGTERM is SIGKILLed after the bound.
    """
    script = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(60)"
    with Process(["python3", "-c", script], tmp_path / "stubborn.log") as process:
        wait_for_log(process, "up", timeout=10)
        started = time.monotonic()
        assert process.stop(timeout=1) == -signal.SIGKILL
        assert 1 <= time.monotonic() - started < 5
        assert not pid_exists(process.pid)


def test_rss_sampler(uwsgi):
    with RSSSampler(uwsgi.pid) as sampler:
        curl(f"http://127.0.0.1:{uwsgi.port}/bytes/{1 << 20}", "-o", "/dev/null")
    assert sampler.peak_kib >= sampler.start_kib > 0
    assert uwsgi.peak_rss_kib() >= uwsgi.rss_kib() > 0


def test_wait_for_unix_is_bounded(tmp_path):
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        wait_for_unix(str(tmp_path / "nobody.sock"), timeout=0.5)
    assert time.monotonic() - started < 2


def test_a_wait_that_times_out_fails_as_an_assertion_naming_what_it_waited_for():
    with pytest.raises(AssertionError, match="the moon: not there after 0.1 s"):
        wait_until(lambda: False, "the moon", 0.1)


def test_a_wait_on_a_process_that_exits_fails_at_once(tmp_path):
    with Process(["python3", "-c", "print('bye')"], tmp_path / "brief.log") as process:
        with pytest.raises(AssertionError, match="(?s)waiting for the moon: .* exited with 0:.*bye"):
            wait_until(lambda: False, "the moon", 30, process)

