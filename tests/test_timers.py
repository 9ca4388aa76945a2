"""
The idle timer: one clock read per activity, one delayed call at a time.
"""

from twisted.internet.task import Clock

from txrouter.timers import IdleTimer


def test_fires_after_idle_time_and_touch_postpones_it():
    clock, fired = Clock(), []
    timer = IdleTimer(clock, 10, lambda: fired.append("idle"))
    clock.advance(6)
    timer.touch()
    clock.advance(6)
    assert fired == [] and len(clock.getDelayedCalls()) == 1
    clock.advance(4)
    assert fired == ["idle"] and timer.expired


def test_deadline_fires_whatever_the_activity():
    clock, fired = Clock(), []
    timer = IdleTimer(clock, 10, lambda: fired.append("deadline"), deadline=3)
    for _ in range(3):
        clock.advance(1)
        timer.touch()
    assert fired == ["deadline"]


def test_cancel_drops_the_call():
    clock, fired = Clock(), []
    timer = IdleTimer(clock, 5, lambda: fired.append("x"))
    timer.cancel()
    timer.cancel()
    assert clock.getDelayedCalls() == []
    clock.advance(10)
    assert fired == [] and not timer.expired


def test_timers_of_a_clock_share_one_delayed_call():
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


def test_cancelling_the_last_timer_drops_the_call():
    clock = Clock()
    first, second = IdleTimer(clock, 5, lambda: None), IdleTimer(clock, 7, lambda: None)
    first.cancel()
    assert len(clock.getDelayedCalls()) == 1
    second.cancel()
    assert clock.getDelayedCalls() == []


def test_a_shorter_timeout_is_kept_to():
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


def test_touched_timers_wait_and_callbacks_may_start_and_stop_timers():
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
