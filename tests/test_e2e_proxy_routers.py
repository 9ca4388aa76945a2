"""
The PROXY protocol through the routers themselves, with real peers:

 - HAProxy 2.6 (C{send-proxy}, C{send-proxy-v2}) in front of C{twistd
   txrouter-http --enable-proxy-protocol}, in front of a real uWSGI worker:
   a curl bound to 127.0.0.2 reaches the worker as C{REMOTE_ADDR=127.0.0.2}
   with its real port; the same header sent by a client at the untrusted
   127.0.0.3 is refused, and that client's plain request is served as
   itself;
 - C{twistd txrouter-raw --send-proxy-v2} in front of HAProxy's
   C{accept-proxy}: HAProxy logs the original client, 127.0.0.2.
"""

import json
import pathlib
import socket

import pytest

from tests.realpeers import (
    Process, curl, free_port, txrouter_http, uwsgi_worker, wait_for_tcp, wait_until,
)
from tests.test_e2e_proxy import HAPROXY
from tests.test_e2e_raw import node, txrouter_raw
from txrouter.wire.proxy import encodeV1

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed (scripts/setup installs it)"),
]


def haproxy(tmp_path, front: int, server: str, serverOptions: str, bindOptions: str = "") -> Process:
    """
    HAProxy in TCP mode on 127.0.0.1:C{front} in front of C{server}, its
    connection log on standard output (the process's log file).
    """
    config = pathlib.Path(tmp_path) / f"haproxy-{front}.cfg"
    config.write_text(f"""
global
    maxconn 100
    log stdout format raw local0

defaults
    mode tcp
    log global
    option tcplog
    timeout connect 5s
    timeout client 10s
    timeout server 10s

listen front
    bind 127.0.0.1:{front} {bindOptions}
    server app {server} {serverOptions}
""")
    process = Process([HAPROXY, "-db", "-f", config], pathlib.Path(tmp_path) / f"haproxy-{front}.log")
    wait_for_tcp(front, process=process)
    return process


@pytest.fixture(scope="module")
def routed(tmp_path_factory):
    """
    A uWSGI worker behind txrouter-http, which takes PROXY headers from
    127.0.0.1 (where HAProxy connects from).
    """
    tmp = tmp_path_factory.mktemp("proxy-routers")
    sock, port = str(tmp / "app.sock"), free_port()
    with uwsgi_worker(tmp, sock), txrouter_http(tmp, port, sock, [
        "--enable-proxy-protocol", "--proxy-protocol-from", "127.0.0.1",
    ]) as router:
        router.port = port
        yield router


def environ(result) -> dict:
    assert result.returncode == 0, result.stderr
    body, _, localPort = result.stdout.decode().rpartition("\n")
    answer = json.loads(body)
    answer["curl_local_port"] = localPort
    return answer


@pytest.mark.parametrize("sendProxy", ["send-proxy", "send-proxy-v2"])
def test_haproxy_in_front_of_the_http_router(routed, sendProxy, tmp_path):
    front = free_port()
    with haproxy(tmp_path, front, f"127.0.0.1:{routed.port}", sendProxy):
        answer = environ(curl("-s", "--interface", "127.0.0.2", "-w", "\n%{local_port}",
                              f"http://127.0.0.1:{front}/"))
    assert answer["REMOTE_ADDR"] == "127.0.0.2"
    assert answer["REMOTE_PORT"] == answer["curl_local_port"]
    assert answer["SERVER_PORT"] == str(front)


def test_an_untrusted_client_cannot_claim_an_address(routed):
    spoof = encodeV1(("10.6.6.6", 1234), ("127.0.0.1", routed.port))
    with socket.create_connection(("127.0.0.1", routed.port), timeout=10,
                                  source_address=("127.0.0.3", 0)) as client:
        client.sendall(spoof + b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        assert client.recv(65536) == b""
    assert "proxy_untrusted" in routed.log()
    answer = environ(curl("-s", "--interface", "127.0.0.3", "-w", "\n%{local_port}",
                          f"http://127.0.0.1:{routed.port}/"))
    assert answer["REMOTE_ADDR"] == "127.0.0.3"


def test_a_trusted_source_without_a_header_is_refused(routed):
    result = curl("-s", "-o", "/dev/null", "-w", "%{http_code}", f"http://127.0.0.1:{routed.port}/")
    assert result.stdout == b"000"
    assert "proxy_missing" in routed.log()


def test_the_raw_router_tells_haproxy_the_client(tmp_path):
    echo = node(tmp_path, "echo")
    front, port = free_port(), free_port()
    with echo, haproxy(tmp_path, front, echo.address, "", "accept-proxy") as balancer, \
            txrouter_raw(tmp_path, port, ["--to", f"127.0.0.1:{front}", "--send-proxy-v2"]):
        with socket.create_connection(("127.0.0.1", port), timeout=10,
                                      source_address=("127.0.0.2", 0)) as client:
            clientPort = client.getsockname()[1]
            client.sendall(b"ping\n")
            assert client.recv(100) == b"ping\n"
        # tcplog: "127.0.0.2:PORT [date] front front/app ..." once closed.
        wait_until(lambda: f"127.0.0.2:{clientPort}" in balancer.log(), "HAProxy's log line",
                   process=balancer)
