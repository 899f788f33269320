"""RFC 5880 §6.7 authentication: signing, verification, sequence numbers, keys, secrets."""

from __future__ import annotations

import hashlib
import random
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aiobfd.protocol.auth import (
    AuthConfig,
    Authenticator,
    AuthKey,
    max_secret_length,
)
from aiobfd.protocol.errors import DropReason, PacketError
from aiobfd.protocol.packet import (
    FLAG_AUTH,
    FLAG_FINAL,
    FLAG_POLL,
    AuthSection,
    AuthType,
    ControlPacket,
    Diag,
    State,
    decode,
    encode,
)
from aiobfd.secret_sources import load_secret_env, load_secret_file
from tests.property.strategies import valid_packets

U32 = 0xFFFF_FFFF
SECOND = 1_000_000
DETECT = 900_000  # a Detection Time of 3 x 300 ms
SECRET = b"Sw0rdf1sh-TOPSEC"  # 16 bytes: fits every type
OTHER = b"another-secret"

ALL_TYPES = [
    AuthType.SIMPLE_PASSWORD,
    AuthType.KEYED_MD5,
    AuthType.METICULOUS_KEYED_MD5,
    AuthType.KEYED_SHA1,
    AuthType.METICULOUS_KEYED_SHA1,
]
KEYED = ALL_TYPES[1:]
METICULOUS = [AuthType.METICULOUS_KEYED_MD5, AuthType.METICULOUS_KEYED_SHA1]
NON_METICULOUS = [AuthType.KEYED_MD5, AuthType.KEYED_SHA1]
HASH = {2: hashlib.md5, 3: hashlib.md5, 4: hashlib.sha1, 5: hashlib.sha1}
DIGEST_LEN = {2: 16, 3: 16, 4: 20, 5: 20}
_HEADER = struct.Struct("!BBBBIIIII")


class FixedBits:
    """An RNG whose getrandbits always answers ``value``."""

    def __init__(self, value: int) -> None:
        self.value = value

    def getrandbits(self, k: int, /) -> int:
        return self.value & ((1 << k) - 1)


def pkt(
    state: State = State.UP, *, flags: int = 0, mult: int = 3, my: int = 0x2222, your: int = 0x1111
) -> ControlPacket:
    return ControlPacket(state, Diag.NO_DIAGNOSTIC, flags, mult, my, your, 300_000, 300_000)


def pair(
    auth_type: AuthType, *, secret: bytes = SECRET, key_id: int = 7, seed: int = 1
) -> tuple[Authenticator, Authenticator]:
    """A sender and a receiver sharing one key."""
    cfg = AuthConfig.single(auth_type, key_id, secret)
    return Authenticator(cfg, random.Random(seed)), Authenticator(cfg, random.Random(seed + 1))


def hand_sign(
    p: ControlPacket,
    auth_type: int,
    key_id: int,
    secret: bytes,
    seq: int = 0,
    *,
    reserved: int = 0,
) -> bytes:
    """Build a signed packet from the RFC text alone: struct + hashlib, no aiobfd code."""
    if auth_type == AuthType.SIMPLE_PASSWORD:
        auth = bytes((auth_type, 3 + len(secret), key_id)) + secret
    else:
        n = DIGEST_LEN[auth_type]
        auth = bytes((auth_type, 8 + n, key_id, reserved)) + seq.to_bytes(4, "big")
        auth += secret.ljust(n, b"\0")  # §6.7.3/§6.7.4: key padded with zeros
    head = _HEADER.pack(
        (1 << 5) | p.diag,
        (p.state << 6) | p.flags | FLAG_AUTH,
        p.detect_mult,
        24 + len(auth),
        p.my_discr,
        p.your_discr,
        p.desired_min_tx_us,
        p.required_min_rx_us,
        p.required_min_echo_rx_us,
    )
    whole = head + auth
    if auth_type == AuthType.SIMPLE_PASSWORD:
        return whole
    n = DIGEST_LEN[auth_type]
    return whole[:-n] + HASH[auth_type](whole).digest()


def receiver(auth_type: AuthType, *keys: tuple[int, bytes]) -> Authenticator:
    keys = keys or ((7, SECRET),)
    cfg = AuthConfig(auth_type, tuple(AuthKey(i, s) for i, s in keys), keys[0][0])
    return Authenticator(cfg, random.Random(99))


def deliver(rx: Authenticator, wire: bytes, now: int = 0, detect: int = DETECT) -> None:
    rx.verify(decode(wire), wire, now, detect)


