"""
Every code block of the README, docs/ and examples/ runs as pasted, with
ports and paths moved to the test's own (issue 20: a doc example cannot
rot).

Each block is found in the Markdown (fenced, or indented by four spaces)
and classified by L{classify}: a shell block is run command by command (a
C{twistd} is started from a fresh directory, checked to listen and answer
one request, curl'ed if the doc does, and stopped by its PID), a Python
block is run as a script (its C{test_*} functions called, as pytest
would), a C{.tac} is started with C{twistd -y} like a router, and a file's
content is written where the next block reads it.  What is not for
running, another program's configuration, an output sample, uWSGI's own
command line shown for comparison, is classified as such in L{NOT_RUN},
with the reason; a block that fits no class fails L{test_every_block_is_classified}.
The examples' C{.tac} files are started as they are (L{test_example_tac_runs});
C{examples/hello.py} is the application of the README's C{./scripts/demo},
which is run.

How a block is moved to the test's places (L{Places}): every port number
written after a colon (C{tcp:8080}, C{127.0.0.1:3031}, C{:8443}) becomes a
free port, the same one wherever the block repeats it; an absolute path
under C{/run}, C{/etc}, C{/tmp}, C{/var} or C{/path} moves under the
block's directory (its parent directories created, as the docs assume
them); C{10.0.0.N} addresses become C{127.0.0.1}; certificate and key
files named in a command (C{site.crt}) are made, self-signed.
"""

import os
import pathlib
import re
import shlex
import socket
import subprocess
import sys

import pytest

from tests.certs import selfSigned
from tests.realpeers import ROOT, TWISTD_COMMAND, Process, free_port, wait_until

DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md"),
               *(ROOT / "docs" / "forwarders").glob("*.md")])
EXAMPLES = sorted((ROOT / "examples").glob("*.tac"))

#: Blocks that are not for running, by page and first line, with why.
NOT_RUN = {
    ("README.md", "./scripts/test"): "the test suite itself",
    ("docs/design.md", "twisted/plugins/txrouter_plugins.py"): "a layout of the source tree",
    ("docs/fastrouter.md", "upstream fastrouter {"): "nginx's configuration",
    ("docs/operations.md", "scrape_configs:"): "Prometheus' configuration",
    ("docs/operations.md", '{"time": "2025-12-04T18:40:02Z"'): "an access log line",
    ("docs/operations.md", '{"time": "2025-12-04T18:40:02.113Z"'): "a log line",
    ("docs/operations.md", "/var/log/txrouter/*.log"): "logrotate's configuration",
    ("docs/operations.md", "apt-get install gcc python3-dev"):
        "installs the compiled build: scripts/test-compiled builds and tests it, in a copy",
    ("docs/operations.md", "2026-12-04T22:21:46+0000 [txrouter.build#info]"): "a log line",
    ("docs/proxy-protocol.md", "backend routers"): "a diagram",
    ("docs/proxy-protocol.md", "stream {"): "nginx's configuration",
    ("docs/proxy-protocol.md", "frontend from_router"): "HAProxy's configuration",
    ("docs/routing-options.md", "twistd txrouter-http: --http-to"): "an error line",
    ("docs/routing-options.md", "twistd txrouter-http: --bind tcp:8080: address already"):
        "error lines (tests/test_e2e_mistakes.py makes them)",
    ("docs/routing-options.md", "/var/log/txrouter/access.log {"): "logrotate's configuration",
    ("docs/tuntap-router.md", '--tuntap-router-firewall-out "allow'): "options, shown alone",
    ("docs/tuntap-router.md", "[uwsgi]"): "a uWSGI ini file",
    ("docs/tuntap-router.md", "twistd -n txrouter-tuntap"):
        "creates a tun device: run in network namespaces by tests/test_e2e_tuntap.py",
    ("docs/tuntap-router.md", "ip addr add 192.168.0.1/24"): "configures the host's network",
    ("docs/tuntap-router.md", '{"version": ..., "pid"'): "a stats document's outline",
    ("docs/websockets.md", "import uwsgi"): "a uWSGI application (runs inside uWSGI)",
    ("docs/websockets.md", "$ python -m websockets"): "an interactive session",
    ("docs/from-uwsgi.md", "[Unit]"): "a systemd unit (its command is run by the next block)",
    ("docs/fleet.md", "# on every router machine"):
        "routers on several machines around a Redis server: tests/test_e2e_fleet.py runs them",
    ("docs/operations.md", "node_check_failed: /run/app2.sock is down"): "a log line",
    ("docs/operations.md", "twistd txrouter-http: /etc/txrouter/web.toml: timeout:"): "error lines",
    ("docs/operations.md", "twistd txrouter-http: /etc/uwsgi/router.ini: [uwsgi] keys"): "an error line",
    ("docs/operations.md", "config_keys_ignored: /etc/uwsgi/router.ini"): "a log line",
    ("docs/operations.md", "config_reloaded: --to changed"): "log lines",
    ("docs/operations.md", "twistd txrouter-fast: --uid: switching users needs root"): "an error line",
    ("docs/operations.md", "systemd-socket-activate --fdname=http"):
        "systemd's socket activation: tests/test_e2e_systemd.py runs it",
}

