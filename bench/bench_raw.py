"""
txrouter-raw against uWSGI's own raw router, and against no router at all.

One TCP node (a small Python server, below) serves three chains:

 - txrouter: client -> twistd txrouter-raw -> node;
 - uwsgi: client -> uwsgi --plugin rawrouter --rawrouter ADDR
   --rawrouter-to NODE -> node;
 - direct: client -> node, a loopback connection (the ceiling).

The routers are pinned to CPU 0, alone; the node and this script (the
client) share CPU 1.  Scenarios:

 - download-1mib, download-64kib: the node sends --mib MiB in writes of
   1 MiB or 64 KiB on one connection, the client reads them all;
 - upload-1mib, upload-64kib: the client sends as much, the node reads it
   and answers one line once it has it all;
 - connections: short-lived connections from --clients threads for
   --duration seconds: the node writes one byte and closes, the client
   reads it and closes.

For each, MiB/s (or connections/s) and the CPU time the router process
spent (utime + stime from /proc/PID/stat, its children's too for uWSGI's
master and its router process) per MiB or per connection; then the ratios
txrouter/uwsgi and txrouter/direct for the rates, and uwsgi/txrouter for
the CPU costs (above 1: txrouter spends less).

Run: .venv/bin/python bench/bench_raw.py [--mib 256] [--duration 3] [--rounds 1]
Everything listens on 127.0.0.1; every process is stopped by its PID.
"""

import argparse
import os
import pathlib
import shutil
import socket
import sys
import tempfile
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_http import LOAD_CPU, NAN, ROUTER_CPU, pinned, router_cpu  # noqa: E402
from tests.realpeers import TWISTD_COMMAND, free_port, wait_for_tcp  # noqa: E402

MIB = 1 << 20
CHAINS = ("txrouter", "uwsgi", "direct")
SCENARIOS = ("download-1mib", "download-64kib", "upload-1mib", "upload-64kib", "connections")
TICKS = os.sysconf("SC_CLK_TCK")

#: The node: python -c NODE BULK_PORT SHORT_PORT.  A connection to
#: BULK_PORT says what it wants in its first line, "SOURCE N W" (send N
#: bytes in writes of W) or "SINK N" (read N bytes, then answer "ok"); one
#: to SHORT_PORT gets one byte and is closed, by the accept loop itself, so
#: that no thread per short connection sets the pace.
NODE = r"""
import socket, sys, threading

def bulk(conn):
    line = b""
    while not line.endswith(b"\n"):
        line += conn.recv(1)
    words = line.split()
    if words[0] == b"SOURCE":
        size, write = int(words[1]), int(words[2])
        chunk = b"x" * write
        for _ in range(size // write):
            conn.sendall(chunk)
    else:
        left, buffer = int(words[1]), bytearray(1 << 20)
        while left:
            got = conn.recv_into(buffer)
            if not got:
                break
            left -= got
        conn.sendall(b"ok\n")
    conn.recv(1)
    conn.close()

def listen(port):
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", port))
    server.listen(4096)
    return server

def serveBulk(server):
    while True:
        conn, _ = server.accept()
        threading.Thread(target=bulk, args=(conn,), daemon=True).start()

bulkServer, shortServer = listen(int(sys.argv[1])), listen(int(sys.argv[2]))
threading.Thread(target=serveBulk, args=(bulkServer,), daemon=True).start()
while True:
    conn, _ = shortServer.accept()
    conn.sendall(b"x")
    conn.close()
"""


