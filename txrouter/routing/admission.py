"""
Who may subscribe, and which node addresses they may announce.

uWSGI accepts any subscription from anyone who can reach its UDP port,
for any address: a subscriber can point a key at an internal service
(C{127.0.0.1:6379}, a cloud metadata address, the router's own listener)
and have the router connect there (reference section 2.13, items 2 and
8).  These two values decide what the subscription registry admits:

  - L{SourcePolicy}: which datagram senders are heard at all
    (C{--subscription-allow CIDR}, any sender when none is given);
  - L{AddressPolicy}: which announced addresses become nodes
    (C{--subscription-node-network}, C{--subscription-node-ports},
    C{--subscription-node-dir}).

The default address policy lets a subscriber announce only itself: a TCP
address must be the datagram's own source address (a local sender, on
loopback or a unix datagram socket, may announce any loopback address), on
a port from 1024 up, and never one of the router's own listening ports on
loopback; unix socket addresses are refused until their directory is
listed.  The typical setup, workers on the router's host announcing
C{127.0.0.1:3031} to C{127.0.0.1:7000}, works unchanged, and so do
workers on other hosts announcing their own address.

What a node speaks comes from uWSGI 2.1's C{proto} var (L{nodeProtocol}).

Nothing here does I/O.
"""

import ipaddress
import posixpath

import attr

from txrouter.routing.nodes import HTTP, UWSGI, Node
from txrouter.wire.subscription import SubscriptionError

__all__ = [
    "SOURCE",
    "DEFAULT_PORTS",
    "SourcePolicy",
    "AddressPolicy",
    "nodeProtocol",
    "parseNetwork",
    "parsePortRange",
]

#: The network name meaning "the subscriber's own address".
SOURCE = "source"

#: Ports a TCP node may have by default: the unprivileged ones.
DEFAULT_PORTS = ((1024, 65535),)

#: The host of C{:port} and C{0.0.0.0:port} from a unix datagram sender.
_LOOPBACK = ipaddress.ip_address("127.0.0.1")


def parseNetwork(text: str):
    """
    An C{ipaddress} network from C{10.0.0.0/8}, C{192.168.1.7} or C{::1/128}.

    @raise ValueError: not a network.
    """
    return ipaddress.ip_network(text.strip(), strict=False)


def parsePortRange(text: str) -> "tuple[int, int]":
    """
    C{(low, high)} from C{3031} or C{1024-65535}.

    @raise ValueError: not a port or a range of ports within 1..65535.
    """
    low, dash, high = text.strip().partition("-")
    if not low.isdigit() or (dash and not high.isdigit()):
        raise ValueError(f"not a port or PORT-PORT range: {text!r}")
    low, high = int(low), int(high if dash else low)
    if not 1 <= low <= high <= 65535:
        raise ValueError(f"ports must be within 1..65535, low first: {text!r}")
    return low, high


def nodeProtocol(proto) -> str:
    """
    The protocol of a node announced with this C{proto} var.

    uWSGI 2.1 keeps the first byte: C{h} is plain HTTP, C{u} (or no
    C{proto}, or an empty one) is uwsgi; C{f} (FastCGI) and C{s} (SCGI)
    are protocols txrouter does not speak, refused rather than spoken to in
    uwsgi as uWSGI 2.1's HTTP router does.

    @param proto: the var's bytes, or L{None} when absent.
    @return: L{txrouter.routing.nodes.UWSGI} or L{txrouter.routing.nodes.HTTP}.
    @raise SubscriptionError: C{unsupported_proto}.
    """
    first = proto[:1] if proto else b"u"
    if first == b"h":
        return HTTP
    if first == b"u":
        return UWSGI
    raise SubscriptionError(
        "unsupported_proto",
        f"proto {proto[:16]!r}: only uwsgi (u) and http (h) nodes are spoken to",
    )


def _ip(text):
    """
    An IP address, IPv4-mapped IPv6 addresses reduced to IPv4; L{None}
    for anything else (a host name, a unix socket sender).
    """
    if not text:
        return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if address.version == 6 and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@attr.frozen
class SourcePolicy:
    """
    Which senders may subscribe.

    @ivar networks: the allowed networks; empty allows every sender.
        Datagrams received on a unix socket (sender L{None}) are always
        heard: the socket file's permissions decide who can send them.
    """

    networks: tuple = attr.field(default=(), converter=lambda items: tuple(
        parseNetwork(n) if isinstance(n, str) else n for n in items
    ))

    def check(self, source) -> None:
        """
        @param source: the sender's IP address text, or L{None} for a unix
            datagram socket.
        @raise SubscriptionError: C{source_not_allowed}.
        """
        if not self.networks or source is None:
            return
        address = _ip(source)
        if address is None or not any(address in network for network in self.networks):
            raise SubscriptionError(
                "source_not_allowed", f"{source} is not in --subscription-allow"
            )


def _convertNetworks(items) -> tuple:
    return tuple(
        SOURCE if item == SOURCE else parseNetwork(item) if isinstance(item, str) else item
        for item in items
    )


def _convertPorts(items) -> tuple:
    return tuple(parsePortRange(item) if isinstance(item, str) else tuple(item) for item in items)


def _convertDirectories(items) -> tuple:
    converted = []
    for item in items:
        if item.startswith("@"):
            converted.append(item)
        elif not item.startswith("/"):
            raise ValueError(f"a node directory must be absolute (or @prefix): {item!r}")
        else:
            converted.append(posixpath.normpath(item))
    return tuple(converted)


