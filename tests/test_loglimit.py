"""
LogLimiter: a budget of log lines per window, the dropped ones counted in
one line, and nothing left pending in the reactor once it is closed.
"""

from twisted.internet.task import Clock
from twisted.logger import Logger

from txrouter.routing.loglimit import LogLimiter


def limiter(burst=2, interval=10.0):
    events = []
    clock = Clock()
    return LogLimiter(Logger(observer=events.append), clock, burst, interval), clock, events


def named(events):
    return [event["event"] for event in events]


def flood(limit, lines):
    return [limit.warn("refused {n}", event="refused", n=n) for n in range(lines)]


def test_lines_past_the_burst_are_counted_in_one_line_when_the_window_ends():
    limit, clock, events = limiter()
    assert flood(limit, 5) == [True, True, False, False, False]
    assert named(events) == ["refused", "refused"]
    clock.advance(10)
    assert named(events) == ["refused", "refused", "log_lines_suppressed"]
    assert events[-1]["count"] == 3
    assert clock.getDelayedCalls() == []


def test_close_cancels_the_pending_report_and_logs_the_count_once():
    limit, clock, events = limiter()
    flood(limit, 5)
    assert len(clock.getDelayedCalls()) == 1
    limit.close()
    assert clock.getDelayedCalls() == []
    assert named(events)[-1] == "log_lines_suppressed" and events[-1]["count"] == 3
    limit.close()
    clock.advance(60)
    assert named(events).count("log_lines_suppressed") == 1


def test_close_with_nothing_dropped_logs_nothing():
    limit, clock, events = limiter()
    flood(limit, 2)
    limit.close()
    limit.close()
    assert named(events) == ["refused", "refused"]
    assert clock.getDelayedCalls() == []


def test_after_close_the_budget_holds_and_arms_no_call():
    limit, clock, events = limiter()
    limit.close()
    assert flood(limit, 4) == [True, True, False, False]
    assert clock.getDelayedCalls() == []
    clock.advance(10)
    # The first line of the next window reports the previous one's drops.
    assert limit.warn("refused again", event="refused")
    assert named(events)[-2:] == ["log_lines_suppressed", "refused"]
    assert events[-2]["count"] == 2
    flood(limit, 3)
    limit.close()
    assert events[-1]["event"] == "log_lines_suppressed" and events[-1]["count"] == 2
    assert clock.getDelayedCalls() == []
