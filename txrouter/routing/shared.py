"""
A local copy of a key/value map several routers share (C{--cache-store}):
the routers of a fleet read one map held in Redis (C{docs/fleet.md}).

Lookups must not wait on the network: a key that was read once is answered
from the copy, synchronously, as the embedded store answers.  The copy is
kept fresh three ways:
  - the map's owner says which key changed (a message on a pub/sub
    channel, or a keyspace notification): that key is read again at once;
  - every C{ttl} seconds every known key is read again (in batches), the
    backstop for changes nobody announced;
  - whenever the connection comes back, at once, for what changed while it
    was away.
Meanwhile the old value is served, so a change reaches every router within
a round trip of its announcement, and within C{ttl} at worst.

A key not in the copy is read once: the lookups of one key waiting at the
same time share one read, and a key the map does not have is remembered as
absent (a bounded number of them, a client can send any key), so that a
flood of unknown keys does not become a flood of reads.

While the map is unreachable every known key is still served from the copy
and an unknown key gets no node at once (then C{--fallback-on-no-key}
applies): the outage is logged once when it starts and once when it ends.

The map itself is an L{IRemoteMap} (L{txrouter.redisclient.RedisMap} over
Redis), which tells this store when it becomes reachable or not and which
keys changed.
"""

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from txrouter.routing.interfaces import IKeyValueStore, IStatsSource
from txrouter.routing.loglimit import LogLimiter
from txrouter.routing.nodes import BadNodeAddress, parseNodeValue

__all__ = ["SharedStore"]

log = Logger(namespace="txrouter.routing")

#: The connection's states.
CONNECTING, REACHABLE, UNREACHABLE = "connecting", "reachable", "unreachable"


