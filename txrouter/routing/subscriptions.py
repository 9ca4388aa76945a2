"""
The subscription registry: pools of nodes that uWSGI instances announce.

L{SubscriptionRegistry.apply} takes one parsed announce (see
L{txrouter.wire.subscription}) and adds, refreshes or removes a node;
L{SubscriptionRegistry.pick} chooses a node for a key with the pool's
balancing algorithm (L{txrouter.routing.balancing}).  It is the
L{IForwarder} behind C{--subscription-server}, and an L{IAvailability}
for cheap mode: available while a node is alive; the router starts
without nodes, hence cheap, as uWSGI's.

uWSGI's semantics (reference sections 2.6 to 2.9), and where this differs:

  - a pool is named by the exact bytes of its key; a node by its address;
    a new node joins the end of its pool, a new key makes a new pool;
  - a refresh (same key and address) updates only the last-seen time,
    cores, load, weight (0 counts as 1) and the requests since the last
    announce; modifier1/modifier2, backup level and notify path stay those
    of the announce that created the node;
  - a node not announced for C{tolerance} seconds (17) expires.  uWSGI
    notices only when a request for the key walks past it; here a timer
    removes it on time, so stats and cheap mode see it go;
  - an unsubscribe or an expiry removes the node at once (uWSGI marks it
    dead and frees it at the next lookup once no request uses it);
    requests already sent to it finish; the pool goes with its last node;
  - a failed connect marks the node dead, as uWSGI does: it serves no
    more, its next announce brings it back in place, and it expires if
    none comes.  As nginx, though, the last live node of a pool is never
    marked (one failed connect to a lone worker would refuse every request
    until its next announce), except in cheap mode, which watches
    availability to stop accepting while no node can serve.  A pool whose
    nodes are all dead answers L{None} (no node now) rather than
    L{NoNodeForKey};
  - C{dotsplit}: a key without a pool tries its suffixes from each dot,
    leading dot kept (C{a.b.c} then C{.b.c}, C{.c}), five lookups at most;
    otherwise C{fallback_key} names the pool for keys without one;
  - backup levels (uWSGI 2.1's C{backup} var): only the nodes of the lowest
    level present serve, so backups serve only while no primary is there;
  - uWSGI 2.1's C{algo} var chooses the algorithm of the pool it creates;
  - uWSGI 2.1's C{proto} var says what the node speaks (C{h}: plain HTTP,
    see L{nodeProtocol}); it is that of the announce that created the node
    (2.1 takes each refresh's), as modifier1 is: a node changes protocol by
    unsubscribing first, which a subscriber does when it stops.

Admission, on top of uWSGI, in this order: a source allow-list and an
address policy (L{txrouter.routing.admission}), caps on pools and nodes
per pool, and an optional signature checker (its C{check} raises for
unsigned, forged, stale or replayed announces).  The checker comes last
because it remembers each accepted announce's timestamp: an announce
refused for another reason must not spend it (and an announce refused at
the caps costs no signature check).  Refusals raise L{SubscriptionError}
with a stable event; the caller logs them (the subscription server does,
rate-limited).  Pool and node changes are logged here, one line each,
rate-limited too.  C{sni_*} and C{notify} vars are ignored unless enabled.

Nothing here does I/O; time comes from the injected clock.
"""

import collections
import heapq
import re

import attr
from twisted.logger import Logger
from zope.interface import implementer

from txrouter.routing.admission import AddressPolicy, SourcePolicy, nodeProtocol
from txrouter.routing.balancing import ALGORITHMS, balancerByName, djb33x
from txrouter.routing.interfaces import (
    IAvailability,
    IForwarder,
    IStatsSource,
    ITrafficCounting,
    NoNodeForKey,
)
from txrouter.routing.loglimit import LogLimiter
from txrouter.routing.nodes import UWSGI
from txrouter.wire.subscription import SubscriptionError

