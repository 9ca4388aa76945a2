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
"""

import runpy

from twisted.internet.defer import CancelledError, Deferred
from twisted.python.reflect import namedAny
from zope.interface import implementer

from txrouter.routing.base import StatelessForwarder
from txrouter.routing.interfaces import ForwarderTimeout, IForwarder, NoNodeForKey
from txrouter.routing.nodes import Node, parseNodeValue
from txrouter.routing.rotation import KeyRotation


def loadCallable(spec: str):
    """
    Load C{MODULE:CALLABLE} (a dotted module path), or uWSGI's
    C{MOD1:SCRIPT:FUNC} (a script file and a function in it; MOD1 is
    ignored, the function is Python).

    @raise ValueError: the spec is malformed or names nothing callable.
    """
    parts = spec.split(":")
    if len(parts) == 3:
        _, script, name = parts
        namespace = runpy.run_path(script)
        function = namespace.get(name)
    elif len(parts) == 2 and all(parts):
        try:
            function = namedAny(f"{parts[0]}.{parts[1]}")
        except (AttributeError, ImportError) as e:
            raise ValueError(f"cannot load {spec!r}: {e}")
    else:
        raise ValueError(f"expected MODULE:CALLABLE or MOD1:SCRIPT:FUNC, not {spec!r}")
    if not callable(function):
        raise ValueError(f"{spec!r} is not callable")
    return function


@implementer(IForwarder)
class CodeForwarder(StatelessForwarder):
    """
    Key to node through a user function.

    @ivar timeout: seconds a Deferred answer may take.
    """

    def __init__(self, function, clock, timeout: float = 5.0) -> None:
        self.function = function
        self.clock = clock
        self.timeout = timeout
        self._rotation = KeyRotation()

    def pick(self, key, client=None):
        answer = self.function(key.decode("latin-1"))
        if not isinstance(answer, Deferred):
            return self._nodeFrom(answer, key)
        call = self.clock.callLater(self.timeout, answer.cancel)

        def settled(result):
            if call.active():
                call.cancel()
            return result

        def timedOut(failure):
            failure.trap(CancelledError)
            raise ForwarderTimeout(key)

        answer.addBoth(settled)
        answer.addErrback(timedOut)
        return answer.addCallback(self._nodeFrom, key)

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
