"""
Each mistake of a newcomer's first hour (issue 20), driven through twistd
from an empty directory: one line that names the option, the value and
what to do, exit status 2, never a traceback.

Usage errors are found while the options are read; what can only fail
when twistd starts the services (a port in use, a socket in a directory
that does not exist) is a L{txrouter.early.StartupError}, reported the
same way.
"""

import os
import socket
import subprocess

import pytest

from tests.realpeers import ROOT, TWISTD_COMMAND


def twistd(cwd, *args):
    """
    C{twistd -n --pidfile= ARGS} run in C{cwd} with the project on
    PYTHONPATH, as a user would from a fresh directory.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.run(
        [*TWISTD_COMMAND, "-n", "--pidfile=", *args],
        capture_output=True, text=True, timeout=60, cwd=cwd, env=env,
    )


@pytest.fixture
def busyPort():
    """
    A port of 127.0.0.1 something else listens on.
    """
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    yield holder.getsockname()[1]
    holder.close()


def assertOneLine(result, plugin: str, expected: str) -> None:
    """
    C{result} is a twistd run stopped by one line (on stderr, after at
    most twistd's start-up log on stdout) that contains C{expected}.
    """
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    assert result.returncode == 2, output
    lines = result.stderr.splitlines()
    assert lines[0].startswith(f"twistd {plugin}: "), output
    assert expected in lines[0], output
    assert lines[1:] in ([], [f"(see: twistd {plugin} --help)"]), output


@pytest.mark.parametrize("args, expected", [
    # Usage errors: the reason first, the option named, uWSGI spellings hinted.
    (("--bind", "tcp:0", "--to", "/x.sock", "--timeout", "abc"),
     "--timeout: 'abc' is not a valid value"),
    (("--bind", "tcp:0", "--to", "/x.sock", "--keepalive", "15x"),
     "--keepalive 15x: '15x' is no value --keepalive takes"),
    (("--bind", ":8080", "--to", "/x.sock"), "(uWSGI's ':8080' is tcp:8080 here)"),
    (("--bind", "127.0.0.1:8080", "--to", "/x.sock"),
     "(uWSGI's '127.0.0.1:8080' is tcp:8080:interface=127.0.0.1 here)"),
    (("--bind", "tcp:0", "--http-to", "/x.sock"), "--http-to is uWSGI's spelling; here it is --to"),
    (("--bind", "tcp:0", "--to", "https://example.com"),
     "--to: https:// is no node address ('https://example.com')"),
    (("--bind", "tcp:0", "--use-cache", "--cache-file", "/nonexistent.map"),
     "--cache-file: /nonexistent.map: No such file or directory"),
    (("--bind", "tcp:0", "--cheap", "--use-base", "/tmp/"),
     "--cheap: --use-base cannot tell when a node is available"),
    (("--bind", "tcp:0", "--subscription-server", "127.0.0.1:0",
      "--subscriptions-sign-check", "SHA1:/nonexistent"),
     "--subscriptions-sign-check: /nonexistent: no such directory"),
    (("--bind", "tcp:0", "--to", "/x.sock", "--post-buffering", "10",
      "--post-buffering-dir", "/nonexistent"),
     "--post-buffering-dir: /nonexistent: No such file or directory"),
    (("--bind", "tcp:0", "--use-base", "/tmp/", "--use-pattern", "/tmp/%s"),
     "choose one way to find nodes, not --use-base, --use-pattern"),
    (("--bind", "tcp:0", "--to", "/x.sock", "--algo", "rr"),
     "--algo: 'rr' is not a valid value (one of wrr, lrc, wlrc, iphash, not 'rr')"),
    (("--bind", "tcp:0", "--use-code", "nosuchmodule:route"),
     "--use-code: cannot load 'nosuchmodule:route'"),
])
def test_usage_mistakes(tmp_path, args, expected):
    assertOneLine(twistd(tmp_path, "txrouter-http", *args), "txrouter-http", expected)


@pytest.mark.parametrize("args, expected", [
    (("--key", "k", "--address", "127.0.0.1:3031"), "at least one --subscribe-to SERVER is required"),
    (("--subscribe-to", "127.0.0.1:7000", "--key", "k", "--address", "127.0.0.1:3031",
      "--subscribe-freq", "5"), "--subscribe-freq is uWSGI's spelling; here it is --frequency"),
    (("--subscribe-to", "127.0.0.1:7000", "--key", "k", "--address", "127.0.0.1:3031",
      "--proto", "h2"), "--proto: 'h2' is not a valid value (must be uwsgi or http"),
    (("--subscribe-to", "127.0.0.1:7000", "--key", "k", "--address", "127.0.0.1:3031",
      "--sign", "SHA256:/nonexistent.pem"), "--sign: /nonexistent.pem: No such file or directory"),
])
def test_subscriber_mistakes(tmp_path, args, expected):
    assertOneLine(twistd(tmp_path, "txrouter-subscribe", *args), "txrouter-subscribe", expected)


def test_use_code_finds_a_module_in_the_current_directory(tmp_path):
    """
    C{--use-code myrouting:route} imports from where twistd was started,
    as C{twistd -y} users expect; the run then stops at the busy-free
    mistake after it (a missing --bind), proving the import worked.
    """
    (tmp_path / "myrouting.py").write_text("def route(key):\n    return None\n")
    result = twistd(tmp_path, "txrouter-http", "--use-code", "myrouting:route")
    assert "cannot load" not in result.stderr
    assert "--bind" in result.stderr


IN_USE = "address already in use: another process listens there"
NO_DIRECTORY = "no such directory (create it first"


@pytest.mark.parametrize("plugin, args, expected", [
    ("txrouter-http", ("--bind", "tcp:{busy}:interface=127.0.0.1", "--to", "/x.sock"),
     f"--bind tcp:{{busy}}:interface=127.0.0.1: {IN_USE}"),
    ("txrouter-http", ("--bind", "tcp:0", "--to", "/x.sock", "--stats", "127.0.0.1:{busy}"),
     f"--stats 127.0.0.1:{{busy}}: {IN_USE}"),
    ("txrouter-fast", ("--bind", "tcp:0", "--to", "/x.sock",
                       "--metrics", "tcp:{busy}:interface=127.0.0.1"),
     f"--metrics tcp:{{busy}}:interface=127.0.0.1: {IN_USE}"),
    ("txrouter-raw", ("--bind", "unix:{missing}/r.sock", "--to", "/x.sock"),
     f"--bind unix:{{missing}}/r.sock: {NO_DIRECTORY}"),
    ("txrouter-http", ("--bind", "tcp:0", "--to", "/x.sock", "--stats", "{missing}/s.sock"),
     f"--stats {{missing}}/s.sock: {NO_DIRECTORY}"),
    ("txrouter-http", ("--bind", "tcp:0", "--subscription-server", "{missing}/sub.sock"),
     f"--subscription-server {{missing}}/sub.sock: {NO_DIRECTORY}"),
    ("txrouter-http", ("--bind", "tcp:0", "--subscription-server", "127.0.0.1:{busyUDP}"),
     f"--subscription-server 127.0.0.1:{{busyUDP}}: {IN_USE}"),
])
def test_startup_failures(tmp_path, busyPort, plugin, args, expected):
    """
    What fails only when twistd binds is one line too, with the option.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        places = dict(busy=busyPort, busyUDP=udp.getsockname()[1], missing=tmp_path / "gone")
        result = twistd(tmp_path, plugin, *[arg.format(**places) for arg in args])
    assertOneLine(result, plugin, expected.format(**places))


def test_a_startup_failure_is_in_the_log_file_too(tmp_path, busyPort):
    """
    With twistd logging to a file, the line is there as well (a daemon's
    standard error goes nowhere), as a C{startup_failed} event.
    """
    log = tmp_path / "router.log"
    bind = f"tcp:{busyPort}:interface=127.0.0.1"
    result = twistd(tmp_path, "--logfile", str(log), "txrouter-http", "--bind", bind, "--to", "/x.sock")
    assertOneLine(result, "txrouter-http", f"--bind {bind}: {IN_USE}")
    logged = log.read_text()
    assert f"startup_failed: --bind {bind}: {IN_USE}" in logged
    assert "Traceback" not in logged
