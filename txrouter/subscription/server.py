"""
The subscription server: the datagram sockets uWSGI instances announce
themselves to (C{--subscription-server ADDR}, repeatable).

Each datagram is parsed (L{txrouter.wire.subscription.parseSubscription})
and applied to the registry
(L{txrouter.routing.subscriptions.SubscriptionRegistry.apply}); a refused
one is logged, with its reason, under a rate limit so that a flood cannot
fill the disk; nothing a sender does makes the server raise.  An accepted
one is acknowledged to its C{notify} socket when the registry says so and
forwarded to the C{--resubscribe} targets (L{txrouter.subscription.federation}).

Sockets: UDP C{ip:port} (C{:port} on every IPv4 interface, as uWSGI), a
unix datagram socket C{/path} (bound with L{txrouter.socketfiles}: a
stale socket file is replaced if nothing listens on it, the mode is
C{--chmod-socket}'s or writable by everyone as Twisted does; the file is
removed on stop) or an abstract C{@name}.
Datagrams are read with a 64 KiB buffer, so that one above the 4096-byte
limit is refused whole rather than truncated into something that parses.
"""

import collections
import ipaddress
import os
import socket
import stat

from twisted.application.service import Service
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger, LogLevel

from txrouter.early import OpenedEarly
from txrouter.routing.loglimit import LogLimiter
from txrouter.subscription.addresses import DatagramAddress, parseDatagramAddress
from txrouter.subscription.federation import ackMessage
from txrouter.wire.subscription import SubscriptionError, parseSubscription

__all__ = [
    "READ_BUFFER",
    "SubscriptionProtocol",
    "DatagramListener",
    "SenderCloser",
    "RegistryCloser",
    "subscriptionServices",
]

log = Logger(namespace="txrouter.subscription")

#: The read buffer: the largest UDP payload, so nothing is ever truncated.
READ_BUFFER = 65536


def _sourceOf(address) -> "str | None":
    """
    The sender's IP text from a UDP C{(host, port)}, L{None} for a unix
    datagram sender.
    """
    if isinstance(address, tuple) and address and isinstance(address[0], str):
        return address[0]
    return None


class SubscriptionProtocol(DatagramProtocol):
    """
    Applies every received announce to a registry.

    @ivar counts: datagrams by outcome: C{accepted}, and each refusal
        reason (C{bad_modifier1}, C{too_many_pools}, C{replayed}, ...).
    """

    def __init__(self, registry, clock, resubscriber=None, sender=None) -> None:
        """
        @param registry: a L{SubscriptionRegistry} (anything with its
            C{apply}).
        @param clock: an C{IReactorTime}, for the log rate limit.
        @param resubscriber: a L{Resubscriber} to forward accepted
            announces with, or L{None}.
        @param sender: a L{DatagramSender} for C{notify} acks, or L{None}.
        """
        self.registry = registry
        self.resubscriber = resubscriber
        self.sender = sender
        self.counts = collections.Counter()
        self._refusals = LogLimiter(log, clock, burst=20, interval=10.0)

    def stopProtocol(self) -> None:
        """
        The last socket is closed: report the refusals still unreported
        now, and leave no call pending in the reactor.
        """
        self._refusals.close()

    def datagramReceived(self, datagram: bytes, address) -> None:
        try:
            self._received(datagram, address)
        except Exception:
            self.counts["error"] += 1
            self._refusals.emit(
                "failure", "subscription_server_error: a datagram from {source} raised",
                event="subscription_server_error", source=_sourceOf(address) or "local",
                level=LogLevel.error,
            )

    def _received(self, datagram: bytes, address) -> None:
        source = _sourceOf(address)
        try:
            subscription = parseSubscription(datagram)
            applied = self.registry.apply(subscription, source)
        except SubscriptionError as e:
            self.counts[e.event] += 1
            self._refusals.warn(
                "subscription_refused: {reason} from {source}: {detail}",
                event="subscription_refused", reason=e.event, source=source or "local",
                detail=e.detail,
            )
            return
        self.counts["accepted"] += 1
        if applied.notify is not None and self.sender is not None:
            self._acknowledge(applied)
        if self.resubscriber is not None:
            self.resubscriber.forward(subscription, applied)

    def _acknowledge(self, applied) -> None:
        path = applied.notify
        target = DatagramAddress(
            "@" + path[1:] if path.startswith("\0") else path, socket.AF_UNIX, path=path
        )
        try:
            self.sender.send(ackMessage(applied.key, applied.node), target)
        except OSError as e:
            log.debug(
                "subscription_notify_failed: {path}: {error}",
                event="subscription_notify_failed", path=target.text, error=e.strerror,
            )


