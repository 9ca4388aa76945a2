"""
Memory per idle keep-alive client connection: txrouter-http beside uWSGI's
HTTP router (--http-keepalive), in front of the same uWSGI worker.

For each router, N clients each send one request, read its answer and stay
connected, idle; the router's resident memory (RSS of its processes, from
/proc) is read before the clients connect and once all N are idle, and the
difference is divided by N.  The router is kept from timing them out
(--timeout / --http-keepalive of 600 s).

Run: .venv/bin/python bench/bench_idle.py [--clients 5000]
Everything listens on 127.0.0.1 or unix sockets; every process is stopped
by its PID at the end.
"""

import argparse
import pathlib
import resource
import shutil
import socket
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.realpeers import (  # noqa: E402
    free_port,
    txrouter_http,
    uwsgi_http_router,
    uwsgi_worker,
    wait_until,
)

REQUEST = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"


def rss_kib(pid: int) -> int:
    """
    The resident memory of C{pid} and its descendants, in KiB.
    """
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        try:
            for line in pathlib.Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            for task in pathlib.Path(f"/proc/{current}/task").iterdir():
                stack += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return total


def idleClients(port: int, count: int) -> list:
    """
    C{count} connections that each had one answered request and stay open.
    """
    clients = []
    for _ in range(count):
        client = socket.create_connection(("127.0.0.1", port), timeout=10)
        client.sendall(REQUEST)
        answer = b""
        while b"\r\n\r\n" not in answer:
            piece = client.recv(65536)
            if not piece:
                raise RuntimeError("the router closed a keep-alive connection")
            answer += piece
        clients.append(client)
    return clients


def measure(process, port: int, count: int) -> float:
    """
    KiB of router memory per idle keep-alive connection.
    """
    idleClients(port, 20)  # warm-up: what the first requests allocate once
    before = rss_kib(process.pid)
    clients = idleClients(port, count)
    after = rss_kib(process.pid)
    for client in clients:
        client.close()
    return (after - before) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=5000)
    options = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = options.clients + 256
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))
    work = pathlib.Path(tempfile.mkdtemp(prefix="txrouter-bench-idle-"))
    sock = str(work / "app.sock")
    try:
        with uwsgi_worker(work, sock, app=ROOT / "bench" / "app.py"):
            results = {}
            port = free_port()
            with uwsgi_http_router(work, port, sock, [
                "--http-keepalive=600", "--http-timeout", "600", "--listen", "1024",
                "--max-fd", str(wanted),
            ]) as router:
                wait_until(lambda: router.alive(), "uWSGI's router")
                results["uWSGI"] = measure(router, port, options.clients)
            port = free_port()
            with txrouter_http(work, port, sock, ["--keepalive", "600", "--timeout", "600"]) as router:
                results["txrouter"] = measure(router, port, options.clients)
        for name, kib in results.items():
            print(f"{name:<9} {kib:6.2f} KiB per idle keep-alive connection ({options.clients})")
        print(f"txrouter/uWSGI {results['txrouter'] / results['uWSGI']:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
