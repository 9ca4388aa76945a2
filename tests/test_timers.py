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