def download(port: int, size: int, write: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(b"SOURCE %d %d\n" % (size, write))
        buffer, left = bytearray(1 << 20), size
        while left:
            got = sock.recv_into(buffer)
            if not got:
                raise RuntimeError(f"closed with {left} bytes to go")
            left -= got


def upload(port: int, size: int, write: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(b"SINK %d\n" % size)
        chunk = memoryview(b"y" * write)
        for _ in range(size // write):
            sock.sendall(chunk)
        if sock.recv(3) != b"ok\n":
            raise RuntimeError("the node did not get everything")


def connections(port: int, duration: float, clients: int) -> "tuple[int, int]":
    """
    Short-lived connections from C{clients} threads for C{duration}
    seconds: C{(completed, failed)}.
    """
    counts, failures = [0] * clients, [0] * clients
    deadline = time.monotonic() + duration

    def run(index):
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                    if sock.recv(1) != b"x":
                        raise OSError("no byte")
                counts[index] += 1
            except OSError:
                failures[index] += 1

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts), sum(failures)


def measure(scenario: str, port: int, pid, options) -> dict:
    """
    One run of C{scenario} against C{port}, and the CPU time of C{pid}
    (the router; L{None} for the direct chain).
    """
    cpuBefore = router_cpu(pid) if pid else NAN
    start = time.perf_counter()
    failed = 0
    if scenario == "connections":
        count, failed = connections(port, options.duration, options.clients)
        amount = count
    else:
        size = options.mib * MIB
        write = MIB if scenario.endswith("1mib") else 64 * 1024
        (download if scenario.startswith("download") else upload)(port, size, write)
        amount = options.mib
    elapsed = time.perf_counter() - start
    cpu = router_cpu(pid) - cpuBefore if pid else NAN
    return {"rate": amount / elapsed, "cpu": cpu / amount if amount else NAN, "failed": failed}


def start_routers(work: pathlib.Path, node: str, only) -> dict:
    """
    The routers, pinned to CPU 0: name -> (Process, port).
    """
    routers = {}
    if only in (None, "uwsgi"):
        port = free_port()
        routers["uwsgi"] = (pinned(
            ROUTER_CPU, ["uwsgi", "--plugin", "rawrouter", "--master", "--die-on-term",
                         "--rawrouter", f"127.0.0.1:{port}", "--rawrouter-to", node,
                         "--listen", "1024"],
            work / "uwsgi-rawrouter.log"), port)
    if only in (None, "txrouter"):
        port = free_port()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        routers["txrouter"] = (pinned(
            ROUTER_CPU, [*TWISTD_COMMAND, "-n", "--pidfile=", "txrouter-raw",
                         "--bind", f"tcp:{port}:interface=127.0.0.1:backlog=1024",
                         "--to", node],
            work / "txrouter-raw.log", env), port)
    for process, port in routers.values():
        wait_for_tcp(port, 20, process=process)
    return routers


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if a == a and b == b and b else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=256, help="MiB per throughput run")
    parser.add_argument("--duration", type=float, default=3, help="seconds of connections")
    parser.add_argument("--clients", type=int, default=4, help="threads opening connections")
    parser.add_argument("--rounds", type=int, default=1,
                        help="alternate the chains this many times; keep each one's best")
    parser.add_argument("--scenario", action="append", choices=SCENARIOS)
    parser.add_argument("--only", choices=CHAINS, help="run one chain (and direct)")
    options = parser.parse_args()
    for tool in ("uwsgi", "taskset"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is missing: run scripts/setup first")
    if len(os.sched_getaffinity(0)) < 2:
        print("warning: fewer than 2 CPUs; the pinning is meaningless", file=sys.stderr)
    os.sched_setaffinity(0, {int(LOAD_CPU)})

    work = pathlib.Path(tempfile.mkdtemp(prefix="txrouter-bench-raw-"))
    processes = []
    try:
        bulkPort, shortPort = free_port(), free_port()
        node = pinned(LOAD_CPU, [sys.executable, "-c", NODE, bulkPort, shortPort],
                      work / "node.log")
        processes.append(node)
        wait_for_tcp(bulkPort, 15, process=node)
        wait_for_tcp(shortPort, 15, process=node)
        print(f"{'scenario':<15} {'chain':<9} {'rate':>12} {'router cpu':>14}   failed")
        scenarios = options.scenario or SCENARIOS
        for nodePort, group in [(bulkPort, [s for s in scenarios if s != "connections"]),
                                (shortPort, [s for s in scenarios if s == "connections"])]:
            if not group:
                continue
            routers = start_routers(work, f"127.0.0.1:{nodePort}", options.only)
            try:
                chains = {name: (port, process.pid) for name, (process, port) in routers.items()}
                chains["direct"] = (nodePort, None)
                for scenario in group:
                    report(scenario, chains, options)
            finally:
                for process, port in routers.values():
                    process.stop()
    finally:
        for process in reversed(processes):
            process.stop()
        shutil.rmtree(work, ignore_errors=True)


def report(scenario: str, chains: dict, options) -> None:
    """
    Run C{scenario} on every chain (C{options.rounds} times, keeping each
    one's best) and print its rows and ratios.
    """
    unit, cpuUnit = ("conn/s", "us/conn") if scenario == "connections" else ("MiB/s", "ms/MiB")
    scale = 1e6 if scenario == "connections" else 1e3
    best = {}
    for _ in range(options.rounds):
        for name, (port, pid) in chains.items():
            result = measure(scenario, port, pid, options)
            if name not in best or result["rate"] > best[name]["rate"]:
                best[name] = result
    for name, result in best.items():
        cpu = f"{result['cpu'] * scale:.1f} {cpuUnit}" if result["cpu"] == result["cpu"] else "-"
        print(f"{scenario:<15} {name:<9} {result['rate']:>7.0f} {unit:<6} {cpu:>14}"
              f"   {result['failed'] or '-'}", flush=True)
    tx, uw, direct = (best.get(n, {"rate": NAN, "cpu": NAN}) for n in CHAINS)
    print(f"{scenario:<15} ratios    rate txrouter/uwsgi {ratio(tx['rate'], uw['rate'])}"
          f"  txrouter/direct {ratio(tx['rate'], direct['rate'])}"
          f"  cpu uwsgi/txrouter {ratio(uw['cpu'], tx['cpu'])}", flush=True)


if __name__ == "__main__":
    main()
