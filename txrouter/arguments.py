"""
The checks the Python API's constructors make of their arguments, so that
a C{.tac} file's mistake fails where it is made, saying what was expected,
instead of on every request later (a string where a node is expected
passes, then each request fails with an C{AttributeError}).

Each check names the keyword argument (the command-line option with
underscores) and raises C{TypeError} for a value of the wrong kind,
C{ValueError} for one of the right kind that cannot be.
"""

from numbers import Real

__all__ = [
    "checkCount", "checkFlag", "checkForwarder", "checkNodes", "checkReactor",
    "checkSeconds", "checkStrings",
]


def checkNodes(name: str, nodes) -> tuple:
    """
    C{nodes} as a tuple of nodes (L{txrouter.routing.nodes.Node}).

    @raise TypeError: C{nodes} is a string, not a sequence, or holds
        something else than nodes; the message shows C{parseNode}.
    """
    from txrouter.routing.nodes import Node

    if isinstance(nodes, (str, bytes)):
        raise TypeError(
            f"{name}: a list of nodes, not the string {nodes!r}"
            f" (write [parseNode({_text(nodes)!r})], parseNode from txrouter.routing.nodes)")
    try:
        nodes = tuple(nodes)
    except TypeError:
        raise TypeError(f"{name}: a list of nodes, not {nodes!r}") from None
    for node in nodes:
        if not isinstance(node, Node):
            hint = f" (parseNode({_text(node)!r}) makes one)" if isinstance(node, (str, bytes)) else ""
            raise TypeError(f"{name}: each a Node, not {node!r}{hint}")
    return nodes


def checkStrings(name: str, values, example: str) -> list:
    """
    C{values} as a list of strings (endpoint strings, addresses).

    @param example: a value of the list, shown when C{values} is one string.
    @raise TypeError: C{values} is one string, or holds something else.
    """
    if isinstance(values, (str, bytes)):
        raise TypeError(f"{name}: a list of strings ([{_text(values)!r}]), not the string {values!r}")
    values = list(values)
    for value in values:
        if not isinstance(value, str):
            raise TypeError(f"{name}: each a string such as {example!r}, not {value!r}")
    return values


def checkSeconds(name: str, value, optional: bool = False) -> None:
    """
    C{value} is a number of seconds, 0 or more (or L{None} if C{optional}).
    """
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name}: a number of seconds, not {value!r}")
    if value < 0:
        raise ValueError(f"{name}: must not be negative, not {value!r}")


def checkCount(name: str, value, optional: bool = False) -> None:
    """
    C{value} is a whole number, 0 or more (or L{None} if C{optional}).
    """
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: a whole number, not {value!r}")
    if value < 0:
        raise ValueError(f"{name}: must not be negative, not {value!r}")


def checkFlag(name: str, value) -> None:
    """
    C{value} is C{True} or C{False}.
    """
    if not isinstance(value, bool):
        raise TypeError(f"{name}: True or False, not {value!r}")


def checkForwarder(nodes, forwarder) -> None:
    """
    C{forwarder} is L{None} or an C{IForwarder} (it has C{pick}), and not
    given with C{nodes}, which only the default forwarder uses.
    """
    if forwarder is None:
        return
    if not callable(getattr(forwarder, "pick", None)):
        hint = ""
        if callable(getattr(forwarder, "get", None)):
            hint = " (a key/value store goes into CacheForwarder(store, reactor))"
        raise TypeError(f"forwarder: an IForwarder, not {forwarder!r}{hint}")
    if nodes:
        raise ValueError("give nodes or a forwarder, not both: the forwarder finds the nodes")


def checkReactor(reactor) -> None:
    """
    C{reactor} is a reactor (it has C{callLater}): the first argument of
    every router, easy to leave out.
    """
    if not callable(getattr(reactor, "callLater", None)):
        raise TypeError(
            f"reactor: the reactor (from twisted.internet import reactor) comes first, not {reactor!r}")


def _text(value) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else str(value)
