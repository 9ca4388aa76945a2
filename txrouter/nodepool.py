"""
Keep-alive connections to HTTP nodes, reused across client requests
(C{--node-keepalive}, nginx's C{keepalive} in an C{upstream} block).

A uwsgi node closes its connection after each response, but an HTTP node
(gunicorn, a C{websockets} server, another proxy) can keep it open.  When an
exchange with one ends cleanly — the whole request sent, a response framed
by its length or chunks read to its end, no C{Connection: close} from the
node, nothing past its end — the lifecycle parks the node connection here
instead of closing it, and the next request for that node takes it instead
of connecting.

A parked connection belongs to no request: its receiver is a L{_Parked}
that closes it on any byte (a node must not speak unasked) and forgets it
when the node closes it.  At most C{perNode}
connections are kept per node, each for C{idleTimeout} seconds; the most
recently parked is reused first, so that the others age out when traffic
drops.

A node may close a parked connection just as a request takes it; the
request then sees its node close before answering, which the retry rule
covers for idempotent requests (C{docs/routing-options.md}), as in nginx.
"""

from txrouter.timers import IdleTimer

__all__ = ["NodeConnectionPool"]


class NodeConnectionPool:
    """
    The idle connections to HTTP nodes of one router.

    @ivar reused: how many requests went over a parked connection.
    """

    def __init__(self, reactor, perNode: int = 16, idleTimeout: float = 4.0) -> None:
        """
        @param perNode: most idle connections kept per node.
        @param idleTimeout: seconds an idle connection is kept.
        """
        self.reactor = reactor
        self.perNode = perNode
        self.idleTimeout = idleTimeout
        self.reused = 0
        self._idle = {}

    def idleCount(self) -> int:
        """
        The connections parked now.
        """
        return sum(len(parked) for parked in self._idle.values())

    def park(self, upstream) -> bool:
        """
        Keep C{upstream}'s connection for a later request to its node.

        @param upstream: an L{txrouter.upstream.Upstream} whose exchange
            ended cleanly and whose receiver is gone.
        @return: whether it was parked; if not, the caller closes it.
        """
        transport = upstream.transport
        if transport is None or transport.disconnecting or getattr(transport, "disconnected", False):
            return False
        parked = self._idle.setdefault(upstream.node, [])
        if len(parked) >= self.perNode:
            return False
        parked.append(_Parked(self, upstream))
        return True

    def take(self, node):
        """
        A parked connection to C{node}, now out of the pool, or L{None}.

        @return: an L{txrouter.upstream.Upstream} or L{None}.
        """
        parked = self._idle.get(node)
        if not parked:
            return None
        keeper = parked.pop()
        self.reused += 1
        return keeper.release()

    def forget(self, keeper) -> None:
        """
        C{keeper}'s connection is closed or closing: drop it.
        """
        parked = self._idle.get(keeper.node)
        if parked is not None and keeper in parked:
            parked.remove(keeper)
            if not parked:
                del self._idle[keeper.node]

    def closeAll(self) -> None:
        """
        Close every parked connection (the router is stopping).
        """
        idle, self._idle = self._idle, {}
        for parked in idle.values():
            for keeper in parked:
                keeper.close()


class _Parked:
    """
    The receiver of a parked connection: it stands in for a request while
    none uses the connection (an L{txrouter.upstream.IUpstreamReceiver}).
    """

    def __init__(self, pool: NodeConnectionPool, upstream) -> None:
        self.pool = pool
        self.upstream = upstream
        self.node = upstream.node
        upstream.park(self, IdleTimer(pool.reactor, pool.idleTimeout, self.close))

    def release(self):
        """
        Give the connection back for a new request.
        """
        upstream, self.upstream = self.upstream, None
        upstream.unpark()
        return upstream

    def upstreamDataReceived(self, data: bytes) -> None:
        # Nothing was asked: the node is confused, or the connection is.
        self.close()

    def upstreamLost(self, reason, timedOut: bool) -> None:
        self.pool.forget(self)
        self.upstream = None

    def close(self) -> None:
        """
        Close the connection and forget it.
        """
        self.pool.forget(self)
        upstream, self.upstream = self.upstream, None
        if upstream is not None:
            upstream.unpark()
            if upstream.transport is not None:
                upstream.transport.abortConnection()