#: Blocks that are a file another block uses, by page and first line: the
#: file they are written to (moved as paths are).
FILES = {
    ("docs/forwarders/cache.md", "# key"): "/etc/txrouter/apps.map",
    ("docs/operations.md", "# /etc/txrouter/web.toml"): "/etc/txrouter/web.toml",
    ("docs/operations.md", "[uwsgi]"): "/etc/uwsgi/router.ini",
    ("docs/forwarders/code.md", "# myrouting.py"): "myrouting.py",
    ("docs/ssl-router.md", "imap.example.com"): "/etc/txrouter/names",
}

#: Blocks that go on from an earlier block of the same page, in the same
#: shell (its processes still running), by first line: that block's.
AFTER = {
    ("docs/websockets.md", 'python -c "import json, socket;'):
        "python tests/apps/ws_server.py /run/ws1.sock ws1 &",
}

#: Shell commands that are not txrouter's and are not run (the workers
#: the docs start beside a router).
OTHER_PROGRAMS = ("uwsgi", "gunicorn")


class Block:
    """
    A code block: its page (relative to the project), line, fence language
    (C{indented} for an indented block) and text.
    """

    def __init__(self, page: str, line: int, language: str, text: str) -> None:
        self.page = page
        self.line = line
        self.language = language
        self.text = text

    @property
    def first(self) -> str:
        return next(line.strip() for line in self.text.splitlines() if line.strip())

    def __repr__(self) -> str:
        return f"{self.page}:{self.line}"


def codeBlocks(path: pathlib.Path) -> list:
    """
    The code blocks of a Markdown page: fenced ones, and those indented four
    spaces beyond the paragraph or list item they are in.
    """
    page = str(path.relative_to(ROOT))
    lines = path.read_text().split("\n")
    found = []
    index, blankBefore, listIndent = 0, True, 0
    while index < len(lines):
        line = lines[index]
        fence = re.match(r"^(\s*)```(\S*)\s*$", line)
        if fence:
            indent, body = len(fence.group(1)), []
            index += 1
            while not re.match(r"^\s*```\s*$", lines[index]):
                body.append(lines[index][indent:])
                index += 1
            found.append(Block(page, index - len(body), fence.group(2) or "text", "\n".join(body)))
            index += 1
            blankBefore = False
            continue
        indent = len(line) - len(line.lstrip())
        if blankBefore and line.strip() and indent >= listIndent + 4:
            start, body = index, []
            while index < len(lines) and (
                    not lines[index].strip()
                    or len(lines[index]) - len(lines[index].lstrip()) >= listIndent + 4):
                body.append(lines[index][listIndent + 4:])
                index += 1
            while not body[-1].strip():
                body.pop()
                index -= 1
            found.append(Block(page, start + 1, "indented", "\n".join(body)))
            blankBefore = False
            continue
        item = re.match(r"^([-*]|\d+\.)\s+", line)
        if item:
            listIndent = len(item.group(0))
        elif line.strip() and indent == 0:
            listIndent = 0
        blankBefore = not line.strip()
        index += 1
    return found


