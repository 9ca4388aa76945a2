"""
One request from "head parsed" to "last byte relayed", the same in every
router.

A router's front end (the HTTP router's exchange, the FastRouter's
session, ...) parses its wire format and builds the bytes that open a
request to a node; everything else a request goes through is here, in a
L{RequestLifecycle} the front end holds:

  - the node choice, following the request's L{RetryPlan} (uWSGI's retry
    and fallback rules), waiting for forwarders that answer later (user
    code), and connecting with L{txrouter.upstream.connectUpstream};
  - the request body, streamed through a L{txrouter.relay.Relay} (held,
    boundedly, while the node is connected) or spooled whole first
    (post-buffering, de-chunking) and sent from the spool;
  - the body's idle deadline;
  - every way of failing, turned into one refusal with a status and a
    stable event name: no node for the key (404), all nodes dead (503),
    none reachable (502) or in time (504), the forwarder failing (502),
    the body not stored (503), the node closing or timing out before its
    response (502, 504);
  - telling the forwarder what became of the node (connected, failed,
    released, abandoned, bytes moved) and writing the access log line.

Only failed connects are retried, so a request is never half-sent to two
nodes.

The front end provides L{IFrontEnd}: the lifecycle asks it for the head
in a node's protocol, tells it the node is connected, hands it the node's
bytes, and asks it to refuse.
"""

from bisect import bisect_left

import attr
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import Interface, implementer

from txrouter.routing.interfaces import ForwarderTimeout, ITrafficCounting, NoNodeForKey
from txrouter.routing.nodes import UWSGI
from txrouter.routing.retry import RetryPlan
from txrouter.spool import SpoolError
from txrouter.timers import IdleTimer
from txrouter.upstream import IHalfCloseReceiver, connectUpstream

log = Logger(namespace="txrouter.lifecycle")

#: Seconds before a busy node (its listen queue full) is tried again,
#: doubled at each try.
BUSY_BACKOFF = 0.05

#: RFC 9110's idempotent methods: sending one twice does what sending it once
#: does.
IDEMPOTENT_METHODS = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})


class RetryCounts:
    """
    How many times a router's requests went on to another attempt, by
    cause: a failed connect, a node that closed before answering an
    idempotent request, a busy node tried again.  The stats document shows
    them as C{retries}.
    """

    __slots__ = ("connectFailed", "nodeClosed", "nodeBusy")

    def __init__(self) -> None:
        self.connectFailed = self.nodeClosed = self.nodeBusy = 0

    def asDict(self) -> dict:
        return {
            "connect_failed": self.connectFailed,
            "node_closed": self.nodeClosed,
            "node_busy": self.nodeBusy,
        }


class TunnelCounts:
    """
    The tunnels a router opened (after a C{101 Switching Protocols}: a
    websocket, mostly), shown as C{tunnels} in the stats document.

    @ivar open: the tunnels open now.
    @ivar opened: every tunnel opened so far.
    """

    __slots__ = ("open", "opened")

    def __init__(self) -> None:
        self.open = self.opened = 0

    def asDict(self) -> dict:
        return {"open": self.open, "opened": self.opened}


#: The upper bounds, in seconds, of the buckets of the time from a
#: request's start to its node's first response byte (Prometheus' defaults).
FIRST_BYTE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)


