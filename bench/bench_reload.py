"""
SIGHUP under load: wrk against txrouter-http --config in front of two
uWSGI workers, with two reloads during the run that switch --to from one
worker to the other and back.  Prints wrk's report (it names socket errors
and non-2xx answers only when there are some), the reloads the router
logged, and how many requests each worker served.

Run: .venv/bin/python bench/bench_reload.py [--seconds 10] [--connections 32]
Everything listens on 127.0.0.1 or unix sockets; every process is stopped
by its PID at the end.
"""

import argparse
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.realpeers import free_port, txrouter_http, uwsgi_worker, wait_for_log  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    arguments = parser.parse_args()
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="bench-reload-"))
    config = tmp / "router.toml"
    try:
        with uwsgi_worker(tmp, str(tmp / "a.sock"), 2, ["--route-run", "addvar:WORKER=a"],
                          name="a") as a, \
                uwsgi_worker(tmp, str(tmp / "b.sock"), 2, ["--route-run", "addvar:WORKER=b"],
                             name="b") as b:
            config.write_text(f'to = ["{tmp / "a.sock"}"]\nkeepalive = 30\n')
            port = free_port()
            with txrouter_http(tmp, port, (), ["--config", str(config)]) as router:
                wrk = subprocess.Popen(
                    ["wrk", "-t2", f"-c{arguments.connections}", f"-d{arguments.seconds}s",
                     f"http://127.0.0.1:{port}/"],
                    stdout=subprocess.PIPE, text=True,
                )
                # Two reloads, at a third and at two thirds of the run.
                for count, node in enumerate(["b.sock", "a.sock"], 1):
                    time.sleep(arguments.seconds / 3)
                    config.write_text(f'to = ["{tmp / node}"]\nkeepalive = 30\n')
                    router.signal(signal.SIGHUP)
                    wait_for_log(router, "config_reloaded", count)
                print(wrk.communicate(timeout=arguments.seconds + 30)[0])
                print("\n".join(line for line in router.log().splitlines()
                                if "config_" in line))
            for worker in (a, b):
                served = worker.log().count("GET /")
                print(f"{pathlib.Path(worker.logPath).stem}: {served} requests")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
