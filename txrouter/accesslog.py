"""
The access log, in the combined log format of Apache and nginx.
"""

import time


class AccessLog:
    """
    Writes one line per request to a text file object.

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
        referer = user_agent = b"-"
        for name, value in head.headers:
            lower = name.lower()
            if lower == b"referer":
                referer = value
            elif lower == b"user-agent":
                user_agent = value
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


def _quote(value: bytes) -> str:
    return value.decode("latin-1").replace("\\", "\\\\").replace('"', '\\"')
