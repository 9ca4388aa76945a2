"""
The FastRouter end to end, as its users run it: curl -> nginx (Debian's
uwsgi_params, uwsgi_pass) -> twistd txrouter-fast -> real uWSGI 2.0.21
workers, one per application on its own unix socket, routed by Host through
each forwarder.

Every worker adds ECHO_WORKER=<name> to its requests' environ (uWSGI
internal routing), which tests/apps/echo.py sends back with the rest, so an
answer says which application served it.  What the router itself answers
(its refusals) nginx relays as they are: a short text body with the
router's words, where nginx's own errors are an HTML page signed "nginx".
"""

import contextlib
import hashlib
import http.client
import json
import os
import pathlib
import signal
import socket
import socketserver
import threading

import pytest

from tests.realpeers import (
    curl,
    free_port,
    nginx,
    txrouter_fast,
    uwsgi_worker,
    wait_until,
)
from tests.subpeers import wait_for_log

pytestmark = pytest.mark.e2e

MIB = 1 << 20
UPLOAD = 50 * MIB

#: An nginx location that routes on a client header instead of the Host:
#: the header becomes UWSGI_FASTROUTER_KEY, which the router prefers.
KEYED_LOCATION = """
        location /keyed/ {{
            include /etc/nginx/uwsgi_params;
            uwsgi_param UWSGI_FASTROUTER_KEY $http_x_route_key;
            uwsgi_pass {upstream};
        }}"""


@pytest.fixture(scope="module")
def apps(tmp_path_factory):
    """
    Workers for a.local and b.local on TMP/apps/<host>.sock.
    """
    tmp = tmp_path_factory.mktemp("fast-e2e")
    (tmp / "apps").mkdir()
    with echo_worker(tmp, "a"), echo_worker(tmp, "b"):
        yield tmp


def echo_worker(tmp, name, directory="apps"):
    return uwsgi_worker(tmp, str(socket_of(tmp, name, directory)), processes=1, name=name,
                        extra_args=["--route-run", f"addvar:ECHO_WORKER={name}"])


def socket_of(tmp, name, directory="apps") -> pathlib.Path:
    return tmp / directory / f"{name}.local.sock"


@contextlib.contextmanager
def chain(tmp, router_args, **nginx_options):
    """
    txrouter-fast (on a TCP port, with C{router_args}) and an nginx in front
    of it, which also has the /keyed/ location; yields C{(router, web)}.
    """
    with contextlib.ExitStack() as stack:
        router = stack.enter_context(txrouter_fast(tmp, free_port(), router_args))
        upstream = router.address
        web = stack.enter_context(nginx(
            tmp, free_port(), upstream,
            extra_locations=KEYED_LOCATION.format(upstream=upstream), **nginx_options,
        ))
        yield router, web


def fetch(web, host, path="/", *args):
    """
    C{(status, body)} of one request through nginx with this Host.
    """
    result = curl("-H", f"Host: {host}", "-w", "\n%{http_code}", *args,
                  f"http://127.0.0.1:{web.port}{path}")
    assert result.returncode == 0, result.stderr
    body, _, status = result.stdout.rpartition(b"\n")
    return int(status), body


def served_by(web, host, path="/", *args):
    """
    Which application answered, or C{(status, body)} when none did.
    """
    status, body = fetch(web, host, path, *args)
    if status != 200:
        return status, body
    return json.loads(body)["ECHO_WORKER"]


def by_key(web, key, host="a.local"):
    """
    L{served_by} for a request whose key nginx takes from X-Route-Key.
    """
    return served_by(web, host, "/keyed/", "-H", f"X-Route-Key: {key}")


def router_said(body: bytes, status: int, words: str) -> bool:
    """
    Whether C{body} is the router's own refusal (not nginx's error page).
    """
    return body.startswith(b"%d " % status) and words.encode() in body and b"nginx" not in body


def deleted_files(process, directory=None) -> list:
    """
    The process's descriptors on unlinked files (in C{directory}).
    """
    found = [f for f in process.open_files() if f.endswith(" (deleted)")]
    if directory is not None:
        prefix = os.path.realpath(directory) + "/"
        found = [f for f in found if f.startswith(prefix)]
    return found


# Each forwarder


