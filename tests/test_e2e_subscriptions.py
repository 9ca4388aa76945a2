"""
Subscriptions end to end: real uWSGI 2.0.21 workers announce themselves to
twistd txrouter-fast and txrouter-http, signed or not; traffic follows the
announces, in uWSGI's weighted round-robin order (compared with uWSGI's own
fastrouter), stopped workers leave, killed ones expire, forged datagrams
are refused, cheap mode waits for the first node, and one router feeds
another.
"""

import contextlib
import json
import socket
import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.realpeers import free_port
from tests.subpeers import (
    answer,
    ask,
    free_udp_port,
    read_all,
    subscribing_worker,
    txrouter,
    uwsgi_fastrouter,
    uwsgi_packet,
    wait_for_log,
)
from txrouter.subscription.signing import signSubscription
from txrouter.wire.subscription import Subscription, encodeSubscription

pytestmark = pytest.mark.e2e


def send(port: int, datagram: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(datagram, ("127.0.0.1", port))


def joined(router, key: str, address: str, count: int = 1) -> None:
    wait_for_log(router, f"{key} => new node: {address}", count)


def subscribe2(udp: int, key: str, **fields) -> list:
    """
    uWSGI's --subscribe2 option announcing C{key} to 127.0.0.1:C{udp}.
    """
    items = [f"server=127.0.0.1:{udp}", f"key={key}"] + [f"{k}={v}" for k, v in fields.items()]
    return ["--subscribe2", ",".join(items)]


@pytest.mark.parametrize("kind, weights", [
    ("fast", (3, 1)), ("fast", (2, 2, 1)), ("http", (3, 1)),
])
def test_weighted_round_robin_in_uwsgis_order(tmp_path, kind, weights):
    """
    Workers join one after the other with these weights; the picks that
    follow are uWSGI's: B A A A for 3,1 and C A A B B for 2,2,1.  On the
    FastRouter the same workers also subscribe to uWSGI's own fastrouter,
    which must answer in the same order.
    """
    udp, reference_udp = free_udp_port(), free_udp_port()
    port, reference_port = free_port(), free_port()
    with contextlib.ExitStack() as stack:
        router = stack.enter_context(
            txrouter(tmp_path, kind, port, ["--subscription-server", f"127.0.0.1:{udp}"])
        )
        reference = None
        if kind == "fast":
            reference = stack.enter_context(uwsgi_fastrouter(tmp_path, reference_port, reference_udp))
        for name, weight in zip("abc", weights):
            address = f"127.0.0.1:{free_port()}"
            subscriptions = subscribe2(udp, "w.local", addr=address, weight=weight)
            if reference is not None:
                subscriptions += subscribe2(reference_udp, "w.local", addr=address, weight=weight)
            stack.enter_context(subscribing_worker(tmp_path, address, subscriptions, name))
            joined(router, "w.local", address)
            if reference is not None:
                joined(reference, "w.local", address)
        rounds = sum(weights) * 2
        expected = {(3, 1): "baaa", (2, 2, 1): "caabb"}[weights] * 2
        assert "".join(ask(kind, port, "w.local") for _ in range(rounds)) == expected
        if reference is not None:
            assert "".join(ask("uwsgi", reference_port, "w.local") for _ in range(rounds)) == expected


@pytest.mark.parametrize("kind", ["fast", "http"])
def test_routing_by_key_port0_and_port_only_addresses(tmp_path, kind):
    """
    --subscribe-to with a port-0 socket announces the real port; a
    --subscribe2 address ':PORT' is completed with the sender's address;
    keys are exact (port included); the FastRouter writes the node's
    modifier1 (0, python) whatever the client sent.
    """
    udp, port, p = free_udp_port(), free_port(), free_port()
    zero = ["--subscribe-to", f"127.0.0.1:{udp}:zero.local"]
    only = subscribe2(udp, "only.local:8080", addr=f":{p}", modifier1=0)
    with txrouter(tmp_path, kind, port, ["--subscription-server", f"127.0.0.1:{udp}"]) as router, \
            subscribing_worker(tmp_path, "127.0.0.1:0", zero, "zero", wait=False), \
            subscribing_worker(tmp_path, f"127.0.0.1:{p}", only, "only"):
        wait_for_log(router, "zero.local => new node: 127.0.0.1:")
        joined(router, "only.local:8080", f"127.0.0.1:{p}")
        assert ask(kind, port, "zero.local") == "zero"
        assert ask(kind, port, "only.local:8080") == "only"
        assert ask(kind, port, "only.local") == 404
        if kind == "fast":
            assert ask(kind, port, "zero.local", modifier1=5) == "zero"


@pytest.mark.parametrize("kind", ["fast", "http"])
def test_sigint_leaves_at_once_sigkill_expires_after_the_tolerance(tmp_path, kind):
    """
    uWSGI 2.0.21 unsubscribes on SIGINT (and on SIGTERM with
    --die-on-term); a SIGKILLed worker says nothing and expires after
    --subscription-tolerance, found by the router's timer without any
    request.
    """
    udp, port = free_udp_port(), free_port()
    args = ["--subscription-server", f"127.0.0.1:{udp}", "--subscription-tolerance", "3"]
    subscription = ["--subscribe-to", f"127.0.0.1:{udp}:k.local"]
    a, b = (f"127.0.0.1:{free_port()}" for _ in range(2))
    with txrouter(tmp_path, kind, port, args) as router, \
            subscribing_worker(tmp_path, a, subscription, "a") as workerA, \
            subscribing_worker(tmp_path, b, subscription, "b") as workerB:
        joined(router, "k.local", a)
        joined(router, "k.local", b)
        assert {ask(kind, port, "k.local") for _ in range(4)} == {"a", "b"}
        workerA.signal(2)
        workerA.wait(10)
        wait_for_log(router, f"k.local => removed node: {a} (unsubscribed)", timeout=5)
        assert {ask(kind, port, "k.local") for _ in range(4)} == {"b"}
        workerB.kill()
        killed = time.monotonic()
        wait_for_log(router, f"k.local => marking {b} as failed (no announce", timeout=10)
        elapsed = time.monotonic() - killed
        # The last announce came at most a second before the kill.
        assert 1.5 < elapsed < 5, elapsed
        assert "subscription_pool_removed: pool removed: k.local" in router.log()
        assert ask(kind, port, "k.local") == 404


@pytest.fixture(scope="module")
def signing(tmp_path_factory):
    """
    A private key for signed.local (what the worker signs with) and the
    keys directory the router checks with; a second key that is not it.
    """
    tmp = tmp_path_factory.mktemp("signing")
    keys = tmp / "keys"
    keys.mkdir()
    key, other = (rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(2))
    pems = []
    for k in (key, other):
        pems.append(k.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.TraditionalOpenSSL,
                                    serialization.NoEncryption()))
    (tmp / "private.pem").write_bytes(pems[0])
    (keys / "signed.local.pem").write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return tmp, pems[0], pems[1]