class RequestCounts:
    """
    A router's requests, counted by their lifecycles with a few integer
    increments each; the metrics (L{txrouter.stats.metrics}) and the stats
    document read them when asked.

    @ivar started: requests begun (a head parsed, a client accepted).
    @ivar finished: requests over; C{started - finished} are in flight.
    @ivar sentToNodes: bytes written to nodes (heads and bodies).
    @ivar receivedFromNodes: bytes read from nodes.
    @ivar statuses: C{{(status // 100, node name): count}} of the requests
        whose status the router knows (the HTTP routers', as logged); the
        node name is empty when no node was picked.
    @ivar refusals: C{{event: count}} of the refusals the lifecycle made
        (C{no_node_for_key}, C{all_nodes_dead}, C{backend_unreachable}, ...).
    @cvar buckets: L{FIRST_BYTE_BUCKETS}.
    @ivar firstByte: per bucket of L{buckets} (and one more for longer),
        the requests whose node's first byte came that long after
        the request began.
    @ivar firstByteSum: the seconds those requests waited, summed.
    @ivar spooled: request bodies stored in a spool (post-buffering,
        de-chunking).
    @ivar spoolsClosed: spools closed (C{spooled - spoolsClosed} are open).
    """

    __slots__ = (
        "started", "finished", "sentToNodes", "receivedFromNodes", "statuses", "refusals",
        "firstByte", "firstByteSum", "spooled", "spoolsClosed",
    )

    buckets = FIRST_BYTE_BUCKETS

    def __init__(self) -> None:
        self.started = self.finished = self.sentToNodes = self.receivedFromNodes = 0
        self.spooled = self.spoolsClosed = 0
        self.statuses = {}
        self.refusals = {}
        self.firstByte = [0] * (len(FIRST_BYTE_BUCKETS) + 1)
        self.firstByteSum = 0.0

    @property
    def inFlight(self) -> int:
        return self.started - self.finished


@attr.s(frozen=True, slots=True, kw_only=True)
class RequestSettings:
    """
    What a router's options say about the life of each of its requests.

    @ivar reactor: the clock and the reactor nodes are connected with.
    @ivar forwarder: the L{IForwarder} that picks nodes.
    @ivar fallback: nodes tried in order after a failed connect.
    @ivar fallbackOnNoKey: a key without nodes goes to the fallback too.
    @ivar maxRetries: connect retries per request.
    @ivar connectTimeout: seconds a connect may take.
    @ivar timeout: seconds a node connection may stay idle.
    @ivar harakiri: seconds a whole exchange may take (0: no limit).
    @ivar quiet: failed connects are not logged.
    @ivar retryMethods: the request methods (bytes) a request may be sent
        again to another node with, when its node closed before any byte
        of a response (the idempotent methods of RFC 9110 by default).
    @ivar minBodyRate: bytes per second a request body must average once
        its first C{bodyTimeout} seconds are over (0: no minimum).
    @ivar accessLog: an L{txrouter.accesslog.AccessLog}, or L{None}.
    @ivar retryCounts: the router's L{RetryCounts}, counted by its requests.
    @ivar tunnelCounts: the router's L{TunnelCounts}.
    @ivar requestCounts: the router's L{RequestCounts}.
    @ivar nodePool: a L{txrouter.nodepool.NodeConnectionPool} keeping HTTP
        nodes' connections between requests, or L{None}.
    @ivar health: the L{txrouter.routing.health.NodeHealth} of the checks
        (C{--check-interval}), or L{None}.
    @ivar nodeHalfClose: a node's FIN does not end its connection: the
        front end (an L{IHalfClosingFrontEnd}) hears of it, and of the
        half-close made towards the node (a relay of byte streams).
    """

    reactor = attr.ib()
    forwarder = attr.ib()
    fallback: tuple = attr.ib(converter=tuple, default=())
    fallbackOnNoKey: bool = attr.ib(default=False)
    maxRetries: int = attr.ib(default=3)
    connectTimeout: float = attr.ib(default=60.0)
    timeout: float = attr.ib(default=60.0)
    harakiri: float = attr.ib(default=0)
    quiet: bool = attr.ib(default=False)
    minBodyRate: float = attr.ib(default=0)
    retryMethods: frozenset = attr.ib(converter=frozenset, default=IDEMPOTENT_METHODS)
    accessLog = attr.ib(default=None)
    retryCounts: RetryCounts = attr.ib(factory=RetryCounts, eq=False)
    tunnelCounts: TunnelCounts = attr.ib(factory=TunnelCounts, eq=False)
    requestCounts: RequestCounts = attr.ib(factory=RequestCounts, eq=False)
    nodePool = attr.ib(default=None, eq=False)
    health = attr.ib(default=None, eq=False)
    nodeHalfClose: bool = attr.ib(default=False)


