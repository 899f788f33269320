"""The two kinds of error in aiobfd, after h11.

* :class:`PacketError` - the remote end (or an attacker) sent something that
  must be dropped.  It carries a :class:`DropReason`, which the daemon counts
  and which becomes the ``reason`` label of the drop metric.
* :class:`LocalProtocolError` - our own caller misused the API.  That is a bug
  or a bad configuration, never a consequence of wire input.
"""

from enum import StrEnum


class DropReason(StrEnum):
    """Why a received packet was discarded (RFC 5880 §6.8.6 and RFC 5881 §5)."""

    SHORT = "short"
    """Fewer octets than the mandatory section."""
    BAD_VERSION = "bad_version"
    """Version field is not 1."""
    BAD_LENGTH = "bad_length"
    """Length field too small for the packet, or larger than the payload."""
    ZERO_DETECT_MULT = "zero_detect_mult"
    MULTIPOINT = "multipoint"
    """The M bit is set."""
    ZERO_MY_DISCR = "zero_my_discr"
    ZERO_YOUR_DISCR = "zero_your_discr"
    """Your Discriminator is zero while State is neither Down nor AdminDown."""
    POLL_AND_FINAL = "poll_and_final"
    """RFC 5880 §6.5: a packet MUST NOT have both P and F set."""
    AUTH_MALFORMED = "auth_malformed"
    """The authentication section does not fit the packet or its type."""
    AUTH_MISMATCH = "auth_mismatch"
    """A bit set without authentication configured, or the reverse."""
    AUTH_FAILED = "auth_failed"
    """Wrong key, digest or sequence number."""
    UNKNOWN_DISCR = "unknown_discr"
    """Your Discriminator names no session of ours."""
    UNKNOWN_PEER = "unknown_peer"
    """Your Discriminator is zero and no session exists for the source."""
    WRONG_PEER = "wrong_peer"
    """Your Discriminator names a session whose peer is another address."""
    WRONG_INTERFACE = "wrong_interface"
    """The packet names a session bound to an interface, a VRF or a network
    namespace, and arrived on another one."""
    TTL = "ttl"
    """Received TTL / Hop Limit is not 255 (RFC 5881 §5)."""
    SESSION_ADMIN_DOWN = "session_admin_down"
    """RFC 5880 §6.8.6: packets for a session in AdminDown are discarded."""
    KERNEL = "kernel"
    """Dropped by the kernel on an established session's own socket: a TTL
    below the minimum (RFC 5881 §5, checked there by a socket filter) or a
    full receive buffer."""


class PacketError(ValueError):
    """A received packet must be discarded, for ``reason``."""

    def __init__(self, reason: DropReason, detail: str = "") -> None:
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)
        self.reason = reason
        self.detail = detail


class LocalProtocolError(Exception):
    """The caller asked the protocol core for something it cannot do.

    (An Exception, as h11's: mypyc compiles no subclass of RuntimeError.)"""
