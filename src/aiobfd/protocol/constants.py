"""Protocol numbers from RFC 5880 and RFC 5881, in one place.

Every time value in aiobfd is an integer number of microseconds, as on the wire.
"""

from typing import Final

#: RFC 5880 §4.1: the version this implementation speaks.
BFD_VERSION: Final = 1

#: RFC 5881 §4: single-hop Control packets go to this UDP port.
SINGLE_HOP_PORT: Final = 3784
#: RFC 5883 §5: multihop Control packets go to this UDP port.
MULTIHOP_PORT: Final = 4784
#: Lowest received TTL a multihop session accepts unless configured: one hop
#: away (FRR's default), so only a peer behind one router gets through.
DEFAULT_MULTIHOP_MIN_TTL: Final = 254

#: RFC 5881 §4: the source port MUST be in this range and unique per session.
SOURCE_PORT_MIN: Final = 49152
SOURCE_PORT_MAX: Final = 65535

#: RFC 5881 §5: single-hop packets are sent with TTL / Hop Limit 255.
TTL_SINGLE_HOP: Final = 255

#: RFC 5880 §4.1: the mandatory section of a Control packet.
HEADER_LENGTH: Final = 24
#: RFC 5880 §4.1: an authentication section holds at least type, length and key id.
AUTH_HEADER_LENGTH: Final = 3
#: The Length field is one octet.
MAX_PACKET_LENGTH: Final = 255

#: RFC 5880 §6.8.3: while not Up, DesiredMinTxInterval is at least one second.
SLOW_TX_INTERVAL_US: Final = 1_000_000

#: Interval fields are 32-bit microsecond counts.
MAX_INTERVAL_US: Final = 0xFFFF_FFFF
#: Detect Mult is one octet and zero is invalid (RFC 5880 §6.8.6).
MAX_DETECT_MULT: Final = 255

#: Discriminators are 32-bit and MUST be nonzero (RFC 5880 §6.8.1).
MAX_DISCRIMINATOR: Final = 0xFFFF_FFFF

#: Microseconds per second and per millisecond, for conversions at the edges.
US_PER_SECOND: Final = 1_000_000
US_PER_MS: Final = 1_000

#: The longest receive hold-off an operator may set (``--receive-holdoff``), ms.
MAX_RECEIVE_HOLDOFF_MS: Final = 1_000
