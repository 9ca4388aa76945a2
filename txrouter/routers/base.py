"""
What every router's factory shares: the options every router has (node
choice, timeouts, body limits, errors), its open sessions and a graceful
drain.
"""

import attr
from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import ServerFactory
from twisted.logger import Logger
from zope.interface import implementer

from txrouter.arguments import (
    checkCount, checkFlag, checkForwarder, checkNodes, checkReactor, checkSeconds,
)
from txrouter.lifecycle import IDEMPOTENT_METHODS, RequestSettings
from txrouter.routing.interfaces import IStatsSource
from txrouter.routing.static import StaticForwarder
from txrouter.spool import SpoolError, checkSpoolDirectory

log = Logger(namespace="txrouter.router")

#: Seconds a connection accepted before a drain began, which has sent
#: nothing yet, has to begin its request: its client sent it before it
#: could know (Go's http.Server.Shutdown gives new connections 5 s).
DRAIN_SILENT_GRACE = 2.0


@implementer(IStatsSource)
class RouterFactory(ServerFactory):
    """
    The factory of a router's listeners, which keeps track of its sessions.

    A session adds itself to L{sessions} when connected, calls
    L{sessionClosed} when gone, and provides C{closeWhenIdle()}; one that
    waits for its client to speak first also provides C{closeIfSilent()}.

    @ivar sessions: the open client connections.
    @ivar draining: L{drain} was called: sessions close once idle.
    """

    noisy = False

    def __init__(
        self,
        reactor,
        nodes=(),
        *,
        forwarder=None,
        fallback=(),
        fallback_on_no_key: bool = False,
        max_retries: int = 3,
        gracetime: float = 30.0,
        max_fails: int = 1,
        algo: "str | None" = None,
        timeout: float = 60.0,
        connect_timeout: "float | None" = None,
        harakiri: float = 0,
        post_buffering: int = 0,
        post_buffering_dir: "str | None" = None,
        limit_post: int = 0,
        silent_errors: bool = False,
        quiet: bool = False,
        min_body_rate: float = 500,
        retry_methods=IDEMPOTENT_METHODS,
        health=None,
    ) -> None:
        """
        The keyword arguments every router takes, named as the command-line
        options (dashes become underscores).

        @param nodes: the C{--to} nodes (L{txrouter.routing.nodes.Node}),
            in round robin.
        @param forwarder: an L{IForwarder} replacing the static one.
        @param fallback: nodes tried in order after a failed connect.
        @param fallback_on_no_key: a key that maps to no node goes to the
            fallback nodes too.
        @param max_retries: connect retries per request.
        @param gracetime: seconds a C{--to} node that failed is left out.
        @param max_fails: failed connects within C{gracetime} that put a
            C{--to} node in quarantine (1: the first, as uWSGI).
        @param algo: how a C{--to} node is chosen: L{None} for uWSGI's
            round robin, else a balancer's name (C{wrr}, C{lrc}, C{wlrc},
            C{iphash}).
        @param timeout: idle seconds allowed to clients and nodes.
        @param connect_timeout: seconds a connect may take (default:
            C{timeout}).
        @param harakiri: seconds a node may take for a whole response; 0
            for no limit.
        @param post_buffering: 0 to stream request bodies; else they are
            read whole before a node is connected, up to this many bytes in
            memory and the rest in an unlinked temporary file in
            C{post_buffering_dir}.
        @param limit_post: the largest request body accepted (413 above); 0
            for no limit.
        @param silent_errors: close without an error response, as uWSGI.
        @param quiet: do not log failed connects.
        @param min_body_rate: bytes per second a request body must average
            after its first C{body_timeout} (or C{timeout}) seconds, else
            408 C{body_too_slow} (Apache's C{mod_reqtimeout} default rate);
            0 for no minimum.
        @param retry_methods: the methods (C{str} or C{bytes}) of the
            requests sent again to the next node when theirs closes before
            any byte of a response (only with an empty or spooled body).
        @param health: the L{txrouter.routing.health.NodeHealth} the health
            checks (L{txrouter.checks.HealthChecker}) keep, which takes the
            C{--to} and C{--fallback} nodes they find down out of rotation;
            L{None} without checks.
        @raise TypeError: an argument of the wrong kind (a string for a
            node, a string for a number...); the message says what is
            expected.
        @raise ValueError: temporary files cannot be created in
            C{post_buffering_dir}, a negative number, nodes with a
            forwarder.
        """
        checkReactor(reactor)
        nodes = checkNodes("nodes", nodes)
        fallback = checkNodes("fallback", fallback)
        checkForwarder(nodes, forwarder)
        for name, value in [("gracetime", gracetime), ("timeout", timeout),
                            ("harakiri", harakiri), ("min_body_rate", min_body_rate)]:
            checkSeconds(name, value)
        checkSeconds("connect_timeout", connect_timeout, optional=True)
        for name, value in [("max_retries", max_retries), ("max_fails", max_fails),
                            ("post_buffering", post_buffering), ("limit_post", limit_post)]:
            checkCount(name, value)
        for name, value in [("fallback_on_no_key", fallback_on_no_key),
                            ("silent_errors", silent_errors), ("quiet", quiet)]:
            checkFlag(name, value)
        if post_buffering and post_buffering_dir is not None:
            checkDirectory("post_buffering_dir", post_buffering_dir)
        self.reactor = reactor
        self.health = health
        self.forwarder = forwarder or StaticForwarder(
            nodes, reactor, gracetime, max_fails, algo, health,
        )
        self.fallback = tuple(fallback)
        self.fallbackOnNoKey = fallback_on_no_key
        self.maxRetries = max_retries
        self.timeout = timeout
        self.connectTimeout = timeout if connect_timeout is None else connect_timeout
        self.harakiri = harakiri
        self.postBuffering = post_buffering
        self.postBufferingDir = post_buffering_dir
        self.limitPost = limit_post
        self.silentErrors = silent_errors
        self.quiet = quiet
        self.minBodyRate = min_body_rate
        self.requestSettings = RequestSettings(
            reactor=reactor, forwarder=self.forwarder, fallback=self.fallback,
            fallbackOnNoKey=fallback_on_no_key, maxRetries=max_retries,
            connectTimeout=self.connectTimeout, timeout=timeout, harakiri=harakiri,
            quiet=quiet, minBodyRate=min_body_rate, health=health,
            retryMethods={
                (m.encode() if isinstance(m, str) else m).upper() for m in retry_methods
            },
        )
        self.sessions = set()
        self.draining = False
        self._drainWaiters = []

    def replaceNodes(self, forwarder, fallback, fallback_on_no_key: bool, health=None) -> None:
        """
        Find the nodes of the next requests with C{forwarder} and
        C{fallback}, in one step (SIGHUP's reload, L{txrouter.reload}).  A
        request under way keeps the settings it started with, so it
        finishes on its node; its counts still go to the router's.

        @param health: the L{txrouter.routing.health.NodeHealth} of the new
            nodes, with health checks; L{None} without.
        """
        self.forwarder = forwarder
        self.fallback = tuple(fallback)
        self.fallbackOnNoKey = fallback_on_no_key
        self.health = health
        self.requestSettings = attr.evolve(
            self.requestSettings, forwarder=forwarder, fallback=self.fallback,
            fallbackOnNoKey=fallback_on_no_key, health=health,
        )

    def statsFields(self):
        """
        C{retries} (a txrouter key): the requests that went on to another
        attempt, by cause (L{txrouter.lifecycle.RetryCounts}); C{requests}
        (a txrouter key): the requests begun and in flight, the HTTP
        routers' by status class, and the refusals by event name
        (L{txrouter.lifecycle.RequestCounts}); with health checks,
        C{node_checks} (L{txrouter.routing.health.NodeHealth.statsFields}).
        """
        settings = self.requestSettings
        counts = settings.requestCounts
        statuses = {}
        for (status, node), value in counts.statuses.items():
            name = f"{status}xx" if status else "none"
            statuses[name] = statuses.get(name, 0) + value
        requests = {
            "started": counts.started,
            "in_flight": counts.inFlight,
            "statuses": dict(sorted(statuses.items())),
            "refusals": dict(sorted(counts.refusals.items())),
        }
        fields = [("retries", settings.retryCounts.asDict()), ("requests", requests)]
        if self.health is not None:
            fields += self.health.statsFields()
        return fields

    def drain(self, timeout: float):
        """
        Finish in-flight requests, close idle connections, then stop.

        Listeners must already have stopped accepting.  Connections still
        open after C{timeout} seconds are aborted.

        @return: a Deferred that fires when no session is left.
        """
        self.draining = True
        for session in list(self.sessions):
            session.closeWhenIdle()
        if not self.sessions:
            return succeed(None)
        waiter = Deferred()
        self._drainWaiters.append(waiter)
        calls = [self.reactor.callLater(timeout, self._abortAll)]
        if timeout > DRAIN_SILENT_GRACE:
            calls.append(self.reactor.callLater(DRAIN_SILENT_GRACE, self._closeSilent))

        def cancel(result):
            for call in calls:
                if call.active():
                    call.cancel()
            return result

        waiter.addBoth(cancel)
        return waiter

    def _closeSilent(self) -> None:
        """
        The sessions that have still sent nothing since before the drain
        began are closed: their clients had time to send a request.
        """
        for session in list(self.sessions):
            closeIfSilent = getattr(session, "closeIfSilent", None)
            if closeIfSilent is not None:
                closeIfSilent()

    def _abortAll(self) -> None:
        if self.sessions:
            log.warn(
                "drain_timeout: aborting {count} connections",
                event="drain_timeout", count=len(self.sessions),
            )
        for session in list(self.sessions):
            session.transport.abortConnection()

    def sessionClosed(self, session) -> None:
        """
        Called by a session when its connection is gone.
        """
        self.sessions.discard(session)
        if self.draining and not self.sessions:
            waiters, self._drainWaiters = self._drainWaiters, []
            for waiter in waiters:
                waiter.callback(None)


def checkDirectory(name: str, directory: str) -> None:
    """
    Make sure the spool directory named by option C{name} can hold
    temporary files.

    @raise ValueError: it cannot.
    """
    try:
        checkSpoolDirectory(directory)
    except SpoolError as e:
        raise ValueError(f"{name}: {e}") from None
