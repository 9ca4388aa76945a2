"""
The Redis side of C{--cache-store}: the connections a router keeps to the
Redis server of its fleet, and what the operator's tool (L{txrouter.cachetool})
uses to change the map.

The client is C{txredisapi}: it runs on the reactor (a command is a write
and a Deferred, no thread), speaks to TCP, TLS and unix-socket servers,
authenticates (ACL users too), selects the database and has pub/sub; it is
maintained (1.6.0, October 2026, on Twisted's C{ClientService}) and is
pure Python needing nothing but Twisted.  redis-py's asyncio client would
need the asyncio reactor (the routers run on txrouter's epoll one), and
the older Twisted clients (txredis) are no longer maintained.  Its
protocol is used here over connections kept by a C{ClientService} of our
own, from endpoints of the router's reactor (its connection pool uses the
global reactor and logs a line per retry).  It imports the global reactor
when it is imported, so this module is imported only once the reactor is
installed (L{txrouter.build} imports it when it builds a store, not when
the command line is parsed).

In Redis, the value of routing key C{K} is the string at C{PREFIX + K};
a change is announced on the channel L{changesChannel} (the changed key,
or an empty message for "anything may have changed"), and, if the server
has keyspace notifications on (C{notify-keyspace-events K$g} or more), a
change made with any Redis client is heard too.
"""

import txredisapi
from OpenSSL import SSL
from twisted.application.internet import ClientService, backoffPolicy
from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.endpoints import HostnameEndpoint, UNIXClientEndpoint, wrapClientTLS
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.ssl import (
    Certificate,
    optionsForClientTLS,
    platformTrust,
    trustRootFromCertificates,
)
from twisted.logger import Logger
from zope.interface import implementer

from txrouter.routing.interfaces import IRemoteMap
from txrouter.routing.shared import SharedStore

__all__ = [
    "RedisMap", "RedisStoreService", "changesChannel", "connect", "globEscaped", "keyspacePattern",
    "redisStore",
]

log = Logger(namespace="txrouter.redisclient")

#: Seconds to connect, and to wait for an answer (then the connection is
#: dropped and made again: a hung server is an unreachable one).
CONNECT_TIMEOUT = 2.0
REPLY_TIMEOUT = 2.0


def changesChannel(url) -> bytes:
    """
    The pub/sub channel on which changes of the map under C{url}'s prefix
    are announced.
    """
    return b"txrouter-changed:" + url.prefix


def keyspacePattern(url) -> bytes:
    """
    The pattern of the keyspace notification channels of the map's keys.
    """
    return b"__keyspace@%d__:%s*" % (url.db, globEscaped(url.prefix))


def globEscaped(text: bytes) -> bytes:
    """
    C{text} with Redis's glob characters escaped, to match it literally.
    """
    for special in (b"\\", b"*", b"?", b"[", b"]"):
        text = text.replace(special, b"\\" + special)
    return text


def endpointFor(url, reactor):
    """
    The Twisted client endpoint of C{url}'s server.
    """
    if url.scheme == "unix":
        return UNIXClientEndpoint(reactor, url.path, timeout=CONNECT_TIMEOUT)
    endpoint = HostnameEndpoint(reactor, url.host, url.port, timeout=CONNECT_TIMEOUT)
    if url.scheme == "rediss":
        trust = platformTrust()
        if url.ca is not None:
            with open(url.ca, "rb") as f:
                trust = trustRootFromCertificates(_certificates(f.read()))
        endpoint = wrapClientTLS(optionsForClientTLS(url.host, trustRoot=trust), endpoint)
    return endpoint


def _certificates(pem: bytes) -> list:
    """
    Every certificate of a PEM bundle.
    """
    end = b"-----END CERTIFICATE-----"
    return [Certificate.loadPEM(block + end) for block in pem.split(end) if b"-----BEGIN" in block]


