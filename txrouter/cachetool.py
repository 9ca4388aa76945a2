"""
C{txrouter-cache}: the operator's tool for the map a fleet of routers shares
in Redis (C{--use-cache --cache-store URL}, C{docs/fleet.md})::

    txrouter-cache --cache-store redis://10.0.0.5:6379/0 set app.example.com 10.0.1.7:3031
    txrouter-cache --cache-store ... delete app.example.com
    txrouter-cache --cache-store ... list > apps.map
    txrouter-cache --cache-store ... import [--replace] apps.map

Keys and values are checked as the router checks them (a key is 1 to 255
bytes without whitespace; a value is C{ADDR[,MODIFIER1]}, several joined
by C{|}); a mapping file is C{--cache-file}'s format, and C{list} writes
that format.  Each change is announced on the map's channel, so that every
router reads the changed key again at once.
"""

import os
import sys

from twisted.internet import defer, task
from twisted.python import usage

from txrouter.limits import MAX_KEY_LENGTH
from txrouter.redisclient import changesChannel, connect, globEscaped
from txrouter.routing.cache import MappingFileError, parseMapping
from txrouter.routing.nodes import BadNodeAddress, parseNodeValue
from txrouter.storeurl import parseStoreURL

__all__ = ["main"]

#: Keys set or read per command.
BATCH = 500


def checkKey(key: bytes) -> bytes:
    """
    @raise usage.UsageError: C{key} is not a routing key a router accepts.
    """
    if not 0 < len(key) <= MAX_KEY_LENGTH:
        raise usage.UsageError(f"{_shown(key)}: a key is 1 to {MAX_KEY_LENGTH} bytes, not {len(key)}")
    if len(key.split()) != 1:
        raise usage.UsageError(f"{_shown(key)}: a key has no whitespace")
    return key


def checkValue(value: str) -> str:
    """
    @raise usage.UsageError: C{value} is not C{ADDR[,MODIFIER1][|...]}.
    """
    try:
        parseNodeValue(value)
    except BadNodeAddress as e:
        raise usage.UsageError(f"{value!r}: {e}") from None
    return value


def _shown(key: bytes) -> str:
    return repr(key[:64].decode("utf-8", "replace"))


class SetOptions(usage.Options):
    synopsis = "KEY VALUE"
    longdesc = "Map KEY to VALUE (ADDR[,MODIFIER1], several joined by |)."

    def parseArgs(self, key, value):
        self["key"] = checkKey(os.fsencode(key))
        self["value"] = checkValue(value)


class DeleteOptions(usage.Options):
    synopsis = "KEY [KEY ...]"
    longdesc = "Remove keys from the map."

    def parseArgs(self, *keys):
        if not keys:
            raise usage.UsageError("give the keys to delete")
        self["keys"] = [checkKey(os.fsencode(key)) for key in keys]


class ListOptions(usage.Options):
    synopsis = ""
    longdesc = "Write the map, one KEY VALUE per line (a mapping file)."


class ImportOptions(usage.Options):
    synopsis = "[--replace] FILE"
    longdesc = ("Set every KEY VALUE of a mapping file (--cache-file's format); with"
                   " --replace, also delete the keys the file does not have.")
    optFlags = [["replace", None, "Delete the keys of the map the file does not have."]]

    def parseArgs(self, path):
        self["path"] = path


class Options(usage.Options):
    synopsis = "txrouter-cache [--cache-store URL] COMMAND [ARGS]"
    longdesc = (
        "Change the key/node map the routers of a fleet share in Redis (--use-cache"
        " --cache-store URL): keys of 1 to 255 bytes, values ADDR[,MODIFIER1] joined"
        " by |, checked as the router checks them; every change is announced to the"
        " routers. See docs/fleet.md."
    )
    optParameters = [
        ["cache-store", None, os.environ.get("TXROUTER_CACHE_STORE", "redis://127.0.0.1:6379/0"),
         "The routers' --cache-store (default: $TXROUTER_CACHE_STORE, else"
         " redis://127.0.0.1:6379/0)."],
    ]
    subCommands = [
        ["set", None, SetOptions, "Map a key to nodes."],
        ["delete", None, DeleteOptions, "Remove keys."],
        ["list", None, ListOptions, "Write the whole map."],
        ["import", None, ImportOptions, "Load a mapping file."],
    ]

    def postOptions(self):
        if self.subCommand is None:
            raise usage.UsageError("give a command: set, delete, list or import")
        try:
            self["url"] = parseStoreURL(self["cache-store"])
        except ValueError as e:
            raise usage.UsageError(f"--cache-store: {e}") from None
        if self.subCommand == "import":
            self.subOptions["mapping"] = readMapping(self.subOptions["path"])


