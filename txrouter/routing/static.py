"""
The static forwarder: C{--to} nodes in round robin, as uWSGI's corerouter
does it (reference section 3.3):

 - one round-robin cursor over the nodes, shared by every request;
 - a node that failed to connect is skipped until C{gracetime} seconds have
   passed since its failure; when every node is quarantined the cursor still
   advances and the request fails;
 - with C{maxFails} above 1 (nginx's C{max_fails}), a node is quarantined
   only once it failed that many times within C{gracetime} seconds, with no
   successful connect between;
 - as nginx, a lone node, or the last one out of quarantine, is never put
   in quarantine: one failed connect (a worker restarting, a listen queue
   full for a moment) must not turn every request of the next C{gracetime}
   seconds into an instant 503 when no other node could take them.  Cheap
   mode is the exception: it watches availability to stop accepting while
   no node can serve, so there the last node is quarantined as uWSGI does;
 - with an C{algo} (C{--algo}, a txrouter option: uWSGI balances static
   nodes by round robin only), one of the subscription balancers
   (L{txrouter.routing.balancing}) chooses among the nodes out of
   quarantine instead of the cursor, reading the same counters as for a
   subscribed pool (L{StaticNodeLoad}): C{lrc} sends a request to the node
   with the fewest in flight, a websocket tunnel counting as in flight for
   as long as it is open;
 - with health checks (C{--check-interval}, a
   L{txrouter.routing.health.NodeHealth}), a node the checks found down is
   out of rotation until they find it up again, even the last one (as
   HAProxy: C{fall} failed probes in a row are no passing blip, and an
   instant 503 beats every request waiting for a dead node); a node in
   quarantine that then passes C{rise} probes in a row leaves it at once.
   Quarantine spares the last node still in rotation: one the checks took
   out does not count as live.

Time comes from an injected C{IReactorTime}.
"""

from zope.interface import implementer

from txrouter.arguments import checkCount, checkNodes, checkSeconds
from txrouter.routing.balancing import balancerByName
from txrouter.routing.interfaces import IAvailability, IForwarder, IStatsSource, NoNodeForKey


class StaticNodeLoad:
    """
    The counters a balancer reads for one C{--to} node (those of
    L{txrouter.routing.subscriptions.SubscribedNode}, without announces).

    @ivar node: the node.
    @ivar weight: always 1 (C{--to} nodes carry no weight).
    @ivar wrr: the round-robin credit L{WeightedRoundRobin} keeps.
    @ivar active: requests connected and not yet released.
    @ivar pending: picks neither connected nor failed yet.
    @ivar lastRequests: connections so far (there is no announce to start
        the count again).
    """

    weight = 1

    def __init__(self, node) -> None:
        self.node = node
        self.wrr = 0
        self.active = 0
        self.pending = 0
        self.lastRequests = 0

    @property
    def reference(self) -> int:
        """
        Requests in flight: connected ones, and picks not yet connected.
        """
        return self.active + self.pending