def reason(rx: Authenticator, wire: bytes, now: int = 0, detect: int = DETECT) -> PacketError:
    with pytest.raises(PacketError) as info:
        deliver(rx, wire, now, detect)
    return info.value


def accepts(rx: Authenticator, wire: bytes, now: int = 0, detect: int = DETECT) -> bool:
    try:
        deliver(rx, wire, now, detect)
    except PacketError:
        return False
    return True


# --------------------------------------------------------------- round trips


@pytest.mark.parametrize("auth_type", ALL_TYPES)
def test_round_trip(auth_type: AuthType) -> None:
    tx, rx = pair(auth_type)
    packets = [pkt(State.DOWN, your=0), pkt(State.INIT), pkt(), pkt(flags=FLAG_POLL), pkt()]
    for i, p in enumerate(packets):
        wire = tx.encode(p)
        decoded = decode(wire)
        assert decoded.flags & FLAG_AUTH
        assert decoded._replace(auth=None, flags=decoded.flags & ~FLAG_AUTH) == p
        deliver(rx, wire, now=i * 300_000)


@pytest.mark.parametrize("auth_type", ALL_TYPES)
def test_encoded_section_layout(auth_type: AuthType) -> None:
    tx = Authenticator(AuthConfig.single(auth_type, 9, b"abc"), FixedBits(0x01020304))
    wire = tx.encode(pkt())
    auth = decode(wire).auth
    assert auth is not None
    assert auth.auth_type == auth_type
    assert auth.key_id == 9
    if auth_type is AuthType.SIMPLE_PASSWORD:
        assert wire[3] == 24 + 3 + 3  # §4.2: Auth Len is the password length plus 3
        assert auth.data == b"abc"
    else:
        n = DIGEST_LEN[auth_type]
        assert wire[3] == len(wire) == 24 + 8 + n  # §4.3/§4.4: Auth Len 24 or 28
        assert wire[25] == 8 + n
        assert wire[27] == 0  # Reserved
        assert auth.sequence == 0x01020304  # bfd.XmitAuthSeq from the RNG
        assert b"abc" not in wire  # the key is replaced by the digest


@pytest.mark.parametrize("auth_type", ALL_TYPES)
def test_encode_replaces_any_auth_section(auth_type: AuthType) -> None:
    tx, rx = pair(auth_type)
    stale = pkt()._replace(auth=AuthSection(AuthType.KEYED_MD5, 200, bytes(21)))
    wire = tx.encode(stale)
    assert decode(wire).auth.key_id == 7  # type: ignore[union-attr]
    deliver(rx, wire)


@pytest.mark.parametrize("auth_type", ALL_TYPES)
def test_scapy_parses_the_section(auth_type: AuthType) -> None:
    bfd = pytest.importorskip("scapy.contrib.bfd")
    tx = Authenticator(AuthConfig.single(auth_type, 5, b"pw"), FixedBits(77))
    wire = tx.encode(pkt())
    parsed = bfd.BFD(wire)
    assert parsed.flags.A
    assert parsed.len == len(wire)
    assert parsed.my_discriminator == 0x2222
    section = parsed.optional_auth
    assert section.auth_type == auth_type
    assert section.auth_keyid == 5
    if auth_type is AuthType.SIMPLE_PASSWORD:
        # scapy takes Auth Len octets for the password (3 too many, as far as
        # the packet goes); what it got must start with the password.
        assert section.auth_len == 5
        assert bytes(section.auth_key).startswith(b"pw")
    else:
        assert section.reserved == 0
        assert section.sequence_number == 77
        n = DIGEST_LEN[auth_type]
        assert section.auth_key == int.from_bytes(wire[-n:], "big")


# ------------------------------------------------------------ known answers


@pytest.mark.parametrize("auth_type", KEYED)
def test_known_answer_digest(auth_type: AuthType) -> None:
    """The digest of the whole packet with the zero-padded key in the digest field."""
    p = ControlPacket(State.UP, Diag.NO_DIAGNOSTIC, 0, 3, 0x11223344, 0x55667788, 50_000, 60_000)
    tx = Authenticator(AuthConfig.single(auth_type, 1, b"key"), FixedBits(0xDEADBEEF))
    n = DIGEST_LEN[auth_type]
    length = 24 + 8 + n
    expected_input = (
        bytes([0x20, 0xC0 | 0x04, 3, length])
        + (0x11223344).to_bytes(4, "big")
        + (0x55667788).to_bytes(4, "big")
        + (50_000).to_bytes(4, "big")
        + (60_000).to_bytes(4, "big")
        + bytes(4)
        + bytes([auth_type, 8 + n, 1, 0])
        + bytes.fromhex("deadbeef")
        + b"key"
        + bytes(n - 3)
    )
    digest = HASH[auth_type](expected_input).digest()
    wire = tx.encode(p)
    assert wire == expected_input[:-n] + digest
    assert wire == hand_sign(p, auth_type, 1, b"key", 0xDEADBEEF)


