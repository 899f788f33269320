"""The BFD Control packet (RFC 5880 §4.1): enums, the packet value, encode and decode.

Pure ``struct`` code.  :func:`decode` also runs every reception check of
RFC 5880 §6.8.6 that needs nothing but the packet itself, and raises
:class:`~aiobfd.errors.PacketError` with a typed reason for each.  Checks that
need a session (discriminator lookup, authentication) live in the session.
"""

from __future__ import annotations

import struct
from enum import IntEnum
from typing import NamedTuple

from .constants import AUTH_HEADER_LENGTH, BFD_VERSION, HEADER_LENGTH
from .errors import DropReason, PacketError

__all__ = [
    "FLAG_AUTH",
    "FLAG_CPI",
    "FLAG_DEMAND",
    "FLAG_FINAL",
    "FLAG_MULTIPOINT",
    "FLAG_POLL",
    "AuthSection",
    "AuthType",
    "ControlPacket",
    "Diag",
    "State",
    "decode",
    "encode",
]


class State(IntEnum):
    """RFC 5880 §4.1 session states (the Sta field)."""

    ADMIN_DOWN = 0
    DOWN = 1
    INIT = 2
    UP = 3

    @property
    def label(self) -> str:
        """Lower-case name as operators write it: ``admin_down``, ``up``..."""
        return self.name.lower()


class Diag(IntEnum):
    """RFC 5880 §4.1 diagnostic codes.  Codes 9-31 decode as ``RESERVED_n``."""

    NO_DIAGNOSTIC = 0
    CONTROL_DETECTION_TIME_EXPIRED = 1
    ECHO_FUNCTION_FAILED = 2
    NEIGHBOR_SIGNALED_SESSION_DOWN = 3
    FORWARDING_PLANE_RESET = 4
    PATH_DOWN = 5
    CONCATENATED_PATH_DOWN = 6
    ADMINISTRATIVELY_DOWN = 7
    REVERSE_CONCATENATED_PATH_DOWN = 8

    @classmethod
    def _missing_(cls, value: object) -> Diag | None:
        # The field is 5 bits; values above 8 are reserved but must not make
        # decoding fail.  Make a pseudo-member so they still print.
        if isinstance(value, int) and 0 <= value <= 31:
            member = int.__new__(cls, value)
            member._name_ = f"RESERVED_{value}"
            member._value_ = value
            return member
        return None

    @property
    def label(self) -> str:
        return self.name.lower()


class AuthType(IntEnum):
    """RFC 5880 §4.1 Auth Type values."""

    RESERVED = 0
    SIMPLE_PASSWORD = 1
    KEYED_MD5 = 2
    METICULOUS_KEYED_MD5 = 3
    KEYED_SHA1 = 4
    METICULOUS_KEYED_SHA1 = 5


# Second octet of the header: Sta(2) P F C A D M.
FLAG_POLL = 0x20
FLAG_FINAL = 0x10
FLAG_CPI = 0x08  # Control Plane Independent
FLAG_AUTH = 0x04
FLAG_DEMAND = 0x02
FLAG_MULTIPOINT = 0x01
_FLAG_MASK = 0x3F

#: RFC 5880 §4.2-§4.4: the Auth Len each type requires (simple: 4 to 19).
_AUTH_LENGTHS: dict[int, tuple[int, int]] = {
    AuthType.SIMPLE_PASSWORD: (4, 19),
    AuthType.KEYED_MD5: (24, 24),
    AuthType.METICULOUS_KEYED_MD5: (24, 24),
    AuthType.KEYED_SHA1: (28, 28),
    AuthType.METICULOUS_KEYED_SHA1: (28, 28),
}


class AuthSection(NamedTuple):
    """The optional authentication section (RFC 5880 §4.1).

    ``data`` is everything after the Auth Key ID octet: the password for
    Simple Password, or Reserved, Sequence Number and digest for the keyed types.
    """

    auth_type: int
    key_id: int
    data: bytes

    @property
    def length(self) -> int:
        return AUTH_HEADER_LENGTH + len(self.data)

    def __repr__(self) -> str:
        # Never print a Simple Password (or a digest) into a log.
        seq = self.sequence
        extra = f", sequence={seq}" if seq is not None else ""
        return (
            f"AuthSection(auth_type={self.auth_type}, key_id={self.key_id}{extra}, data=<redacted>)"
        )

    @property
    def sequence(self) -> int | None:
        """The Sequence Number of the keyed types, None for Simple Password."""
        if self.auth_type == AuthType.SIMPLE_PASSWORD or len(self.data) < 5:
            return None
        return int.from_bytes(self.data[1:5], "big")


class ControlPacket(NamedTuple):
    """One BFD Control packet.  Times are in microseconds, as on the wire.

    ``flags`` holds the P, F, C, A, D and M bits in their wire positions
    (``FLAG_*``); on encode the A bit follows ``auth``.
    """

    state: State
    diag: Diag
    flags: int
    detect_mult: int
    my_discr: int
    your_discr: int
    desired_min_tx_us: int
    required_min_rx_us: int
    required_min_echo_rx_us: int = 0
    auth: AuthSection | None = None

    @property
    def poll(self) -> bool:
        return bool(self.flags & FLAG_POLL)

    @property
    def final(self) -> bool:
        return bool(self.flags & FLAG_FINAL)

    @property
    def demand(self) -> bool:
        return bool(self.flags & FLAG_DEMAND)

    @property
    def control_plane_independent(self) -> bool:
        return bool(self.flags & FLAG_CPI)

    @property
    def multipoint(self) -> bool:
        return bool(self.flags & FLAG_MULTIPOINT)


