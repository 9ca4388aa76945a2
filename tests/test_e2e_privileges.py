"""
Privileges and socket files on a real twistd: a router started as root
binds a port below 1024 and a unix socket, then runs as nobody/nogroup with
no supplementary groups (read in C{/proc/PID/status}) and still serves; the
socket file has the C{--chmod-socket} mode and C{--chown-socket} owner, a
stale one is replaced, a live one is not, and the file goes on a clean stop.
"""

import grp
import os
import pathlib
import pwd
import shutil
import socket
import stat
import subprocess
import tempfile

import pytest

from tests.realpeers import (
    ROOT,
    TWISTD_COMMAND,
    Process,
    curl,
    free_port,
    uwsgi_worker,
    wait_for_log,
    wait_for_tcp,
    wait_for_unix,
    wait_until,
)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root (CI runs as root)"),
]

NOBODY = pwd.getpwnam("nobody").pw_uid
NOGROUP = grp.getgrnam("nogroup").gr_gid


def privilegedPort() -> int:
    """
    A free TCP port below 1024 on 127.0.0.1.
    """
    for port in range(900, 1000):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below 1024")


def status(pid: int) -> dict:
    with open(f"/proc/{pid}/status") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def twistd(tmp_path, *arguments, name="router", wrapper=()) -> Process:
    """
    C{twistd -n ARGUMENTS} run by C{wrapper} (which must exec: the PID is
    twistd's).
    """
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return Process([*wrapper, *TWISTD_COMMAND, "-n", "--pidfile=", *arguments],
                   tmp_path / f"{name}.log", env=env)


@pytest.fixture
def socketDirectory():
    """
    A directory of nobody's, as /run/txrouter would be (systemd's
    RuntimeDirectory=): the router may remove its socket file after it
    switched users.  Made in /tmp, as the test's own is root's alone.
    """
    directory = pathlib.Path(tempfile.mkdtemp(prefix="txrouter-run-"))
    os.chown(directory, NOBODY, NOGROUP)
    yield directory
    shutil.rmtree(directory)


@pytest.fixture
def node(tmp_path):
    port = free_port()
    worker = uwsgi_worker(tmp_path, f"127.0.0.1:{port}")
    yield f"127.0.0.1:{port}"
    worker.stop()


def test_root_binds_then_runs_as_nobody(tmp_path, socketDirectory, node):
    port, path = privilegedPort(), socketDirectory / "router.sock"
    router = twistd(
        tmp_path, "txrouter-http", "--bind", f"tcp:{port}:interface=127.0.0.1",
        "--bind", f"unix:{path}", "--to", node, "--uid", "nobody", "--gid", "nogroup",
        "--chmod-socket", "660", "--chown-socket", "nobody:nogroup",
        # Root with supplementary groups, which the router must clear.
        wrapper=["setpriv", "--groups", "4,100", "--"],
    )
    try:
        wait_for_tcp(port, process=router)
        wait_for_unix(str(path), process=router)
        wait_for_log(router, "privileges_dropped")
        credentials = status(router.pid)
        assert credentials["Uid"].split() == [str(NOBODY)] * 4
        assert credentials["Gid"].split() == [str(NOGROUP)] * 4
        assert credentials["Groups"].strip() == ""
        file = os.stat(path)
        assert stat.S_IMODE(file.st_mode) == 0o660
        assert (file.st_uid, file.st_gid) == (NOBODY, NOGROUP)
        for target in ([f"http://127.0.0.1:{port}/"],
                       ["--unix-socket", str(path), "http://router/"]):
            answer = curl("-i", *target)
            assert answer.stdout.startswith(b"HTTP/1.1 200"), answer
        router.stop()
        assert "Server Shut Down." in router.log()
        assert not path.exists(), "the socket file is removed on a clean stop"
        assert "Traceback" not in router.log()
    finally:
        router.stop()


