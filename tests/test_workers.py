"""
The parts of C{--processes} that fakes can drive: the restart delays, a
worker's slot dying and started again on a clock, subscription datagrams
fanned out over AMP to every worker (each one's replay protection
intact), the inherited listeners, the share of clients a worker accepts,
the pool's stats totals, the option.
"""

import socket

import pytest
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.python.usage import UsageError
from twisted.test.iosim import connectedServerAndClient

from tests.test_subscription_signing import REFRESH, SUBSCRIBE, checkerWithCapturedKey
from txrouter.build import buildService
from txrouter.config import FastRouterConfig, HTTPRouterConfig, cpuCount
from txrouter.subscription.addresses import parseDatagramAddress
from txrouter.subscription.server import SubscriptionProtocol
from txrouter.tap.http import Options
from txrouter.workers.announces import FanOut, LatestAnnounces
from txrouter.workers.balance import ABSENT, SessionBalance, SessionBoard
from txrouter.workers.channel import PoolChannel, WorkerChannel
from txrouter.workers.listeners import BoundSocket, InheritedListeners
from txrouter.workers.pool import WorkerPool
from txrouter.workers.restart import RestartBackoff
from txrouter.workers.slot import WorkerSlot
from txrouter.workers.totals import mergeDocuments, poolDocument
from txrouter.workers.worker import ForwardedDatagrams, portableEvent


