"""
The PROXY protocol (HAProxy's, versions 1 and 2): the header a proxy sends
before a connection's own bytes to say whose connection it is.

Version 1 is one line of text, at most 107 bytes with its CRLF::

    PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\\r\\n
    PROXY UNKNOWN\\r\\n

Version 2 is binary: a 12-byte signature, a version and command byte, a
family and transport byte, a 16-bit length, then that many bytes: the
address block of the family (12 bytes for IPv4, 36 for IPv6, 216 for UNIX
paths, none for UNSPEC) and type-length-value fields (TLVs), the server
name the client asked for (C{PP2_TYPE_AUTHORITY}) among them.

L{ProxyHeaderParser} reads either from bytes split anywhere, holds no more
than one header, and names every mistake (L{ProxyHeaderError}); uWSGI's
stud prefix (L{StudPrefixParser}) is the same kind of header, in five
bytes.  L{startsProxyHeader} tells from the first bytes whether a
connection begins with a PROXY header at all; L{encodeV1} and L{encodeV2}
write one.

Twisted's parsers (C{twisted.protocols.haproxy}) are not used: they return
Twisted's address objects (this layer imports nothing of Twisted), the
version 2 parser refuses fewer than 16 bytes at a time (it cannot be fed
byte by byte) and buffers whatever length the header claims (up to 64
KiB), TLVs are not read at all, and the version 1 parser takes any text as
an address and anything C{int()} takes as a port (a sign, leading zeros,
spaces); their errors do not say what was wrong.
"""

import re
from ipaddress import IPv4Address, IPv6Address
from struct import Struct
from typing import NamedTuple, Optional

__all__ = [
    "DEFAULT_MAX_TLV_BYTES", "PP2_TYPE_ALPN", "PP2_TYPE_AUTHORITY", "PP2_TYPE_CRC32C",
    "PP2_TYPE_NETNS", "PP2_TYPE_NOOP", "PP2_TYPE_SSL", "PP2_TYPE_UNIQUE_ID", "STUD",
    "ProxyHeader", "ProxyHeaderError", "ProxyHeaderParser", "StudPrefixParser",
    "encodeV1", "encodeV2", "startsProxyHeader",
]

#: The version 2 signature, the first 12 bytes of every version 2 header.
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
#: Every version 1 header begins so.
V1_PREFIX = b"PROXY "
#: The longest version 1 header, CRLF included (the specification's bound).
V1_MAX = 107
#: The bytes of TLVs a version 2 header may carry unless told otherwise.
DEFAULT_MAX_TLV_BYTES = 2048
#: L{ProxyHeader.version} of a header read by L{StudPrefixParser}.
STUD = 0

PP2_TYPE_ALPN = 0x01
PP2_TYPE_AUTHORITY = 0x02
PP2_TYPE_CRC32C = 0x03
PP2_TYPE_NOOP = 0x04
PP2_TYPE_UNIQUE_ID = 0x05
PP2_TYPE_SSL = 0x20
PP2_TYPE_NETNS = 0x30
#: The bit of the first byte of a C{PP2_TYPE_SSL} value saying that the
#: client spoke TLS to the proxy.
PP2_CLIENT_SSL = 0x01

_V2_FIXED = 16
_V2_LOCAL, _V2_PROXY = 0, 1
_UNSPEC, _INET, _INET6, _UNIX = 0, 1, 2, 3
_STREAM = 1
#: The address block of each family: its size and L{ProxyHeader.family}.
_FAMILIES = {_UNSPEC: (0, None), _INET: (12, "tcp4"), _INET6: (36, "tcp6"), _UNIX: (216, "unix")}
_LARGEST_ADDRESSES = 216
_INET_ADDRESSES = Struct("!4s4sHH")
_INET6_ADDRESSES = Struct("!16s16sHH")
_TLV_HEAD = Struct("!BH")