def test_static_nodes(apps):
    """
    --to: every key goes to the one node; the packet nginx built reaches it.
    """
    with chain(apps, ["--to", str(socket_of(apps, "a"))]) as (router, web):
        for host in ("a.local", "b.local", "anything.example"):
            status, body = fetch(web, host, "/p%20q?x=1")
            answer = json.loads(body)
            assert (status, answer["ECHO_WORKER"]) == (200, "a")
            assert answer["HTTP_HOST"] == host
            assert (answer["PATH_INFO"], answer["QUERY_STRING"]) == ("/p q", "x=1")


def test_use_base(apps):
    """
    --use-base DIR/ appends the key as it is: the sockets are named after
    the hosts (symbolic links in the directory are followed).  A host with
    no socket gets the router's 502 after one attempt (its only node is not
    tried twice); a key that would leave the directory gets 404 and never
    touches the file system.
    """
    base = apps / "base"
    base.mkdir()
    for name in ("a", "b"):
        os.symlink(socket_of(apps, name), base / f"{name}.local")
    with chain(apps, ["--use-base", f"{base}/"]) as (router, web):
        assert served_by(web, "a.local") == "a"
        assert served_by(web, "b.local") == "b"
        status, body = served_by(web, "c.local")
        assert status == 502 and router_said(body, 502, "no backend could be reached")
        wait_for_log(router, f"backend_unreachable: cannot connect to {base}/c.local (attempt 1 of 4)")
        assert "(attempt 2 of 4)" not in router.log()
        assert by_key(web, "b.local") == "b"
        status, body = by_key(web, "../apps/a.local.sock")
        assert status == 404 and router_said(body, 404, "no node serves")
        wait_for_log(router, "unsafe_key: b'../apps/a.local.sock' refused for a socket path")


def test_use_pattern(apps):
    with chain(apps, ["--use-pattern", f"{apps}/apps/%s.sock"]) as (router, web):
        assert served_by(web, "a.local") == "a"
        assert served_by(web, "B.Local:8080") == "b"  # nginx's $host: lower case, no port
        status, body = served_by(web, "c.local")
        assert status == 502 and router_said(body, 502, "no backend could be reached")
        wait_for_log(router, "backend_unreachable")
        status, body = by_key(web, "../apps/a.local")
        assert status == 404 and router_said(body, 404, "no node serves")
        wait_for_log(router, "unsafe_key")


def test_use_cache_and_sighup_reload(apps, tmp_path):
    a, b = socket_of(apps, "a"), socket_of(apps, "b")
    mapping = tmp_path / "apps.map"
    mapping.write_text(f"# host  node\nx.local {a}\n")
    with chain(apps, ["--use-cache", "--cache-file", str(mapping)]) as (router, web):
        assert served_by(web, "x.local") == "a"
        status, body = served_by(web, "y.local")
        assert status == 404 and router_said(body, 404, "no node serves 'y.local'")
        wait_for_log(router, "no_node_for_key: 127.0.0.1: no node serves 'y.local'")

        mapping.write_text(f"x.local {b}\ny.local {a}|{b}\n")
        router.signal(signal.SIGHUP)
        wait_for_log(router, "cache_file_loaded: 2 keys")
        assert served_by(web, "x.local") == "b"
        assert sorted(served_by(web, "y.local") for _ in range(4)) == ["a", "a", "b", "b"]

        mapping.write_text("a-key-without-value\n")
        router.signal(signal.SIGHUP)
        wait_for_log(router, "cache_file_refused")
        assert served_by(web, "x.local") == "b"


def test_use_code(apps, tmp_path, monkeypatch):
    """
    --use-code MODULE:CALLABLE, imported from PYTHONPATH: plain answers, a
    list, a Deferred, None (404), a Deferred past --code-timeout (504) and
    a function that raises (502, traceback in the log).
    """
    (tmp_path / "e2e_routes.py").write_text(f"""\
from twisted.internet import reactor, task
from twisted.internet.defer import Deferred

A, B = {str(socket_of(apps, "a"))!r}, {str(socket_of(apps, "b"))!r}


def route(key):
    if key == "later.local":
        return task.deferLater(reactor, 0.05, lambda: B)
    if key == "slow.local":
        return Deferred()
    if key == "broken.local":
        raise RuntimeError("a bug in the routing code")
    return {{"a.local": A, "b.local": [B]}}.get(key)
""")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    with chain(apps, ["--use-code", "e2e_routes:route", "--code-timeout", "1"]) as (router, web):
        assert served_by(web, "a.local") == "a"
        assert served_by(web, "b.local") == "b"
        assert served_by(web, "later.local") == "b"
        status, body = served_by(web, "c.local")
        assert status == 404 and router_said(body, 404, "no node serves 'c.local'")
        status, body = served_by(web, "slow.local")
        assert status == 504 and router_said(body, 504, "took too long")
        wait_for_log(router, "forwarder_timeout")
        status, body = served_by(web, "broken.local")
        assert status == 502 and router_said(body, 502, "failed")
        wait_for_log(router, "RuntimeError: a bug in the routing code")
        assert served_by(web, "a.local") == "a"


