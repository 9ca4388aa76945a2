"""
The input frames of uWSGI's forkpty router in uwsgi mode (C{--forkptyurouter},
reference section 8), which C{uwsgi --pty-uconnect} sends.

Each frame is a uwsgi header, all integers little-endian::

    u8 modifier1 (ignored) | u16 size | u8 modifier2 | payload

========== ============= =====================================
modifier2  payload       meaning
========== ============= =====================================
0          C{size} bytes bytes for the terminal (the child's stdin)
100        none          the window has C{size} rows
101        none          the window has C{size} columns
1..99      none          send signal C{modifier2} to the child
========== ============= =====================================

uWSGI sends any other C{modifier2} to the child as a signal number too; here
it is refused (L{PtyFrameError}), as uWSGI's docs only name 1 to 99.

L{PtyFrameParser} streams a data frame's payload as it arrives instead of
holding a whole frame: what it keeps between two calls is at most a partial
header (three bytes), whatever the client sends.
"""

from struct import Struct
from typing import NamedTuple, Union

__all__ = [
    "COLS",
    "DATA",
    "ROWS",
    "Input",
    "PtyFrameError",
    "PtyFrameParser",
    "Signal",
    "WindowCols",
    "WindowRows",
    "encodeFrame",
]

#: modifier2 of a data frame.
DATA = 0
#: modifier2 of a frame setting the window's rows.
ROWS = 100
#: modifier2 of a frame setting the window's columns.
COLS = 101
#: The largest signal number a frame may carry.
MAX_SIGNAL = 99

_HEADER = Struct("<BHB")


class Input(NamedTuple):
    """
    Bytes for the terminal: the whole payload of a data frame, or part of it.
    """

    data: bytes


class WindowRows(NamedTuple):
    """
    The client's window has C{rows} rows.
    """

    rows: int


class WindowCols(NamedTuple):
    """
    The client's window has C{cols} columns.
    """

    cols: int


class Signal(NamedTuple):
    """
    Send the child the signal C{number}.
    """

    number: int


Event = Union[Input, WindowRows, WindowCols, Signal]


class PtyFrameError(ValueError):
    """
    A frame this router does not accept.

    @ivar event: a short, stable name for logs.
    @ivar detail: human-readable explanation.
    """

    def __init__(self, event: str, detail: str) -> None:
        super().__init__(f"{event}: {detail}")
        self.event = event
        self.detail = detail


def encodeFrame(modifier2: int, size: int = 0, payload: bytes = b"") -> bytes:
    """
    One frame, as C{uwsgi --pty-uconnect} writes it: a data frame is
    C{encodeFrame(DATA, len(data), data)}, a resize
    C{encodeFrame(ROWS, 50) + encodeFrame(COLS, 132)}.
    """
    return _HEADER.pack(0, size, modifier2) + payload


class PtyFrameParser:
    """
    Turns the bytes of a uwsgi-mode client into L{Input}, L{WindowRows},
    L{WindowCols} and L{Signal} events.

    After a L{PtyFrameError} the stream cannot be resynchronised: the parser
    refuses everything after it.
    """

    _failed = None

    def __init__(self) -> None:
        self._header = b""
        # Bytes of the current data frame's payload still to come.
        self._payloadLeft = 0

    def feed(self, data: bytes) -> "list[Event]":
        """
        The events C{data} completes, in order; consecutive payload bytes of
        one feed are given as one L{Input}.

        @raise PtyFrameError: a frame with an unknown C{modifier2}; the
            events before it are lost with the stream.
        """
        if self._failed is not None:
            raise self._failed
        events = []
        view = memoryview(data)
        offset, end = 0, len(data)
        while offset < end:
            if self._payloadLeft:
                taken = min(self._payloadLeft, end - offset)
                self._payloadLeft -= taken
                chunk = bytes(view[offset:offset + taken])
                offset += taken
                if events and type(events[-1]) is Input:
                    events[-1] = Input(events[-1].data + chunk)
                else:
                    events.append(Input(chunk))
                continue
            needed = _HEADER.size - len(self._header)
            self._header += bytes(view[offset:offset + needed])
            offset += needed
            if len(self._header) < _HEADER.size:
                break
            _, size, modifier2 = _HEADER.unpack(self._header)
            self._header = b""
            event = self._control(modifier2, size)
            if event is not None:
                events.append(event)
        return events

    def _control(self, modifier2: int, size: int) -> "Event | None":
        if modifier2 == DATA:
            self._payloadLeft = size
            return None
        if modifier2 == ROWS:
            return WindowRows(size)
        if modifier2 == COLS:
            return WindowCols(size)
        if 0 < modifier2 <= MAX_SIGNAL:
            return Signal(modifier2)
        self._failed = PtyFrameError(
            "bad_pty_frame", f"modifier2 {modifier2} is neither data, a window size nor a signal")
        raise self._failed
