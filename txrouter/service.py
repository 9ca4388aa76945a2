"""
A router as a Twisted service: its listeners, and a graceful stop.
"""

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService
from twisted.internet.endpoints import serverFromString


class RouterService(MultiService):
    """
    Listens on every bind endpoint for one router and drains it on stop.

    Stopping (SIGTERM or SIGINT under twistd) first stops accepting on all
    listeners, then lets in-flight requests finish, closing idle keep-alive
    connections at once, for up to C{graceful_timeout} seconds.

    @ivar router: the factory shared by the listeners; it must provide
        C{drain(timeout)}.
    """

    def __init__(self, reactor, router, binds, graceful_timeout: float = 30.0) -> None:
        super().__init__()
        self.router = router
        self.gracefulTimeout = graceful_timeout
        for description in binds:
            listener = StreamServerEndpointService(
                serverFromString(reactor, description), router
            )
            # Fail twistd's start-up on a bind error instead of logging it.
            listener._raiseSynchronously = True
            listener.setServiceParent(self)

    def stopService(self):
        stopped = super().stopService()
        stopped.addCallback(lambda _: self.router.drain(self.gracefulTimeout))
        return stopped