@implementer(IStreamClientEndpoint)
class _ReportingEndpoint:
    """
    An endpoint that tells C{failed(reason)} when a connection attempt
    fails (C{ClientService} retries without saying why).
    """

    def __init__(self, endpoint, failed) -> None:
        self.endpoint = endpoint
        self.failed = failed

    def connect(self, factory):
        def report(failure):
            self.failed(failure.getErrorMessage())
            return failure

        return self.endpoint.connect(factory).addErrback(report)


class _QuietClientService(ClientService):
    """
    A C{ClientService} without its line per retry: the store logs the
    outage once, when it starts, and once when it ends.
    """

    _log = Logger(observer=lambda event: None)


class _RemembersLoss:
    """
    A C{txredisapi} protocol that keeps why its connection was lost: a
    connection lost while C{AUTH} or C{SELECT} waits (a failed TLS
    handshake, a server restarting) fails them like a refusal would.
    """

    lostReason = None

    def connectionLost(self, why):
        self.lostReason = why
        super().connectionLost(why)


class _CommandProtocol(_RemembersLoss, txredisapi.RedisProtocol):
    pass


class _Link(Factory):
    """
    One connection to the server, made again after a failure (first after
    0.2 s, then twice as long each time, 5 s at most) while L{service}
    runs.  Its protocol is C{txredisapi}'s: it authenticates and selects
    the database before it is ready.

    @ivar current: the ready protocol, or L{None}.
    """

    noisy = False
    # Read by txredisapi's protocol when AUTH or SELECT is refused: the
    # reason goes to connectionError, not to the log.
    isLazy = False

    def __init__(self, url, reactor, protocol, ready, lost) -> None:
        """
        @param protocol: the C{txredisapi} protocol class.
        @param ready: called with each protocol once it is ready.
        @param lost: called with the reason when a connection attempt
            fails or a connection is lost.
        """
        self.url = url
        self.reactor = reactor
        self.protocol = protocol
        self.ready = ready
        self.lost = lost
        self.current = None
        self._latest = None
        self.service = _QuietClientService(
            _ReportingEndpoint(endpointFor(url, reactor), lost), self,
            retryPolicy=backoffPolicy(initialDelay=0.2, maxDelay=5.0, factor=2.0),
            clock=reactor,
        )

    def buildProtocol(self, addr):
        url = self.url
        protocol = self.protocol(
            None, replyTimeout=REPLY_TIMEOUT, password=url.password, dbid=url.db,
            convertNumbers=False, username=url.username,
        )
        protocol.factory = self
        self._latest = protocol
        protocol.callLater = self.reactor.callLater
        protocol.whenConnected().addCallback(self._ready)
        protocol.whenDisconnected().addCallback(self._lost)
        return protocol

    def _ready(self, protocol) -> None:
        self.current = protocol
        self.ready(protocol)

    def _lost(self, protocol) -> None:
        if self.current is protocol:
            self.current = None
            self.lost("connection lost")

    def _lostBeforeReady(self):
        """
        Why the latest connection was lost before it was ready, or
        L{None} if it was not lost (the server refused it).
        """
        protocol = self._latest
        return None if protocol is None else protocol.lostReason

    def stopTrying(self) -> None:
        """
        C{AUTH} or C{SELECT} failed: if the server refused it, trying
        again will not help; if the connection was lost, it is made again.
        """
        if self._lostBeforeReady() is None:
            self.service.stopService()

    def connectionError(self, why: str) -> None:
        reason = self._lostBeforeReady()
        if reason is None:
            self.lost(f"{why}; not trying again")
        else:
            self.lost(f"connection lost before it was ready: {describeLoss(reason)}")


def describeLoss(reason) -> str:
    """
    A line for the failure a connection was lost with: a TLS failure
    (OpenSSL's list of errors) as the reason OpenSSL gives.
    """
    error = reason.value
    if isinstance(error, SSL.Error) and error.args and isinstance(error.args[0], list):
        return "TLS: " + "; ".join(entry[-1] for entry in error.args[0] if entry)
    return reason.getErrorMessage()


