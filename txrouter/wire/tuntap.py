"""
The TunTap router's wire: uWSGI's framing of IPv4 packets on its unix
socket, and its firewall and route rules (reference section 9).

A frame is a uwsgi header, C{[modifier1 0][u16 LE size][modifier2]}, then
C{size} bytes: with modifier2 0 one IPv4 packet, with modifier2 1 the
block of device rules a C{uwsgi --tuntap-device-rule} client sends after
connecting.  Both directions frame alike.

Rules are uWSGI's: C{ACTION SRC[/BITS] DST[/BITS]} (or a bare C{allow} or
C{deny} matching every packet) for the firewall chains, C{SRC[/BITS]
DST[/BITS] IP:PORT} for routes; an address C{0.0.0.0} matches any, the
first rule that matches decides, and a packet no rule matches is allowed.
"""

import ipaddress
import struct

import attr

__all__ = [
    "ALLOW",
    "BadPacket",
    "DENY",
    "FirewallRule",
    "FrameParser",
    "IPPacket",
    "RouteRule",
    "RuleBlock",
    "TunTapFrameError",
    "decide",
    "encodeFrame",
    "packetAddresses",
    "parseFirewallRule",
    "parseRouteRule",
    "routeFor",
]

ALLOW = "allow"
DENY = "deny"

#: The largest packet the router takes (its device's MTU is lower).
MAX_PACKET = 65535

#: The smallest IPv4 header.
MIN_PACKET = 20

_HEADER = struct.Struct("<BHB")
_ADDRESSES = struct.Struct("!II")

PACKET = 0
RULES = 1


class TunTapFrameError(ValueError):
    """
    A frame or packet that is refused; C{event} is the stable event name
    (C{tuntap_bad_frame}, C{tuntap_not_ipv4}, C{tuntap_too_large}),
    C{detail} says what was wrong.
    """

    def __init__(self, event: str, detail: str) -> None:
        super().__init__(f"{event}: {detail}")
        self.event = event
        self.detail = detail


@attr.frozen
class IPPacket:
    """
    One IPv4 packet from a frame of modifier2 0.

    @ivar data: the packet, header included.
    @ivar source: its source address, a host-order integer.
    @ivar destination: its destination address, a host-order integer.
    """

    data: bytes
    source: int
    destination: int


@attr.frozen
class BadPacket:
    """
    A well-framed packet that is not IPv4 (an IPv6 packet a peer's kernel
    sent, a runt): to be dropped, the stream is still in step.

    @ivar event: the stable event name, C{tuntap_not_ipv4}.
    """

    data: bytes
    event: str
    detail: str


@attr.frozen
class RuleBlock:
    """
    A frame of modifier2 1: device rules pushed by a client (kept as
    bytes; the router does not apply them).
    """

    data: bytes


def packetAddresses(packet: bytes) -> "tuple[int, int]":
    """
    The source and destination of an IPv4 packet, host-order integers.

    @raise TunTapFrameError: C{packet} is not an IPv4 packet (version 4,
        a header length of at least 20 bytes within the packet).
    """
    if len(packet) < MIN_PACKET:
        raise TunTapFrameError("tuntap_not_ipv4", f"a packet of {len(packet)} bytes")
    version, words = packet[0] >> 4, packet[0] & 0x0F
    if version != 4:
        raise TunTapFrameError("tuntap_not_ipv4", f"IP version {version}")
    if words < 5 or words * 4 > len(packet):
        raise TunTapFrameError("tuntap_not_ipv4", f"header length {words * 4}")
    return _ADDRESSES.unpack_from(packet, 12)


def encodeFrame(packet: bytes, modifier2: int = PACKET) -> bytes:
    """
    C{packet} framed as uWSGI frames it.

    @raise TunTapFrameError: it is longer than a frame can say.
    """
    if len(packet) > MAX_PACKET:
        raise TunTapFrameError("tuntap_too_large", f"a packet of {len(packet)} bytes")
    return _HEADER.pack(0, len(packet), modifier2) + packet


