"""
The FastRouter end-to-end harness (tests/realpeers.py: nginx,
uwsgi_fastrouter, uwsgi_worker) proven against uWSGI's own FastRouter, so
that a failure in the txrouter-fast end-to-end tests is the router's and not
the harness's.

The chain is the one uWSGI documents for virtual hosting::

    curl -> nginx (uwsgi_pass) -> uwsgi --fastrouter-use-pattern TMP/%s.sock
         -> TMP/app1.local.sock or TMP/app2.local.sock (uWSGI workers)

Each worker adds ECHO_WORKER=appN to every request's environ (uWSGI
internal routing, C{--route-run addvar:}), which tests/apps/echo.py sends
back with the rest of its str environ items.
"""

import hashlib
import json
import socket
import time

import pytest

from tests.realpeers import (
    curl,
    free_port,
    nginx,
    pid_exists,
    uwsgi_fastrouter,
    uwsgi_worker,
    wait_for_log,
    wait_until,
)

pytestmark = pytest.mark.e2e


def echo_worker(tmp, name):
    """
    A uWSGI worker for the virtual host C{name}.local on C{tmp/name.local.sock}.
    """
    return uwsgi_worker(tmp, str(tmp / f"{name}.local.sock"), processes=1, name=name,
                        extra_args=["--route-run", f"addvar:ECHO_WORKER={name}"])


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """
    nginx -> uWSGI's FastRouter (pattern mapper) -> two workers; a second
    nginx passes straight to worker 2 with response buffering off.  The
    first nginx also has /direct/ going straight to worker 1 (extra_locations).
    """
    tmp = tmp_path_factory.mktemp("fast")
    router_port, web_port, direct_port = free_port(), free_port(), free_port()
    direct_location = f"""
        location /direct/ {{
            include /etc/nginx/uwsgi_params;
            uwsgi_pass unix:{tmp / "app1.local.sock"};
        }}"""
    with echo_worker(tmp, "app1") as app1, echo_worker(tmp, "app2") as app2, \
            uwsgi_fastrouter(tmp, router_port,
                             ["--fastrouter-use-pattern", f"{tmp}/%s.sock"]) as router, \
            nginx(tmp, web_port, router.address, extra_locations=direct_location) as web, \
            nginx(tmp, direct_port, str(tmp / "app2.local.sock"),
                  uwsgi_buffering=False) as direct:
        yield type("Chain", (), dict(
            tmp=tmp, app1=app1, app2=app2, router=router, web=web, direct=direct,
            url=f"http://127.0.0.1:{web_port}", direct_url=f"http://127.0.0.1:{direct_port}",
        ))


