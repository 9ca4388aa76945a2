"""
txrouter-fast against uWSGI's own FastRouter behind nginx, on the same load.

One uWSGI backend (bench/app.py) listens on a unix socket.  Three chains
are put in front of it, each with its own nginx (uwsgi_pass, Debian's
uwsgi_params, response buffering on without temporary files):

 - txrouter: nginx -> twistd txrouter-fast -> backend;
 - uwsgi: nginx -> uwsgi --fastrouter -> backend;
 - direct: nginx -> backend, no router (the ceiling of the other two).

The routers are pinned to CPU 0, alone; nginx, the backend and wrk share
CPU 1.  nginx keeps the client connections alive but opens a new uwsgi
connection to its upstream for every request (the uwsgi protocol has no
keep-alive), so each request costs a router one accept, one connect to the
backend and two closes.  For each scenario, wrk drives each chain in turn:

 - keepalive: 2-byte responses on keep-alive connections to nginx;
 - 1mib: 1 MiB responses on keep-alive connections to nginx.

The table gives requests/s, p99 latency and how busy each CPU was (a CPU 0
at 100 % means the router sets the pace; CPU 1 at 100 % with CPU 0 below,
that nginx, the backend and wrk do), then the ratios txrouter/uWSGI and
txrouter/direct.

Run: .venv/bin/python bench/bench_fast.py [--duration 10] [--rounds 3]
Everything listens on 127.0.0.1 or unix sockets; every process is stopped
by its PID at the end.
"""

import argparse
import os
import pathlib
import shlex
import shutil
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_http import LOAD_CPU, NAN, ROUTER_CPU, measured, pinned, wrk  # noqa: E402
from tests.realpeers import (  # noqa: E402
    TXROUTER_FAST_COMMAND,
    free_port,
    nginx,
    txrouter_fast,
    uwsgi_fastrouter,
    wait_for_unix,
)

SCENARIOS = {
    "keepalive": "/",
    "1mib": "/1mib",
}
CHAINS = ("txrouter", "uwsgi", "direct")
HOST = "bench.local"


def start_routers(options, work: pathlib.Path, sock: str) -> dict:
    """
    The routers asked for, each pinned to CPU 0: name -> Process (with the
    C{address} nginx passes to).
    """
    routers = {}
    unix = options.unix
    if options.mapper == "pattern":
        txMapper = ["--use-pattern", str(work / "%s.sock")]
        uwMapper = ["--fastrouter-use-pattern", str(work / "%s.sock")]
    else:
        txMapper, uwMapper = ["--to", sock], ["--fastrouter-to", sock]
    if options.only in (None, "uwsgi"):
        routers["uwsgi"] = uwsgi_fastrouter(
            work, str(work / "uwsgi-fastrouter.sock") if unix else free_port(),
            [*uwMapper, "--listen", "1024"], wrapper=["taskset", "-c", ROUTER_CPU])
    if options.only in (None, "txrouter"):
        bind = (f"unix:{work / 'txrouter-fast.sock'}:backlog=1024" if unix
                else f"tcp:{free_port()}:interface=127.0.0.1:backlog=1024")
        command = shlex.split(options.router_cmd) if options.router_cmd else None
        routers["txrouter"] = txrouter_fast(
            work, bind, [*txMapper, *shlex.split(options.txrouter_args)], command=command,
            wrapper=["taskset", "-c", ROUTER_CPU])
    return routers


def row(scenario: str, name: str, result: dict) -> str:
    cpu = result.get("cpu_us", NAN)
    return (f"{scenario:<10} {name:<9} {result['rps']:>10.0f} {cpu:>9.1f} {result['p99']:>9.2f}"
            f"   {result['cpu0']:>4.0f} {result['cpu1']:>4.0f}   {result['errors'] or '-'}")


def ratio(best: dict, a: str, b: str) -> str:
    value = best[a]["rps"] / best[b]["rps"] if a in best and b in best else NAN
    return f"{a}/{b} {value:.2f}"


def cpuRatio(best: dict, a: str, b: str) -> str:
    """
    C{b}'s router CPU per request over C{a}'s (1: as cheap as C{b}).
    """
    value = best[b]["cpu_us"] / best[a]["cpu_us"] if a in best and b in best else NAN
    return f"router cpu {b}/{a} {value:.2f}"


