"""
systemd, end to end, without systemd: a datagram socket made here is the
router's C{NOTIFY_SOCKET} (a path, or an abstract name), and
C{systemd-socket-activate} passes a listening socket as systemd would.
"""

import os
import signal
import socket
import subprocess

import pytest

from tests.realpeers import (
    ROOT,
    TWISTD_COMMAND,
    Process,
    curl,
    free_port,
    tcp_accepts,
    uwsgi_worker,
    wait_for_log,
)

pytestmark = pytest.mark.e2e


@pytest.fixture
def node(tmp_path):
    path = str(tmp_path / "node.sock")
    worker = uwsgi_worker(tmp_path, path)
    yield path
    worker.stop()


def notifySocket(address: str) -> socket.socket:
    listening = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listening.bind("\0" + address[1:] if address.startswith("@") else address)
    listening.settimeout(20)
    return listening


def environment(**extra) -> dict:
    return dict(os.environ, PYTHONPATH=str(ROOT), **extra)


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_ready_once_listening_and_stopping_when_draining(tmp_path, node, abstract):
    address = f"@txrouter-test-{os.getpid()}" if abstract else str(tmp_path / "notify")
    port = free_port()
    with notifySocket(address) as notify:
        router = Process(
            [*TWISTD_COMMAND, "-n", "--pidfile=", "txrouter-http",
             "--bind", f"tcp:{port}:interface=127.0.0.1", "--to", node],
            tmp_path / "router.log", env=environment(NOTIFY_SOCKET=address),
        )
        try:
            ready = notify.recv(4096)
            assert ready.split(b"\n")[0] == b"READY=1", ready
            assert tcp_accepts(port), "READY=1 comes once the listener listens"
            assert curl(f"http://127.0.0.1:{port}/").returncode == 0
            router.signal(signal.SIGTERM)
            stopping = notify.recv(4096)
            assert stopping.split(b"\n")[0] == b"STOPPING=1", stopping
            router.wait(20)
        finally:
            router.stop()
    assert "Traceback" not in router.log()


def test_socket_activation(tmp_path, node):
    """
    C{systemd-socket-activate} binds the port and starts twistd on the
    first connection, which the router then serves: that connection waited
    in the socket's backlog.
    """
    port = free_port()
    activator = Process(
        ["systemd-socket-activate", "--fdname=http", "-l", f"127.0.0.1:{port}",
         *TWISTD_COMMAND, "-n", "--pidfile=", "txrouter-http",
         "--bind", "systemd:domain=INET:index=0", "--to", node],
        tmp_path / "activated.log", env=environment(),
    )
    try:
        wait_for_log(activator, f"Listening on 127.0.0.1:{port}")
        answer = curl("-i", f"http://127.0.0.1:{port}/hello")
        assert answer.stdout.startswith(b"HTTP/1.1 200"), answer
        assert b"/hello" in answer.stdout
    finally:
        activator.stop()


def test_socket_activation_without_a_socket(tmp_path):
    """
    Without the systemd variables, a systemd: listener is a one-line usage
    error saying what is missing.
    """
    result = subprocess.run(
        [*TWISTD_COMMAND, "-n", "--pidfile=", "txrouter-http",
         "--bind", "systemd:domain=INET:index=0", "--to", "127.0.0.1:1"],
        capture_output=True, text=True, timeout=60, env=environment(),
    )
    assert result.returncode != 0
    assert "--bind: systemd passed no such socket (LISTEN_PID" in result.stderr
    assert "Traceback" not in result.stderr


def test_example_units_verify(tmp_path):
    """
    The units in examples/systemd are ones systemd accepts
    (C{systemd-analyze verify}), twistd put where this machine has it.
    """
    units = sorted((ROOT / "examples" / "systemd").glob("txrouter-*.*"))
    assert {unit.suffix for unit in units} == {".service", ".socket"}
    twistd = TWISTD_COMMAND[0]
    for unit in units:
        text = unit.read_text().replace("/opt/txrouter/bin/twistd", twistd)
        (tmp_path / unit.name).write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", *(str(tmp_path / unit.name) for unit in units)],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root (CI runs as root)")
def test_ready_after_switching_users(tmp_path):
    """
    The notify socket is connected while the router is root: READY=1
    reaches one that nobody may write to (in the test's root-only
    directory), though the router runs as nobody by then.
    """
    address, port = str(tmp_path / "notify"), free_port()
    with notifySocket(address) as notify:
        router = Process(
            [*TWISTD_COMMAND, "-n", "--pidfile=", "txrouter-http",
             "--bind", f"tcp:{port}:interface=127.0.0.1", "--to", "127.0.0.1:1",
             "--uid", "nobody"],
            tmp_path / "router.log", env=environment(NOTIFY_SOCKET=address),
        )
        try:
            assert notify.recv(4096).startswith(b"READY=1")
            with open(f"/proc/{router.pid}/status") as status:
                uid = next(line for line in status if line.startswith("Uid:"))
            assert uid.split()[1:] == ["65534"] * 4
            router.signal(signal.SIGTERM)
            assert notify.recv(4096).startswith(b"STOPPING=1")
        finally:
            router.stop()