def test_signed_subscriptions(tmp_path, signing):
    """
    A real uWSGI signing with SHA1 is accepted; datagrams crafted here are
    judged on their own: signed with the right key accepted once, its
    replay and its command byte flipped refused, a forged signature and an
    unsigned one refused.
    """
    tmp, privatePEM, otherPEM = signing
    udp, port = free_udp_port(), free_port()
    a, b = (f"127.0.0.1:{free_port()}" for _ in range(2))
    args = ["--subscription-server", f"127.0.0.1:{udp}",
            "--subscriptions-sign-check", f"SHA1:{tmp / 'keys'}"]
    signedBy = ["--subscribe-to", f"127.0.0.1:{udp}:signed.local,0,SHA1:{tmp / 'private.pem'}"]
    with txrouter(tmp_path, "fast", port, args) as router, \
            subscribing_worker(tmp_path, a, signedBy, "a"), \
            subscribing_worker(tmp_path, b, [], "b"):
        joined(router, "signed.local", a)
        assert ask("fast", port, "signed.local") == "a"

        def crafted(pem, unsubscribe=False):
            announce = Subscription(b"signed.local", b.encode(), unsubscribe=unsubscribe)
            return encodeSubscription(signSubscription(announce, "SHA1", pem, int(time.time())))

        def refused(reason, count=1):
            wait_for_log(router, f"subscription_refused: {reason} from 127.0.0.1", count, timeout=5)

        send(udp, crafted(otherPEM))
        refused("bad_signature")
        send(udp, encodeSubscription(Subscription(b"signed.local", b.encode())))
        refused("unsigned")
        good = crafted(privatePEM)
        send(udp, good)
        joined(router, "signed.local", b)
        send(udp, good)
        refused("replayed")
        flipped = good[:3] + b"\x01" + good[4:]
        send(udp, flipped)
        refused("replayed", 2)
        assert {ask("fast", port, "signed.local") for _ in range(4)} == {"a", "b"}
        send(udp, crafted(privatePEM, unsubscribe=True))
        wait_for_log(router, f"signed.local => removed node: {b}")
        assert {ask("fast", port, "signed.local") for _ in range(3)} == {"a"}
        assert "subscription_server_error" not in router.log()


