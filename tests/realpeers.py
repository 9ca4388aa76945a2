"""
Real processes for end-to-end tests and benchmarks: uWSGI workers, uWSGI's
own HTTP router and FastRouter, txrouter-http and txrouter-fast under twistd,
nginx (uwsgi_pass) in front of any of them, curl.

Everything listens on 127.0.0.1 or unix sockets, is waited for with a bound,
and is stopped by its PID: SIGTERM, a bounded wait, then SIGKILL.  Each
command runs in a session of its own, so a Ctrl-C at the terminal reaches
pytest and not the peers, and so that the descendants a process leaves
behind (uWSGI's workers) can be told apart from reused PIDs.  A process
still running when the interpreter exits is stopped then.

Used from a test::

    def test_through_uwsgi(tmp_path):
        sock, port = str(tmp_path / "app.sock"), free_port()
        with uwsgi_worker(tmp_path, sock), uwsgi_http_router(tmp_path, port, sock):
            result = curl(f"http://127.0.0.1:{port}/")
        assert json.loads(result.stdout)["UWSGI_ROUTER"] == "http"

A FastRouter chain (nginx speaks uwsgi to the router, which picks a worker
by the Host header)::

    def test_through_fastrouter(tmp_path):
        router_port, web_port = free_port(), free_port()
        with uwsgi_worker(tmp_path, str(tmp_path / "app1.local.sock")), \
                uwsgi_fastrouter(tmp_path, router_port,
                                 ["--fastrouter-use-pattern", f"{tmp_path}/%s.sock"]), \
                nginx(tmp_path, web_port, f"127.0.0.1:{router_port}"):
            result = curl("-H", "Host: app1.local", f"http://127.0.0.1:{web_port}/")

The camelCase names at the end are the spellings older tests use.
"""

