"""
The uwsgi packet codec, against packets captured from real uWSGI 2.0.21.
"""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.captures import packets
from txrouter.wire.uwsgi import (
    MAX_DATASIZE,
    PacketParser,
    UwsgiPacketError,
    decodeVars,
    encodeHeader,
    encodePacket,
    encodeVars,
)

CAPTURED = packets("httprouter-to-backend.json") + packets(
    "nginx-via-fastrouter-to-backend.json"
)

keys = st.binary(min_size=1, max_size=40)
values = st.binary(max_size=80)
varLists = st.lists(st.tuples(keys, values), max_size=20)


def parseWhole(data: bytes):
    parser = PacketParser()
    packet = parser.feed(data)
    assert packet is not None
    return packet, parser.leftover


@pytest.mark.parametrize("raw", CAPTURED, ids=range(len(CAPTURED)))
def test_captured_packets_roundtrip(raw):
    """
    Every captured packet parses, and re-encoding its vars gives its bytes.
    """
    packet, body = parseWhole(raw)
    assert encodePacket(packet.vars, packet.modifier1, packet.modifier2) + body == raw
    assert packet.raw + body == raw


def test_captured_post_body_follows_vars():
    """
    The body of the captured POST is what follows the vars block.
    """
    packet, body = parseWhole(CAPTURED[1])
    assert packet.get(b"REQUEST_METHOD") == b"POST"
    assert packet.get(b"CONTENT_LENGTH") == b"5"
    assert body == b"hello"


def test_duplicate_keys_are_kept_in_order():
    block = encodeVars([(b"A", b"1"), (b"B", b"2"), (b"A", b"3")])
    assert decodeVars(block) == [(b"A", b"1"), (b"B", b"2"), (b"A", b"3")]


def test_empty_value_is_legal_and_empty_key_is_not():
    assert decodeVars(encodeVars([(b"SCRIPT_NAME", b"")])) == [(b"SCRIPT_NAME", b"")]
    with pytest.raises(UwsgiPacketError) as e:
        encodeVars([(b"", b"x")])
    assert e.value.event == "bad_var"
    with pytest.raises(UwsgiPacketError) as e:
        decodeVars(b"\x00\x00\x01\x00x")
    assert e.value.event == "empty_key"


def test_encode_refuses_blocks_over_the_limit():
    pairs = [(b"K", b"v" * 5000)]
    with pytest.raises(UwsgiPacketError) as e:
        encodePacket(pairs, maxSize=4096)
    assert e.value.event == "packet_too_large"
    assert len(encodePacket(pairs)) == 4 + 2 + 1 + 2 + 5000


def test_any_16_bit_datasize_is_accepted():
    pairs = [(b"K", b"v" * (MAX_DATASIZE - 5))]
    raw = encodePacket(pairs)
    packet, rest = parseWhole(raw)
    assert packet.vars == pairs and rest == b""
    with pytest.raises(UwsgiPacketError):
        encodePacket([(b"K", b"v" * (MAX_DATASIZE - 4))])


def test_parser_refuses_an_announced_size_over_its_limit_before_reading_it():
    """
    The 21573 symptom: 'GET ' read as a header announces 21573 bytes.
    """
    parser = PacketParser(maxSize=4096)
    with pytest.raises(UwsgiPacketError) as e:
        parser.feed(b"GET ")
    assert "21573" in e.value.detail


@pytest.mark.parametrize(
    "block",
    [b"\x01", b"\x01\x00A", b"\x01\x00A\x05\x00ab", b"\x05\x00AB"],
)
def test_truncated_blocks_are_refused(block):
    with pytest.raises(UwsgiPacketError) as e:
        decodeVars(block)
    assert e.value.event == "truncated_var"


@settings(max_examples=200)
@given(varLists, st.integers(0, 255), st.integers(0, 255), st.binary(max_size=50),
       st.integers(1, 7))
def test_roundtrip_fed_in_pieces(pairs, m1, m2, body, step):
    """
    Whatever the split of the input, the parser yields the encoded vars.
    """
    raw = encodePacket(pairs, m1, m2) + body
    parser = PacketParser()
    packet = None
    fed = 0
    while packet is None:
        packet = parser.feed(raw[fed : fed + step])
        fed += step
    assert (packet.modifier1, packet.modifier2, packet.vars) == (m1, m2, pairs)
    assert parser.leftover + raw[fed:] == body


def _fedInPieces(data: bytes, step: int, maxSize: int):
    """
    What a parser makes of C{data} fed C{step} bytes at a time: the
    packet and the bytes after it, C{("refused", event)} or L{None} while
    it waits for more.
    """
    parser = PacketParser(maxSize=maxSize)
    try:
        for i in range(0, len(data), step):
            packet = parser.feed(data[i : i + step])
            if packet is not None:
                return packet, parser.leftover + data[i + step :]
    except UwsgiPacketError as e:
        return ("refused", e.event)
    return None


def _packet(pairs, m1, m2, size, tail) -> bytes:
    block = encodeVars(pairs)
    return encodeHeader(m1, len(block) if size is None else size, m2) + block + tail


# Packets whose header says the length of their vars block or not.
_packetLike = st.builds(
    _packet, varLists, st.integers(0, 255), st.integers(0, 255),
    st.none() | st.integers(0, 400) | st.sampled_from([63, 64, 65, 4095, 4096, 4097]),
    st.binary(max_size=20),
)


@settings(max_examples=300)
@given(st.binary(max_size=300) | _packetLike, st.integers(1, 50), st.sampled_from([64, 4096]))
def test_fuzzed_bytes_give_the_same_packet_in_any_split_or_are_refused(data, step, maxSize):
    """
    Any bytes, fed whole or in pieces, give the same verdict: a packet
    whose vars re-encode to the bytes it was read from, followed by the
    rest of the input; a refusal, always of a header announcing more than
    the limit or of a malformed vars block; or a wait for the bytes the
    header announces, never more than the limit.
    """
    whole = _fedInPieces(data, max(len(data), 1), maxSize)
    assert _fedInPieces(data, step, maxSize) == whole
    announced = int.from_bytes(data[1:3], "little")
    if whole is None:
        assert len(data) < 4 or len(data) < 4 + announced <= 4 + maxSize
    elif whole[0] == "refused":
        expected = {"packet_too_large"} if announced > maxSize else {"truncated_var", "empty_key"}
        assert whole[1] in expected
    else:
        packet, rest = whole
        assert encodePacket(packet.vars, packet.modifier1, packet.modifier2) == packet.raw
        assert packet.raw + rest == data
        assert len(packet.raw) == 4 + announced <= 4 + maxSize
