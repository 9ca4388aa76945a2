"""
txrouter-http against uWSGI's own HTTP router, on the same load.

One uWSGI backend (bench/app.py) listens on a unix socket.  Both routers are
put in front of it with keep-alive on (txrouter-http --keepalive, uwsgi
--http-keepalive), each pinned to CPU 0; the backend and wrk share CPU 1.
For each scenario, wrk drives each router in turn:

 - keepalive: 2-byte responses on keep-alive connections;
 - close: a new connection per request (Connection: close);
 - 1mib: 1 MiB responses on keep-alive connections.

The table gives requests/s and their ratio txrouter/uWSGI, each router's
CPU time per request (user + system of its processes, from /proc) and
their ratio uWSGI/txrouter (what counts: when the backend's CPU sets the
pace, requests/s flatter the slower router), p99 latency, how many
requests each TCP connection carried (wrk's request count over the kernel's
count of accepted connections, so a router that silently closes keep-alive
connections shows up), and how busy each CPU was: a CPU 1 near 100 % with
CPU 0 below means the backend and wrk, not the router, set the pace.
--baseline adds a row with wrk hitting the backend directly, the ceiling
the backend allows on CPU 1: the backend always also listens on an
--http11-socket (keep-alive; it ignores "Connection: close") and an
--http-socket (closes after every response) for that.

Run: .venv/bin/python bench/bench_http.py [--duration 10] [--connections 50]
Everything listens on 127.0.0.1 or unix sockets; every process is stopped
by its PID at the end.
"""

import argparse
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.realpeers import (  # noqa: E402
    TXROUTER_COMMAND,
    Process,
    free_port,
    wait_for_tcp,
    wait_for_unix,
)

SCENARIOS = {
    "keepalive": ("/", [], True),
    "close": ("/", ["-H", "Connection: close"], False),
    "1mib": ("/1mib", [], True),
}
ROUTER_CPU, LOAD_CPU = "0", "1"
NAN = float("nan")
TICKS = os.sysconf("SC_CLK_TCK")


def pinned(cpu: str, args, log: pathlib.Path, env=None) -> Process:
    """
    Run C{args} pinned to one CPU (taskset execs, so the PID is the
    command's own).
    """
    return Process(["taskset", "-c", cpu, *args], log, env=env)


def router_cpu(pid: int) -> float:
    """
    Seconds of CPU (user + system) used so far by C{pid} and its
    descendants (uWSGI's router is a child of its master).
    """
    total = 0.0
    stack = [pid]
    while stack:
        current = stack.pop()
        try:
            fields = pathlib.Path(f"/proc/{current}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / TICKS
        for task in pathlib.Path(f"/proc/{current}/task").iterdir():
            try:
                stack += [int(child) for child in (task / "children").read_text().split()]
            except OSError:
                pass
    return total


def measured(pid: int, run) -> dict:
    """
    C{run()} (a wrk run's result), with the router's CPU microseconds per
    request under C{cpu_us}: what a router costs, whoever sets the pace.
    """
    before = router_cpu(pid)
    result = run()
    result["cpu_us"] = (router_cpu(pid) - before) / max(result["requests"], 1) * 1e6
    return result


def passive_opens() -> int:
    """
    The kernel's count of TCP connections accepted so far (all of them are
    ours: router to backend is a unix socket).
    """
    lines = pathlib.Path("/proc/net/snmp").read_text().splitlines()
    heads, values = [line.split() for line in lines if line.startswith("Tcp:")][:2]
    return int(values[heads.index("PassiveOpens")])


def cpu_times() -> dict:
    """
    (busy, total) jiffies per CPU from /proc/stat.
    """
    times = {}
    for line in pathlib.Path("/proc/stat").read_text().splitlines():
        name, *fields = line.split()
        if re.fullmatch(r"cpu\d+", name):
            values = [int(v) for v in fields[:8]]
            idle = values[3] + values[4]
            times[name[3:]] = (sum(values) - idle, sum(values))
    return times


def busy_percent(before: dict, after: dict, cpu: str) -> float:
    busy = after[cpu][0] - before[cpu][0]
    total = after[cpu][1] - before[cpu][1]
    return 100.0 * busy / total if total else NAN


def to_ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def parse_wrk(out: str) -> dict:
    """
    Requests/s, p99 (ms), request count and error lines from C{wrk --latency}.
    """
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)
    count = re.search(r"^\s+(\d+) requests in", out, re.M)
    errors = re.findall(r"^\s*(Socket errors: .*|Non-2xx or 3xx responses: \d+)$", out, re.M)
    if rps is None or count is None:
        raise RuntimeError(f"wrk said:\n{out}")
    return {
        "rps": float(rps.group(1)),
        "p99": to_ms(*p99.groups()) if p99 else NAN,
        "requests": int(count.group(1)),
        "errors": "; ".join(errors),
    }


