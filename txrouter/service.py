"""
A router as a Twisted service: its listeners, cheap mode, a graceful stop.

A TLS listener of a Twisted endpoint string (C{ssl:}, C{tls:}) answers a
client's ALPN offer with the application protocols its router names
(C{IProtocolNegotiationFactory}, as L{txrouter.routers.http.HTTPRouter}
provides): Twisted, since 26.4, fails the handshake of every client that
offers ALPN (curl and browsers do) to a factory that names none, with an
internal error alert and nothing in the log.  The HTTPS and SSL routers'
own TLS listeners (L{TLSListener}) answer ALPN from their contexts
(L{txrouter.tls.contexts.ContextPolicy}).
"""

import attr

from twisted.application.service import MultiService
from twisted.internet.defer import maybeDeferred, succeed
from twisted.internet.endpoints import SSL4ServerEndpoint
from twisted.logger import Logger

from txrouter.arguments import checkFlag, checkSeconds, checkStrings
from txrouter.early import OpenedEarly
from txrouter.endpoints import parseServerEndpoint
from txrouter.routing.interfaces import IAvailability
from txrouter.socketfiles import socketFiles
from txrouter.stats.document import statsDocument
from txrouter.stats.server import StatsFactory, statsEndpoint
from txrouter.tls.handshake import DEFAULT_HANDSHAKE_TIMEOUT
from txrouter.tls.specs import listenArguments
from txrouter.transports import listeningReactor

log = Logger(namespace="txrouter.service")


class Listener(OpenedEarly):
    """
    One bound server endpoint that can stop and resume accepting.

    Like Twisted's C{StreamServerEndpointService}, but it keeps the
    listening port, so that cheap mode can stop polling it (connections
    then wait in the kernel's backlog), and a bind error fails start-up.

    @ivar port: the C{IListeningPort}, once listening.
    """

    port = None
    paused = False

    def __init__(self, endpoint, factory, label=None) -> None:
        """
        @param label: the option and value it was given by (C{--bind
            tcp:8080}), named if it cannot listen.
        """
        self.endpoint = endpoint
        self.factory = factory
        self.label = label

    def _open(self) -> None:
        outcome = []
        self.endpoint.listen(self.factory).addBoth(outcome.append)
        if not outcome:
            raise RuntimeError(f"{self.endpoint!r} did not listen at once")
        if hasattr(outcome[0], "raiseException"):
            outcome[0].raiseException()
        self.port = outcome[0]
        if self.paused:
            self.port.cheapPaused = True
            self.port.stopReading()

    def stopService(self):
        super().stopService()
        port, self.port = self.port, None
        if port is None:
            return succeed(None)
        return maybeDeferred(port.stopListening)

    def pause(self) -> None:
        """
        Stop accepting connections; they queue in the kernel's backlog.
        """
        self.paused = True
        if self.port is not None:
            self.port.cheapPaused = True
            self.port.stopReading()

    def resume(self) -> None:
        """
        Accept connections again.
        """
        self.paused = False
        if self.port is not None:
            self.port.cheapPaused = False
            self.port.startReading()


@attr.frozen
class TLSListener:
    """
    A TLS listener given in uWSGI's spelling (C{--https}, C{--sslrouter}).

    @ivar address: its address as given (C{:8443}, C{127.0.0.1:8443},
        C{[::1]:8443}): what a router that routes by listener
        (C{listenerFactory}) is given.
    @ivar contexts: its C{IOpenSSLServerConnectionCreator} (a
        L{txrouter.tls.listener.ListenerContexts}).
    """

    address: str
    contexts: object
    option: str = "--https"

    def endpoint(self, reactor) -> SSL4ServerEndpoint:
        """
        The endpoint listening for it on C{reactor} (a listening reactor,
        whose C{listenSSL} puts the handshake deadline in).
        """
        port, interface = listenArguments(self.address)
        return SSL4ServerEndpoint(reactor, port, self.contexts, interface=interface)


