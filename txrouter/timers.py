"""
Timers that cost nothing per chunk of data, and almost nothing per request.

A router runs an idle timer for every connection to a node and for every
request body, and nearly all of them are cancelled long before they are
due.  The timers of a clock share one delayed call, aimed at the earliest
time one of them could be due.  Starting a timer, and cancelling it before
that call fires, are set operations; the timers still running when it
fires wait in a binary heap, from which it pops the due ones.  Nothing
looks at every timer, however many connections are idle.
"""

from heapq import heapify, heappop, heappush, heapreplace
from itertools import count
from typing import Any
from weakref import WeakKeyDictionary

_INFINITY = float("inf")

#: A heap entry, C{(due, number, timer)}.  An entry is live while its timer
#: holds that very tuple, so it is not typed as a tuple: compiled by mypyc,
#: a typed tuple would be unpacked and a new one made at every use.
_Entry = Any

#: The timer group of each clock.
_groups: "WeakKeyDictionary[object, _TimerGroup]" = WeakKeyDictionary()

#: The group asked for last: a process has one reactor, so this spares the
#: weak dictionary's lookup.
_lastGroup: "_TimerGroup | None" = None

#: Timers due at the same time fire in the order they were started.
_sequence = count()


class _TimerGroup:
    """
    The live L{IdleTimer}s of one clock behind one delayed call.

    Nearly every timer is cancelled soon after it starts, so a new timer
    only joins a set, C{_recent}: starting and cancelling it are set
    operations, as cheap as the timer can be.  When the delayed call fires,
    the timers still in that set move into a binary heap of
    C{(due, number, timer)} entries, ordered by due time then by start, and
    the due ones are popped from its top.  A timer moves once, at a heap
    push's cost, and a firing costs a heap pop per timer it expires.

    The heap is lazy, so that activity stays a timestamp store and
    cancelling a timer in the heap stays constant time:

      - an entry's due time is only a lower bound: a timer touched since
        its entry was pushed is pushed again at its real due time when the
        entry reaches the top;
      - an entry is live while its timer points at it (C{timer._entry});
        the entries of cancelled timers, and those replaced when a timeout
        shrank, are dropped when they reach the top, or all at once, by
        rebuilding the heap from the live entries, as soon as they outnumber
        the live ones.  A rebuild costs under two steps per dead entry, so
        cancelling costs constant time on average, and the heap never holds
        more than twice as many entries as it has live timers.

    @ivar _recent: the live timers started since the call last fired.
    @ivar _heap: the entries of the other live timers, and dead entries.
    @ivar _inHeap: the number of live timers in the heap.
    @ivar _callTime: when the delayed call fires; infinity if there is none.
    """

    def __init__(self, clock) -> None:
        self._clock = clock
        self._recent: "set[IdleTimer]" = set()
        self._heap: "list[_Entry]" = []
        self._inHeap = 0
        self._call: Any = None
        self._callTime = _INFINITY

    def discard(self, timer: "IdleTimer") -> None:
        """
        Stop C{timer}, which may be due and about to expire.
        """
        if timer._entry is None:
            self._recent.discard(timer)
        else:
            timer._entry = None
            self._inHeap -= 1
            self._sweep()
        if not self._recent and not self._inHeap and self._call is not None:
            self._call.cancel()
            self._call = None
            self._callTime = _INFINITY

    def retime(self, timer: "IdleTimer", due: float) -> None:
        """
        Make sure C{timer}, whose timeout changed, fires at C{due}.
        """
        entry = timer._entry
        if entry is not None and due < entry[0]:
            self._push(timer, due)
            self._sweep()
        if due < self._callTime:
            self._aim(due)

    def _push(self, timer: "IdleTimer", due: float) -> None:
        entry: _Entry = (due, timer._number, timer)
        timer._entry = entry
        heappush(self._heap, entry)

    def _sweep(self) -> None:
        """
        Drop the heap's dead entries if they outnumber the live ones.
        """
        heap = self._heap
        if len(heap) > 2 * self._inHeap:
            if self._inHeap:
                heap[:] = [entry for entry in heap if entry[2]._entry is entry]
                heapify(heap)
            else:
                heap.clear()

    def _aim(self, due: float) -> None:
        """
        Make sure the delayed call fires no later than C{due}.
        """
        if due >= self._callTime:
            return
        delay = due - self._clock.seconds()
        if delay < 0:
            delay = 0
        if self._call is None:
            self._call = self._clock.callLater(delay, self._fire)
        else:
            self._call.reset(delay)
        self._callTime = due

    def _settle(self) -> None:
        """
        Move the recent timers into the heap.
        """
        recent = self._recent
        self._inHeap += len(recent)
        for timer in recent:
            self._push(timer, timer._dueTime())
        recent.clear()

    def _fire(self) -> None:
        """
        Expire the due timers, in due time then start order, and aim the
        call at the next.
        """
        self._call = None
        self._callTime = _INFINITY
        if self._recent:
            self._settle()
        now = self._clock.seconds()
        heap = self._heap
        due = []
        while heap and heap[0][0] <= now:
            entry: _Entry = heap[0]
            timer = entry[2]
            if timer._entry is not entry:
                heappop(heap)
                continue
            dueTime = timer._dueTime()
            if dueTime != entry[0]:
                # Touched since it was pushed: wait for the real due time,
                # or take its place among the due ones.
                entry = (dueTime, entry[1], timer)
                timer._entry = entry
                heapreplace(heap, entry)
                continue
            heappop(heap)
            timer._entry = None
            due.append(timer)
        self._inHeap -= len(due)
        for timer in due:
            # An earlier one's callback may have cancelled it.
            if timer._group is self:
                timer._expire()
        self._sweep()
        if self._inHeap:
            while heap[0][2]._entry is not heap[0]:
                heappop(heap)
            self._aim(heap[0][0])