@implementer(IForwarder, IAvailability, IStatsSource)
class StaticForwarder:
    """
    Round robin (or a balancer) over a fixed list with dead-node
    quarantine.

    It is available (for cheap mode) while one node is out of quarantine.
    """

    def __init__(
        self, nodes, clock, gracetime: float = 30.0, maxFails: int = 1,
        algo: "str | None" = None, health=None,
    ) -> None:
        """
        @param algo: a balancing algorithm's name (C{wrr}, C{lrc}, C{wlrc},
            C{iphash}), or L{None} for uWSGI's round robin.
        @param health: the L{txrouter.routing.health.NodeHealth} of the
            checks, or L{None} without checks.
        @raise ValueError: an unknown C{algo}.
        """
        self.nodes = list(checkNodes("nodes", nodes))
        checkSeconds("gracetime", gracetime)
        checkCount("maxFails", maxFails)
        self._balancer = None if algo is None else balancerByName(algo)
        self._loads = {node: StaticNodeLoad(node) for node in self.nodes}
        self.clock = clock
        self.gracetime = gracetime
        self.maxFails = max(maxFails, 1)
        self._failures = {}
        self._cursor = 0
        self._deadSince = {}
        self._hits = dict.fromkeys(self.nodes, 0)
        self._watchers = []
        self._wakeUp = None
        self.available = bool(self.nodes)
        self.health = health
        if health is not None:
            health.watch(self._checkChanged)

    def pick(self, key=None, client=None):
        count = len(self.nodes)
        if not count:
            raise NoNodeForKey(key)
        deadSince = self._deadSince
        if self._balancer is not None:
            return self._choose(client)
        health = self.health
        for _ in range(count):
            node = self.nodes[self._cursor]
            self._cursor = (self._cursor + 1) % count
            if health is not None and health.isDown(node):
                continue
            if not deadSince:
                return node
            since = deadSince.get(node)
            if since is None or since + self.gracetime <= self.clock.seconds():
                return node
        return None

    def _choose(self, client):
        """
        The balancer's choice among the nodes out of quarantine, counted as
        pending until its outcome is known; L{None} if there is none.
        """
        loads = self._loads
        candidates = [loads[node] for node in self.nodes if not self.isOut(node)]
        if not candidates:
            return None
        chosen = self._balancer.choose(candidates, client)
        chosen.pending += 1
        return chosen.node

    def _settled(self, node):
        """
        The load of C{node}, its pending pick settled; L{None} for a node
        not of this list (a fallback node) or without a balancer.
        """
        if self._balancer is None:
            return None
        load = self._loads.get(node)
        if load is not None and load.pending:
            load.pending -= 1
        return load

    def failed(self, key, node) -> None:
        self._settled(node)
        now = self.clock.seconds()
        if self.maxFails > 1:
            recent = [t for t in self._failures.get(node, ()) if t + self.gracetime > now]
            recent.append(now)
            if len(recent) < self.maxFails:
                self._failures[node] = recent
                return
            self._failures.pop(node, None)
        if not self._watchers and self._isLastLive(node):
            return
        self._deadSince[node] = now
        if self.health is not None:
            self.health.restart(node)
        if self._watchers:
            self._recheck()

    def connected(self, key, node) -> None:
        load = self._settled(node)
        if load is not None:
            load.active += 1
            load.lastRequests += 1
        if node in self._hits:
            self._hits[node] += 1
        if self._failures:
            self._failures.pop(node, None)
        if self._deadSince and self._deadSince.pop(node, None) is not None and self._watchers:
            self._recheck()

    def released(self, key, node) -> None:
        if self._balancer is not None:
            load = self._loads.get(node)
            if load is not None and load.active:
                load.active -= 1

    def abandoned(self, key, node) -> None:
        self._settled(node)

    def _isLastLive(self, node) -> bool:
        """
        Whether every node but C{node} is out of rotation.
        """
        return all(other == node or self.isOut(other) for other in self.nodes)

    def isOut(self, node) -> bool:
        """
        Whether C{node} is out of rotation now: in quarantine, or down by
        its checks.
        """
        return self.isDead(node) or (self.health is not None and self.health.isDown(node))

    def _checkChanged(self, node, up: bool) -> bool:
        """
        The checks found C{node} down, or up: a node they confirm up leaves
        quarantine.

        @return: whether C{node} was in quarantine until now.
        """
        if node not in self._loads:
            return False
        wasDead = False
        if up and node in self._deadSince:
            wasDead = self.isDead(node)
            del self._deadSince[node]
        if self._watchers:
            self._recheck()
        return wasDead

    def isDead(self, node) -> bool:
        """
        Whether C{node} is in quarantine now.
        """
        since = self._deadSince.get(node)
        return since is not None and since + self.gracetime > self.clock.seconds()

    def statsFields(self):
        """
        uWSGI's C{static_nodes}: successful connections, and the time a node
        was marked dead (0 while alive); with checks, C{check} (a txrouter
        key): C{up} or C{down}, as the checks found it.
        """
        health = self.health
        nodes = []
        for node in self.nodes:
            fields = {
                "name": node.name,
                "hits": self._hits.get(node, 0),
                "grace": int(self._deadSince[node]) if self.isDead(node) else 0,
            }
            if health is not None:
                fields["check"] = "down" if health.isDown(node) else "up"
            nodes.append(fields)
        return [("static_nodes", nodes)]

    def watchAvailability(self, callback) -> None:
        self._watchers.append(callback)

    def _recheck(self) -> None:
        """
        Recompute L{available}; while every node is in quarantine, wake up
        when the first one leaves it.
        """
        now = self.clock.seconds()
        health = self.health
        ends = [
            self._deadSince[node] + self.gracetime if node in self._deadSince else now
            for node in self.nodes
            if health is None or not health.isDown(node)
        ]
        available = bool(ends) and min(ends) <= now
        if self._wakeUp is not None and self._wakeUp.active():
            self._wakeUp.cancel()
        self._wakeUp = None
        if not available and ends:
            self._wakeUp = self.clock.callLater(min(ends) - now, self._recheck)
        if available != self.available:
            self.available = available
            for callback in list(self._watchers):
                callback(available)