HEADER = (f"{'scenario':<10} {'chain':<9} {'req/s':>10} {'cpu':>9} {'p99 ms':>9}"
          f"   {'cpu0':>4} {'cpu1':>4}   errors\n"
          f"{'':<10} {'':<9} {'':>10} {'µs/req':>9} {'':>9}   {'busy %':>9}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS))
    parser.add_argument("--only", choices=CHAINS, help="run one chain")
    parser.add_argument("--rounds", type=int, default=1,
                        help="alternate the chains this many times; keep each one's best")
    parser.add_argument("--backend-processes", type=int, default=2)
    parser.add_argument("--unix", action="store_true",
                        help="routers listen on unix sockets (default: 127.0.0.1 TCP ports)")
    parser.add_argument("--mapper", choices=["to", "pattern"], default="to",
                        help="static node (--to / --fastrouter-to, default) or Host-based"
                             " --use-pattern / --fastrouter-use-pattern DIR/%%s.sock")
    parser.add_argument("--no-nginx-buffering", action="store_true",
                        help="uwsgi_buffering off in nginx (default: on, no temporary files)")
    parser.add_argument("--router-cmd", metavar="CMD",
                        help="the txrouter command before --bind (default: "
                             + shlex.join(map(str, TXROUTER_FAST_COMMAND)) + ")")
    parser.add_argument("--txrouter-args", metavar="ARGS", default="",
                        help="more txrouter-fast options, e.g. '--post-buffering 65536'")
    options = parser.parse_args()
    for tool in ("uwsgi", "wrk", "taskset", "nginx"):
        if shutil.which(tool) is None and not os.path.exists(f"/usr/sbin/{tool}"):
            sys.exit(f"{tool} is missing: run scripts/setup first")
    if len(os.sched_getaffinity(0)) < 2:
        print("warning: fewer than 2 CPUs; the pinning is meaningless", file=sys.stderr)

    work = pathlib.Path(tempfile.mkdtemp(prefix="txrouter-bench-fast-"))
    sock = str(work / f"{HOST}.sock")
    processes = []
    try:
        backend = pinned(
            LOAD_CPU, ["uwsgi", "--plugin", "python3", "--master", "--die-on-term",
                       "--socket", sock, "--wsgi-file", ROOT / "bench" / "app.py",
                       "--processes", options.backend_processes,
                       "--listen", "1024", "--disable-logging"],
            work / "backend.log")
        processes.append(backend)
        wait_for_unix(sock, process=backend)
        routers = start_routers(options, work, sock)
        processes += routers.values()
        upstreams = {name: router.address for name, router in routers.items()}
        if options.only in (None, "direct"):
            upstreams["direct"] = sock
        webs = {}
        for name in CHAINS:
            if name in upstreams:
                webs[name] = nginx(
                    work, free_port(), upstreams[name], access_log=False,
                    uwsgi_buffering=not options.no_nginx_buffering,
                    extra_http="    uwsgi_max_temp_file_size 0;",
                    wrapper=["taskset", "-c", LOAD_CPU])
                processes.append(webs[name])

        print(HEADER, flush=True)
        for scenario in options.scenario or list(SCENARIOS):
            path = SCENARIOS[scenario]
            best = {}
            for _ in range(options.rounds):
                for name, web in webs.items():
                    run = lambda: wrk(web.port, path, ["-H", f"Host: {HOST}"],  # noqa: E731
                                      options.duration, options.connections)
                    router = routers.get(name)
                    result = measured(router.pid, run) if router is not None else run()
                    if result["errors"]:
                        print(f"  {name} {scenario}: {result['errors']}", file=sys.stderr)
                    if name not in best or result["rps"] > best[name]["rps"]:
                        best[name] = result
            for name in webs:
                print(row(scenario, name, best[name]), flush=True)
            if "txrouter" in best:
                print(f"{scenario:<10} ratios    {ratio(best, 'txrouter', 'uwsgi')}"
                      f"   {ratio(best, 'txrouter', 'direct')}"
                      f"   {cpuRatio(best, 'txrouter', 'uwsgi')}", flush=True)
    finally:
        for process in reversed(processes):
            process.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
