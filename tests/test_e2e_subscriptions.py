"""
Subscriptions end to end: real uWSGI 2.0.21 workers announce themselves to
twistd txrouter-fast and txrouter-http, signed or not; traffic follows the
announces, in uWSGI's weighted round-robin order (compared with uWSGI's own
fastrouter), stopped workers leave, killed ones expire, forged datagrams
are refused, cheap mode waits for the first node, and one router feeds
another.
"""

import contextlib
import re
import shutil
import signal
import socket
import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.realpeers import free_port, tcp_backlog, udp_queue, wait_until
from tests.subpeers import (
    DatagramTee,
    RecordingBackend,
    answer,
    ask,
    free_udp_port,
    read_all,
    stats,
    subscribing_worker,
    txrouter,
    uwsgi_fastrouter,
    uwsgi_packet,
    uwsgi_request,
    wait_for_log,
)
from txrouter.subscription.signing import signSubscription
from txrouter.wire.subscription import Subscription, encodeSubscription, parseSubscription

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


@pytest.mark.parametrize("policy", [[], ["--subscription-node-network", "0.0.0.0/0"]])
def test_a_worker_on_every_interface_is_reached_on_its_own_host(tmp_path, policy):
    """
    uWSGI with --socket 0.0.0.0:PORT announces 0.0.0.0:PORT; uWSGI's router
    would connect to 0.0.0.0:PORT, its own host.  txrouter takes it, with
    the default address policy as with 0.0.0.0/0, as the subscriber's own
    address, routes to it, and the unsubscribe of SIGINT removes that node.

    (The worker listens on 127.0.0.1 and announces 0.0.0.0:PORT with
    --subscribe2 addr=, the same datagram, so that the test stays on the
    loopback interface.)
    """
    udp, port, workerPort = free_udp_port(), free_port(), free_port()
    with txrouter(tmp_path, "fast", port, ["--subscription-server", f"127.0.0.1:{udp}", *policy]) as router, \
            DatagramTee(udp) as tee:
        subscription = ["--subscribe2",
                        f"server=127.0.0.1:{tee.port},key=any.local,addr=0.0.0.0:{workerPort}"]
        with subscribing_worker(tmp_path, f"127.0.0.1:{workerPort}", subscription, "any") as worker:
            node = f"127.0.0.1:{workerPort}"
            joined(router, "any.local", node)
            assert ask("fast", port, "any.local") == "any"
            worker.signal(signal.SIGINT)
            worker.wait(10)
            wait_for_log(router, f"any.local => removed node: {node} (unsubscribed)", timeout=5)
        announced = {announce.address for announce, _ in tee.announces()}
        assert announced == {f"0.0.0.0:{workerPort}".encode()}
        assert ask("fast", port, "any.local") == 404
        assert "subscription_refused" not in router.log()


def test_a_mapping_file_subscribes_every_key(tmp_path):
    """
    --subscribe-to SERVER:@FILE announces every key of the file (one
    C{key[,modifier1]} a line, C{#} comments and blank lines skipped):
    each one routes to the worker, and the stats show the modifier1 each
    node was announced with, which the FastRouter writes on its requests
    (30, which uWSGI's python plugin serves too).
    """
    udp, port, stats_port = free_udp_port(), free_port(), free_port()
    mapping = tmp_path / "mapping.txt"
    mapping.write_text("# the keys of this worker\nm1.local\nm2.local,30\n\nm3.local:8080\n")
    address = f"127.0.0.1:{free_port()}"
    with txrouter(tmp_path, "fast", port, [
        "--subscription-server", f"127.0.0.1:{udp}", "--stats", f"127.0.0.1:{stats_port}",
    ]) as router, subscribing_worker(
        tmp_path, address, ["--subscribe-to", f"127.0.0.1:{udp}:@{mapping}"], "map",
    ):
        for key in ("m1.local", "m2.local", "m3.local:8080"):
            joined(router, key, address)
        for key in ("m1.local", "m2.local", "m3.local:8080"):
            assert ask("fast", port, key) == "map"
        pools = {pool["key"]: [(node["name"], node["modifier1"]) for node in pool["nodes"]]
                 for pool in stats(stats_port)["subscriptions"]}
    assert pools == {
        "m1.local": [(address, 0)], "m2.local": [(address, 30)], "m3.local:8080": [(address, 0)],
    }