class FrameParser:
    """
    Frames from a stream fed in pieces of any size.

    Sizes are bounded by C{maxSize}: a size over it, or an unknown
    modifier2, raises L{TunTapFrameError}, after which the stream is out
    of step and must be closed.  A packet that is not IPv4 is a
    L{BadPacket}.
    """

    def __init__(self, maxSize: int = MAX_PACKET) -> None:
        self.maxSize = maxSize
        self._buffer = bytearray()

    def feed(self, data: bytes) -> "list[IPPacket | BadPacket | RuleBlock]":
        """
        The frames completed by C{data}, in order.
        """
        buffer = self._buffer
        buffer += data
        frames = []
        while len(buffer) >= 4:
            _, size, modifier2 = _HEADER.unpack_from(buffer)
            if modifier2 not in (PACKET, RULES):
                raise TunTapFrameError("tuntap_bad_frame", f"modifier2 {modifier2}")
            if size > self.maxSize:
                raise TunTapFrameError(
                    "tuntap_too_large", f"a frame of {size} bytes (at most {self.maxSize})")
            if len(buffer) < 4 + size:
                break
            body = bytes(buffer[4:4 + size])
            del buffer[:4 + size]
            if modifier2 == RULES:
                frames.append(RuleBlock(body))
            else:
                try:
                    frames.append(IPPacket(body, *packetAddresses(body)))
                except TunTapFrameError as e:
                    frames.append(BadPacket(body, e.event, e.detail))
        return frames


def _network(text: str) -> "tuple[int, int]":
    """
    C{ADDR[/BITS]} as uWSGI reads it: the address and mask as host-order
    integers, 32 bits when none is given; the address is masked.
    """
    address, slash, bits = text.partition("/")
    try:
        value = int(ipaddress.IPv4Address(address))
    except ValueError:
        raise ValueError(f"{address!r} is not an IPv4 address") from None
    if slash:
        if not bits.isdigit() or int(bits) > 32:
            raise ValueError(f"{text!r}: the mask must be /0 to /32")
        width = int(bits)
    else:
        width = 32
    mask = (0xFFFFFFFF << (32 - width)) & 0xFFFFFFFF
    return value & mask, mask


def _matches(address: int, mask: int, value: int) -> bool:
    # uWSGI's: a rule address of 0 (0.0.0.0, or masked to it) matches any.
    return address == 0 or value & mask == address


@attr.frozen
class FirewallRule:
    """
    One C{--tuntap-router-firewall-in}/C{-out} rule.

    @ivar action: L{ALLOW} or L{DENY}.
    """

    action: str
    source: int = 0
    sourceMask: int = 0
    destination: int = 0
    destinationMask: int = 0

    def matches(self, source: int, destination: int) -> bool:
        return (_matches(self.source, self.sourceMask, source)
                and _matches(self.destination, self.destinationMask, destination))


@attr.frozen
class RouteRule:
    """
    One C{--tuntap-router-route} rule: packets from C{source} to
    C{destination} go as UDP datagrams to C{gateway}.
    """

    source: int
    sourceMask: int
    destination: int
    destinationMask: int
    gateway: "tuple[str, int]"

    def matches(self, source: int, destination: int) -> bool:
        return (_matches(self.source, self.sourceMask, source)
                and _matches(self.destination, self.destinationMask, destination))


def parseFirewallRule(text: str) -> FirewallRule:
    """
    Parse C{ACTION SRC[/BITS] DST[/BITS]}, or a bare C{allow}/C{deny}.

    Stricter than uWSGI, which takes any other word for C{allow} and
    ignores a rule of two words: both are refused here.
    """
    words = text.split()
    if not words or words[0] not in (ALLOW, DENY):
        raise ValueError(f"{text!r}: the action must be allow or deny")
    if len(words) == 1:
        return FirewallRule(words[0])
    if len(words) != 3:
        raise ValueError(f"{text!r}: give ACTION SRC[/BITS] DST[/BITS]")
    return FirewallRule(words[0], *_network(words[1]), *_network(words[2]))


def parseRouteRule(text: str) -> RouteRule:
    """
    Parse C{SRC[/BITS] DST[/BITS] IP:PORT}.
    """
    words = text.split()
    if len(words) != 3:
        raise ValueError(f"{text!r}: give SRC[/BITS] DST[/BITS] IP:PORT")
    host, colon, port = words[2].rpartition(":")
    try:
        ipaddress.IPv4Address(host)
        valid = bool(colon) and port.isdigit() and 0 < int(port) < 65536
    except ValueError:
        valid = False
    if not valid:
        raise ValueError(f"{words[2]!r}: the gateway must be a UDP IPv4:PORT")
    return RouteRule(*_network(words[0]), *_network(words[1]),
                     (host, int(port)))


def decide(rules, source: int, destination: int) -> str:
    """
    L{ALLOW} or L{DENY}: the action of the first of C{rules} that matches,
    L{ALLOW} if none does (uWSGI's default policy).
    """
    for rule in rules:
        if rule.matches(source, destination):
            return rule.action
    return ALLOW


def routeFor(routes, source: int, destination: int) -> "tuple[str, int] | None":
    """
    The gateway of the first of C{routes} that matches, or L{None}.
    """
    for route in routes:
        if route.matches(source, destination):
            return route.gateway
    return None