_V1_PROTOCOL = re.compile(rb"[A-Z0-9]+")
_PORT = re.compile(rb"0|[1-9][0-9]{0,4}")
_V4_TEXT = re.compile(rb"[0-9.]+")
_V6_TEXT = re.compile(rb"[0-9A-Fa-f:.]+")


class ProxyHeaderError(ValueError):
    """
    Bytes that are not the header expected.

    @ivar event: a short, stable name for logs: C{proxy_missing} (the
        bytes do not begin a PROXY header), C{proxy_malformed} (they do,
        but break its syntax), C{proxy_too_long} (over 107 bytes for
        version 1, over the TLV bound for version 2),
        C{proxy_bad_address} (an address or port not valid for its
        family), C{proxy_unsupported} (a version, family or transport
        other than TCP over IPv4, IPv6 or a UNIX socket), C{proxy_bad_tlv}
        (a TLV that does not fit the header), C{stud_prefix_malformed}.
    @ivar detail: what was wrong, in words.
    """

    def __init__(self, event: str, detail: str) -> None:
        super().__init__(f"{event}: {detail}")
        self.event = event
        self.detail = detail


class ProxyHeader(NamedTuple):
    """
    A PROXY header, as read.

    The addresses are those of the client's connection to the proxy:
    C{source} is the client's, C{destination} the one it connected to.
    Both are L{None} when the header says to keep the connection's own
    (version 2 C{LOCAL}, the UNSPEC family, version 1 C{UNKNOWN}); for the
    C{unix} family they are the paths (L{bytes}, NUL padding removed)
    paired with L{None}.

    @ivar version: 1, 2, or L{STUD}.
    @ivar command: C{"proxy"}, or C{"local"} (a connection the proxy made
        on its own, a health check say).
    @ivar family: C{"tcp4"}, C{"tcp6"}, C{"unix"} or L{None}.
    @ivar source: C{(host, port)}: the host as text (normalised: IPv6
        compressed, lower case), the port an L{int}.
    @ivar destination: the same for the address connected to.
    @ivar tlvs: the version 2 TLVs in their order, C{(type, value)} pairs.
    """

    version: int
    command: str = "proxy"
    family: Optional[str] = None
    source: Optional[tuple] = None
    destination: Optional[tuple] = None
    tlvs: tuple = ()

    def tlv(self, kind: int) -> Optional[bytes]:
        """
        The value of the first TLV of type C{kind}, or L{None}.
        """
        for tlvKind, value in self.tlvs:
            if tlvKind == kind:
                return value
        return None

    @property
    def authority(self) -> Optional[str]:
        """
        The server name the client asked the proxy for (the TLS SNI or the
        HTTP host, C{PP2_TYPE_AUTHORITY}), or L{None} if it is absent or
        not UTF-8.
        """
        value = self.tlv(PP2_TYPE_AUTHORITY)
        if value is None:
            return None
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return None

    @property
    def clientTLS(self) -> bool:
        """
        Whether the proxy says the client spoke TLS to it: a stud prefix,
        or a C{PP2_TYPE_SSL} TLV with its C{PP2_CLIENT_SSL} bit.
        """
        if self.version == STUD:
            return True
        value = self.tlv(PP2_TYPE_SSL)
        return bool(value) and bool(value[0] & PP2_CLIENT_SSL)


def startsProxyHeader(data: bytes) -> Optional[bool]:
    """
    Whether C{data}, the first bytes of a connection, begin a PROXY header:
    L{True} once the version 1 prefix (C{"PROXY "}) or the version 2
    signature is whole, L{False} as soon as a byte differs from both,
    L{None} while C{data} is a shorter beginning of either (at most 11
    bytes are ever needed).
    """
    first = data[:1]
    if first == b"P":
        expected = V1_PREFIX
    elif first == b"\r":
        expected = V2_SIGNATURE
    else:
        return None if not data else False
    seen = data[:len(expected)]
    if expected[:len(seen)] != seen:
        return False
    return True if len(seen) == len(expected) else None


