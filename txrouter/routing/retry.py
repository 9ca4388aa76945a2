"""
The retry plan every request follows, whatever its forwarder.

This is uWSGI's corerouter behaviour (reference section 3.5): after a failed
connect the request is retried up to C{maxRetries} times; with fallback
nodes the retries walk the fallback list in order (the forwarder's other
nodes are not tried again), without them the forwarder is asked again.
With C{fallbackOnNoKey}, a key that maps to nothing goes to the fallback
nodes as well (uWSGI's C{--fastrouter-fallback-on-no-key}).

A request never tries the same node twice (nginx's rule): when the
forwarder answers with a node the request already tried, which it does
for a lone node it keeps in rotation, the plan is over.

With health checks (C{--check-interval}), a fallback node the checks found
down is passed over, and a request for which the forwarder has no node in
rotation goes to the fallback nodes (HAProxy's backup servers); without
them, uWSGI's rule stays: no node, no fallback.
"""

from twisted.internet.defer import Deferred

from txrouter.routing.interfaces import NoNodeForKey


class RetryPlan:
    """
    The nodes one request may try, in order.

    Create one per request; ask L{first}, then L{afterFailure} each time a
    connect fails.  Only connect failures are retried: once a byte of the
    request has reached a node, the request belongs to that node.

    Both may answer with a Deferred when the forwarder does.
    """

    def __init__(
        self, forwarder, key, maxRetries: int = 3, fallback=(),
        client=None, fallbackOnNoKey: bool = False, health=None,
    ) -> None:
        """
        @param health: the L{txrouter.routing.health.NodeHealth} of the
            checks, or L{None} without checks.
        """
        self.forwarder = forwarder
        self.key = key
        self.client = client
        self.maxRetries = maxRetries
        self.fallback = fallback
        self.fallbackOnNoKey = fallbackOnNoKey
        self.health = health
        self.retries = 0
        self._tried = None
        self._fallbackIndex = 0

    def first(self):
        """
        @return: the first node to try, L{None} if none can serve now, or a
            Deferred of either.
        @raise NoNodeForKey: the key maps to nothing and there is no
            fallback for that.
        """
        backup = self.health is not None and bool(self.fallback)
        if not (self.fallbackOnNoKey and self.fallback):
            picked = self.forwarder.pick(self.key, self.client)
        else:
            try:
                picked = self.forwarder.pick(self.key, self.client)
            except NoNodeForKey:
                return self._nextFallback()
            if isinstance(picked, Deferred):
                picked.addErrback(lambda f: (f.trap(NoNodeForKey), self._nextFallback())[1])
        if not backup:
            return picked
        if isinstance(picked, Deferred):
            return picked.addCallback(self._orFallback)
        return self._orFallback(picked)

    def _orFallback(self, node):
        """
        C{node}, or the first fallback node in rotation when the forwarder
        had none.
        """
        return self._nextFallback() if node is None else node

    def afterFailure(self, node):
        """
        Record that C{node} failed to connect.

        @return: the next node to try, L{None} to give up, or a Deferred.
        """
        self.forwarder.failed(self.key, node)
        if self.retries >= self.maxRetries:
            return None
        if self.fallback:
            return self._nextFallback()
        self.retries += 1
        tried = self._tried
        if tried is None:
            self._tried = tried = set()
        tried.add(node)
        picked = self.forwarder.pick(self.key, self.client)
        if isinstance(picked, Deferred):
            return picked.addCallback(self._untried)
        return self._untried(picked)

    def _untried(self, node):
        """
        C{node}, or L{None} if this request tried it already.
        """
        return None if node in self._tried else node

    def _nextFallback(self):
        """
        The next fallback node the checks did not take out, counted as a
        retry; L{None} once there is none.
        """
        self.retries += 1
        fallback, health = self.fallback, self.health
        while self._fallbackIndex < len(fallback):
            node = fallback[self._fallbackIndex]
            self._fallbackIndex += 1
            if health is None or not health.isDown(node):
                return node
        return None
