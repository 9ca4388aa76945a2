"""
Timers that cost nothing per chunk of data.
"""


class IdleTimer:
    """
    Calls C{onIdle} once nothing has happened for C{timeout} seconds.

    Activity is recorded with L{touch}, which only stores a timestamp; the
    single scheduled call re-arms itself for the remaining time when it finds
    that activity happened since it was set.  This keeps per-chunk work to
    one clock read instead of rescheduling a delayed call every time.
    """

    def __init__(self, clock, timeout: float, onIdle) -> None:
        self._clock = clock
        self._seconds = clock.seconds
        self.timeout = timeout
        self._onIdle = onIdle
        self._last = clock.seconds()
        self._call = clock.callLater(timeout, self._check)

    def touch(self) -> None:
        """
        Record activity now.
        """
        self._last = self._seconds()

    def _check(self) -> None:
        remaining = self._last + self.timeout - self._seconds()
        if remaining > 0:
            self._call = self._clock.callLater(remaining, self._check)
        else:
            self._call = None
            self._onIdle()

    def cancel(self) -> None:
        """
        Stop the timer; safe to call more than once.
        """
        if self._call is not None:
            self._call.cancel()
            self._call = None
