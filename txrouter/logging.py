"""
twistd's own log as one JSON object per line, for log shippers:
C{twistd --logger txrouter.logging.jsonLogger txrouter-http ...}.

twistd calls a C{--logger} factory with no argument (and then ignores
C{--logfile}), so the file is named by the environment:
C{TXROUTER_LOG_FILE}, appended to and reopened on SIGUSR1 like the access
log; standard output (journald, a container's log) when it is not set.

Each line has the fields C{time} (ISO 8601, UTC, with milliseconds),
C{level}, C{namespace}, C{event} (the stable event name txrouter gives
every line it logs, such as C{backend_unreachable}, or C{null}) and
C{message} (the formatted text), then the event's own fields (C{node},
C{client}, C{status}, ...) that are JSON values, and C{traceback} for a
failure.
"""

import json
import os
import signal
import sys
import time

from twisted.logger import ILogObserver, formatEvent
from zope.interface import implementer

from txrouter.accesslog import ReopenableFile

__all__ = ["JSONLinesObserver", "jsonLogger"]

#: The fields every line starts with, which an event's own cannot replace.
_FIXED = ("time", "level", "namespace", "event", "message")


@implementer(ILogObserver)
class JSONLinesObserver:
    """
    Writes each log event to a text file as one JSON object and a newline.
    """

    def __init__(self, file) -> None:
        self._file = file

    def __call__(self, event: dict) -> None:
        stamp = event.get("log_time") or time.time()
        level = event.get("log_level")
        record = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(stamp))
            + ".%03dZ" % (int(stamp * 1000) % 1000),
            "level": level.name if level is not None else "info",
            "namespace": event.get("log_namespace"),
            "event": event.get("event") if isinstance(event.get("event"), str) else None,
            "message": formatEvent(event),
        }
        for key, value in event.items():
            if key.startswith("log_") or key in _FIXED or key == "format":
                continue
            if isinstance(value, (str, int, float, bool)) or value is None:
                record[key] = value
        failure = event.get("log_failure")
        if failure is not None:
            record["traceback"] = failure.getTraceback()
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()


def jsonLogger():
    """
    The observer twistd's C{--logger txrouter.logging.jsonLogger} makes:
    JSON lines to C{$TXROUTER_LOG_FILE} (reopened on SIGUSR1) or to
    standard output.
    """
    path = os.environ.get("TXROUTER_LOG_FILE")
    if not path:
        return JSONLinesObserver(sys.stdout)
    file = ReopenableFile(path)
    previous = signal.getsignal(signal.SIGUSR1)

    def reopen(number, frame) -> None:
        # Between two bytecodes of whatever runs: reopen on the reactor's
        # next turn, as twistd does its own log file.
        from twisted.internet import reactor

        reactor.callFromThread(file.reopen)
        if callable(previous):
            previous(number, frame)

    signal.signal(signal.SIGUSR1, reopen)
    return JSONLinesObserver(file)
