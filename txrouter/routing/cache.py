"""
The cache forwarder (C{--use-cache}) and its embedded key/value store.

uWSGI looks the key up in one of its caches; the value is C{addr[,mod1]},
or several of those joined by C{|}, balanced round robin by a per-item hit
counter (reference section 3.3).  Here the store is an L{IKeyValueStore}:
the embedded L{InMemoryStore} is filled from Python (a C{.tac}) or from a
mapping file (C{--cache-file}: L{parseMapping} reads its text, the builder
reads the file and reloads it on SIGHUP); a shared store can replace it.  A store that answers later (a Deferred) gets a deadline, as
user code does (L{txrouter.routing.code.withDeadline}).
"""

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from txrouter.routing.base import StatelessForwarder
from txrouter.routing.code import withDeadline
from txrouter.routing.interfaces import IForwarder, IKeyValueStore, IStatsSource, NoNodeForKey
from txrouter.routing.nodes import BadNodeAddress, parseNodeValue
from txrouter.routing.rotation import KeyRotation

log = Logger(namespace="txrouter.routing")

#: Distinct values whose parsed nodes are remembered.
_PARSED_LIMIT = 4096


class MappingFileError(ValueError):
    """
    A mapping file line that is not C{KEY VALUE}, or a bad value.
    """


def parseMapping(data: bytes, name: str = "<mapping>") -> "dict[bytes, str]":
    """
    Parse the text of a mapping file: one C{KEY VALUE} pair per line
    (whitespace between them), blank lines and C{#} comments ignored.
    Every value is checked.  Reading the file is the caller's business
    (L{txrouter.build} loads C{--cache-file} and reloads it on SIGHUP).

    @param name: the file's name, for the error messages.
    @raise MappingFileError: naming the file and the line.
    """
    mapping = {}
    for number, raw in enumerate(data.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(b"#"):
            continue
        parts = line.split(None, 1)
        if len(parts) != 2:
            raise MappingFileError(f"{name}:{number}: expected KEY VALUE")
        key, value = parts[0], parts[1].decode("utf-8", "replace")
        try:
            parseNodeValue(value)
        except BadNodeAddress as e:
            raise MappingFileError(f"{name}:{number}: {e}")
        mapping[key] = value
    return mapping


@implementer(IKeyValueStore)
class InMemoryStore:
    """
    A dict of routing keys to node values, filled from Python or replaced
    as a whole (by a mapping file's loader).
    """

    def __init__(self, mapping=None) -> None:
        self.mapping = {}
        for key, value in (mapping or {}).items():
            self.set(key, value)

    def get(self, key: bytes):
        return self.mapping.get(key)

    def set(self, key, value: str) -> None:
        """
        Map C{key} (text or bytes) to C{value} (C{addr[,mod1][|...]}).

        @raise BadNodeAddress: C{value} is malformed.
        """
        parseNodeValue(value)
        self.mapping[_bytes(key)] = value

    def delete(self, key) -> None:
        self.mapping.pop(_bytes(key), None)

    def replace(self, mapping) -> None:
        """
        Replace the whole mapping at once, or, if one of its values is
        malformed, not at all.

        @param mapping: keys (text or bytes) to values.
        @raise BadNodeAddress: a value is malformed.
        """
        replacement = {}
        for key, value in mapping.items():
            parseNodeValue(value)
            replacement[_bytes(key)] = value
        self.mapping = replacement


def _bytes(key) -> bytes:
    return key.encode() if isinstance(key, str) else key


@implementer(IForwarder, IStatsSource)
class CacheForwarder(StatelessForwarder):
    """
    Key to node through an L{IKeyValueStore}.

    A value with several nodes is balanced round robin per key.  A failed
    connect asks the store again (so the next node of the value is tried).

    @ivar timeout: seconds a store's Deferred answer may take (then 504,
        C{forwarder_timeout}); needs C{clock}.
    """

    def __init__(self, store, clock=None, timeout: float = 5.0) -> None:
        """
        @param store: an L{IKeyValueStore}.
        @param clock: the C{IReactorTime} the deadline of a store's later
            answers is kept with; without one they get none (the embedded
            store always answers at once).
        @raise TypeError: C{store} is no store (a dict is not: its keys
            would be text, the lookups bytes).
        """
        if isinstance(store, dict) or not callable(getattr(store, "get", None)):
            raise TypeError(f"store: an IKeyValueStore such as InMemoryStore({{...}}), not {store!r}")
        self.store = store
        self.clock = clock
        self.timeout = timeout
        self._parsed = {}
        self._rotation = KeyRotation()

    def statsFields(self):
        """
        The store's part of the stats document, if it has one (a shared
        store's state).
        """
        source = IStatsSource(self.store, None)
        return source.statsFields() if source is not None else []

    def pick(self, key, client=None):
        value = self.store.get(key)
        if isinstance(value, Deferred):
            if self.clock is not None:
                value = withDeadline(value, self.clock, self.timeout, key)
            return value.addCallback(self._choose, key)
        return self._choose(value, key)

    def _choose(self, value, key):
        if value is None:
            raise NoNodeForKey(key)
        nodes = self._parsed.get(value)
        if nodes is None:
            try:
                nodes = parseNodeValue(value)
            except BadNodeAddress as e:
                log.warn(
                    "bad_mapped_value: {key!r} maps to {value!r}: {error}",
                    event="bad_mapped_value", key=key[:64], value=str(value)[:128], error=str(e),
                )
                raise NoNodeForKey(key)
            if len(self._parsed) >= _PARSED_LIMIT:
                self._parsed.clear()
            self._parsed[value] = nodes
        return self._rotation.choose(key, nodes)
