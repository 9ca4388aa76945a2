"""
Log lines with a budget, for events a remote sender can trigger at will.

A subscription server hears anyone who can reach its port: one line per
refused (or accepted) datagram would let a flood fill the disk.  A
L{LogLimiter} passes the first C{burst} lines of each C{interval} seconds
and counts the others; when a window in which lines were dropped ends, it
logs how many (event C{log_lines_suppressed}).

That report is a delayed call; the limiter's owner calls
L{LogLimiter.close} when it stops, so that no call is left pending in the
reactor and no count is lost.
"""

__all__ = ["LogLimiter"]


class LogLimiter:
    """
    A rate limit in front of a C{twisted.logger.Logger}.

    @ivar suppressed: lines dropped in the current window.
    """

    def __init__(self, logger, clock, burst: int = 20, interval: float = 10.0) -> None:
        """
        @param logger: a C{twisted.logger.Logger}.
        @param clock: an C{IReactorTime}.
        @param burst: lines passed per window.
        @param interval: the window, in seconds.
        """
        self.logger = logger
        self.clock = clock
        self.burst = burst
        self.interval = interval
        self.suppressed = 0
        self._windowStart = None
        self._count = 0
        self._report = None
        self._closed = False

    def emit(self, method: str, format: str, **fields) -> bool:
        """
        Log a line with the logger's C{method} (C{"info"}, C{"warn"},
        C{"failure"}, ...) if the budget allows.

        @return: whether the line was logged.
        """
        now = self.clock.seconds()
        if self._windowStart is None or now - self._windowStart >= self.interval:
            if self.suppressed and self._report is None:
                # Closed: no timer reported the window that just ended.
                self._reportSuppressed()
            self._windowStart = now
            self._count = 0
        if self._count >= self.burst:
            self.suppressed += 1
            if self._report is None and not self._closed:
                self._report = self.clock.callLater(
                    self._windowStart + self.interval - now, self._reportSuppressed
                )
            return False
        self._count += 1
        getattr(self.logger, method)(format, **fields)
        return True

    def info(self, format: str, **fields) -> bool:
        return self.emit("info", format, **fields)

    def warn(self, format: str, **fields) -> bool:
        return self.emit("warn", format, **fields)

    def close(self) -> None:
        """
        Cancel the pending report and arm no other: the owner is stopping.
        Lines dropped so far are counted in one C{log_lines_suppressed}
        line now.  Safe to call more than once.

        Lines emitted afterwards still have their budget; what they drop
        is reported by the first line of a later window, or by the next
        C{close}.
        """
        self._closed = True
        report, self._report = self._report, None
        if report is not None and report.active():
            report.cancel()
        if self.suppressed:
            self._reportSuppressed()

    def _reportSuppressed(self) -> None:
        self._report = None
        count, self.suppressed = self.suppressed, 0
        self.logger.warn(
            "log_lines_suppressed: {count} log lines dropped in {interval} s (rate limit)",
            event="log_lines_suppressed", count=count, interval=self.interval,
        )
