"""
The idle timer: one clock read per activity, one delayed call at a time,
and no operation whose cost grows with the number of idle timers.
"""

import random
import sys
from math import log2

from hypothesis import given, settings, strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from txrouter.timers import IdleTimer, _groupOf


def _heldOnlyByTheCaller(timer) -> bool:
    """
    Nothing but the caller's variable refers to C{timer}: its group has
    let it go.  (Counted rather than weakly referenced: a timer compiled by
    mypyc takes no weak reference.)
    """
    alone = object()
    # The caller's variable is the one reference C{alone} lacks.
    return sys.getrefcount(timer) == sys.getrefcount(alone) + 1


class IdleTimerTests(SynchronousTestCase):
    """
    What a timer's owner sees.
    """

    def test_fires_after_idle_time_and_touch_postpones_it(self):
        clock, fired = Clock(), []
        timer = IdleTimer(clock, 10, lambda: fired.append("idle"))
        clock.advance(6)
        timer.touch()
        clock.advance(6)
        assert fired == [] and len(clock.getDelayedCalls()) == 1
        clock.advance(4)
        assert fired == ["idle"] and timer.expired

    def test_deadline_fires_whatever_the_activity(self):
        clock, fired = Clock(), []
        timer = IdleTimer(clock, 10, lambda: fired.append("deadline"), deadline=3)
        for _ in range(3):
            clock.advance(1)
            timer.touch()
        assert fired == ["deadline"]

    def test_cancel_drops_the_call(self):
        clock, fired = Clock(), []
        timer = IdleTimer(clock, 5, lambda: fired.append("x"))
        timer.cancel()
        timer.cancel()
        assert clock.getDelayedCalls() == []
        clock.advance(10)
        assert fired == [] and not timer.expired

    def test_timers_of_a_clock_share_one_delayed_call(self):
        clock, fired = Clock(), []
        timers = [IdleTimer(clock, 10 + i, lambda i=i: fired.append(i)) for i in range(50)]
        assert len(clock.getDelayedCalls()) == 1
        for timer in timers[10:]:
            timer.cancel()
        clock.advance(10)
        assert fired == [0]
        clock.pump([1] * 9)
        assert fired == list(range(10))
        assert clock.getDelayedCalls() == []

    def test_cancelling_the_last_timer_drops_the_call(self):
        clock = Clock()
        first, second = IdleTimer(clock, 5, lambda: None), IdleTimer(clock, 7, lambda: None)
        first.cancel()
        assert len(clock.getDelayedCalls()) == 1
        second.cancel()
        assert clock.getDelayedCalls() == []

    def test_a_shorter_timeout_is_kept_to(self):
        """
        A timer whose timeout shrinks, or a new one due before the others,
        fires on time: the shared call is brought forward.
        """
        clock, fired = Clock(), []
        IdleTimer(clock, 60, lambda: fired.append("long"))
        connect = IdleTimer(clock, 60, lambda: fired.append("idle"))
        connect.timeout = 5
        IdleTimer(clock, 2, lambda: fired.append("short"))
        clock.advance(2)
        assert fired == ["short"]
        clock.advance(3)
        assert fired == ["short", "idle"]
        clock.advance(55)
        assert fired == ["short", "idle", "long"]

    def test_a_shorter_timeout_is_kept_to_after_the_call_fired(self):
        """
        The same, for timers that have waited through a firing of the
        shared call.
        """
        clock, fired = Clock(), []
        IdleTimer(clock, 1, lambda: fired.append("first"))
        long = IdleTimer(clock, 60, lambda: fired.append("long"))
        connect = IdleTimer(clock, 60, lambda: fired.append("idle"))
        clock.advance(1)
        connect.timeout = 5
        clock.advance(3)
        assert fired == ["first"]
        clock.advance(1)
        assert fired == ["first", "idle"]
        long.timeout = 30
        clock.advance(24)
        assert fired == ["first", "idle"]
        clock.advance(1)
        assert fired == ["first", "idle", "long"]
        assert clock.getDelayedCalls() == []

    def test_restart_touches_and_changes_the_timeout(self):
        """
        A connect deadline restarted as an idle timeout counts from the
        restart, whether the timeout grows or shrinks.
        """
        clock, fired = Clock(), []
        shrinks = IdleTimer(clock, 60, lambda: fired.append("shrinks"))
        clock.advance(4)
        shrinks.restart(3)
        clock.advance(3)
        assert fired == ["shrinks"]
        grows = IdleTimer(clock, 5, lambda: fired.append("grows"))
        clock.advance(4)
        grows.restart(10)
        clock.advance(9)
        assert fired == ["shrinks"]
        clock.advance(1)
        assert fired == ["shrinks", "grows"]
        assert clock.getDelayedCalls() == []

    def test_touched_timers_take_their_place_by_due_time_then_start(self):
        """
        A timer touched after it waited through a firing of the shared call
        expires by its new due time, after those due earlier and before
        those started after it and due at the same time.
        """
        clock, fired = Clock(), []
        first = IdleTimer(clock, 10, lambda: fired.append("first"))
        IdleTimer(clock, 12, lambda: fired.append("second"))
        IdleTimer(clock, 1, lambda: fired.append("short"))
        clock.advance(5)
        first.touch()
        IdleTimer(clock, 10, lambda: fired.append("third"))
        clock.advance(15)
        assert fired == ["short", "second", "first", "third"]

    def test_the_call_waits_for_the_next_running_timer(self):
        """
        After a firing the shared call is aimed at the next timer still
        running, not at one cancelled since.
        """
        clock = Clock()
        IdleTimer(clock, 0.5, lambda: None)
        IdleTimer(clock, 1, lambda: None)
        cancelled = IdleTimer(clock, 5, lambda: None)
        IdleTimer(clock, 10, lambda: None)
        clock.advance(0.5)
        cancelled.cancel()
        clock.advance(0.5)
        assert [call.getTime() for call in clock.getDelayedCalls()] == [10]

    def test_cancelled_timers_are_freed_once_the_others_expire(self):
        clock = Clock()
        IdleTimer(clock, 0.5, lambda: None)
        IdleTimer(clock, 1, lambda: None)
        cancelled = IdleTimer(clock, 5, lambda: None)
        clock.advance(0.5)
        cancelled.cancel()
        clock.advance(0.5)
        assert _heldOnlyByTheCaller(cancelled)

    def test_touched_timers_wait_and_callbacks_may_start_and_stop_timers(self):
        clock, fired = Clock(), []
        busy = IdleTimer(clock, 10, lambda: fired.append("busy"))

        def first():
            fired.append("first")
            second.cancel()
            IdleTimer(clock, 1, lambda: fired.append("started by first"))

        IdleTimer(clock, 10, first)
        second = IdleTimer(clock, 10, lambda: fired.append("second"))
        clock.advance(9)
        busy.touch()
        clock.advance(1)
        assert fired == ["first"]
        clock.advance(1)
        assert fired == ["first", "started by first"]
        clock.advance(8)
        assert fired == ["first", "started by first", "busy"]
        assert clock.getDelayedCalls() == []