# Refusals


@pytest.fixture(scope="module")
def static_chain(apps):
    with chain(apps, ["--to", str(socket_of(apps, "a"))]) as pair:
        yield pair


def test_http_client_on_the_uwsgi_port(static_chain):
    """
    curl pointed at the router instead of nginx learns why it fails.
    """
    router, web = static_chain
    port = router.address.rpartition(":")[2]
    result = curl("-w", "\n%{http_code}", f"http://127.0.0.1:{port}/")
    body, _, status = result.stdout.rpartition(b"\n")
    assert status == b"400"
    assert b"this port speaks the uwsgi protocol (nginx uwsgi_pass), not HTTP" in body
    wait_for_log(router, "http_on_uwsgi_port")


def test_tls_client_on_the_uwsgi_port(static_chain):
    """
    A TLS ClientHello is cut at once (there is nothing to answer in), with
    a log line saying what came.
    """
    router, web = static_chain
    port = router.address.rpartition(":")[2]
    result = curl("-k", f"https://127.0.0.1:{port}/", timeout=10)
    assert result.returncode == 35, result  # curl: SSL connect error
    wait_for_log(router, "tls_on_uwsgi_port: a TLS client reached the uwsgi port")


def test_silent_errors(apps, tmp_path):
    """
    --silent-errors: uWSGI's bare close, which nginx shows as its own 502.
    """
    mapping = tmp_path / "apps.map"
    mapping.write_text(f"x.local {socket_of(apps, 'a')}\n")
    with chain(apps, ["--use-cache", "--cache-file", str(mapping), "--silent-errors"]) \
            as (router, web):
        assert served_by(web, "x.local") == "a"
        status, body = served_by(web, "y.local")
        assert status == 502 and b"<center>nginx" in body
        wait_for_log(router, "no_node_for_key")
        wait_for_log(web, "upstream prematurely closed connection while reading response header")


# Uploads


