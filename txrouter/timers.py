"""
Timers that cost nothing per chunk of data, and almost nothing per request.

A router runs an idle timer for every connection to a node and for every
request body, and nearly all of them are cancelled long before they are
due.  Each one as a delayed call of its own would cost a heap insertion
per request; instead the timers of a clock share one delayed call, aimed
at the earliest time one of them could be due, and starting or cancelling
a timer is a set operation.  When that call fires it looks at every live
timer, calls those that are due and aims itself at the next.
"""

from itertools import count
from weakref import WeakKeyDictionary

_INFINITY = float("inf")

#: The timer group of each clock.
_groups = WeakKeyDictionary()

#: The group asked for last: a process has one reactor, so this spares the
#: weak dictionary's lookup.
_lastGroup = None

#: Timers due at the same time fire in the order they were started.
_sequence = count()


class _TimerGroup:
    """
    The live L{IdleTimer}s of one clock behind one delayed call.
    """

    def __init__(self, clock) -> None:
        self._clock = clock
        self._timers = set()
        self._call = None
        self._callTime = _INFINITY

    def add(self, timer: "IdleTimer") -> None:
        self._timers.add(timer)
        self._aim(timer._due)

    def discard(self, timer: "IdleTimer") -> None:
        timers = self._timers
        timers.discard(timer)
        if not timers and self._call is not None:
            self._call.cancel()
            self._call = None
            self._callTime = _INFINITY

    def _aim(self, due: float) -> None:
        """
        Make sure the delayed call fires no later than C{due}.
        """
        if due >= self._callTime:
            return
        delay = max(due - self._clock.seconds(), 0)
        if self._call is None:
            self._call = self._clock.callLater(delay, self._fire)
        else:
            self._call.reset(delay)
        self._callTime = due

    def _fire(self) -> None:
        self._call = None
        self._callTime = _INFINITY
        now = self._clock.seconds()
        due = [timer for timer in self._timers if timer._update() <= now]
        due.sort(key=_firingOrder)
        for timer in due:
            self._timers.discard(timer)
        for timer in due:
            # An earlier one's callback may have cancelled it.
            if timer._group is self:
                timer._expire()
        if self._timers:
            self._aim(min(timer._due for timer in self._timers))


def _groupOf(clock) -> _TimerGroup:
    global _lastGroup
    group = _lastGroup
    if group is None or group._clock is not clock:
        group = _groups.get(clock)
        if group is None:
            group = _groups[clock] = _TimerGroup(clock)
        _lastGroup = group
    return group


def _firingOrder(timer: "IdleTimer"):
    return timer._due, timer._number


class IdleTimer:
    """
    Calls C{onIdle} once nothing has happened for C{timeout} seconds.

    Activity is recorded with L{touch}, which only stores a timestamp.

    @ivar expired: C{onIdle} was called.
    """

    def __init__(self, clock, timeout: float, onIdle, deadline: float = 0) -> None:
        """
        @param clock: an C{IReactorTime}.
        @param deadline: if not 0, also call C{onIdle} this many seconds from
            now whatever the activity.
        """
        self._seconds = clock.seconds
        self._timeout = timeout
        self._onIdle = onIdle
        self.expired = False
        self._last = now = clock.seconds()
        self._deadline = now + deadline if deadline else _INFINITY
        due = now + timeout
        self._due = due if due < self._deadline else self._deadline
        self._number = next(_sequence)
        self._group = group = _groupOf(clock)
        group.add(self)

    @property
    def timeout(self) -> float:
        """
        The idle time allowed, in seconds; it may be changed while the
        timer runs (counted from the last activity).
        """
        return self._timeout

    @timeout.setter
    def timeout(self, timeout: float) -> None:
        self._timeout = timeout
        if self._group is not None:
            self._group._aim(self._update())

    def touch(self) -> None:
        """
        Record activity now.
        """
        self._last = self._seconds()

    def _update(self) -> float:
        """
        Work out when this timer is due, given its last activity.
        """
        due = self._last + self._timeout
        if due > self._deadline:
            due = self._deadline
        self._due = due
        return due

    def _expire(self) -> None:
        self._group = None
        self.expired = True
        onIdle, self._onIdle = self._onIdle, None
        onIdle()

    def cancel(self) -> None:
        """
        Stop the timer; safe to call more than once.

        The callback is forgotten: it is usually a method of the timer's
        owner, which holds the timer, and the two would otherwise be left
        for the garbage collector's cycle search.
        """
        self._onIdle = None
        group, self._group = self._group, None
        if group is not None:
            group.discard(self)
