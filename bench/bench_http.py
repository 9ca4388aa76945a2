"""
txrouter-http against uWSGI's own HTTP router, on the same load.

One uWSGI backend (bench/app.py, 2 processes) listens on a unix socket.
Both routers are put in front of it, each pinned to CPU 0; the backend and
wrk share CPU 1.  For each scenario, wrk drives each router in turn and the
table shows requests/s, p99 latency and the ratio txrouter/uWSGI:

 - keepalive: small responses on keep-alive connections;
 - close: a new connection per request (Connection: close);
 - 1mib: 1 MiB responses on keep-alive connections.

Run: .venv/bin/python bench/bench_http.py [--duration 10] [--connections 50]
Everything listens on 127.0.0.1 or unix sockets; every process is stopped
by its PID at the end.
"""

import argparse
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.realpeers import TWISTD, Process, freePort, tcpAccepts, unixAccepts, waitUntil  # noqa: E402

SCENARIOS = {
    "keepalive": ("/", []),
    "close": ("/", ["-H", "Connection: close"]),
    "1mib": ("/1mib", []),
}


def pinned(cpu: str, args, log: pathlib.Path) -> Process:
    """
    Run C{args} pinned to one CPU.
    """
    return Process(["taskset", "-c", cpu, *args], log)


def wrk(port: int, path: str, extra, duration: int, connections: int) -> dict:
    out = subprocess.run(
        ["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{duration}s",
         "--latency", *extra, f"http://127.0.0.1:{port}{path}"],
        capture_output=True, text=True, timeout=duration + 30,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)", out)
    return {"rps": rps, "p99": float(p99.group(1)) * scale, "errors": errors.group(0) if errors else ""}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS))
    parser.add_argument("--only", choices=["uwsgi", "txrouter"])
    parser.add_argument("--rounds", type=int, default=1,
                        help="alternate the two routers this many times; keep the best")
    options = parser.parse_args()
    for tool in ("uwsgi", "wrk", "taskset"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is missing: run scripts/setup first")

    work = pathlib.Path(tempfile.mkdtemp(prefix="txrouter-bench-"))
    sock = str(work / "app.sock")
    uwsgiPort, txPort = freePort(), freePort()
    processes = []
    try:
        processes.append(pinned(
            "1", ["uwsgi", "--plugin", "python3", "--master", "--die-on-term", "--socket", sock,
                  "--wsgi-file", ROOT / "bench" / "app.py", "--processes", "2",
                  "--listen", "1024", "--disable-logging"],
            work / "backend.log",
        ))
        waitUntil(lambda: unixAccepts(sock), "the uWSGI backend")
        routers = {}
        if options.only != "txrouter":
            routers["uwsgi"] = (pinned(
                "0", ["uwsgi", "--plugin", "http", "--master", "--die-on-term",
                      "--http", f"127.0.0.1:{uwsgiPort}", "--http-to", sock, "--http-keepalive",
                      "--listen", "1024"],
                work / "uwsgi-router.log"), uwsgiPort)
        if options.only != "uwsgi":
            routers["txrouter"] = (pinned(
                "0", [TWISTD, "-n", "--pidfile=", "txrouter-http",
                      "--bind", f"tcp:{txPort}:interface=127.0.0.1:backlog=1024",
                      "--to", sock, "--keepalive"],
                work / "txrouter.log"), txPort)
        for name, (process, port) in routers.items():
            processes.append(process)
            waitUntil(lambda: tcpAccepts(port), name)

        print(f"{'scenario':<10} {'uWSGI req/s':>12} {'txrouter req/s':>15} {'ratio':>6}"
              f" {'uWSGI p99':>10} {'tx p99':>9}")
        for scenario in options.scenario or list(SCENARIOS):
            path, extra = SCENARIOS[scenario]
            best = {}
            for _ in range(options.rounds):
                for name, (_, port) in routers.items():
                    result = wrk(port, path, extra, options.duration, options.connections)
                    if result["errors"]:
                        print(f"  {name} {scenario}: {result['errors']}", file=sys.stderr)
                    if name not in best or result["rps"] > best[name]["rps"]:
                        best[name] = result
            u = best.get("uwsgi", {"rps": float("nan"), "p99": float("nan")})
            t = best.get("txrouter", {"rps": float("nan"), "p99": float("nan")})
            print(f"{scenario:<10} {u['rps']:>12.0f} {t['rps']:>15.0f} {t['rps'] / u['rps']:>6.2f}"
                  f" {u['p99']:>8.2f}ms {t['p99']:>7.2f}ms", flush=True)
    finally:
        for process in reversed(processes):
            process.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