def test_backoff_doubles_while_workers_keep_dying_and_starts_over_after_a_stable_run():
    backoff = RestartBackoff(first=0.1, maximum=1.0, stable=10.0)
    assert [backoff.delay(0.5) for _ in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert backoff.delay(10.0) == 0.1
    assert backoff.delay(1.0) == 0.2


class FakeProcess:
    def __init__(self, pid):
        self.pid = pid
        self.signals = []

    def signalProcess(self, name):
        self.signals.append(name)


class FakePool:
    stopping = False
    board = None


def slotOnClock():
    clock, pool, started = Clock(), FakePool(), []

    def spawn(slot):
        started.append(clock.seconds())
        return FakeProcess(len(started))

    return WorkerSlot(pool, 0, clock, spawn, RestartBackoff(0.1, 30.0, 10.0)), clock, pool, started


def test_a_dead_worker_is_started_again_after_the_backoff():
    slot, clock, pool, started = slotOnClock()
    slot.start()
    clock.advance(1)
    slot.ended(Failure(Exception("killed")).value)
    assert slot.process is None and started == [0]
    clock.advance(0.09)
    assert started == [0]
    clock.advance(0.01)
    assert started == [0, 1.1] and slot.pid == 2
    # Dying at once again: twice the delay.
    slot.ended(Exception("killed"))
    clock.advance(0.19)
    assert len(started) == 2
    clock.advance(0.01)
    assert len(started) == 3
    # A worker that ran a while is started again after the first delay.
    clock.advance(60)
    slot.ended(Exception("killed"))
    clock.advance(0.1)
    assert len(started) == 4


def test_a_stopping_pool_starts_no_worker_again_and_kills_one_that_lingers():
    slot, clock, pool, started = slotOnClock()
    slot.start()
    process = slot.process
    pool.stopping = True
    stopped = slot.stop(5.0)
    assert process.signals == ["TERM"]
    clock.advance(5.0)
    assert process.signals == ["TERM", "KILL"]
    assert not stopped.called
    slot.ended(Exception("killed"))
    assert stopped.called
    clock.advance(100)
    assert started == [0]


def test_stopping_cancels_a_pending_restart():
    slot, clock, pool, started = slotOnClock()
    slot.start()
    slot.ended(Exception("killed"))
    pool.stopping = True
    assert slot.stop(5.0).called
    clock.advance(100)
    assert started == [0]


class SignedRegistry:
    """
    A registry that checks signatures as the real one does and records
    what it accepted.
    """

    def __init__(self, checker):
        self.checker = checker
        self.accepted = []

    def apply(self, subscription, source):
        self.checker.check(subscription)
        self.accepted.append((subscription.key, source))
        return type("Applied", (), {"notify": None})()


class FakeSlot:
    def __init__(self, channel):
        self.channel = channel


def test_every_datagram_reaches_every_worker_whose_replay_protection_holds(tmp_path):
    """
    The pool forwards each datagram to each worker over AMP; each worker's
    own checker accepts a signed announce once and refuses its replay.
    """
    address = parseDatagramAddress("127.0.0.1:7000", listen=True)
    workers, pumps, slots = [], [], []
    for index in range(2):
        (tmp_path / str(index)).mkdir()
        checker, clock = checkerWithCapturedKey(tmp_path / str(index))
        registry = SignedRegistry(checker)
        protocol = SubscriptionProtocol(registry, clock)
        channel = WorkerChannel()
        ForwardedDatagrams(channel, address, protocol).startService()
        poolEnd, workerEnd, pump = connectedServerAndClient(lambda: channel, PoolChannel)
        workers.append((registry, protocol))
        pumps.append(pump)
        slots.append(FakeSlot(poolEnd))
    pool = type("Pool", (), {"slots": slots, "latest": LatestAnnounces()})()
    fanOut = FanOut(pool, address.text)
    for datagram in (SUBSCRIBE, SUBSCRIBE, REFRESH):
        fanOut.datagramReceived(datagram, ("127.0.0.9", 4321))
        for pump in pumps:
            pump.flush()
    for registry, protocol in workers:
        assert registry.accepted == [(b"signed.local", "127.0.0.9")] * 2
        assert protocol.counts == {"accepted": 2, "replayed": 1}

    # A worker started now is given the newest announce of the node first:
    # it knows the node, and refuses the older one replayed.
    (tmp_path / "new").mkdir()
    checker, clock = checkerWithCapturedKey(tmp_path / "new")
    registry = SignedRegistry(checker)
    protocol = SubscriptionProtocol(registry, clock)
    channel = WorkerChannel()
    ForwardedDatagrams(channel, address, protocol).startService()
    poolEnd, workerEnd, pump = connectedServerAndClient(lambda: channel, PoolChannel)
    pool.latest.replay(poolEnd)
    pool.slots.append(FakeSlot(poolEnd))
    fanOut.datagramReceived(SUBSCRIBE, ("127.0.0.9", 4321))
    pump.flush()
    assert registry.accepted == [(b"signed.local", "127.0.0.9")]
    assert protocol.counts == {"accepted": 1, "replayed": 1}


def test_a_worker_whose_pool_is_gone_stops():
    lost = []
    channel = WorkerChannel(lambda: lost.append(True))
    poolEnd, workerEnd, pump = connectedServerAndClient(lambda: channel, PoolChannel)
    poolEnd.transport.loseConnection()
    pump.flush()
    assert lost == [True]


def test_inherited_listeners_are_taken_by_kind_and_address_once():
    inherited = InheritedListeners([
        BoundSocket("tcp", (0, "127.0.0.1"), 7, 2), BoundSocket("tcp", (0, "127.0.0.1"), 8, 2),
        BoundSocket("unix", "/run/a.sock", 9, 1),
    ])
    assert inherited.take("unix", "/run/a.sock") == (9, 1)
    assert inherited.take("unix", "/run/a.sock") is None
    assert inherited.take("tcp", (0, "127.0.0.1")) == (7, 2)
    assert inherited.take("tcp", (8080, "127.0.0.1")) is None
    assert [bound.fd for bound in inherited.left()] == [8]


def test_the_total_sums_counters_and_lists_each_worker():
    def document(pid, hits, started, sessions):
        return {"version": "v", "pid": pid, "active_sessions": sessions, "http": [":80"],
                "static_nodes": [{"name": "/a.sock", "hits": hits, "grace": 0}],
                "requests": {"started": started, "statuses": {"2xx": started}}, "cheap": 0}

    total = poolDocument("http", [":80"], [(0, document(11, 3, 4, 1)), (1, document(12, 5, 6, 2)),
                                           (2, None)])
    assert total["active_sessions"] == 3
    assert total["static_nodes"] == [{"name": "/a.sock", "hits": 8, "grace": 0}]
    assert total["requests"] == {"started": 10, "statuses": {"2xx": 10}}
    assert [worker.get("pid") for worker in total["workers"]] == [11, 12, None]
    assert total["workers"][2] == {"worker": 2, "running": False}
    assert total["http"] == [":80"] and total["cheap"] == 0


def test_merging_matches_pools_by_key():
    merged = mergeDocuments([
        {"subscriptions": [{"key": "a", "hits": 1, "nodes": [{"name": "n", "requests": 2}]}]},
        {"subscriptions": [{"key": "b", "hits": 1, "nodes": []},
                           {"key": "a", "hits": 2, "nodes": [{"name": "n", "requests": 3}]}]},
    ])
    assert merged["subscriptions"] == [
        {"key": "a", "hits": 3, "nodes": [{"name": "n", "requests": 5}]},
        {"key": "b", "hits": 1, "nodes": []},
    ]


def test_processes_option():
    def parse(*args):
        options = Options()
        options.parseOptions(["--bind", "tcp:0", "--to", "/a.sock", *args])
        return options.config.processes

    assert parse() == 1
    assert parse("--processes", "3") == 3
    assert parse("--processes", "auto") == cpuCount()
    for wrong in ("0", "x"):
        with pytest.raises(UsageError) as e:
            parse("--processes", wrong)
        assert "--processes" in str(e.value)
    with pytest.raises(UsageError) as e:
        parse("--http-processes", "2")
    assert "here it is --processes" in str(e.value)


def test_a_config_of_several_processes_builds_a_pool():
    reactor = MemoryReactorClock()
    pool = buildService(FastRouterConfig(bind=["tcp:0"], to=["/a.sock"], processes=2), reactor)
    assert isinstance(pool, WorkerPool) and len(pool.slots) == 2
    single = buildService(HTTPRouterConfig(bind=["tcp:0"], to=["/a.sock"]), reactor)
    assert not isinstance(single, WorkerPool)


def test_a_function_that_cannot_reach_the_workers_is_refused():
    with pytest.raises(ValueError) as e:
        buildService(HTTPRouterConfig(bind=["tcp:0"], use_code=lambda key: None, processes=2),
                     MemoryReactorClock())
    assert str(e.value).startswith("--processes:")


def test_a_worker_failure_reaches_the_pool_log_with_its_message():
    """
    A failure a worker logs goes to the pool as JSON and comes out there
    with the exception's message and traceback.
    """
    from twisted.logger import eventAsJSON, eventFromJSON, formatEvent

    try:
        raise ValueError("--bind: no such thing")
    except ValueError:
        failure = Failure()
    event = {"log_format": "worker_failed: worker {worker}", "worker": 1, "log_failure": failure,
             "log_namespace": "txrouter.workers"}
    relayed = eventFromJSON(eventAsJSON(portableEvent(event)))
    text = formatEvent(relayed)
    assert text.startswith("worker_failed: worker 1\n")
    assert "ValueError: --bind: no such thing" in text


class FakePort:
    connected = True

    def __init__(self):
        self.reading = True

    def stopReading(self):
        self.reading = False

    def startReading(self):
        self.reading = True


def test_a_worker_over_its_share_stops_accepting_for_a_moment(tmp_path):
    """
    A worker accepts up to the sessions of its least loaded running
    sibling plus a slack; over that its port stops reading for a few
    milliseconds, unless cheap mode paused it meanwhile.
    """
    board = SessionBoard.create(str(tmp_path / "sessions"), 3)
    clock, mine = Clock(), [0]
    balance = SessionBalance(clock, SessionBoard(str(tmp_path / "sessions"), 3), 0,
                             lambda: mine[0])
    assert balance.allowance() == 1 << 30
    assert board.values() == [0, ABSENT, ABSENT]
    board.set(1, 5)
    board.set(2, 30)
    mine[0] = 4
    assert balance.allowance() == 5 + 2 - 4
    mine[0] = 7
    assert balance.allowance() == 0
    port = FakePort()
    balance.pause(port)
    assert not port.reading
    clock.advance(balance.pauseSeconds)
    assert port.reading
    balance.pause(port)
    port.cheapPaused = True
    clock.advance(balance.pauseSeconds)
    assert not port.reading
    balance.start()
    mine[0] = 3
    clock.advance(balance.publishSeconds)
    assert board.values()[0] == 3
    balance.stop()
    assert board.values()[0] == ABSENT


class CountingAdmission:
    """
    An admission allowing C{allowed} clients per readable event, which
    counts how often it is asked.
    """

    def __init__(self, allowed: int) -> None:
        self.allowed = allowed
        self.asked = 0
        self.paused = []

    def allowance(self) -> int:
        self.asked += 1
        return self.allowed

    def pause(self, port) -> None:
        self.paused.append(port)


def test_an_inherited_port_asks_its_admission_once_per_readable_event():
    """
    A worker's port on an inherited socket asks its admission once per
    readable event, accepts no more than it allows, and stops reading when
    it allows none.
    """
    from twisted.internet.protocol import Factory, Protocol

    from txrouter.transports import _InheritedTCPPort

    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    listening.listen(10)
    listening.setblocking(False)
    clients = [socket.create_connection(listening.getsockname()) for _ in range(3)]
    try:
        factory = Factory.forProtocol(Protocol)
        factory.noisy = False
        port = _InheritedTCPPort._fromListeningDescriptor(
            MemoryReactorClock(), listening.fileno(), socket.AF_INET, factory)
        port.admission = admission = CountingAdmission(2)
        port.startListening()
        port.doRead()
        assert (admission.asked, port.sessionno) == (1, 2)
        admission.allowed = 0
        port.doRead()
        assert (admission.asked, port.sessionno, admission.paused) == (2, 2, [port])
        admission.allowed = 5
        port.doRead()
        assert (admission.asked, port.sessionno) == (3, 3)
    finally:
        for client in clients:
            client.close()
        listening.close()


def test_an_idle_worker_stops_publishing_until_it_accepts_again(tmp_path):
    """
    A worker with no clients publishes that, then no more (an idle pool
    does not wake up); once it is asked to accept, it publishes every
    C{publishSeconds} again.
    """
    board = SessionBoard.create(str(tmp_path / "sessions"), 2)
    clock, mine = Clock(), [2]
    balance = SessionBalance(clock, SessionBoard(str(tmp_path / "sessions"), 2), 0,
                             lambda: mine[0])
    balance.start()
    mine[0] = 0
    clock.advance(balance.publishSeconds)
    assert (board.values()[0], clock.getDelayedCalls()) == (0, [])
    balance.allowance()
    mine[0] = 1
    clock.advance(balance.publishSeconds)
    assert board.values()[0] == 1
    assert len(clock.getDelayedCalls()) == 1
    balance.stop()
    assert (board.values()[0], clock.getDelayedCalls()) == (ABSENT, [])
