"""
txrouter-http in front of an HTTP node, with and without --node-keepalive,
beside nginx proxying with an upstream keepalive pool.

The node is nginx itself answering a 2-byte body from memory (C code, so
the router, not the node, is what the figures compare), on CPU 1 with wrk.
Each router is pinned to CPU 0 and driven by wrk over keep-alive client
connections:

 - txrouter: txrouter-http --keepalive --to http://NODE (a connection to
   the node per request);
 - txrouter-pool: the same with --node-keepalive 64 (connections to the
   node kept and reused);
 - nginx: proxy_pass to the node with keepalive 64 in its upstream block
   (one worker), the reference;

uWSGI 2.0's HTTP router cannot speak HTTP to its nodes (2.1's
--http-backend-http connects per request), so it has no row.

The table gives requests/s, p99 latency, the router's CPU time per request
(user + system of its processes, from /proc, over the run) and the node
connections opened per request (the kernel's count of accepted TCP
connections: the node is the only TCP listener that sees new ones, the
clients' connections being kept alive).

Run: .venv/bin/python bench/bench_http_nodes.py [--duration 8] [--rounds 2]
Everything listens on 127.0.0.1; every process is stopped by its PID.
"""

import argparse
import os
import pathlib
import shutil
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_http import LOAD_CPU, ROUTER_CPU, measured, pinned, wrk  # noqa: E402
from tests.realpeers import TXROUTER_COMMAND, free_port, wait_for_tcp  # noqa: E402

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def nginx(work: pathlib.Path, name: str, cpu: str, server: str):
    """
    An nginx of one worker on C{cpu}, with C{server} as its server block.
    """
    prefix = work / name
    (prefix / "logs").mkdir(parents=True)
    config = prefix / "nginx.conf"
    config.write_text(f"""
daemon off;
master_process on;
worker_processes 1;
error_log {prefix}/logs/error.log warn;
pid {prefix}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    keepalive_requests 1000000;
    {server}
}}
""")
    return pinned(cpu, [NGINX, "-p", prefix, "-c", config], work / f"{name}.log")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=8, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=1,
                        help="run every router this many times; keep each one's best")
    options = parser.parse_args()
    for tool in ("wrk", "taskset"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is missing: run scripts/setup first")
    if not os.path.exists(NGINX):
        sys.exit("nginx is missing: run scripts/setup first")

    work = pathlib.Path(tempfile.mkdtemp(prefix="txrouter-bench-nodes-"))
    nodePort = free_port()
    processes = []
    try:
        node = nginx(work, "node", LOAD_CPU, f"""
    server {{
        listen 127.0.0.1:{nodePort};
        keepalive_timeout 60s;
        location / {{ return 200 "ok"; }}
    }}""")
        processes.append(node)
        wait_for_tcp(nodePort, process=node)
        routers = {}
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        for name, extra in (("txrouter", []), ("txrouter-pool", ["--node-keepalive", "64"])):
            port = free_port()
            routers[name] = (pinned(
                ROUTER_CPU, [*TXROUTER_COMMAND, "--bind", f"tcp:{port}:interface=127.0.0.1:backlog=1024",
                             "--to", f"http://127.0.0.1:{nodePort}", "--keepalive", *extra],
                work / f"{name}.log", env), port)
        port = free_port()
        routers["nginx"] = (nginx(work, "proxy", ROUTER_CPU, f"""
    upstream node {{ server 127.0.0.1:{nodePort}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://node;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}"""), port)
        for process, port in routers.values():
            processes.append(process)
            wait_for_tcp(port, 20, process=process)

        best = {}
        for _ in range(options.rounds):
            for name, (process, port) in routers.items():
                result = measured(process.pid, lambda: wrk(
                    port, "/", [], options.duration, options.connections))
                if result["errors"]:
                    print(f"  {name}: {result['errors']}", file=sys.stderr)
                if name not in best or result["rps"] > best[name]["rps"]:
                    best[name] = result
        print(f"{'router':<14} {'req/s':>8} {'p99 ms':>7} {'router µs/req':>14}"
              f" {'node conns/req':>15}")
        for name, result in best.items():
            # wrk's own connections were opened once: what remains is the
            # router's connections to the node.
            nodeConnections = max(result["connections"] - options.connections, 0)
            print(f"{name:<14} {result['rps']:>8.0f} {result['p99']:>7.2f}"
                  f" {result['cpu_us']:>14.1f} {nodeConnections / result['requests']:>15.3f}")
        pooled, fresh, reference = best["txrouter-pool"], best["txrouter"], best["nginx"]
        print(f"\n--node-keepalive: router CPU per request x{pooled['cpu_us'] / fresh['cpu_us']:.2f},"
              f" requests/s x{pooled['rps'] / fresh['rps']:.2f};"
              f" txrouter-pool/nginx CPU per request {pooled['cpu_us'] / reference['cpu_us']:.2f}")
    finally:
        for process in reversed(processes):
            process.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