import atexit
import grp
import os
import pathlib
import pwd
import signal
import socket
import subprocess
import sys
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
ECHO_APP = ROOT / "tests" / "apps" / "echo.py"
TWISTD = pathlib.Path(sys.executable).parent / "twistd"
TWISTD_COMMAND = (
    [str(TWISTD)] if TWISTD.exists()
    else [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
)
TXROUTER_COMMAND = [*TWISTD_COMMAND, "-n", "--pidfile=", "txrouter-http"]
TXROUTER_FAST_COMMAND = [*TWISTD_COMMAND, "-n", "--pidfile=", "txrouter-fast"]
NGINX_UWSGI_PARAMS = pathlib.Path("/etc/nginx/uwsgi_params")

_running = set()


def free_port() -> int:
    """
    A TCP port on 127.0.0.1 that nothing listens on right now.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class WaitTimedOut(AssertionError, TimeoutError):
    """
    A condition waited for did not come within its deadline.  An
    C{AssertionError}, so that pytest reports it as a failed check, and a
    C{TimeoutError}, as it always was.
    """


class ProcessExited(AssertionError, RuntimeError):
    """
    The process a wait depended on exited before the condition came.
    """


def wait_until(check, what: str, timeout: float = 15.0, process=None) -> None:
    """
    Call C{check} every 50 ms until it returns true; C{OSError} counts as
    not yet.  The one way to wait for something in these tests: never a
    fixed sleep.

    @param what: what is waited for, in words, for the failure message.
    @param process: a L{Process} whose exit ends the wait at once, and
        whose log ends the failure message.
    @raise WaitTimedOut: C{check} was still false after C{timeout} seconds.
    @raise ProcessExited: C{process} exited meanwhile.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except OSError:
            pass
        if process is not None and not process.alive():
            raise ProcessExited(
                f"waiting for {what}: the process exited with {process.popen.returncode}:\n"
                + process.log()[-3000:]
            )
        if time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    tail = "\n" + process.log()[-3000:] if process is not None else ""
    raise WaitTimedOut(f"{what}: not there after {timeout} s{tail}")


def wait_for_log(process, text: str, count: int = 1, timeout: float = 15.0) -> None:
    """
    Wait until C{text} appears C{count} times in the process's log.
    """
    wait_until(lambda: process.log().count(text) >= count, repr(text), timeout, process)


def tcp_accepts(port: int, host: str = "127.0.0.1") -> bool:
    with socket.create_connection((host, port), timeout=1):
        return True


def unix_accepts(path: str) -> bool:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(1)
        s.connect("\0" + path[1:] if path.startswith("@") else path)
        return True


def tcp_refuses(port: int, host: str = "127.0.0.1") -> bool:
    """
    Whether connecting to C{host}:C{port} is refused: nothing listens there
    (any other failure, a timeout say, raises).
    """
    try:
        socket.create_connection((host, port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def tcp_backlog(port: int) -> int:
    """
    How many connections wait, made by the kernel and not yet accepted, on
    the TCP socket listening on C{port} (C{/proc/net/tcp}).
    """
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in pathlib.Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rpartition(":")[2], 16) == port and fields[3] == "0A":
                return int(fields[4].partition(":")[2], 16)
    raise LookupError(f"nothing listens on TCP port {port}")


def udp_queue(port: int) -> "tuple[int, int]":
    """
    The UDP socket bound to C{port} on this host, as the kernel sees it
    (C{/proc/net/udp}): the bytes received and not yet read by its owner,
    and the datagrams dropped because that queue was full.
    """
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        for line in pathlib.Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rpartition(":")[2], 16) == port:
                return int(fields[4].partition(":")[2], 16), int(fields[-1])
    raise LookupError(f"no UDP socket on port {port}")


def wait_for_tcp(port: int, timeout: float = 15.0, host: str = "127.0.0.1", process=None) -> None:
    """
    Wait until something accepts connections on C{host}:C{port}.
    """
    wait_until(lambda: tcp_accepts(port, host), f"{host}:{port}", timeout, process)


def wait_for_unix(path: str, timeout: float = 15.0, process=None) -> None:
    """
    Wait until something accepts connections on the unix socket C{path}
    (C{@name} for the abstract namespace).
    """
    wait_until(lambda: unix_accepts(path), path, timeout, process)


def wait_for_address(address: str, timeout: float = 15.0, process=None) -> None:
    """
    Wait for an address spelled as uWSGI spells it: C{host:port}, C{:port},
    a socket path or C{@abstract}.
    """
    host, sep, port = address.rpartition(":")
    if sep and port.isdigit() and not address.startswith(("/", "@", ".")):
        wait_for_tcp(int(port), timeout, host or "127.0.0.1", process)
    else:
        wait_for_unix(address, timeout, process)


def _status_kib(pid: int, field: str) -> int:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(f"no {field} for {pid}")


def rss_kib(pid: int) -> int:
    """
    The resident memory of C{pid} now (VmRSS), in KiB.
    """
    return _status_kib(pid, "VmRSS")


def peak_rss_kib(pid: int) -> int:
    """
    The highest resident memory C{pid} has had since it started (VmHWM), in
    KiB: read it after the load, no sampling needed.
    """
    return _status_kib(pid, "VmHWM")


class RSSSampler:
    """
    Samples VmRSS of a PID every C{interval} seconds in a thread and keeps
    the peak, for the peak over one stretch of a process's life (VmHWM is
    the peak over all of it)::

        with RSSSampler(router.pid) as sampler:
            curl(...)
        sampler.peak_kib - sampler.start_kib
    """

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self.start_kib = self.peak_kib = rss_kib(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.peak_kib = max(self.peak_kib, rss_kib(self.pid))
            except (OSError, LookupError):
                return

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)
        try:
            self.peak_kib = max(self.peak_kib, rss_kib(self.pid))
        except (OSError, LookupError):
            pass


def pid_exists(pid: int) -> bool:
    """
    Whether C{pid} is a live process (a zombie counts as gone).
    """
    try:
        state = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _session_members(sid: int) -> list:
    members = []
    for entry in pathlib.Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != sid:
            try:
                if os.getsid(int(entry.name)) == sid:
                    members.append(int(entry.name))
            except OSError:
                pass
    return members


class Process:
    """
    A command run in its own session with stdout and stderr in C{log}.

    C{stop} and C{kill} signal the PID alone; whatever the process started
    and left behind in its session (workers orphaned by a SIGKILLed uWSGI
    master) is then SIGKILLed by PID too.
    """

    def __init__(self, args, log: pathlib.Path, cwd=ROOT, env=None) -> None:
        self.args = list(map(str, args))
        self.logPath = pathlib.Path(log)
        self._logFile = self.logPath.open("w")
        self.popen = subprocess.Popen(
            self.args, stdout=self._logFile, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, cwd=cwd, env=env, start_new_session=True,
        )
        self.pid = self.popen.pid
        _running.add(self)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, signum) -> None:
        if self.alive():
            os.kill(self.pid, signum)

    def wait(self, timeout: float) -> int:
        return self.popen.wait(timeout)

    def stop(self, timeout: float = 10.0) -> int:
        """
        SIGTERM to the PID, then SIGKILL if it is still there after
        C{timeout} seconds.  Returns the exit status.

        A uWSGI 2.0.21 master stopped a moment after it started sometimes
        waits for ever for a worker that missed its stop request (seen in
        a quarter of the stops within a second of start-up), so every
        2.5 s the process's children are told to stop directly (SIGINT);
        the master then ends as usual.
        """
        if self.alive():
            os.kill(self.pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while True:
                left = deadline - time.monotonic()
                try:
                    self.popen.wait(max(min(2.5, left), 0))
                    break
                except subprocess.TimeoutExpired:
                    if left <= 2.5:
                        break
                for child in self.children():
                    try:
                        os.kill(child, signal.SIGINT)
                    except ProcessLookupError:
                        pass
        return self.kill()

    def kill(self) -> int:
        """
        SIGKILL to the PID (if still running) and to anything left in its
        session.  Returns the exit status.
        """
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
        status = self.popen.wait(10)
        self._reap_session()
        self._logFile.close()
        _running.discard(self)
        return status

    def _reap_session(self) -> None:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            left = [pid for pid in _session_members(self.pid) if pid_exists(pid)]
            if not left:
                return
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.05)

    def children(self) -> list:
        """
        The PIDs of the process's children (uWSGI's workers, for a master).
        """
        found = []
        for task in pathlib.Path(f"/proc/{self.pid}/task").iterdir():
            try:
                found += [int(pid) for pid in (task / "children").read_text().split()]
            except OSError:
                pass
        return found

    def log(self) -> str:
        if not self._logFile.closed:
            self._logFile.flush()
        return self.logPath.read_text(errors="replace")

    def rss_kib(self) -> int:
        return rss_kib(self.pid)

    def peak_rss_kib(self) -> int:
        return peak_rss_kib(self.pid)

    def open_files(self) -> list:
        """
        What the process's file descriptors point to.
        """
        targets = []
        for fd in pathlib.Path(f"/proc/{self.pid}/fd").iterdir():
            try:
                targets.append(os.readlink(fd))
            except OSError:
                pass
        return targets

    peakRSSKiB = peak_rss_kib
    openFiles = open_files

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


