"""
The raw router end to end: C{twistd txrouter-raw} between real sockets and
TCP nodes run by the test (an echo node, nodes that greet first, an
SMTP-like node for XCLIENT), and real uWSGI 2.0.21 workers subscribing to
it.
"""

import hashlib
import importlib
import os
import pathlib
import selectors
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time

import pytest

from tests.realpeers import (
    ROOT,
    TWISTD_COMMAND,
    Process,
    free_port,
    wait_for_tcp,
    wait_until,
)
from tests.subpeers import answer, free_udp_port, subscribing_worker, uwsgi_packet

pytestmark = pytest.mark.e2e

MIB = 1 << 20

#: Bytes each way through the router in the big relay.
BIG = 100 * MIB

#: A TCP node: python -c NODE PORT MODE [NAME].  MODE echo: echoes, and
#: half-closes after the client's FIN; greet: sends "hello from NAME\n"
#: first, then echoes; smtp: greets, expects XCLIENT, greets again naming
#: the address it was given, then answers each line with "250 LINE"; fin:
#: sends "bye\n", half-closes, then reads until the client's FIN.
NODE = r"""
import socket, sys, threading

port, mode = int(sys.argv[1]), sys.argv[2]
name = sys.argv[3] if len(sys.argv) > 3 else ""

def echo(c):
    while True:
        data = c.recv(1 << 20)
        if not data:
            break
        c.sendall(data)
    c.shutdown(socket.SHUT_WR)

def smtp(c):
    f = c.makefile("rb")
    c.sendall(b"220 first greeting, to be withheld\r\n")
    line = f.readline()
    if line.startswith(b"XCLIENT "):
        c.sendall(b"220 hello " + line[8:].strip() + b"\r\n")
    else:
        c.sendall(b"500 expected XCLIENT, got " + line.strip() + b"\r\n")
    for line in f:
        c.sendall(b"250 " + line)

def serve(c):
    with c:
        try:
            if mode == "smtp":
                smtp(c)
            elif mode == "fin":
                c.sendall(b"bye\n")
                c.shutdown(socket.SHUT_WR)
                while c.recv(1 << 16):
                    pass
            else:
                if mode == "greet":
                    c.sendall(b"hello from " + name.encode() + b"\n")
                echo(c)
        except OSError:
            pass

server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", port))
server.listen(128)
while True:
    conn, _ = server.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"""


def node(tmp_path, mode: str, name: str = "") -> Process:
    """
    A node of L{NODE} on a free port (its C{address}); returns once it
    accepts.
    """
    port = free_port()
    process = Process([sys.executable, "-c", NODE, port, mode, name],
                      pathlib.Path(tmp_path) / f"node-{mode}-{port}.log")
    process.address = f"127.0.0.1:{port}"
    try:
        wait_for_tcp(port, 15, process=process)
    except BaseException:
        process.stop()
        raise
    return process