class _CountedTime(float):
    """
    A clock reading that counts the comparisons made with it, and whose
    sums and differences are counted clock readings too.

    A timer structure's work is comparing due times: counting comparisons
    measures it whatever the structure.
    """

    comparisons = 0

    def _counted(compare):
        def counting(self, other):
            _CountedTime.comparisons += 1
            return compare(self, other)

        return counting

    __lt__ = _counted(float.__lt__)
    __le__ = _counted(float.__le__)
    __gt__ = _counted(float.__gt__)
    __ge__ = _counted(float.__ge__)
    __eq__ = _counted(float.__eq__)
    __ne__ = _counted(float.__ne__)
    __hash__ = float.__hash__
    del _counted

    def __add__(self, other):
        return _CountedTime(float(self) + other)

    __radd__ = __add__

    def __sub__(self, other):
        return _CountedTime(float(self) - other)

    def __rsub__(self, other):
        return _CountedTime(other - float(self))


class _CountingClock(Clock):
    """
    A L{Clock} whose readings count the comparisons made with them.
    """

    def seconds(self):
        return _CountedTime(self.rightNow)

    def work(self, operation):
        """
        Run C{operation}; return how many time comparisons it took.
        """
        before = _CountedTime.comparisons
        operation()
        return _CountedTime.comparisons - before