class ProxyHeaderParser:
    """
    Reads one PROXY header, version 1 or 2, from bytes split anywhere.

    Feed it the connection's bytes until it returns the header; it never
    holds more than the longest header it accepts (L{maxHeaderSize}), and
    it refuses a mistake as soon as the bytes show it.  A version 2 header
    may carry up to C{maxTLVBytes} of TLVs; one whose length runs past the
    header, or a tail too short for a TLV's own 3-byte head, is refused;
    an empty value is fine.  A C{LOCAL} header's block is skipped unread,
    as the specification says.
    """

    def __init__(self, maxTLVBytes: int = DEFAULT_MAX_TLV_BYTES) -> None:
        self.maxTLVBytes = maxTLVBytes
        self._buffer = b""
        self._length = None
        self._outcome = None

    @property
    def maxHeaderSize(self) -> int:
        """
        The most bytes a header may take.
        """
        return _V2_FIXED + _LARGEST_ADDRESSES + self.maxTLVBytes

    def feed(self, data: bytes):
        """
        Read the next bytes of the connection.

        @return: L{None} until the header is whole, then a pair: the
            L{ProxyHeader} and the bytes of C{data} after it (the
            connection's own).  Feed nothing more after that.
        @raise ProxyHeaderError: the bytes so far cannot begin a valid
            header; the same error again on every later call.
        """
        if self._outcome is not None:
            if isinstance(self._outcome, ProxyHeaderError):
                raise self._outcome
            raise RuntimeError("the PROXY header was read already")
        try:
            result = self._feed(data)
        except ProxyHeaderError as e:
            self._outcome = e
            self._buffer = b""
            raise
        if result is not None:
            self._outcome = result[0]
            self._buffer = b""
        return result

    def _feed(self, data: bytes):
        first = (self._buffer or data)[:1]
        if first == b"P":
            return self._feedV1(data)
        if first == b"\r":
            return self._feedV2(data)
        if not first:
            return None
        raise ProxyHeaderError("proxy_missing", f"the connection begins with {first!r}")

    # Version 1

    def _feedV1(self, data: bytes):
        buffer = self._buffer
        chunk = data[:V1_MAX - len(buffer)]
        end = chunk.find(b"\n")
        if end >= 0:
            return _parseV1(buffer + chunk[:end + 1]), data[end + 1:]
        buffer += chunk
        self._buffer = buffer
        seen = buffer[:len(V1_PREFIX)]
        if seen[:5] != V1_PREFIX[:len(seen[:5])]:
            raise ProxyHeaderError("proxy_missing", f"the connection begins with {seen!r}")
        if seen != V1_PREFIX[:len(seen)]:
            raise ProxyHeaderError("proxy_malformed", "no space after PROXY")
        carriageReturn = buffer.find(b"\r")
        if 0 <= carriageReturn < len(buffer) - 1:
            raise ProxyHeaderError("proxy_malformed", "a CR not followed by LF")
        if len(buffer) >= V1_MAX:
            raise ProxyHeaderError("proxy_too_long", f"no CRLF within {V1_MAX} bytes")
        return None

    # Version 2

    def _feedV2(self, data: bytes):
        buffer = self._buffer
        if self._length is None:
            taken = _V2_FIXED - len(buffer)
            buffer += data[:taken]
            data = data[taken:]
            self._buffer = buffer
            seen = buffer[:len(V2_SIGNATURE)]
            if seen != V2_SIGNATURE[:len(seen)]:
                raise ProxyHeaderError(
                    "proxy_missing", f"the connection begins with {seen!r}, not a PROXY signature"
                )
            if len(buffer) < _V2_FIXED:
                return None
            self._length = _V2_FIXED + self._checkFixedPart(buffer)
        taken = self._length - len(buffer)
        buffer += data[:taken]
        self._buffer = buffer
        if len(buffer) < self._length:
            return None
        return _parseV2(buffer), data[taken:]

    def _checkFixedPart(self, fixed: bytes) -> int:
        """
        Check the version, command, family and transport.

        @return: the length of the rest of the header.
        """
        version, command = fixed[12] >> 4, fixed[12] & 0x0F
        family, transport = fixed[13] >> 4, fixed[13] & 0x0F
        length = fixed[14] << 8 | fixed[15]
        if version != 2:
            raise ProxyHeaderError("proxy_unsupported", f"version {version} after the v2 signature")
        if command == _V2_LOCAL:
            if length > _LARGEST_ADDRESSES + self.maxTLVBytes:
                raise ProxyHeaderError("proxy_too_long", f"a LOCAL header of {length} bytes")
            return length
        if command != _V2_PROXY:
            raise ProxyHeaderError("proxy_malformed", f"command {command}")
        if family not in _FAMILIES:
            raise ProxyHeaderError("proxy_unsupported", f"address family {family}")
        if transport > 2:
            raise ProxyHeaderError("proxy_malformed", f"transport {transport}")
        if family != _UNSPEC and transport != _STREAM:
            raise ProxyHeaderError("proxy_unsupported", "a datagram or unspecified transport")
        needed = _FAMILIES[family][0]
        if length < needed:
            raise ProxyHeaderError(
                "proxy_malformed", f"{length} bytes of addresses, the family needs {needed}"
            )
        if length - needed > self.maxTLVBytes:
            raise ProxyHeaderError(
                "proxy_too_long", f"{length - needed} bytes of TLVs, at most {self.maxTLVBytes}"
            )
        return length


