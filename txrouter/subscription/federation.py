"""
Federation: a router announcing its own pools to other routers
(C{--resubscribe ADDR}, reference section 3.9), and the datagrams it
sends for that and for C{notify} acknowledgements.

As uWSGI, after each announce it accepts, a router with C{--resubscribe}
targets sends them a newly built announce: same key, modifier1,
modifier2 and C{sni_*}; as address the router's own (its first listener);
cores, load and weight 0; no C{notify}.  Where this differs:

  - only accepted announces are forwarded (uWSGI forwards even those it
    refused, so its targets hear any spoofer it ignores);
  - an unsubscribe is forwarded only when the key has no node left here:
    the router still serves the key while one of its nodes remains
    (uWSGI forwards every unsubscribe, taking the router out of the
    target's pool until the next announce of a remaining node);
  - subscribes are forwarded at most once a second per key: a pool of N
    nodes announcing every second would otherwise send N identical
    announces a second, and two routers resubscribing to each other would
    echo each announce back and forth without end;
  - with C{--resubscribe-sign DIGEST:KEYFILE} the announce is signed with
    the router's own key (uWSGI drops the signature and cannot re-sign),
    with a C{unix} that grows with every announce of the key so that a
    replay-protected target (a txrouter) accepts each of them.
"""

import errno
import socket

from twisted.logger import Logger

from txrouter.routing.loglimit import LogLimiter
from txrouter.routing.subscriptions import ADDED, REFRESHED, REMOVED
from txrouter.subscription.signing import AnnounceSigner
from txrouter.wire.subscription import Subscription, SubscriptionError, encodeSubscription

__all__ = ["DatagramSender", "Resubscriber", "ackMessage"]

log = Logger(namespace="txrouter.subscription")

#: Keys remembered (last forward, last signed C{unix}) before old ones go.
_KEY_MEMORY = 4096


class DatagramSender:
    """
    Fire-and-forget datagrams from one non-blocking socket per address
    family, opened when first needed (uWSGI resubscribes from one
    persistent socket too).
    """

    def __init__(self) -> None:
        self._sockets = {}

    def send(self, datagram: bytes, address) -> None:
        """
        Send C{datagram} to a L{DatagramAddress}.  A full socket buffer
        drops it, as UDP would.

        @raise OSError: the destination is unusable (no such socket file,
            refused, unreachable).
        """
        sock = self._sockets.get(address.family)
        if sock is None:
            sock = socket.socket(address.family, socket.SOCK_DGRAM)
            sock.setblocking(False)
            self._sockets[address.family] = sock
        try:
            sock.sendto(datagram, address.sendTo())
        except BlockingIOError:
            pass
        except InterruptedError:
            sock.sendto(datagram, address.sendTo())

    def close(self) -> None:
        for sock in self._sockets.values():
            sock.close()
        self._sockets.clear()


def ackMessage(key: bytes, node: str) -> bytes:
    """
    The text uWSGI sends to a new node's C{notify} socket.
    """
    return b"[subscription ack] " + key + b" => new node: " + node.encode()


class Resubscriber:
    """
    Forwards accepted announces to other subscription servers.
    """

    def __init__(
        self, clock, targets, address, sender, sign=None, interval: float = 1.0,
        proto: "bytes | None" = None,
    ) -> None:
        """
        @param clock: an C{IReactorTime}.
        @param targets: L{DatagramAddress}es to announce to.
        @param address: this router's address in the announces (bytes or
            text, uWSGI's spelling).
        @param sender: a L{DatagramSender}.
        @param sign: C{(digest, privateKeyPEM)} to sign with, or L{None}.
        @param interval: seconds between two forwarded subscribes of a key.
        @param proto: what this router's listeners speak, announced as
            uWSGI 2.1's C{proto} var: L{None} (no var: uwsgi, the
            FastRouter's) or C{b"http"} (the HTTP router's, so that a
            txrouter-http upstream speaks HTTP to it).
        """
        self.proto = proto
        self.clock = clock
        self.targets = list(targets)
        self.address = address.encode() if isinstance(address, str) else address
        self.sender = sender
        self.sign = sign
        self.interval = interval
        self._lastSent = {}
        self._signer = AnnounceSigner(*sign, maxKeys=_KEY_MEMORY) if sign is not None else None
        self._log = LogLimiter(log, clock, burst=20, interval=60.0)

    def forward(self, subscription, applied) -> None:
        """
        Announce to the targets what an accepted C{subscription} changed.

        @param applied: what the registry did with it (an
            L{txrouter.routing.subscriptions.Applied}).
        """
        if applied.action not in (ADDED, REFRESHED, REMOVED):
            return
        key = subscription.key
        now = self.clock.seconds()
        unsubscribe = not applied.poolLeft
        if unsubscribe:
            self._lastSent.pop(key, None)
        else:
            last = self._lastSent.get(key)
            if last is not None and 0 <= now - last < self.interval:
                return
            if len(self._lastSent) >= _KEY_MEMORY:
                self._lastSent = {
                    k: t for k, t in self._lastSent.items() if 0 <= now - t < self.interval
                }
            self._lastSent[key] = now
        try:
            datagram = self._build(subscription, unsubscribe, now)
        except (SubscriptionError, ValueError) as e:
            self._log.warn(
                "resubscribe_failed: cannot announce {key} to the targets: {error}",
                event="resubscribe_failed", key=key[:64], error=str(e),
            )
            return
        for target in self.targets:
            try:
                self.sender.send(datagram, target)
            except OSError as e:
                self._log.warn(
                    "resubscribe_failed: {target}: {error}",
                    event="resubscribe_failed", target=target.text,
                    error=e.strerror or errno.errorcode.get(e.errno, str(e)),
                )

    def close(self) -> None:
        """
        The router is stopping: report the failures still unreported now,
        and leave no call pending in the reactor.  Safe to call twice.
        """
        self._log.close()

    def _build(self, subscription, unsubscribe: bool, now: float) -> bytes:
        built = Subscription(
            subscription.key,
            self.address,
            unsubscribe=unsubscribe,
            modifier1=subscription.modifier1,
            modifier2=subscription.modifier2,
            sniKey=subscription.sniKey,
            sniCrt=subscription.sniCrt,
            sniCa=subscription.sniCa,
            proto=self.proto,
        )
        if self._signer is not None:
            built = self._signer.sign(built, now)
        return encodeSubscription(built)
