"""
The twistd process of a C{--processes N} router: the pool.

It binds the router's listeners (L{BoundListeners}: while twistd may still
run as root, and systemd's sockets too) and its subscription sockets, and
runs N worker processes (L{txrouter.workers.worker}) that inherit the
listening sockets and accept on them, each the same router built from the
same configuration.  Sharing the sockets, rather than N sockets bound with
C{SO_REUSEPORT}, keeps the kernel's one queue per listener: a worker that
dies leaves no connections waiting in a queue of its own, the others take
them all while it is replaced, and UNIX and systemd sockets work the same.

The pool:
  - restarts a worker that dies, after a delay that grows while workers
    keep dying (L{RestartBackoff}), logged (C{worker_died},
    C{worker_started});
  - forwards every subscription datagram to every worker
    (L{txrouter.workers.channel}), which applies it to its own registry,
    and gives a worker that starts the newest datagram of every node
    first (L{LatestAnnounces});
  - forwards SIGHUP (reload) and SIGUSR1 (reopen the access log);
  - answers C{--stats} with the workers' total and each one's document
    (C{workers}), and C{--metrics} with each worker's metrics labelled
    C{worker};
  - on stop, sends each worker SIGTERM (each drains its sessions, up to
    C{--graceful-timeout}) and waits for all of them, killing any still
    there a few seconds after that.
"""

import os
import pickle
import shutil
import signal
import socket
import sys
import tempfile

import attr
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.logger import Logger

import txrouter
from txrouter.service import Listener
from txrouter.signals import OnSignal
from txrouter.stats.server import MetricsFactory, StatsFactory, statsEndpoint
from txrouter.subscription.server import DatagramListener
from txrouter.workers.announces import FanOut, LatestAnnounces
from txrouter.workers.balance import SessionBoard
from txrouter.workers.channel import PoolChannel, channelFactory
from txrouter.workers.listeners import BoundListeners
from txrouter.workers.slot import WorkerProtocol, WorkerSlot
from txrouter.workers.totals import gather, labelledMetrics, parseDocument, poolDocument, readAll
from txrouter.workers.worker import WorkerSpec

__all__ = ["WorkerPool"]

log = Logger(namespace="txrouter.workers")

#: Seconds a worker may take beyond C{--graceful-timeout} before it is killed.
KILL_MARGIN = 5.0

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(txrouter.__file__)))


@attr.frozen
class WorkerReread:
    """
    A worker's SIGHUP: the configuration read again from its files, made
    the worker's as L{WorkerPool.workerConfig} makes it at the start, so
    that only what the files changed differs.
    """

    reread: object
    overrides: dict

    def __call__(self):
        return attr.evolve(self.reread(), **self.overrides)


