"""The Control packet codec (RFC 5880 §4.1) and its reception checks (§6.8.6)."""

from __future__ import annotations

import struct
from typing import Any

import pytest

from aiobfd.protocol.errors import DropReason, PacketError
from aiobfd.protocol.packet import (
    FLAG_AUTH,
    FLAG_CPI,
    FLAG_DEMAND,
    FLAG_FINAL,
    FLAG_MULTIPOINT,
    FLAG_POLL,
    AuthSection,
    AuthType,
    ControlPacket,
    Diag,
    State,
    decode,
    encode,
)

_HEADER = struct.Struct("!BBBBIIIII")


def raw(
    *,
    version: int = 1,
    diag: int = 0,
    state: int = State.UP,
    flags: int = 0,
    mult: int = 3,
    length: int | None = None,
    my: int = 0x01020304,
    your: int = 0x05060708,
    tx: int = 300_000,
    rx: int = 250_000,
    echo: int = 0,
    tail: bytes = b"",
) -> bytes:
    """Build wire bytes field by field, without going through encode()."""
    if length is None:
        length = 24 + len(tail)
    head = _HEADER.pack(
        (version << 5) | diag, (state << 6) | flags, mult, length, my, your, tx, rx, echo
    )
    return head + tail


def auth_tail(auth_type: int, auth_len: int, key_id: int = 1, fill: int | None = None) -> bytes:
    """An authentication section whose Auth Len says ``auth_len``, padded to match it."""
    body_len = max(auth_len - 3, 0) if fill is None else fill
    return bytes((auth_type, auth_len, key_id)) + bytes(range(1, body_len + 1))


def reason_of(data: bytes) -> DropReason:
    with pytest.raises(PacketError) as info:
        decode(data)
    assert isinstance(info.value, ValueError)  # PacketError is a ValueError
    return info.value.reason


# --------------------------------------------------------------------------- round trip

EXAMPLES = [
    ControlPacket(State.DOWN, Diag.NO_DIAGNOSTIC, 0, 3, 0x1111, 0, 1_000_000, 1_000_000),
    ControlPacket(State.INIT, Diag.NO_DIAGNOSTIC, 0, 5, 1, 2, 1_000_000, 300_000),
    ControlPacket(
        State.UP, Diag.NO_DIAGNOSTIC, FLAG_POLL, 3, 0xDEADBEEF, 0xCAFEF00D, 50_000, 50_000
    ),
    ControlPacket(State.UP, Diag.NO_DIAGNOSTIC, FLAG_FINAL | FLAG_CPI, 1, 7, 8, 10_000, 20_000, 30),
    ControlPacket(
        State.UP,
        Diag.PATH_DOWN,
        FLAG_DEMAND,
        255,
        0xFFFFFFFF,
        0xFFFFFFFF,
        0xFFFFFFFF,
        0xFFFFFFFF,
        0xFFFFFFFF,
    ),
    ControlPacket(State.DOWN, Diag.CONTROL_DETECTION_TIME_EXPIRED, 0, 3, 9, 0, 0, 0, 0),
    ControlPacket(State.ADMIN_DOWN, Diag.ADMINISTRATIVELY_DOWN, 0, 3, 9, 0, 1_000_000, 0),
    ControlPacket(State.DOWN, Diag.NEIGHBOR_SIGNALED_SESSION_DOWN, 0, 3, 9, 10, 1, 1),
]


@pytest.mark.parametrize("pkt", EXAMPLES)
def test_round_trip(pkt: ControlPacket) -> None:
    data = encode(pkt)
    assert len(data) == 24
    assert data[3] == 24
    assert decode(data) == pkt
    assert decode(bytearray(data)) == pkt
    assert decode(memoryview(data)) == pkt


def test_encode_wire_layout() -> None:
    pkt = ControlPacket(
        State.UP,
        Diag.PATH_DOWN,
        FLAG_POLL | FLAG_DEMAND,
        4,
        0x01020304,
        0x05060708,
        1_000_000,
        300_000,
        7,
    )
    data = encode(pkt)
    assert data == raw(
        diag=5, state=3, flags=FLAG_POLL | FLAG_DEMAND, mult=4, tx=1_000_000, rx=300_000, echo=7
    )
    # Version 1 in the top three bits, then Diag; Sta in the top two bits of octet 2.
    assert data[0] == 0x25
    assert data[1] == 0xC0 | 0x22


def test_decode_of_hand_built_bytes() -> None:
    pkt = decode(raw(diag=3, state=State.INIT, flags=FLAG_CPI, mult=7, tx=11, rx=12, echo=13))
    assert pkt == ControlPacket(
        State.INIT,
        Diag.NEIGHBOR_SIGNALED_SESSION_DOWN,
        FLAG_CPI,
        7,
        0x01020304,
        0x05060708,
        11,
        12,
        13,
    )
    assert pkt.control_plane_independent
    assert not (pkt.poll or pkt.final or pkt.demand or pkt.multipoint)


