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

With C{--processes N} the router runs as a pool of N workers, all under
callgrind (C{--trace-children=yes}): the count is the pool's and every
worker's instructions, and C{--clients C} drives C clients at a time
(threads, each with its own connection or connections), so that every
worker has work.  Besides the count per request, it prints each process's
part and the instructions the router spends per second doing nothing but
hold two idle clients per process (timers: the workers' session board,
C{--stats} is not asked), counted for C{--idle} seconds before the
requests::

    .venv/bin/python bench/instructions.py --clients 2                 # one process
    .venv/bin/python bench/instructions.py --clients 2 --processes 2   # two workers

Run-to-run spread is about 2 %; uWSGI's own router is compared with
C{bench_http.py}, which measures both side by side.  Needs valgrind
(C{apt-get install valgrind}) and C{scripts/setup}.
"""

import argparse
import os
import pathlib
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

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


def concurrently(drive, port: int, count: int, clients: int) -> None:
    """
    C{count} requests of C{drive}, shared by C{clients} clients at a time.
    """
    threads = [threading.Thread(target=drive, args=(port, count // clients))
               for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _instructions(path) -> int:
    for line in open(path):
        if line.startswith("totals:"):
            return int(line.split()[1])
    return 0


def _workerPIDs(statsPath: pathlib.Path, processes: int) -> "list[int]":
    import json

    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(str(statsPath))
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    pids = [worker.get("pid") for worker in json.loads(data).get("workers", [])]
    if len(pids) != processes or not all(pids):
        raise OSError("workers not all running")
    return pids


def measure(tree: pathlib.Path, scenario: str, count: int, work: pathlib.Path,
            processes: int = 1, clients: int = 1, idle: float = 0) -> dict:
    """
    Instructions of C{scenario} through the router of C{tree}: C{perRequest},
    C{parts} (each process's share of them: the pool's first),
    C{idlePerSecond}, and C{busyPerRequest}: per request, less what the
    idle router would have spent meanwhile (under callgrind a request
    lasts a hundred times longer, and so many more timers fire per
    request than at full speed).
    """
    sys.path.insert(0, str(ROOT))
    from tests.realpeers import (
        TXROUTER_COMMAND, Process, free_port, uwsgi_worker, wait_for_tcp, wait_until)

    drive = SCENARIOS[scenario]
    sock = str(work / "app.sock")
    statsPath = work / "stats.sock"
    out = work / f"callgrind-{scenario}.%p.out"
    pool = ["--processes", str(processes), "--stats", f"unix:{statsPath}"] if processes > 1 else []
    with uwsgi_worker(work, sock, app=ROOT / "bench" / "app.py"):
        port = free_port()
        command = [
            "valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
            "--trace-children=yes",
            *TXROUTER_COMMAND, "--bind", f"tcp:{port}:interface=127.0.0.1", "--to", sock,
            "--keepalive", *pool,
        ]
        env = dict(os.environ, PYTHONPATH=str(tree))
        with Process(command, work / f"router-{scenario}.log", env=env) as router:
            wait_for_tcp(port, timeout=120, process=router)
            pids = [router.popen.pid]
            if processes > 1:
                wait_until(lambda: _workerPIDs(statsPath, processes), "the workers", 300, router)
                pids += _workerPIDs(statsPath, processes)
            concurrently(drive, port, 300 * clients, clients)

            def control(*arguments):
                subprocess.run(["callgrind_control", *arguments, *map(str, pids)],
                               check=True, capture_output=True)

            # The idle count holds two clients per process, each after one
            # request, so that every worker has clients and runs the timer
            # it runs while busy (its sessions on the board).
            waiting = [socket.create_connection(("127.0.0.1", port)) for _ in range(2 * processes)]
            for sock in waiting:
                sock.sendall(REQUEST)
                _readResponse(sock, b"")
            control("-z")
            control("-i", "on")
            time.sleep(idle)
            control("-i", "off")
            control("-d", "idle")
            for sock in waiting:
                sock.close()
            control("-i", "on")
            began = time.monotonic()
            concurrently(drive, port, count, clients)
            seconds = time.monotonic() - began
            control("-i", "off")
    idleCounts = [_instructions(f"{work}/callgrind-{scenario}.{pid}.out.1") for pid in pids]
    counts = [_instructions(f"{work}/callgrind-{scenario}.{pid}.out") for pid in pids]
    total, requests = sum(counts), count // clients * clients
    idlePerSecond = sum(idleCounts) / idle if idle else 0.0
    return dict(perRequest=total / requests, parts=[part / max(total, 1) for part in counts],
                idlePerSecond=idlePerSecond,
                busyPerRequest=(total - idlePerSecond * seconds) / requests)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", type=pathlib.Path, default=ROOT,
                        help="the checkout whose txrouter is measured (default: this one)")
    parser.add_argument("--requests", type=int, default=2000, help="requests counted per scenario")
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), action="append",
                        help="keepalive, close (repeatable; default: both)")
    parser.add_argument("--processes", type=int, default=1,
                        help="run the router as a pool of N workers (--processes N)")
    parser.add_argument("--clients", type=int, default=1, help="clients at a time")
    parser.add_argument("--idle", type=float, default=2.0,
                        help="seconds the idle router's instructions are counted")
    parser.add_argument("--keep", type=pathlib.Path, metavar="DIR",
                        help="keep callgrind's files (one per process) in DIR, for callgrind_annotate")
    arguments = parser.parse_args()
    for scenario in arguments.scenario or ["keepalive", "close"]:
        with tempfile.TemporaryDirectory(prefix="txrouter-instructions-") as work:
            result = measure(arguments.tree.resolve(), scenario, arguments.requests,
                             pathlib.Path(work), arguments.processes, arguments.clients,
                             arguments.idle)
            if arguments.keep:
                arguments.keep.mkdir(parents=True, exist_ok=True)
                for path in pathlib.Path(work).glob("callgrind-*"):
                    shutil.copy(path, arguments.keep)
        parts = "/".join(f"{100 * part:.0f}" for part in result["parts"])
        print(f"{scenario}: {result['perRequest'] / 1000:.1f}k instructions per request"
              + (f" (pool/workers: {parts} %)" if arguments.processes > 1 else "")
              + f"; idle: {result['idlePerSecond'] / 1000:.0f}k per second"
              + f"; less the idle: {result['busyPerRequest'] / 1000:.1f}k per request", flush=True)


if __name__ == "__main__":
    main()