def readMapping(path: str) -> "dict[bytes, str]":
    """
    The mapping file at C{path}, every line checked as the router checks
    C{--cache-file}, keys too.

    @raise usage.UsageError: the file cannot be read or has a bad line.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise usage.UsageError(f"{path}: {e.strerror}") from None
    try:
        mapping = parseMapping(data, path)
    except MappingFileError as e:
        raise usage.UsageError(str(e)) from None
    for key in mapping:
        checkKey(key)
    return mapping


class MapEditor:
    """
    The commands, over a C{txredisapi} connection to the map's server.
    """

    def __init__(self, redis, url, out) -> None:
        self.redis = redis
        self.prefix = url.prefix
        self.channel = changesChannel(url)
        self.out = out

    @defer.inlineCallbacks
    def set(self, key: bytes, value: str):
        yield self.redis.set(self.prefix + key, value.encode())
        yield self.redis.publish(self.channel, key)

    @defer.inlineCallbacks
    def delete(self, keys):
        yield self.redis.delete([self.prefix + key for key in keys])
        for key in keys:
            yield self.redis.publish(self.channel, key)

    @defer.inlineCallbacks
    def keys(self):
        """
        Every key of the map (without the prefix), sorted.
        """
        found, cursor = set(), b"0"
        while True:
            cursor, batch = yield self.redis.scan(cursor, globEscaped(self.prefix) + b"*", 1000)
            found.update(key[len(self.prefix):] for key in batch)
            if cursor in (b"0", 0, "0"):
                return sorted(found)

    @defer.inlineCallbacks
    def list(self):
        keys = yield self.keys()
        for start in range(0, len(keys), BATCH):
            batch = keys[start:start + BATCH]
            values = yield self.redis.mget([self.prefix + key for key in batch])
            for key, value in zip(batch, values):
                if value is not None:
                    self.out.write(key + b" " + value + b"\n")

    @defer.inlineCallbacks
    def load(self, mapping, replace: bool):
        """
        Set the keys of C{mapping}; with C{replace}, delete the others.

        @return: a Deferred of C{(set, deleted)} counts.
        """
        stale = []
        if replace:
            stale = [key for key in (yield self.keys()) if key not in mapping]
        items = list(mapping.items())
        for start in range(0, len(items), BATCH):
            yield self.redis.mset({self.prefix + key: value.encode()
                                   for key, value in items[start:start + BATCH]})
        for start in range(0, len(stale), BATCH):
            yield self.redis.delete([self.prefix + key for key in stale[start:start + BATCH]])
        yield self.redis.publish(self.channel, b"")
        return len(items), len(stale)


@defer.inlineCallbacks
def run(reactor, options, out):
    url = options["url"]
    redis = yield connect(url, reactor)
    try:
        editor, sub = MapEditor(redis, url, out), options.subOptions
        if options.subCommand == "set":
            yield editor.set(sub["key"], sub["value"])
        elif options.subCommand == "delete":
            yield editor.delete(sub["keys"])
        elif options.subCommand == "list":
            yield editor.list()
        else:
            done, deleted = yield editor.load(sub["mapping"], sub["replace"])
            print(f"{sub['path']}: {done} keys set, {deleted} deleted", file=sys.stderr)
    finally:
        yield redis.factory.service.stopService()


def main(argv=None) -> None:
    """
    The console script: one command, its mistakes said in one line (exit
    status 2), an unreachable server too (exit status 1).
    """
    options = Options()
    try:
        options.parseOptions(sys.argv[1:] if argv is None else argv)
    except usage.UsageError as e:
        print(f"txrouter-cache: {e} (see txrouter-cache --help)", file=sys.stderr)
        sys.exit(2)

    def failed(failure):
        print(f"txrouter-cache: {failure.getErrorMessage()}", file=sys.stderr)
        raise SystemExit(1)

    def go(reactor):
        return run(reactor, options, sys.stdout.buffer).addErrback(failed)

    task.react(go)


if __name__ == "__main__":
    main()
