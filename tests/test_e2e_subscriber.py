"""
The Python subscriber end to end: C{twistd txrouter-subscribe} announces a
real uWSGI 2.0.21 worker that does not subscribe itself to uWSGI's own
fastrouter and to C{twistd txrouter-fast}, signed or not; requests by the
key reach the worker while it runs, and the key is gone once it is stopped.
"""

import os
import signal
import subprocess

import pytest

from tests.realpeers import ROOT, TWISTD_COMMAND, Process, free_port, udp_queue, wait_until
from tests.subpeers import (
    ask,
    free_udp_port,
    stats,
    subscribing_worker,
    txrouter,
    uwsgi_fastrouter,
    wait_for_log,
)

pytestmark = pytest.mark.e2e

KEY = "py.local"


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    """
    The address of a uWSGI worker (echo app, C{WORKER=plain}) that
    announces itself nowhere.
    """
    tmp = tmp_path_factory.mktemp("worker")
    address = f"127.0.0.1:{free_port()}"
    with subscribing_worker(tmp, address, [], "plain"):
        yield address


def subscriber(tmp_path, servers, address, *args, name: str = "subscriber") -> Process:
    """
    C{twistd -n txrouter-subscribe} announcing C{address} as C{KEY} to
    C{servers} every second, with C{args}.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    command = [*TWISTD_COMMAND, "-n", "--pidfile=", "txrouter-subscribe",
               "--key", KEY, "--address", address, "--frequency", "1", *args]
    for server in servers:
        command += ["--subscribe-to", server]
    return Process(command, tmp_path / f"{name}.log", env=env)


def heard(router: Process, announcer: Process, text: str, timeout: float = 15.0,
          count: int = 1) -> None:
    """
    Wait for C{text} C{count} times in the router's log, failing at once
    if either process exits meanwhile.
    """
    def check():
        assert announcer.alive(), f"the subscriber exited:\n{announcer.log()[-3000:]}"
        return router.log().count(text) >= count

    wait_until(check, repr(text), timeout, router)


def lastCheck(statsPort: int) -> int:
    """
    When the router last heard the one node of its one pool (the stats'
    C{last_check}, in whole seconds since the epoch).
    """
    [pool] = stats(statsPort)["subscriptions"]
    [node] = pool["nodes"]
    return node["last_check"]


def refreshed(router: Process, statsPort: int, seconds: int) -> None:
    """
    Wait until the router has taken an announce of its node C{seconds}
    after the first one it shows now.
    """
    first = lastCheck(statsPort)
    wait_until(lambda: lastCheck(statsPort) >= first + seconds,
               f"an announce {seconds} s after the first", seconds + 5, router)


def stopped(announcer: Process, signum) -> None:
    """
    Stop the subscriber with C{signum}; it exits cleanly (twistd kills
    itself with the signal once shut down), saying it unsubscribed.
    """
    announcer.signal(signum)
    assert announcer.wait(10) in (0, -signum), announcer.log()
    assert "subscriber_stopped" in announcer.log()


def test_uwsgis_fastrouter_accepts_the_subscriber(tmp_path, worker):
    """
    uWSGI's fastrouter adds the node, keeps it past its tolerance (2 s)
    thanks to the announces every second, routes the key to the worker,
    and drops the node on the unsubscribe sent on SIGINT.
    """
    udp, port, statsPort = free_udp_port(), free_port(), free_port()
    with uwsgi_fastrouter(tmp_path, port, udp, [
        "--subscription-tolerance", "2", "--fastrouter-stats", f"127.0.0.1:{statsPort}",
    ]) as router, subscriber(tmp_path, [f"127.0.0.1:{udp}"], worker, "--weight", "3") as announcer:
        heard(router, announcer, f"{KEY} => new node: {worker}")
        assert ask("uwsgi", port, KEY) == "plain"
        refreshed(router, statsPort, 3)
        assert ask("uwsgi", port, KEY) == "plain"
        [pool] = stats(statsPort)["subscriptions"]
        [node] = pool["nodes"]
        assert (pool["key"], node["name"], node["weight"], node["death_mark"]) == (
            KEY, worker, 3, 0)
        stopped(announcer, signal.SIGINT)
        wait_for_log(router, f"{KEY} => marking {worker} as failed", timeout=5)
        assert ask("uwsgi", port, KEY) == 0
        assert stats(statsPort)["subscriptions"] == []
        assert "no announce" not in router.log()


def test_txrouter_fast_accepts_the_subscriber_on_a_unix_socket(tmp_path, worker):
    """
    txrouter-fast, hearing subscriptions on a unix datagram socket, adds
    the node, routes the key to it, and removes it on the unsubscribe sent
    on SIGTERM.
    """
    subs, port = str(tmp_path / "subs.sock"), free_port()
    with txrouter(tmp_path, "fast", port, ["--subscription-server", subs]) as router, \
            subscriber(tmp_path, [subs], worker) as announcer:
        heard(router, announcer, f"{KEY} => new node: {worker}")
        assert ask("fast", port, KEY) == "plain"
        stopped(announcer, signal.SIGTERM)
        wait_for_log(router, f"{KEY} => removed node: {worker} (unsubscribed)", timeout=5)
        assert ask("fast", port, KEY) == 404
        assert "subscription_refused" not in router.log()


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """
    RSA keys made by openssl: C{right.pem} with its public key as
    C{keys/py.local.pem}, and C{wrong.pem}.
    """
    tmp = tmp_path_factory.mktemp("keys")
    (tmp / "keys").mkdir()
    for name in ("right", "wrong"):
        subprocess.run(["openssl", "genrsa", "-out", str(tmp / f"{name}.pem"), "2048"],
                       check=True, capture_output=True, timeout=60)
    subprocess.run(["openssl", "rsa", "-pubout", "-in", str(tmp / "right.pem"),
                    "-out", str(tmp / "keys" / f"{KEY}.pem")],
                   check=True, capture_output=True, timeout=60)
    return tmp


def test_signed_announces_to_both_routers(tmp_path, worker, keys):
    """
    One subscriber signing with SHA256 announces to uWSGI's fastrouter
    (--subscriptions-sign-check SHA256:DIR) and to txrouter-fast
    (--subscriptions-sign-check sha256:DIR) at once: with a key that is not
    the one in DIR both refuse it, with the right key both route the key
    to the worker, and both drop it on the signed unsubscribe.
    """
    udp, port, statsPort = free_udp_port(), free_port(), free_port()
    ourUDP, ourPort, ourStatsPort = free_udp_port(), free_port(), free_port()
    servers = [f"127.0.0.1:{udp}", f"127.0.0.1:{ourUDP}"]
    with uwsgi_fastrouter(tmp_path, port, udp, [
        "--subscriptions-sign-check", f"SHA256:{keys / 'keys'}",
        "--fastrouter-stats", f"127.0.0.1:{statsPort}",
    ]) as theirs, txrouter(tmp_path, "fast", ourPort, [
        "--subscription-server", f"127.0.0.1:{ourUDP}",
        "--subscriptions-sign-check", f"sha256:{keys / 'keys'}",
        "--stats", f"127.0.0.1:{ourStatsPort}",
    ]) as ours:
        with subscriber(tmp_path, servers, worker, "--sign", f"sha256:{keys / 'wrong.pem'}",
                        name="forger") as forger:
            # Each announce goes to uWSGI's first, then to ours: once ours
            # has refused three, uWSGI's has had them too, and has judged
            # them when its socket has nothing left to read (uWSGI logs
            # nothing for a refused signature); its answers come after.
            heard(ours, forger, "subscription_refused: bad_signature", timeout=10, count=3)
            wait_until(lambda: udp_queue(udp)[0] == 0, "uWSGI's fastrouter to read them", 5, theirs)
            assert ask("uwsgi", port, KEY) == 0
            assert ask("fast", ourPort, KEY) == 404
            stopped(forger, signal.SIGINT)
        assert "new node" not in theirs.log()
        assert "new node" not in ours.log()

        with subscriber(tmp_path, servers, worker, "--sign", f"sha256:{keys / 'right.pem'}",
                        name="signer") as signer:
            heard(theirs, signer, f"{KEY} => new node: {worker}")
            heard(ours, signer, f"{KEY} => new node: {worker}")
            # The refreshes that follow, each signed anew, are accepted.
            refreshed(theirs, statsPort, 2)
            refreshed(ours, ourStatsPort, 2)
            assert ask("uwsgi", port, KEY) == "plain"
            assert ask("fast", ourPort, KEY) == "plain"
            stopped(signer, signal.SIGINT)
        wait_for_log(theirs, f"{KEY} => marking {worker} as failed", timeout=5)
        wait_for_log(ours, f"{KEY} => removed node: {worker} (unsubscribed)", timeout=5)
        assert ask("uwsgi", port, KEY) == 0
        assert ask("fast", ourPort, KEY) == 404
        # The refreshes, one a second, were all accepted: no replay refused.
        assert "replayed" not in ours.log()
        assert "sniffed" not in theirs.log()
