"""
--use-cache with the Redis store (--cache-store) against the in-memory store
(--cache-file), on hot keys: what a fleet's shared map costs a router.

A redis-server (on CPU 1) holds a map of --keys keys, imported with
txrouter-cache from the same mapping file the in-memory router reads.

 - lookups: in this process, the cache forwarder's pick() of hot keys, over
   an InMemoryStore and over the Redis store (its RedisMap connected to
   the real server, every key read once first): lookups per CPU second,
   best of --samples taken in turns;
 - requests: two twistd txrouter-http --keepalive pinned to CPU 0, one per
   store, in front of one nginx answering 2 bytes from memory (CPU 1, with
   wrk); wrk sends every request with the Host of one hot key.  Requests/s
   and the router's CPU microseconds per request (user + system, from
   /proc, over the run), best of --rounds, the routers measured in turns.

The goal: the Redis store within 10 % of the in-memory one on hot keys.

Run: .venv/bin/python bench/bench_redis_store.py [--duration 8] [--rounds 3]
Everything listens on 127.0.0.1 or unix sockets; every process is stopped
by its PID.
"""

import argparse
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_http import LOAD_CPU, ROUTER_CPU, measured, pinned, wrk  # noqa: E402
from bench.bench_http_nodes import nginx  # noqa: E402
from tests.realpeers import TXROUTER_COMMAND, free_port, wait_for_tcp, wait_for_unix  # noqa: E402

#: Distinct hot keys the in-process lookups cycle through.
HOT = 16


def lookups(store, keys, count: int) -> float:
    """
    Lookups per CPU second of C{count} picks of C{keys} through a cache
    forwarder over C{store} (CPU time, so that other processes taking
    the CPU meanwhile do not count).
    """
    from txrouter.routing.cache import CacheForwarder

    forwarder = CacheForwarder(store)
    pick = forwarder.pick
    cycle = (keys * (count // len(keys) + 1))[:count]
    start = time.process_time()
    for key in cycle:
        pick(key)
    return count / (time.process_time() - start)


def inProcess(redisSocket: str, mapping: dict, options) -> dict:
    """
    The lookups of both stores, the Redis one connected for real.
    """
    from twisted.internet import defer, reactor

    from txrouter.redisclient import redisStore
    from txrouter.routing.cache import InMemoryStore
    from txrouter.storeurl import parseStoreURL

    memory = InMemoryStore(mapping)
    shared, service = redisStore(parseStoreURL(f"unix://{redisSocket}"), reactor)
    keys = sorted(mapping)[:HOT]
    results = {}

    @defer.inlineCallbacks
    def run():
        service.startService()
        try:
            for key in keys:
                value = shared.get(key)
                if isinstance(value, defer.Deferred):
                    value = yield value
                assert value == mapping[key], (key, value)
            for _ in range(options.samples):
                for name, store in (("memory", memory), ("redis", shared)):
                    rate = lookups(store, keys, options.lookups)
                    results[name] = max(results.get(name, 0), rate)
            results["reads"] = shared.reads
        finally:
            yield service.stopService()
            reactor.stop()

    reactor.callWhenRunning(run)
    reactor.run()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=8, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3,
                        help="measure each store this many times; keep its best")
    parser.add_argument("--keys", type=int, default=10000, help="keys in the map")
    parser.add_argument("--lookups", type=int, default=200_000,
                        help="picks per in-process sample")
    parser.add_argument("--samples", type=int, default=20,
                        help="in-process samples of each store, taken in turns; the best is kept")
    options = parser.parse_args()
    for tool in ("wrk", "taskset", "redis-server", "nginx"):
        if shutil.which(tool) is None and not os.path.exists(f"/usr/sbin/{tool}"):
            sys.exit(f"{tool} is missing: run scripts/setup first")

    work = pathlib.Path(tempfile.mkdtemp(prefix="txrouter-bench-redis-"))
    processes = []
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    try:
        nodePort = free_port()
        node = nginx(work, "node", LOAD_CPU, f"""
    server {{
        listen 127.0.0.1:{nodePort};
        keepalive_timeout 60s;
        location / {{ return 200 "ok"; }}
    }}""")
        processes.append(node)
        wait_for_tcp(nodePort, process=node)
        redisSocket = str(work / "redis.sock")
        redis = pinned(LOAD_CPU, ["redis-server", "--port", "0", "--unixsocket", redisSocket,
                                  "--save", "", "--appendonly", "no"], work / "redis.log")
        processes.append(redis)
        wait_for_unix(redisSocket, process=redis)

        mapping = {b"app%d.local" % i: f"http://127.0.0.1:{nodePort}" for i in range(options.keys)}
        mapFile = work / "apps.map"
        mapFile.write_bytes(b"".join(key + b" " + value.encode() + b"\n"
                                     for key, value in mapping.items()))
        store = f"unix://{redisSocket}"
        subprocess.run([sys.executable, "-m", "txrouter.cachetool", "--cache-store", store,
                        "import", str(mapFile)], check=True, env=env, cwd=ROOT, timeout=60)

        found = inProcess(redisSocket, mapping, options)
        print(f"lookups per CPU second, {HOT} hot keys of {options.keys},"
              f" best of {options.samples}:")
        print(f"  in-memory store {found['memory']:>12,.0f}")
        print(f"  redis store     {found['redis']:>12,.0f}"
              f"   ({found['redis'] / found['memory']:.3f} of in-memory;"
              f" {found['reads']} reads from Redis in all)")

        routers = {}
        for name, extra in (("memory", ["--cache-file", str(mapFile)]),
                            ("redis", ["--cache-store", store])):
            port = free_port()
            routers[name] = (pinned(
                ROUTER_CPU, [*TXROUTER_COMMAND, "--bind",
                             f"tcp:{port}:interface=127.0.0.1:backlog=1024",
                             "--use-cache", *extra, "--keepalive"],
                work / f"router-{name}.log", env), port)
        for process, port in routers.values():
            processes.append(process)
            wait_for_tcp(port, 20, process=process)

        best = {}
        for _ in range(options.rounds):
            for name, (process, port) in routers.items():
                result = measured(process.pid, lambda: wrk(
                    port, "/", ["-H", "Host: app7.local"], options.duration,
                    options.connections))
                if result["errors"]:
                    print(f"  {name}: {result['errors']}", file=sys.stderr)
                if name not in best or result["cpu_us"] < best[name]["cpu_us"]:
                    best[name] = result
        print(f"\nrequests through txrouter-http --keepalive, one hot key, best of {options.rounds}:")
        print(f"  {'store':<10} {'req/s':>8} {'p99 ms':>7} {'router µs/req':>14}")
        for name, result in best.items():
            print(f"  {name:<10} {result['rps']:>8.0f} {result['p99']:>7.2f}"
                  f" {result['cpu_us']:>14.1f}")
        memory, redis = best["memory"], best["redis"]
        print(f"\nredis/in-memory: router CPU per request x{redis['cpu_us'] / memory['cpu_us']:.3f},"
              f" requests/s x{redis['rps'] / memory['rps']:.3f}")
    finally:
        for process in reversed(processes):
            process.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
