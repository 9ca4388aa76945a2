"""
The code forwarder (C{--use-code MODULE:CALLABLE}): the user's function maps
the key.

uWSGI's C{--R-use-code-string MOD1:SCRIPT:FUNC} runs the function inside its
event loop; so does this one, but a function may also return a Deferred,
and that answer gets a deadline: a function that is slow (504) or raises
(502) fails its request with a log line instead of holding the session.

The function gets the key as text (decoded as Latin-1, so no byte is lost)
and returns C{addr[,mod1]} (also C{a|b} or a list of those, balanced round
robin), a L{Node}, L{None} for "no node for this key", or a Deferred of any
of them.

L{withDeadline} is the deadline itself, which the cache forwarder gives
stores that answer later too.
"""

import importlib
import os
import runpy
import sys

from twisted.internet.defer import CancelledError, Deferred
from zope.interface import implementer

from txrouter.arguments import checkSeconds
from txrouter.routing.base import StatelessForwarder
from txrouter.routing.interfaces import ForwarderTimeout, IForwarder, NoNodeForKey
from txrouter.routing.nodes import Node, parseNodeValue
from txrouter.routing.rotation import KeyRotation


def loadCallable(spec: str):
    """
    Load C{MODULE:CALLABLE} (a dotted module path), or uWSGI's
    C{MOD1:SCRIPT:FUNC} (a script file and a function in it; MOD1 is
    ignored, the function is Python).

    @raise ValueError: the spec is malformed, the module or script cannot
        be loaded (missing, a syntax error, an exception while it runs), or
        it names nothing callable; the message says which.
    """
    parts = spec.split(":")
    if len(parts) == 3 and all(parts[1:]):
        _, script, name = parts
        try:
            namespace = runpy.run_path(script)
        except Exception as e:
            raise ValueError(f"cannot run {script!r}: {_describe(e)}") from None
        if name not in namespace:
            raise ValueError(f"{script!r} defines no {name!r}")
        function = namespace[name]
    elif len(parts) == 2 and all(parts):
        try:
            function = _importFromPathOrHere(parts[0], parts[1])
        except Exception as e:
            raise ValueError(f"cannot load {spec!r}: {_describe(e)}") from None
    else:
        raise ValueError(f"expected MODULE:CALLABLE or MOD1:SCRIPT:FUNC, not {spec!r}")
    if not callable(function):
        raise ValueError(f"{spec!r} is not callable")
    return function


def _importFromPathOrHere(module: str, name: str):
    """
    C{module.name}, imported from the Python path, or else from the current
    directory: twistd's own directory, not the one it was started in, heads
    its path, and C{--use-code myrouting:route} next to the command line
    is what a user means.  The directory stays on the path, for the
    module's own imports.

    @raise AttributeError: the module has no C{name}.
    """
    try:
        loaded = importlib.import_module(module)
    except ModuleNotFoundError as e:
        here = os.getcwd()
        if e.name != module.partition(".")[0] or here in sys.path:
            raise
        sys.path.append(here)
        loaded = importlib.import_module(module)
    return getattr(loaded, name)


def _describe(error: Exception) -> str:
    """
    One line about why loading user code failed.
    """
    if isinstance(error, SyntaxError):
        return f"syntax error at line {error.lineno}: {error.msg}"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return f"{type(error).__name__}: {error}"


def withDeadline(answer: Deferred, clock, timeout: float, key: bytes) -> Deferred:
    """
    Give a forwarder's later answer C{timeout} seconds: past them it is
    cancelled and fails with L{ForwarderTimeout}, so a slow lookup costs
    the client a 504, not a stuck session.  Cancelled by its caller (the
    client left), it fails with C{CancelledError} as usual.

    @return: C{answer}, with the deadline's callbacks added.
    """
    expired = []

    def expire():
        expired.append(True)
        answer.cancel()

    call = clock.callLater(timeout, expire)

    def settled(result):
        if call.active():
            call.cancel()
        return result

    def timedOut(failure):
        if expired and failure.check(CancelledError):
            raise ForwarderTimeout(key)
        return failure

    return answer.addBoth(settled).addErrback(timedOut)


@implementer(IForwarder)
class CodeForwarder(StatelessForwarder):
    """
    Key to node through a user function.

    @ivar timeout: seconds a Deferred answer may take.
    """

    def __init__(self, function, clock, timeout: float = 5.0) -> None:
        if not callable(function):
            raise TypeError(f"function: a callable taking the key, not {function!r}"
                            " (txrouter.routing.code.loadCallable('MODULE:NAME') loads one)")
        checkSeconds("timeout", timeout)
        self.function = function
        self.clock = clock
        self.timeout = timeout
        self._rotation = KeyRotation()

    def pick(self, key, client=None):
        answer = self.function(key.decode("latin-1"))
        if not isinstance(answer, Deferred):
            return self._nodeFrom(answer, key)
        return withDeadline(answer, self.clock, self.timeout, key).addCallback(self._nodeFrom, key)

    def _nodeFrom(self, answer, key):
        if answer is None:
            raise NoNodeForKey(key)
        if isinstance(answer, Node):
            return answer
        if not isinstance(answer, (list, tuple)):
            answer = [answer]
        nodes = []
        for item in answer:
            nodes.extend([item] if isinstance(item, Node) else parseNodeValue(item))
        if not nodes:
            raise NoNodeForKey(key)
        return self._rotation.choose(key, nodes)