class RouterService(MultiService):
    """
    Listens on every bind endpoint for one router and drains it on stop.

    Stopping (SIGTERM or SIGINT under twistd) first stops accepting on all
    listeners, then lets in-flight requests finish, closing idle keep-alive
    connections at once, for up to C{graceful_timeout} seconds.

    With C{cheap}, the listeners accept only while the router's forwarder
    says a node is available (uWSGI's C{--R-cheap}, reference section 3.8).

    @ivar router: the factory shared by the listeners; it must provide
        C{drain(timeout)} and C{forwarder}.  A router whose sessions depend
        on the listener that accepted them (the raw router routes by it)
        also provides C{listenerFactory(description)}: the factory of the
        listener bound with that endpoint string, used instead of the
        router.
    """

    def __init__(
        self, reactor, router, binds, graceful_timeout: float = 30.0, cheap: bool = False,
        wrap=None, tlsListeners=(), handshakeTimeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
        socketFiles=socketFiles, inherited=None,
    ) -> None:
        """
        @param binds: endpoint strings to listen on.
        @param wrap: what wraps each listener's factory, outermost (the
            PROXY protocol reader, L{txrouter.proxyprotocol}), or L{None}.
        @param tlsListeners: L{TLSListener}s, listened on after C{binds}.
        @param handshakeTimeout: the seconds a client of a TLS listener
            (C{ssl:} or a L{TLSListener}) has to finish its handshake.
        @param socketFiles: wraps the listening reactor so that unix socket
            files are made as asked (L{txrouter.socketfiles.socketFiles}).
        @param inherited: in a C{--processes} worker, the listening
            sockets it inherited, listened on instead of binding
            (L{txrouter.workers.listeners.InheritedListeners}).
        """
        super().__init__()
        binds = checkStrings("binds", binds, "tcp:8080")
        checkSeconds("graceful_timeout", graceful_timeout)
        checkFlag("cheap", cheap)
        self.router = router
        self.gracefulTimeout = graceful_timeout
        self.listeners = []
        forListener = getattr(router, "listenerFactory", None)
        listening = socketFiles(listeningReactor(reactor, wrap, handshakeTimeout, inherited))
        endpoints = [(description, parseServerEndpoint(listening, description), "--bind")
                     for description in binds]
        endpoints += [(tls.address, tls.endpoint(listening), tls.option) for tls in tlsListeners]
        for description, endpoint, option in endpoints:
            factory = router if forListener is None else forListener(description)
            listener = Listener(endpoint, factory, f"{option} {description}")
            listener.setServiceParent(self)
            self.listeners.append(listener)
        self.cheap = False
        self.cheapMode = cheap
        if cheap:
            self._watchAvailability()

    def _watchAvailability(self) -> None:
        """
        Follow the availability of the router's forwarder (cheap mode),
        until it is replaced.
        """
        forwarder = self.router.forwarder
        availability = IAvailability(forwarder, None)
        if availability is None:
            raise ValueError("cheap mode needs a forwarder that knows when nodes are available")

        def changed(available: bool) -> None:
            if self.router.forwarder is forwarder:
                self._availabilityChanged(available)

        availability.watchAvailability(changed)
        self._availabilityChanged(availability.available)

    def replaceNodes(self, forwarder, fallback, fallbackOnNoKey: bool, health=None) -> None:
        """
        Give the router a new forwarder, fallbacks and health checks' state
        (a reload): its C{replaceNodes}; in cheap mode, the listeners then
        follow the new forwarder's availability.
        """
        self.router.replaceNodes(forwarder, fallback, fallbackOnNoKey, health)
        if self.cheapMode:
            self._watchAvailability()

    def serveStats(
        self, reactor, address: str, shortName: str, addresses,
        http: bool = False, minified: bool = False,
    ) -> Listener:
        """
        Also serve the stats document on C{address} (an endpoint string, or
        uWSGI's C{host:port} or path); cheap mode never pauses it.

        @param shortName: uWSGI's name of the router in the document.
        @param addresses: the router's listening addresses, as shown.
        @raise ValueError: C{address} is not a listening address.
        """
        endpoint = statsEndpoint(reactor, address)

        def document():
            return statsDocument(
                shortName, addresses, len(self.router.sessions),
                [self.router.forwarder, self.router], self.cheap,
            )

        factory = StatsFactory(reactor, document, http, minified)
        listener = Listener(endpoint, factory, f"--stats {address}")
        listener.setServiceParent(self)
        return listener

    def _availabilityChanged(self, available: bool) -> None:
        if available == (not self.cheap):
            return
        self.cheap = not available
        if available:
            log.info("cheap_mode_left: a node is available, accepting again", event="cheap_mode_left")
        else:
            log.info("cheap_mode_entered: no node available, not accepting", event="cheap_mode_entered")
        for listener in self.listeners:
            if available:
                listener.resume()
            else:
                listener.pause()

    def stopService(self):
        stopped = super().stopService()
        stopped.addCallback(lambda _: self.router.drain(self.gracefulTimeout))
        return stopped
