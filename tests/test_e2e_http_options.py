"""
End to end: uWSGI's HTTP router options as txrouter-http spells them
(C{--auto-chunked}, C{--auto-gzip}, C{--manage-expect N}, C{--manage-source},
C{--manage-rtsp}) beside uWSGI's own router with the same C{--http-*}
options,
in front of the same real uWSGI workers, read by curl.
"""

import hashlib
import json
import os
import socket

import pytest

from tests.realpeers import (
    curl, free_port, txrouter_http, uwsgi_http_router, uwsgi_worker, wait_for_log,
)

pytestmark = pytest.mark.e2e

PIECES = "".join(f"piece {i}\n" for i in range(5))


@pytest.fixture(scope="module")
def routers(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("httpoptions")
    sock = str(tmp / "app.sock")
    ours, theirs = free_port(), free_port()
    with uwsgi_worker(tmp, sock) as worker, \
            txrouter_http(tmp, ours, sock, ["--keepalive", "5", "--auto-chunked", "--auto-gzip",
                                         "--manage-expect", "100", "--manage-source",
                                         "--manage-rtsp"]), \
            uwsgi_http_router(tmp, theirs, sock,
                              ["--http-keepalive=5", "--http-auto-chunked", "--http-auto-gzip",
                               "--http-manage-expect=100", "--http-manage-source",
                               "--http-manage-rtsp"]):
        yield {"txrouter": ours, "uwsgi": theirs, "worker": worker}


@pytest.mark.parametrize("router", ["txrouter", "uwsgi"])
def test_two_close_delimited_responses_share_one_connection(routers, router):
    port = routers[router]
    result = curl("-sv", f"http://127.0.0.1:{port}/chunked", f"http://127.0.0.1:{port}/chunked")
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode() == PIECES * 2
    log = result.stderr.decode()
    assert "transfer-encoding: chunked" in log.lower()
    assert "Re-using existing connection" in log or "Reusing existing connection" in log


@pytest.mark.parametrize("router", ["txrouter", "uwsgi"])
def test_gzip_when_the_app_asks(routers, router):
    port = routers[router]
    result = curl("-sv", "--compressed", f"http://127.0.0.1:{port}/gzip")
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode() == PIECES
    assert "content-encoding: gzip" in result.stderr.decode().lower()


def test_no_gzip_for_a_client_that_does_not_accept_it(routers):
    result = curl("-sv", f"http://127.0.0.1:{routers['txrouter']}/gzip")
    assert result.stdout.decode() == PIECES
    assert "content-encoding" not in result.stderr.decode().lower()


@pytest.mark.parametrize("router", ["txrouter", "uwsgi"])
def test_manage_expect_refuses_a_body_over_its_limit_before_it_is_sent(routers, router):
    port = routers[router]
    result = curl("-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Expect: 100-continue",
                  "--data-binary", "x" * 101, f"http://127.0.0.1:{port}/")
    assert result.stdout == b"413"
    result = curl("-s", "-H", "Expect: 100-continue", "--data-binary", "x" * 100,
                  f"http://127.0.0.1:{port}/")
    assert b'"body_len": 100' in result.stdout


def test_a_source_stream_reaches_the_worker_until_the_client_closes(routers):
    """
    An Icecast-style SOURCE request: what follows its head is streamed to
    the worker, which reads its connection to the end (the client's
    half-close, passed on) and answers the digest.  uWSGI's router closes
    the worker's connection when the client half-closes, so the worker's
    answer meets a broken pipe there: only txrouter is tested.
    """
    router = "txrouter"
    stream = os.urandom(300_000)
    with socket.create_connection(("127.0.0.1", routers[router]), timeout=10) as client:
        client.sendall(b"SOURCE /raw-digest HTTP/1.0\r\nHost: h\r\n\r\n")
        # The stream starts once the worker reads its connection: bytes that
        # came with the packet would stay in uWSGI's request buffer, which
        # an application reading the connection does not see.
        wait_for_log(routers["worker"], "raw-digest reading")
        for start in range(0, len(stream), 65536):
            client.sendall(stream[start:start + 65536])
        client.shutdown(socket.SHUT_WR)
        answer = b""
        while True:
            piece = client.recv(65536)
            if not piece:
                break
            answer += piece
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.") and b" 200 " in head, answer[:200]
    assert json.loads(body) == {"body_len": len(stream),
                                "body_sha256": hashlib.sha256(stream).hexdigest()}


def test_curl_speaks_rtsp_to_a_worker_through_the_router(routers):
    """
    curl's RTSP OPTIONS through the router reaches the worker, whose RTSP
    answer (with curl's CSeq, which curl checks) comes back unparsed.
    uWSGI's router (--http-manage-rtsp) does the same, but now and then
    answers nothing at all (curl: "Empty reply from server"), so it is not
    part of the test.
    """
    result = curl("-sv", f"rtsp://127.0.0.1:{routers['txrouter']}/live")
    assert result.returncode == 0, result.stderr
    log = result.stderr.decode()
    assert "< RTSP/1.0 200 OK" in log and "< CSeq: 1" in log