def test_the_fastrouter_writes_the_subscribed_modifiers(tmp_path):
    """
    --subscribe2 modifier1/modifier2: a real uWSGI announces a recording
    backend with modifier1 9, modifier2 3, and its own socket with
    modifier1 30; the backend receives a header with exactly 9 and 3,
    whatever modifier the client sent, and the worker serves its key.
    """
    udp, port = free_udp_port(), free_port()
    address = f"127.0.0.1:{free_port()}"
    with RecordingBackend() as backend:
        subscriptions = [
            *subscribe2(udp, "fake.local", addr=f"127.0.0.1:{backend.port}", modifier1=9, modifier2=3),
            *subscribe2(udp, "real.local", addr=address, modifier1=30),
        ]
        with txrouter(tmp_path, "fast", port, ["--subscription-server", f"127.0.0.1:{udp}"]) as router, \
                subscribing_worker(tmp_path, address, subscriptions, "real"):
            joined(router, "fake.local", f"127.0.0.1:{backend.port}")
            joined(router, "real.local", address)
            for modifier1 in (0, 5):
                raw = uwsgi_request(port, "fake.local", modifier1=modifier1)
                assert raw.endswith(b"recorded")
            assert ask("fast", port, "real.local", modifier1=5) == "real"
    assert [(m1, m2, v[b"HTTP_HOST"]) for m1, m2, v in backend.requests] == [
        (9, 3, b"fake.local"), (9, 3, b"fake.local"),
    ]


def test_a_flood_of_keys_and_nodes_stays_within_the_caps(tmp_path):
    """
    With --subscription-max-pools 20 and --subscription-max-nodes 4, 500
    announces of new keys and 100 nodes for one key leave 20 pools and 4
    nodes; the refusals are logged as too_many_pools and too_many_nodes,
    20 lines and then one line counting the rest; a worker subscribed
    before the flood still gets its requests.
    """
    udp, port, stats_port = free_udp_port(), free_port(), free_port()
    address = f"127.0.0.1:{free_port()}"
    with txrouter(tmp_path, "fast", port, [
        "--subscription-server", f"127.0.0.1:{udp}", "--stats", f"127.0.0.1:{stats_port}",
        "--subscription-max-pools", "20", "--subscription-max-nodes", "4",
    ]) as router, subscribing_worker(
        tmp_path, address, ["--subscribe-to", f"127.0.0.1:{udp}:legit.local"], "legit",
    ):
        joined(router, "legit.local", address)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for i in range(500):
                if i < 100:
                    s.sendto(encodeSubscription(Subscription(
                        b"flood.local", f"127.0.0.1:{20000 + i}".encode())), ("127.0.0.1", udp))
                s.sendto(encodeSubscription(Subscription(
                    f"k{i}.flood".encode(), b"127.0.0.1:30000")), ("127.0.0.1", udp))
                if i % 50 == 49:
                    # The socket's queue holds a few hundred datagrams:
                    # let the router read them before sending more.
                    wait_until(lambda: udp_queue(udp)[0] == 0, "the router to read the flood",
                               10, router)
        assert udp_queue(udp)[1] == 0, "datagrams dropped by the kernel"

        def pools():
            return {pool["key"]: len(pool["nodes"]) for pool in stats(stats_port)["subscriptions"]}

        wait_until(lambda: len(pools()) == 20 and pools().get("flood.local") == 4,
                   "the caps reached", 10, router)
        assert ask("fast", port, "legit.local") == "legit"
        # The rate limit's window ends 10 s after the first refusal, when
        # every datagram has long been handled.
        wait_for_log(router, "log_lines_suppressed", timeout=15)
        after = pools()
        log = router.log()
    assert len(after) == 20
    assert after["legit.local"] == 1 and after["flood.local"] == 4
    refusals = re.findall(r"subscription_refused: (\w+) from 127.0.0.1", log)
    assert len(refusals) == 20
    assert set(refusals) == {"too_many_pools", "too_many_nodes"}
    [suppressed] = re.findall(r"log_lines_suppressed: (\d+) log lines dropped", log)
    assert int(suppressed) > 400


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
        # Not before the tolerance: the last announce came at most a
        # second before the kill.
        assert time.monotonic() - killed > 1.5
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

        def refused(reason, detail, count=1):
            wait_for_log(router, f"subscription_refused: {reason} from 127.0.0.1: {detail}",
                         count, timeout=5)

        send(udp, crafted(otherPEM))
        refused("bad_signature", f"signature of b'signed.local' {b.encode()!r} does not verify")
        send(udp, encodeSubscription(Subscription(b"signed.local", b.encode())))
        refused("unsigned", "no signature for key b'signed.local'")
        good = crafted(privatePEM)
        send(udp, good)
        joined(router, "signed.local", b)
        send(udp, good)
        unix = parseSubscription(good).unix
        replayed = f"unix {unix} not after {unix}, already accepted for b'signed.local' {b.encode()!r}"
        refused("replayed", replayed)
        flipped = good[:3] + b"\x01" + good[4:]
        send(udp, flipped)
        refused("replayed", replayed, 2)
        assert {ask("fast", port, "signed.local") for _ in range(4)} == {"a", "b"}
        send(udp, crafted(privatePEM, unsubscribe=True))
        wait_for_log(router, f"signed.local => removed node: {b}")
        assert {ask("fast", port, "signed.local") for _ in range(3)} == {"a"}
        assert "subscription_server_error" not in router.log()


