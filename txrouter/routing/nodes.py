"""
Nodes: where a backend is and how to reach it.

Addresses are accepted in uWSGI's spelling (C{host:port}, C{:port},
C{/path}, C{@abstract}) and as Twisted client endpoint strings restricted to
the two transports a uwsgi backend listens on (C{tcp:host:port},
C{tcp:host=H:port=P}, C{unix:/path}, C{unix:path=/path}).

Connecting to a node is L{txrouter.transports.connectNode}'s job.
"""

import attr


class BadNodeAddress(ValueError):
    """
    A node address that is neither a uWSGI address nor a supported endpoint.
    """


@attr.frozen(cache_hash=True)
class Node:
    """
    One backend.

    Nodes are keys of the forwarders' tables on every request, so their
    hash is computed once.

    @ivar name: the address as uWSGI would print it (C{127.0.0.1:3031},
        C{/run/app.sock}, C{@name}); used in logs and stats.
    @ivar host: TCP host, or L{None} for a UNIX socket.
    @ivar port: TCP port (0 for UNIX).
    @ivar path: UNIX socket path (a leading NUL for the abstract namespace).
    @ivar modifier1: the uwsgi modifier1 this node wants.
    @ivar modifier2: the uwsgi modifier2 this node wants.
    """

    name: str
    host: "str | None" = None
    port: int = 0
    path: "str | None" = None
    modifier1: int = 0
    modifier2: int = 0


def _port(text: str, spec: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise BadNodeAddress(f"bad port in node address {spec!r}")
    return int(text)


def _endpointArgs(rest: str) -> "tuple[list, dict]":
    """
    Split the arguments of an endpoint string (C{a:b:k=v}, C{\\:} escapes).
    """
    parts, current, escaped = [], [], False
    for char in rest:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ":":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    args, kwargs = [], {}
    for part in parts:
        key, eq, value = part.partition("=")
        if eq:
            kwargs[key] = value
        else:
            args.append(part)
    return args, kwargs


def parseNode(spec: str, modifier1: int = 0, modifier2: int = 0) -> Node:
    """
    Parse a node address.

    @param spec: C{host:port}, C{:port} (127.0.0.1), C{/path} (any
        address without a colon is a unix socket path, as in uWSGI),
        C{@abstract}, C{tcp:host:port}, C{unix:/path}.
    @raise BadNodeAddress: anything else.
    """
    if not spec:
        raise BadNodeAddress("empty node address")
    if spec.startswith("tcp:") or spec.startswith("unix:"):
        kind, _, rest = spec.partition(":")
        args, kwargs = _endpointArgs(rest)
        if kind == "unix":
            path = kwargs.get("path", args[0] if args else "")
            if not path:
                raise BadNodeAddress(f"no path in {spec!r}")
            return Node(name=path, path=path, modifier1=modifier1, modifier2=modifier2)
        host = kwargs.get("host", args[0] if args else "")
        portText = kwargs.get("port", args[1] if len(args) > 1 else "")
        if not host:
            raise BadNodeAddress(f"no host in {spec!r}")
        port = _port(portText, spec)
        return Node(
            name=f"{host}:{port}", host=host, port=port,
            modifier1=modifier1, modifier2=modifier2,
        )
    if spec.startswith("@"):
        return Node(
            name=spec, path="\0" + spec[1:], modifier1=modifier1, modifier2=modifier2
        )
    if ":" not in spec or spec.startswith("/"):
        # uWSGI reads any address without a colon as a unix socket path.
        return Node(name=spec, path=spec, modifier1=modifier1, modifier2=modifier2)
    host, _, portText = spec.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    port = _port(portText, spec)
    return Node(
        name=spec, host=host or "127.0.0.1", port=port,
        modifier1=modifier1, modifier2=modifier2,
    )


def parseNodeValue(value) -> "list[Node]":
    """
    Parse a mapped value as C{--use-cache} and C{--use-code} return them:
    C{addr[,modifier1]}, or several of those joined by C{|} (balanced round
    robin by the caller).

    @param value: text or bytes (UTF-8).
    @raise BadNodeAddress: an empty or malformed entry.
    """
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            raise BadNodeAddress(f"mapped value is not UTF-8: {value[:64]!r}")
    nodes = []
    for entry in value.split("|"):
        entry = entry.strip()
        address, comma, modifier = entry.rpartition(",")
        if not comma:
            address, modifier = entry, ""
        elif not modifier.isdigit() or int(modifier) > 255:
            raise BadNodeAddress(f"bad modifier1 in mapped value {entry!r}")
        nodes.append(parseNode(address, modifier1=int(modifier or 0)))
    return nodes