def test_flag_properties() -> None:
    base = EXAMPLES[2]
    assert base.poll and not base.final
    assert EXAMPLES[3].final and EXAMPLES[3].control_plane_independent
    assert EXAMPLES[4].demand


def test_encode_a_bit_follows_auth() -> None:
    # The A bit in ``flags`` is ignored: only ``auth`` decides it.
    pkt = ControlPacket(State.UP, Diag.NO_DIAGNOSTIC, FLAG_AUTH, 3, 1, 2, 3, 4)
    data = encode(pkt)
    assert data[1] & FLAG_AUTH == 0
    assert decode(data).flags == 0
    with_auth = pkt._replace(flags=0, auth=AuthSection(AuthType.SIMPLE_PASSWORD, 1, b"pw"))
    data = encode(with_auth)
    assert data[1] & FLAG_AUTH
    assert decode(data).flags == FLAG_AUTH


def test_octets_after_length_are_ignored() -> None:
    # §6.8.6 only rejects a Length larger than the payload; trailing octets
    # (padding by the link layer) are not part of the packet.
    data = encode(EXAMPLES[1]) + b"\x00" * 8
    assert decode(data) == EXAMPLES[1]


@pytest.mark.parametrize("value", range(9, 32))
def test_reserved_diag_values_decode(value: int) -> None:
    pkt = decode(raw(diag=value))
    assert int(pkt.diag) == value
    assert isinstance(pkt.diag, Diag)
    assert pkt.diag.name == f"RESERVED_{value}"
    assert pkt.diag.label == f"reserved_{value}"
    assert decode(encode(pkt)) == pkt


def test_known_diag_values_decode() -> None:
    for diag in Diag:
        assert decode(raw(diag=diag)).diag is diag


def test_encode_rejects_out_of_range_fields() -> None:
    with pytest.raises((ValueError, struct.error)):
        encode(EXAMPLES[1]._replace(my_discr=1 << 32))
    with pytest.raises((ValueError, struct.error)):
        encode(EXAMPLES[1]._replace(detect_mult=256))
    too_long = AuthSection(AuthType.SIMPLE_PASSWORD, 1, b"x" * 229)
    with pytest.raises(ValueError):
        encode(EXAMPLES[1]._replace(auth=too_long))
    # The longest section that still fits the one-octet Length field.
    longest = AuthSection(200, 1, b"x" * 228)
    assert decode(encode(EXAMPLES[1]._replace(auth=longest))).auth == longest


# ------------------------------------------------------------------- §6.8.6 checks


@pytest.mark.parametrize("size", [0, 1, 4, 23])
def test_short(size: int) -> None:
    assert reason_of(raw()[:size]) is DropReason.SHORT


@pytest.mark.parametrize("version", [0, 2, 3, 7])
def test_bad_version(version: int) -> None:
    assert reason_of(raw(version=version)) is DropReason.BAD_VERSION


@pytest.mark.parametrize("length", [0, 1, 20, 23])
def test_length_below_24(length: int) -> None:
    assert reason_of(raw(length=length)) is DropReason.BAD_LENGTH


@pytest.mark.parametrize("length", [24, 25])
def test_length_below_26_with_a_bit(length: int) -> None:
    data = raw(flags=FLAG_AUTH, length=length, tail=b"\x01\x05")
    assert reason_of(data) is DropReason.BAD_LENGTH


@pytest.mark.parametrize(("length", "size"), [(25, 24), (48, 47), (255, 24)])
def test_length_above_payload(length: int, size: int) -> None:
    data = raw(length=length, tail=bytes(size - 24))
    assert reason_of(data) is DropReason.BAD_LENGTH


def test_length_above_payload_with_auth() -> None:
    tail = auth_tail(AuthType.KEYED_MD5, 24)
    data = raw(flags=FLAG_AUTH, tail=tail)
    assert decode(data).auth is not None
    assert reason_of(data[:-1]) is DropReason.BAD_LENGTH


def test_zero_detect_mult() -> None:
    assert reason_of(raw(mult=0)) is DropReason.ZERO_DETECT_MULT


def test_multipoint() -> None:
    assert reason_of(raw(flags=FLAG_MULTIPOINT)) is DropReason.MULTIPOINT


def test_zero_my_discr() -> None:
    assert reason_of(raw(my=0)) is DropReason.ZERO_MY_DISCR
    assert reason_of(raw(my=0, your=0, state=State.DOWN)) is DropReason.ZERO_MY_DISCR


