"""
Which context serves a client's SNI name, in uWSGI's order.

The name is checked first (L{txrouter.tls.names.canonicalServerName}); a
name that fails the check, or that nothing below knows, is served by the
listener's own context.  Then:

 1. exact names: C{--sni NAME ...} (the first given wins), then the
    contexts subscribers asked for (C{--subscription-sni}, see
    L{SubscriptionContexts});
 2. with C{--subscription-dotsplit}, the same for the name's dotted
    suffixes as uWSGI forms them (C{a.b.example.com}, then C{.b.example.com},
    C{.example.com}, C{.com}: at most five tries), and nothing else;
 3. C{--sni-regexp REGEXP ...}, in order: the first whose expression is
    found in the name (Python's C{re.search}, as uWSGI's unanchored PCRE
    match; the name is lower case);
 4. C{--sni-dir DIR}: C{DIR/<name>.crt} and C{.key} (and C{.ca} if there),
    with C{--sni-dir-ciphers} (see L{txrouter.tls.directory}).

Contexts for the names of 1 and 3 are built when the selector is made, so
a bad file stops the start; those of 4 and the subscribers' are built on
first use and kept in a bounded cache (least recently used dropped).  A
file that fails to load there is logged (C{sni_context_failed}) and not
tried again for C{retryInterval} seconds.  L{SNISelector.reload} (SIGHUP)
builds everything again.

Unlike uWSGI, whose C{--sni-regexp} and C{--sni-dir} contexts keep the
listener's client-certificate mode, a context chosen here brings its own
(as C{--sni} does in uWSGI).
"""

import re
from collections import OrderedDict

from twisted.logger import Logger

from txrouter.tls.contexts import ContextPolicy, buildContext, sessionIDContext
from txrouter.tls.credentials import loadCredentials
from txrouter.tls.directory import SNIDirectory, insideDirectory
from txrouter.tls.names import canonicalServerName

__all__ = [
    "SNISelector",
    "SubscriptionContexts",
    "serverNameOf",
    "DEFAULT_CACHE_SIZE",
    "DEFAULT_RETRY_INTERVAL",
]

log = Logger(namespace="txrouter.tls")

#: Contexts kept for C{--sni-dir} names, and for subscribers' names.
DEFAULT_CACHE_SIZE = 1000

#: Seconds a file that failed to load is not tried again.
DEFAULT_RETRY_INTERVAL = 30.0

#: uWSGI's bound on the dotted suffixes tried (C{count = 5}).
_DOTSPLIT_TRIES = 5


def serverNameOf(transport) -> "bytes | None":
    """
    The canonical SNI name of the TLS connection under C{transport} (what
    a protocol behind a TLS listener gets as its transport), or L{None}:
    no TLS, no name sent, or a name refused by the check.

    OpenSSL keeps the name the client sent with the connection; this reads
    it there and applies the same check the context selection did, so the
    routing key (a request without C{Host}, the SSL router's
    C{--sslrouter-sni}) is never a name the check refuses.
    """
    getHandle = getattr(transport, "getHandle", None)
    if getHandle is None:
        return None
    getServerName = getattr(getHandle(), "get_servername", None)
    if getServerName is None:
        return None
    return canonicalServerName(getServerName())


