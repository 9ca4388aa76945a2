"""
txrouter-https against uWSGI's own HTTPS router, on the same load and the
same pinning as bench/bench_http.py (routers on CPU 0; the uWSGI backend
and wrk on CPU 1).

Both serve one ECDSA P-256 certificate of a test CA (made here, as the
tests make theirs) in front of one uWSGI backend (bench/app.py) on a unix
socket, with keep-alive on:

 - handshakes: a new TLS connection per request (wrk with Connection:
   close; wrk resumes no session, so each is a full handshake);
 - keepalive: 2-byte responses on kept TLS connections.

For each, requests/s and their ratio txrouter/uWSGI, and each router's
CPU time per request (a handshake, or a request) and the ratio
uWSGI/txrouter: TLS work is OpenSSL's in both, so this is what the rest
costs.

Run: .venv/bin/python bench/bench_https.py [--duration 8] [--connections 20]
Everything listens on 127.0.0.1 or unix sockets; every process is stopped
by its PID at the end.
"""

import argparse
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_http import (  # noqa: E402
    LOAD_CPU,
    ROUTER_CPU,
    cpu_times,
    busy_percent,
    parse_wrk,
    pinned,
    router_cpu,
)
from tests.realpeers import TWISTD_COMMAND, Process, free_port, wait_for_tcp, wait_for_unix  # noqa: E402
from tests.tlspki import PrivateCA  # noqa: E402

SCENARIOS = {
    "handshakes": ["-H", "Connection: close"],
    "keepalive": [],
}


def wrk(port: int, extra, duration: int, connections: int) -> dict:
    cpus = cpu_times()
    run = subprocess.run(
        ["taskset", "-c", LOAD_CPU, "wrk", "-t1", f"-c{connections}", f"-d{duration}s",
         "--timeout", "5s", "--latency", *extra, f"https://127.0.0.1:{port}/"],
        capture_output=True, text=True, timeout=duration + 30,
    )
    result = parse_wrk(run.stdout + run.stderr)
    after = cpu_times()
    result["cpu0"] = busy_percent(cpus, after, ROUTER_CPU)
    result["cpu1"] = busy_percent(cpus, after, LOAD_CPU)
    return result


def measured(pid: int, port: int, extra, duration: int, connections: int) -> dict:
    before = router_cpu(pid)
    result = wrk(port, extra, duration, connections)
    result["cpu_us"] = (router_cpu(pid) - before) / max(result["requests"], 1) * 1e6
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--connections", type=int, default=20)
    options = parser.parse_args()
    work = pathlib.Path(tempfile.mkdtemp(prefix="bench-https-"))
    processes = []
    try:
        ca = PrivateCA(work)
        server = ca.issue("server", ["bench.local"])
        sock = str(work / "app.sock")
        processes.append(pinned(LOAD_CPU, [
            "uwsgi", "--plugin", "python3", "--master", "--die-on-term", "--socket", sock,
            "--wsgi-file", str(ROOT / "bench" / "app.py"), "--processes", "1",
            "--listen", "1024", "--disable-logging"], work / "backend.log"))
        wait_for_unix(sock, 20, processes[-1])
        pair = f"{server.certificatePath},{server.keyPath}"
        uwsgiPort, txPort = free_port(), free_port()
        uwsgi = pinned(ROUTER_CPU, [
            "uwsgi", "--plugin", "http", "--master", "--die-on-term",
            "--https", f"127.0.0.1:{uwsgiPort},{pair}", "--http-to", sock,
            "--http-keepalive", "--listen", "1024"], work / "uwsgi-router.log")
        processes.append(uwsgi)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        txrouter = pinned(ROUTER_CPU, [
            *TWISTD_COMMAND, "-n", "--pidfile=", "txrouter-https",
            "--https", f"127.0.0.1:{txPort},{pair}", "--to", sock, "--keepalive"],
            work / "txrouter.log", env)
        processes.append(txrouter)
        for port, process in ((uwsgiPort, uwsgi), (txPort, txrouter)):
            wait_for_tcp(port, 20, process=process)
        print(f"{'scenario':<11} {'router':<9} {'req/s':>9} {'cpu us/req':>11}"
              f" {'p99 ms':>8} {'cpu0 %':>7} {'cpu1 %':>7}  errors")
        ratios = []
        for name, extra in SCENARIOS.items():
            results = {}
            for router, port, process in (("uwsgi", uwsgiPort, uwsgi),
                                          ("txrouter", txPort, txrouter)):
                result = results[router] = measured(
                    process.pid, port, extra, options.duration, options.connections)
                print(f"{name:<11} {router:<9} {result['rps']:>9.0f} {result['cpu_us']:>11.1f}"
                      f" {result['p99']:>8.2f} {result['cpu0']:>7.1f} {result['cpu1']:>7.1f}"
                      f"  {result['errors']}")
            ratios.append((name, results["txrouter"]["rps"] / results["uwsgi"]["rps"],
                           results["uwsgi"]["cpu_us"] / results["txrouter"]["cpu_us"]))
        print()
        for name, rps, cpu in ratios:
            print(f"{name}: req/s txrouter/uWSGI {rps:.2f}, CPU per request uWSGI/txrouter {cpu:.2f}")
    finally:
        for process in reversed(processes):
            process.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