def allBlocks() -> list:
    return [block for path in DOCS for block in codeBlocks(path)]


def classify(block: Block) -> "str | None":
    """
    How C{block} is checked: C{shell}, C{python}, C{tac}, C{file}, or
    C{not run} (L{NOT_RUN}); L{None} if it fits nothing.
    """
    for table, kind in ((NOT_RUN, "not run"), (FILES, "file")):
        if any(page == block.page and block.first.startswith(first) for page, first in table):
            return kind
    if block.language == "python" or (
            block.language == "indented" and re.match(r"(from|import) \w", block.first)):
        return "tac" if re.search(r"^application = ", block.text, re.M) else "python"
    if block.language in ("sh", "text", "indented"):
        commands = shellCommands(block.text)
        if commands and all(program(command) in SHELL_COMMANDS for command in commands):
            return "shell"
    return None


#: The programs a shell block may run.
SHELL_COMMANDS = {"twistd", "curl", "openssl", "mkdir", "python", "kill", "./scripts/demo",
                  *OTHER_PROGRAMS}


def program(command: str) -> str:
    """
    The program a shell command runs (after any C{NAME=value} in front).
    """
    return next((word for word in command.split() if "=" not in word), "")


def shellCommands(text: str) -> list:
    """
    The commands of a shell block: continuation lines joined, comments and
    blank lines dropped, environment assignments in front kept.
    """
    joined = re.sub(r"\\\n\s*", " ", text)
    commands = []
    for line in joined.splitlines():
        line = re.sub(r"(^|\s)#.*$", "", line).strip()
        if line:
            commands.append(line)
    return commands


def test_every_block_is_classified():
    """
    A new block must be runnable, or said not to be (L{NOT_RUN}).
    """
    unclassified = [(block, block.first) for block in allBlocks() if classify(block) is None]
    assert unclassified == []


def test_every_not_run_entry_is_used():
    """
    L{NOT_RUN} and L{FILES} name blocks that exist.
    """
    blocks = allBlocks()
    for page, first in [*NOT_RUN, *FILES]:
        assert any(block.page == page and block.first.startswith(first) for block in blocks), \
            (page, first)


# Running

class Places:
    """
    The ports and paths of one block, moved to the test's.
    """

    def __init__(self, directory: pathlib.Path) -> None:
        self.directory = directory
        self.ports = {}

    def __call__(self, text: str) -> str:
        # The users the docs assume: one every system has.
        text = re.sub(r"(--uid[ =])txrouter\b", r"\1nobody", text)
        # Hosts of a LAN: loopback addresses, one each.
        text = re.sub(r"\b10\.0\.0\.(\d+)\b(?!/)", r"127.0.0.\1", text)
        for port in re.findall(r"(?<=:)(\d{2,5})(?![\d.])", text):
            if port not in self.ports:
                self.ports[port] = str(free_port())
        for port, free in self.ports.items():
            text = re.sub(rf"(?<![\w.]){port}(?![\w.])", free, text)
        # The project's own files, which the docs name from a clone's root.
        text = re.sub(r"(?<![\w./])(tests|examples|scripts)/", lambda match: f"{ROOT}/{match.group(0)}", text)
        directory = str(self.directory)

        def moved(match):
            path = directory + match.group(0)
            if match.group(0).rstrip("/") in ("/tmp", "/var/tmp"):
                path = path.rstrip("/") + "/"
            parent = pathlib.Path(path.rstrip("/") if path.endswith("/") else path).parent
            parent.mkdir(parents=True, exist_ok=True)
            if path.endswith("/"):
                pathlib.Path(path).mkdir(parents=True, exist_ok=True)
            return path

        return re.sub(r"(?<![\w.~/])/(?:run|etc|tmp|var|path)/[^\s'\",:;)]*", moved, text)