def _groupOf(clock) -> _TimerGroup:
    global _lastGroup
    group = _lastGroup
    if group is None or group._clock is not clock:
        group = _groups.get(clock)
        if group is None:
            group = _groups[clock] = _TimerGroup(clock)
        _lastGroup = group
    return group


class IdleTimer:
    """
    Calls C{onIdle} once nothing has happened for C{timeout} seconds.

    Activity is recorded with L{touch}, which only stores a timestamp.

    @ivar expired: C{onIdle} was called.
    """

    #: The timer's live entry in its group's heap, if it is there.
    _entry: "_Entry | None" = None

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
        if due > self._deadline:
            due = self._deadline
        self._number = next(_sequence)
        group = _lastGroup
        if group is None or group._clock is not clock:
            group = _groupOf(clock)
        self._group: "_TimerGroup | None" = group
        # Joining the group is joining its recent set, done here rather
        # than in a method of the group: a timer starts per request.
        group._recent.add(self)
        if due < group._callTime:
            group._aim(due)

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
            self._group.retime(self, self._dueTime())

    def restart(self, timeout: float) -> None:
        """
        Record activity now and allow C{timeout} seconds of idleness from
        now on: what setting L{timeout} then calling L{touch} do, in one
        call (an upstream connection does it once connected, its connect
        deadline becoming its idle timeout).
        """
        self._timeout = timeout
        self._last = now = self._seconds()
        group = self._group
        if group is not None:
            due = now + timeout
            if due > self._deadline:
                due = self._deadline
            entry = self._entry
            if due < group._callTime or (entry is not None and due < entry[0]):
                group.retime(self, due)

    def dropDeadline(self) -> None:
        """
        Forget the deadline: from now on only idleness ends the timer.
        """
        self._deadline = _INFINITY
        if self._group is not None:
            self._group.retime(self, self._dueTime())

    def touch(self) -> float:
        """
        Record activity now.

        @return: now, by the timer's clock.
        """
        self._last = now = self._seconds()
        return now

    def _dueTime(self) -> float:
        """
        Work out when this timer is due, given its last activity.
        """
        due = self._last + self._timeout
        return due if due < self._deadline else self._deadline

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
