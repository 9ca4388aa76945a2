"""
Signals that ask a running router to do something: SIGHUP reloads the
C{--cache-file} mapping, SIGUSR1 reopens the C{--access-log} (what
logrotate's C{postrotate} sends).
"""

import signal

from twisted.application.service import Service
from twisted.logger import Logger

__all__ = ["OnSignal"]

log = Logger(namespace="txrouter.signals")


class OnSignal(Service):
    """
    While running, call C{action()} in the reactor's thread each time the
    process gets C{signum}.

    Whatever handled the signal before is restored on stop, and still
    called meanwhile when it is a Python function: twistd, logging to a
    file, rotates its own log on SIGUSR1, and keeps doing so.  Several
    L{OnSignal}s for one signal chain the same way.
    """

    def __init__(self, reactor, signum: int, action) -> None:
        """
        @param action: a callable of no argument; an exception it raises is
            logged (C{signal_action_failed}) and the process goes on.
        """
        self.reactor = reactor
        self.signum = signum
        self.action = action
        self._previous = None

    def startService(self) -> None:
        super().startService()
        self._previous = signal.signal(self.signum, self._received)

    def stopService(self):
        if self._previous is not None:
            signal.signal(self.signum, self._previous)
            self._previous = None
        return super().stopService()

    def _received(self, signum, frame) -> None:
        # A signal handler runs between two bytecodes of whatever the
        # reactor was doing: the action waits for the reactor's next turn.
        self.reactor.callFromThread(self._act)
        if callable(self._previous):
            self._previous(signum, frame)

    def _act(self) -> None:
        try:
            self.action()
        except Exception:
            log.failure(
                "signal_action_failed: on {signal}", event="signal_action_failed",
                signal=signal.Signals(self.signum).name,
            )