def twistdEnv() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["PATH"] = os.pathsep.join([str(pathlib.Path(TWISTD_COMMAND[0]).parent), env["PATH"]])
    return env


def makeCertificates(command: str, directory: pathlib.Path) -> None:
    """
    The certificate and key files a command names (C{site.crt},
    C{server.key}), self-signed, in C{directory}.
    """
    names = re.findall(r"(?<![\w.])(/?[\w/.-]*[\w-])\.(crt|key|pem)\b", command)
    if not names:
        return
    made = directory / "selfsigned"
    if not made.exists():
        made.mkdir()
        selfSigned(made)
    key, cert = made / "key.pem", made / "cert.pem"
    for name, kind in names:
        source = key if kind == "key" or "key" in name.rsplit("/", 1)[-1] else cert
        target = directory / f"{name}.{kind}"
        if not target.exists() and target.parent.is_dir():
            target.write_bytes(source.read_bytes())


def listeningAddress(args: list) -> "tuple[str, object] | None":
    """
    Where a twistd command listens first, and how to ask it: C{("http",
    port)}, C{("https", port)}, C{("tcp", port)} or C{("unix", path)};
    L{None} for a command that does not listen (the subscriber).
    """
    plugin = next(arg for arg in args if arg.startswith("txrouter-"))
    scheme = {"txrouter-http": "http", "txrouter-https": "http"}.get(plugin, "tcp")
    for index, arg in enumerate(args[:-1]):
        value = args[index + 1]
        if arg == "--bind":
            if value.startswith("unix:"):
                return ("unix", value[5:].split(":")[0])
            interface = re.search(r":interface=([\d.]+)", value)
            host = interface.group(1) if interface else "127.0.0.1"
            if value.startswith("ssl:"):
                scheme = "https" if scheme == "http" else "tcp"
            return (scheme, (host, int(value.split(":")[1])))
        if arg in ("--https", "--sslrouter"):
            host, _, port = value.split(",")[0].rpartition(":")
            return ("https" if arg == "--https" else "tcp", (host or "127.0.0.1", int(port)))
        if arg in ("--config", "--ini"):
            return fileListener(scheme, pathlib.Path(value).read_text())
    return None


def fileListener(scheme: str, text: str) -> "tuple | None":
    """
    Where a router listens whose C{--config} (TOML) or C{--ini} file gives
    its listener: the first C{bind}, or uWSGI's C{http = [HOST]:PORT}.
    """
    bind = re.search(r'^bind = \["tcp:(\d+)', text, re.M)
    if bind:
        return (scheme, ("127.0.0.1", int(bind.group(1))))
    http = re.search(r"^http = ([\d.]*):(\d+)", text, re.M)
    if http:
        return (scheme, (http.group(1) or "127.0.0.1", int(http.group(2))))
    return None


def accepts(kind: str, where) -> bool:
    family = socket.AF_UNIX if kind == "unix" else socket.AF_INET
    with socket.socket(family) as probe:
        probe.settimeout(1)
        try:
            probe.connect(where)
        except OSError:
            return False
    return True


def answers(kind: str, where, proxyFrom: "str | None" = None) -> str:
    """
    One request to a listening router: an HTTP status for HTTP routers (any:
    with no node running, a 502 is its answer), a connection otherwise.

    @param proxyFrom: the request comes from this address, with a PROXY
        protocol header (the router's C{--proxy-protocol-from}).
    """
    if kind in ("http", "https"):
        result = subprocess.run(
            ["curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10",
             *(["--haproxy-protocol", "--interface", proxyFrom] if proxyFrom else []),
             f"{kind}://{where[0]}:{where[1]}/"], capture_output=True, text=True, timeout=20)
        assert re.fullmatch(r"[1-5]\d\d", result.stdout), result
        return result.stdout
    assert accepts(kind, where)
    return "accepted"