@atexit.register
def _stop_leftovers() -> None:
    for process in list(_running):
        process.stop(timeout=5)


def _nodes(to) -> list:
    return [to] if isinstance(to, (str, os.PathLike)) else list(to)


def uwsgi_worker(tmp_path, socket: str, processes: int = 2, extra_args=(), name: str = "worker",
                 app=ECHO_APP, timeout: float = 20.0) -> Process:
    """
    Real uWSGI 2.0 workers (master and C{processes} workers) serving C{app}
    over the uwsgi protocol on C{socket} (a path, C{@abstract} or
    C{127.0.0.1:PORT}), with uWSGI's default 4 KiB buffer and its request
    log in C{tmp_path/name.log}.  Returns once the socket accepts.
    """
    process = Process(
        ["uwsgi", "--plugin", "python3", "--master", "--die-on-term",
         "--socket", socket, "--wsgi-file", app, "--processes", processes,
         "--listen", "128", *extra_args],
        pathlib.Path(tmp_path) / f"{name}.log",
    )
    _ready(process, lambda: wait_for_address(str(socket), timeout, process))
    return process


def uwsgi_http_router(tmp_path, port: int, to, extra_args=(), timeout: float = 20.0) -> Process:
    """
    uWSGI's own HTTP router on 127.0.0.1:C{port} in front of C{to} (one
    address or several), the reference txrouter-http is compared with.
    Returns once the port accepts.
    """
    args = ["uwsgi", "--plugin", "http", "--master", "--die-on-term",
            "--http", f"127.0.0.1:{port}"]
    for node in _nodes(to):
        args += ["--http-to", node]
    process = Process([*args, *extra_args], pathlib.Path(tmp_path) / f"uwsgi-router-{port}.log")
    _ready(process, lambda: wait_for_tcp(port, timeout, process=process))
    return process


def txrouter_http(tmp_path, port: int, to, extra_args=(), command=None,
                  timeout: float = 20.0) -> Process:
    """
    C{twistd -n --pidfile= txrouter-http} on 127.0.0.1:C{port} in front of
    C{to} (one address or several), run from the project root with it on
    PYTHONPATH.  C{command} replaces everything before C{--bind}, to run
    another router with the same command line.  Returns once the port
    accepts.
    """
    args = [*(command or TXROUTER_COMMAND), "--bind", f"tcp:{port}:interface=127.0.0.1"]
    for node in _nodes(to):
        args += ["--to", node]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    process = Process([*args, *extra_args], pathlib.Path(tmp_path) / f"txrouter-{port}.log",
                      env=env)
    _ready(process, lambda: wait_for_tcp(port, timeout, process=process))
    return process


