"""
Nodes: where a backend is and how to reach it.

Addresses are accepted in uWSGI's spelling (C{host:port}, C{:port},
C{/path}, C{@abstract}) and as Twisted client endpoint strings restricted to
the two transports a uwsgi backend listens on (C{tcp:host:port},
C{tcp:host=H:port=P}, C{unix:/path}, C{unix:path=/path}).

A node speaks the uwsgi protocol unless its address says otherwise: an
C{http://} address (C{http://host:port}, C{http://[v6]:port},
C{http://unix:/path}, C{http://unix:@abstract}) is a plain HTTP/1.1 server
(uWSGI 2.1's subscription C{proto} C{h}, or its C{--http-backend-http}).

Connecting to a node is L{txrouter.transports.connectNode}'s job.
"""

import attr


#: The node speaks the uwsgi protocol (the default).
UWSGI = "uwsgi"

#: The node is a plain HTTP/1.1 server.
HTTP = "http"

#: The protocols a node may speak.
PROTOCOLS = (UWSGI, HTTP)

_HTTP_PREFIX = "http://"
_HTTP_UNIX = "unix:"


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
    @ivar protocol: how requests are written to it: L{UWSGI} (a uwsgi
        packet) or L{HTTP} (an HTTP/1.1 request).
    """

    name: str
    host: "str | None" = None
    port: int = 0
    path: "str | None" = None
    modifier1: int = 0
    modifier2: int = 0
    protocol: str = attr.field(default=UWSGI, validator=attr.validators.in_(PROTOCOLS))

    def __attrs_post_init__(self) -> None:
        # Built by hand in a .tac: a node must say where it is.
        if not isinstance(self.name, str):
            raise TypeError(f"Node name: a string, not {self.name!r}")
        if (self.host is None) == (self.path is None):
            raise ValueError(
                f"Node {self.name!r}: give a host and port, or a path, not"
                f" {'both' if self.host is not None else 'neither'}"
                f" (parseNode({self.name!r}) makes a node from an address)")


def _port(text: str, spec: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 0 < int(text) < 65536:
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


def _parseHTTPNode(spec: str, modifier1: int, modifier2: int) -> Node:
    """
    Parse the part after C{http://}: C{host:port} (an IPv6 host in
    brackets), C{unix:/path} or C{unix:@abstract}.  Nothing may follow
    (no path, query or credentials): a node is an address, not a URL.
    """
    rest = spec[len(_HTTP_PREFIX):]
    named = dict(name=spec, modifier1=modifier1, modifier2=modifier2, protocol=HTTP)
    if rest.startswith(_HTTP_UNIX):
        path = rest[len(_HTTP_UNIX):]
        if path.startswith("@") and len(path) > 1:
            return Node(path="\0" + path[1:], **named)
        if path.startswith("/") and len(path) > 1:
            return Node(path=path, **named)
        raise BadNodeAddress(f"{spec!r}: want http://unix:/PATH or http://unix:@NAME")
    if any(c in rest for c in "/?#@") or any(ord(c) < 0x21 or ord(c) == 0x7F for c in rest):
        raise BadNodeAddress(f"{spec!r}: want http://HOST:PORT, with no path")
    if rest.startswith("["):
        host, bracket, portText = rest[1:].partition("]")
        if not bracket or not host or not portText.startswith(":"):
            raise BadNodeAddress(f"{spec!r}: want http://[IPV6]:PORT")
        portText = portText[1:]
    else:
        host, colon, portText = rest.partition(":")
        if not host or not colon or ":" in portText:
            raise BadNodeAddress(f"{spec!r}: want http://HOST:PORT")
    return Node(host=host, port=_port(portText, spec), **named)


def parseNode(spec: str, modifier1: int = 0, modifier2: int = 0) -> Node:
    """
    Parse a node address.

    @param spec: C{host:port}, C{:port} (127.0.0.1), C{/path} (any
        address without a colon is a unix socket path, as in uWSGI),
        C{@abstract}, C{tcp:host:port}, C{unix:/path}: a uwsgi node;
        C{http://host:port}, C{http://unix:/path}, C{http://unix:@name}:
        an HTTP node.
    @raise BadNodeAddress: anything else (C{https://}, say: the message
        says what is meant instead).
    """
    if not isinstance(spec, str):
        raise TypeError(f"a node address is a string ('/run/app.sock', '127.0.0.1:3031'), not {spec!r}")
    if not spec:
        raise BadNodeAddress("empty node address")
    if spec.startswith(_HTTP_PREFIX):
        return _parseHTTPNode(spec, modifier1, modifier2)
    scheme, separator, _ = spec.partition("://")
    if separator:
        raise BadNodeAddress(
            f"{scheme}:// is no node address ({spec!r}): an HTTP node is http://HOST:PORT"
            " (nodes are not spoken to over TLS), a uwsgi node HOST:PORT or a socket path"
        )
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
    robin by the caller); C{addr} may be an C{http://} address.

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
