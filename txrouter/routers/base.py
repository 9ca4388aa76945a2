"""
What every router's factory shares: its open sessions and a graceful drain.
"""

from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import ServerFactory
from twisted.logger import Logger

log = Logger(namespace="txrouter.router")


class RouterFactory(ServerFactory):
    """
    The factory of a router's listeners, which keeps track of its sessions.

    A session adds itself to L{sessions} when connected, calls
    L{sessionClosed} when gone, and provides C{closeWhenIdle()}.

    @ivar sessions: the open client connections.
    @ivar draining: L{drain} was called: sessions close once idle.
    """

    noisy = False

    def __init__(self, reactor) -> None:
        self.reactor = reactor
        self.sessions = set()
        self.draining = False
        self._drainWaiters = []

    def drain(self, timeout: float):
        """
        Finish in-flight requests, close idle connections, then stop.

        Listeners must already have stopped accepting.  Connections still
        open after C{timeout} seconds are aborted.

        @return: a Deferred that fires when no session is left.
        """
        self.draining = True
        for session in list(self.sessions):
            session.closeWhenIdle()
        if not self.sessions:
            return succeed(None)
        waiter = Deferred()
        self._drainWaiters.append(waiter)
        call = self.reactor.callLater(timeout, self._abortAll)
        waiter.addBoth(lambda r: (call.active() and call.cancel(), r)[1])
        return waiter

    def _abortAll(self) -> None:
        if self.sessions:
            log.warn(
                "drain_timeout: aborting {count} connections",
                event="drain_timeout", count=len(self.sessions),
            )
        for session in list(self.sessions):
            session.transport.abortConnection()

    def sessionClosed(self, session) -> None:
        """
        Called by a session when its connection is gone.
        """
        self.sessions.discard(session)
        if self.draining and not self.sessions:
            waiters, self._drainWaiters = self._drainWaiters, []
            for waiter in waiters:
                waiter.callback(None)