def txrouter_fast(tmp_path, bind, extra_args=(), command=None, wrapper=(),
                  timeout: float = 20.0) -> Process:
    """
    C{twistd -n --pidfile= txrouter-fast --bind BIND EXTRA_ARGS}, the
    FastRouter (uwsgi in, uwsgi out), run from the project root with it on
    PYTHONPATH.  C{bind} is a Twisted endpoint string (C{tcp:3017:interface=
    127.0.0.1}, C{unix:/path}) or a bare port number, which means
    C{tcp:PORT:interface=127.0.0.1}; the nodes and the mapper (C{--to},
    C{--use-pattern}, ...) go in C{extra_args}.  C{command} replaces
    everything before C{--bind}; C{wrapper} is put in front of the whole
    command (e.g. C{["taskset", "-c", "0"]}, which execs, so the PID stays
    the router's).  The process's C{address} is where it listens, spelled
    as uWSGI would (C{127.0.0.1:PORT} or a path), ready for L{nginx}.
    Returns once that address accepts.
    """
    if isinstance(bind, int):
        bind = f"tcp:{bind}:interface=127.0.0.1"
    address = endpoint_address(bind)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    process = Process(
        [*wrapper, *(command or TXROUTER_FAST_COMMAND), "--bind", bind, *extra_args],
        pathlib.Path(tmp_path) / f"txrouter-fast-{_log_tag(address)}.log", env=env,
    )
    process.address = address
    _ready(process, lambda: wait_for_address(address, timeout, process))
    return process


def uwsgi_fastrouter(tmp_path, port, extra_args=(), to=(), wrapper=(),
                     timeout: float = 20.0) -> Process:
    """
    uWSGI's own FastRouter (C{uwsgi --plugin fastrouter --master
    --die-on-term --fastrouter 127.0.0.1:PORT}), the reference txrouter-fast
    is compared with, with C{--fastrouter-to} for each node of C{to} (one
    address or several; none by default: give a mapper such as
    C{--fastrouter-use-pattern} in C{extra_args} instead).  C{port} may
    also be a unix socket path to listen on.  C{wrapper} is put in front of
    the command, as for L{txrouter_fast}.  The process's C{address} is
    C{127.0.0.1:PORT} (or the path).  Returns once that address accepts.
    """
    address = f"127.0.0.1:{port}" if isinstance(port, int) else str(port)
    args = [*wrapper, "uwsgi", "--plugin", "fastrouter", "--master", "--die-on-term",
            "--fastrouter", address]
    for node in _nodes(to):
        args += ["--fastrouter-to", node]
    process = Process([*args, *extra_args],
                      pathlib.Path(tmp_path) / f"uwsgi-fastrouter-{_log_tag(address)}.log")
    process.address = address
    _ready(process, lambda: wait_for_address(address, timeout, process))
    return process