def test_known_answer_fixed_vectors() -> None:
    """Frozen wire images: Up, mult 3, discriminators 1 and 2, 1 s intervals,
    key id 1, sequence 1, key ``secret``."""
    p = ControlPacket(State.UP, Diag.NO_DIAGNOSTIC, 0, 3, 1, 2, 1_000_000, 1_000_000)
    fields = "00000001 00000002 000f4240 000f4240 00000000"
    md5 = Authenticator(AuthConfig.single(AuthType.KEYED_MD5, 1, b"secret"), FixedBits(1))
    assert md5.encode(p).hex(" ", 4) == (
        f"20c40330 {fields} 02180100 00000001 3ebb4b10 a6b624a7 6f73a576 d544985e"
    )
    sha1 = Authenticator(AuthConfig.single(AuthType.KEYED_SHA1, 1, b"secret"), FixedBits(1))
    assert sha1.encode(p).hex(" ", 4) == (
        f"20c40334 {fields} 041c0100 00000001 ddecfcd3 77353985 a02ed2dc b4c2cb59 5bba93f2"
    )


@pytest.mark.parametrize("auth_type", KEYED)
def test_verifies_hand_built_packets(auth_type: AuthType) -> None:
    rx = receiver(auth_type)
    assert accepts(rx, hand_sign(pkt(), auth_type, 7, SECRET, 1000))
    assert rx.auth_seq_known
    assert rx.rcv_auth_seq == 1000


@pytest.mark.parametrize("auth_type", KEYED)
def test_full_length_keys(auth_type: AuthType) -> None:
    longest = bytes(range(1, max_secret_length(auth_type) + 1))
    tx, rx = pair(auth_type, secret=longest)
    seq = tx.xmit_auth_seq
    wire = tx.encode(pkt())
    assert wire == hand_sign(pkt(), auth_type, 7, longest, seq)
    deliver(rx, wire)


@pytest.mark.parametrize("auth_type", KEYED)
def test_reserved_octet_ignored_on_receipt(auth_type: AuthType) -> None:
    """§4.3/§4.4: Reserved is zero on transmit and ignored on receipt (it is still hashed)."""
    rx = receiver(auth_type)
    assert accepts(rx, hand_sign(pkt(), auth_type, 7, SECRET, 5, reserved=0xA5))


@pytest.mark.parametrize("auth_type", KEYED)
def test_octets_past_the_length_field_are_not_hashed(auth_type: AuthType) -> None:
    tx, rx = pair(auth_type)
    wire = tx.encode(pkt())
    deliver(rx, wire + b"trailing junk")


# ----------------------------------------------------------------- rejects


@pytest.mark.parametrize("auth_type", ALL_TYPES)
def test_wrong_secret(auth_type: AuthType) -> None:
    tx = Authenticator(AuthConfig.single(auth_type, 7, OTHER), random.Random(1))
    err = reason(receiver(auth_type), tx.encode(pkt()))
    assert err.reason is DropReason.AUTH_FAILED


@pytest.mark.parametrize("auth_type", ALL_TYPES)
def test_unknown_key_id(auth_type: AuthType) -> None:
    tx = Authenticator(AuthConfig.single(auth_type, 8, SECRET), random.Random(1))
    err = reason(receiver(auth_type), tx.encode(pkt()))
    assert err.reason is DropReason.AUTH_FAILED
    assert "key id 8" in str(err)


@pytest.mark.parametrize("auth_type", ALL_TYPES)
def test_other_auth_type(auth_type: AuthType) -> None:
    other = AuthType.KEYED_SHA1 if auth_type != AuthType.KEYED_SHA1 else AuthType.KEYED_MD5
    tx = Authenticator(AuthConfig.single(other, 7, SECRET), random.Random(1))
    err = reason(receiver(auth_type), tx.encode(pkt()))
    assert err.reason is DropReason.AUTH_MISMATCH