class Shell:
    """
    Runs a shell block's commands in one directory, keeping the twistd
    processes it starts until L{stop}.
    """

    def __init__(self, directory: pathlib.Path) -> None:
        self.directory = directory
        self.places = Places(directory)
        self.processes = []
        self.listening = []

    def run(self, command: str) -> None:
        command = self.places(command)
        for directory in re.findall(r"--(?:sni-dir|spool-dir|post-buffering-dir)[ =](\S+)", command):
            pathlib.Path(directory).mkdir(parents=True, exist_ok=True)
        words = shlex.split(command.rstrip("&").strip())
        environment = {}
        while "=" in words[0]:
            name, _, value = words.pop(0).partition("=")
            environment[name] = value
        if words[0] in OTHER_PROGRAMS:
            return
        if command.endswith("&") and words[0] != "twistd":
            log = self.directory / f"background-{len(self.processes)}.log"
            self.processes.append(Process(words, log, cwd=self.directory, env=twistdEnv()))
            return
        if words[0] == "./scripts/demo":
            self.demo()
        elif words[0] == "twistd":
            self.twistd(words, environment)
        elif words[0] == "curl":
            if not self.listening:
                raise AssertionError(f"curl with no router running: {command}")
            result = subprocess.run(["curl", "-sk", "--max-time", "10", *words[1:]],
                                    capture_output=True, text=True, timeout=20)
            assert result.returncode == 0, result
        else:
            result = subprocess.run(command, shell=True, cwd=self.directory, env=twistdEnv(),
                                    capture_output=True, text=True, timeout=60)
            assert result.returncode == 0, (command, result.stdout, result.stderr)

    def twistd(self, args: list, environment: dict) -> None:
        makeCertificates(" ".join(args), self.directory)
        log = self.directory / f"twistd-{len(self.processes)}.log"
        process = Process([*TWISTD_COMMAND, *args[1:]], log, cwd=self.directory,
                          env={**twistdEnv(), **environment})
        if "-n" not in args and "--nodaemon" not in args:
            # It daemonizes: the parent exits once the child started.
            assert process.wait(30) == 0, process.log()
            pidfile = next((arg.split("=", 1)[1] for arg in args if arg.startswith("--pidfile=")),
                           "twistd.pid")
            path = self.directory / pidfile
            wait_until(path.exists, f"{pidfile} written")
            process.daemon = int(path.read_text())
        self.processes.append(process)
        address = listeningAddress(args)
        if address is None:
            wait_until(lambda: "Subscriber" in process.log() or "subscribe" in process.log(),
                       "the subscriber started", process=process)
            return
        wait_until(lambda: accepts(*address), f"{' '.join(args)} listening",
                   process=None if hasattr(process, "daemon") else process)
        if "--cheap" not in args:
            # Cheap mode with no node accepts nothing (the kernel queues).
            proxyFrom = None
            if "--enable-proxy-protocol" in args:
                proxyFrom = args[args.index("--proxy-protocol-from") + 1]
            answers(*address, proxyFrom=proxyFrom)
        self.listening.append(address)

    def demo(self) -> None:
        """
        The README's first command, on a port and in a directory of the
        test's (the variables it reads), with the venv the tests run in.
        """
        port = free_port()
        env = {**twistdEnv(), "TXROUTER_DEMO_PORT": str(port),
               "TXROUTER_DEMO_DIR": str(self.directory / "demo"),
               "TXROUTER_DEMO_VENV": sys.prefix}
        process = Process([str(ROOT / "scripts" / "demo")], self.directory / "demo.log",
                          cwd=self.directory, env=env)
        self.processes.append(process)
        wait_until(lambda: "Press Ctrl-C" in process.log(), "the demo ready", process=process)
        result = subprocess.run(["curl", "-s", f"http://127.0.0.1:{port}/hello?name=you"],
                                capture_output=True, text=True, timeout=20)
        assert "from a uWSGI worker behind txrouter" in result.stdout, process.log()
        self.listening.append(("http", ("127.0.0.1", port)))

    def stop(self) -> None:
        for process in reversed(self.processes):
            daemon = getattr(process, "daemon", None)
            if daemon is not None:
                os.kill(daemon, 15)
                wait_until(lambda: not os.path.exists(f"/proc/{daemon}"), "the daemon stopped")
            process.stop()


