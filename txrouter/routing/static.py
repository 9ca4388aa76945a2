"""
The static forwarder (C{--to}) and the retry plan every request follows.

This is uWSGI's corerouter behaviour (reference section 3.5):

 - one round-robin cursor over the C{--to} nodes, shared by every request;
 - a node that failed to connect is skipped until C{gracetime} seconds have
   passed since its failure; when every node is quarantined the cursor still
   advances and the request fails;
 - after a failed connect the request is retried up to C{max_retries} times;
   with C{--fallback} nodes the retries walk the fallback list in order (the
   other static nodes are not tried again), without them the forwarder is
   asked again.

Time comes from an injected C{IReactorTime}.
"""

from zope.interface import Interface, implementer


class NoNodeForKey(LookupError):
    """
    The key maps to no node at all (as opposed to nodes that are all down).
    """


class IForwarder(Interface):
    """
    Maps a routing key to a node, and learns from outcomes.
    """

    def pick(key):
        """
        @param key: the routing key (bytes), e.g. the Host header.
        @return: a L{txrouter.routing.nodes.Node}, or L{None} when the
            key's nodes are all unavailable now.
        @raise NoNodeForKey: the key maps to no node.
        """

    def failed(node):
        """
        C{node} could not be connected to.
        """

    def connected(node):
        """
        C{node} accepted a connection.
        """


@implementer(IForwarder)
class StaticForwarder:
    """
    Round robin over a fixed list with dead-node quarantine.
    """

    def __init__(self, nodes, clock, gracetime: float = 30.0) -> None:
        self.nodes = list(nodes)
        self.clock = clock
        self.gracetime = gracetime
        self._cursor = 0
        self._deadSince = {}

    def pick(self, key=None):
        count = len(self.nodes)
        if not count:
            raise NoNodeForKey(key)
        deadSince = self._deadSince
        for _ in range(count):
            node = self.nodes[self._cursor]
            self._cursor = (self._cursor + 1) % count
            if not deadSince:
                return node
            since = deadSince.get(node)
            if since is None or since + self.gracetime <= self.clock.seconds():
                return node
        return None

    def failed(self, node) -> None:
        self._deadSince[node] = self.clock.seconds()

    def connected(self, node) -> None:
        if self._deadSince:
            self._deadSince.pop(node, None)

    def isDead(self, node) -> bool:
        """
        Whether C{node} is in quarantine now.
        """
        since = self._deadSince.get(node)
        return since is not None and since + self.gracetime > self.clock.seconds()


class RetryPlan:
    """
    The nodes one request may try, in order.

    Create one per request; ask L{first}, then L{afterFailure} each time a
    connect fails.  Only connect failures are retried: once a byte of the
    request has reached a node, the request belongs to that node.
    """

    def __init__(self, forwarder, key, maxRetries: int = 3, fallback=()) -> None:
        self.forwarder = forwarder
        self.key = key
        self.maxRetries = maxRetries
        self.fallback = fallback
        self.retries = 0

    def first(self):
        """
        @return: the first node to try, or L{None} if none can serve now.
        """
        return self.forwarder.pick(self.key)

    def afterFailure(self, node):
        """
        Record that C{node} failed to connect.

        @return: the next node to try, or L{None} to give up.
        """
        self.forwarder.failed(node)
        if self.retries >= self.maxRetries:
            return None
        self.retries += 1
        if self.fallback:
            if self.retries <= len(self.fallback):
                return self.fallback[self.retries - 1]
            return None
        return self.forwarder.pick(self.key)