def _parseV1(line: bytes) -> ProxyHeader:
    """
    Parse a whole version 1 line, from C{PROXY} to its LF.
    """
    if not line.startswith(b"PROXY"):
        raise ProxyHeaderError("proxy_missing", f"the connection begins with {line[:6]!r}")
    if not line.endswith(b"\r\n"):
        raise ProxyHeaderError("proxy_malformed", "an LF without CR")
    body = line[:-2]
    if b"\r" in body:
        raise ProxyHeaderError("proxy_malformed", "a CR not followed by LF")
    if body[5:6] != b" ":
        raise ProxyHeaderError("proxy_malformed", "no space after PROXY")
    fields = body[6:].split(b" ")
    protocol = fields[0]
    if protocol == b"UNKNOWN":
        # What follows is to be ignored (the specification's words).
        return ProxyHeader(1)
    if protocol not in (b"TCP4", b"TCP6"):
        if _V1_PROTOCOL.fullmatch(protocol):
            raise ProxyHeaderError("proxy_unsupported", f"protocol {protocol!r}")
        raise ProxyHeaderError("proxy_malformed", f"protocol {protocol[:16]!r}")
    if len(fields) != 5 or not all(fields):
        raise ProxyHeaderError(
            "proxy_malformed", "not four fields after the protocol, one space apart"
        )
    version6 = protocol == b"TCP6"
    source = (_v1Host(fields[1], version6), _v1Port(fields[3]))
    destination = (_v1Host(fields[2], version6), _v1Port(fields[4]))
    return ProxyHeader(1, "proxy", "tcp6" if version6 else "tcp4", source, destination)


def _v1Host(text: bytes, version6: bool) -> str:
    try:
        if version6:
            if not _V6_TEXT.fullmatch(text):
                raise ValueError()
            return _v6Text(IPv6Address(text.decode("ascii")))
        if not _V4_TEXT.fullmatch(text):
            raise ValueError()
        return str(IPv4Address(text.decode("ascii")))
    except ValueError:
        family = "IPv6" if version6 else "IPv4"
        raise ProxyHeaderError("proxy_bad_address", f"{text[:48]!r} is no {family} address") from None


def _v6Text(address: IPv6Address) -> str:
    """
    An IPv6 address as the socket layer writes it: compressed, and an
    IPv4-mapped one as C{::ffff:a.b.c.d} (Python before 3.13 writes it in
    hexadecimal).
    """
    if address.ipv4_mapped is not None:
        return f"::ffff:{address.ipv4_mapped}"
    return str(address)


