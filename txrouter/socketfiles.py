"""
Unix socket files as an operator wants them: a stale file from a crashed
run replaced (only if nothing listens on it), the mode set before the
file exists (uWSGI's C{--chmod-socket}), the owner set before the router
switches users (C{--chown-socket}), and no error when the file cannot be
removed after the switch.

L{SocketFiles} wraps the reactor an endpoint listens with: Twisted's
C{unix:} endpoints call its C{listenUNIX}, the subscription servers its
C{listenUNIXDatagram}.  Twisted binds, then chmods, so the file first has
the umask's mode: the umask is set to the wanted mode's complement around
the bind, and the chmod after it changes nothing.  Abstract sockets
(C{@name}, a leading NUL) have no file and are left alone.
"""

import errno
import os
import socket
import stat
import types

from twisted.internet import tcp, unix
from twisted.internet.posixbase import PosixReactorBase
from twisted.internet.error import CannotListenError
from twisted.logger import Logger

__all__ = ["SocketFiles", "clearStaleSocket", "socketFiles"]

log = Logger(namespace="txrouter.socketfiles")


def _isFile(path) -> bool:
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    return bool(path) and not path.startswith("\0") and not path.startswith("@")


def clearStaleSocket(path: str, kind: int = socket.SOCK_STREAM) -> None:
    """
    Make room for binding C{path}: a socket file nothing listens on (a
    connection to it is refused) is removed; nothing there is fine.

    @param kind: C{SOCK_STREAM} or C{SOCK_DGRAM}, the socket's type.
    @raise CannotListenError: something listens there, or the file is not
        a socket (never removed).
    """
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise CannotListenError(None, path, OSError(errno.EEXIST, "a file that is not a socket is there"))
    probe = socket.socket(socket.AF_UNIX, kind)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        log.info("stale_socket_removed: {path}: nothing listened on it", event="stale_socket_removed",
                 path=path)
        os.unlink(path)
        return
    except OSError:
        # Not ours to judge (no permission to connect, say): the bind says why.
        return
    finally:
        probe.close()
    raise CannotListenError(None, path, OSError(errno.EADDRINUSE, "another process listens on it"))


def socketFiles(reactor, mode: "int | None" = None, owner=None):
    """
    C{reactor} wrapped in L{SocketFiles} if it binds real sockets (one of
    Twisted's POSIX reactors, or a wrapper of one); a memory reactor, which
    binds nothing, as it is.
    """
    real = reactor
    while not isinstance(real, PosixReactorBase) and hasattr(real, "_reactor"):
        real = real._reactor
    if not isinstance(real, PosixReactorBase):
        return reactor
    return SocketFiles(reactor, mode, owner)


class SocketFiles:
    """
    A reactor whose unix listeners get their socket files as asked;
    anything else is the wrapped reactor's.

    @ivar mode: the mode of every socket file (uWSGI's C{--chmod-socket}),
        or L{None} for the one the endpoint gives.
    @ivar owner: C{(uid, gid)} for every socket file (C{gid} L{None}: keep
        the group), or L{None}.
    """

    def __init__(self, reactor, mode: "int | None" = None, owner=None, system=os) -> None:
        self._reactor = reactor
        self.mode = mode
        self.owner = owner
        self._system = system

    def __getattr__(self, name):
        return getattr(self._reactor, name)

    def listenUNIX(self, address, factory, backlog=50, mode=0o666, wantPID=0):
        mode = self._modeFor(mode)
        if not _isFile(address):
            return self._reactor.listenUNIX(address, factory, backlog, mode, wantPID)
        clearStaleSocket(address)
        port = self._bound(
            lambda: self._reactor.listenUNIX(address, factory, backlog, mode, wantPID), address, mode)
        if isinstance(port, unix.Port):
            _keepQuietOnRemoval(port, address)
        return port

    def listenUNIXDatagram(self, address, protocol, maxPacketSize=8192, mode=0o666):
        mode = self._modeFor(mode)
        if not _isFile(address):
            return self._reactor.listenUNIXDatagram(address, protocol, maxPacketSize, mode)
        clearStaleSocket(address, socket.SOCK_DGRAM)
        return self._bound(
            lambda: self._reactor.listenUNIXDatagram(address, protocol, maxPacketSize, mode),
            address, mode)

    def _modeFor(self, mode: int) -> int:
        return mode if self.mode is None else self.mode

    def _bound(self, listen, path, mode: int):
        previous = self._system.umask(~mode & 0o777)
        try:
            port = listen()
        finally:
            self._system.umask(previous)
        if self.owner is not None:
            uid, gid = self.owner
            self._system.chown(path, uid, -1 if gid is None else gid)
        return port


def _keepQuietOnRemoval(port, path) -> None:
    """
    Twisted's unix port removes its file when it stops, and raises if it
    cannot: after the router switched users, its directory may no longer
    be writable.  Then the file is left (the next start replaces it, see
    L{clearStaleSocket}) with a log line, and the port closes as usual.
    """
    connectionLost = port.connectionLost

    def closing(self, reason):
        try:
            connectionLost(reason)
        except PermissionError as e:
            log.warn(
                "socket_file_kept: {path}: cannot remove it as uid {uid} ({error});"
                " the next start replaces it",
                event="socket_file_kept", path=path, uid=os.getuid(), error=e.strerror,
            )
            tcp.Port.connectionLost(port, reason)

    port.connectionLost = types.MethodType(closing, port)