def get_json(*args):
    result = curl(*args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_host_picks_the_worker(chain):
    for name in ("app1", "app2"):
        answer = get_json("-H", f"Host: {name}.local", f"{chain.url}/a%20b?q=1")
        assert answer["ECHO_WORKER"] == name
        assert answer["HTTP_HOST"] == f"{name}.local"
        assert answer["PATH_INFO"] == "/a b"
        assert answer["QUERY_STRING"] == "q=1"
        assert answer["REQUEST_URI"] == "/a%20b?q=1"
        assert answer["body_len"] == 0


def test_nginx_host_is_lowercased_without_port(chain):
    """
    Debian's uwsgi_params sends HTTP_HOST as nginx's $host, so the
    FastRouter's key is lower-cased and port-less whatever the client sent.
    """
    answer = get_json("-H", "Host: APP2.Local:8080", f"{chain.url}/")
    assert answer["ECHO_WORKER"] == "app2"
    assert answer["HTTP_HOST"] == "app2.local"


def test_post_body_digest(chain, tmp_path):
    """
    A 20 MiB upload, streamed by nginx (uwsgi_request_buffering off) and by
    the FastRouter, arrives whole.
    """
    body = bytes(range(256)) * (80 << 10)
    (tmp_path / "body").write_bytes(body)
    answer = get_json("-H", "Host: app1.local", "-H", "Content-Type: application/octet-stream",
                      "--data-binary", f"@{tmp_path / 'body'}", f"{chain.url}/upload")
    assert answer["ECHO_WORKER"] == "app1"
    assert answer["REQUEST_METHOD"] == "POST"
    assert answer["CONTENT_LENGTH"] == str(len(body))
    assert answer["body_len"] == len(body)
    assert answer["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_big_response_and_status(chain):
    size = curl("-H", "Host: app2.local", "-o", "/dev/null", "-w", "%{http_code} %{size_download}",
                f"{chain.url}/bytes/{5 << 20}")
    assert size.stdout == f"200 {5 << 20}".encode()
    status = curl("-H", "Host: app1.local", "-o", "/dev/null", "-w", "%{http_code}",
                  f"{chain.url}/status/418")
    assert status.stdout == b"418"


def test_keepalive_between_client_and_nginx(chain):
    """
    curl sends both requests on one connection to nginx (the benchmark's
    keep-alive scenario relies on it); nginx opens a new uwsgi connection
    to the router for each.
    """
    result = curl("-v", "-H", "Host: app1.local", f"{chain.url}/one", f"{chain.url}/two")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(b'"ECHO_WORKER": "app1"') == 2
    assert b"Re-using existing connection" in result.stderr


def test_unknown_host_is_502(chain, tmp_path):
    """
    uWSGI's FastRouter maps any key through the pattern.  For a socket that
    does not exist (ENOENT) or that nobody listens on (a stale file:
    ECONNREFUSED), connect() fails at once; uWSGI then closes the client
    connection without a word, without retrying and without logging
    anything (its "unable to connect() ... (N retries)" lines and the
    retries come only from a connect that fails later, as TCP ones do).
    nginx makes the empty answer a 502.
    """
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(chain.tmp / "stale.local.sock"))
    try:
        for host in ("nobody.local", "stale.local"):
            started = time.monotonic()
            result = curl("-H", f"Host: {host}", "-o", "/dev/null", "-w", "%{http_code}",
                          f"{chain.url}/")
            assert result.stdout == b"502"
            assert time.monotonic() - started < 5
            wait_for_log(chain.web, f'upstream: "uwsgi://{chain.router.address}", host: "{host}"')
    finally:
        stale.close()
        (chain.tmp / "stale.local.sock").unlink()
    assert "upstream prematurely closed connection while reading response header" \
        in chain.web.log()
    assert "unable to connect" not in chain.router.log()


def test_dead_tcp_node_is_logged(tmp_path):
    """
    By contrast a refused TCP connect is reported asynchronously: uWSGI logs
    it, marks the static node failed, finds no other node and closes.
    """
    router = uwsgi_fastrouter(tmp_path, free_port(), to="127.0.0.1:9")
    web = nginx(tmp_path, free_port(), router.address)
    with router, web:
        result = curl("-o", "/dev/null", "-w", "%{http_code}", f"http://127.0.0.1:{web.port}/")
        assert result.stdout == b"502"
        wait_for_log(router, 'unable to connect() to node "127.0.0.1:9" (0 retries):'
                             " Connection refused")
        wait_for_log(router, "=> marking 127.0.0.1:9 as failed")


def test_no_host_header(chain):
    """
    HTTP/1.0 without Host: nginx's $host is then the server_name ("_"), so
    the key is "_" and the FastRouter looks for TMP/_.sock: a 502 too.
    """
    result = curl("-0", "-H", "Host:", "-o", "/dev/null", "-w", "%{http_code}", f"{chain.url}/")
    assert result.stdout == b"502"
    assert get_json("-0", "-H", "Host:", f"{chain.url}/direct/")["HTTP_HOST"] == "_"


def test_nginx_straight_to_worker(chain, tmp_path):
    """
    nginx -> worker with no router: through an extra location to worker 1,
    and through the second nginx (a bare socket path as upstream, response
    buffering off) to worker 2, whatever the Host.
    """
    answer = get_json("-H", "Host: whatever.example", f"{chain.url}/direct/x")
    assert answer["ECHO_WORKER"] == "app1"
    assert answer["PATH_INFO"] == "/direct/x"
    answer = get_json("-H", "Host: whatever.example", f"{chain.direct_url}/y")
    assert answer["ECHO_WORKER"] == "app2"
    assert answer["HTTP_HOST"] == "whatever.example"
    size = curl("-o", "/dev/null", "-w", "%{size_download}", f"{chain.direct_url}/bytes/{3 << 20}")
    assert size.stdout == str(3 << 20).encode()
    body = b"z" * 100000
    (tmp_path / "body").write_bytes(body)
    answer = get_json("--data-binary", f"@{tmp_path / 'body'}", f"{chain.direct_url}/")
    assert answer["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_nginx_keeps_to_its_directory(chain):
    """
    nginx writes only under tmp (pid file, temporary paths, access log) and
    its error log is the process log.
    """
    home = chain.web.home
    assert (home / "nginx.pid").read_text().strip() == str(chain.web.pid)
    for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        assert (home / kind).is_dir()
    curl("-H", "Host: app1.local", f"{chain.url}/logged")
    wait_until(lambda: "GET /logged HTTP/1.1\" 200" in (home / "access.log").read_text(),
               "the request in nginx's access log", 5, chain.web)
    assert "start worker process" in chain.web.log()


def test_nginx_stop_by_pid(tmp_path):
    """
    stop() ends nginx's master and its worker, by PID, within its bound.
    """
    web = nginx(tmp_path, free_port(), "127.0.0.1:9")
    wait_until(web.children, "nginx's worker", 10, web)
    children = web.children()
    started = time.monotonic()
    web.stop(timeout=10)
    assert time.monotonic() - started < 5
    assert not pid_exists(web.pid)
    assert not [pid for pid in children if pid_exists(pid)]
    assert "exiting" in web.log()


def test_fastrouter_stop_by_pid(tmp_path):
    router = uwsgi_fastrouter(tmp_path, free_port(), to="127.0.0.1:9")
    children = router.children()
    assert children
    router.stop(timeout=10)
    assert not pid_exists(router.pid)
    assert not [pid for pid in children if pid_exists(pid)]
    assert "goodbye to uWSGI." in router.log()