def nginx(tmp_path, port: int, upstream, extra_locations: str = "", uwsgi_buffering: bool = True,
          access_log: bool = True, extra_http: str = "", wrapper=(),
          timeout: float = 20.0, listen_options: str = "") -> Process:
    """
    nginx on 127.0.0.1:C{port} passing every request with C{uwsgi_pass} to
    C{upstream}: C{host:port}, C{unix:/path}, a bare C{/path} or a port
    number (on 127.0.0.1), with Debian's C{/etc/nginx/uwsgi_params} (so
    C{HTTP_HOST} is nginx's C{$host}: lower-cased, without the port).

    Request bodies of any size are streamed to the upstream as they arrive
    (C{client_max_body_size 0}, C{uwsgi_request_buffering off});
    responses are buffered by nginx as by default unless
    C{uwsgi_buffering} is false.  C{extra_locations} is nginx text put in
    the server block before the catch-all C{location /} (more C{location}
    blocks, each needing its own C{include}/C{uwsgi_pass});
    C{extra_http} goes in the http block.  One worker process, keep-alive
    clients may send up to a million requests per connection.

    Everything nginx writes lives in C{tmp_path/nginx-PORT/}: the
    configuration C{nginx.conf}, the pid file, the temporary-file
    directories and C{access.log} (C{access_log=False} turns it off);
    its error log goes to stderr, that is to the process's log
    C{tmp_path/nginx-PORT.log}.  Runs as the current user: as root, the
    C{user} directive names root so that the worker can reach sockets and
    files under C{tmp_path}; otherwise it is left out, as nginx ignores it.
    Started as C{nginx -e stderr -p DIR -c DIR/nginx.conf -g 'daemon off;'}
    (master and worker, stopped by the master's PID: SIGTERM is nginx's
    fast shutdown).  C{wrapper} is put in front of the command, as for
    L{txrouter_fast}; C{listen_options} follow the C{listen} address
    (C{http2}: HTTP/2 with prior knowledge).  Returns once the port accepts.
    """
    if not NGINX_UWSGI_PARAMS.exists():
        raise FileNotFoundError(f"{NGINX_UWSGI_PARAMS} is missing: run scripts/setup (nginx)")
    if isinstance(upstream, int):
        upstream = f"127.0.0.1:{upstream}"
    upstream = str(upstream)
    if upstream.startswith("/"):
        upstream = "unix:" + upstream
    home = pathlib.Path(tmp_path).resolve() / f"nginx-{port}"
    home.mkdir(parents=True, exist_ok=True)
    user = ""
    if os.geteuid() == 0:
        user = (f"user {pwd.getpwuid(os.geteuid()).pw_name}"
                f" {grp.getgrgid(os.getegid()).gr_name};")
    temp_paths = "\n".join(
        f"    {kind}_temp_path {home / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf = home / "nginx.conf"
    conf.write_text(f"""\
# nginx in front of {upstream}, written by tests/realpeers.py
{user}
worker_processes 1;
pid {home / "nginx.pid"};
error_log stderr notice;
events {{
    worker_connections 4096;
}}
http {{
    access_log {home / "access.log" if access_log else "off"};
{temp_paths}
    keepalive_requests 1000000;
    client_max_body_size 0;
    uwsgi_request_buffering off;
    uwsgi_buffering {"on" if uwsgi_buffering else "off"};
{extra_http}
    server {{
        listen 127.0.0.1:{port}{" " + listen_options if listen_options else ""};
        server_name _;
{extra_locations}
        location / {{
            include {NGINX_UWSGI_PARAMS};
            uwsgi_pass {upstream};
        }}
    }}
}}
""")
    process = Process(
        [*wrapper, "nginx", "-e", "stderr", "-p", home, "-c", conf, "-g", "daemon off;"],
        pathlib.Path(tmp_path) / f"nginx-{port}.log",
    )
    process.address, process.port, process.home, process.conf = \
        f"127.0.0.1:{port}", port, home, conf
    _ready(process, lambda: wait_for_tcp(port, timeout, process=process))
    return process


def endpoint_address(endpoint: str) -> str:
    """
    Where a Twisted server endpoint string listens, spelled as uWSGI spells
    addresses (for L{wait_for_address}): C{tcp:8080:interface=127.0.0.1} ->
    C{127.0.0.1:8080} (no interface: C{127.0.0.1} too), C{unix:/path} or
    C{unix:address=/path} -> C{/path}.
    """
    kind, _, rest = endpoint.partition(":")
    positional, named = [], {}
    for field in rest.split(":") if rest else []:
        key, eq, value = field.partition("=")
        if eq:
            named[key] = value
        else:
            positional.append(field)
    if kind in ("tcp", "tcp6"):
        port = named.get("port") or positional[0]
        return f"{named.get('interface', '127.0.0.1')}:{port}"
    if kind == "unix":
        return named.get("address") or positional[0]
    raise ValueError(f"cannot tell where {endpoint!r} listens")


def _log_tag(address: str) -> str:
    return address.rpartition(":")[2] if not address.startswith(("/", "@")) \
        else pathlib.Path(address).name


def _ready(process: Process, wait) -> None:
    try:
        wait()
    except BaseException:
        process.stop()
        raise


def curl(*args, timeout: float = 30.0) -> subprocess.CompletedProcess:
    """
    C{curl -sS --max-time timeout ARGS}; stdout and stderr as bytes.
    """
    return subprocess.run(
        ["curl", "-sS", "--max-time", str(timeout), *map(str, args)],
        capture_output=True, timeout=timeout + 5,
    )


def raw_exchange(port: int, data: bytes, timeout: float = 10.0, shutdownWrite=False) -> bytes:
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


def uwsgiWorker(tmp, address, processes=2, extra=(), name="worker"):
    return uwsgi_worker(tmp, address, processes, extra, name)


def uwsgiHTTPRouter(tmp, port, to, extra=()):
    return uwsgi_http_router(tmp, port, to, extra)


def txrouterHTTP(tmp, port, to=(), extra=()):
    return txrouter_http(tmp, port, to, extra)


freePort = free_port
waitUntil = wait_until
waitForLog = wait_for_log
tcpAccepts = tcp_accepts
tcpRefuses = tcp_refuses
unixAccepts = unix_accepts
rawExchange = raw_exchange
