"""
Real processes for end-to-end tests: uWSGI workers and routers, txrouter
under twistd, curl.  Everything listens on 127.0.0.1 or unix sockets, runs in
its own session, is waited for with a bound, and is stopped by its PID.
"""

import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
ECHO_APP = ROOT / "tests" / "apps" / "echo.py"
TWISTD = pathlib.Path(sys.executable).parent / "twistd"


def freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def waitUntil(check, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{what} not ready after {timeout} s")


def tcpAccepts(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1):
        return True


def unixAccepts(path: str) -> bool:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(1)
        s.connect(path)
        return True


class Process:
    """
    A command run in its own session with its output in a log file.
    """

    def __init__(self, args, log: pathlib.Path, cwd=ROOT, env=None) -> None:
        self.args = list(map(str, args))
        self.logPath = log
        self._logFile = log.open("w")
        self.popen = subprocess.Popen(
            self.args, stdout=self._logFile, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, cwd=cwd, env=env, start_new_session=True,
        )
        self.pid = self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, signum) -> None:
        if self.alive():
            os.kill(self.pid, signum)

    def wait(self, timeout: float) -> int:
        return self.popen.wait(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """
        SIGTERM, then SIGKILL after C{timeout} seconds; the whole session.
        """
        if self.alive():
            try:
                os.killpg(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.pid, signal.SIGKILL)
                self.popen.wait(5)
        self._logFile.close()

    def log(self) -> str:
        self._logFile.flush()
        return self.logPath.read_text(errors="replace")

    def peakRSSKiB(self) -> int:
        """
        The peak resident memory of the process (VmHWM), in KiB.
        """
        for line in pathlib.Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        raise LookupError("no VmHWM")

    def openFiles(self) -> list:
        """
        What the process's file descriptors point to.
        """
        fds = pathlib.Path(f"/proc/{self.pid}/fd")
        targets = []
        for fd in fds.iterdir():
            try:
                targets.append(os.readlink(fd))
            except OSError:
                pass
        return targets

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def uwsgiWorker(tmp: pathlib.Path, address: str, processes: int = 2, extra=(), name="worker"):
    """
    Real uWSGI 2.0 workers running the echo app on C{address} (a unix
    socket path or 127.0.0.1:PORT).
    """
    process = Process(
        ["uwsgi", "--plugin", "python3", "--master", "--die-on-term",
         "--socket", address, "--wsgi-file", ECHO_APP, "--processes", processes,
         "--listen", "128", *extra],
        tmp / f"{name}.log",
    )
    if address.startswith("/"):
        waitUntil(lambda: unixAccepts(address), f"uWSGI worker on {address}")
    else:
        waitUntil(lambda: tcpAccepts(int(address.rsplit(":", 1)[1])), f"uWSGI worker on {address}")
    return process


def uwsgiHTTPRouter(tmp: pathlib.Path, port: int, to: str, extra=()):
    """
    uWSGI's own HTTP router, for side-by-side comparisons.
    """
    process = Process(
        ["uwsgi", "--plugin", "http", "--master", "--die-on-term",
         "--http", f"127.0.0.1:{port}", "--http-to", to, *extra],
        tmp / f"uwsgi-router-{port}.log",
    )
    waitUntil(lambda: tcpAccepts(port), "uWSGI HTTP router")
    return process


def txrouterHTTP(tmp: pathlib.Path, port: int, to=(), extra=()):
    """
    C{twistd -n txrouter-http} on 127.0.0.1:C{port}.
    """
    args = [TWISTD, "-n", "--pidfile=", "txrouter-http",
            "--bind", f"tcp:{port}:interface=127.0.0.1"]
    for node in to:
        args += ["--to", node]
    process = Process([*args, *extra], tmp / f"txrouter-{port}.log")
    waitUntil(lambda: tcpAccepts(port), f"txrouter-http on {port}")
    return process


def curl(*args, timeout: float = 30.0) -> subprocess.CompletedProcess:
    """
    curl -sS with a bounded run time; stdout as bytes.
    """
    return subprocess.run(
        ["curl", "-sS", "--max-time", str(timeout), *map(str, args)],
        capture_output=True, timeout=timeout + 5,
    )


def rawExchange(port: int, data: bytes, timeout: float = 10.0, shutdownWrite=False) -> bytes:
    """
    Send bytes on a fresh TCP connection and read until the server closes.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        if shutdownWrite:
            s.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)
