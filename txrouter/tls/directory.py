"""
Files named by the outside world, looked up only inside a directory.

Two things name certificate files a router did not list itself: a
client's SNI name (C{--sni-dir DIR}: C{DIR/<name>.crt}, C{.key}, and
C{.ca} if present) and a subscriber's C{sni_key}/C{sni_crt}/C{sni_ca}
(C{--subscription-sni}).  uWSGI opens both unchecked.  Here a name has
passed L{txrouter.tls.names.canonicalServerName} first, and every path is
resolved (C{os.path.realpath}: symbolic links followed, C{..} removed) and
must then lie inside the directory, a regular file: a link pointing
outside is refused like any other path outside.

L{SNIDirectory} lists its directory rather than asking the file system
for each name: the names of a flood of random SNI names are looked up in
a set, and the directory is listed again at most every C{rescanInterval}
seconds, when a name is not in the last listing.
"""

import os
import stat

__all__ = ["insideDirectory", "SNIDirectory", "DEFAULT_RESCAN_INTERVAL"]

#: Seconds a listing of an SNI directory answers "no such name".
DEFAULT_RESCAN_INTERVAL = 10.0


def _realDirectory(path: str) -> str:
    real = os.path.realpath(path)
    if not os.path.isdir(real):
        raise ValueError(f"{path}: not a directory")
    return real


def insideDirectory(directory: str, path: str) -> "str | None":
    """
    C{path} resolved, if it is a regular file inside C{directory} (itself
    resolved already, see L{SNIDirectory.root}); L{None} otherwise.

    @param path: absolute, or relative to C{directory}.
    """
    real = os.path.realpath(os.path.join(directory, path))
    if not real.startswith(directory.rstrip(os.sep) + os.sep):
        return None
    try:
        mode = os.stat(real).st_mode
    except OSError:
        return None
    return real if stat.S_ISREG(mode) else None


class SNIDirectory:
    """
    C{--sni-dir}: the files of the names that have a C{.crt} and a C{.key}
    in one directory.

    A file counts only if its name before C{.crt} is a canonical server
    name (lower case): C{Example.com.crt} is never served.

    @ivar root: the directory, resolved.
    """

    def __init__(self, path: str, clock, rescanInterval: float = DEFAULT_RESCAN_INTERVAL) -> None:
        """
        @param clock: an C{IReactorTime}.
        @raise ValueError: C{path} is not a directory.
        """
        self.root = _realDirectory(path)
        self._clock = clock
        self._rescanInterval = rescanInterval
        self._names = frozenset()
        self._listedAt = None

    def _list(self) -> None:
        names = set()
        try:
            with os.scandir(self.root) as entries:
                for entry in entries:
                    if entry.name.endswith(".crt"):
                        names.add(os.fsencode(entry.name[:-4]))
        except OSError:
            names = set()
        self._names = frozenset(names)
        self._listedAt = self._clock.seconds()

    def forget(self) -> None:
        """
        List the directory again at the next look-up (for a reload).
        """
        self._listedAt = None

    def filesFor(self, name: bytes) -> "tuple | None":
        """
        The C{(certificate, key, CA or None)} paths for the canonical server
        name C{name}, or L{None} if the directory has no certificate and
        key for it (inside it).
        """
        if name not in self._names:
            now = self._clock.seconds()
            if self._listedAt is not None and now - self._listedAt < self._rescanInterval:
                return None
            self._list()
            if name not in self._names:
                return None
        base = os.fsdecode(name)
        certificate = insideDirectory(self.root, base + ".crt")
        key = insideDirectory(self.root, base + ".key")
        if certificate is None or key is None:
            return None
        return certificate, key, insideDirectory(self.root, base + ".ca")