@pytest.mark.parametrize("state", [State.INIT, State.UP])
def test_zero_your_discr_in_init_or_up(state: State) -> None:
    assert reason_of(raw(state=state, your=0)) is DropReason.ZERO_YOUR_DISCR


@pytest.mark.parametrize("state", [State.ADMIN_DOWN, State.DOWN])
def test_zero_your_discr_allowed_in_down_states(state: State) -> None:
    pkt = decode(raw(state=state, your=0))
    assert pkt.state is state
    assert pkt.your_discr == 0


def test_poll_and_final() -> None:
    assert reason_of(raw(flags=FLAG_POLL | FLAG_FINAL)) is DropReason.POLL_AND_FINAL
    assert decode(raw(flags=FLAG_POLL)).poll
    assert decode(raw(flags=FLAG_FINAL)).final


# -------------------------------------------------------------- authentication framing


@pytest.mark.parametrize("auth_len", [0, 1, 2])
def test_auth_len_below_header(auth_len: int) -> None:
    # Auth Len cannot be smaller than type + len + key id.
    data = raw(flags=FLAG_AUTH, tail=bytes((AuthType.SIMPLE_PASSWORD, auth_len, 1, 0x41)))
    assert reason_of(data) is DropReason.AUTH_MALFORMED


def test_auth_len_beyond_packet_length() -> None:
    # Auth Len points past the Length field (the payload itself is long enough).
    tail = auth_tail(AuthType.SIMPLE_PASSWORD, 10)
    data = raw(flags=FLAG_AUTH, length=24 + 9, tail=tail)
    assert reason_of(data) is DropReason.AUTH_MALFORMED


@pytest.mark.parametrize(
    ("auth_type", "auth_len"),
    [
        (AuthType.SIMPLE_PASSWORD, 3),  # empty password
        (AuthType.SIMPLE_PASSWORD, 20),  # 17-octet password
        (AuthType.KEYED_MD5, 23),
        (AuthType.KEYED_MD5, 25),
        (AuthType.METICULOUS_KEYED_MD5, 23),
        (AuthType.METICULOUS_KEYED_MD5, 28),
        (AuthType.KEYED_SHA1, 24),
        (AuthType.KEYED_SHA1, 27),
        (AuthType.KEYED_SHA1, 29),
        (AuthType.METICULOUS_KEYED_SHA1, 27),
        (AuthType.METICULOUS_KEYED_SHA1, 29),
    ],
)
def test_auth_len_wrong_for_type(auth_type: int, auth_len: int) -> None:
    data = raw(flags=FLAG_AUTH, tail=auth_tail(auth_type, auth_len))
    assert data[3] == 24 + auth_len
    assert reason_of(data) is DropReason.AUTH_MALFORMED


@pytest.mark.parametrize("size", range(1, 17))
def test_simple_password_round_trip(size: int) -> None:
    password = bytes(range(0x41, 0x41 + size))
    auth = AuthSection(AuthType.SIMPLE_PASSWORD, 9, password)
    pkt = ControlPacket(State.UP, Diag.NO_DIAGNOSTIC, FLAG_AUTH, 3, 1, 2, 3, 4, 0, auth)
    data = encode(pkt)
    assert data[3] == len(data) == 24 + 3 + size
    assert data[24:27] == bytes((1, 3 + size, 9))
    assert data[27:] == password
    back = decode(data)
    assert back == pkt
    assert back.auth is not None
    assert back.auth.length == 3 + size
    assert back.auth.sequence is None


@pytest.mark.parametrize(
    ("auth_type", "digest_len"),
    [
        (AuthType.KEYED_MD5, 16),
        (AuthType.METICULOUS_KEYED_MD5, 16),
        (AuthType.KEYED_SHA1, 20),
        (AuthType.METICULOUS_KEYED_SHA1, 20),
    ],
)
def test_keyed_auth_round_trip(auth_type: AuthType, digest_len: int) -> None:
    sequence = 0x8899AABB
    data_field = b"\x00" + sequence.to_bytes(4, "big") + bytes(range(100, 100 + digest_len))
    auth = AuthSection(auth_type, 42, data_field)
    pkt = ControlPacket(State.INIT, Diag.NO_DIAGNOSTIC, FLAG_AUTH, 3, 1, 2, 3, 4, 0, auth)
    data = encode(pkt)
    expected_len = 24 if digest_len == 16 else 28
    assert auth.length == expected_len
    assert data[3] == len(data) == 24 + expected_len
    assert data[24:27] == bytes((auth_type, expected_len, 42))
    back = decode(data)
    assert back == pkt
    assert back.auth is not None
    assert back.auth.sequence == sequence


