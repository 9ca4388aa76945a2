"""
Choosing a node and connecting to it, the same way in every router.

L{Dispatching} is mixed into the object that carries one request (the HTTP
router's exchange, the FastRouter's session).  It follows the request's
L{RetryPlan}, waits for forwarders that answer later (user code), opens the
upstream with the head the router builds for the chosen node, and turns
every way of failing into one refusal with a stable event name.
"""

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from txrouter.routing.interfaces import ForwarderTimeout, ITrafficCounting, NoNodeForKey
from txrouter.routing.retry import RetryPlan
from txrouter.upstream import connectUpstream

log = Logger(namespace="txrouter.dispatch")


class Dispatching:
    """
    Node choice and connection for one request.

    The class it is mixed into provides C{router} (with C{reactor},
    C{forwarder}, C{fallback}, C{fallbackOnNoKey}, C{maxRetries}, C{quiet},
    C{connectTimeout}, C{timeout}, C{harakiri}), C{finished},
    C{_refuse(status, event, detail)}, C{_headFor(node)} (the bytes that
    open the request to C{node}, or L{None} after refusing a request that
    cannot go there) and
    L{IUpstreamReceiver.upstreamConnected}, which must call
    L{_nodeConnected} with the upstream.  L{_releaseNode} is called once the request is over.
    """

    _plan = None
    _pendingPick = None
    _node = None
    _connector = None
    _nodeInUse = False
    _nodeUpstream = None
    _lastConnectTimedOut = None

    def _dispatch(self, key: bytes, client) -> None:
        """
        Pick the first node for C{key} and connect to it.
        """
        router = self.router
        self._plan = RetryPlan(
            router.forwarder, key, router.maxRetries, router.fallback,
            client, router.fallbackOnNoKey,
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
            timedOut = self._lastConnectTimedOut
            if timedOut is None:
                self._refuse(503, "all_nodes_dead", "every backend node is unavailable")
            elif timedOut:
                self._refuse(504, "backend_timeout", "no backend answered in time")
            else:
                self._refuse(502, "backend_unreachable", "no backend could be reached")
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
        key = self._plan.key
        if isinstance(error, NoNodeForKey):
            self._refuse(404, "no_node_for_key", f"no node serves {key[:64]!r}")
        elif isinstance(error, ForwarderTimeout):
            self._refuse(504, "forwarder_timeout", f"finding a node for {key[:64]!r} took too long")
        else:
            log.failure(
                "forwarder_failed: finding a node for {key!r} raised",
                failure, event="forwarder_failed", key=key[:64],
            )
            self._refuse(502, "forwarder_failed", f"finding a node for {key[:64]!r} failed")

    def _connect(self, node) -> None:
        router = self.router
        head = self._headFor(node)
        if head is None:
            # The request was refused: it cannot go to that node.
            router.forwarder.abandoned(self._plan.key, node)
            return
        self._node = node
        self._connector = connectUpstream(
            router.reactor, node, self, head,
            router.connectTimeout, router.timeout, router.harakiri,
        )

    def upstreamConnectFailed(self, reason: str, timedOut: bool) -> None:
        self._connector = None
        if self.finished:
            return
        if not self.router.quiet:
            log.warn(
                "backend_unreachable: cannot connect to {node} ({retries} retries): {reason}",
                event="backend_unreachable", node=self._node.name,
                retries=self._plan.retries, reason=reason,
            )
        self._lastConnectTimedOut = timedOut
        try:
            node = self._plan.afterFailure(self._node)
        except Exception as error:
            self._pickFailed(error)
            return
        self._picked(node)

    def _nodeConnected(self, upstream) -> None:
        self._connector = None
        self._nodeInUse = True
        self._nodeUpstream = upstream
        self.router.forwarder.connected(self._plan.key, self._node)

    def _releaseNode(self) -> None:
        """
        The request is over: tell the forwarder, stop a pending pick or
        connect.
        """
        if self._nodeInUse:
            self._nodeInUse = False
            forwarder = self.router.forwarder
            forwarder.released(self._plan.key, self._node)
            if ITrafficCounting.providedBy(forwarder):
                upstream = self._nodeUpstream
                forwarder.transferred(self._plan.key, self._node, upstream.sent, upstream.received)
            self._nodeUpstream = None
        pick, self._pendingPick = self._pendingPick, None
        if pick is not None:
            # User code still answering: tell it nobody is waiting.
            pick.cancel()
        connector, self._connector = self._connector, None
        if connector is not None:
            connector.factory.receiver = None
            connector.stopConnecting()
            self.router.forwarder.abandoned(self._plan.key, self._node)
