"""
A worker process of a C{--processes} pool: C{python -m txrouter.workers.worker}.

The pool writes a L{WorkerSpec} (pickled) to the worker's standard input:
the router's configuration and where the worker's inherited descriptors
are.  The worker builds the router from it as a router of one process
would (L{txrouter.build.buildService}), with its listeners on the
inherited sockets and its subscription servers fed by the pool
(L{WorkerSide}), serves its own stats (and metrics) on private unix
sockets for the pool to read, writes its log events as JSON lines to the
pool, and runs until SIGTERM or SIGINT (drained as a router of one process
drains) or until the pool is gone.
"""

import os
import pickle
import signal
import socket
import sys

import attr
from twisted.application.service import Service
from twisted.logger import Logger

__all__ = ["WorkerSide", "WorkerSpec", "ForwardedDatagrams", "main", "portableEvent"]


@attr.frozen
class WorkerSpec:
    """
    What a worker is told when it starts.

    @ivar config: the router's configuration, as the worker builds it
        (one process, its own stats and metrics sockets).
    @ivar index: the worker's number in the pool, from 0.
    @ivar sockets: its inherited listening sockets (L{BoundSocket}s, with
        the worker's descriptor numbers).
    @ivar channel: the descriptor of its end of the pool's channel.
    @ivar log: the descriptor it writes its log events to.
    @ivar board: the path of the pool's L{SessionBoard}.
    @ivar workers: how many workers the pool runs.
    @ivar reread: what reads the configuration again on SIGHUP (a
        L{txrouter.workers.pool.WorkerReread}), or L{None} when it comes
        from no file.
    """

    config: object
    index: int
    sockets: tuple
    channel: int
    log: int
    board: str
    workers: int
    reread: object = None


class ForwardedDatagrams(Service):
    """
    A worker's subscription server: hears the datagrams the pool forwards
    for one address, instead of binding it.
    """

    def __init__(self, channel, address, protocol) -> None:
        self.channel = channel
        self.address = address
        self.protocol = protocol

    def startService(self) -> None:
        super().startService()
        self.protocol.doStart()
        self.channel.listen(self.address.text, self.protocol)

    def stopService(self):
        self.channel.forget(self.address.text)
        self.protocol.doStop()
        return super().stopService()


@attr.s(auto_attribs=True)
class WorkerSide:
    """
    Where a worker's listening sockets and subscriptions come from, for
    L{txrouter.build.buildService}.

    @ivar index: the worker's number in the pool: only the first one
        acknowledges subscriptions and resubscribes.
    @ivar listeners: its L{InheritedListeners}.
    @ivar channel: its L{WorkerChannel}.
    """

    index: int
    listeners: object
    channel: object

    def datagramListener(self, reactor, address, protocol) -> ForwardedDatagrams:
        return ForwardedDatagrams(self.channel, address, protocol)


def portableEvent(event: dict) -> dict:
    """
    C{event} as it can go to the pool in JSON: an exception does not
    survive JSON, so a failure becomes its traceback, as text, at the end
    of the message.
    """
    failure = event.get("log_failure")
    if failure is None:
        return event
    event = dict(event, log_traceback=failure.getTraceback())
    del event["log_failure"]
    event["log_format"] = event.get("log_format", "") + "\n{log_traceback}"
    return event


def _startLogging(fd: int) -> None:
    from twisted.logger import (
        FilteringLogObserver, LogLevel, LogLevelFilterPredicate, globalLogBeginner,
        jsonFileLogObserver,
    )

    writer = jsonFileLogObserver(os.fdopen(fd, "w", buffering=1, encoding="utf-8"))

    observer = FilteringLogObserver(
        lambda event: writer(portableEvent(event)), [LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)])
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)


def main() -> None:
    # A terminal's ^C (SIGINT to its foreground process group) reaches the
    # pool alone, which stops its workers itself.
    os.setpgid(0, 0)
    if "LISTEN_FDS" in os.environ:
        # The pool's systemd sockets, for the worker's systemd: endpoints,
        # which read this when Twisted's endpoints module is first imported
        # (unpickling the configuration imports it).
        os.environ["LISTEN_PID"] = str(os.getpid())
    spec = pickle.load(sys.stdin.buffer)
    # Nothing to reload or reopen is no reason to die: the pool forwards
    # these to every worker (the router's own handlers replace these).
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    from txrouter.tap.common import runningReactor

    reactor = runningReactor()
    _startLogging(spec.log)

    from txrouter.build import buildService
    from txrouter.workers.channel import WorkerChannel, channelFactory
    from txrouter.workers.balance import SessionBalance, SessionBoard
    from txrouter.workers.listeners import InheritedListeners

    log = Logger(namespace="txrouter.workers")

    def parentGone():
        if reactor.running:
            reactor.stop()

    channel = WorkerChannel(parentGone)
    reactor.adoptStreamConnection(spec.channel, socket.AF_UNIX, channelFactory(channel))
    os.close(spec.channel)
    balance = SessionBalance(reactor, SessionBoard(spec.board, spec.workers), spec.index)
    listeners = InheritedListeners(spec.sockets, balance)
    try:
        service = buildService(
            spec.config, reactor, spec.reread, worker=WorkerSide(spec.index, listeners, channel))
        sessions = service.router.sessions
        balance.sessions = sessions.__len__
        balance.start()
        service.privilegedStartService()
        service.startService()
    except Exception:
        log.failure("worker_failed: worker {worker} could not start", event="worker_failed",
                    worker=spec.index)
        raise SystemExit(3)
    for bound in listeners.left():
        log.warn("worker_socket_unused: no listener asked for {kind} {address}",
                 event="worker_socket_unused", kind=bound.kind, address=repr(bound.address))
    for bound in spec.sockets:
        # Each listener listens on its own copy (a systemd: endpoint has
        # closed its descriptor already).
        if bound.kind != "systemd":
            os.close(bound.fd)
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.addSystemEventTrigger("before", "shutdown", balance.stop)
    reactor.run()


if __name__ == "__main__":
    main()
