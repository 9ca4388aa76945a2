"""
End to end: C{--auto-chunked} and C{--auto-gzip} of twistd txrouter-http
beside uWSGI's own C{--http-auto-chunked --http-auto-gzip}, in front of the
same real uWSGI workers, read by curl.
"""

import pytest

from tests.realpeers import curl, free_port, txrouter_http, uwsgi_http_router, uwsgi_worker

pytestmark = pytest.mark.e2e

PIECES = "".join(f"piece {i}\n" for i in range(5))


@pytest.fixture(scope="module")
def routers(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("autocoding")
    sock = str(tmp / "app.sock")
    ours, theirs = free_port(), free_port()
    with uwsgi_worker(tmp, sock), \
            txrouter_http(tmp, ours, sock, ["--keepalive", "5", "--auto-chunked", "--auto-gzip"]), \
            uwsgi_http_router(tmp, theirs, sock,
                              ["--http-keepalive=5", "--http-auto-chunked", "--http-auto-gzip"]):
        yield {"txrouter": ours, "uwsgi": theirs}


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