def withProject() -> dict:
    """
    The environment with the project on PYTHONPATH, for twistd to find its
    plugins.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def txrouter_raw(tmp_path, port: int, args) -> Process:
    """
    C{twistd -n txrouter-raw --bind tcp:PORT:interface=127.0.0.1 ARGS};
    returns once the port accepts.
    """
    env = withProject()
    process = Process(
        [*TWISTD_COMMAND, "-n", "--pidfile=", "txrouter-raw",
         "--bind", f"tcp:{port}:interface=127.0.0.1", *args],
        pathlib.Path(tmp_path) / f"txrouter-raw-{port}.log", env=env,
    )
    try:
        wait_for_tcp(port, 20, process=process)
    except BaseException:
        process.stop()
        raise
    return process


def block(index: int, base=os.urandom(MIB)) -> bytes:
    """
    The C{index}th MiB of a stream: random bytes, numbered so that a
    reordered or repeated block changes the stream's digest.
    """
    return index.to_bytes(8, "big") + base[8:]


def read_line(sock) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(1)
        if not chunk:
            break
        data += chunk
    return data


def test_a_big_stream_each_way_byte_exact(tmp_path):
    """
    100 MiB go to an echo node and come back through the router, byte for
    byte; the client's FIN reaches the node after the last byte, the
    node's FIN comes back after its last byte.
    """
    port = free_port()
    with node(tmp_path, "echo") as echo, txrouter_raw(tmp_path, port, ["--to", echo.address]):
        with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
            assert_echoed_byte_exact(sock, BIG, half_close=True)


def assert_echoed_byte_exact(sock, size: int, half_close: bool) -> None:
    """
    Send C{size} bytes (L{block}s of a MiB) while reading what an echo node
    sends back: all of it comes back, in order.  With C{half_close} the
    sender ends with a FIN and the reader reads to the end of the stream
    (the node's FIN); else it reads C{size} bytes.

    One thread drives both directions on a non-blocking socket: an SSL
    socket must not be read and written from two threads at once (OpenSSL's
    objects are not thread-safe), and a race there can look like the peer
    closing.
    """
    sent, received = hashlib.sha256(), hashlib.sha256()
    blocks, index, pending, length, shut = size // MIB, 0, b"", 0, False
    retry = (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)
    sock.setblocking(False)
    deadline = time.monotonic() + 60
    with selectors.DefaultSelector() as selector:
        selector.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
        ended = False
        while not ended:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"echoed {length} of {size} bytes in 60 s"
            writing = bool(pending) or index < blocks
            selector.modify(sock, selectors.EVENT_READ | (selectors.EVENT_WRITE if writing else 0))
            ready = selector.select(remaining)
            if writing and any(mask & selectors.EVENT_WRITE for _, mask in ready):
                if not pending:
                    pending = block(index)
                    sent.update(pending)
                    index += 1
                try:
                    # The same slice again after a retry, as OpenSSL asks.
                    pending = pending[sock.send(pending[:65536]):]
                except retry:
                    pass
                if half_close and not pending and index == blocks and not shut:
                    sock.shutdown(socket.SHUT_WR)
                    shut = True
            while True:
                try:
                    data = sock.recv(MIB)
                except retry:
                    break
                received.update(data)
                length += len(data)
                if not data or (not half_close and length >= size):
                    ended = True
                    break
    assert length == size
    assert received.hexdigest() == sent.hexdigest()


def test_a_node_killed_mid_stream_cuts_the_client(tmp_path):
    """
    The node dies while bytes flow both ways: the client's connection ends
    (EOF or reset), it does not hang, and the router serves the next
    client.
    """
    port = free_port()
    with node(tmp_path, "echo") as echo, \
            node(tmp_path, "greet", "spare") as spare, \
            txrouter_raw(tmp_path, port, ["--to", echo.address, "--fallback", spare.address,
                                          "--timeout", "60"]) as router:
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        stop = threading.Event()

        def send():
            try:
                index = 0
                while not stop.is_set():
                    sock.sendall(block(index))
                    index += 1
            except OSError:
                pass

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        received = 0
        while received < 8 * MIB:
            data = sock.recv(1 << 20)
            assert data
            received += len(data)
        echo.kill()
        ended = None
        try:
            while sock.recv(1 << 20):
                pass
            ended = "eof"
        except ConnectionResetError:
            ended = "reset"
        stop.set()
        sock.close()
        sender.join(30)
        assert ended in ("eof", "reset")
        # The dead node is quarantined; the next client is served by the
        # fallback.
        with socket.create_connection(("127.0.0.1", port), timeout=30) as again:
            assert read_line(again) == b"hello from spare\n"
        assert router.alive()


def test_two_nodes_in_round_robin_speak_first(tmp_path):
    """
    The nodes greet before the client sends anything, and connections
    alternate between them.
    """
    port = free_port()
    with node(tmp_path, "greet", "a") as a, node(tmp_path, "greet", "b") as b, \
            txrouter_raw(tmp_path, port, ["--to", a.address, "--to", b.address]):
        names = []
        for _ in range(4):
            with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
                names.append(read_line(sock))
        assert sorted(set(names)) == [b"hello from a\n", b"hello from b\n"]
        assert names[0] != names[1] and names[0] == names[2] and names[1] == names[3]


def test_xclient_tells_an_smtp_node_the_client_address(tmp_path):
    """
    The node's first greeting is withheld; it gets XCLIENT with the
    client's address and greets again, which is the first line the client
    reads; the session then goes on.
    """
    port = free_port()
    with node(tmp_path, "smtp") as smtp, \
            txrouter_raw(tmp_path, port, ["--to", smtp.address, "--xclient"]):
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            assert read_line(sock) == b"220 hello ADDR=127.0.0.1\r\n"
            sock.sendall(b"EHLO client\r\n")
            assert read_line(sock) == b"250 EHLO client\r\n"


@pytest.mark.skipif(shutil.which("uwsgi") is None, reason="uwsgi is not installed")
def test_a_uwsgi_worker_subscribed_under_the_bind_key(tmp_path):
    """
    A real uWSGI worker announces itself (--subscribe-to) under the key
    127.0.0.1:PORT, the raw router's bind in uWSGI's spelling: connections
    to that listener reach it, and a uwsgi request sent through the router
    is answered by the worker, bytes untouched.
    """
    port, subscriptions, nodePort = free_port(), free_udp_port(), free_port()
    with txrouter_raw(tmp_path, port, ["--subscription-server", f"127.0.0.1:{subscriptions}"]) \
            as router, \
            subscribing_worker(
                tmp_path, f"127.0.0.1:{nodePort}",
                ["--subscribe-to", f"127.0.0.1:{subscriptions}:127.0.0.1:{port}"], "raw-worker",
            ):
        def served():
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(uwsgi_packet("any.host"))
                raw = b""
                while True:
                    data = sock.recv(65536)
                    if not data:
                        break
                    raw += data
            return raw.startswith(b"HTTP/") and answer(raw) == "raw-worker"

        wait_until(served, "the subscribed worker answering through the raw router", 20, router)


def test_every_option_is_in_help_and_docs():
    """
    Every option of C{twistd txrouter-raw} is in its --help and has a line
    in docs/raw-router.md or the shared page of routing options.
    """
    options = importlib.import_module("txrouter.tap.raw").Options()
    result = subprocess.run(
        [*TWISTD_COMMAND, "txrouter-raw", "--help"],
        capture_output=True, text=True, timeout=60, cwd=ROOT, env=withProject(),
    )
    assert result.returncode == 0, result.stderr
    docs = (ROOT / "docs" / "raw-router.md").read_text() \
        + (ROOT / "docs" / "routing-options.md").read_text()
    names = {name.rstrip("=") for name in options.longOpt} - {"help", "version"}
    for name in sorted(names):
        assert f"--{name}" in result.stdout, name
        assert f"`--{name}" in docs, name