class CostTests(SynchronousTestCase):
    """
    Under a flood of idle connections no timer operation costs more than
    a few comparisons per level of a heap: none looks at every timer.
    """

    def test_work_with_100000_idle_timers(self):
        """
        Among 100 000 idle timers, starting and cancelling a timer costs a
        few comparisons, and a firing (a timer expiring, or a touched timer
        waiting longer) costs O(log n) of them.  Only the first firing
        after the timers start looks at each of them: it pushes each into
        the heap, once (here in due order, a few comparisons each).
        """
        n = 100_000
        clock, fired = _CountingClock(), []
        idle = [IdleTimer(clock, 100 + i, lambda i=i: fired.append(i)) for i in range(n)]
        IdleTimer(clock, 1, lambda: fired.append("first"))

        settling = clock.work(lambda: clock.advance(1))
        assert fired == ["first"]
        assert settling < 20 * n

        starting = clock.work(lambda: IdleTimer(clock, 1, lambda: fired.append("short")))
        firing = clock.work(lambda: clock.advance(1))
        assert fired == ["first", "short"]
        cancelling = clock.work(idle[50].cancel)
        clock.advance(97)
        firingIdle = clock.work(lambda: clock.advance(1))
        assert fired == ["first", "short", 0]
        idle[1].touch()
        waiting = clock.work(lambda: clock.advance(1))
        firingNext = clock.work(lambda: clock.advance(1))
        assert fired == ["first", "short", 0, 2]

        bound = 10 * log2(n)
        assert starting < 10 and cancelling < 10, (starting, cancelling)
        assert max(firing, firingIdle, waiting, firingNext) < bound, (
            firing, firingIdle, waiting, firingNext)

    def test_start_and_cancel_churn_keeps_memory_bounded(self):
        """
        A million timers started and cancelled, a thousand running at any
        time beside a hundred idle ones, each cancelled at random, and the
        shared call firing every hundred starts (so most are cancelled
        after waiting in the heap), leave no more than a couple of entries
        per running timer: cancelled timers are freed.
        """
        clock, running, choose = Clock(), [], random.Random(6).randrange
        group = _groupOf(clock)
        idle = [IdleTimer(clock, 3600, lambda: None) for _ in range(100)]
        firstCancelled = None
        largest = 0
        for i in range(1_000_000):
            running.append(IdleTimer(clock, 60, lambda: None))
            if len(running) > 1000:
                cancelled = running.pop(choose(len(running)))
                cancelled.cancel()
                if firstCancelled is None:
                    firstCancelled = cancelled
                del cancelled
            if i % 100 == 0:
                IdleTimer(clock, 0.001, lambda: None)
                clock.advance(0.001)
                largest = max(largest, len(group._heap) + len(group._recent))
        assert largest <= 2 * (len(running) + len(idle))
        assert _heldOnlyByTheCaller(firstCancelled)
        for timer in running + idle:
            timer.cancel()
        assert group._heap == [] and not group._recent
        assert clock.getDelayedCalls() == []