def wrk(port: int, path: str, extra, duration: int, connections: int) -> dict:
    """
    One pinned wrk run, with the connections it opened and the CPU use.
    """
    opens, cpus = passive_opens(), cpu_times()
    run = subprocess.run(
        ["taskset", "-c", LOAD_CPU, "wrk", "-t1", f"-c{connections}", f"-d{duration}s",
         "--timeout", "5s", "--latency", *extra, f"http://127.0.0.1:{port}{path}"],
        capture_output=True, text=True, timeout=duration + 30,
    )
    result = parse_wrk(run.stdout + run.stderr)
    after = cpu_times()
    result["connections"] = passive_opens() - opens
    result["per_connection"] = result["requests"] / max(result["connections"], 1)
    result["cpu0"] = busy_percent(cpus, after, ROUTER_CPU)
    result["cpu1"] = busy_percent(cpus, after, LOAD_CPU)
    return result


def start_routers(options, work: pathlib.Path, sock: str) -> dict:
    """
    The routers asked for, each pinned to CPU 0: name -> (Process, port).
    """
    routers = {}
    if options.only != "txrouter":
        port = free_port()
        routers["uwsgi"] = (pinned(
            ROUTER_CPU, ["uwsgi", "--plugin", "http", "--master", "--die-on-term",
                         "--http", f"127.0.0.1:{port}", "--http-to", sock, "--http-keepalive",
                         "--listen", "1024"],
            work / "uwsgi-router.log"), port)
    if options.only != "uwsgi":
        port = free_port()
        command = shlex.split(options.router_cmd) if options.router_cmd else TXROUTER_COMMAND
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        routers["txrouter"] = (pinned(
            ROUTER_CPU, [*command, "--bind", f"tcp:{port}:interface=127.0.0.1:backlog=1024",
                         "--to", sock, "--keepalive"],
            work / "txrouter.log", env), port)
    return routers


def row(name, uwsgi, txrouter) -> str:
    def side(result, key, fmt):
        return format(result[key], fmt) if result else format("-", re.sub(r"\.\d+f", "", fmt))
    ratio = txrouter["rps"] / uwsgi["rps"] if uwsgi and txrouter else NAN
    cpuRatio = uwsgi["cpu_us"] / txrouter["cpu_us"] if uwsgi and txrouter else NAN
    return (f"{name:<10} {side(uwsgi, 'rps', '>12.0f')} {side(txrouter, 'rps', '>15.0f')}"
            f" {ratio:>6.2f} {side(uwsgi, 'cpu_us', '>9.1f')} {side(txrouter, 'cpu_us', '>9.1f')}"
            f" {cpuRatio:>6.2f} {side(uwsgi, 'p99', '>10.2f')} {side(txrouter, 'p99', '>9.2f')}"
            f"   {side(uwsgi, 'per_connection', '>8.1f')} {side(txrouter, 'per_connection', '>8.1f')}"
            f"   {side(uwsgi, 'cpu0', '>3.0f')}/{side(uwsgi, 'cpu1', '<3.0f')}"
            f"   {side(txrouter, 'cpu0', '>3.0f')}/{side(txrouter, 'cpu1', '<3.0f')}")


