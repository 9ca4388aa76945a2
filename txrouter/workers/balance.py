"""
Sharing a pool's clients evenly among its workers.

The workers accept on the same listening sockets, and the kernel gives a
new connection to whichever worker accepts first: a burst of keep-alive
clients (a load balancer's connection pool, wrk's fifty) can all go to the
worker that ran first, and stay there.  So each worker publishes how many
client sessions it holds on a board the pool shares with all of them (a
small file, mapped in memory), and accepts only while it holds no more
than the least loaded running sibling, plus a slack; a worker over that
stops reading its listeners for a few milliseconds, while the others
accept.  A worker publishes again every few tens of milliseconds while it
has clients (they leave), and not at all once it has none, until it
accepts again: an idle pool does not wake up.
"""

import mmap
import os
import struct

from twisted.internet.task import LoopingCall

__all__ = ["SessionBoard", "SessionBalance"]

_SLOT = struct.Struct("=q")

#: On the board, a worker that is not running.
ABSENT = -1


class SessionBoard:
    """
    Each worker's client sessions, in a file mapped by the pool and every
    worker: one 64-bit integer per worker, L{ABSENT} for one not running.
    """

    def __init__(self, path: str, count: int) -> None:
        """
        Map the board at C{path} (made by L{create}) of C{count} workers.
        """
        self.count = count
        self._all = struct.Struct(f"={count}q")
        fd = os.open(path, os.O_RDWR)
        try:
            self._map = mmap.mmap(fd, count * _SLOT.size)
        finally:
            os.close(fd)

    @classmethod
    def create(cls, path: str, count: int) -> "SessionBoard":
        """
        Make the board of C{count} workers, none running, at C{path}.
        """
        with open(path, "wb") as f:
            f.write(_SLOT.pack(ABSENT) * count)
        return cls(path, count)

    def set(self, index: int, sessions: int) -> None:
        _SLOT.pack_into(self._map, index * _SLOT.size, sessions)

    def values(self) -> "list[int]":
        return list(self._all.unpack_from(self._map))

    def close(self) -> None:
        self._map.close()


class SessionBalance:
    """
    A worker's admission of new clients (what its inherited ports ask,
    L{txrouter.transports}): how many more it may accept now.

    @ivar sessions: a callable giving the worker's client sessions now
        (set once the router is built).
    """

    #: Seconds a worker over its share stops reading its listeners.
    pauseSeconds = 0.005
    #: Seconds between two publications of the worker's sessions besides
    #: those made when it accepts (its clients also leave), while it has
    #: any.
    publishSeconds = 0.05

    def __init__(self, clock, board: SessionBoard, index: int, sessions=lambda: 0) -> None:
        self.clock = clock
        self.board = board
        self.index = index
        self.sessions = sessions
        self._publishing = None
        #: Whether the publications stopped for want of clients.
        self._resting = False

    def allowance(self) -> int:
        """
        How many clients this worker may accept now: up to the sessions of
        its least loaded running sibling, plus 2 and a tenth of its own.
        """
        mine = self.sessions()
        values = self.board.values()
        self.board.set(self.index, mine)
        if self._resting:
            self._resting = False
            self._publishing.start(self.publishSeconds, now=False)
        values[self.index] = ABSENT
        others = [value for value in values if value != ABSENT]
        if not others:
            return 1 << 30
        return min(others) + 2 + mine // 10 - mine

    def pause(self, port) -> None:
        """
        Stop reading C{port} for L{pauseSeconds}: the other workers accept.
        """
        port.stopReading()
        self.clock.callLater(self.pauseSeconds, self._resume, port)

    def _resume(self, port) -> None:
        if port.connected and not getattr(port, "cheapPaused", False):
            port.startReading()

    def start(self) -> None:
        self._publishing = LoopingCall(self.publish)
        self._publishing.clock = self.clock
        self._publishing.start(self.publishSeconds)

    def publish(self) -> None:
        """
        Publish the worker's sessions; with none, rest until it accepts
        again (L{allowance}).
        """
        sessions = self.sessions()
        self.board.set(self.index, sessions)
        if not sessions and self._publishing is not None and self._publishing.running:
            self._resting = True
            self._publishing.stop()

    def stop(self) -> None:
        self._resting = False
        if self._publishing is not None and self._publishing.running:
            self._publishing.stop()
        self.board.set(self.index, ABSENT)