class DatagramListener(OpenedEarly):
    """
    One datagram socket serving a protocol, bound before privileges are
    dropped (like C{twisted.application.internet.UDPServer}), so that a
    bind error stops start-up.

    @ivar port: the listening port, while running.
    """

    port = None

    def __init__(self, reactor, address, protocol, mode: int = 0o666) -> None:
        """
        @param address: a L{DatagramAddress}.
        @param mode: permissions of a unix socket file.
        """
        self.reactor = reactor
        self.address = address
        self.protocol = protocol
        self.mode = mode

    def _open(self) -> None:
        address = self.address
        if address.path is None:
            self.port = self.reactor.listenUDP(
                address.port, self.protocol, interface=address.host, maxPacketSize=READ_BUFFER,
            )
            return
        self.port = self.reactor.listenUNIXDatagram(
            address.path, self.protocol, maxPacketSize=READ_BUFFER, mode=self.mode,
        )

    def stopService(self):
        super().stopService()
        port, self.port = self.port, None
        if port is None:
            return None
        result = port.stopListening()
        path = self.address.path
        if path is not None and not path.startswith("\0"):
            _removeSocketFile(path)
        return result


def _removeSocketFile(path: str) -> None:
    """
    Remove the socket file at C{path} (anything else there is left alone);
    after the router switched users, its directory may no longer let it:
    the next start replaces the file.
    """
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass
    except PermissionError as e:
        log.warn(
            "socket_file_kept: {path}: cannot remove it as uid {uid} ({error});"
            " the next start replaces it",
            event="socket_file_kept", path=path, uid=os.getuid(), error=e.strerror,
        )


class SenderCloser(Service):
    """
    Closes a L{DatagramSender}'s sockets when the application stops.
    """

    def __init__(self, sender) -> None:
        self.sender = sender

    def stopService(self):
        self.sender.close()
        return super().stopService()


class RegistryCloser(Service):
    """
    Closes a L{SubscriptionRegistry}, and the L{Resubscriber} it feeds if
    any, when the application stops, so that neither leaves a timer
    pending in the reactor.

    L{subscriptionServices} puts it before the listeners: a parent stops
    its children last to first, so both are closed once no socket can
    feed them any more.
    """

    def __init__(self, registry, resubscriber=None) -> None:
        self.registry = registry
        self.resubscriber = resubscriber

    def stopService(self):
        self.registry.close()
        if self.resubscriber is not None:
            self.resubscriber.close()
        return super().stopService()


def _isOpen(address, registry) -> bool:
    """
    Whether anyone beyond this host may announce on C{address} unchecked.
    """
    if address.path is not None:
        return False
    if registry.sourcePolicy.networks or registry.signCheck is not None:
        return False
    return not address.host or not ipaddress.ip_address(address.host).is_loopback


def subscriptionServices(
    reactor, addresses, registry, resubscriber=None, sender=None, listening=None,
    listen=DatagramListener,
) -> list:
    """
    One L{DatagramListener} per address, each with its own
    L{SubscriptionProtocol} on the shared registry, after a
    L{RegistryCloser} (and before a L{SenderCloser} when there is a
    C{sender}).

    @param addresses: uWSGI-style addresses (C{ip:port}, C{:port},
        C{/path}, C{@name}) or L{DatagramAddress}es.
    @param listening: the reactor the sockets are bound with (default:
        C{reactor}; a L{txrouter.socketfiles.SocketFiles} sets the socket
        files' mode and owner, and replaces a stale file safely).
    @param listen: makes the service that feeds a protocol the datagrams
        of an address, as L{DatagramListener} (in a C{--processes} worker,
        the pool's forwarding).
    @raise ValueError: a malformed address.
    @return: the services, to be added to the router's in this order.
    """
    services = [RegistryCloser(registry, resubscriber)]
    for address in addresses:
        if isinstance(address, str):
            address = parseDatagramAddress(address, listen=True)
        if _isOpen(address, registry):
            log.warn(
                "subscription_server_open: {address} hears every host and neither"
                " --subscription-allow nor --subscriptions-sign-check is set: anyone"
                " reaching it can add nodes",
                event="subscription_server_open", address=address.text,
            )
        protocol = SubscriptionProtocol(registry, reactor, resubscriber, sender)
        listener = listen(listening or reactor, address, protocol)
        listener.label = f"--subscription-server {address.text}"
        services.append(listener)
    if sender is not None:
        services.append(SenderCloser(sender))
    return services