@attr.frozen
class AddressPolicy:
    """
    Which announced addresses may become nodes, and how incomplete ones
    are completed.

    @ivar networks: where a TCP node may be: networks, and L{SOURCE} for
        the sender's own address (a local sender: any loopback address).
    @ivar ports: C{(low, high)} ranges a TCP node's port must be in.
    @ivar directories: absolute directories a unix socket node must be
        inside, and C{@prefix} entries for abstract socket names starting
        with C{@prefix} (C{@} alone admits every abstract name).
    @ivar ownPorts: the router's own TCP listening ports, refused on
        loopback addresses so that a pool cannot loop back into the
        router.
    """

    networks: tuple = attr.field(default=(SOURCE,), converter=_convertNetworks)
    ports: tuple = attr.field(default=DEFAULT_PORTS, converter=_convertPorts)
    directories: tuple = attr.field(default=(), converter=_convertDirectories)
    ownPorts: frozenset = attr.field(default=frozenset(), converter=frozenset)

    def admit(
        self, address: bytes, source, modifier1: int = 0, modifier2: int = 0,
        protocol: str = UWSGI,
    ) -> Node:
        """
        The node an announced address stands for, if it may be one.

        C{:port}, C{0.0.0.0:port} and C{[::]:port} are completed with the
        sender's address (127.0.0.1 for a unix datagram sender): uWSGI
        connects to C{0.0.0.0:port}, that is to its own host, and a uWSGI
        instance bound to C{0.0.0.0:PORT} or C{:PORT} announces exactly
        that.

        @param address: the C{address} var.
        @param source: the sender's IP address text, or L{None} for a unix
            datagram socket.
        @param protocol: what the node speaks (L{nodeProtocol}).
        @return: a L{Node} named by its completed address.
        @raise SubscriptionError: C{bad_address} (not an IP C{host:port},
            C{/path} or C{@name}: host names, relative paths, bad ports),
            C{address_not_allowed} (outside the policy).
        """
        try:
            text = address.decode("ascii")
        except UnicodeDecodeError:
            raise SubscriptionError("bad_address", f"non-ASCII address {address[:64]!r}") from None
        if any(ord(c) < 0x21 or ord(c) == 0x7F for c in text):
            raise SubscriptionError("bad_address", f"control byte or space in {address[:64]!r}")
        node = dict(modifier1=modifier1, modifier2=modifier2, protocol=protocol)
        if text.startswith("@"):
            self._checkAbstract(text)
            return Node(name=text, path="\0" + text[1:], **node)
        if text.startswith("/"):
            self._checkPath(text)
            return Node(name=text, path=text, **node)
        if ":" not in text:
            raise SubscriptionError(
                "bad_address",
                f"relative socket path {text!r}: the router cannot know its directory",
            )
        return self._tcpNode(text, source, node)

    def admitNotify(self, path: bytes) -> "str | None":
        """
        The unix datagram path to acknowledge a new node to, if the
        directory policy allows it (the C{notify} var names a socket the
        router writes to).

        @return: the path (a leading NUL for an abstract name), or L{None}.
        """
        try:
            text = path.decode("ascii")
            if text.startswith("@"):
                self._checkAbstract(text)
                return "\0" + text[1:]
            if text.startswith("/"):
                self._checkPath(text)
                return text
        except (UnicodeDecodeError, SubscriptionError):
            pass
        return None

    def _checkAbstract(self, text: str) -> None:
        if not any(d.startswith("@") and text.startswith(d) for d in self.directories):
            raise SubscriptionError(
                "address_not_allowed",
                f"abstract socket {text!r} is not under a --subscription-node-dir @prefix",
            )

    def _checkPath(self, text: str) -> None:
        normal = posixpath.normpath(text)
        for directory in self.directories:
            if directory.startswith("@"):
                continue
            if normal.startswith(directory.rstrip("/") + "/"):
                return
        raise SubscriptionError(
            "address_not_allowed", f"socket {text!r} is not inside a --subscription-node-dir"
        )

    def _tcpNode(self, text: str, source, node: dict) -> Node:
        hostText, _, portText = text.rpartition(":")
        if not portText.isdigit() or len(portText) > 5 or not 0 < int(portText) < 65536:
            raise SubscriptionError("bad_address", f"bad port in {text!r}")
        port = int(portText)
        bracketed = hostText.startswith("[") and hostText.endswith("]")
        if bracketed:
            hostText = hostText[1:-1]
        sender = _ip(source)
        host = None
        if hostText:
            host = _ip(hostText)
            if host is None or (host.version == 6) != bracketed:
                raise SubscriptionError(
                    "bad_address", f"{text!r}: the host must be an IP address ([v6] in brackets)"
                )
        if host is None or host.is_unspecified:
            host = sender if sender is not None else _LOOPBACK
        if host.is_unspecified or host.is_multicast:
            raise SubscriptionError("address_not_allowed", f"{text!r}: not a unicast address")
        if not any(low <= port <= high for low, high in self.ports):
            raise SubscriptionError(
                "address_not_allowed",
                f"port {port} of {text!r} is not in --subscription-node-ports",
            )
        if host.is_loopback and port in self.ownPorts:
            raise SubscriptionError(
                "address_not_allowed", f"{text!r} is one of the router's own listeners"
            )
        if not self._inNetworks(host, sender):
            raise SubscriptionError(
                "address_not_allowed",
                f"{text!r} is not the subscriber ({source or 'local'}) itself"
                " nor in a --subscription-node-network",
            )
        name = f"[{host}]:{port}" if host.version == 6 else f"{host}:{port}"
        return Node(name=name, host=str(host), port=port, **node)

    def _inNetworks(self, host, sender) -> bool:
        for network in self.networks:
            if network == SOURCE:
                if sender is None or sender.is_loopback:
                    if host.is_loopback:
                        return True
                elif host == sender:
                    return True
            elif host.version == network.version and host in network:
                return True
        return False
