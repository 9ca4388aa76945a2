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
import threading
import time

from tests import realpeers
from tests.realpeers import (
    ECHO_APP,
    ROOT,
    TWISTD_COMMAND,
    Process,
    wait_for_address,
    wait_for_log,  # here too, for the tests that import it from this module
    wait_for_tcp,
)
from txrouter.wire.subscription import SubscriptionError, parseSubscription
from txrouter.wire.uwsgi import decodeVars, encodeHeader, encodeVars

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


def stats(port: int) -> dict:
    """
    The stats JSON a router's C{--stats 127.0.0.1:PORT} (or uWSGI's
    C{--fastrouter-stats}) writes to whoever connects.
    """
    return json.loads(read_all(socket.create_connection(("127.0.0.1", port), timeout=10)))


class _Thread:
    """
    A daemon thread serving a bound socket until L{close}, polling with a
    short timeout so that it stops promptly.
    """

    def __init__(self, sock) -> None:
        self.socket = sock
        self.socket.settimeout(0.2)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopped.is_set():
            try:
                self.serve_one()
            except (socket.timeout, BlockingIOError):
                continue
            except OSError:
                if self._stopped.is_set():
                    return
                raise

    def close(self) -> None:
        self._stopped.set()
        self._thread.join(5)
        self.socket.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class RecordingBackend(_Thread):
    """
    A fake uwsgi backend on 127.0.0.1: reads each connection's uwsgi
    packet head, records C{(modifier1, modifier2, vars)}, answers a short
    HTTP response and closes.  For what no real worker can show: the
    exact header bytes a router writes.

    @ivar port: where it listens.
    @ivar requests: the recorded heads, in arrival order.
    """

    ANSWER = b"HTTP/1.0 200 OK\r\nContent-Length: 8\r\n\r\nrecorded"

    def __init__(self) -> None:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        self.port = sock.getsockname()[1]
        self.requests = []
        super().__init__(sock)

    def serve_one(self) -> None:
        connection, _ = self.socket.accept()
        with connection:
            connection.settimeout(5)
            head = self._read(connection, 4)
            datasize = int.from_bytes(head[1:3], "little")
            block = self._read(connection, datasize)
            self.requests.append((head[0], head[3], dict(decodeVars(block))))
            connection.sendall(self.ANSWER)

    @staticmethod
    def _read(connection, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = connection.recv(size - len(data))
            if not chunk:
                raise ConnectionError("closed before a whole uwsgi head")
            data += chunk
        return data


class DatagramTee(_Thread):
    """
    A UDP relay on 127.0.0.1: every datagram it gets is recorded and sent
    on to C{target} (a subscription server), so a test can see exactly
    what a real uWSGI subscriber sent, and replay it.

    @ivar port: where subscribers send.
    @ivar datagrams: C{(time.monotonic(), raw bytes)} in arrival order.
    """

    def __init__(self, target: int) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self.target = ("127.0.0.1", target)
        self.datagrams = []
        self._lock = threading.Lock()
        super().__init__(sock)

    def serve_one(self) -> None:
        datagram, _ = self.socket.recvfrom(65536)
        with self._lock:
            self.datagrams.append((time.monotonic(), datagram))
        self.socket.sendto(datagram, self.target)

    def announces(self) -> list:
        """
        The recorded datagrams that parse, as L{Subscription}s with their
        raw bytes: C{[(subscription, raw), ...]}.
        """
        with self._lock:
            recorded = list(self.datagrams)
        parsed = []
        for _, raw in recorded:
            try:
                parsed.append((parseSubscription(raw), raw))
            except SubscriptionError:
                pass
        return parsed