class _ModelTimer:
    """
    An idle timer done the obvious way, against which L{IdleTimer} is
    checked: see L{_ModelClock}.
    """

    def __init__(self, clock, timeout, onIdle, deadline=0):
        self._clock = clock
        self.timeout = timeout
        self._onIdle = onIdle
        self.expired = False
        self._last = clock.now
        self._deadline = clock.now + deadline if deadline else float("inf")
        clock.timers.append(self)

    def due(self):
        return min(self._last + self.timeout, self._deadline)

    def touch(self):
        self._last = self._clock.now

    def restart(self, timeout):
        self.timeout = timeout
        self.touch()

    def cancel(self):
        if self in self._clock.timers:
            self._clock.timers.remove(self)
        self._onIdle = None

    def expire(self):
        self.expired = True
        self._onIdle()


class _ModelClock:
    """
    A clock that, whenever it advances, looks at every timer: those due
    expire together, by due time then start, each unless an earlier one's
    callback cancelled it; then those its callbacks made due, and so on.
    """

    def __init__(self):
        self.now = 0.0
        self.timers = []

    def seconds(self):
        return self.now

    def advance(self, amount):
        self.now += amount
        while True:
            due = sorted((t for t in self.timers if t.due() <= self.now), key=_ModelTimer.due)
            if not due:
                return
            for timer in due:
                self.timers.remove(timer)
            for timer in due:
                if timer._onIdle is not None:
                    timer.expire()


# Small numbers, so that timers are often due together and each operation
# often meets a timer that an earlier one touched, retimed or cancelled.
_timeouts = st.sampled_from([0, 0.5, 1, 2, 5, 10])
_steps = st.sampled_from([0, 0.5, 1, 1, 2, 3, 10, 25])
_timers = st.integers(0, 12)
_operations = st.lists(
    st.one_of(
        st.tuples(
            st.just("start"),
            _timeouts,
            st.sampled_from([0, 0, 1, 4.5, 12]),
            st.one_of(
                st.none(),
                st.tuples(st.just("cancel"), _timers),
                st.tuples(st.just("start"), _timeouts),
            ),
        ),
        st.tuples(st.just("touch"), _timers),
        st.tuples(st.just("cancel"), _timers),
        st.tuples(st.just("timeout"), _timers, _timeouts),
        st.tuples(st.just("restart"), _timers, _timeouts),
        st.tuples(st.just("advance"), _steps),
    ),
    min_size=20,
    max_size=80,
)


def _run(operations, clock, makeTimer):
    """
    Apply C{operations} to timers made by C{makeTimer} on C{clock}; return
    which timers expired, and when, in order.
    """
    timers, expired = [], []

    def start(timeout, deadline, reaction):
        index = len(timers)

        def onIdle():
            expired.append((index, clock.seconds()))
            if reaction is not None and reaction[0] == "cancel":
                timers[reaction[1] % len(timers)].cancel()
            elif reaction is not None:
                start(reaction[1], 0, None)

        timers.append(makeTimer(clock, timeout, onIdle, deadline))

    for operation in operations:
        kind = operation[0]
        if kind == "start":
            start(*operation[1:])
        elif kind == "advance":
            clock.advance(operation[1])
        elif timers:
            timer = timers[operation[1] % len(timers)]
            if kind == "touch":
                timer.touch()
            elif kind == "cancel":
                timer.cancel()
            elif kind == "restart":
                timer.restart(operation[2])
            else:
                timer.timeout = operation[2]
    # Long enough for every timer, then for those their callbacks start.
    clock.advance(100)
    clock.advance(100)
    return expired, [timer.expired for timer in timers]


class ModelTests(SynchronousTestCase):
    """
    The shared call and its heap against the obvious model.
    """

    @settings(max_examples=400, deadline=None)
    @given(_operations)
    def test_the_same_timers_expire_at_the_same_times_in_the_same_order(self, operations):
        clock = Clock()
        clock.advance(1000)
        model = _ModelClock()
        model.advance(1000)
        assert _run(operations, clock, IdleTimer) == _run(operations, model, _ModelTimer)
        assert clock.getDelayedCalls() == []
