"""
Services that bind or open what they need as early as twistd allows.
"""

from twisted.application.service import Service

__all__ = ["OpenedEarly"]


class OpenedEarly(Service):
    """
    A service whose resource (a listening port, a device) is opened in
    C{privilegedStartService}, while twistd may still run as root (a port
    below 1024, a tun device), or else in C{startService} (a service
    started after the privileged phase, or in a test).

    Subclasses define L{_open}, and L{opened} if the resource is not kept
    in C{port}.
    """

    port = None

    @property
    def opened(self) -> bool:
        """
        Whether the resource is open.
        """
        return self.port is not None

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self._open()

    def startService(self) -> None:
        super().startService()
        if not self.opened:
            self._open()

    def _open(self) -> None:
        raise NotImplementedError