def test_cheap_mode_accepts_after_the_first_subscription(tmp_path):
    """
    txrouter-fast --cheap hears subscriptions (here on a unix datagram
    socket) but does not accept clients until a node is there: a request
    sent before waits in the kernel's backlog and is answered once the
    worker subscribes; it goes cheap again when the worker leaves.
    """
    subs = str(tmp_path / "subs.sock")
    port = free_port()
    with contextlib.ExitStack() as stack:
        router = stack.enter_context(
            txrouter(tmp_path, "fast", port, ["--subscription-server", subs, "--cheap"])
        )
        wait_for_log(router, "cheap_mode_entered")
        early = stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=10))
        early.sendall(uwsgi_packet("c.local"))
        early.settimeout(1)
        with pytest.raises(socket.timeout):
            early.recv(1)
        subscription = ["--subscribe-to", f"{subs}:c.local"]
        with subscribing_worker(tmp_path, f"127.0.0.1:{free_port()}", subscription, "c") as worker:
            wait_for_log(router, "cheap_mode_left")
            assert answer(read_all(early)) == "c"
            assert ask("fast", port, "c.local") == "c"
            worker.signal(2)
            worker.wait(10)
            wait_for_log(router, "cheap_mode_entered", 2)


def test_a_router_feeds_another(tmp_path):
    """
    txrouter-fast resubscribes what it hears to txrouter-http, with its own
    address: a request to the HTTP router goes through the FastRouter to
    the worker.  When the worker leaves, both pools go.
    """
    fastUDP, httpUDP = free_udp_port(), free_udp_port()
    fastPort, httpPort = free_port(), free_port()
    frontArgs = ["--subscription-server", f"127.0.0.1:{httpUDP}"]
    backArgs = ["--subscription-server", f"127.0.0.1:{fastUDP}", "--resubscribe", f"127.0.0.1:{httpUDP}"]
    subscription = ["--subscribe-to", f"127.0.0.1:{fastUDP}:f.local"]
    with txrouter(tmp_path, "http", httpPort, frontArgs) as front, \
            txrouter(tmp_path, "fast", fastPort, backArgs) as back:
        with subscribing_worker(tmp_path, f"127.0.0.1:{free_port()}", subscription, "f") as worker:
            joined(front, "f.local", f"127.0.0.1:{fastPort}")
            assert ask("http", httpPort, "f.local") == "f"
            worker.signal(2)
            worker.wait(10)
            wait_for_log(back, "pool removed: f.local")
            wait_for_log(front, f"f.local => removed node: 127.0.0.1:{fastPort}", timeout=5)
            assert ask("http", httpPort, "f.local") == 404


def stats(port: int) -> dict:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        return json.loads(read_all(sock))


def test_stats_match_uwsgis_fastrouter(tmp_path):
    """
    One worker subscribes to txrouter-fast and to uWSGI's fastrouter, both
    serve the same three requests; the stats documents have the same keys
    in the same order, the same pool and node fields (plus uWSGI 2.1's
    C{algo} and C{backup}), and agree on what
    both count: the node, its weight, the lookups and the requests.
    """
    udp, reference_udp = free_udp_port(), free_udp_port()
    port, reference_port = free_port(), free_port()
    stats_port, reference_stats_port = free_port(), free_port()
    address = f"127.0.0.1:{free_port()}"
    subscriptions = (subscribe2(udp, "s.local", addr=address, weight=2)
                     + subscribe2(reference_udp, "s.local", addr=address, weight=2))
    with txrouter(tmp_path, "fast", port, [
        "--subscription-server", f"127.0.0.1:{udp}",
        "--stats", f"127.0.0.1:{stats_port}",
    ]) as router, uwsgi_fastrouter(
        tmp_path, reference_port, reference_udp,
        ["--fastrouter-stats", f"127.0.0.1:{reference_stats_port}"],
    ) as reference, subscribing_worker(tmp_path, address, subscriptions, "a"):
        joined(router, "s.local", address)
        joined(reference, "s.local", address)
        for _ in range(3):
            assert ask("fast", port, "s.local") == "a"
            assert ask("fast", reference_port, "s.local") == "a"
        ours, theirs = stats(stats_port), stats(reference_stats_port)

    assert list(ours) == list(theirs)
    assert ours["fastrouter"] == [f"127.0.0.1:{port}", f"127.0.0.1:{udp}"]
    assert theirs["fastrouter"] == [f"127.0.0.1:{reference_port}", f"127.0.0.1:{reference_udp}"]
    # uWSGI 2.1's additions, which 2.0.21 lacks, are the only extra keys.
    [pool], [reference_pool] = ours["subscriptions"], theirs["subscriptions"]
    assert [k for k in pool if k != "algo"] == list(reference_pool)
    [node], [reference_node] = pool["nodes"], reference_pool["nodes"]
    assert [k for k in node if k != "backup"] == list(reference_node)
    shared = ("name", "modifier1", "modifier2", "weight", "requests", "ref", "failcnt", "death_mark")
    assert {k: node[k] for k in shared} == {k: reference_node[k] for k in shared}
    assert (pool["key"], pool["hits"]) == (reference_pool["key"], reference_pool["hits"]) == ("s.local", 3)
    assert ours["active_sessions"] == theirs["active_sessions"] == 0
    assert ours["cheap"] == theirs["cheap"] == 0