def _v1Port(text: bytes) -> int:
    if not _PORT.fullmatch(text) or int(text) > 65535:
        raise ProxyHeaderError("proxy_bad_address", f"{text[:16]!r} is no port")
    return int(text)


def _parseV2(header: bytes) -> ProxyHeader:
    """
    Parse a whole version 2 header whose fixed part was checked.
    """
    if header[12] & 0x0F == _V2_LOCAL:
        return ProxyHeader(2, "local")
    family = header[13] >> 4
    size, name = _FAMILIES[family]
    block = memoryview(header)[_V2_FIXED:]
    tlvs = _parseTLVs(block[size:])
    if family == _INET:
        sourceHost, destinationHost, sourcePort, destinationPort = _INET_ADDRESSES.unpack_from(block)
        source = (str(IPv4Address(sourceHost)), sourcePort)
        destination = (str(IPv4Address(destinationHost)), destinationPort)
    elif family == _INET6:
        sourceHost, destinationHost, sourcePort, destinationPort = _INET6_ADDRESSES.unpack_from(block)
        source = (_v6Text(IPv6Address(sourceHost)), sourcePort)
        destination = (_v6Text(IPv6Address(destinationHost)), destinationPort)
    elif family == _UNIX:
        source = (bytes(block[:108]).partition(b"\0")[0], None)
        destination = (bytes(block[108:216]).partition(b"\0")[0], None)
    else:
        source = destination = None
    return ProxyHeader(2, "proxy", name, source, destination, tlvs)


def _parseTLVs(block) -> tuple:
    """
    Walk the TLVs filling C{block} to its end exactly.
    """
    tlvs = []
    position, end = 0, len(block)
    while position < end:
        if end - position < _TLV_HEAD.size:
            raise ProxyHeaderError(
                "proxy_bad_tlv", f"{end - position} bytes left, too few for a TLV"
            )
        kind, length = _TLV_HEAD.unpack_from(block, position)
        position += _TLV_HEAD.size
        if position + length > end:
            raise ProxyHeaderError(
                "proxy_bad_tlv",
                f"TLV 0x{kind:02x} of {length} bytes runs {position + length - end} bytes past the header",
            )
        tlvs.append((kind, bytes(block[position:position + length])))
        position += length
    return tuple(tlvs)


class StudPrefixParser:
    """
    Reads uWSGI's stud prefix (C{--http-stud-prefix}): the family byte of
    IPv4 (2) and the client's IPv4 address, five bytes in all, sent by a
    TLS terminator (stud) in front; the client spoke TLS to it.

    Fed like L{ProxyHeaderParser}; the header is a L{ProxyHeader} of
    version L{STUD} whose source port is 0 (the prefix carries none) and
    whose destination is L{None}.
    """

    maxHeaderSize = 5

    def __init__(self) -> None:
        self._buffer = b""
        self._outcome = None

    def feed(self, data: bytes):
        """
        @see: L{ProxyHeaderParser.feed}
        """
        if self._outcome is not None:
            if isinstance(self._outcome, ProxyHeaderError):
                raise self._outcome
            raise RuntimeError("the stud prefix was read already")
        taken = self.maxHeaderSize - len(self._buffer)
        buffer = self._buffer + data[:taken]
        if buffer[:1] not in (b"", b"\x02"):
            self._outcome = ProxyHeaderError(
                "stud_prefix_malformed", f"family byte {buffer[0]}, not 2 (IPv4)"
            )
            raise self._outcome
        if len(buffer) < self.maxHeaderSize:
            self._buffer = buffer
            return None
        self._buffer = b""
        self._outcome = header = ProxyHeader(
            STUD, "proxy", "tcp4", (str(IPv4Address(buffer[1:])), 0), None
        )
        return header, data[taken:]


# Writing headers


def _hostOf(address) -> Optional[object]:
    """
    The C{ipaddress} value of the host of C{address}, C{(host, port)} or
    L{None}; an IPv6 zone is left out.
    """
    if address is None:
        return None
    host = address[0]
    if ":" in host:
        return IPv6Address(host.partition("%")[0])
    return IPv4Address(host)


