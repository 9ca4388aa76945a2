"""
Services that bind or open what they need as early as twistd allows, and
say in one line what they could not open.
"""

import errno
import os

from twisted.application.service import Service
from twisted.internet.error import CannotListenError

__all__ = ["OpenedEarly", "StartupError"]

#: What the errors a listener or device meets mean, by C{errno}, and what
#: to do about them.
_ADVICE = {
    errno.EADDRINUSE: ("address already in use: another process listens there",
                       "stop it, or choose another port or path"),
    errno.ENOENT: ("no such directory", "create it first, or choose a path in one that exists"),
    errno.ENOTDIR: ("a part of the path is not a directory", None),
    errno.EACCES: ("permission denied", "a port below 1024 needs root or CAP_NET_BIND_SERVICE;"
                   " a unix socket needs a writable directory"),
    errno.EPERM: ("operation not permitted", "run as root, or with the capability it needs"),
    errno.EADDRNOTAVAIL: ("this machine has no such address",
                          "choose one of its own, 127.0.0.1, or 0.0.0.0 for all"),
}


class StartupError(Exception):
    """
    What an L{OpenedEarly} service could not open, in one line that names
    the option and its value (the service's C{label}) and says what to
    do.  twistd run with a router plugin prints it alone and exits with
    status 2 (L{txrouter.tap.mistakes}); elsewhere it is an exception like
    any other.
    """

    def __init__(self, label: str, error: BaseException) -> None:
        super().__init__(label, error)
        self.label = label
        self.error = error

    def __str__(self) -> str:
        error = self.error
        if isinstance(error, CannotListenError) and isinstance(error.socketError, OSError):
            error = error.socketError
        if isinstance(error, OSError) and error.errno in _ADVICE:
            what, todo = _ADVICE[error.errno]
            if error.strerror and error.strerror != os.strerror(error.errno):
                what = error.strerror  # said by txrouter itself, more precisely
            reason = f"{what} ({todo})" if todo else what
        elif isinstance(error, OSError) and error.strerror:
            reason = error.strerror
        else:
            reason = str(error) or type(error).__name__
        return f"{self.label}: {reason}"


class OpenedEarly(Service):
    """
    A service whose resource (a listening port, a device) is opened in
    C{privilegedStartService}, while twistd may still run as root (a port
    below 1024, a tun device), or else in C{startService} (a service
    started after the privileged phase, or in a test).

    Subclasses define L{_open}, and L{opened} if the resource is not kept
    in C{port}.

    @ivar label: the option and value the resource was given by (C{--bind
        tcp:8080}), for the L{StartupError} raised when it cannot be
        opened; L{None} names the service instead.
    """

    port = None
    label = None

    @property
    def opened(self) -> bool:
        """
        Whether the resource is open.
        """
        return self.port is not None

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self._openOrSay()

    def startService(self) -> None:
        super().startService()
        if not self.opened:
            self._openOrSay()

    def _openOrSay(self) -> None:
        try:
            self._open()
        except (OSError, CannotListenError) as e:
            raise StartupError(self.label or repr(self), e) from e

    def _open(self) -> None:
        raise NotImplementedError
