"""
One worker's place in a pool: its process, started again after a delay
when it dies, stopped with SIGTERM and, if it lingers, SIGKILL; its log
events published in the pool's log.
"""

from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger, eventFromJSON, globalLogPublisher

from txrouter.workers.balance import ABSENT
from txrouter.workers.restart import RestartBackoff

__all__ = ["WorkerProtocol", "WorkerSlot"]

log = Logger(namespace="txrouter.workers")


class WorkerProtocol(ProcessProtocol):
    """
    One worker process seen from the pool: its log events, its end.
    """

    def __init__(self, slot, logFD: int) -> None:
        self.slot = slot
        self.logFD = logFD
        self._partial = b""

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD != self.logFD:
            return
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            self.slot.relay(line.strip(b"\x1e").strip())

    def processEnded(self, reason) -> None:
        self.slot.ended(reason.value)


class WorkerSlot:
    """
    The place of one worker in the pool: its running process, or the
    restart pending.
    """

    process = None
    channel = None
    restart = None
    pid = None

    def __init__(self, pool, index: int, clock, spawn, backoff=None) -> None:
        """
        @param spawn: called with the slot, starts its process and returns
            it (an C{IProcessTransport}); the process ends by calling
            L{ended}.
        """
        self.pool = pool
        self.index = index
        self.clock = clock
        self.spawn = spawn
        self.backoff = backoff or RestartBackoff()
        self.startedAt = None
        self._waiting = []

    def start(self) -> None:
        self.restart = None
        self.startedAt = self.clock.seconds()
        try:
            self.process = self.spawn(self)
            self.pid = self.process.pid
        except Exception as e:
            log.failure("worker_spawn_failed: worker {worker} could not be started",
                        event="worker_spawn_failed", worker=self.index)
            self.ended(e)
            return
        log.info("worker_started: worker {worker} is pid {pid}", event="worker_started",
                 worker=self.index, pid=self.pid)

    def relay(self, line: bytes) -> None:
        """
        Publish a log event the worker wrote (a JSON line) in the pool's
        log, marked with the worker's number.
        """
        if not line:
            return
        try:
            event = eventFromJSON(line.decode("utf-8", "replace"))
        except ValueError:
            return
        namespace = event.get("log_namespace", "-")
        level = event.get("log_level")
        event["worker"] = self.index
        event["log_system"] = f"{namespace}#{getattr(level, 'name', '-')} worker-{self.index}"
        globalLogPublisher(event)

    def ended(self, reason) -> None:
        lived = self.clock.seconds() - (self.startedAt or 0)
        pid, self.process, self.pid = self.pid, None, None
        if self.channel is not None and self.channel.transport is not None:
            self.channel.transport.loseConnection()
        self.channel = None
        if self.pool.board is not None:
            self.pool.board.set(self.index, ABSENT)
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(None)
        if self.pool.stopping:
            log.info("worker_stopped: worker {worker} (pid {pid}): {reason}",
                     event="worker_stopped", worker=self.index, pid=pid, reason=str(reason))
            return
        delay = self.backoff.delay(lived)
        log.warn(
            "worker_died: worker {worker} (pid {pid}) after {lived:.1f} s: {reason};"
            " starting it again in {delay:.1f} s",
            event="worker_died", worker=self.index, pid=pid, lived=lived, reason=str(reason),
            delay=delay,
        )
        self.restart = self.clock.callLater(delay, self.start)

    def signal(self, name: str) -> None:
        if self.process is not None:
            try:
                self.process.signalProcess(name)
            except Exception:
                pass

    def stop(self, timeout: float) -> Deferred:
        """
        SIGTERM, then SIGKILL after C{timeout} seconds; fires once the
        worker has ended.
        """
        if self.restart is not None and self.restart.active():
            self.restart.cancel()
        self.restart = None
        if self.process is None:
            return succeed(None)
        done = Deferred()
        self._waiting.append(done)
        self.signal("TERM")
        kill = self.clock.callLater(timeout, self.signal, "KILL")

        def cancel(result):
            if kill.active():
                kill.cancel()
            return result

        return done.addBoth(cancel)
