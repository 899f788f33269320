"""Properties of encode/decode: round trips, and nothing but PacketError on bad input."""

from __future__ import annotations

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aiobfd.protocol.errors import DropReason, PacketError
from aiobfd.protocol.packet import FLAG_AUTH, ControlPacket, decode, encode

from .strategies import valid_packets

SETTINGS = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(SETTINGS, max_examples=50)


def decode_or_error(data: bytes) -> ControlPacket | PacketError:
    """Decode; any exception other than PacketError fails the test."""
    try:
        return decode(data)
    except PacketError as exc:
        assert isinstance(exc.reason, DropReason)
        return exc


def check_decoded(pkt: ControlPacket) -> None:
    """Whatever decode() accepts is self-consistent and re-encodes to itself."""
    assert pkt.detect_mult != 0
    assert pkt.my_discr != 0
    assert not (pkt.poll and pkt.final)
    assert not pkt.multipoint
    assert bool(pkt.flags & FLAG_AUTH) == (pkt.auth is not None)
    assert decode(encode(pkt)) == pkt


@SETTINGS
@given(valid_packets())
def test_round_trip(pkt: ControlPacket) -> None:
    data = encode(pkt)
    assert len(data) == data[3] == 24 + (pkt.auth.length if pkt.auth else 0)
    assert decode(data) == pkt
    assert decode(memoryview(data)) == pkt
    # Encoding is canonical: the same packet always gives the same bytes.
    assert encode(decode(data)) == data


@SETTINGS
@given(st.binary(max_size=300))
def test_arbitrary_bytes(data: bytes) -> None:
    result = decode_or_error(data)
    if isinstance(result, ControlPacket):
        check_decoded(result)


_HEADER = struct.Struct("!BBBBIIIII")


@SETTINGS
@given(
    st.integers(0, 255),
    st.integers(0, 255),
    st.integers(0, 255),
    st.integers(0, 255),
    st.sampled_from([0, 1, 0xFFFF_FFFF]) | st.integers(0, 0xFFFF_FFFF),
    st.sampled_from([0, 1, 0xFFFF_FFFF]) | st.integers(0, 0xFFFF_FFFF),
    st.binary(max_size=64),
)
def test_arbitrary_headers(
    b0: int, b1: int, mult: int, length: int, my: int, your: int, tail: bytes
) -> None:
    # Random bytes rarely get past the version check; build a header so they do.
    data = _HEADER.pack((1 << 5) | (b0 & 0x1F), b1, mult, length, my, your, 1, 2, 3) + tail
    result = decode_or_error(data)
    if isinstance(result, ControlPacket):
        check_decoded(result)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(encode(draw(valid_packets())))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "set", "truncate", "extend"]))
        if kind == "flip" and data:
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and data:
            i = draw(st.integers(0, len(data) - 1))
            data[i] = draw(st.integers(0, 255))
        elif kind == "truncate":
            del data[draw(st.integers(0, len(data))) :]
        else:
            data += draw(st.binary(min_size=1, max_size=40))
    return bytes(data)


@SETTINGS
@given(mutated())
def test_mutated_packets(data: bytes) -> None:
    result = decode_or_error(data)
    if isinstance(result, ControlPacket):
        check_decoded(result)


@FEW
@given(valid_packets(), st.integers(0, 23))
def test_truncated_header_is_short(pkt: ControlPacket, size: int) -> None:
    try:
        decode(encode(pkt)[:size])
    except PacketError as exc:
        assert exc.reason is DropReason.SHORT
    else:
        raise AssertionError("decode accepted a truncated header")