@implementer(IKeyValueStore, IStatsSource)
class SharedStore:
    """
    An L{IKeyValueStore} that is the local copy of an L{IRemoteMap}.

    @ivar values: the known keys and their values (text, checked as node
        values): what lookups are answered from.
    @ivar state: L{CONNECTING} until the map was reached or failed once,
        then L{REACHABLE} or L{UNREACHABLE}.
    @ivar reads: how many reads were sent to the map (for tests and the
        bench).
    """

    def __init__(self, remote, clock, ttl: float = 30.0, name: str = "the shared store",
                 maxAbsent: int = 10000, batch: int = 500) -> None:
        """
        @param remote: the L{IRemoteMap}.
        @param clock: the C{IReactorTime} of the periodic refresh.
        @param ttl: seconds between two reads of every known key.
        @param name: what the log lines call the map (its URL).
        @param maxAbsent: how many keys the map lacks are remembered.
        @param batch: the most keys asked for in one read.
        """
        self.remote = remote
        self.clock = clock
        self.ttl = ttl
        self.name = name
        self.maxAbsent = maxAbsent
        self.batch = batch
        self.values = {}
        self.state = CONNECTING
        self.reads = 0
        self._absent = {}
        self._waiting = {}
        self._unreachableSince = None
        self._refresh = LoopingCall(self.refreshAll)
        self._refresh.clock = clock
        self._readFailures = LogLimiter(log, clock, burst=5, interval=60.0)

    # IKeyValueStore

    def get(self, key: bytes):
        """
        The value of C{key}: at once if it is known (or known to be
        absent, or the map is unreachable), else a Deferred of the map's
        answer.
        """
        value = self.values.get(key)
        if value is not None or key in self._absent or self.state is UNREACHABLE:
            return value
        return self._wait(key)

    def statsFields(self):
        """
        C{cache_store} in the stats document: the map, whether it is
        reachable, the keys the copy knows and knows to be absent, the
        reads sent.
        """
        return [("cache_store", {
            "store": self.name,
            "state": self.state,
            "known_keys": len(self.values),
            "absent_keys": len(self._absent),
            "reads": self.reads,
        })]

    # Told by the remote map

    def reachable(self) -> None:
        """
        The map can be read: read every known key again (what changed
        while it was away is not announced).
        """
        if self.state is REACHABLE:
            return
        if self.state is UNREACHABLE:
            log.info(
                "cache_store_reachable: {store} again after {seconds:.1f} s",
                event="cache_store_reachable", store=self.name,
                seconds=self.clock.seconds() - self._unreachableSince,
            )
        else:
            log.info("cache_store_reachable: {store}", event="cache_store_reachable",
                     store=self.name)
        self.state = REACHABLE
        self._unreachableSince = None
        self.refreshAll()

    def unreachable(self, reason: str) -> None:
        """
        The map cannot be read now: known keys are served from the copy,
        unknown ones get no node, until L{reachable}.
        """
        if self.state is UNREACHABLE:
            return
        self.state = UNREACHABLE
        self._unreachableSince = self.clock.seconds()
        log.warn(
            "cache_store_unreachable: {store} ({reason}); serving the {count} known keys,"
            " unknown keys get no node",
            event="cache_store_unreachable", store=self.name, reason=reason,
            count=len(self.values),
        )
        waiting, self._waiting = self._waiting, {}
        for waiters in waiting.values():
            _answer(waiters, None)

    def changed(self, key: bytes) -> None:
        """
        C{key} was set or deleted in the map: read it again if it is
        known (the copy knows nothing of the others).
        """
        if key in self.values or key in self._absent or key in self._waiting:
            self._read([key])

    def refreshAll(self) -> None:
        """
        Read every known key again, and those lookups wait for; forget
        the absent ones (the next lookup reads them).  Nothing happens
        while the map is not reachable.
        """
        if self.state is not REACHABLE:
            return
        self._absent.clear()
        keys = list(self.values) + [key for key in self._waiting if key not in self.values]
        for start in range(0, len(keys), self.batch):
            self._read(keys[start:start + self.batch])

    # Running

    def start(self) -> None:
        """
        Start the periodic refresh (every C{ttl} seconds).
        """
        self._refresh.start(self.ttl, now=False)

    def stop(self) -> None:
        if self._refresh.running:
            self._refresh.stop()
        self._readFailures.close()

    # Reading

    def _wait(self, key: bytes) -> Deferred:
        """
        A Deferred of C{key}'s value; the first lookup of a key reads it
        (once the map is reached, when it is still being connected to),
        the others wait for that read.
        """
        waiter = Deferred(lambda d: self._forget(key, d))
        waiters = self._waiting.get(key)
        if waiters is None:
            self._waiting[key] = [waiter]
            if self.state is REACHABLE:
                self._read([key])
        else:
            waiters.append(waiter)
        return waiter

    def _forget(self, key: bytes, waiter: Deferred) -> None:
        """
        A lookup gave up waiting (its deadline, or its client left); the
        read goes on for the others, and for the copy.
        """
        waiters = self._waiting.get(key, [])
        if waiter in waiters:
            waiters.remove(waiter)

    def _read(self, keys: "list[bytes]") -> None:
        self.reads += 1
        maybeDeferred(self.remote.read, keys).addCallbacks(
            self._learn, self._readFailed, callbackArgs=(keys,), errbackArgs=(keys,),
        )

    def _learn(self, raws, keys) -> None:
        """
        The map's answer for C{keys}: replace the copy's values, answer
        the waiting lookups.  Answers come in the order reads were sent,
        so the last one learnt is the newest.
        """
        for key, raw in zip(keys, raws):
            value = self._checked(key, raw)
            if value is None:
                self.values.pop(key, None)
                self._remember(key)
            else:
                self.values[key] = value
                self._absent.pop(key, None)
            waiters = self._waiting.pop(key, None)
            if waiters:
                _answer(waiters, value)

    def _readFailed(self, failure, keys) -> None:
        if self.state is REACHABLE:
            # (The reads a lost connection fails are the outage's, logged once.)
            self._readFailures.emit(
                "warn", "cache_store_read_failed: {store} ({error})",
                event="cache_store_read_failed", store=self.name, error=failure.getErrorMessage(),
            )
        for key in keys:
            waiters = self._waiting.pop(key, None)
            if waiters:
                _answer(waiters, None)

    def _remember(self, key: bytes) -> None:
        """
        Remember that the map has no C{key}, forgetting the oldest absent
        key if there are too many.
        """
        if key not in self._absent and len(self._absent) >= self.maxAbsent:
            del self._absent[next(iter(self._absent))]
        self._absent[key] = None

    def _checked(self, key: bytes, raw) -> "str | None":
        """
        The value text of C{raw}, or L{None} if there is none or it is not
        a node value (logged once, when it is read, not at every lookup).
        """
        if raw is None:
            return None
        value = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        try:
            parseNodeValue(value)
        except BadNodeAddress as e:
            log.warn(
                "bad_mapped_value: {key!r} maps to {value!r} in {store}: {error}",
                event="bad_mapped_value", key=key[:64], value=value[:128], store=self.name,
                error=str(e),
            )
            return None
        return value


def _answer(waiters, value) -> None:
    for waiter in waiters:
        if not waiter.called:
            waiter.callback(value)