class WorkerPool(MultiService):
    """
    A router run in C{config.processes} worker processes.

    @ivar slots: a L{WorkerSlot} per worker.
    @ivar stopping: whether the pool is stopping (a worker that ends then
        is not started again).
    """

    stopping = False
    runDirectory = None
    board = None

    def __init__(self, reactor, config, socketFiles=lambda reactor: reactor, reread=None) -> None:
        """
        @param socketFiles: wraps the reactor the pool binds with, so that
            unix socket files are made as asked
            (L{txrouter.build.socketFilesOf}).
        @param reread: reads the configuration again from its files (a
            L{txrouter.tap.common.ConfigRereader}), or L{None}: given to the
            workers, each of which calls it on the SIGHUP the pool passes on.
        @raise ValueError: the configuration cannot be given to workers
            (a C{--use-code} function that cannot be pickled).
        """
        super().__init__()
        self.reactor = reactor
        self.config = config
        self.reread = reread
        try:
            pickle.dumps(config)
        except Exception as e:
            raise ValueError(
                f"--processes: this configuration cannot be given to worker processes ({e});"
                " --use-code must name an importable MODULE:FUNCTION"
            ) from None
        self.latest = LatestAnnounces()
        binding = socketFiles(reactor)
        self.listeners = BoundListeners(binding, config)
        self.listeners.setServiceParent(self)
        for address in config.subscription_server:
            DatagramListener(binding, address, FanOut(self, address.text)).setServiceParent(self)
        for signum, name in ((signal.SIGHUP, "HUP"), (signal.SIGUSR1, "USR1")):
            OnSignal(reactor, signum, lambda name=name: self.signalWorkers(name)).setServiceParent(self)
        if config.stats:
            stats = StatsFactory(reactor, self.statsDocument, http=config.stats_http,
                                 minified=config.stats_minified)
            stats.metrics = self.metricsText
            stats.shortName = config.statsName
            Listener(statsEndpoint(binding, config.stats), stats).setServiceParent(self)
        if config.metrics:
            Listener(statsEndpoint(binding, config.metrics),
                     MetricsFactory(reactor, self.metricsText)).setServiceParent(self)
        self.slots = [WorkerSlot(self, index, reactor, self._spawn)
                      for index in range(config.processes)]

    def startService(self) -> None:
        super().startService()
        self.runDirectory = tempfile.mkdtemp(prefix="txrouter-workers-")
        self.board = SessionBoard.create(os.path.join(self.runDirectory, "sessions"), len(self.slots))
        for slot in self.slots:
            slot.start()

    def stopService(self):
        self.stopping = True
        timeout = self.config.graceful_timeout + KILL_MARGIN
        stopped = DeferredList([slot.stop(timeout) for slot in self.slots])
        stopped.addCallback(lambda _: MultiService.stopService(self))
        stopped.addCallback(self._removeRunDirectory)
        return stopped

    def _removeRunDirectory(self, result):
        if self.board is not None:
            self.board.close()
            self.board = None
        if self.runDirectory is not None:
            shutil.rmtree(self.runDirectory, ignore_errors=True)
        return result

    def signalWorkers(self, name: str) -> None:
        """
        Send every worker the signal C{name} (C{HUP}, C{USR1}).
        """
        log.info("workers_signalled: SIG{signal} to {count} workers", event="workers_signalled",
                 signal=name, count=len(self.slots))
        for slot in self.slots:
            slot.signal(name)

    # Worker processes

    def _path(self, index: int, what: str) -> str:
        return os.path.join(self.runDirectory, f"worker-{index}.{what}")

    def workerConfig(self, index: int):
        """
        The configuration worker C{index} builds: one process, its stats
        (and metrics) on its own unix sockets, which the pool reads.
        """
        return attr.evolve(self.config, **self._workerOverrides(index))

    def _workerOverrides(self, index: int) -> dict:
        metrics = None
        if self.config.metrics or self.config.stats_http:
            metrics = "unix:" + self._path(index, "metrics")
        return dict(
            processes=1, stats="unix:" + self._path(index, "stats"),
            stats_http=False, stats_minified=True, metrics=metrics,
            # The pool made the socket files and switched users already.
            uid=None, gid=None, chmod_socket=None, chown_socket=None,
        )

    def _workerReread(self, index: int):
        if self.reread is None:
            return None
        return WorkerReread(self.reread, self._workerOverrides(index))

    def _spawn(self, slot):
        for what in ("stats", "metrics"):
            # What a worker that was killed left.
            try:
                os.unlink(self._path(slot.index, what))
            except FileNotFoundError:
                pass
        systemd = [bound for bound in self.listeners.sockets if bound.kind == "systemd"]
        nextFD = max([2] + [bound.address for bound in systemd]) + 1
        childFDs = {0: "w", 1: 1, 2: 2}
        sockets = []
        for bound in self.listeners.sockets:
            if bound.kind == "systemd":
                childFD = bound.address
            else:
                childFD, nextFD = nextFD, nextFD + 1
            childFDs[childFD] = bound.fd
            sockets.append(attr.evolve(bound, fd=childFD))
        logFD, channelFD = nextFD, nextFD + 1
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        childFDs[logFD] = "r"
        childFDs[channelFD] = theirs.fileno()
        spec = WorkerSpec(
            self.workerConfig(slot.index), slot.index, tuple(sockets), channelFD, logFD,
            os.path.join(self.runDirectory, "sessions"), len(self.slots),
            self._workerReread(slot.index))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [_ROOT, env.get("PYTHONPATH")]))
        # The pool alone tells systemd it is ready or stopping.
        for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "NOTIFY_SOCKET"):
            env.pop(name, None)
        if systemd:
            # The worker's systemd: endpoints find the sockets where systemd
            # put them for the pool (LISTEN_PID: the worker sets its own).
            descriptors, names = _systemdDescriptors()
            env["LISTEN_FDS"] = str(len(descriptors))
            env["LISTEN_FDNAMES"] = ":".join(names)
        try:
            process = self.reactor.spawnProcess(
                WorkerProtocol(slot, logFD), sys.executable,
                [sys.executable, "-m", "txrouter.workers.worker"], env=env, childFDs=childFDs,
            )
        finally:
            theirs.close()
        channel = PoolChannel()
        self.reactor.adoptStreamConnection(ours.fileno(), socket.AF_UNIX, channelFactory(channel))
        ours.close()
        slot.channel = channel
        self.latest.replay(channel)
        process.writeToChild(0, pickle.dumps(spec))
        process.closeChildFD(0)
        return process

    # Stats

    def statsDocument(self) -> Deferred:
        """
        The pool's stats document (L{poolDocument}), from every worker's.
        """
        from txrouter.build import statsAddresses

        def ask(slot):
            if slot.process is None:
                return succeed(None)
            return readAll(self.reactor, self._path(slot.index, "stats")).addCallback(parseDocument)

        answers = gather([ask(slot) for slot in self.slots])
        return answers.addCallback(lambda documents: poolDocument(
            self.config.statsName, statsAddresses(self.config),
            list(zip(range(len(self.slots)), documents)),
        ))

    def metricsText(self) -> Deferred:
        """
        The Prometheus text of every worker's metrics, each sample labelled
        with its C{worker}.
        """
        def ask(slot):
            if slot.process is None:
                return succeed(None)
            return readAll(self.reactor, self._path(slot.index, "metrics"),
                           b"GET /metrics HTTP/1.0\r\n\r\n")

        answers = gather([ask(slot) for slot in self.slots])
        return answers.addCallback(labelledMetrics)


def _systemdDescriptors():
    """
    The descriptors systemd handed this process and their names, as
    Twisted's C{systemd:} endpoints read them (Twisted removes them from
    the environment once read).
    """
    from twisted.internet.endpoints import _SystemdParser

    daemon = _SystemdParser._sddaemon
    descriptors = daemon.inheritedDescriptors()
    names = dict((fd, name) for name, fd in daemon.inheritedNamedDescriptors().items())
    return descriptors, [names.get(fd, "unknown") for fd in descriptors]
