"""
systemd's readiness protocol (C{Type=notify}): C{READY=1} once every
listener listens, C{STOPPING=1} when draining starts.

The protocol is one datagram per state on the unix socket
C{$NOTIFY_SOCKET} names (a path, or an abstract name written C{@name}):
a dozen lines here rather than a dependency (C{sdnotify} is the same
dozen lines, and would be one more package to install and audit).
Socket activation needs nothing here: it is Twisted's C{systemd:}
endpoint (C{--bind systemd:domain=INET:index=0}).
"""

import os
import socket

from twisted.logger import Logger

from txrouter.early import OpenedEarly

__all__ = ["NOTIFY_SOCKET", "SystemdNotifier", "notifyAddress"]

log = Logger(namespace="txrouter.systemd")

#: The environment variable naming the socket.
NOTIFY_SOCKET = "NOTIFY_SOCKET"


def notifyAddress(environ=None) -> "str | None":
    """
    The address C{$NOTIFY_SOCKET} names (in C{environ}, by default the
    process's), abstract names with their leading NUL; L{None} when it is
    not set (not run by systemd, or not C{Type=notify}).
    """
    address = (os.environ if environ is None else environ).get(NOTIFY_SOCKET)
    if not address:
        return None
    return "\0" + address[1:] if address.startswith("@") else address


class SystemdNotifier(OpenedEarly):
    """
    Tells systemd the router is ready, then that it stops.

    The socket is connected while twistd may still run as root (the
    notify socket may be root's alone), and C{NOTIFY_SOCKET} removed from
    the environment so that no command the router runs (the pty router's)
    speaks for it.  It goes after the listeners among the router's
    services: started after them, it says C{READY=1} once the reactor
    runs; stopped before them, it says C{STOPPING=1} before they close.
    """

    _tried = False

    def __init__(self, reactor, address: str) -> None:
        self.reactor = reactor
        self.address = address

    @property
    def opened(self) -> bool:
        return self._tried

    def _open(self) -> None:
        self._tried = True
        self.port = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            self.port.connect(self.address)
        except OSError as e:
            self.port.close()
            self.port = None
            log.warn("systemd_notify_failed: {address}: {error}", event="systemd_notify_failed",
                     address=self.address, error=e.strerror)
        os.environ.pop(NOTIFY_SOCKET, None)

    def startService(self) -> None:
        super().startService()
        self.reactor.callWhenRunning(self.notify, b"READY=1\nSTATUS=listening")

    def stopService(self):
        super().stopService()
        self.notify(b"STOPPING=1\nSTATUS=draining")

    def notify(self, message: bytes) -> None:
        """
        Send C{message}, one or more C{NAME=value} lines; a failure is
        logged, never raised (systemd may have gone away).
        """
        if self.port is None:
            return
        try:
            self.port.send(message)
        except OSError as e:
            log.warn("systemd_notify_failed: {address}: {error}", event="systemd_notify_failed",
                     address=self.address, error=e.strerror)