def test_meticulous_and_plain_are_different_types() -> None:
    tx, _ = pair(AuthType.KEYED_SHA1)
    err = reason(receiver(AuthType.METICULOUS_KEYED_SHA1), tx.encode(pkt()))
    assert err.reason is DropReason.AUTH_MISMATCH


@pytest.mark.parametrize("auth_type", ALL_TYPES)
def test_no_auth_section(auth_type: AuthType) -> None:
    err = reason(receiver(auth_type), encode(pkt()))
    assert err.reason is DropReason.AUTH_MISMATCH


def test_simple_password_must_match_exactly() -> None:
    rx = receiver(AuthType.SIMPLE_PASSWORD, (7, b"password"))
    for wrong in (b"passwor", b"password1", b"Password", b"p"):
        err = reason(rx, hand_sign(pkt(), 1, 7, wrong))
        assert err.reason is DropReason.AUTH_FAILED
    assert accepts(rx, hand_sign(pkt(), 1, 7, b"password"))


@pytest.mark.parametrize("auth_type", KEYED)
def test_tampered_packet(auth_type: AuthType) -> None:
    tx, rx = pair(auth_type)
    wire = bytearray(tx.encode(pkt()))
    wire[20] ^= 0x01  # Required Min Echo RX Interval
    err = reason(rx, bytes(wire))
    assert err.reason is DropReason.AUTH_FAILED
    assert not rx.auth_seq_known


@pytest.mark.parametrize("auth_type", KEYED)
def test_failed_packet_does_not_move_the_sequence(auth_type: AuthType) -> None:
    """Erratum 7083: bfd.RcvAuthSeq and AuthSeqKnown change only after the digest matched."""
    rx = receiver(auth_type)
    deliver(rx, hand_sign(pkt(), auth_type, 7, SECRET, 100))
    bad = hand_sign(pkt(), auth_type, 7, OTHER, 104)
    assert reason(rx, bad, now=1).reason is DropReason.AUTH_FAILED
    assert rx.rcv_auth_seq == 100
    # Were 104 recorded, 101 would now be a replay.
    assert accepts(rx, hand_sign(pkt(), auth_type, 7, SECRET, 101), now=2)


# -------------------------------------------------------- sequence numbers


@pytest.mark.parametrize("auth_type", METICULOUS)
def test_meticulous_replay_dropped(auth_type: AuthType) -> None:
    tx, rx = pair(auth_type)
    wire = tx.encode(pkt())
    deliver(rx, wire)
    err = reason(rx, wire, now=1)
    assert err.reason is DropReason.AUTH_FAILED
    assert "sequence" in str(err)


@pytest.mark.parametrize("auth_type", NON_METICULOUS)
def test_keyed_repeat_accepted_older_dropped(auth_type: AuthType) -> None:
    tx, rx = pair(auth_type)
    old = tx.encode(pkt(State.INIT))
    deliver(rx, old)
    deliver(rx, old, now=1)  # same number: inside the window
    new = tx.encode(pkt(State.UP))  # another state: the number moves on
    deliver(rx, new, now=2)
    assert reason(rx, old, now=3).reason is DropReason.AUTH_FAILED


@pytest.mark.parametrize("auth_type", KEYED)
@pytest.mark.parametrize("mult", [1, 3, 5])
def test_window_edges(auth_type: AuthType, mult: int) -> None:
    meticulous = auth_type in METICULOUS
    base = 5000
    rx = receiver(auth_type)

    def sign(seq: int) -> bytes:
        return hand_sign(pkt(mult=mult), auth_type, 7, SECRET, seq & U32)

    deliver(rx, sign(base))
    # Both ends of the window, inclusive, and one past each.  Only the last
    # check moves bfd.RcvAuthSeq (accepting base again leaves it at base).
    assert accepts(rx, sign(base)) is not meticulous
    assert rx.rcv_auth_seq == base
    assert not accepts(rx, sign(base - 1))
    assert not accepts(rx, sign(base + 3 * mult + 1))
    assert not accepts(rx, sign(base + 2**31))
    assert accepts(rx, sign(base + 3 * mult))
    assert rx.rcv_auth_seq == base + 3 * mult


@pytest.mark.parametrize("auth_type", METICULOUS)
def test_meticulous_lower_edge(auth_type: AuthType) -> None:
    rx = receiver(auth_type)
    deliver(rx, hand_sign(pkt(), auth_type, 7, SECRET, 10))
    assert accepts(rx, hand_sign(pkt(), auth_type, 7, SECRET, 11))