def test_uid_without_root_is_a_usage_error(tmp_path):
    result = subprocess.run(
        ["setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups",
         *TWISTD_COMMAND, "-n", "--pidfile=", "txrouter-fast", "--bind", "unix:@x",
         "--to", "127.0.0.1:1", "--uid", "daemon"],
        capture_output=True, text=True, timeout=60, env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    assert result.returncode != 0
    assert "--uid: switching users needs root" in result.stderr + result.stdout
    assert "Traceback" not in result.stderr + result.stdout


def test_twistd_uid_and_the_routers_uid_are_not_both_given(tmp_path):
    result = subprocess.run(
        [*TWISTD_COMMAND, "-n", "--pidfile=", "--uid", "nobody", "txrouter-raw",
         "--bind", "tcp:1:interface=127.0.0.1", "--to", "127.0.0.1:1", "--uid", "nobody"],
        capture_output=True, text=True, timeout=60, env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    assert result.returncode != 0
    assert "give the router's alone" in result.stderr + result.stdout


def test_a_stale_socket_is_replaced_and_a_live_one_kept(tmp_path, node):
    path = tmp_path / "router.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()
    first = twistd(tmp_path, "txrouter-fast", "--bind", f"unix:{path}", "--to", node,
                   "--chmod-socket", "600", name="first")
    try:
        wait_for_unix(str(path), process=first)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        second = twistd(tmp_path, "txrouter-fast", "--bind", f"unix:{path}", "--to", node,
                        name="second")
        try:
            wait_until(lambda: not second.alive(), "the second router to stop", process=None)
            assert "another process listens on it" in second.log()
        finally:
            second.stop()
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(str(path))
    finally:
        first.stop()
    assert not path.exists()


@pytest.mark.skipif(not os.path.exists("/dev/net/tun"), reason="no /dev/net/tun")
def test_tuntap_opens_its_device_then_runs_as_nobody(tmp_path, socketDirectory):
    """
    The tun device needs root (CAP_NET_ADMIN) to open, not to use: it is
    opened, the peers' and the stats sockets bound, then the router runs as
    nobody (in a network namespace of its own, so that the device is
    private to the test).
    """
    peers, stats = socketDirectory / "tuntap.sock", socketDirectory / "stats.sock"
    router = twistd(
        tmp_path, "txrouter-tuntap", "--tuntap-router", f"txpriv0 {peers} {stats}",
        "--uid", "nobody", "--chmod-socket", "660", wrapper=["unshare", "--net", "--"],
    )
    try:
        wait_for_log(router, "privileges_dropped")
        assert status(router.pid)["Uid"].split() == [str(NOBODY)] * 4
        assert stat.S_IMODE(os.stat(peers).st_mode) == 0o660
        with socket.socket(socket.AF_UNIX) as client:
            client.settimeout(10)
            client.connect(str(stats))
            document = b""
            while chunk := client.recv(65536):
                document += chunk
        assert b'"peers"' in document
        with open(f"/proc/{router.pid}/net/dev") as devices:
            assert "txpriv0" in devices.read()
        router.stop()
        assert not peers.exists() and not stats.exists()
    finally:
        router.stop()


def test_twistds_own_uid_works_too(tmp_path, node):
    """
    twistd's C{-u}/C{-g}, before the plugin name, switch after the same
    privileged phase, so the router's listeners are bound as root too; the
    user's groups are set with initgroups() (nogroup, for nobody).
    """
    port = privilegedPort()
    router = twistd(tmp_path, "-u", "nobody", "-g", "nogroup", "txrouter-http",
                    "--bind", f"tcp:{port}:interface=127.0.0.1", "--to", node)
    try:
        wait_for_tcp(port, process=router)
        wait_until(lambda: status(router.pid)["Uid"].split() == [str(NOBODY)] * 4,
                   "twistd to switch to nobody", process=router)
        answer = curl("-i", f"http://127.0.0.1:{port}/")
        assert answer.stdout.startswith(b"HTTP/1.1 200"), answer
    finally:
        router.stop()