__all__ = [
    "DEFAULT_TOLERANCE",
    "DEFAULT_MAX_POOLS",
    "DEFAULT_MAX_NODES",
    "ADDED",
    "REFRESHED",
    "REMOVED",
    "ABSENT",
    "Applied",
    "SubscribedNode",
    "SubscriptionRegistry",
]

log = Logger(namespace="txrouter.subscription")

#: uWSGI's C{--subscription-tolerance}: seconds without an announce.
DEFAULT_TOLERANCE = 17.0

#: Pools kept at most (uWSGI has no limit).
DEFAULT_MAX_POOLS = 1024

#: Nodes per pool at most (uWSGI has no limit).
DEFAULT_MAX_NODES = 64

#: The number of keys tried with dotsplit, as in uWSGI.
_DOTSPLIT_LOOKUPS = 5

#: What an accepted announce did (L{Applied.action}).
ADDED, REFRESHED, REMOVED, ABSENT = "added", "refreshed", "removed", "absent"


@attr.frozen
class Applied:
    """
    What L{SubscriptionRegistry.apply} did with one announce.

    @ivar action: L{ADDED} (a new node), L{REFRESHED}, L{REMOVED}, or
        L{ABSENT} (an unsubscribe for a node that is not there).
    @ivar key: the pool's key.
    @ivar node: the node's name, its completed address.
    @ivar newPool: the announce created the pool.
    @ivar poolLeft: the key still has nodes afterwards.
    @ivar notify: where to acknowledge a new node (a unix datagram path,
        leading NUL for an abstract name), when notify is enabled and the
        path is allowed; else L{None}.
    """

    action: str
    key: bytes
    node: str
    newPool: bool = False
    poolLeft: bool = True
    notify: "str | None" = None


class SubscribedNode:
    """
    One node of a pool and its counters (what uWSGI's stats show).

    @ivar key: the key of its pool.
    @ivar node: the L{txrouter.routing.nodes.Node} handed to routers; the
        same object for the node's whole life, so outcomes reported for
        it are told from those of a later node with the same address.
    @ivar weight: at least 1.
    @ivar wrr: the round-robin credit (L{WeightedRoundRobin}).
    @ivar dead: a connect to it failed and no announce came since.
    @ivar failcnt: how many times it was marked dead.
    @ivar active: requests connected and not yet released.
    @ivar pending: times of picks not yet connected nor failed.
    @ivar lastRequests: connections since the last announce.
    @ivar tx: bytes read from the node (uWSGI's C{tx}: its responses).
    @ivar rx: bytes written to the node (uWSGI's C{rx}).
    @ivar proto: the first byte of the C{proto} var it was created with
        (uWSGI 2.1 keeps that much), empty when there was none.
    """

    def __init__(self, node, subscription, now: float) -> None:
        self.node = node
        self.key = subscription.key
        self.proto = (subscription.proto or b"")[:1]
        self.backup = subscription.backup or 0
        self.created = now
        self.lastSeen = now
        self.cores = subscription.cores
        self.load = subscription.load
        self.weight = subscription.weight or 1
        self.wrr = 0
        self.active = 0
        self.pending = collections.deque()
        self.requests = 0
        self.lastRequests = 0
        self.dead = False
        self.failcnt = 0
        self.removed = False
        self.tx = 0
        self.rx = 0

    @property
    def name(self) -> str:
        return self.node.name

    @property
    def reference(self) -> int:
        """
        Requests in flight: connected ones, and picks not yet connected.
        """
        return self.active + len(self.pending)

    def refresh(self, subscription, now: float) -> None:
        self.lastSeen = now
        self.cores = subscription.cores
        self.load = subscription.load
        self.weight = subscription.weight or 1
        self.lastRequests = 0


class _Pool:
    """
    The nodes of one key, in the order they joined.
    """

    def __init__(self, key: bytes, balancer) -> None:
        self.key = key
        self.balancer = balancer
        self.nodes = {}
        self.hits = 0
        self.sni = None

    def candidates(self) -> list:
        """
        The live nodes of the lowest backup level among them.
        """
        nodes = [entry for entry in self.nodes.values() if not entry.dead]
        if not nodes:
            return nodes
        level = min(entry.backup for entry in nodes)
        return [entry for entry in nodes if entry.backup == level]

    def alive(self) -> bool:
        return any(not entry.dead for entry in self.nodes.values())