class IFrontEnd(Interface):
    """
    What the lifecycle of a request asks of the front end that parsed it.
    """

    def headFor(node):
        """
        The bytes that open the request to C{node}, in its protocol.

        @return: the bytes, or L{None} after refusing a request that node
            cannot take (no other node is tried then).
        """

    def nodeConnected(upstream):
        """
        C{upstream} has the head; the response is awaited.

        @return: whether client bytes may still follow for the node (they
            then stream with back-pressure).
        """

    def responseReceived(data):
        """
        Bytes from the node.  The front end sets the lifecycle's
        C{responseStarted} once it has relayed anything to the client.
        """

    def responseEnded(reason, timedOut):
        """
        The node's connection ended after the response started.

        @param reason: L{None} for a clean close by the node, else text.
        @param timedOut: the idle timeout or the deadline passed.
        """

    def refuse(status, event, detail):
        """
        End the request with an error in the front end's wire format, and
        log C{event}; the lifecycle has been released or is released by it.
        """

    def abort(event):
        """
        Cut the request and both connections: what was sent to the client
        must not look complete.
        """


class IHalfClosingFrontEnd(IFrontEnd):
    """
    A front end that relays byte streams, each direction closed on its own
    (L{RequestSettings.nodeHalfClose}).
    """

    def nodeReadConnectionLost():
        """
        The node half-closed (its FIN): it will send nothing more.
        """

    def nodeWriteConnectionLost():
        """
        The half-close made towards the node is done.
        """


