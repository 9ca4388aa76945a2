"""
The datagram addresses of the subscription system, in uWSGI's spelling.

C{--subscription-server}, C{--resubscribe} and the C{notify} var name a
datagram socket as uWSGI does: C{ip:port} (UDP; C{:port} for every IPv4
interface when listening, 127.0.0.1 when sending), C{/path} (a unix
datagram socket) or C{@name} (an abstract one).  A router announces
itself to another with the uWSGI address of its first listener, derived
from the Twisted endpoint string it was bound with.
"""

import ipaddress
import socket

import attr

__all__ = ["DatagramAddress", "parseDatagramAddress", "uwsgiAddressOfEndpoint"]


@attr.frozen
class DatagramAddress:
    """
    A parsed datagram address.

    @ivar text: as given.
    @ivar family: C{socket.AF_INET}, C{AF_INET6} or C{AF_UNIX}.
    @ivar host: the IP address text (C{""} for every interface), or
        L{None} for a unix socket.
    @ivar port: the UDP port (0 for a unix socket).
    @ivar path: the unix socket path (a leading NUL for an abstract
        name), or L{None}.
    """

    text: str
    family: int
    host: "str | None" = None
    port: int = 0
    path: "str | None" = None

    def sendTo(self):
        """
        The C{sendto} address: unspecified hosts become loopback.
        """
        if self.path is not None:
            return self.path
        if self.host in ("", "0.0.0.0"):
            return ("127.0.0.1", self.port)
        if self.host == "::":
            return ("::1", self.port)
        return (self.host, self.port)


def parseDatagramAddress(text: str, listen: bool = False) -> DatagramAddress:
    """
    Parse C{ip:port}, C{:port}, C{[v6]:port}, C{/path} or C{@name}.

    @param listen: the address is one to listen on, where port 0 (any
        free port) makes sense.
    @raise ValueError: anything else (host names included: uWSGI resolves
        none either).
    """
    if text.startswith("@") and len(text) > 1:
        return DatagramAddress(text, socket.AF_UNIX, path="\0" + text[1:])
    if text.startswith("/"):
        return DatagramAddress(text, socket.AF_UNIX, path=text)
    host, colon, port = text.rpartition(":")
    if (not colon or not (port.isascii() and port.isdigit())
            or not (0 if listen else 1) <= int(port) < 65536):
        raise ValueError(f"not ip:port, :port, /path or @name: {text!r}")
    family = socket.AF_INET
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        family = socket.AF_INET6
        if not host:
            raise ValueError(f"{text!r}: no IPv6 address in the brackets")
    if host:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"{text!r}: the host must be an IP address") from None
        if (address.version == 6) != (family == socket.AF_INET6):
            raise ValueError(f"{text!r}: write an IPv6 address in brackets")
    return DatagramAddress(text, family, host=host, port=int(port))


def _endpointFields(description: str) -> "tuple[str, list, dict]":
    """
    The kind, positional and keyword arguments of an endpoint string
    (C{\\:} escapes a colon).
    """
    parts, current, escaped = [], [], False
    for char in description:
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
    kind, args, kwargs = parts[0], [], {}
    for part in parts[1:]:
        name, eq, value = part.partition("=")
        if eq:
            kwargs[name] = value
        else:
            args.append(part)
    return kind, args, kwargs


def uwsgiAddressOfEndpoint(description: str) -> "str | None":
    """
    The uWSGI address another router connects to for a listener bound
    with the Twisted endpoint C{description}: C{tcp:3017:interface=1.2.3.4}
    gives C{1.2.3.4:3017}, C{tcp:3017} gives C{:3017} (a txrouter
    receiver completes it with the sender's address), C{unix:/run/r.sock}
    gives C{/run/r.sock}.

    @return: L{None} for an endpoint with no such address (C{ssl:},
        C{systemd:}, ...).
    """
    kind, args, kwargs = _endpointFields(description)
    if kind in ("tcp", "tcp6"):
        port = kwargs.get("port", args[0] if args else "")
        interface = kwargs.get("interface", args[2] if len(args) > 2 else "")
        if not port.isdigit():
            return None
        if interface in ("", "0.0.0.0", "::"):
            return f":{port}"
        if ":" in interface:
            return f"[{interface}]:{port}"
        return f"{interface}:{port}"
    if kind == "unix":
        path = kwargs.get("address", args[0] if args else "")
        return path or None
    return None