@pytest.mark.parametrize("auth_type", [0, 6, 200, 255])
def test_unknown_auth_type_is_framed_not_judged(auth_type: int) -> None:
    # Types without a defined length only need to fit; the session then drops
    # the packet as an authentication mismatch.
    tail = auth_tail(auth_type, 7)
    pkt = decode(raw(flags=FLAG_AUTH, tail=tail))
    assert pkt.auth == AuthSection(auth_type, 1, tail[3:])


# ------------------------------------------------------------ scapy as a second opinion

scapy_bfd = pytest.importorskip("scapy.contrib.bfd")


def assert_scapy_agrees(pkt: ControlPacket, data: bytes) -> Any:
    theirs = scapy_bfd.BFD(data)
    assert theirs.version == 1
    assert theirs.diag == pkt.diag
    assert theirs.sta == pkt.state
    assert int(theirs.flags) == pkt.flags | (FLAG_AUTH if pkt.auth else 0)
    assert theirs.detect_mult == pkt.detect_mult
    assert theirs.len == len(data)
    assert theirs.my_discriminator == pkt.my_discr
    assert theirs.your_discriminator == pkt.your_discr
    assert theirs.min_tx_interval == pkt.desired_min_tx_us
    assert theirs.min_rx_interval == pkt.required_min_rx_us
    assert theirs.echo_rx_interval == pkt.required_min_echo_rx_us
    return theirs


@pytest.mark.parametrize("pkt", EXAMPLES)
def test_scapy_decodes_what_we_encode(pkt: ControlPacket) -> None:
    data = encode(pkt)
    theirs = assert_scapy_agrees(pkt, data)
    assert bytes(theirs) == data


def test_scapy_flag_names_match_ours() -> None:
    data = encode(EXAMPLES[0]._replace(flags=FLAG_POLL | FLAG_CPI | FLAG_DEMAND))
    flags = scapy_bfd.BFD(data).flags
    assert flags.P and flags.C and flags.D
    assert not (flags.F or flags.A or flags.M)


def test_we_decode_what_scapy_builds() -> None:
    theirs = scapy_bfd.BFD(
        diag=3,
        sta=2,
        flags="F",
        detect_mult=5,
        my_discriminator=77,
        your_discriminator=88,
        min_tx_interval=10,
        min_rx_interval=20,
        echo_rx_interval=30,
    )
    assert decode(bytes(theirs)) == ControlPacket(
        State.INIT, Diag.NEIGHBOR_SIGNALED_SESSION_DOWN, FLAG_FINAL, 5, 77, 88, 10, 20, 30
    )


@pytest.mark.parametrize("password", [b"p", b"secret", b"0123456789abcdef"])
def test_scapy_simple_password(password: bytes) -> None:
    auth = AuthSection(AuthType.SIMPLE_PASSWORD, 3, password)
    pkt = ControlPacket(State.UP, Diag.NO_DIAGNOSTIC, FLAG_AUTH, 3, 1, 2, 3, 4, 0, auth)
    data = encode(pkt)
    theirs = assert_scapy_agrees(pkt, data)
    opt = theirs.optional_auth
    assert opt.auth_type == AuthType.SIMPLE_PASSWORD
    assert opt.auth_len == 3 + len(password)
    assert opt.auth_keyid == 3
    assert opt.auth_key == password


@pytest.mark.parametrize(
    ("auth_type", "digest_len"), [(AuthType.KEYED_MD5, 16), (AuthType.METICULOUS_KEYED_SHA1, 20)]
)
def test_scapy_keyed_auth(auth_type: AuthType, digest_len: int) -> None:
    digest = bytes(range(200, 200 + digest_len))
    auth = AuthSection(auth_type, 17, b"\x00" + (123456).to_bytes(4, "big") + digest)
    pkt = ControlPacket(State.UP, Diag.NO_DIAGNOSTIC, FLAG_AUTH, 3, 1, 2, 3, 4, 0, auth)
    data = encode(pkt)
    theirs = assert_scapy_agrees(pkt, data)
    opt = theirs.optional_auth
    assert opt.auth_type == auth_type
    assert opt.auth_len == auth.length
    assert opt.auth_keyid == 17
    assert opt.reserved == 0
    assert opt.sequence_number == 123456
    assert opt.auth_key == int.from_bytes(digest, "big")


def test_auth_section_repr_hides_the_password() -> None:
    from aiobfd.protocol.packet import AuthSection

    section = AuthSection(1, 7, b"hunter2")
    assert "hunter2" not in repr(section) and "hunter2" not in str(section)
    assert "hunter2" not in repr(ControlPacket(State.UP, Diag(0), 0, 3, 1, 2, 1, 1, 0, section))