def test_window_uses_the_received_detect_mult() -> None:
    """3 x the Detect Mult field of the packet: the remote's multiplier."""
    rx = receiver(AuthType.METICULOUS_KEYED_SHA1)
    deliver(rx, hand_sign(pkt(mult=10), 5, 7, SECRET, 0))
    assert accepts(rx, hand_sign(pkt(mult=10), 5, 7, SECRET, 30))
    assert not accepts(rx, hand_sign(pkt(mult=2), 5, 7, SECRET, 37))
    assert accepts(rx, hand_sign(pkt(mult=2), 5, 7, SECRET, 36))


@pytest.mark.parametrize("auth_type", KEYED)
def test_receive_window_wraps(auth_type: AuthType) -> None:
    rx = receiver(auth_type)
    deliver(rx, hand_sign(pkt(), auth_type, 7, SECRET, U32 - 1))
    assert accepts(rx, hand_sign(pkt(), auth_type, 7, SECRET, 3))  # 5 ahead, across 2^32
    assert rx.rcv_auth_seq == 3
    assert not accepts(rx, hand_sign(pkt(), auth_type, 7, SECRET, U32))  # now behind


@pytest.mark.parametrize("auth_type", METICULOUS)
def test_meticulous_steps_over_zero(auth_type: AuthType) -> None:
    rx = receiver(auth_type)
    deliver(rx, hand_sign(pkt(), auth_type, 7, SECRET, U32))
    assert accepts(rx, hand_sign(pkt(), auth_type, 7, SECRET, 0))


@pytest.mark.parametrize("auth_type", METICULOUS)
def test_transmit_wraps_and_increments_every_packet(auth_type: AuthType) -> None:
    tx = Authenticator(AuthConfig.single(auth_type, 1, SECRET), FixedBits(U32 - 1))
    rx = receiver(auth_type, (1, SECRET))
    seqs = []
    for i in range(4):
        wire = tx.encode(pkt())  # identical packets: still a new number each
        seqs.append(decode(wire).auth.sequence)  # type: ignore[union-attr]
        deliver(rx, wire, now=i)
    assert seqs == [U32 - 1, U32, 0, 1]
    assert tx.xmit_auth_seq == 2


@pytest.mark.parametrize("auth_type", NON_METICULOUS)
def test_keyed_transmit_moves_when_contents_change(auth_type: AuthType) -> None:
    tx = Authenticator(AuthConfig.single(auth_type, 1, SECRET), FixedBits(U32))

    def seq(p: ControlPacket) -> int | None:
        auth = decode(tx.encode(p)).auth
        assert auth is not None
        return auth.sequence

    assert [seq(pkt(State.DOWN, your=0)) for _ in range(3)] == [U32] * 3
    assert seq(pkt(State.INIT)) == 0  # state changed; wraps modulo 2^32
    assert seq(pkt(State.INIT)) == 0
    assert seq(pkt(State.INIT, flags=FLAG_FINAL)) == 1  # another packet
    assert seq(pkt(State.INIT)) == 2  # and back


def test_random_initial_transmit_sequence() -> None:
    cfg = AuthConfig.single(AuthType.METICULOUS_KEYED_SHA1, 1, SECRET)
    firsts = {Authenticator(cfg, random.Random(seed)).xmit_auth_seq for seed in range(20)}
    assert len(firsts) == 20
    assert all(0 <= s <= U32 for s in firsts)


# ----------------------------------------------------- bfd.AuthSeqKnown expiry


@pytest.mark.parametrize("auth_type", KEYED)
def test_sequence_forgotten_after_twice_the_detection_time(auth_type: AuthType) -> None:
    rx = receiver(auth_type)
    t0 = 10 * SECOND
    deliver(rx, hand_sign(pkt(), auth_type, 7, SECRET, 1000), now=t0)
    restarted = hand_sign(pkt(State.DOWN, your=0), auth_type, 7, SECRET, 7)  # peer restarted
    # Not yet: silence shorter than 2 x Detection Time.
    assert not accepts(rx, restarted, now=t0 + 2 * DETECT - 1)
    # Dropped packets do not count as heard: the sequence still expires.
    assert rx.auth_seq_known
    assert accepts(rx, restarted, now=t0 + 2 * DETECT)
    assert rx.rcv_auth_seq == 7