def runShell(block: Block, directory: pathlib.Path, places: Places) -> None:
    """
    Run a shell block's commands (after those of the block it goes on from,
    L{AFTER}) in one L{Shell}, and stop what they started.
    """
    commands = shellCommands(block.text)
    for (page, first), earlier in AFTER.items():
        if block.page == page and block.first.startswith(first):
            [before] = [other for other in allBlocks()
                        if other.page == page and other.first.startswith(earlier)]
            commands = shellCommands(before.text) + commands
    shell = Shell(directory)
    shell.places = places
    try:
        for command in commands:
            shell.run(command)
    finally:
        shell.stop()


def runPython(text: str, directory: pathlib.Path) -> None:
    """
    Run C{text} as a script in C{directory}; then call its C{test_*}
    functions, as pytest would.
    """
    script = directory / "snippet.py"
    script.write_text(text + "\n\nfor _name, _test in list(globals().items()):\n"
                      "    if _name.startswith('test_') and callable(_test):\n"
                      "        _test()\n")
    result = subprocess.run([sys.executable, str(script)], cwd=directory, env=twistdEnv(),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def runTac(text: str, directory: pathlib.Path, bind: "str | None" = None,
           environment=None) -> None:
    """
    Start C{text} as a C{.tac} under twistd, check that it listens where it
    says (C{bind}, or its first endpoint string) and answers, and stop it.
    """
    tac = directory / "router.tac"
    tac.write_text(text)
    makeCertificates(text, directory)
    process = Process([*TWISTD_COMMAND, "-n", "--pidfile=", "-y", str(tac)],
                      directory / "tac.log", cwd=directory,
                      env={**twistdEnv(), **(environment or {})})
    try:
        if bind is None:
            written = re.search(r"['\"](tcp:\d+[^'\"]*|unix:[^'\"]+)['\"]", text)
            bind = written.group(1) if written else None
        plugin = "txrouter-http" if "HTTPRouter" in text else "txrouter-fast"
        address = listeningAddress([plugin, "--bind", bind]) if bind else None
        if address is None:
            wait_until(lambda: "starting up" in process.log(), "twistd started", process=process)
            assert "Traceback" not in process.log(), process.log()
            return
        wait_until(lambda: accepts(*address), "the .tac listening", process=process)
        if "cheap=True" not in text:
            answers(*address)
    finally:
        # twistd ends on SIGTERM by raising it again once it has stopped.
        assert process.stop() in (0, -15), process.log()
    assert "Traceback" not in process.log(), process.log()


def blockIds():
    return [block for block in allBlocks() if classify(block) not in (None, "not run", "file")]


@pytest.fixture
def sandbox(tmp_path):
    """
    The block's directory, with the files the doc's other blocks give.
    """
    places = Places(tmp_path)
    for block in allBlocks():
        for (page, first), target in FILES.items():
            if block.page == page and block.first.startswith(first):
                path = pathlib.Path(places(target)) if target.startswith("/") else tmp_path / target
                path.write_text(places(block.text) + "\n")
    return tmp_path, places


@pytest.mark.parametrize("block", blockIds(), ids=repr)
def test_doc_block_runs(block, sandbox):
    directory, places = sandbox
    kind = classify(block)
    if kind == "shell":
        runShell(block, directory, places)
    elif kind == "python":
        runPython(places(block.text), directory)
    elif kind == "tac":
        runTac(places(block.text), directory)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda path: path.name)
def test_example_tac_runs(path, tmp_path):
    """
    The examples as they are, listening where the test says through the
    variable each documents (C{TXROUTER_BIND}); their nodes are not
    running, so the HTTP router answers 502.
    """
    text = path.read_text()
    assert "TXROUTER_BIND" in text
    bind = f"tcp:{free_port()}:interface=127.0.0.1"
    runTac(text, tmp_path, bind, {"TXROUTER_BIND": bind})
