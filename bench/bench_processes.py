"""
txrouter-http with --processes: does the cost per request stay flat from
one process to N workers, and is the load shared evenly?

One uWSGI backend (bench/app.py, --backend-processes workers) on a unix
socket; txrouter-http in front of it, first as one process, then with
--processes N; wrk drives it with keep-alive connections, then with a new
connection per request (Connection: close).  Nothing is pinned: N
workers need N cores, and on a small machine the backend and wrk take
their share of the same cores, which the table says (each one's CPU
seconds per wall second).

For each run: requests/s; the router's CPU µs per request (user + system
of the twistd process and all its workers, from /proc, over wrk's request
count); each worker's share of the requests (its own count, from the
pool's --stats document) and of the router's CPU; the CPU the backend
and wrk used; and the router's sleeps per request (voluntary context
switches: a reactor that found nothing to do and waited in epoll_wait),
which says how many events each reactor iteration handled; and the part
of the router's CPU spent in the kernel.  "even" says whether each worker
served within ±15 % of 1/N of the requests.

With C{--syscalls}, perf counts (its tracepoints, no hardware counters
needed) the router's system calls per request: all of them, C{epoll_wait}
(reactor iterations), C{epoll_ctl}, C{accept4} and those that failed with
EAGAIN (a worker woken for a connection another took), and its context
switches, voluntary or not.  Equal counts with 1 and N processes mean the
router does the same work per request, whatever its CPU time says.

With C{--pin}, the router and all its workers share CPU 0, the backend
and wrk CPU 1 (C{taskset}): N workers then time-share one core, which
takes away what running on two cores at once costs (caches and wake-ups
across cores, a virtual machine's two vCPUs busy together) and leaves
what splitting the load costs.

C{--rounds R} runs everything R times, one process and N alternating, and
ends with the median CPU per request of each: on a shared machine a
single run's figure moves by tens of percent.

Run: .venv/bin/python bench/bench_processes.py [--duration 10] [--processes 2] [--rounds 3]
                                               [--syscalls] [--pin]
Everything listens on 127.0.0.1 or unix sockets; every process is stopped
by its PID at the end.
"""

import argparse
import json
import os
import pathlib
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_http import parse_wrk, router_cpu  # noqa: E402
from tests.realpeers import (  # noqa: E402
    TXROUTER_COMMAND,
    Process,
    free_port,
    wait_for_tcp,
    wait_for_unix,
    wait_until,
)

SCENARIOS = {"keepalive": [], "close": ["-H", "Connection: close"]}
TICKS = os.sysconf("SC_CLK_TCK")


def stats(path: pathlib.Path) -> dict:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(str(path))
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return json.loads(data)


def own_cpu(pid: int) -> float:
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def system_cpu(pids) -> float:
    """
    The CPU seconds C{pids} spent in the kernel so far.
    """
    return sum(int(pathlib.Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[12])
               for pid in pids) / TICKS


def switches(pids) -> int:
    """
    The voluntary context switches of C{pids} so far: each is a reactor
    that found nothing to do and slept in C{epoll_wait}.
    """
    total = 0
    for pid in pids:
        for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("voluntary_ctxt_switches:"):
                total += int(line.split()[1])
    return total


#: The kernel events C{--syscalls} counts in the router's processes
#: (perf's tracepoints; C{None}: no filter), each shown per request.
SYSCALLS = {
    "syscalls": ("raw_syscalls:sys_enter", None),
    "epoll_wait": ("syscalls:sys_enter_epoll_wait", None),
    "epoll_ctl": ("syscalls:sys_enter_epoll_ctl", None),
    "accept": ("syscalls:sys_enter_accept4", None),
    "EAGAIN": ("syscalls:sys_exit_accept4", "ret == -11"),
    "switches": ("context-switches", None),
}


