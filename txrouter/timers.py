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

    def __init__(self, clock, timeout: float, onIdle, deadline: float = 0) -> None:
        """
        @param deadline: if not 0, also call C{onIdle} this many seconds from
            now whatever the activity.
        """
        self._clock = clock
        self._seconds = clock.seconds
        self.timeout = timeout
        self._onIdle = onIdle
        self.expired = False
        self._last = now = clock.seconds()
        self._deadline = now + deadline if deadline else None
        self._call = clock.callLater(
            min(timeout, deadline) if deadline else timeout, self._check
        )

    def touch(self) -> None:
        """
        Record activity now.
        """
        self._last = self._seconds()

    def _check(self) -> None:
        now = self._seconds()
        remaining = self._last + self.timeout - now
        if self._deadline is not None and self._deadline - now < remaining:
            remaining = self._deadline - now
        if remaining > 0:
            self._call = self._clock.callLater(remaining, self._check)
        else:
            self._call = None
            self.expired = True
            self._onIdle()

    def cancel(self) -> None:
        """
        Stop the timer; safe to call more than once.
        """
        if self._call is not None:
            self._call.cancel()
            self._call = None
