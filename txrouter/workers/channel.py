"""
The pool's channel to each worker: an AMP connection over a unix socket
pair, on which the pool forwards every subscription datagram it hears.

Every worker keeps a subscription registry of its own and applies every
datagram in the order the pool heard them, so that all the registries
agree, and each one's replay protection (signed announces) refuses what
a sibling's refuses.  The pool forwards the datagram whole, as heard,
with the sender's address: a worker checks it exactly as a router of one
process would.
"""

from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols import amp

__all__ = ["Announce", "PoolChannel", "WorkerChannel", "MAX_DATAGRAM"]

log = Logger(namespace="txrouter.workers")

#: The largest datagram the channel carries (an AMP value); anything
#: larger is refused by the subscription parser anyway (4096 bytes).
MAX_DATAGRAM = 0xFFFF


class Announce(amp.Command):
    """
    A datagram heard on the subscription server C{address} (its text as
    configured) from C{source} (an IP, or none for a unix datagram
    sender).
    """

    arguments = [
        (b"address", amp.Unicode()),
        (b"datagram", amp.String()),
        (b"source", amp.Unicode(optional=True)),
    ]
    requiresAnswer = False


class WorkerChannel(amp.AMP):
    """
    The worker's end: each datagram goes to the protocol of its
    subscription server (registered by L{listen}).

    @ivar lost: called with no argument when the pool's end is gone (the
        pool died): the worker stops.
    """

    def __init__(self, lost=lambda: None) -> None:
        super().__init__()
        self.lost = lost
        self.protocols = {}

    def listen(self, address: str, protocol) -> None:
        self.protocols[address] = protocol

    def forget(self, address: str) -> None:
        self.protocols.pop(address, None)

    @Announce.responder
    def announce(self, address, datagram, source=None):
        protocol = self.protocols.get(address)
        if protocol is not None:
            protocol.datagramReceived(datagram, (source, 0) if source is not None else None)
        return {}

    def connectionLost(self, reason) -> None:
        super().connectionLost(reason)
        self.lost()


class PoolChannel(amp.AMP):
    """
    The pool's end of one worker's channel.
    """

    def announce(self, address: str, datagram: bytes, source) -> None:
        if len(datagram) > MAX_DATAGRAM:
            return
        self.callRemote(Announce, address=address, datagram=datagram, source=source)


def channelFactory(protocol) -> Factory:
    """
    A factory whose one connection is C{protocol}.
    """
    factory = Factory.forProtocol(lambda: protocol)
    factory.noisy = False
    return factory
