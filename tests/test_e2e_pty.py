"""
The forkpty router end to end: C{twistd txrouter-pty} on a unix socket,
driven by a plain socket client (raw mode) and by uWSGI 2.0.21's own
client, C{uwsgi --plugin pty --pty-uconnect} (uwsgi mode), which the test
runs on a pseudo-terminal of its own, as a user's terminal would.  Every
child shell the router spawns must be reaped (its C{/proc} entry gone, not
a zombie) whichever way its session ends.
"""

import fcntl
import os
import pathlib
import pty
import pwd
import re
import signal
import socket
import struct
import subprocess
import termios
import time

import pytest

from tests.realpeers import TWISTD_COMMAND, Process, wait_for_unix, wait_until
from tests.test_e2e_raw import withProject

pytestmark = pytest.mark.e2e

#: The uWSGI client of --forkptyurouter (uwsgi-framed input).
UWSGI_CLIENT = ["uwsgi", "--plugin", "pty", "--pty-uconnect"]


def txrouter_pty(tmp_path, *args, allowRoot=True) -> Process:
    """
    C{twistd -n txrouter-pty --bind unix:SOCKET ARGS} (the tests run as
    root: with C{--allow-root} unless told not to); returns once the socket
    accepts, its path in the process's C{socket}.
    """
    path = str(pathlib.Path(tmp_path) / "pty.sock")
    process = Process(
        [*TWISTD_COMMAND, "-n", "--pidfile=", "txrouter-pty", "--bind", f"unix:{path}:mode=600",
         *(["--allow-root"] if allowRoot else []), *args],
        pathlib.Path(tmp_path) / "txrouter-pty.log", env=withProject(),
    )
    process.socket = path
    try:
        wait_for_unix(path, 20, process=process)
    except BaseException:
        process.stop()
        raise
    return process


def reaped(pid: int) -> bool:
    """
    Whether C{pid} is gone for good: no process, not even a zombie.
    """
    return not os.path.exists(f"/proc/{pid}")


def terminals(router: Process) -> int:
    """
    How many pseudo-terminal masters the router holds.
    """
    return sum(1 for target in router.open_files() if target in ("/dev/ptmx", "/dev/pts/ptmx"))


class Reader:
    """
    What came from a socket or a terminal's master so far, read with a
    deadline.
    """

    def __init__(self, read) -> None:
        self.read = read
        self.text = ""

    def until(self, pattern: str, what: str, timeout: float = 15.0) -> "re.Match":
        """
        Read until C{pattern} (a regular expression) is in what was read
        since the last match; the text is then kept from the match on.
        """
        deadline = time.monotonic() + timeout
        while True:
            found = re.search(pattern, self.text)
            if found:
                self.text = self.text[found.end():]
                return found
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{what}: not read after {timeout} s; read {self.text[-2000:]!r}")
            chunk = self.read(left)
            if chunk is None:
                raise AssertionError(f"{what}: the stream ended; read {self.text[-2000:]!r}")
            self.text += chunk.decode(errors="replace")


def socketReader(sock) -> Reader:
    def read(timeout):
        sock.settimeout(timeout)
        try:
            data = sock.recv(65536)
        except socket.timeout:
            return b""
        return data or None

    return Reader(read)


def masterReader(fd) -> Reader:
    import select

    def read(timeout):
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            return b""
        try:
            return os.read(fd, 65536) or None
        except OSError:  # EIO: the client is gone
            return None

    return Reader(read)


def shellPid(write, reader: Reader) -> int:
    """
    Ask the shell its PID.
    """
    write(b"echo PID=$(( $$ + 0 ))\n")
    return int(reader.until(r"PID=(\d+)", "the shell's PID").group(1))