@pytest.mark.parametrize("auth_type", KEYED)
def test_authenticated_packets_keep_the_sequence(auth_type: AuthType) -> None:
    tx, rx = pair(auth_type)
    old = tx.encode(pkt(State.INIT))
    now = 0
    for _ in range(10):
        deliver(rx, tx.encode(pkt(State.UP)), now=now)
        now += DETECT  # each gap is under 2 x Detection Time
    assert reason(rx, old, now=now).reason is DropReason.AUTH_FAILED


@pytest.mark.parametrize("auth_type", KEYED)
def test_an_expired_detection_time_does_not_shorten_the_memory(auth_type: AuthType) -> None:
    """After a detection timeout the session's Detection Time is 0 (§6.8.1 resets
    the remote's values): the sequence is still kept for twice the Detection
    Time of the silence, so an old packet replayed within it is refused."""
    rx = receiver(auth_type)
    deliver(rx, hand_sign(pkt(), auth_type, 7, SECRET, 1000), now=0, detect=DETECT)
    replayed = hand_sign(pkt(), auth_type, 7, SECRET, 970)
    assert not accepts(rx, replayed, now=3 * DETECT // 2, detect=0)
    assert rx.auth_seq_known
    # A restarted peer's new sequence is learnt once twice that time has passed.
    assert accepts(rx, hand_sign(pkt(), auth_type, 7, SECRET, 5), now=2 * DETECT, detect=0)
    assert rx.rcv_auth_seq == 5


# ----------------------------------------------------------------- rotation


@pytest.mark.parametrize("auth_type", ALL_TYPES)
def test_key_rotation(auth_type: AuthType) -> None:
    k1, k2 = AuthKey(1, SECRET), AuthKey(2, OTHER)
    a = Authenticator(AuthConfig(auth_type, (k1,), 1), random.Random(1))
    b = Authenticator(AuthConfig(auth_type, (k1,), 1), random.Random(2))
    now = 0

    def exchange() -> None:
        nonlocal now
        now += 300_000
        deliver(b, a.encode(pkt()), now=now)
        deliver(a, b.encode(pkt()), now=now)

    exchange()
    # Step 1: both accept the new key; still sending the old one.
    a.set_config(AuthConfig(auth_type, (k1, k2), 1))
    exchange()
    b.set_config(AuthConfig(auth_type, (k1, k2), 1))
    exchange()
    # Step 2: switch transmit keys, one end at a time; sequences carry on.
    seq_before = a.xmit_auth_seq
    a.set_config(AuthConfig(auth_type, (k1, k2), 2))
    assert a.xmit_auth_seq == seq_before
    wire = a.encode(pkt())
    assert decode(wire).auth.key_id == 2  # type: ignore[union-attr]
    deliver(b, wire, now=now + 1)
    exchange()
    b.set_config(AuthConfig(auth_type, (k1, k2), 2))
    exchange()
    # Step 3: retire the old key; a packet under it is now refused.
    stale = Authenticator(AuthConfig(auth_type, (k1,), 1), random.Random(3)).encode(pkt())
    a.set_config(AuthConfig(auth_type, (k2,), 2))
    b.set_config(AuthConfig(auth_type, (k2,), 2))
    exchange()
    assert reason(b, stale, now=now + 1).reason is DropReason.AUTH_FAILED


@pytest.mark.parametrize("auth_type", METICULOUS)
def test_rotation_keeps_replay_protection(auth_type: AuthType) -> None:
    tx, rx = pair(auth_type)
    old = tx.encode(pkt())
    deliver(rx, old)
    deliver(rx, tx.encode(pkt()), now=1)
    seq = rx.rcv_auth_seq
    rx.set_config(AuthConfig(auth_type, (AuthKey(7, SECRET), AuthKey(8, OTHER)), 8))
    assert rx.auth_seq_known
    assert rx.rcv_auth_seq == seq
    assert reason(rx, old, now=2).reason is DropReason.AUTH_FAILED


# ------------------------------------------------------------------ config


def test_config_validation() -> None:
    key = AuthKey(1, b"x")
    with pytest.raises(ValueError, match="at least one key"):
        AuthConfig(AuthType.KEYED_SHA1, (), 1)
    with pytest.raises(ValueError, match="twice"):
        AuthConfig(AuthType.KEYED_SHA1, (key, AuthKey(1, b"y")), 1)
    with pytest.raises(ValueError, match="transmit key id 2"):
        AuthConfig(AuthType.KEYED_SHA1, (key,), 2)
    with pytest.raises(ValueError, match="not supported"):
        AuthConfig(AuthType.RESERVED, (key,), 1)
    with pytest.raises(ValueError, match="not known"):
        AuthConfig(9, (key,), 1)
    with pytest.raises(ValueError, match="between 0 and 255"):
        AuthKey(256, b"x")
    with pytest.raises(ValueError, match="between 0 and 255"):
        AuthKey(-1, b"x")
    with pytest.raises(TypeError):
        AuthKey(1, "text")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty"):
        AuthConfig.single(AuthType.KEYED_MD5, 1, b"")
    assert AuthConfig(4, [key], 1).auth_type is AuthType.KEYED_SHA1


@pytest.mark.parametrize(
    ("auth_type", "limit"),
    [(1, 16), (2, 16), (3, 16), (4, 20), (5, 20)],
)
def test_secret_length_limits(auth_type: AuthType, limit: int) -> None:
    assert max_secret_length(auth_type) == limit
    AuthConfig.single(auth_type, 1, b"k" * limit)
    with pytest.raises(ValueError, match=f"longer than the {limit} bytes"):
        AuthConfig.single(auth_type, 1, b"k" * (limit + 1))


# ----------------------------------------------------------------- secrets


def _leaks(text: str, secret: bytes) -> bool:
    return any(
        form in text
        for form in (secret.decode("latin-1"), secret.hex(), repr(secret), str(list(secret)))
    )


@pytest.mark.parametrize("auth_type", ALL_TYPES)
def test_secrets_never_printed(auth_type: AuthType) -> None:
    key = AuthKey(3, SECRET)
    cfg = AuthConfig(auth_type, (key, AuthKey(4, OTHER)), 3)
    auth = Authenticator(cfg, random.Random(1))
    for obj in (key, cfg, auth):
        for text in (repr(obj), str(obj), f"{obj}", f"{obj!r}"):
            assert not _leaks(text, SECRET), text
            assert not _leaks(text, OTHER), text
    assert "redacted" in repr(key)


@pytest.mark.parametrize("auth_type", ALL_TYPES)
def test_drop_messages_never_carry_secrets(auth_type: AuthType) -> None:
    rx = receiver(auth_type, (7, SECRET))
    wrong = Authenticator(AuthConfig.single(auth_type, 7, OTHER), random.Random(1))
    unknown = Authenticator(AuthConfig.single(auth_type, 9, SECRET), random.Random(1))
    errors = [reason(rx, wrong.encode(pkt())), reason(rx, unknown.encode(pkt()))]
    if auth_type in KEYED:
        good, _ = pair(auth_type)
        deliver(rx, good.encode(pkt()))
        errors.append(reason(rx, hand_sign(pkt(), auth_type, 7, SECRET, rx.rcv_auth_seq + 99)))
    for err in errors:
        for text in (str(err), repr(err), err.detail):
            assert not _leaks(text, SECRET)
            assert not _leaks(text, OTHER)


# ----------------------------------------------------------------- loaders


def test_load_secret_file(tmp_path: Path) -> None:
    f = tmp_path / "bfd.key"
    f.write_bytes(b"s3cret\n")
    assert load_secret_file(f, AuthType.KEYED_SHA1) == b"s3cret"
    f.write_bytes(b"s3cret\r\n")
    assert load_secret_file(str(f), AuthType.KEYED_SHA1) == b"s3cret"
    f.write_bytes(b"s3cret\n\n")  # only one newline goes
    assert load_secret_file(f, AuthType.KEYED_SHA1) == b"s3cret\n"
    f.write_bytes(b"\x00\xff\x10binary")
    assert load_secret_file(f, AuthType.KEYED_SHA1) == b"\x00\xff\x10binary"


@pytest.mark.parametrize(
    ("content", "auth_type", "message"),
    [
        (b"", AuthType.KEYED_SHA1, "empty"),
        (b"\n", AuthType.KEYED_SHA1, "empty"),
        (b"A" * 17 + b"\n", AuthType.KEYED_MD5, "longer than the 16 bytes Keyed MD5"),
        (b"A" * 17, AuthType.SIMPLE_PASSWORD, "longer than the 16 bytes Simple Password"),
        (b"A" * 21, AuthType.METICULOUS_KEYED_SHA1, "20 bytes Meticulous Keyed SHA1"),
    ],
)
def test_load_secret_file_refuses(
    tmp_path: Path, content: bytes, auth_type: AuthType, message: str
) -> None:
    f = tmp_path / "bad.key"
    f.write_bytes(content)
    with pytest.raises(ValueError, match=message) as info:
        load_secret_file(f, auth_type)
    assert str(f) in str(info.value)
    assert "AAAA" not in str(info.value)


def test_load_secret_file_missing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read") as info:
        load_secret_file(tmp_path / "nope", AuthType.KEYED_SHA1)
    assert "nope" in str(info.value)


def test_load_secret_env() -> None:
    env = {"BFD_KEY": "s3cret\n", "LONG": "x" * 21, "EMPTY": ""}
    assert load_secret_env("BFD_KEY", AuthType.KEYED_SHA1, env) == b"s3cret"
    with pytest.raises(ValueError, match="environment variable MISSING is not set"):
        load_secret_env("MISSING", AuthType.KEYED_SHA1, env)
    with pytest.raises(ValueError, match="LONG") as info:
        load_secret_env("LONG", AuthType.KEYED_SHA1, env)
    assert "xxxx" not in str(info.value)
    with pytest.raises(ValueError, match="EMPTY: the secret is empty"):
        load_secret_env("EMPTY", AuthType.KEYED_SHA1, env)


def test_load_secret_env_reads_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIOBFD_TEST_SECRET", "pw")
    assert load_secret_env("AIOBFD_TEST_SECRET", AuthType.SIMPLE_PASSWORD) == b"pw"


# ------------------------------------------------------------- properties

PROPS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
type_st = st.sampled_from(ALL_TYPES)


@PROPS
@given(type_st, st.binary(max_size=80), st.integers(0, 2**40), st.integers(0, 2**32))
def test_arbitrary_bytes_raise_only_packet_error(
    auth_type: AuthType, data: bytes, now: int, detect: int
) -> None:
    rx = receiver(auth_type, (7, SECRET), (0, OTHER))
    try:
        p = decode(data)
    except PacketError:
        return
    try:
        rx.verify(p, data, now, detect)
    except PacketError as exc:
        assert isinstance(exc.reason, DropReason)


@PROPS
@given(type_st, valid_packets(), st.binary(max_size=80), st.integers(0, 2**40))
def test_arbitrary_packet_and_bytes_raise_only_packet_error(
    auth_type: AuthType, p: ControlPacket, data: bytes, now: int
) -> None:
    """Even a packet that does not match the bytes (caller misuse) is only dropped."""
    rx = receiver(auth_type, (7, SECRET), (0, OTHER))
    for raw in (data, encode(p)):
        try:
            rx.verify(p, raw, now, DETECT)
        except PacketError as exc:
            assert isinstance(exc.reason, DropReason)


@PROPS
@given(
    st.sampled_from(KEYED),
    st.integers(0, 51),
    st.integers(1, 255),
    st.integers(0, U32),
)
def test_any_modified_octet_is_refused(auth_type: AuthType, index: int, xor: int, seq: int) -> None:
    """The digest covers every octet of a keyed packet, Reserved included."""
    good = hand_sign(pkt(), auth_type, 7, SECRET, seq)
    if index >= len(good):
        index %= len(good)
    bad = bytearray(good)
    bad[index] ^= xor
    rx = receiver(auth_type)
    try:
        p = decode(bytes(bad))
    except PacketError:
        return
    with pytest.raises(PacketError):
        rx.verify(p, bytes(bad), 0, DETECT)
    assert accepts(rx, good)


@PROPS
@given(st.sampled_from(KEYED), st.integers(0, U32), st.lists(st.integers(0, 20), max_size=20))
def test_in_order_stream_with_losses_stays_accepted(
    auth_type: AuthType, start: int, gaps: list[int]
) -> None:
    """A sender's packets, any of them lost but never more than 3 x Detect Mult
    in a row, are all accepted, across the 2^32 wrap too."""
    tx = Authenticator(AuthConfig.single(auth_type, 7, SECRET), FixedBits(start))
    rx = receiver(auth_type)
    now = 0
    states = [State.DOWN, State.INIT, State.UP]
    for i, gap in enumerate(gaps):
        for j in range(min(gap, 8)):  # lost packets, each different
            tx.encode(pkt(states[j % 3], flags=FLAG_POLL if j % 2 else 0))
        now += 100_000
        deliver(rx, tx.encode(pkt(states[i % 3])), now=now)
