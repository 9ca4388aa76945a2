"""
The bounds an HTTP/2 client's frames are held to before the C{h2} library
reads them, sans-IO.

C{h2} parses and answers whatever frames it is given: it acknowledges
every PING and SETTINGS frame, buffers CONTINUATION frames up to a fixed
backlog, and lets a client open and reset streams as fast as it sends
them.  The attacks of 2023 and 2024 on HTTP/2 servers are floods of
exactly those frames: rapid reset (CVE-2023-44487), CONTINUATION floods
(CVE-2024-27316 and kin), PING and SETTINGS floods (CVE-2019-9512,
CVE-2019-9515).  A L{FrameGuard} reads the frame headers of the client's
byte stream as it arrives (nine bytes per frame; payloads are skipped,
never copied) and raises L{BoundExceeded} at the first frame past a
bound, before C{h2} has buffered it:

  - a frame longer than C{maxFrameSize}, the C{SETTINGS_MAX_FRAME_SIZE}
    the server announced (C{h2} checks it only once the whole frame has
    come: up to 16 MiB held per connection);
  - a header block (HEADERS or PUSH_PROMISE and its CONTINUATION frames)
    over C{maxHeaderBlock} bytes, or with more than C{maxContinuations}
    CONTINUATION frames;
  - more than C{maxResets} RST_STREAM, C{maxPings} PING or C{maxSettings}
    SETTINGS frames (acknowledgements not counted) from the client within
    one second.

Time is given to L{FrameGuard.feed} by the caller; nothing here does I/O.
"""

from struct import Struct

__all__ = ["PREFACE", "BoundExceeded", "FrameGuard"]

#: What an HTTP/2 client sends first (RFC 9113, section 3.4).
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

_HEADER = Struct(">HBBBL")
_HEADER_SIZE = 9

_HEADERS = 0x1
_RST_STREAM = 0x3
_SETTINGS = 0x4
_PUSH_PROMISE = 0x5
_PING = 0x6
_CONTINUATION = 0x9

_ACK = 0x1
_END_HEADERS = 0x4


class BoundExceeded(Exception):
    """
    The client went past one of the bounds of a L{FrameGuard}.

    @ivar bound: the bound's stable name (C{frame_too_large},
        C{header_block_too_large},
        C{continuation_flood}, C{rapid_reset}, C{ping_flood},
        C{settings_flood}).
    @ivar detail: what the client did, for the log.
    """

    def __init__(self, bound: str, detail: str) -> None:
        super().__init__(f"{bound}: {detail}")
        self.bound = bound
        self.detail = detail


class _PerSecond:
    """
    A count of events within the current one-second window.
    """

    __slots__ = ("limit", "start", "count")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.start = None
        self.count = 0

    def exceeded(self, now: float) -> bool:
        """
        Count one event at C{now}: whether it is one more than the limit
        allows in its second (a limit of 0 allows any number).
        """
        if not self.limit:
            return False
        start = self.start
        if start is None or now - start >= 1.0:
            self.start = now
            self.count = 1
        else:
            self.count += 1
        return self.count > self.limit


class FrameGuard:
    """
    Reads the frame headers of a server's inbound HTTP/2 stream (from its
    client preface on) and holds them to the bounds of the module.
    """

    def __init__(
        self,
        maxHeaderBlock: int = 65536,
        maxContinuations: int = 32,
        maxResets: int = 100,
        maxPings: int = 10,
        maxSettings: int = 10,
        maxFrameSize: int = 16384,
    ) -> None:
        """
        Each C{max*} of 0 means no bound.
        """
        self.maxHeaderBlock = maxHeaderBlock
        self.maxContinuations = maxContinuations
        self.maxFrameSize = maxFrameSize
        self._resets = _PerSecond(maxResets)
        self._pings = _PerSecond(maxPings)
        self._settings = _PerSecond(maxSettings)
        self._skip = len(PREFACE)
        self._partial = b""
        self._blockSize = 0
        self._continuations = 0

    def feed(self, data: bytes, now: float) -> None:
        """
        Read the frame headers in C{data}, the next bytes from the client.

        @param now: the time now, in seconds.
        @raise BoundExceeded: a frame goes past a bound; the connection
            should be closed (the guard is of no further use).
        """
        if self._partial:
            data = self._partial + data
            self._partial = b""
        position = self._skip
        size = len(data)
        while position < size:
            if size - position < _HEADER_SIZE:
                self._partial = data[position:]
                position = size
                break
            high, low, kind, flags, _ = _HEADER.unpack_from(data, position)
            length = (high << 8) | low
            if self.maxFrameSize and length > self.maxFrameSize:
                raise BoundExceeded(
                    "frame_too_large",
                    f"a frame of {length} bytes, over the {self.maxFrameSize} allowed",
                )
            position += _HEADER_SIZE + length
            self._frame(kind, flags, length, now)
        self._skip = position - size

    def _frame(self, kind: int, flags: int, length: int, now: float) -> None:
        if kind == _CONTINUATION:
            self._continuations += 1
            self._blockSize += length
            if self.maxContinuations and self._continuations > self.maxContinuations:
                raise BoundExceeded(
                    "continuation_flood",
                    f"more than {self.maxContinuations} CONTINUATION frames in a header block",
                )
            self._checkBlock()
        elif kind == _HEADERS or kind == _PUSH_PROMISE:
            self._continuations = 0
            self._blockSize = length
            self._checkBlock()
        elif kind == _RST_STREAM:
            if self._resets.exceeded(now):
                raise BoundExceeded(
                    "rapid_reset", f"more than {self._resets.limit} streams reset in a second",
                )
        elif kind == _PING:
            if not flags & _ACK and self._pings.exceeded(now):
                raise BoundExceeded(
                    "ping_flood", f"more than {self._pings.limit} PING frames in a second",
                )
        elif kind == _SETTINGS:
            if not flags & _ACK and self._settings.exceeded(now):
                raise BoundExceeded(
                    "settings_flood",
                    f"more than {self._settings.limit} SETTINGS frames in a second",
                )

    def _checkBlock(self) -> None:
        if self.maxHeaderBlock and self._blockSize > self.maxHeaderBlock:
            raise BoundExceeded(
                "header_block_too_large",
                f"a header block over {self.maxHeaderBlock} bytes",
            )