_HEADER = struct.Struct("!BBBBIIIII")
_unpack_header = _HEADER.unpack_from
_pack_header = _HEADER.pack
_STATES = tuple(State(i) for i in range(4))
_DIAGS = tuple(Diag(i) for i in range(32))
_VERSION_BITS = BFD_VERSION << 5
_DOWN_STATES = (State.ADMIN_DOWN, State.DOWN)


def encode(pkt: ControlPacket) -> bytes:
    """Serialise ``pkt``.  Raises ``ValueError``/``struct.error`` on out-of-range fields."""
    auth = pkt.auth
    flags = pkt.flags & (_FLAG_MASK & ~FLAG_AUTH)
    if auth is None:
        return _pack_header(
            _VERSION_BITS | pkt.diag,
            (pkt.state << 6) | flags,
            pkt.detect_mult,
            HEADER_LENGTH,
            pkt.my_discr,
            pkt.your_discr,
            pkt.desired_min_tx_us,
            pkt.required_min_rx_us,
            pkt.required_min_echo_rx_us,
        )
    auth_length = AUTH_HEADER_LENGTH + len(auth.data)
    if auth_length > 255 - HEADER_LENGTH:
        raise ValueError("authentication section too long")
    return (
        _pack_header(
            _VERSION_BITS | pkt.diag,
            (pkt.state << 6) | flags | FLAG_AUTH,
            pkt.detect_mult,
            HEADER_LENGTH + auth_length,
            pkt.my_discr,
            pkt.your_discr,
            pkt.desired_min_tx_us,
            pkt.required_min_rx_us,
            pkt.required_min_echo_rx_us,
        )
        + bytes((auth.auth_type, auth_length, auth.key_id))
        + auth.data
    )


def decode(data: bytes | bytearray | memoryview) -> ControlPacket:
    """Parse and check one Control packet (RFC 5880 §6.8.6, packet-only checks).

    Raises :class:`PacketError` for anything that must be discarded; never
    anything else, whatever ``data`` holds.
    """
    size = len(data)
    if size < HEADER_LENGTH:
        raise PacketError(DropReason.SHORT, f"{size} octets")
    vers_diag, sta_flags, mult, length, my, your, tx, rx, echo = _unpack_header(data)
    if vers_diag >> 5 != BFD_VERSION:
        raise PacketError(DropReason.BAD_VERSION, f"version {vers_diag >> 5}")
    if length > size:
        raise PacketError(DropReason.BAD_LENGTH, f"length {length} > payload {size}")
    flags = sta_flags & _FLAG_MASK
    auth: AuthSection | None = None
    if flags & FLAG_AUTH:
        # The A bit needs at least the auth type and length octets (26).
        if length < HEADER_LENGTH + 2:
            raise PacketError(DropReason.BAD_LENGTH, f"length {length} with A bit")
        auth = _decode_auth(data, length)
    elif length < HEADER_LENGTH:
        raise PacketError(DropReason.BAD_LENGTH, f"length {length}")
    if mult == 0:
        raise PacketError(DropReason.ZERO_DETECT_MULT)
    if flags & FLAG_MULTIPOINT:
        raise PacketError(DropReason.MULTIPOINT)
    if my == 0:
        raise PacketError(DropReason.ZERO_MY_DISCR)
    state = _STATES[sta_flags >> 6]
    if your == 0 and state not in _DOWN_STATES:
        raise PacketError(DropReason.ZERO_YOUR_DISCR, f"in state {state.name}")
    if flags & FLAG_POLL and flags & FLAG_FINAL:
        raise PacketError(DropReason.POLL_AND_FINAL)
    return ControlPacket(state, _DIAGS[vers_diag & 0x1F], flags, mult, my, your, tx, rx, echo, auth)


def _decode_auth(data: bytes | bytearray | memoryview, length: int) -> AuthSection:
    auth_type = data[HEADER_LENGTH]
    auth_length = data[HEADER_LENGTH + 1]
    if auth_length < AUTH_HEADER_LENGTH or HEADER_LENGTH + auth_length > length:
        raise PacketError(
            DropReason.AUTH_MALFORMED, f"auth length {auth_length} in packet of {length}"
        )
    bounds = _AUTH_LENGTHS.get(auth_type)
    if bounds is not None and not bounds[0] <= auth_length <= bounds[1]:
        raise PacketError(
            DropReason.AUTH_MALFORMED, f"auth length {auth_length} for type {auth_type}"
        )
    return AuthSection(
        auth_type,
        data[HEADER_LENGTH + 2],
        bytes(data[HEADER_LENGTH + 3 : HEADER_LENGTH + auth_length]),
    )