@implementer(IHalfCloseReceiver)
class RequestLifecycle:
    """
    The life of one request through one router.

    @ivar relay: the L{txrouter.relay.Relay} the request's bytes go through.
    @ivar node: the node being connected or serving, once picked.
    @ivar finished: the request is over (answered, refused, or aborted).
    @ivar responseStarted: the front end relayed part of a response.
    @ivar method: the request's method, if the front end knows it: a
        request whose method is one of the settings' C{retryMethods} is
        sent to another node when its node closes before any byte of a
        response, if all it was sent can be sent again (an empty or
        spooled body), as nginx does.
    @ivar keepNodeConnection: set by the front end when the node's
        connection may carry another request (its response was read to its
        end): L{release} parks it in the settings' C{nodePool}.
    @ivar event: the event name of the refusal the lifecycle made, if it
        made one (for the access log).
    """

    finished = False
    responseStarted = False
    node = None
    _plan = None
    _pendingPick = None
    _connector = None
    _nodeInUse = False
    _upstream = None
    # The refusal for when the retry plan runs out: the last failure's.
    _lastFailure = (503, "all_nodes_dead", "every backend node is unavailable")
    _spool = None
    _bodyTimer = None
    _bodyDue = None
    _bodyReceived = 0
    _headLength = 0
    _busyRetries = 0
    _busyCall = None
    _tunnelOpen = False
    method = None
    keepNodeConnection = False
    _upstreamWasKept = False
    event = None

    def __init__(self, settings: RequestSettings, frontEnd, relay, key: bytes, client) -> None:
        """
        @param frontEnd: the L{IFrontEnd} of the request.
        @param key: what the forwarder routes the request by.
        @param client: the client's address text (balancers hash it), or
            L{None}.
        """
        self.settings = settings
        self.frontEnd = frontEnd
        self.relay = relay
        self.key = key
        self.client = client
        self._began = settings.reactor.seconds()
        settings.requestCounts.started += 1
        # The node's first bytes are timed, then the next ones go straight
        # to the front end: one call less per chunk than a method that
        # passes them on (released in release()).
        self.upstreamDataReceived = self._firstBytes

    def _firstBytes(self, data: bytes) -> None:
        """
        The node's first bytes: count the time they took in the
        histogram, and hand these and the next ones to the front end.
        """
        settings = self.settings
        counts = settings.requestCounts
        waited = settings.reactor.seconds() - self._began
        counts.firstByte[bisect_left(FIRST_BYTE_BUCKETS, waited)] += 1
        counts.firstByteSum += waited
        self.upstreamDataReceived = received = self.frontEnd.responseReceived
        received(data)

    def _refuse(self, status: int, event: str, detail: str) -> None:
        """
        Have the front end refuse the request, counting the refusal and
        keeping its event for the access log.
        """
        self.event = event
        refusals = self.settings.requestCounts.refusals
        refusals[event] = refusals.get(event, 0) + 1
        self.frontEnd.refuse(status, event, detail)

    # The body

    def spoolBody(self, spool) -> None:
        """
        The body goes into C{spool} (a L{txrouter.spool.BodySpool}) and is
        sent from it once a node is connected.
        """
        self._spool = spool
        self.settings.requestCounts.spooled += 1

    def spooled(self, pieces, complete: bool) -> bool:
        """
        Store body bytes in the spool.

        @param pieces: byte strings, in order.
        @param complete: they end the body.
        @return: whether they were stored; if not, the request was refused.
        """
        spool = self._spool
        try:
            for piece in pieces:
                spool.write(piece)
            if complete:
                spool.finish()
        except SpoolError as e:
            self.spoolFailed(e)
            return False
        return True

    def spoolFailed(self, error: SpoolError) -> None:
        """
        The body could not be stored (or read back): 503, and an error line
        for the operator, who has a disk or a directory to fix; the client
        is not told where.
        """
        if self.finished:
            return
        log.error(
            "spool_failed: {client}: the request body could not be stored: {error}",
            event="spool_failed", client=self.client or "unix", error=str(error),
        )
        self._refuse(503, "spool_failed", "the request body could not be stored")

    def _spoolSent(self, ignored) -> None:
        self.relay.spoolSent()

    def _spoolSendFailed(self, failure) -> None:
        # Reading back failed, or the transfer stopped because the request
        # ended (nothing more to do then).
        if failure.check(SpoolError):
            self.spoolFailed(failure.value)

    def watchBody(self, timeout: float, rated: bool = True) -> None:
        """
        Start (or restart) the body's deadlines: C{timeout} seconds
        without client bytes end the request (408 while no response has
        started, a cut connection after); so does, if C{rated}, a body
        arriving slower than the settings' C{minBodyRate} once its first
        C{timeout} seconds are over: by then it must have come at C{(now -
        start - timeout) * minBodyRate} bytes at least.  A drip-fed body
        (a byte every few seconds) would otherwise hold the connection,
        and a node, for ever.
        """
        if self._bodyTimer is not None:
            self._bodyTimer.cancel()
        reactor = self.settings.reactor
        self._bodyTimer = IdleTimer(reactor, timeout, self._bodyTimedOut)
        self._bodyDue = None
        if rated and self.settings.minBodyRate:
            self._bodyDue = reactor.seconds() + timeout
            self._bodyReceived = 0

    def tunnel(self, idleTimeout: float) -> None:
        """
        The node answered C{101}: the exchange is now a tunnel carrying the
        application's bytes both ways.  It ends once neither side has sent
        a byte for C{idleTimeout} seconds (one timer for both directions: a
        server that pushes to a silent client keeps it open), never at the
        harakiri deadline, and never for a slow body.
        """
        if self._bodyTimer is not None:
            self._bodyTimer.cancel()
            self._bodyTimer = None
        self._bodyDue = None
        self._upstream.tunnel(idleTimeout)
        counts = self.settings.tunnelCounts
        counts.open += 1
        counts.opened += 1
        self._tunnelOpen = True

    def bodyActivity(self, size: int) -> None:
        """
        C{size} client body bytes came.
        """
        now = self._bodyTimer.touch()
        due = self._bodyDue
        if due is not None:
            self._bodyReceived = received = self._bodyReceived + size
            rate = self.settings.minBodyRate
            if now > due + received / rate:
                self._bodyDue = None
                self._bodyTooSlow(received, rate)

    def bodyComplete(self) -> None:
        """
        The whole body came: stop its deadline and its streaming.
        """
        if self._bodyTimer is not None:
            self._bodyTimer.cancel()
        self.relay.clientDone()

    def _bodyTooSlow(self, received: int, rate: float) -> None:
        self._bodyFailed(
            "body_too_slow", f"request body slower than {rate:g} bytes/s ({received} bytes so far)",
        )

    def _bodyTimedOut(self) -> None:
        self._bodyFailed("body_timeout", "request body not received in time")

    def _bodyFailed(self, event: str, detail: str) -> None:
        """
        A body deadline passed: 408, or a cut connection once the response
        has started.
        """
        if self.responseStarted:
            self.frontEnd.abort(event)
        else:
            self._refuse(408, event, detail)

    # Choosing and connecting a node

    def dispatch(self) -> None:
        """
        Pick the first node and connect to it.
        """
        settings = self.settings
        self._plan = RetryPlan(
            settings.forwarder, self.key, settings.maxRetries, settings.fallback,
            self.client, settings.fallbackOnNoKey, settings.health,
        )
        try:
            picked = self._plan.first()
        except Exception as error:
            self._pickFailed(error)
            return
        self._picked(picked)

    def _picked(self, node) -> None:
        if isinstance(node, Deferred):
            self._pendingPick = node
            node.addCallbacks(self._pickedLater, self._pickFailedLater)
            return
        if node is None:
            self._refuse(*self._lastFailure)
            return
        self._connect(node)

    def _pickedLater(self, node) -> None:
        self._pendingPick = None
        if not self.finished:
            self._picked(node)

    def _pickFailedLater(self, failure) -> None:
        self._pendingPick = None
        if not self.finished:
            self._pickFailed(failure.value, failure)

    def _pickFailed(self, error: BaseException, failure=None) -> None:
        """
        Refuse the request because finding a node failed with C{error}.

        @param failure: the L{Failure} of C{error} when it came from a
            Deferred (outside any C{except} block), for the traceback.
        """
        # Shown as the client sent it (a key is bytes; its repr would say b'...').
        key = self.key[:64].decode("latin-1")
        if isinstance(error, NoNodeForKey):
            self._refuse(404, "no_node_for_key", f"no node serves {key!r}")
        elif isinstance(error, ForwarderTimeout):
            self._refuse(504, "forwarder_timeout", f"finding a node for {key!r} took too long")
        else:
            log.failure(
                "forwarder_failed: finding a node for {key!r} raised",
                failure, event="forwarder_failed", key=key,
            )
            self._refuse(502, "forwarder_failed", f"finding a node for {key!r} failed")

    def _connect(self, node, usePool: bool = True) -> None:
        settings = self.settings
        head = self.frontEnd.headFor(node)
        if head is None:
            # Refused: the request cannot go to that node.
            settings.forwarder.abandoned(self.key, node)
            return
        self.node = node
        self._headLength = len(head)
        # Nothing is reported back before connectUpstream returns.
        self._connector = connectUpstream(
            settings.reactor, node, self, head,
            settings.connectTimeout, settings.timeout, settings.harakiri,
            settings.nodePool if usePool else None, settings.nodeHalfClose,
        )

    # IHalfCloseReceiver (an IUpstreamReceiver)

    def upstreamConnected(self, upstream) -> None:
        self._connector = None
        self._nodeInUse = True
        self._upstream = upstream
        self.settings.forwarder.connected(self.key, self.node)
        streaming = self.frontEnd.nodeConnected(upstream)
        if self.finished:
            return
        spool = self._spool
        if spool is None:
            self.relay.attach(upstream, streaming)
        else:
            self.relay.attach(upstream, False, spooled=True)
            spool.sendTo(upstream).addCallbacks(self._spoolSent, self._spoolSendFailed)

    def upstreamConnectFailed(self, reason: str, timedOut: bool, busy: bool = False) -> None:
        self._connector = None
        if self.finished:
            return
        settings = self.settings
        attempt = self._plan.retries + self._busyRetries + 1
        if busy:
            self._nodeBusy(attempt)
            return
        if not settings.quiet:
            log.warn(
                "backend_unreachable: cannot connect to {node} (attempt {attempt} of"
                " {attempts}): {reason}",
                event="backend_unreachable", node=self.node.name,
                attempt=attempt, attempts=settings.maxRetries + 1, reason=reason,
            )
        if timedOut:
            self._lastFailure = (504, "backend_timeout", "no backend answered in time")
        else:
            self._lastFailure = (502, "backend_unreachable", "no backend could be reached")
        self._tryNextNode("connectFailed")

    def _tryNextNode(self, cause: str) -> None:
        """
        The node failed: go on with the retry plan (the forwarder hears of
        the failure), counting a retry under C{cause} in the settings'
        L{RetryCounts}; refuse with L{_lastFailure} when the plan is over.
        """
        try:
            node = self._plan.afterFailure(self.node)
        except Exception as error:
            self._pickFailed(error)
            return
        if node is not None:
            counts = self.settings.retryCounts
            setattr(counts, cause, getattr(counts, cause) + 1)
        self._picked(node)

    def _nodeBusy(self, attempt: int) -> None:
        """
        The node is alive but its listen queue is full: try it again after
        a short backoff, up to C{maxRetries} times, then answer 503
        C{node_busy}.  A busy node is not a failed one: the forwarder does
        not put it in quarantine, so the next requests still go to it.
        """
        settings = self.settings
        node = self.node
        if self._busyRetries >= settings.maxRetries:
            settings.forwarder.abandoned(self.key, node)
            log.warn(
                "node_busy: {node}'s listen queue stayed full ({attempt} attempts)",
                event="node_busy", node=node.name, attempt=attempt,
            )
            self._refuse(503, "node_busy", "every backend worker is busy")
            return
        delay = BUSY_BACKOFF * 2 ** self._busyRetries
        self._busyRetries += 1
        settings.retryCounts.nodeBusy += 1
        if not settings.quiet:
            log.info(
                "node_busy: {node}'s listen queue is full (EAGAIN), attempt {attempt} of"
                " {attempts}; trying it again in {delay} s",
                event="node_busy", node=node.name, attempt=attempt,
                attempts=settings.maxRetries + 1, delay=delay,
            )
        self._busyCall = settings.reactor.callLater(delay, self._retryBusy)

    def _retryBusy(self) -> None:
        self._busyCall = None
        self._connect(self.node)

    def upstreamDataReceived(self, data: bytes) -> None:
        """
        Bytes from the node, for the front end (an instance attribute
        replaces this method while the request runs).
        """

    def upstreamReadConnectionLost(self) -> None:
        if not self.finished:
            self.frontEnd.nodeReadConnectionLost()

    def upstreamWriteConnectionLost(self) -> None:
        if not self.finished:
            self.frontEnd.nodeWriteConnectionLost()

    def _sentUwsgi(self) -> bool:
        """
        Whether the node was sent a uwsgi packet: not by a relay of byte
        streams (the raw and SSL routers), whose nodes speak anything.
        """
        return self.node.protocol == UWSGI and not self.settings.nodeHalfClose

    def upstreamLost(self, reason, timedOut: bool) -> None:
        upstream = self._upstream
        self._upstreamWasKept = upstream is not None and upstream.reused
        silent = upstream is not None and not upstream.received
        self._upstream = None
        if self.finished:
            return
        if self.responseStarted:
            self.frontEnd.responseEnded(reason, timedOut)
            return
        if timedOut:
            node = self.node
            if silent and self._sentUwsgi():
                # A plain HTTP server sent a uwsgi packet waits for a line
                # end that never comes: a usual reason for this silence.
                log.warn(
                    "backend_timeout: {node} sent nothing back to a uwsgi request; if it"
                    " speaks HTTP rather than uwsgi, name it http://{node}",
                    event="backend_timeout", node=node.name,
                )
            self._refuse(504, "backend_timeout", "the backend did not answer in time")
            return
        retried = self._replayable()
        if retried and self._upstreamWasKept:
            # A kept connection the node closed as this request took it:
            # not the node's failure, so a fresh connection to it.
            self._upstreamWasKept = False
            log.info(
                "node_keepalive_closed: {node} closed a kept connection; connecting again",
                event="node_keepalive_closed", node=self.node.name,
            )
            node = self.node
            self._releaseNode()
            self._connect(node, usePool=False)
            return
        hint = ""
        if silent and self._sentUwsgi():
            # uWSGI's --http-socket closes on a uwsgi packet.
            hint = f" (if it speaks HTTP, as uWSGI's --http-socket does, name it http://{self.node.name})"
        log.warn(
            "backend_closed: {node} closed without a response: {reason}{hint}",
            event="backend_closed", node=self.node.name,
            reason=reason or "connection closed", retried=retried, hint=hint,
        )
        self._lastFailure = (502, "backend_closed", "the backend closed without a response")
        if retried:
            # Sent again elsewhere: this node's connection is over.
            self._releaseNode()
            self._tryNextNode("nodeClosed")
        else:
            self._refuse(*self._lastFailure)

    def _replayable(self) -> bool:
        """
        Whether the request may go to another node now that its node
        closed: an idempotent method, no byte of a response read, and
        nothing sent that cannot be sent again (only the head, or a
        spooled body).
        """
        upstream = self.relay.upstream
        return bool(
            self.method in self.settings.retryMethods
            and upstream is not None
            and not upstream.received
            and (self._spool is not None or upstream.sent == self._headLength)
        )

    # Ending

    def release(self) -> None:
        """
        The request is over: tell the forwarder, stop a pending pick or
        connect, the body deadline and the relay, close the node connection
        and the spool.  Safe to call more than once.
        """
        if self.finished:
            return
        self.finished = True
        forwarder = self.settings.forwarder
        if self._tunnelOpen:
            self._tunnelOpen = False
            self.settings.tunnelCounts.open -= 1
        self._releaseNode()
        pick, self._pendingPick = self._pendingPick, None
        if pick is not None:
            # User code still answering: tell it nobody is waiting.
            pick.cancel()
        busyCall, self._busyCall = self._busyCall, None
        if busyCall is not None:
            busyCall.cancel()
            forwarder.abandoned(self.key, self.node)
        connector, self._connector = self._connector, None
        if connector is not None:
            factory = getattr(connector, "factory", None)
            if factory is not None:
                factory.receiver = None
            connector.stopConnecting()
            forwarder.abandoned(self.key, self.node)
        if self._bodyTimer is not None:
            self._bodyTimer.cancel()
        spool = self._spool
        if spool is not None:
            counts = self.settings.requestCounts
            counts.spoolsClosed += 1
            spool.close()
        self.settings.requestCounts.finished += 1
        # The front end holds this lifecycle: forgetting it spares the
        # garbage collector a cycle per request.
        self.frontEnd = None
        del self.upstreamDataReceived
        self._upstream = None

    def _releaseNode(self) -> None:
        """
        Tell the forwarder the node connection is over, with its byte
        counts, and close it.
        """
        # Not attached to the relay yet if the front end ended the request
        # as the node connected.
        upstream = self.relay.detach() or self._upstream
        if self._nodeInUse:
            self._nodeInUse = False
            forwarder = self.settings.forwarder
            forwarder.released(self.key, self.node)
            counts = self.settings.requestCounts
            counts.sentToNodes += upstream.sent
            counts.receivedFromNodes += upstream.received
            if ITrafficCounting.providedBy(forwarder):
                forwarder.transferred(self.key, self.node, upstream.sent, upstream.received)
        if upstream is not None:
            pool = self.settings.nodePool
            if not (self.keepNodeConnection and pool is not None and pool.park(upstream)):
                upstream.detach()

    def abort(self) -> None:
        """
        Release the request, cutting the node connection.
        """
        upstream = self._upstream
        self.release()
        if upstream is not None and upstream.transport is not None:
            upstream.transport.abortConnection()

    def logAccess(self, request, status: int, size: int, event: "str | None" = None) -> None:
        """
        Count C{request}'s status and write its access log line (a
        L{txrouter.wire.http1.RequestHead}), if there is a log.

        @param event: the event name of the refusal that ended it, if the
            front end refused it (the lifecycle knows its own).
        """
        settings = self.settings
        node = self.node
        key = (status // 100, node.name if node is not None else "")
        statuses = settings.requestCounts.statuses
        statuses[key] = statuses.get(key, 0) + 1
        accessLog = settings.accessLog
        if accessLog is None:
            return
        client = (self.client or "").encode()
        logRequest = getattr(accessLog, "logRequest", None)
        if logRequest is None:
            # An access log of the first API: log(remoteAddr, head, status, size).
            accessLog.log(client, request, status, size)
        else:
            logRequest(
                client, request, status, size, event or self.event, node,
                settings.reactor.seconds() - self._began,
            )
