"""
Real peers for the subscription end-to-end tests: uWSGI workers that
subscribe, txrouter under twistd with a subscription server, uWSGI's own
fastrouter for comparison, and a uwsgi-protocol client.

Everything is on 127.0.0.1 or unix sockets, bounded in time, and stopped
by PID (through L{tests.realpeers.Process}).
"""

import json
import os
import pathlib
import socket

from tests import realpeers
from tests.realpeers import (
    ECHO_APP,
    ROOT,
    TWISTD_COMMAND,
    Process,
    wait_for_address,
    wait_for_tcp,
    wait_until,
)
from txrouter.wire.uwsgi import encodeHeader, encodeVars

ROUTERS = {
    "fast": [*TWISTD_COMMAND, "-n", "--pidfile=", "txrouter-fast"],
    "http": [*TWISTD_COMMAND, "-n", "--pidfile=", "txrouter-http"],
}


def free_udp_port() -> int:
    """
    A UDP port on 127.0.0.1 that nothing is bound to right now.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def subscribing_worker(tmp_path, socket_address: str, subscriptions, name: str,
                       extra_args=(), wait: bool = True, timeout: float = 20.0) -> Process:
    """
    A real uWSGI 2.0.21 (master, one worker) serving the echo app on
    C{socket_address}, adding the var C{WORKER=name} to its requests and
    announcing itself every second.

    @param subscriptions: uWSGI options, e.g. C{["--subscribe-to",
        "127.0.0.1:7000:a.local"]} or C{["--subscribe2", "server=...,key=..."]}.
    @param wait: wait until the socket accepts (not possible for port 0).
    """
    process = Process(
        ["uwsgi", "--plugin", "python3", "--master", "--die-on-term",
         "--socket", socket_address, "--wsgi-file", ECHO_APP, "--processes", "1",
         "--route-run", f"addvar:WORKER={name}", "--subscribe-freq", "1",
         *subscriptions, *extra_args],
        pathlib.Path(tmp_path) / f"worker-{name}.log",
    )
    if wait:
        try:
            wait_for_address(socket_address, timeout, process)
        except BaseException:
            process.stop()
            raise
    return process


def txrouter(tmp_path, kind: str, port: int, args, timeout: float = 20.0) -> Process:
    """
    C{twistd -n txrouter-fast} or C{txrouter-http} on 127.0.0.1:C{port}
    with C{args}; returns once the port is bound.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    process = Process(
        [*ROUTERS[kind], "--bind", f"tcp:{port}:interface=127.0.0.1", *args],
        pathlib.Path(tmp_path) / f"txrouter-{kind}-{port}.log", env=env,
    )
    try:
        wait_for_tcp(port, timeout, process=process)
    except BaseException:
        process.stop()
        raise
    return process


def uwsgi_fastrouter(tmp_path, port: int, subscription_port: int, extra_args=(),
                     timeout: float = 20.0) -> Process:
    """
    uWSGI's own fastrouter on 127.0.0.1:C{port}, hearing subscriptions on
    UDP 127.0.0.1:C{subscription_port}.
    """
    return realpeers.uwsgi_fastrouter(
        tmp_path, port,
        ["--fastrouter-subscription-server", f"127.0.0.1:{subscription_port}", *extra_args],
        timeout=timeout,
    )


def uwsgi_packet(host: str, path: str = "/", modifier1: int = 0) -> bytes:
    """
    A request in the uwsgi protocol, as nginx's C{uwsgi_pass} sends it.
    """
    block = encodeVars([
        (b"REQUEST_METHOD", b"GET"), (b"REQUEST_URI", path.encode()),
        (b"PATH_INFO", path.encode()), (b"QUERY_STRING", b""),
        (b"SERVER_PROTOCOL", b"HTTP/1.1"), (b"SERVER_NAME", host.encode()),
        (b"SERVER_PORT", b"80"), (b"REMOTE_ADDR", b"127.0.0.1"),
        (b"HTTP_HOST", host.encode()),
    ])
    return encodeHeader(modifier1, len(block), 0) + block


def read_all(sock, timeout: float = 10.0) -> bytes:
    """
    Everything C{sock} receives until the peer closes; then close it.
    """
    with sock:
        sock.settimeout(timeout)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def uwsgi_request(port: int, host: str, path: str = "/", modifier1: int = 0,
                  timeout: float = 10.0) -> bytes:
    """
    One uwsgi-protocol request; the raw answer (the worker's HTTP
    response) until the router closes.
    """
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.sendall(uwsgi_packet(host, path, modifier1))
    return read_all(sock, timeout)


def http_request(port: int, host: str, path: str = "/", timeout: float = 10.0) -> bytes:
    """
    One HTTP/1.0 request with this Host; the raw answer.
    """
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.sendall(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
    return read_all(sock, timeout)


def answer(raw: bytes):
    """
    Which worker answered (its C{WORKER} var), or the HTTP status code of
    an answer that is not the echo app's JSON.
    """
    head, _, body = raw.partition(b"\r\n\r\n")
    status = head.split(b" ", 2)[1] if head.startswith(b"HTTP/") else b"0"
    if status != b"200":
        return int(status)
    return json.loads(body)["WORKER"]


def ask(kind: str, port: int, host: str, **kwargs):
    """
    The answering worker's name (or status) for one request by C{host}.
    """
    request = uwsgi_request if kind in ("fast", "uwsgi") else http_request
    return answer(request(port, host, **kwargs))


def wait_for_log(process: Process, text: str, count: int = 1, timeout: float = 15.0) -> None:
    """
    Wait until C{text} appears C{count} times in the process's log.
    """
    wait_until(lambda: process.log().count(text) >= count, repr(text), timeout, process)
