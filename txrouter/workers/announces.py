"""
A pool's subscription servers: every datagram heard goes to every worker,
and the newest one of every node is kept for a worker that starts.
"""

import collections

from twisted.internet.protocol import DatagramProtocol

from txrouter.wire.subscription import SubscriptionError, parseSubscription

__all__ = ["FanOut", "LatestAnnounces"]


class LatestAnnounces:
    """
    The newest datagram heard for each node of each pool (by subscription
    server and sender), in the order they were heard: what a worker that
    starts is given first, so that it knows the nodes its siblings know
    without waiting for their next announce, and refuses, as they do, a
    signed announce replayed from before it started.

    A node whose newest datagram is older than the subscription tolerance
    is in the worker's registry for one more tolerance, as if it had just
    announced itself.
    """

    def __init__(self, limit: int = 100000) -> None:
        self.limit = limit
        self._latest = collections.OrderedDict()

    def heard(self, address: str, datagram: bytes, source) -> None:
        try:
            subscription = parseSubscription(datagram)
        except SubscriptionError:
            return
        node = (address, source, subscription.key, subscription.address)
        self._latest.pop(node, None)
        self._latest[node] = datagram
        if len(self._latest) > self.limit:
            self._latest.popitem(last=False)

    def replay(self, channel) -> None:
        """
        Announce every newest datagram on C{channel}, oldest first.
        """
        for (address, source, _, _), datagram in self._latest.items():
            channel.announce(address, datagram, source)


class FanOut(DatagramProtocol):
    """
    A subscription server of the pool: every datagram goes to every
    running worker, and is kept in the pool's L{LatestAnnounces}.
    """

    def __init__(self, pool, address: str) -> None:
        self.pool = pool
        self.address = address

    def datagramReceived(self, datagram: bytes, address) -> None:
        source = address[0] if isinstance(address, tuple) and address else None
        self.pool.latest.heard(self.address, datagram, source)
        for slot in self.pool.slots:
            if slot.channel is not None:
                slot.channel.announce(self.address, datagram, source)