def _sameFamily(source, destination):
    """
    The hosts of C{source} and C{destination}, as one family if they can
    be: an IPv4-mapped IPv6 address beside an IPv4 one is taken as IPv4.
    L{None} for both if either is unknown or the families differ.
    """
    sourceHost, destinationHost = _hostOf(source), _hostOf(destination)
    if sourceHost is None or destinationHost is None:
        return None, None
    if sourceHost.version != destinationHost.version:
        if sourceHost.version == 6 and sourceHost.ipv4_mapped is not None:
            sourceHost = sourceHost.ipv4_mapped
        if destinationHost.version == 6 and destinationHost.ipv4_mapped is not None:
            destinationHost = destinationHost.ipv4_mapped
        if sourceHost.version != destinationHost.version:
            return None, None
    return sourceHost, destinationHost


def encodeV1(source, destination) -> bytes:
    """
    A version 1 header for a connection from C{source} to C{destination},
    each C{(host, port)}: C{TCP4} or C{TCP6}, or C{UNKNOWN} if either is
    L{None} (a client on a UNIX socket) or their families differ.

    @raise ValueError: a host is not an IP address, or a port is not in
        0..65535.
    """
    sourceHost, destinationHost = _sameFamily(source, destination)
    if sourceHost is None:
        return b"PROXY UNKNOWN\r\n"
    protocol = "TCP4" if sourceHost.version == 4 else "TCP6"
    return (
        f"PROXY {protocol} {sourceHost} {destinationHost} "
        f"{_port(source[1])} {_port(destination[1])}\r\n"
    ).encode("ascii")


def encodeV2(source, destination, tlvs=(), sni=None) -> bytes:
    """
    A version 2 header for a connection from C{source} to C{destination},
    each C{(host, port)}: a C{PROXY} command over TCP, or C{LOCAL} with
    the UNSPEC family if either is L{None} or their families differ (as
    HAProxy sends it; the TLVs go along all the same).

    @param tlvs: C{(type, value)} pairs, in order.
    @param sni: the server name the client asked for, sent first as a
        C{PP2_TYPE_AUTHORITY} TLV (L{str} is encoded as UTF-8).
    @raise ValueError: a host is not an IP address, a port is not in
        0..65535, a TLV type is not a byte or its value is over 65535
        bytes, or the header would be longer than its 16-bit length allows.
    """
    if sni is not None:
        tlvs = ((PP2_TYPE_AUTHORITY, sni.encode("utf-8") if isinstance(sni, str) else sni), *tlvs)
    encodedTLVs = b"".join(_encodeTLV(kind, value) for kind, value in tlvs)
    sourceHost, destinationHost = _sameFamily(source, destination)
    if sourceHost is None:
        commandAndFamily = bytes([0x20 | _V2_LOCAL, _UNSPEC << 4])
        addresses = b""
    else:
        family = _INET if sourceHost.version == 4 else _INET6
        layout = _INET_ADDRESSES if family == _INET else _INET6_ADDRESSES
        commandAndFamily = bytes([0x20 | _V2_PROXY, family << 4 | _STREAM])
        addresses = layout.pack(
            sourceHost.packed, destinationHost.packed, _port(source[1]), _port(destination[1])
        )
    length = len(addresses) + len(encodedTLVs)
    if length > 0xFFFF:
        raise ValueError(f"a PROXY v2 header of {length} bytes")
    return V2_SIGNATURE + commandAndFamily + length.to_bytes(2, "big") + addresses + encodedTLVs


def _encodeTLV(kind: int, value: bytes) -> bytes:
    if not 0 <= kind <= 0xFF or len(value) > 0xFFFF:
        raise ValueError(f"TLV 0x{kind:x} of {len(value)} bytes")
    return _TLV_HEAD.pack(kind, len(value)) + value


def _port(port: int) -> int:
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port}")
    return port
