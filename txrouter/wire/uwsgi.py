"""
The uwsgi packet: a 4-byte header and a block of key/value vars.

Layout (all integers little-endian)::

    u8 modifier1 | u16 datasize | u8 modifier2 | datasize bytes of vars
    vars = repeated ( u16 keylen | key | u16 vallen | value )

The body, if any, follows the vars unframed; its length is in the
C{CONTENT_LENGTH} var.  Nothing here knows about sockets: L{encodePacket}
turns vars into bytes, L{PacketParser} turns bytes into a L{Packet}.
"""

from struct import Struct

import attr

#: The vars block length is a 16-bit field.
MAX_DATASIZE = 0xFFFF

_HEADER = Struct("<BHB")
_U16 = Struct("<H")
_packU16 = _U16.pack
_unpackU16From = _U16.unpack_from


class UwsgiPacketError(ValueError):
    """
    A packet that cannot be encoded or was received malformed.

    @ivar event: a short, stable name for logs (C{"packet_too_large"}, ...).
    @ivar detail: human-readable explanation.
    """

    def __init__(self, event: str, detail: str) -> None:
        super().__init__(f"{event}: {detail}")
        self.event = event
        self.detail = detail


def encodeVars(pairs) -> bytes:
    """
    Encode C{(key, value)} byte pairs into a vars block.

    @raise UwsgiPacketError: a key is empty, or a key or value is longer
        than 65535 bytes.
    """
    pieces: "list[bytes]" = []
    append = pieces.append
    for key, value in pairs:
        klen = len(key)
        vlen = len(value)
        if not 0 < klen <= MAX_DATASIZE or vlen > MAX_DATASIZE:
            raise UwsgiPacketError(
                "bad_var", f"var {key[:32]!r} has length {klen}/{vlen}"
            )
        append(_packU16(klen))
        append(key)
        append(_packU16(vlen))
        append(value)
    return b"".join(pieces)


def encodeHeader(modifier1: int, datasize: int, modifier2: int) -> bytes:
    """
    Encode the 4-byte packet header.
    """
    return _HEADER.pack(modifier1, datasize, modifier2)


def encodePacket(
    pairs, modifier1: int = 0, modifier2: int = 0, maxSize: int = MAX_DATASIZE
) -> bytes:
    """
    Encode a complete packet head (header and vars; the body is sent after).

    @param maxSize: the largest vars block the receiver accepts (a uWSGI
        worker drops anything above its C{--buffer-size} without a reply).
    @raise UwsgiPacketError: the vars block would exceed C{maxSize}.
    """
    block = encodeVars(pairs)
    size = len(block)
    if size > maxSize or size > MAX_DATASIZE:
        raise UwsgiPacketError(
            "packet_too_large",
            f"vars block of {size} bytes exceeds the limit of"
            f" {min(maxSize, MAX_DATASIZE)}",
        )
    return _HEADER.pack(modifier1, size, modifier2) + block


def decodeVars(block: bytes) -> list:
    """
    Decode a vars block strictly: every item whole, no empty key.

    @return: the C{(key, value)} pairs in wire order (duplicates kept).
    @raise UwsgiPacketError: the block is truncated or has an empty key.
    """
    pairs = []
    offset = 0
    end = len(block)
    while offset < end:
        if offset + 2 > end:
            raise UwsgiPacketError("truncated_var", f"key length cut at {offset}")
        (klen,) = _unpackU16From(block, offset)
        if klen == 0:
            raise UwsgiPacketError("empty_key", f"empty key at offset {offset}")
        offset += 2
        key = block[offset : offset + klen]
        offset += klen
        if offset + 2 > end:
            raise UwsgiPacketError("truncated_var", f"var {key[:32]!r} cut short")
        (vlen,) = _unpackU16From(block, offset)
        offset += 2
        value = block[offset : offset + vlen]
        offset += vlen
        if offset > end:
            raise UwsgiPacketError("truncated_var", f"value of {key[:32]!r} cut short")
        pairs.append((key, value))
    return pairs


@attr.frozen
class Packet:
    """
    A received uwsgi packet head.

    @ivar raw: the header and vars exactly as received (forwarded verbatim).
    """

    modifier1: int
    modifier2: int
    vars: list
    raw: bytes

    def get(self, key: bytes, default=None):
        """
        The value of the first var named C{key}, or C{default}.
        """
        for k, v in self.vars:
            if k == key:
                return v
        return default


class PacketParser:
    """
    Incremental parser of one packet head.

    Feed bytes with L{feed}; it returns a L{Packet} once the header and the
    whole vars block have arrived.  L{leftover} then holds what followed
    (the start of the body).  Memory is bounded by C{maxSize}: a header that
    announces more is refused before its block is read.
    """

    def __init__(self, maxSize: int = MAX_DATASIZE) -> None:
        self.maxSize = maxSize
        self._buffer = b""
        self.leftover = b""

    def feed(self, data: bytes):
        """
        Add bytes; return the L{Packet} when complete, else L{None}.

        @raise UwsgiPacketError: the announced size is above C{maxSize}, or
            the vars block is malformed.
        """
        buf = self._buffer + data if self._buffer else data
        if len(buf) < 4:
            self._buffer = buf
            return None
        modifier1, size, modifier2 = _HEADER.unpack_from(buf)
        if size > self.maxSize:
            raise UwsgiPacketError(
                "packet_too_large",
                f"vars block of {size} bytes announced, limit {self.maxSize}",
            )
        if len(buf) < 4 + size:
            self._buffer = buf
            return None
        self._buffer = b""
        self.leftover = buf[4 + size :]
        return Packet(modifier1, modifier2, decodeVars(buf[4 : 4 + size]), buf[: 4 + size])


#: How the first bytes of other protocols look when read as a uwsgi header
#: (reference section 1.7: an HTTP client gives the "21573" symptom).
_HTTP_METHOD_STARTS = (
    b"GET ", b"POST", b"PUT ", b"HEAD", b"DELE", b"OPTI", b"PATC", b"CONN", b"TRAC", b"PRI ",
)


def misdirectedProtocol(start: bytes) -> "str | None":
    """
    Recognise a client that speaks something else to a uwsgi port.

    @param start: the first four (or more) bytes of a connection.
    @return: C{"http"} for an HTTP request (uWSGI would read C{GET } as a
        21573-byte vars block), C{"tls"} for a TLS ClientHello, else
        L{None}.
    """
    if start[:4] in _HTTP_METHOD_STARTS:
        return "http"
    if start[:1] == b"\x16" and start[1:2] == b"\x03":
        return "tls"
    return None
