"""
The reactor twistd runs a router on: Twisted's epoll reactor with a leaner
dispatch of ready descriptors.

For each descriptor the poller reports, Twisted's epoll reactor calls
C{log.callWithLogger}: it asks the descriptor for its C{logPrefix()} and
runs the read or write inside a legacy log context (a dict pushed on a
thread-local stack) so that a legacy C{log.msg} made meanwhile is tagged
with that prefix.  A router handles two events per request and logs
nothing on that path, and what it logs goes through C{twisted.logger},
which never reads that context; that layer was an eighth of the
instructions a keep-alive request cost the HTTP router.  L{RouterReactor}
calls the read or write directly and logs what escapes it, as
C{callWithLogger} would.

It also lets code run right after the events of one poll are handled
(L{RouterReactor.callAfterEvents}): the router's transports close a
backend connection and connect a UNIX node there, after the caller has
returned but before the reactor polls again, without a delayed call.

What differs: a legacy log line that Twisted itself writes while handling
an event (an accept error, a traceback from a protocol) carries the system
C{-} instead of the transport's log prefix.

The router plugins install it unless twistd's C{--reactor} names another;
C{twistd --reactor txrouter} picks it for any other application (a
C{.tac} file, say).
"""

from twisted.internet.epollreactor import EPollReactor
from twisted.logger import Logger, LogLevel

__all__ = ["RouterReactor", "install"]

_log = Logger()
#: The main loop logs as Twisted's does.
_loopLog = Logger(namespace="twisted.internet.base")


class RouterReactor(EPollReactor):
    """
    An epoll reactor whose events are dispatched without the legacy log
    context, and which can call code once they are handled.
    """

    #: While the events of a poll are handled, the calls to make once they
    #: all are, as C{(f, args)}; L{None} otherwise.  L{callAfterEvents}
    #: appends to it; the router's transports, on their hot path, too.
    afterEvents = None

    def callAfterEvents(self, f, *args) -> None:
        """
        Call C{f(*args)} once the events of the current poll are handled,
        before anything else runs (delayed calls, the next poll): never
        inside the caller's stack, and with no reactor trip in between.

        Outside the handling of events, the call is made on the next
        iteration (C{callLater(0)}).  What C{f} raises is logged.
        """
        afterEvents = self.afterEvents
        if afterEvents is None:
            self.callLater(0, f, *args)
        else:
            afterEvents.append((f, args))

    def doPoll(self, timeout):
        """
        Wait up to C{timeout} seconds (for ever if L{None}) for ready
        descriptors, handle each, then make the calls asked for meanwhile
        (L{afterEvents}).
        """
        try:
            events = self._poller.poll(-1 if timeout is None else timeout, len(self._selectables))
        except InterruptedError:
            return
        selectables = self._selectables
        handle = self._doReadOrWrite
        calls = self.afterEvents = []
        try:
            for fd, event in events:
                selectable = selectables.get(fd)
                if selectable is None:
                    continue
                try:
                    handle(selectable, fd, event)
                except KeyboardInterrupt:
                    raise
                except BaseException:
                    # _doReadOrWrite catches what doRead and doWrite raise, not
                    # what the connectionLost of a disconnect raises.
                    _log.failure("while handling {selectable!r}", selectable=selectable)
            while calls:
                # A call may ask for more: they are made in this loop too.
                self.afterEvents = []
                for f, args in calls:
                    try:
                        f(*args)
                    except KeyboardInterrupt:
                        raise
                    except BaseException:
                        _log.failure("while calling {f!r} after events", f=f)
                calls = self.afterEvents
        finally:
            self.afterEvents = None

    doIteration = doPoll

    # Twisted's main loop turns twice per keep-alive request.  It and the
    # two questions it asks before every poll work here as Twisted's do,
    # without the calls that cost most when no delayed call is new or due
    # (entering and leaving a context manager, min and max of two numbers).

    def mainLoop(self) -> None:
        """
        Run until stopped: as Twisted's main loop, logging what escapes an
        iteration as critical and going on.
        """
        while self._started:
            try:
                self.runUntilCurrent()
                t2 = self.timeout()
                t = self.running and t2
                self.doIteration(t)
            except BaseException:
                _loopLog.failure("Unexpected error in main loop", level=LogLevel.critical)
        _loopLog.info("Main loop terminated.")

    def runUntilCurrent(self) -> None:
        """
        Run the delayed calls that are due, as Twisted's reactor does; when
        there are none, no new ones, no calls from threads and no stop to
        announce, return at once.  (Twisted's reactor also sweeps its
        cancelled calls out of its heap here: that waits for the next new
        or due call.)
        """
        pending = self._pendingTimedCalls
        if (
            self.threadCallQueue
            or self._justStopped
            or self._newTimedCalls
            or (pending and pending[0].time <= self.seconds())
        ):
            EPollReactor.runUntilCurrent(self)

    def timeout(self) -> "float | None":
        """
        How long the reactor may sleep before a delayed call is due, as
        Twisted's reactor answers.
        """
        if self._newTimedCalls:
            self._insertNewDelayedCalls()
        pending = self._pendingTimedCalls
        if not pending:
            return None
        delay = pending[0].time - self.seconds()
        if delay <= 0:
            return 0
        # What epoll_wait takes: 2 ** 31 milliseconds.
        return delay if delay < 2147483 else 2147483


def install() -> None:
    """
    Install L{RouterReactor} as the global reactor.
    """
    from twisted.internet.main import installReactor

    installReactor(RouterReactor())
