"""
txrouter-http --http2 against nginx's http2 listener with uwsgi_pass, on
the same load, and against txrouter's own HTTP/1.1 path (issue 18).

One uWSGI backend (bench/app.py) on a unix socket, with the load tool on
CPU 1; each front end pinned to CPU 0 in turn.  h2load (Debian's
nghttp2-client) drives it:

 - h2: HTTP/2 with prior knowledge (h2c), C{--connections} connections of
   C{--streams} concurrent streams each, 2-byte responses;
 - h1: the same requests over HTTP/1.1 keep-alive connections (h2load
   --h1), as many connections as there were streams in all (txrouter
   only: the 2x goal is HTTP/2's CPU per request against this one's).

The table gives requests/s, the front end's CPU per request (user +
system of its processes, from /proc, whoever sets the pace) and how busy
each CPU was: a CPU 1 near 100 % means the backend, not the front end,
set the pace.

Run: .venv/bin/python bench/bench_http2.py [--duration 10] [--connections 10] [--streams 10]
Everything listens on 127.0.0.1 or unix sockets; every process is stopped
by its PID at the end.
"""

import argparse
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_http import LOAD_CPU, ROUTER_CPU, busy_percent, cpu_times, pinned, router_cpu  # noqa: E402
from tests.realpeers import TXROUTER_COMMAND, free_port, nginx, wait_for_tcp, wait_for_unix  # noqa: E402


def h2load(port: int, duration: int, connections: int, streams: int, h1: bool) -> dict:
    """
    One pinned h2load run: requests/s, the requests done and failed.
    """
    args = ["-c", str(connections * streams), "-m", "1", "--h1"] if h1 else \
        ["-c", str(connections), "-m", str(streams)]
    cpus = cpu_times()
    run = subprocess.run(
        ["taskset", "-c", LOAD_CPU, "h2load", "-D", str(duration), *args,
         f"http://127.0.0.1:{port}/"],
        capture_output=True, text=True, timeout=duration + 60,
    )
    after = cpu_times()
    out = run.stdout + run.stderr
    rps = re.search(r"finished in [\d.]+s, ([\d.]+) req/s", out)
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed", out)
    if rps is None or done is None:
        raise RuntimeError(f"h2load said:\n{out}")
    return {
        "rps": float(rps.group(1)), "requests": int(done.group(2)), "failed": int(done.group(3)),
        "cpu0": busy_percent(cpus, after, ROUTER_CPU), "cpu1": busy_percent(cpus, after, LOAD_CPU),
    }


def measured(pid: int, run) -> dict:
    before = router_cpu(pid)
    result = run()
    result["cpu_us"] = (router_cpu(pid) - before) / max(result["requests"], 1) * 1e6
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per h2load run")
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--streams", type=int, default=10, help="concurrent streams per connection")
    parser.add_argument("--backend-processes", type=int, default=2)
    options = parser.parse_args()
    for tool in ("uwsgi", "h2load", "nginx", "taskset"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is missing: run scripts/setup first")

    work = pathlib.Path(tempfile.mkdtemp(prefix="txrouter-bench-h2-"))
    sock = str(work / "app.sock")
    processes = []
    try:
        backend = pinned(
            LOAD_CPU, ["uwsgi", "--plugin", "python3", "--master", "--die-on-term",
                       "--socket", sock, "--wsgi-file", ROOT / "bench" / "app.py",
                       "--processes", options.backend_processes, "--listen", "1024",
                       "--disable-logging"],
            work / "backend.log")
        processes.append(backend)
        wait_for_unix(sock, process=backend)
        txPort, nginxPort = free_port(), free_port()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        tx = pinned(ROUTER_CPU, [*TXROUTER_COMMAND, "--bind",
                                 f"tcp:{txPort}:interface=127.0.0.1:backlog=1024", "--to", sock,
                                 "--keepalive", "--http2"], work / "txrouter.log", env)
        processes.append(tx)
        wait_for_tcp(txPort, 20, process=tx)
        front = nginx(work, nginxPort, sock, access_log=False, listen_options="http2",
                      wrapper=("taskset", "-c", ROUTER_CPU))
        processes.append(front)

        runs = [("txrouter h2", tx, txPort, False), ("nginx h2", front, nginxPort, False),
                ("txrouter h1", tx, txPort, True)]
        print(f"{'front end':<12} {'req/s':>9} {'cpu µs/req':>11} {'failed':>7} {'cpu0/1 busy %':>14}")
        results = {}
        for name, process, port, h1 in runs:
            result = results[name] = measured(process.pid, lambda: h2load(
                port, options.duration, options.connections, options.streams, h1))
            print(f"{name:<12} {result['rps']:>9.0f} {result['cpu_us']:>11.1f}"
                  f" {result['failed']:>7} {result['cpu0']:>7.0f}/{result['cpu1']:<3.0f}",
                  flush=True)
        ratio = results["txrouter h2"]["cpu_us"] / results["txrouter h1"]["cpu_us"]
        print(f"txrouter CPU per request, HTTP/2 / HTTP/1.1: {ratio:.2f} (goal: within 2)")
    finally:
        for process in reversed(processes):
            process.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
