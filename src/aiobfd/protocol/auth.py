"""BFD authentication (RFC 5880 §6.7): sign on transmit, verify on receipt.

Pure code: no sockets, no clock.  Times are integer microseconds that the
caller passes in, like everywhere else in the core.

* :class:`AuthKey` - one shared secret and its Auth Key ID.  Its ``repr`` and
  ``str`` never show the secret.
* :class:`AuthConfig` - the authentication type, the keys accepted on receipt
  and the one used on transmit (key rotation: several accepted, one sent).
* :class:`Authenticator` - one per session.  It holds bfd.XmitAuthSeq,
  bfd.RcvAuthSeq and bfd.AuthSeqKnown (§6.8.1), signs outgoing packets with
  :meth:`~Authenticator.encode` and checks received ones with
  :meth:`~Authenticator.verify`, which raises
  :class:`~aiobfd.errors.PacketError` for anything to discard.

Reading secrets from files and the environment is not done here: see
:mod:`aiobfd.secret_sources`.

The keyed types follow §6.7.3/§6.7.4 literally: the digest is MD5 or SHA1 of
the whole Control packet with the key, zero-padded, in the digest field (not
an HMAC).  On receipt both the sequence window and the digest must pass before
bfd.RcvAuthSeq moves (RFC 5880 erratum 7083).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from .constants import HEADER_LENGTH
from .errors import DropReason, PacketError
from .packet import FLAG_AUTH, AuthType, ControlPacket, encode

__all__ = [
    "AuthConfig",
    "AuthKey",
    "Authenticator",
    "BitSource",
    "check_secret",
    "max_secret_length",
]

_U32 = 0xFFFF_FFFF

#: §4.2: a password is 1 to 16 bytes.  §4.3/§6.7.3: an MD5 key fills (at most)
#: the 16-byte digest field; §4.4/§6.7.4: a SHA1 key the 20-byte hash field.
_MAX_SECRET: dict[AuthType, int] = {
    AuthType.SIMPLE_PASSWORD: 16,
    AuthType.KEYED_MD5: 16,
    AuthType.METICULOUS_KEYED_MD5: 16,
    AuthType.KEYED_SHA1: 20,
    AuthType.METICULOUS_KEYED_SHA1: 20,
}

_METICULOUS = frozenset({AuthType.METICULOUS_KEYED_MD5, AuthType.METICULOUS_KEYED_SHA1})

_Bytes = bytes | bytearray | memoryview


class _Digest(Protocol):
    def update(self, data: _Bytes, /) -> None: ...

    def digest(self) -> bytes: ...


_HASHES: dict[AuthType, Callable[[_Bytes], _Digest]] = {
    AuthType.KEYED_MD5: hashlib.md5,
    AuthType.METICULOUS_KEYED_MD5: hashlib.md5,
    AuthType.KEYED_SHA1: hashlib.sha1,
    AuthType.METICULOUS_KEYED_SHA1: hashlib.sha1,
}

#: §4.3/§4.4: where the Auth Key/Digest (or Hash) field starts, after Auth
#: Type, Auth Len, Auth Key ID, Reserved and the Sequence Number.
_DIGEST_AT = HEADER_LENGTH + 8


class BitSource(Protocol):
    """What :class:`Authenticator` needs from a random generator."""

    def getrandbits(self, k: int, /) -> int: ...


def _type_name(auth_type: AuthType) -> str:
    return auth_type.name.replace("_", " ").title().replace("Md5", "MD5").replace("Sha1", "SHA1")


def max_secret_length(auth_type: int) -> int:
    """The longest secret ``auth_type`` can carry, in bytes."""
    try:
        return _MAX_SECRET[AuthType(auth_type)]
    except (KeyError, ValueError):
        raise ValueError(f"authentication type {int(auth_type)} is not supported") from None


def check_secret(secret: bytes, auth_type: int, source: str) -> None:
    """Raise ``ValueError`` naming ``source`` (never the secret) if it cannot be used."""
    limit = max_secret_length(auth_type)
    if not secret:
        raise ValueError(f"{source}: the secret is empty")
    if len(secret) > limit:
        raise ValueError(
            f"{source}: the secret is longer than the {limit} bytes "
            f"{_type_name(AuthType(auth_type))} allows"
        )


# ---------------------------------------------------------------------- secrets


@dataclass(frozen=True, slots=True)
class AuthKey:
    """One shared secret and the Auth Key ID that names it on the wire."""

    key_id: int
    """Auth Key ID, 0-255."""
    secret: bytes = field(repr=False)
    """The password (Simple Password) or key (keyed MD5/SHA1), raw bytes."""

    def __post_init__(self) -> None:
        if isinstance(self.key_id, bool) or not isinstance(self.key_id, int):
            raise TypeError("key_id must be an int")
        if not 0 <= self.key_id <= 255:
            raise ValueError(f"key id must be between 0 and 255, not {self.key_id}")
        if not isinstance(self.secret, bytes | bytearray | memoryview):
            raise TypeError(f"secret of key {self.key_id} must be bytes")
        object.__setattr__(self, "secret", bytes(self.secret))

    def __repr__(self) -> str:
        return f"AuthKey(key_id={self.key_id}, secret=<redacted>)"

    def __str__(self) -> str:
        return self.__repr__()


# ----------------------------------------------------------------------- config


@dataclass(frozen=True, slots=True)
class AuthConfig:
    """Authentication of one session (RFC 5880 §6.7)."""

    auth_type: AuthType | int
    """bfd.AuthType: Simple Password, (Meticulous) Keyed MD5 or SHA1; always
    an :class:`AuthType` once constructed.  (A plain number is accepted too:
    compiled by mypyc, a field typed ``AuthType`` would refuse it.)"""
    keys: Sequence[AuthKey]
    """Every key accepted on receipt, by Auth Key ID; a tuple once constructed."""
    transmit_key_id: int
    """The key that signs outgoing packets; one of ``keys``."""

    def __post_init__(self) -> None:
        try:
            auth_type = AuthType(self.auth_type)
        except ValueError:
            raise ValueError(f"authentication type {self.auth_type!r} is not known") from None
        if auth_type not in _MAX_SECRET:
            raise ValueError(f"authentication type {int(auth_type)} is not supported")
        object.__setattr__(self, "auth_type", auth_type)
        keys = tuple(self.keys)
        object.__setattr__(self, "keys", keys)
        if not keys:
            raise ValueError("authentication needs at least one key")
        seen: set[int] = set()
        for key in keys:
            if not isinstance(key, AuthKey):
                raise TypeError("keys must be AuthKey values")
            if key.key_id in seen:
                raise ValueError(f"key id {key.key_id} is configured twice")
            seen.add(key.key_id)
            check_secret(key.secret, auth_type, f"key id {key.key_id}")
        if self.transmit_key_id not in seen:
            raise ValueError(f"transmit key id {self.transmit_key_id} is not among the keys")

    @classmethod
    def single(cls, auth_type: int, key_id: int, secret: bytes) -> AuthConfig:
        """One key, used both ways."""
        return cls(auth_type, (AuthKey(key_id, secret),), key_id)

    @property
    def meticulous(self) -> bool:
        return self.auth_type in _METICULOUS

    @property
    def key_ids(self) -> tuple[int, ...]:
        return tuple(k.key_id for k in self.keys)


# ------------------------------------------------------------------ the session


class Authenticator:
    """Per-session authentication state (RFC 5880 §6.7, §6.8.1).

    * bfd.XmitAuthSeq starts at a random 32-bit value drawn from ``rng``.
      Meticulous types send it and add one for every packet.  Keyed (not
      meticulous) types add one only when the packet differs from the previous
      one sent (another state, flag, interval, discriminator or key): §6.7.3
      says the number MAY be incremented and SHOULD be when the session state
      or the packet contents change.
    * bfd.RcvAuthSeq and bfd.AuthSeqKnown move only when a packet passed
      every check.  The sequence is forgotten when no packet has been
      authenticated for twice the Detection Time (§6.8.1); this happens lazily,
      at the next :meth:`verify`.
    * :meth:`set_config` swaps keys (or the transmit key) without touching
      the sequence numbers.
    """

    __slots__ = (
        "_auth_len",
        "_config",
        "_digest_len",
        "_hash",
        "_last_auth_rx_us",
        "_last_detect_us",
        "_last_tx_header",
        "_meticulous",
        "_rcv_seq",
        "_rx_keys",
        "_seq_known",
        "_simple",
        "_tx_key_id",
        "_tx_prefix",
        "_tx_secret",
        "_type",
        "_xmit_seq",
    )

    def __init__(self, config: AuthConfig, rng: BitSource) -> None:
        # §6.8.1: bfd.XmitAuthSeq MUST be initialized to a random 32-bit value.
        self._xmit_seq = rng.getrandbits(32) & _U32
        # §6.8.1: bfd.AuthSeqKnown MUST be initialized to zero; the initial
        # value of bfd.RcvAuthSeq is unimportant.
        self._rcv_seq = 0
        self._seq_known = False
        self._last_auth_rx_us = 0
        self._last_detect_us = 0
        self._last_tx_header: bytes | None = None
        self._apply(config)

    # --------------------------------------------------------------- config

    def _apply(self, config: AuthConfig) -> None:
        if not isinstance(config, AuthConfig):
            raise TypeError("config must be an AuthConfig")
        auth_type = AuthType(config.auth_type)
        self._config = config
        self._type = auth_type
        self._simple = auth_type is AuthType.SIMPLE_PASSWORD
        self._meticulous = auth_type in _METICULOUS
        if self._simple:
            self._hash: Callable[[_Bytes], _Digest] = hashlib.sha1  # unused
            self._digest_len = 0
            # The key as it appears in the packet: no padding (§6.7.2).
            self._rx_keys = {k.key_id: k.secret for k in config.keys}
        else:
            self._hash = _HASHES[auth_type]
            self._digest_len = _MAX_SECRET[auth_type]
            # §6.7.3/§6.7.4: the key, zero-padded to the digest size, is what
            # sits in the digest field while the hash is computed.  Pad once.
            self._rx_keys = {k.key_id: k.secret.ljust(self._digest_len, b"\0") for k in config.keys}
        self._tx_key_id = config.transmit_key_id
        self._tx_secret = self._rx_keys[config.transmit_key_id]
        # Auth Len: 3 + password (§4.2), 24 for MD5 (§4.3), 28 for SHA1 (§4.4).
        if self._simple:
            self._auth_len = 3 + len(self._tx_secret)
            self._tx_prefix = bytes((auth_type, self._auth_len, self._tx_key_id)) + self._tx_secret
        else:
            self._auth_len = 8 + self._digest_len
            # Auth Type, Auth Len, Auth Key ID, Reserved (zero on transmit).
            self._tx_prefix = bytes((auth_type, self._auth_len, self._tx_key_id, 0))

    def set_config(self, config: AuthConfig) -> None:
        """Replace keys, transmit key or type; sequence numbers carry on.

        Rotating keys this way keeps the session Up: add the new key on both
        ends, switch ``transmit_key_id`` on each, then drop the old key.
        """
        self._apply(config)

    @property
    def config(self) -> AuthConfig:
        return self._config

    @property
    def auth_type(self) -> AuthType:
        return self._type

    @property
    def xmit_auth_seq(self) -> int:
        """bfd.XmitAuthSeq: the sequence number the next packet will carry
        (keyed types may still bump it if the packet differs)."""
        return self._xmit_seq

    @property
    def rcv_auth_seq(self) -> int:
        """bfd.RcvAuthSeq: the last sequence number received and accepted."""
        return self._rcv_seq

    @property
    def auth_seq_known(self) -> bool:
        """bfd.AuthSeqKnown, as of the last :meth:`verify` (it expires lazily)."""
        return self._seq_known

    def __repr__(self) -> str:
        return (
            f"Authenticator({_type_name(self._type)}, transmit key {self._tx_key_id}, "
            f"accepted keys {sorted(self._rx_keys)}, xmit seq {self._xmit_seq}, "
            f"rcv seq {self._rcv_seq if self._seq_known else 'unknown'})"
        )

    def __str__(self) -> str:
        return self.__repr__()

    # -------------------------------------------------------------- transmit

    def encode(self, pkt: ControlPacket) -> bytes:
        """Serialise ``pkt`` with the A bit and a signed authentication section.

        Any ``pkt.auth`` is replaced.  Keyed types advance bfd.XmitAuthSeq.
        """
        # The mandatory section from the codec, then the A bit and the new
        # Length patched in (cheaper than re-encoding with an AuthSection).
        base = encode(pkt if pkt.auth is None else pkt._replace(auth=None))
        head = (
            bytes((base[0], base[1] | FLAG_AUTH, base[2], HEADER_LENGTH + self._auth_len))
            + base[4:]
            + self._tx_prefix
        )
        if self._simple:
            # §6.7.2: Auth Type, Auth Len, Auth Key ID, then the password as is.
            return head
        if self._meticulous:
            # §6.7.3/§6.7.4: MUST be incremented for every packet (circular).
            seq = self._xmit_seq
            self._xmit_seq = (seq + 1) & _U32
        else:
            # §6.7.3/§6.7.4: MAY be incremented; SHOULD be when the state or the
            # contents change.  ``head`` holds every field but the sequence.
            if self._last_tx_header is not None and head != self._last_tx_header:
                self._xmit_seq = (self._xmit_seq + 1) & _U32
            self._last_tx_header = head
            seq = self._xmit_seq
        signed = head + seq.to_bytes(4, "big")
        # The digest of the whole packet with the padded key in the digest
        # field replaces the key, which MUST NOT be carried in the packet.
        return signed + self._hash(signed + self._tx_secret).digest()

    # --------------------------------------------------------------- receive

    def verify(
        self,
        pkt: ControlPacket,
        raw: bytes | bytearray | memoryview,
        now: int,
        detect_time_us: int,
    ) -> None:
        """Accept ``pkt`` or raise :class:`PacketError` (RFC 5880 §6.7.2-§6.7.4).

        ``pkt`` must be ``decode(raw)`` and ``raw`` the datagram it came from:
        the fields are read from ``pkt``, the digest is computed over ``raw``.
        ``now`` is the arrival time; ``detect_time_us`` the session's Detection
        Time in force (§6.8.4), or 0 when the session has none (after it
        expired, §6.8.1 resets the remote's values): the sequence is then
        kept for twice the Detection Time that was in force when the last
        authenticated packet came.  The sequence window is 3 x the Detect Mult
        field of ``pkt`` itself: the remote's multiplier, which bounds how many
        of its packets may go missing while the session stays up.

        Reasons: ``AUTH_MISMATCH`` (no section, or another type),
        ``AUTH_MALFORMED`` (length does not fit the type), ``AUTH_FAILED``
        (unknown key id, wrong password or digest, sequence outside the
        window).  Details name key ids and sequence numbers, never secrets.
        """
        auth = pkt.auth
        if auth is None:
            raise PacketError(DropReason.AUTH_MISMATCH, "no authentication section")
        if auth.auth_type != self._type:
            raise PacketError(
                DropReason.AUTH_MISMATCH,
                f"auth type {int(auth.auth_type)}, expected {int(self._type)}",
            )
        key = self._rx_keys.get(auth.key_id)
        if key is None:
            raise PacketError(DropReason.AUTH_FAILED, f"key id {auth.key_id} not accepted")
        data = auth.data

        if self._simple:
            # §6.7.2: Auth Len must be the password length plus three, and the
            # password must match; compare_digest also checks the length.
            if not hmac.compare_digest(data, key):
                raise PacketError(
                    DropReason.AUTH_FAILED, f"wrong password for key id {auth.key_id}"
                )
            return

        n = self._digest_len
        if len(data) != 5 + n:
            raise PacketError(
                DropReason.AUTH_MALFORMED, f"auth length {3 + len(data)} for type {int(self._type)}"
            )
        seq = int.from_bytes(data[1:5], "big")

        # §6.8.1: bfd.AuthSeqKnown MUST be set to zero after no packets have
        # been received for at least twice the Detection Time: the one of the
        # silence, which an expiry half-way through must not shorten.
        window = self._last_detect_us if self._last_detect_us > detect_time_us else detect_time_us
        if self._seq_known and now - self._last_auth_rx_us >= 2 * window:
            self._seq_known = False

        if self._seq_known:
            # §6.7.3/§6.7.4: keyed: RcvAuthSeq .. RcvAuthSeq + 3*Detect Mult;
            # meticulous: RcvAuthSeq + 1 .. RcvAuthSeq + 3*Detect Mult;
            # inclusive, in 32-bit circular space.
            ahead = (seq - self._rcv_seq) & _U32
            if ahead > 3 * pkt.detect_mult or (ahead == 0 and self._meticulous):
                low = (self._rcv_seq + self._meticulous) & _U32
                high = (self._rcv_seq + 3 * pkt.detect_mult) & _U32
                raise PacketError(DropReason.AUTH_FAILED, f"sequence {seq} outside {low}..{high}")

        # Replace the digest field with the key, hash the whole packet
        # (Length octets), compare with what was received.
        size = len(raw)
        length = raw[3] if size > 3 else 0
        end = _DIGEST_AT + n
        if size < length or length < end:
            raise PacketError(DropReason.AUTH_MALFORMED, f"length {length} in {size} octets")
        h = self._hash(raw[:_DIGEST_AT])
        h.update(key)
        if length > end:
            h.update(raw[end:length])
        if not hmac.compare_digest(h.digest(), data[5:]):
            raise PacketError(DropReason.AUTH_FAILED, f"wrong digest for key id {auth.key_id}")

        # Erratum 7083: only an authenticated packet sets the sequence state.
        self._rcv_seq = seq
        self._seq_known = True
        self._last_auth_rx_us = now
        self._last_detect_us = detect_time_us