@pytest.fixture(scope="module")
def big_file(apps):
    path = apps / "upload.bin"
    digest = hashlib.sha256()
    with path.open("wb") as f:
        for _ in range(UPLOAD // MIB):
            piece = os.urandom(MIB)
            digest.update(piece)
            f.write(piece)
    return path, digest.hexdigest()


def upload(web, path: pathlib.Path, pause_at=None, during=lambda: None):
    """
    POST the file through nginx (which streams it on: uwsgi_request_buffering
    off); after C{pause_at} bytes, call C{during} before sending the rest.

    @return: the echo app's answer.
    """
    connection = http.client.HTTPConnection("127.0.0.1", web.port, timeout=60)

    def body():
        sent = 0
        with path.open("rb") as f:
            while piece := f.read(MIB):
                if pause_at is not None and sent < pause_at <= sent + len(piece):
                    during()
                sent += len(piece)
                yield piece

    try:
        connection.request("POST", "/upload", body=body(), headers={
            "Host": "a.local", "Content-Length": str(path.stat().st_size),
            "Content-Type": "application/octet-stream",
        })
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_refusal_during_an_upload_reaches_the_client(apps, big_file, tmp_path):
    """
    The router refuses a request as soon as its packet arrives, while
    nginx is still streaming the body: the refusal is what the client gets
    (the router reads the rest of the body and drops it; closing at once
    would reset the connection and nginx would answer its own 502).
    """
    path, _ = big_file
    mapping = tmp_path / "apps.map"
    mapping.write_text(f"x.local {socket_of(apps, 'a')}\n")
    with chain(apps, ["--use-cache", "--cache-file", str(mapping)]) as (router, web):
        for _ in range(3):
            status, body = fetch(web, "y.local", "/", "--data-binary", f"@{path}")
            assert status == 404 and router_said(body, 404, "no node serves 'y.local'")
        assert deleted_files(router) == []
        assert "while sending request to upstream" not in web.log()


def test_50_mib_upload_streams_with_bounded_memory(static_chain, big_file):
    router, web = static_chain
    path, digest = big_file
    fetch(web, "a.local")
    before = router.peak_rss_kib()
    status, body = upload(web, path)
    answer = json.loads(body)
    assert (status, answer["body_len"], answer["body_sha256"]) == (200, UPLOAD, digest)
    growth = router.peak_rss_kib() - before
    assert growth < 20 * 1024, f"router peak memory grew by {growth} KiB"
    assert deleted_files(router) == []


def test_50_mib_upload_post_buffered_in_its_directory(apps, big_file, tmp_path):
    """
    --post-buffering: the body goes to an unlinked temporary file in
    --post-buffering-dir while it arrives (seen among the router's
    descriptors halfway), memory stays bounded, and once the worker has
    the whole body no descriptor or file is left.
    """
    path, digest = big_file
    spool = tmp_path / "spool"
    spool.mkdir()
    options = ["--to", str(socket_of(apps, "a")),
               "--post-buffering", "65536", "--post-buffering-dir", str(spool)]
    with chain(apps, options) as (router, web):
        fetch(web, "a.local")
        before = router.peak_rss_kib()
        seen = []

        def halfway():
            wait_until(lambda: deleted_files(router, spool), "a spool file in --post-buffering-dir",
                       timeout=20)
            seen.extend(deleted_files(router, spool))

        status, body = upload(web, path, pause_at=UPLOAD // 2, during=halfway)
        answer = json.loads(body)
        assert (status, answer["body_len"], answer["body_sha256"]) == (200, UPLOAD, digest)
        assert len(seen) == 1
        growth = router.peak_rss_kib() - before
        assert growth < 20 * 1024, f"router peak memory grew by {growth} KiB"
        wait_until(lambda: not deleted_files(router), "the spool file closed")
        assert list(spool.iterdir()) == []


def test_post_buffering_dir_gone(apps, tmp_path):
    """
    The spool directory disappears while the router runs: a body that
    needs a file gets the router's 503 through nginx (read to its end
    first, so that nginx sees the answer and not a reset), the operator an
    error line with the reason, and small bodies still pass.  Once the
    directory is back, big bodies pass again.
    """
    spool = tmp_path / "spool"
    spool.mkdir()
    body = tmp_path / "body.bin"
    body.write_bytes(os.urandom(4 * MIB))
    options = ["--to", str(socket_of(apps, "a")),
               "--post-buffering", "65536", "--post-buffering-dir", str(spool)]
    with chain(apps, options) as (router, web):
        spool.rmdir()
        status, answer = fetch(web, "a.local", "/", "--data-binary", f"@{body}")
        assert status == 503 and router_said(answer, 503, "the request body could not be stored")
        wait_for_log(router, f"spool_failed: 127.0.0.1: the request body could not be stored:"
                             f" {spool}: No such file or directory")
        status, answer = fetch(web, "a.local", "/", "--data-binary", "small")
        assert (status, json.loads(answer)["body_len"]) == (200, 5)
        spool.mkdir()
        status, answer = fetch(web, "a.local", "/", "--data-binary", f"@{body}")
        assert (status, json.loads(answer)["body_len"]) == (200, 4 * MIB)
        assert deleted_files(router) == []


# A backend that dies


def socket_fds(pid: int) -> int:
    return sum(os.readlink(fd).startswith("socket:")
               for fd in pathlib.Path(f"/proc/{pid}/fd").iterdir())


def in_background(function, *args):
    """
    Run C{function(*args)} in a thread; returns C{(thread, result)} where
    C{result} gets the return value under "value".
    """
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("value", function(*args)),
                              daemon=True)
    thread.start()
    return thread, result


def test_backend_killed_before_answering(apps, tmp_path):
    """
    The worker dies (SIGKILL) while it holds a POST: nginx relays the
    router's 502 (a POST is never sent to a second node), the router logs
    it, and the next requests are served (by the other node, the dead one
    being left out after its failure).
    """
    doomed = tmp_path / "doomed"
    doomed.mkdir()
    with echo_worker(tmp_path, "doomed", "doomed") as worker, \
            chain(apps, ["--to", str(socket_of(tmp_path, "doomed", "doomed")),
                         "--to", str(socket_of(apps, "a"))]) as (router, web):
        [child] = worker.children()
        idle = socket_fds(child)
        thread, result = in_background(fetch, web, "a.local", "/slow/30", "-d", "x")
        wait_until(lambda: socket_fds(child) > idle, "the request at the worker")
        os.killpg(worker.pid, signal.SIGKILL)
        thread.join(20)
        status, body = result["value"]
        assert status == 502 and router_said(body, 502, "the backend closed without a response")
        wait_for_log(router, "backend_closed:")
        assert [served_by(web, "a.local") for _ in range(3)] == ["a"] * 3


def test_a_get_goes_to_the_other_node_when_its_worker_dies(apps, tmp_path):
    """
    The worker dies (SIGKILL) while it holds a GET, before any byte of its
    response: the router sends the GET to the other node, which answers
    (nginx's rule for idempotent requests; see --retry-methods).
    """
    doomed = tmp_path / "doomed"
    doomed.mkdir()
    gate = tmp_path / "retry.gate"
    with echo_worker(tmp_path, "doomed", "doomed") as worker, \
            chain(apps, ["--to", str(socket_of(tmp_path, "doomed", "doomed")),
                         "--to", str(socket_of(apps, "a"))]) as (router, web):
        thread, result = in_background(fetch, web, "a.local", f"/hold?file={gate}")
        wait_for_log(worker, "holding /hold")
        os.killpg(worker.pid, signal.SIGKILL)
        wait_for_log(router, "backend_closed:")
        gate.touch()
        thread.join(20)
        status, body = result["value"]
        assert status == 200, body
        assert json.loads(body)["ECHO_WORKER"] == "a"


def test_backend_killed_mid_response(apps, tmp_path):
    """
    The worker dies while it streams a response: the router passes the
    close on, nginx cuts the client's transfer short (curl: "transfer
    closed with outstanding read data"), and the router goes on serving.
    """
    doomed = tmp_path / "doomed"
    doomed.mkdir()
    out = tmp_path / "partial.bin"
    with echo_worker(tmp_path, "doomed", "doomed") as worker, \
            chain(apps, ["--to", str(socket_of(tmp_path, "doomed", "doomed")),
                         "--to", str(socket_of(apps, "a"))],
                  uwsgi_buffering=False) as (router, web):
        thread, result = in_background(
            curl, "-H", "Host: a.local", "--limit-rate", "2M", "-o", str(out),
            f"http://127.0.0.1:{web.port}/bytes/{500 * MIB}")
        wait_until(lambda: out.exists() and out.stat().st_size > MIB, "the response under way")
        os.killpg(worker.pid, signal.SIGKILL)
        thread.join(40)
        assert result["value"].returncode == 18, result["value"]  # curl: partial file
        assert MIB < out.stat().st_size < 500 * MIB
        # "... while reading upstream" or "... while sending to client",
        # depending on what nginx was doing when the close came.
        wait_for_log(web, "upstream prematurely closed connection while ")
        assert [served_by(web, "a.local") for _ in range(3)] == ["a"] * 3



class EarlyAnswer(socketserver.BaseRequestHandler):
    """
    A uwsgi node that answers at the first bytes of a request, then reads
    and drops the rest until the router closes (as an application that
    refuses an upload without reading it, behind a server that drains).
    """

    def handle(self):
        connection = self.request
        with contextlib.suppress(OSError):
            connection.recv(65536)
            connection.sendall(b"HTTP/1.1 413 Too Big\r\nContent-Length: 4\r\n\r\nbig\n")
            connection.shutdown(socket.SHUT_WR)
            while connection.recv(65536):
                pass


@contextlib.contextmanager
def early_node(path: pathlib.Path):
    """
    An L{EarlyAnswer} node on the unix socket C{path}, in threads.
    """
    server = socketserver.ThreadingUnixStreamServer(str(path), EarlyAnswer)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_an_early_answer_to_an_upload_reaches_the_client(big_file, tmp_path):
    """
    The node answers before reading the body nginx streams: its answer is
    what the client gets (the router reads the rest of the body and drops
    it; closing at once would reset the connection over the unread bytes,
    and nginx would answer its own 502 about half the time).
    """
    path, _ = big_file
    node = tmp_path / "early.sock"
    with early_node(node), chain(tmp_path, ["--to", str(node)]) as (router, web):
        for _ in range(5):
            status, body = fetch(web, "a.local", "/upload", "--data-binary", f"@{path}")
            assert (status, body) == (413, b"big\n")
        assert "reset by peer" not in web.log()