HEADER = (f"{'scenario':<10} {'uWSGI req/s':>12} {'txrouter req/s':>15} {'ratio':>6}"
          f" {'uWSGI cpu':>9} {'tx cpu':>9} {'ratio':>6}"
          f" {'uWSGI p99':>10} {'tx p99':>9}   {'uW r/c':>8} {'tx r/c':>8}"
          f"   {'uW cpu0/1':>9}   {'tx cpu0/1':>9}\n"
          f"{'':<10} {'':>12} {'':>15} {'':>6} {'µs/req':>9} {'µs/req':>9} {'uW/tx':>6}"
          f" {'ms':>10} {'ms':>9}"
          f"   {'req/conn':>8} {'req/conn':>8}   {'busy %':>9}   {'busy %':>9}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS))
    parser.add_argument("--only", choices=["uwsgi", "txrouter"])
    parser.add_argument("--rounds", type=int, default=1,
                        help="alternate the two routers this many times; keep each one's best")
    parser.add_argument("--backend-processes", type=int, default=2)
    parser.add_argument("--baseline", action="store_true",
                        help="also run wrk against the backend's own HTTP/1.1 socket")
    parser.add_argument("--router-cmd", metavar="CMD",
                        help="the txrouter command before --bind (default: "
                             + shlex.join(map(str, TXROUTER_COMMAND)) + ")")
    options = parser.parse_args()
    for tool in ("uwsgi", "wrk", "taskset"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is missing: run scripts/setup first")
    if len(os.sched_getaffinity(0)) < 2:
        print("warning: fewer than 2 CPUs; the pinning is meaningless", file=sys.stderr)

    work = pathlib.Path(tempfile.mkdtemp(prefix="txrouter-bench-"))
    sock = str(work / "app.sock")
    keepAlivePort, closePort = free_port(), free_port()
    processes = []
    try:
        backend = pinned(
            LOAD_CPU, ["uwsgi", "--plugin", "python3", "--master", "--die-on-term",
                       "--socket", sock, "--http11-socket", f"127.0.0.1:{keepAlivePort}",
                       "--http-socket", f"127.0.0.1:{closePort}",
                       "--wsgi-file", ROOT / "bench" / "app.py",
                       "--processes", options.backend_processes,
                       "--listen", "1024", "--disable-logging"],
            work / "backend.log")
        processes.append(backend)
        wait_for_unix(sock, process=backend)
        routers = start_routers(options, work, sock)
        for name, (process, port) in routers.items():
            processes.append(process)
            wait_for_tcp(port, 20, process=process)

        print(HEADER, flush=True)
        for scenario in options.scenario or list(SCENARIOS):
            path, extra, keepAlive = SCENARIOS[scenario]
            best = {}
            for _ in range(options.rounds):
                for name, (process, port) in routers.items():
                    result = measured(process.pid, lambda: wrk(
                        port, path, extra, options.duration, options.connections))
                    if result["errors"]:
                        print(f"  {name} {scenario}: {result['errors']}", file=sys.stderr)
                    if name not in best or result["rps"] > best[name]["rps"]:
                        best[name] = result
            print(row(scenario, best.get("uwsgi"), best.get("txrouter")), flush=True)
            if options.baseline:
                direct = wrk(keepAlivePort if keepAlive else closePort, path, extra,
                             options.duration, options.connections)
                print(f"{'  direct':<10} {direct['rps']:>12.0f} {'(backend alone, no router)':>26}"
                      f" {direct['p99']:>10.2f} {'':>9}   {direct['per_connection']:>8.1f}"
                      f" {'':>8}   {direct['cpu0']:>3.0f}/{direct['cpu1']:<3.0f}", flush=True)
    finally:
        for process in reversed(processes):
            process.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