def countSyscalls(pids) -> subprocess.Popen:
    """
    Start counting L{SYSCALLS} in C{pids}, until L{syscallCounts}.
    """
    events = []
    for event, where in SYSCALLS.values():
        events += ["-e", event] + (["--filter", where] if where else [])
    return subprocess.Popen(
        ["perf", "stat", "-x", ";", *events, "-p", ",".join(map(str, pids))],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

def syscallCounts(perf: subprocess.Popen) -> dict:
    """
    What L{countSyscalls} counted, by the names of L{SYSCALLS}.
    """
    perf.send_signal(signal.SIGINT)
    _, out = perf.communicate(timeout=10)
    counts = {}
    for line in out.splitlines():
        fields = line.split(";")
        for name, (event, _) in SYSCALLS.items():
            if len(fields) > 2 and fields[2] == event and name not in counts:
                counts[name] = int(fields[0]) if fields[0].isdigit() else 0
                break
    return counts


def started(document: dict) -> list:
    """
    The requests each worker (or the one process) began.
    """
    workers = document.get("workers") or [document]
    return [worker["requests"]["started"] for worker in workers]


def run(options, work, sock, processes: int, scenario: str) -> dict:
    port, statsPath = free_port(), work / f"stats-{processes}-{scenario}.sock"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    router = Process(
        [*options.routerPin, *TXROUTER_COMMAND, "--bind", f"tcp:{port}:interface=127.0.0.1:backlog=1024",
         "--to", sock, "--keepalive", "--processes", processes, "--stats", f"unix:{statsPath}"],
        work / f"txrouter-{processes}-{scenario}.log", env=env)
    try:
        wait_for_tcp(port, 20, process=router)
        wait_until(lambda: all(w.get("pid") for w in stats(statsPath).get("workers", [{"pid": 1}])),
                   "the workers", process=router)
        document = stats(statsPath)
        pids = [w["pid"] for w in document.get("workers", [])] or [router.pid]
        before = dict(
            requests=started(document), router=router_cpu(router.pid),
            workers=[own_cpu(pid) for pid in pids], backend=router_cpu(options.backend_pid),
            children=resource.getrusage(resource.RUSAGE_CHILDREN), wall=time.monotonic(),
            switches=switches(pids), system=system_cpu(pids),
        )
        perf = countSyscalls(sorted({router.pid, *pids})) if options.syscalls else None
        out = subprocess.run(
            [*options.loadPin, "wrk", "-t1", f"-c{options.connections}", f"-d{options.duration}s", "--timeout", "5s",
             "--latency", *SCENARIOS[scenario], f"http://127.0.0.1:{port}/"],
            capture_output=True, text=True, timeout=options.duration + 30)
        wall = time.monotonic() - before["wall"]
        counted = syscallCounts(perf) if perf is not None else {}
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        result = parse_wrk(out.stdout + out.stderr)
        routerCPU = router_cpu(router.pid) - before["router"]
        served = [after - b for after, b in zip(started(stats(statsPath)), before["requests"])]
        result.update(
            processes=processes, scenario=scenario,
            cpu_us=routerCPU / max(result["requests"], 1) * 1e6,
            sleeps=(switches(pids) - before["switches"]) / max(result["requests"], 1),
            router_cores=routerCPU / wall,
            shares=[count / max(sum(served), 1) for count in served],
            system=(system_cpu(pids) - before["system"]) / max(routerCPU, 1e-9),
            worker_cpu=[(own_cpu(pid) - b) / max(routerCPU, 1e-9)
                        for pid, b in zip(pids, before["workers"])],
            backend_cores=(router_cpu(options.backend_pid) - before["backend"]) / wall,
            wrk_cores=(children.ru_utime + children.ru_stime - before["children"].ru_utime
                       - before["children"].ru_stime) / wall,
            syscalls={name: count / max(result["requests"], 1) for name, count in counted.items()},
        )
        return result
    finally:
        router.stop()


def line(result) -> str:
    shares = "/".join(f"{100 * share:.0f}" for share in result["shares"])
    cpu = "/".join(f"{100 * share:.0f}" for share in result["worker_cpu"]) \
        if result["processes"] > 1 else "-"
    n = result["processes"]
    even = all(abs(share - 1 / n) <= 0.15 / n for share in result["shares"])
    return (f"{result['scenario']:<10} {n:>5} {result['rps']:>9.0f} {result['cpu_us']:>8.1f}"
            f" {result['router_cores']:>7.2f} {shares:>10} {cpu:>10} {'yes' if even else 'NO':>5}"
            f" {result['backend_cores']:>8.2f} {result['wrk_cores']:>6.2f} {result['p99']:>8.2f}"
            f" {result['sleeps']:>7.2f} {100 * result['system']:>6.0f}"
            + "".join(f" {result['syscalls'].get(name, 0):>{max(len(name), 6)}.2f}"
                      for name in SYSCALLS if result["syscalls"])
            + (f"  {result['errors']}" if result["errors"] else ""))


HEADER = (f"{'scenario':<10} {'procs':>5} {'req/s':>9} {'µs/req':>8} {'cores':>7}"
          f" {'req %':>10} {'cpu %':>10} {'even':>5} {'backend':>8} {'wrk':>6} {'p99 ms':>8}"
          f" {'sleeps':>7} {'kernel':>6}\n"
          f"{'':<10} {'':>5} {'':>9} {'router':>8} {'router':>7} {'per wkr':>10}"
          f" {'per wkr':>10} {'±15%':>5} {'cores':>8} {'cores':>6} {'':>8} {'per req':>7}"
          f" {'% cpu':>6}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--processes", type=int, default=2, help="N, run after 1")
    parser.add_argument("--backend-processes", type=int, default=2)
    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS))
    parser.add_argument("--rounds", type=int, default=1,
                        help="run everything R times (alternating 1 and N) and give the medians")
    parser.add_argument("--pin", action="store_true",
                        help="the router (all its workers) on CPU 0, the backend and wrk on CPU 1")
    parser.add_argument("--syscalls", action="store_true",
                        help="count the router's system calls per request (needs perf)")
    options = parser.parse_args()
    for tool in ("uwsgi", "wrk"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is missing: run scripts/setup first")
    work = pathlib.Path(tempfile.mkdtemp(prefix="txrouter-bench-"))
    sock = str(work / "app.sock")
    options.routerPin, options.loadPin = (
        (["taskset", "-c", "0"], ["taskset", "-c", "1"]) if options.pin else ([], []))
    backend = Process(
        [*options.loadPin, "uwsgi", "--plugin", "python3", "--master", "--die-on-term", "--socket", sock,
         "--wsgi-file", ROOT / "bench" / "app.py", "--processes", options.backend_processes,
         "--listen", "1024", "--disable-logging"], work / "backend.log")
    try:
        wait_for_unix(sock, process=backend)
        options.backend_pid = backend.pid
        print(f"{os.cpu_count()} cores; {options.connections} connections,"
              f" {options.duration} s per run; backend: {options.backend_processes} uWSGI workers")
        print(HEADER + ("\n" + "per request:".rjust(len(HEADER.splitlines()[0])) + "".join(
            f" {name:>6}" for name in SYSCALLS) if options.syscalls else ""), flush=True)
        cpu = {}
        for _ in range(options.rounds):
            for scenario in options.scenario or list(SCENARIOS):
                for processes in (1, options.processes):
                    result = run(options, work, sock, processes, scenario)
                    cpu.setdefault((scenario, processes), []).append(result["cpu_us"])
                    print(line(result), flush=True)
        if options.rounds > 1:
            for scenario in options.scenario or list(SCENARIOS):
                one, n = (statistics.median(cpu[scenario, p]) for p in (1, options.processes))
                print(f"{scenario}: median µs/req {one:.1f} (1) -> {n:.1f} ({options.processes}),"
                      f" {100 * (n / one - 1):+.0f} %")
    finally:
        backend.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