def _stop_between_announces(worker, tee, key: bytes) -> None:
    """
    SIGINT C{worker} a third of a second after one of its announces of
    C{key}: it announces every second, and uWSGI 2.0.21 interrupted while
    it announces can send its unsubscribe unsigned (then one more signed
    subscribe).
    """
    def announced():
        return [a for a, _ in tee.announces() if a.key == key and not a.unsubscribe]

    seen = len(announced())
    wait_until(lambda: len(announced()) > seen, "an announce", 5, worker)
    # Not a wait for a condition: the signal is placed in time, well
    # after the announce and well before the next one, as uWSGI shows
    # nothing of where it is between the two.
    time.sleep(0.3)
    worker.signal(signal.SIGINT)
    worker.wait(10)


def test_a_signed_worker_stopped_with_sigint_leaves_and_its_datagrams_cannot_be_replayed(
    tmp_path, signing,
):
    """
    A real uWSGI signing its announces, stopped with SIGINT, leaves the pool
    at once: its signed unsubscribe is accepted.  Its datagrams, recorded
    on the way, are refused when replayed afterwards: the unsubscribe
    itself, its first subscribe, and its last one with the command byte
    flipped.

    uWSGI 2.0.21 sometimes sends an unsigned unsubscribe, then a signed
    subscribe, when SIGINT comes while it announces; the router refuses
    the unsigned one and the node stays until the tolerance.  The signal
    is sent between announces; should the race happen all the same, the
    unsigned unsubscribe is checked to be refused and the test tries again
    with a new worker and key (three times at most).
    """
    tmp, _, _ = signing
    keys = tmp / "keys"
    udp, port = free_udp_port(), free_port()
    args = ["--subscription-server", f"127.0.0.1:{udp}", "--subscriptions-sign-check", f"SHA1:{keys}"]
    with txrouter(tmp_path, "fast", port, args) as router:
        for attempt in range(3):
            key, address = f"sigint{attempt}.local", f"127.0.0.1:{free_port()}"
            shutil.copy(keys / "signed.local.pem", keys / f"{key}.pem")
            with DatagramTee(udp) as tee:
                signedBy = ["--subscribe-to", f"127.0.0.1:{tee.port}:{key},0,SHA1:{tmp / 'private.pem'}"]
                with subscribing_worker(tmp_path, address, signedBy, key) as worker:
                    joined(router, key, address)
                    assert ask("fast", port, key) == key
                    _stop_between_announces(worker, tee, key.encode())
                wait_until(lambda: any(a.unsubscribe for a, _ in tee.announces()),
                           "the unsubscribe", 5)
                recorded = tee.announces()
            [(unsubscribe, unsubscribeRaw)] = [(a, raw) for a, raw in recorded if a.unsubscribe]
            if unsubscribe.sign is not None:
                break
            wait_for_log(router, "subscription_refused: unsigned from 127.0.0.1: no signature"
                         f" for key b'{key}'", timeout=5)
        else:
            pytest.fail("uWSGI sent its unsubscribe unsigned three times")
        assert recorded[-1][0].unsubscribe, "the unsubscribe is the worker's last word"
        wait_for_log(router, f"{key} => removed node: {address} (unsubscribed)", timeout=5)
        assert ask("fast", port, key) == 404
        subscribes = [raw for announce, raw in recorded if not announce.unsubscribe]
        replays = [unsubscribeRaw, subscribes[0], subscribes[-1][:3] + b"\x01" + subscribes[-1][4:]]
        for raw in replays:
            send(udp, raw)
        for raw in replays:
            detail = (f"unix {parseSubscription(raw).unix} not after {unsubscribe.unix},"
                      f" already accepted for b'{key}' {address.encode()!r}")
            wait_for_log(router, f"subscription_refused: replayed from 127.0.0.1: {detail}", timeout=5)
        assert ask("fast", port, key) == 404
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
        # Waiting (the harness's own probe of the port among them).
        waiting = tcp_backlog(port)
        early = stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=10))
        early.sendall(uwsgi_packet("c.local"))
        # The router goes on working (it refuses a datagram sent after the
        # connection was made) and leaves the connection to the kernel.
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as junk:
            junk.sendto(b"junk", subs)
        wait_for_log(router, "subscription_refused: bad_modifier1")
        assert waiting >= 1 and tcp_backlog(port) == waiting + 1
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

    # txrouter's one addition at the top: its retry counts.
    # txrouter's own keys, before uWSGI's last one.
    assert [k for k in ours if k not in ("retries", "requests")] == list(theirs)
    assert list(ours)[-3:] == ["retries", "requests", "cheap"]
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
