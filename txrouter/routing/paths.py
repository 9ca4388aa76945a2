"""
The path forwarders: C{--use-base DIR} and C{--use-pattern PATTERN}.

The key names a unix socket: C{base + key} (uWSGI concatenates, adding no
separator) or the pattern with every C{%s} replaced by the key.  The key
comes from the client (a Host header, an nginx C{HTTP_HOST}), so unlike
uWSGI it is checked before it touches a path: no C{/}, no C{..}, no NUL or
other control byte, at most 255 bytes, and the resulting path must stay
inside the configured directory.  A refused key maps to no node (404).
"""

import os

from twisted.logger import Logger
from zope.interface import implementer

from txrouter.limits import MAX_KEY_LENGTH
from txrouter.routing.base import StatelessForwarder
from txrouter.routing.interfaces import IForwarder, NoNodeForKey
from txrouter.routing.nodes import Node

log = Logger(namespace="txrouter.routing")


def unsafeKeyReason(key: bytes) -> "str | None":
    """
    Say why C{key} must not become part of a file name, or L{None} if it may.
    """
    if not key:
        return "empty key"
    if len(key) > MAX_KEY_LENGTH:
        return f"key of {len(key)} bytes (max {MAX_KEY_LENGTH})"
    if b"/" in key:
        return "key contains '/'"
    if b".." in key or key == b".":
        return "key contains '..' or is '.'"
    if any(byte < 0x20 or byte == 0x7F for byte in key):
        return "key contains a control byte"
    return None


def _directoryOf(prefix: str) -> str:
    """
    The directory a path built from C{prefix} must stay in: C{prefix} up to
    and including its last C{/}.
    """
    return os.path.normpath(prefix[: prefix.rfind("/") + 1] or ".")


def _inside(path: str, directory: str) -> bool:
    """
    Whether the normalised C{path} names something below C{directory}.
    """
    if directory == ".":
        return not (os.path.isabs(path) or path == ".." or path.startswith("../"))
    return path.startswith(directory.rstrip("/") + "/")


@implementer(IForwarder)
class PathForwarder(StatelessForwarder):
    """
    Key to unix socket path, by base (C{use-base}) or pattern
    (C{use-pattern}).

    Nodes get modifier1 and modifier2 0, as uWSGI forces for these mappers.
    A failed connect is retried on the same path (uWSGI re-runs the mapper).

    @ivar parts: the path around the places the key goes.
    @ivar directory: the directory every resolved path must stay in.
    """

    def __init__(self, pattern: str) -> None:
        """
        @param pattern: a path with C{%s} where the key goes (any number of
            times, as uWSGI substitutes them all).
        """
        if not isinstance(pattern, str):
            raise TypeError(f"pattern: a path with %s (a str), not {pattern!r}")
        if "%s" not in pattern:
            raise ValueError(f"a pattern needs %s: {pattern!r}")
        self.parts = pattern.split("%s")
        self.abstract = pattern.startswith("@")
        self.directory = None if self.abstract else _directoryOf(self.parts[0])

    @classmethod
    def fromBase(cls, base: str) -> "PathForwarder":
        """
        The C{--use-base} forwarder: the key appended to C{base}.
        """
        forwarder = cls("%s")
        forwarder.parts = [base, ""]
        forwarder.abstract = base.startswith("@")
        forwarder.directory = None if forwarder.abstract else _directoryOf(base)
        return forwarder

    def pathFor(self, key: bytes) -> str:
        """
        The socket path for C{key}.

        @raise NoNodeForKey: the key is unsafe or escapes the directory.
        """
        reason = unsafeKeyReason(key)
        if reason is not None:
            log.warn(
                "unsafe_key: {key!r} refused for a socket path: {reason}",
                event="unsafe_key", key=key[:64], reason=reason,
            )
            raise NoNodeForKey(key)
        path = os.fsdecode(key).join(self.parts)
        if self.directory is not None:
            if not _inside(os.path.normpath(path), self.directory):
                log.warn(
                    "unsafe_key: {key!r} would leave {directory}",
                    event="unsafe_key", key=key[:64], directory=self.directory,
                )
                raise NoNodeForKey(key)
        return path

    def pick(self, key, client=None):
        path = self.pathFor(key)
        if self.abstract:
            return Node(name=path, path="\0" + path[1:])
        return Node(name=path, path=path)