class _SubscriberProtocol(_RemembersLoss, txredisapi.SubscriberProtocol):
    def messageReceived(self, pattern, channel, message):
        self.factory.heard(pattern, channel, message)


@implementer(IRemoteMap)
class RedisMap:
    """
    The map under C{url}'s prefix, read over one command connection and
    followed over one subscriber connection; what happens to them is told
    to the L{SharedStore} C{store} (its C{reachable}, C{unreachable},
    C{changed}, C{refreshAll}).
    """

    def __init__(self, url, reactor, store=None) -> None:
        self.url = url
        self.reactor = reactor
        self.store = store
        self._stopping = False
        self._commands = _Link(url, reactor, _CommandProtocol,
                               lambda protocol: self.store.reachable(), self._lost)
        self._subscriber = _Link(url, reactor, _SubscriberProtocol, self._subscribe,
                                 lambda reason: None)
        self._subscriber.heard = self._heard

    def read(self, keys):
        protocol = self._commands.current
        if protocol is None:
            raise txredisapi.ConnectionError("not connected")
        prefix = self.url.prefix
        return protocol.mget([prefix + key for key in keys])

    def start(self) -> None:
        self._stopping = False
        self._commands.service.startService()
        self._subscriber.service.startService()

    def stop(self):
        self._stopping = True
        return defer.gatherResults(
            [self._commands.service.stopService(), self._subscriber.service.stopService()],
            consumeErrors=True,
        )

    def _lost(self, reason: str) -> None:
        if not self._stopping:
            self.store.unreachable(reason)

    def _subscribe(self, protocol) -> None:
        """
        Subscribe a new subscriber connection to the changes; then every
        known key is read again, for what changed before.
        """
        subscribed = defer.gatherResults([
            protocol.subscribe([changesChannel(self.url)]),
            protocol.psubscribe([keyspacePattern(self.url)]),
        ], consumeErrors=True)
        subscribed.addCallback(lambda _: self.store.refreshAll())
        subscribed.addErrback(lambda failure: log.warn(
            "cache_store_subscribe_failed: {store}: {error}", event="cache_store_subscribe_failed",
            store=str(self.url), error=failure.value.subFailure.getErrorMessage(),
        ))

    def _heard(self, pattern, channel, message) -> None:
        if pattern is None:
            if message:
                self.store.changed(message)
            else:
                self.store.refreshAll()
            return
        # A keyspace notification: the key is the end of the channel's name.
        start = len(b"__keyspace@%d__:" % self.url.db) + len(self.url.prefix)
        self.store.changed(channel[start:])


class RedisStoreService(Service):
    """
    Keeps a L{SharedStore} and its L{RedisMap} running.
    """

    def __init__(self, store: SharedStore, remote: RedisMap) -> None:
        self.store = store
        self.remote = remote

    def startService(self) -> None:
        super().startService()
        self.remote.start()
        self.store.start()

    def stopService(self):
        super().stopService()
        self.store.stop()
        return self.remote.stop()


def redisStore(url, reactor, ttl: float = 30.0):
    """
    The store of C{--cache-store URL}, and the service that runs it.

    @return: C{(store, service)}.
    """
    remote = RedisMap(url, reactor)
    store = SharedStore(remote, reactor, ttl=ttl, name=str(url))
    remote.store = store
    return store, RedisStoreService(store, remote)


def connect(url, reactor):
    """
    One connection to C{url}'s server for a short-lived program (the
    operator's tool), not made again.

    @return: a Deferred firing with a ready C{txredisapi} protocol (its
        C{factory.service.stopService()} closes it), or failing with
        C{ConnectionError} saying why not.
    """
    connected = defer.Deferred()

    def ready(protocol):
        connected.callback(protocol)

    def lost(reason):
        link.service.stopService()
        if not connected.called:
            connected.errback(ConnectionError(f"cannot reach {url}: {reason}"))

    link = _Link(url, reactor, _CommandProtocol, ready, lost)
    link.service.startService()
    return connected