def setWindow(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


class UwsgiClient:
    """
    C{uwsgi --pty-uconnect SOCKET} on a pseudo-terminal of the test's:
    C{write} types, C{reader} reads the screen.
    """

    def __init__(self, socketPath: str, rows: int, cols: int) -> None:
        self.pid, self.master = pty.fork()
        if self.pid == 0:  # the child: its terminal is the slave side
            try:
                os.execvp(UWSGI_CLIENT[0], [*UWSGI_CLIENT, socketPath])
            finally:
                os._exit(127)
        setWindow(self.master, rows, cols)
        self.reader = masterReader(self.master)

    def write(self, data: bytes) -> None:
        os.write(self.master, data)

    def kill(self) -> None:
        if self.pid is None:
            return
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        self.pid = None

    def close(self) -> None:
        self.kill()
        os.close(self.master)


@pytest.fixture
def uwsgiClients():
    clients = []
    yield lambda *args: clients.append(UwsgiClient(*args)) or clients[-1]
    for client in clients:
        client.close()


def test_raw_mode_plain_socket_client(tmp_path):
    """
    A plain unix-socket client's bytes go to the shell, its output comes
    back; the window is --rows x --cols; the shell exiting closes the
    connection and leaves no process.
    """
    with txrouter_pty(tmp_path, "--rows", "30", "--cols", "100") as router, \
            socket.socket(socket.AF_UNIX) as sock:
        sock.connect(router.socket)
        reader = socketReader(sock)
        sock.sendall(b"echo hello-$((6*7))\n")
        reader.until(r"hello-42", "the echo's output")
        pid = shellPid(sock.sendall, reader)
        sock.sendall(b"stty size; exit\n")
        reader.until(r"30 100", "the window size")
        wait_until(lambda: reader.read(1) is None, "the connection closed after exit", 15, router)
        wait_until(lambda: reaped(pid), f"shell {pid} reaped", 15, router)
        wait_until(lambda: terminals(router) == 0, "the terminal closed", 15, router)


def test_uwsgi_client_echo_and_resize(tmp_path, uwsgiClients):
    """
    uWSGI's own client, on a terminal: a command typed runs and its output
    shows; the window size of the client's terminal, at connect and after
    a resize, is the shell's.
    """
    with txrouter_pty(tmp_path, "--uwsgi-framed") as router:
        client = uwsgiClients(router.socket, 33, 111)
        client.reader.until(r"\[pty\] connected", "uwsgi's connected line")
        client.write(b"stty size\n")
        client.reader.until(r"\b33 111\b", "the client's window size at connect")
        client.write(b"echo hello-$((6*7))\n")
        client.reader.until(r"hello-42", "the echo's output")
        setWindow(client.master, 50, 132)
        client.write(b"stty size\n")
        client.reader.until(r"\b50 132\b", "the window size after a resize")


def test_killed_client_leaves_no_process(tmp_path, uwsgiClients):
    """
    The client is killed: its shell is hung up and reaped, the router keeps
    no terminal open.
    """
    with txrouter_pty(tmp_path, "--uwsgi-framed") as router:
        client = uwsgiClients(router.socket, 24, 80)
        client.reader.until(r"\[pty\] connected", "uwsgi's connected line")
        pid = shellPid(client.write, client.reader)
        assert not reaped(pid)
        client.kill()
        wait_until(lambda: reaped(pid), f"shell {pid} reaped", 15, router)
        wait_until(lambda: terminals(router) == 0, "the terminal closed", 15, router)
        assert "pty_hangup" in router.log()


def test_router_stopping_kills_the_children(tmp_path):
    """
    SIGTERM to the router: a child that ignores SIGHUP (and does not read
    its terminal, whose closing would end it too) is killed after the
    grace, and the router exits with no child left.
    """
    router = txrouter_pty(tmp_path)
    with router, socket.socket(socket.AF_UNIX) as sock:
        sock.connect(router.socket)
        reader = socketReader(sock)
        # The PID is told once the interactive shell is replaced: a hang-up
        # coming while it still runs would end it (it fails to give the
        # terminal back when it execs).
        sock.sendall(b"trap '' HUP; exec sh -c 'echo PID=$$; exec sleep 600'\n")
        pid = int(reader.until(r"PID=(\d+)", "the shell's PID").group(1))
        router.signal(signal.SIGTERM)
        router.wait(15)
        wait_until(lambda: reaped(pid), f"child {pid} reaped", 5)
        log = router.log()
        assert "router_stopping" in log
        assert f"pty_kill: pid {pid}" in log


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
def test_uid_runs_the_commands_as_that_user(tmp_path):
    """
    As root, --uid is enough (no --allow-root): the command runs as that
    user.
    """
    nobody = pwd.getpwnam("nobody").pw_uid
    with txrouter_pty(tmp_path, "--uid", "nobody", "--command", "id -u", allowRoot=False) as router, \
            socket.socket(socket.AF_UNIX) as sock:
        sock.connect(router.socket)
        reader = socketReader(sock)
        found = reader.until(r"(\d+)\r\n", "id's output")
        assert int(found.group(1)) == nobody


def test_root_refused_without_allow_root_or_uid(tmp_path):
    """
    Run as root with neither --uid nor --allow-root, twistd stops with a
    usage error saying why.
    """
    if os.geteuid() != 0:
        pytest.skip("the check is about running as root")
    result = subprocess.run(
        [*TWISTD_COMMAND, "-n", "--pidfile=", "txrouter-pty", "--bind",
         f"unix:{tmp_path}/pty.sock"],
        capture_output=True, text=True, timeout=60, env=withProject(),
    )
    assert result.returncode != 0
    assert "--allow-root" in result.stdout + result.stderr
    assert not os.path.exists(f"{tmp_path}/pty.sock")
