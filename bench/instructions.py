"""
Instructions per request of C{twistd txrouter-http}, counted by callgrind.

Requests/s on a shared two-core machine drift by tens of percent from one
run to the next; the instructions a router executes per request do not
(callgrind counts them whatever else the machine does).  This script runs
the router of a checkout under C{valgrind --tool=callgrind} in front of one
uWSGI worker (C{bench/app.py} on a unix socket), sends warm-up requests,
then counts the user-space instructions of N more, one client at a time:

  - C{keepalive}: N requests on one keep-alive connection;
  - C{close}: N connections of one request each.

Use it to compare two checkouts (a change's before and after)::

    .venv/bin/python bench/instructions.py                       # this checkout
    .venv/bin/python bench/instructions.py --tree /tmp/before --requests 2000

Run-to-run spread is about 2 %; uWSGI's own router is compared with
C{bench_http.py}, which measures both side by side.  Needs valgrind
(C{apt-get install valgrind}) and C{scripts/setup}.
"""

import argparse
import os
import pathlib
import re
import socket
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent

REQUEST = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"
CLOSE = b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"


def _readResponse(sock, buffered: bytes) -> bytes:
    while b"\r\n\r\n" not in buffered:
        buffered += sock.recv(65536)
    head, _, rest = buffered.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
    while len(rest) < length:
        rest += sock.recv(65536)
    return rest[length:]


def keepalive(port: int, count: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        buffered = b""
        for _ in range(count):
            sock.sendall(REQUEST)
            buffered = _readResponse(sock, buffered)


def close(port: int, count: int) -> None:
    for _ in range(count):
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(CLOSE)
            while sock.recv(65536):
                pass


SCENARIOS = {"keepalive": keepalive, "close": close}


def _instructions(paths) -> int:
    total = 0
    for path in paths:
        for line in open(path):
            if line.startswith("totals:"):
                total += int(line.split()[1])
    return total


def measure(tree: pathlib.Path, scenario: str, count: int, work: pathlib.Path) -> float:
    """
    Instructions per request of C{scenario} through the router of C{tree}.
    """
    sys.path.insert(0, str(ROOT))
    from tests.realpeers import TXROUTER_COMMAND, Process, free_port, uwsgi_worker, wait_for_tcp

    drive = SCENARIOS[scenario]
    sock = str(work / "app.sock")
    out = work / f"callgrind-{scenario}.out"
    with uwsgi_worker(work, sock, app=ROOT / "bench" / "app.py"):
        port = free_port()
        command = [
            "valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
            *TXROUTER_COMMAND, "--bind", f"tcp:{port}:interface=127.0.0.1", "--to", sock,
            "--keepalive",
        ]
        env = dict(os.environ, PYTHONPATH=str(tree))
        with Process(command, work / f"router-{scenario}.log", env=env) as router:
            wait_for_tcp(port, timeout=120, process=router)
            drive(port, 300)
            control = ["callgrind_control", "-i"]
            subprocess.run([*control, "on", str(router.popen.pid)], check=True, capture_output=True)
            drive(port, count)
            subprocess.run([*control, "off", str(router.popen.pid)], check=True, capture_output=True)
    return _instructions(work.glob(f"callgrind-{scenario}.out*")) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", type=pathlib.Path, default=ROOT,
                        help="the checkout whose txrouter is measured (default: this one)")
    parser.add_argument("--requests", type=int, default=2000, help="requests counted per scenario")
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), action="append",
                        help="keepalive, close (repeatable; default: both)")
    arguments = parser.parse_args()
    for scenario in arguments.scenario or ["keepalive", "close"]:
        with tempfile.TemporaryDirectory(prefix="txrouter-instructions-") as work:
            perRequest = measure(arguments.tree.resolve(), scenario, arguments.requests,
                                 pathlib.Path(work))
        print(f"{scenario}: {perRequest / 1000:.1f}k instructions per request", flush=True)


if __name__ == "__main__":
    main()