@implementer(IForwarder, IAvailability, IStatsSource, ITrafficCounting)
class SubscriptionRegistry:
    """
    Pools of subscribed nodes, kept as uWSGI keeps them (see the module).

    @ivar available: whether any pool has a live node.
    @ivar tolerance: seconds a node lives without an announce.
    """

    def __init__(
        self,
        clock,
        algo: str = "wrr",
        tolerance: float = DEFAULT_TOLERANCE,
        dotsplit: bool = False,
        fallback_key=None,
        max_pools: int = DEFAULT_MAX_POOLS,
        max_nodes: int = DEFAULT_MAX_NODES,
        allow=(),
        address_policy: "AddressPolicy | None" = None,
        sign_check=None,
        notify: bool = False,
        sni: bool = False,
        pending_timeout: float = 60.0,
    ) -> None:
        """
        @param clock: an C{IReactorTime}.
        @param algo: the balancing algorithm of new pools (see
            L{txrouter.routing.balancing.ALGORITHMS}).
        @param tolerance: seconds after which an unannounced node expires.
        @param dotsplit: try the key's dot suffixes (C{--subscription-dotsplit}).
        @param fallback_key: the pool for keys without one (ignored with
            C{dotsplit}, as in uWSGI); bytes or text.
        @param max_pools: the most pools; more new keys are refused.
        @param max_nodes: the most nodes per pool.
        @param allow: networks (CIDR text) allowed to subscribe; empty: all.
        @param address_policy: the L{AddressPolicy}; the default one if
            L{None}.
        @param sign_check: an object with C{check(subscription)} raising
            L{SubscriptionError} (a L{SignatureChecker}), or L{None}.
        @param notify: acknowledge new nodes to their C{notify} socket.
        @param sni: keep the C{sni_key}/C{sni_crt}/C{sni_ca} of each pool.
        @param pending_timeout: seconds after which a pick that was neither
            connected nor failed stops counting as in flight (the router's
            connect timeout).
        @raise ValueError: an unknown algorithm or a bad network.
        """
        balancerByName(algo)
        self.clock = clock
        self.algo = algo
        self.tolerance = tolerance
        self.dotsplit = dotsplit
        if isinstance(fallback_key, str):
            fallback_key = fallback_key.encode()
        self.fallbackKey = fallback_key or None
        self.maxPools = max_pools
        self.maxNodes = max_nodes
        self.sourcePolicy = SourcePolicy(allow)
        self.addressPolicy = address_policy if address_policy is not None else AddressPolicy()
        self.signCheck = sign_check
        self.notify = notify
        self.sni = sni
        self.pendingTimeout = pending_timeout
        self.available = False
        self._live = 0
        self._count = 0
        self._pools = {}
        # SNI name (the key without :port, lower case) -> the first pool
        # announced with sni_* vars under it.
        self._sniPools = {}
        self._balancers = {}
        self._watchers = []
        self._deadlines = []
        self._sequence = 0
        self._timer = None
        self._closed = False
        self._log = LogLimiter(log, clock, burst=100, interval=10.0)

    # Announces

    def apply(self, subscription, source) -> Applied:
        """
        Add, refresh or remove the node C{subscription} announces.

        @param subscription: a L{txrouter.wire.subscription.Subscription}.
        @param source: the sender's IP address text (C{"127.0.0.1"}), or
            L{None} for a datagram received on a unix socket.
        @return: what was done.
        @raise SubscriptionError: the announce is refused, first failure
            first: C{source_not_allowed}, C{bad_address},
            C{address_not_allowed}, C{too_many_pools}, C{too_many_nodes},
            the signature checker's events (C{unsigned}, C{replayed},
            C{bad_signature}, ...); C{unsupported_proto} right after the
            source check.
        """
        self.sourcePolicy.check(source)
        key = subscription.key
        node = self.addressPolicy.admit(
            subscription.address, source, subscription.modifier1, subscription.modifier2,
            nodeProtocol(subscription.proto),
        )
        self._expireDue()
        removal = bool(subscription.unsubscribe or subscription.clear)
        pool = self._pools.get(key)
        entry = pool.nodes.get(node.name) if pool is not None else None
        if entry is None and not removal:
            self._checkCaps(key, pool)
        # Last, as it remembers the announce: a refused one must not
        # spend the node's timestamp.
        if self.signCheck is not None:
            self.signCheck.check(subscription)
        if removal:
            return self._unsubscribe(key, node.name)
        if entry is not None:
            entry.refresh(subscription, self.clock.seconds())
            if entry.dead:
                entry.dead = False
                self._alive(+1)
            return Applied(REFRESHED, key, node.name)
        return self._add(subscription, node, pool)

    def _checkCaps(self, key: bytes, pool) -> None:
        """
        @raise SubscriptionError: C{too_many_pools} for a new key at
            C{maxPools}, C{too_many_nodes} for a new node of a pool at
            C{maxNodes}.
        """
        if pool is None and len(self._pools) >= self.maxPools:
            raise SubscriptionError(
                "too_many_pools",
                f"{key[:64]!r} would make {len(self._pools) + 1} pools"
                f" (--subscription-max-pools {self.maxPools})",
            )
        if pool is not None and len(pool.nodes) >= self.maxNodes:
            raise SubscriptionError(
                "too_many_nodes",
                f"{key[:64]!r} has {len(pool.nodes)} nodes already"
                f" (--subscription-max-nodes {self.maxNodes})",
            )

    def _add(self, subscription, node, pool) -> Applied:
        key = subscription.key
        newPool = pool is None
        if newPool:
            pool = self._pools[key] = _Pool(key, self._balancerFor(subscription.algo))
            self._log.info(
                "subscription_pool_created: new pool: {key} (hash key: {hash})",
                event="subscription_pool_created", key=_text(key), hash=djb33x(key) % 0xFFFF,
            )
        entry = pool.nodes[node.name] = SubscribedNode(node, subscription, self.clock.seconds())
        self._count += 1
        self._log.info(
            "subscription_node_added: {key} => new node: {node}{speaks}",
            event="subscription_node_added", key=_text(key), node=node.name,
            protocol=node.protocol, speaks="" if node.protocol == UWSGI else f" ({node.protocol})",
        )
        self._watch(entry)
        self._keepSNI(pool, subscription)
        notify = self._notifyPath(subscription)
        self._alive(+1)
        return Applied(ADDED, key, node.name, newPool=newPool, notify=notify)

    def _unsubscribe(self, key: bytes, name: str) -> Applied:
        pool = self._pools.get(key)
        entry = pool.nodes.get(name) if pool is not None else None
        if entry is None:
            log.debug(
                "subscription_unknown_node: unsubscribe of {node} from {key}, not subscribed",
                event="subscription_unknown_node", key=_text(key), node=name,
            )
            return Applied(ABSENT, key, name, poolLeft=pool is not None)
        self._log.info(
            "subscription_node_removed: {key} => removed node: {node} (unsubscribed)",
            event="subscription_node_removed", key=_text(key), node=name,
        )
        self._remove(pool, entry)
        return Applied(REMOVED, key, name, poolLeft=key in self._pools)

    def _balancerFor(self, algo):
        """
        The balancer of a new pool: its creator's C{algo} when known,
        else the registry's.
        """
        name = algo.decode("ascii", "replace") if algo else self.algo
        if name not in ALGORITHMS:
            name = self.algo
        balancer = self._balancers.get(name)
        if balancer is None:
            balancer = self._balancers[name] = balancerByName(name)
        return balancer

    def _keepSNI(self, pool, subscription) -> None:
        if subscription.sniKey is None and subscription.sniCrt is None:
            return
        if not self.sni:
            log.debug(
                "subscription_sni_ignored: sni_* vars for {key} (enable with --subscription-sni)",
                event="subscription_sni_ignored", key=_text(pool.key),
            )
        elif pool.sni is None and subscription.sniKey and subscription.sniCrt:
            pool.sni = (subscription.sniKey, subscription.sniCrt, subscription.sniCa)
            self._sniPools.setdefault(sniNameOfKey(pool.key), pool)

    def _notifyPath(self, subscription):
        if subscription.notify is None:
            return None
        path = self.addressPolicy.admitNotify(subscription.notify) if self.notify else None
        if path is None:
            log.debug(
                "subscription_notify_ignored: no ack to {notify!r} for {key}"
                " (--subscription-notify and a --subscription-node-dir for it)",
                event="subscription_notify_ignored", key=_text(subscription.key),
                notify=subscription.notify[:128],
            )
        return path

    def _remove(self, pool, entry) -> None:
        entry.removed = True
        del pool.nodes[entry.name]
        self._count -= 1
        if not pool.nodes:
            del self._pools[pool.key]
            if pool.sni is not None:
                self._forgetSNI(pool)
            self._log.info(
                "subscription_pool_removed: pool removed: {key}",
                event="subscription_pool_removed", key=_text(pool.key),
            )
        if not entry.dead:
            self._alive(-1)

    def _forgetSNI(self, pool) -> None:
        """
        The pool C{pool} is gone: its SNI name goes to another pool
        announced with C{sni_*} vars under it, if any.
        """
        name = sniNameOfKey(pool.key)
        if self._sniPools.get(name) is not pool:
            return
        del self._sniPools[name]
        for other in self._pools.values():
            if other.sni is not None and sniNameOfKey(other.key) == name:
                self._sniPools[name] = other
                break

    def _alive(self, change: int) -> None:
        """
        Count live nodes; tell the watchers when there comes to be one, or
        none.
        """
        self._live += change
        available = self._live > 0
        if available != self.available:
            self.available = available
            for callback in list(self._watchers):
                callback(available)

    # Expiry

    def _watch(self, entry) -> None:
        """
        Arm the expiry of a new node.  One deadline per node is queued;
        a refresh does not queue another: the old one, when due, is
        re-queued at the node's new deadline.
        """
        self._sequence += 1
        heapq.heappush(self._deadlines, (entry.lastSeen + self.tolerance, self._sequence, entry))
        if len(self._deadlines) > 2 * self._count + 64:
            self._compact()
        if self._timer is None:
            self._schedule()

    def _compact(self) -> None:
        """
        Drop the queued deadlines of removed nodes (a churn of subscribes
        and unsubscribes would otherwise pile them up for C{tolerance}).
        """
        self._deadlines = [item for item in self._deadlines if not item[2].removed]
        heapq.heapify(self._deadlines)

    def close(self) -> None:
        """
        Cancel the expiry timer and arm no other: the service owning the
        registry is stopping, and must leave no call pending in the
        reactor.  Nodes due afterwards are still removed, by the next
        L{apply} or L{pick} that finds them due.  Log lines held back by
        the rate limit are counted now.
        """
        self._closed = True
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()
        self._log.close()

    def _schedule(self) -> None:
        if self._deadlines and not self._closed:
            delay = max(0.0, self._deadlines[0][0] - self.clock.seconds())
            self._timer = self.clock.callLater(delay, self._expire)

    def _expire(self) -> None:
        self._timer = None
        self._expireDue()
        self._schedule()

    def _expireDue(self) -> None:
        """
        Remove every node whose last announce is C{tolerance} seconds old.
        """
        now = self.clock.seconds()
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            _, sequence, entry = heapq.heappop(deadlines)
            if entry.removed:
                continue
            deadline = entry.lastSeen + self.tolerance
            if deadline > now:
                heapq.heappush(deadlines, (deadline, sequence, entry))
                continue
            pool = self._pools[entry.key]
            self._log.info(
                "subscription_node_expired: {key} => marking {node} as failed"
                " (no announce received in {tolerance:g} seconds)",
                event="subscription_node_expired", key=_text(entry.key), node=entry.name,
                tolerance=self.tolerance,
            )
            self._remove(pool, entry)

    # IForwarder

    def pick(self, key, client=None):
        """
        Choose a node for C{key} with its pool's algorithm.

        @return: the node, or L{None} when the pool's nodes are all dead.
        @raise NoNodeForKey: no pool for the key (nor for its dot
            suffixes with dotsplit, nor the fallback key).
        """
        if self._deadlines and self._deadlines[0][0] <= self.clock.seconds():
            self._expireDue()
        pool = self._poolFor(key)
        if pool is None:
            raise NoNodeForKey(key)
        pool.hits += 1
        candidates = pool.candidates()
        if not candidates:
            return None
        if self.pendingTimeout is not None:
            oldest = self.clock.seconds() - self.pendingTimeout
            for entry in candidates:
                pending = entry.pending
                while pending and pending[0] < oldest:
                    pending.popleft()
        entry = pool.balancer.choose(candidates, client)
        entry.pending.append(self.clock.seconds())
        return entry.node

    def _poolFor(self, key: bytes):
        """
        The pool serving C{key}: its own, else (as uWSGI, which moves on
        when a pool has no live node) the first with a live node among its
        dot suffixes or the fallback key's; else the first that exists.
        """
        pools = self._pools
        pool = pools.get(key)
        if pool is not None and (pool.alive() or not (self.dotsplit or self.fallbackKey)):
            return pool
        found = pool
        for name in self._alternatives(key):
            other = pools.get(name)
            if other is not None:
                if other.alive():
                    return other
                found = found or other
        return found

    def _alternatives(self, key: bytes):
        """
        The other keys tried for C{key}: dot suffixes, or the fallback key.
        """
        if self.dotsplit:
            name = key
            for _ in range(_DOTSPLIT_LOOKUPS - 1):
                dot = name.find(b".", 1)
                if dot < 0:
                    return
                name = name[dot:]
                yield name
        elif self.fallbackKey is not None:
            yield self.fallbackKey

    def _entryFor(self, key: bytes, node):
        """
        The live entry C{node} was picked from, if it is still there.
        """
        pool = self._poolFor(key)
        if pool is None:
            return None, None
        entry = pool.nodes.get(node.name)
        if entry is None or entry.node is not node:
            return pool, None
        return pool, entry

    def failed(self, key, node) -> None:
        """
        C{node} could not be connected to: it is marked dead (uWSGI's death
        mark) until its next announce, or until it expires.
        """
        pool, entry = self._entryFor(key, node)
        if entry is None:
            return
        if entry.pending:
            entry.pending.popleft()
        if entry.dead:
            return
        if not self._watchers and not any(
            other is not entry and not other.dead for other in pool.nodes.values()
        ):
            self._log.info(
                "subscription_node_failed: {key} => {node} failed, kept as the last live node",
                event="subscription_node_failed", key=_text(pool.key), node=entry.name,
            )
            return
        entry.dead = True
        entry.failcnt += 1
        self._log.info(
            "subscription_node_failed: {key} => marking {node} as failed",
            event="subscription_node_failed", key=_text(pool.key), node=entry.name,
        )
        self._alive(-1)

    def connected(self, key, node) -> None:
        pool, entry = self._entryFor(key, node)
        if entry is None:
            return
        if entry.pending:
            entry.pending.popleft()
        entry.active += 1
        entry.requests += 1
        entry.lastRequests += 1

    def released(self, key, node) -> None:
        pool, entry = self._entryFor(key, node)
        if entry is not None and entry.active:
            entry.active -= 1

    def abandoned(self, key, node) -> None:
        """
        The pick no longer counts as in flight.
        """
        pool, entry = self._entryFor(key, node)
        if entry is not None and entry.pending:
            entry.pending.popleft()

    def transferred(self, key, node, sent: int, received: int) -> None:
        """
        Count bytes relayed through C{node}, picked for C{key}: C{sent}
        written to it, C{received} read from it (the node's C{rx} and
        C{tx} in the stats, as uWSGI names them).  A router may report an
        exchange once, when it is over, or in parts as bytes flow; bytes
        of a node that is gone are not counted.
        """
        pool, entry = self._entryFor(key, node)
        if entry is not None:
            entry.rx += sent
            entry.tx += received

    # IAvailability

    def watchAvailability(self, callback) -> None:
        self._watchers.append(callback)

    # Introspection

    def keys(self) -> list:
        """
        The keys that have a pool, in the order the pools were created.
        """
        return list(self._pools)

    def nodes(self, key: bytes) -> list:
        """
        The L{SubscribedNode}s of the pool of exactly C{key}, in order.
        """
        pool = self._pools.get(key)
        return list(pool.nodes.values()) if pool is not None else []

    def sniFor(self, key: bytes):
        """
        The C{(sni_key, sni_crt, sni_ca)} the pool of C{key} was announced
        with (C{sni_ca} may be L{None}), or L{None}; only with C{sni}.
        Values are what subscribers sent: paths on the router host, or PEM.
        """
        pool = self._pools.get(key)
        return pool.sni if pool is not None else None

    def sniForName(self, name: bytes):
        """
        L{sniFor} by SNI name, as uWSGI names a subscription's SNI context:
        the pool's key without its C{:port}; here in lower case and
        without a trailing dot, as a checked SNI name is
        (C{example.com:8443} serves C{example.com}).  With several such
        pools, the first announced with C{sni_*} vars.
        """
        pool = self._sniPools.get(name)
        return pool.sni if pool is not None else None

    def statsFields(self):
        """
        uWSGI's C{subscriptions} list (reference section 10.1), with
        2.1's C{algo} and C{backup}, and 2.1's C{proto} for nodes announced
        with one (2.1 writes the byte it keeps, a NUL when there is none).
        C{tx}/C{rx} count what routers report to L{transferred} (0
        otherwise); credentials (C{pid}, C{uid}, C{gid}) are 0.
        """
        pools = []
        for pool in self._pools.values():
            nodes = []
            for entry in pool.nodes.values():
                fields = {
                    "name": entry.name,
                    "modifier1": entry.node.modifier1,
                    "modifier2": entry.node.modifier2,
                    "last_check": int(entry.lastSeen),
                    "pid": 0,
                    "uid": 0,
                    "gid": 0,
                    "requests": entry.requests,
                    "last_requests": entry.lastRequests,
                    "tx": entry.tx,
                    "rx": entry.rx,
                    "cores": entry.cores,
                    "load": entry.load,
                    "weight": entry.weight,
                    "wrr": entry.wrr,
                    "ref": entry.reference,
                    "failcnt": entry.failcnt,
                    "death_mark": int(entry.dead),
                    "backup": entry.backup,
                }
                if entry.proto:
                    fields["proto"] = entry.proto.decode("latin-1")
                nodes.append(fields)
            pools.append({
                "key": pool.key.decode("utf-8", "backslashreplace"),
                "hash": djb33x(pool.key) % 0xFFFF,
                "hits": pool.hits,
                "sni_enabled": int(pool.sni is not None),
                "algo": pool.balancer.name,
                "nodes": nodes,
            })
        return [("subscriptions", pools)]


_CONTROL = re.compile("[\x00-\x1f\x7f]")


def sniNameOfKey(key: bytes) -> bytes:
    """
    The SNI name a subscription key's context serves: uWSGI's, the key
    without a C{:port}, in lower case and without a trailing dot (the form
    of a checked SNI name).
    """
    host, colon, port = key.rpartition(b":")
    if colon and port.isdigit():
        key = host
    key = key.lower()
    return key[:-1] if key.endswith(b".") else key


def _text(key: bytes) -> str:
    """
    A key for a log line: UTF-8, other bytes and control characters
    escaped, so that a key cannot forge log lines.
    """
    text = key.decode("utf-8", "backslashreplace")
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
