"""
The access log, in the combined log format of Apache and nginx or as one
JSON object per line (C{--log-format json}), and the file it writes to,
which SIGUSR1 reopens after logrotate moved it.
"""

import json
import time

from twisted.logger import Logger

log = Logger(namespace="txrouter.accesslog")


class ReopenableFile:
    """
    A text file opened for appending, line by line, that can be opened
    again at the same path.

    logrotate renames the file and then (C{postrotate kill -USR1 PID})
    asks for L{reopen}: lines written in between still go to the renamed
    file, the next ones to a new file at the path.  Appending (C{O_APPEND})
    also suits logrotate's C{copytruncate}.  Characters are written as
    Latin-1, so that the request's bytes (which L{AccessLog} decodes as
    Latin-1) reach the file unchanged and no line can fail to encode.

    @ivar path: the file's path.
    """

    def __init__(self, path: str) -> None:
        """
        @raise OSError: the file cannot be opened for appending.
        """
        self.path = path
        self._file = self._open()

    def _open(self):
        return open(self.path, "a", buffering=1, encoding="latin-1", errors="replace")

    def write(self, text: str) -> None:
        self._file.write(text)

    def flush(self) -> None:
        self._file.flush()

    def reopen(self) -> None:
        """
        Close the file and open the path again (creating it).  If the path
        cannot be opened, the error is logged (C{access_log_reopen_failed})
        and lines keep going to the file already open.
        """
        try:
            opened = self._open()
        except OSError as e:
            log.error(
                "access_log_reopen_failed: {path}: {error}; still writing to the old file",
                event="access_log_reopen_failed", path=self.path, error=e.strerror,
            )
            return
        previous, self._file = self._file, opened
        previous.close()

    def close(self) -> None:
        self._file.close()


class AccessLog:
    """
    Writes one line per request to a text file object (a
    L{ReopenableFile}, or C{sys.stdout}).

    The timestamp is formatted once per second, not once per line.
    """

    def __init__(self, file, clock=time) -> None:
        self._file = file
        self._time = clock.time if hasattr(clock, "time") else clock.seconds
        self._second = None
        self._stamp = ""

    def _now(self) -> str:
        second = int(self._time())
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(second))
        return self._stamp

    def log(self, remoteAddr: bytes, head, status: int, size: int) -> None:
        """
        Log one request.

        @param remoteAddr: the client address (empty for UNIX clients).
        @param head: the L{txrouter.wire.http1.RequestHead}.
        @param status: the status sent (0 when nothing was).
        @param size: the response body bytes sent.
        """
        self.logRequest(remoteAddr, head, status, size)

    def logRequest(self, remoteAddr: bytes, head, status: int, size: int, event=None,
                   node=None, duration=None) -> None:
        """
        L{log}, with what the combined format has no field for.

        @param event: the refusal's event name, if the request was refused.
        @param node: the L{txrouter.routing.nodes.Node} picked, or L{None}.
        @param duration: seconds from the request's start to its end.
        """
        referer, user_agent = _refererAndAgent(head, b"-")
        request = b"%s %s %s" % (head.method, head.target, head.version)
        self._file.write(
            '%s - - [%s] "%s" %d %s "%s" "%s"\n'
            % (
                remoteAddr.decode() or "-",
                self._now(),
                _quote(request),
                status,
                size if size else "-",
                _quote(referer),
                _quote(user_agent),
            )
        )


class JSONAccessLog(AccessLog):
    """
    An access log writing one JSON object per request and line, with the
    fields C{time} (ISO 8601, UTC), C{client}, C{method}, C{target},
    C{version}, C{status}, C{bytes}, C{node}, C{duration} (seconds),
    C{event} (the refusal's event name, or C{null}), C{user_agent} and
    C{referer} (C{null} when absent).  Bytes of the request are decoded as
    Latin-1, so every line is valid JSON whatever the client sent.
    """

    def _now(self) -> str:
        second = int(self._time())
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second))
        return self._stamp

    def logRequest(self, remoteAddr: bytes, head, status: int, size: int, event=None,
                   node=None, duration=None) -> None:
        referer, userAgent = _refererAndAgent(head, None)
        self._file.write(json.dumps({
            "time": self._now(),
            "client": remoteAddr.decode() or None,
            "method": head.method.decode("latin-1"),
            "target": head.target.decode("latin-1"),
            "version": head.version.decode("latin-1"),
            "status": status,
            "bytes": size,
            "node": node.name if node is not None else None,
            "duration": round(duration, 6) if duration is not None else None,
            "event": event,
            "user_agent": userAgent and userAgent.decode("latin-1"),
            "referer": referer and referer.decode("latin-1"),
        }) + "\n")


def _refererAndAgent(head, missing):
    """
    The request's C{Referer} and C{User-Agent} values, C{missing} for
    each it does not have.
    """
    referer = userAgent = missing
    for name, value in head.headers:
        lower = name.lower()
        if lower == b"referer":
            referer = value
        elif lower == b"user-agent":
            userAgent = value
    return referer, userAgent


def _quote(value: bytes) -> str:
    return value.decode("latin-1").replace("\\", "\\\\").replace('"', '\\"')