class _Recent:
    """
    A bounded mapping that forgets its least recently used entries.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._entries = OrderedDict()

    def get(self, key):
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
        return value

    def put(self, key, value) -> None:
        self._entries[key] = value
        self._entries.move_to_end(key)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


class _Failures:
    """
    Keys whose files failed to load, until C{retryInterval} has passed;
    bounded like L{_Recent}.
    """

    def __init__(self, clock, retryInterval: float, size: int) -> None:
        self._clock = clock
        self._retryInterval = retryInterval
        self._until = _Recent(size)

    def blocked(self, key) -> bool:
        until = self._until.get(key)
        return until is not None and self._clock.seconds() < until

    def failed(self, key) -> None:
        self._until.put(key, self._clock.seconds() + self._retryInterval)

    def clear(self) -> None:
        self._until.clear()


def _build(files, ciphers, name: str, policy):
    """
    A context for C{files} (C{(certificate, key, CA or None, required)}).

    @raise ValueError: from the files or C{ciphers}.
    """
    certificate, key, clientCA, required = files
    credentials = loadCredentials(certificate, key, clientCA, required)
    return buildContext(credentials, ciphers, sessionIDContext(name), policy)


class SubscriptionContexts:
    """
    The contexts subscribers ask for with C{sni_key}, C{sni_crt} and
    C{sni_ca}: files on this host, honoured only inside one of the
    allowed directories (resolved as in L{txrouter.tls.directory}, a link
    pointing outside refused), and only absolute paths.  Inline PEM
    (uWSGI's C{--ssl-tmp-dir}) is refused.  A context is built once per
    name and set of paths, and built again when a subscriber announces
    other paths.
    """

    def __init__(
        self,
        lookup,
        allowedDirectories,
        ciphers: "str | None" = None,
        policy: ContextPolicy = ContextPolicy(),
        clock=None,
        cacheSize: int = DEFAULT_CACHE_SIZE,
        retryInterval: float = DEFAULT_RETRY_INTERVAL,
    ) -> None:
        """
        @param lookup: called with a canonical server name (C{bytes}), returns
            the C{(sni_key, sni_crt, sni_ca)} byte strings announced for it
            (C{sni_ca} may be L{None}), or L{None}.
        @param allowedDirectories: the directories the files may be in.
        @param ciphers: C{--sni-dir-ciphers}, as uWSGI uses for these.
        @param clock: an C{IReactorTime}.
        @raise ValueError: an allowed directory is not one.
        """
        self._lookup = lookup
        self._directories = [SNIDirectory(d, clock).root for d in allowedDirectories]
        self._ciphers = ciphers
        self._policy = policy
        self._contexts = _Recent(cacheSize)
        self._failures = _Failures(clock, retryInterval, cacheSize)

    def _allowed(self, value) -> "str | None":
        if value is None:
            return None
        if value.startswith(b"-----BEGIN "):
            raise ValueError("inline PEM is not accepted, only paths")
        if not value.startswith(b"/"):
            raise ValueError(f"{value!r} is not an absolute path")
        for directory in self._directories:
            path = insideDirectory(directory, value.decode("utf-8", "surrogateescape"))
            if path is not None:
                return path
        raise ValueError(f"{value!r} is not a file inside the allowed directories")

    def contextFor(self, name: bytes):
        """
        The context for C{name}, or L{None}.
        """
        announced = self._lookup(name)
        if not announced:
            return None
        cached = self._contexts.get(name)
        if cached is not None and cached[0] == announced:
            return cached[1]
        if self._failures.blocked((name, announced)):
            return None
        sniKey, sniCrt, sniCa = announced
        try:
            files = (self._allowed(sniCrt), self._allowed(sniKey), self._allowed(sniCa), False)
            context = _build(files, self._ciphers, name.decode("ascii"), self._policy)
        except ValueError as e:
            self._failures.failed((name, announced))
            log.warn(
                "sni_context_failed: subscription SNI for {name}: {reason}",
                event="sni_context_failed", name=name.decode("ascii"), reason=str(e),
            )
            return None
        self._contexts.put(name, (announced, context))
        return context

    def reload(self) -> None:
        self._contexts.clear()
        self._failures.clear()


def _staticContexts(specs, option: str, policy, canonical: bool):
    built = []
    for spec in specs:
        files = spec.files
        try:
            context = _build(
                (files.certificate, files.key, files.clientCA, files.clientCertificateRequired),
                files.ciphers, spec.name, policy)
        except ValueError as e:
            raise ValueError(f"{option} {spec.name}: {e}") from None
        built.append((spec.name.encode("ascii") if canonical else re.compile(spec.name), context))
    return built


class SNISelector:
    """
    The contexts of a router's SNI names (see the module's docstring).

    Install L{onServerName} on the listeners' contexts
    (C{buildContext(..., onServerName=selector.onServerName)}).
    """

    def __init__(
        self,
        names=(),
        patterns=(),
        directory: "str | None" = None,
        directoryCiphers: "str | None" = None,
        subscriptions: "SubscriptionContexts | None" = None,
        policy: ContextPolicy = ContextPolicy(),
        clock=None,
        dotsplit: bool = False,
        cacheSize: int = DEFAULT_CACHE_SIZE,
        retryInterval: float = DEFAULT_RETRY_INTERVAL,
    ) -> None:
        """
        @param names: the L{txrouter.tls.specs.SNISpec}s of C{--sni}.
        @param patterns: those of C{--sni-regexp}.
        @param directory: C{--sni-dir}, or L{None}.
        @param directoryCiphers: C{--sni-dir-ciphers}, or L{None}.
        @param clock: an C{IReactorTime}.
        @raise ValueError: a file of C{names} or C{patterns} is wrong, or
            C{directory} is not one; the message names the option.
        """
        self._nameSpecs = tuple(names)
        self._patternSpecs = tuple(patterns)
        self._policy = policy
        self._subscriptions = subscriptions
        self._dotsplit = dotsplit
        self._directoryCiphers = directoryCiphers
        try:
            self._directory = SNIDirectory(directory, clock) if directory is not None else None
        except ValueError as e:
            raise ValueError(f"--sni-dir: {e}") from None
        self._directoryContexts = _Recent(cacheSize)
        self._failures = _Failures(clock, retryInterval, cacheSize)
        self._exact, self._patterns = self._buildStatic()

    def _buildStatic(self):
        exact = {}
        for name, context in _staticContexts(self._nameSpecs, "--sni", self._policy, True):
            exact.setdefault(name, context)
        patterns = _staticContexts(self._patternSpecs, "--sni-regexp", self._policy, False)
        return exact, patterns

    def reload(self) -> None:
        """
        Read every file again: the C{--sni} and C{--sni-regexp} ones now,
        the others when next asked for.

        @raise ValueError: as the constructor; the contexts in use are then
            kept.
        """
        self._exact, self._patterns = self._buildStatic()
        self._directoryContexts.clear()
        self._failures.clear()
        if self._directory is not None:
            self._directory.forget()
        if self._subscriptions is not None:
            self._subscriptions.reload()

    def _exactContext(self, name: bytes):
        context = self._exact.get(name)
        if context is None and self._subscriptions is not None:
            context = self._subscriptions.contextFor(name)
        return context

    def contextFor(self, name: bytes):
        """
        The context serving the canonical server name C{name}, or L{None}
        for the listener's own.
        """
        context = self._exactContext(name)
        if context is not None:
            return context
        if self._dotsplit:
            suffix = name
            for _ in range(_DOTSPLIT_TRIES):
                dot = suffix.find(b".", 1)
                if dot < 0:
                    return None
                suffix = suffix[dot:]
                context = self._exactContext(suffix)
                if context is not None:
                    return context
            return None
        if self._patterns:
            text = name.decode("ascii")
            for pattern, context in self._patterns:
                if pattern.search(text):
                    return context
        if self._directory is not None:
            return self._directoryContext(name)
        return None

    def _directoryContext(self, name: bytes):
        context = self._directoryContexts.get(name)
        if context is not None:
            return context
        if self._failures.blocked(name):
            return None
        found = self._directory.filesFor(name)
        if found is None:
            return None
        certificate, key, clientCA = found
        try:
            context = _build(
                (certificate, key, clientCA, False), self._directoryCiphers,
                name.decode("ascii"), self._policy)
        except ValueError as e:
            self._failures.failed(name)
            log.warn(
                "sni_context_failed: --sni-dir context for {name}: {reason}",
                event="sni_context_failed", name=name.decode("ascii"), reason=str(e),
            )
            return None
        self._directoryContexts.put(name, context)
        return context

    def onServerName(self, connection) -> None:
        """
        The server-name callback of a listener's context: switch
        C{connection} (an C{OpenSSL.SSL.Connection} in its handshake) to
        the context of its SNI name, and to that context's
        client-certificate mode.
        """
        name = canonicalServerName(connection.get_servername())
        if name is None:
            return
        context = self.contextFor(name)
        if context is not None:
            connection.set_context(context)
            connection.set_verify(context.get_verify_mode())
