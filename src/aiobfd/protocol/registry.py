"""The table of sessions and the demultiplexing of RFC 5880 §6.3 / RFC 5881 §3.

Sessions are found in O(1) by Your Discriminator, or, while the remote does
not know our discriminator yet, by the peer's address (after BIRD's two
hashes).  Discriminators are random, nonzero and unique (RFC 5880 §6.8.1).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

from .errors import DropReason, LocalProtocolError, PacketError
from .packet import ControlPacket
from .session import Session, SessionConfig
from .timers import RandomSource


class PeerKey(NamedTuple):
    """Identifies a session: remote address, local address, scope, multihop, domain.

    Addresses are in their canonical text form (``ipaddress`` ``str()``).  The
    scope is the interface index of an IPv6 link-local pair, else 0.  A
    multihop session (RFC 5883) is keyed by the address pair alone, so a
    single-hop and a multihop session to one remote stay distinct.  The
    domain is where the addresses live: "" for the daemon's own network
    namespace and default VRF, else its network namespace and VRF
    (``netns NAME``, ``vrf NAME``): the same pair may be in both.
    """

    remote: str
    local: str
    scope: int = 0
    multihop: bool = False
    domain: str = ""

    def __str__(self) -> str:
        suffix = f"%{self.scope}" if self.scope else ""
        kind = " (multihop)" if self.multihop else ""
        where = f" in {self.domain}" if self.domain else ""
        return f"{self.remote}{suffix} from {self.local}{kind}{where}"


class SessionTable:
    """All sessions of one daemon, indexed twice."""

    def __init__(self, rng: RandomSource, session_rng: RandomSource | None = None) -> None:
        self._rng = rng
        """Discriminators come from here (the daemon passes the OS's CSPRNG)."""
        self._session_rng = session_rng or rng
        """Jitter and sequence numbers of sessions (a fast generator is fine)."""
        self._by_discr: dict[int, Session] = {}
        self._by_peer: dict[PeerKey, Session] = {}
        self.drops: dict[DropReason, int] = {}
        """Drops before a session was found, by reason."""

    def __len__(self) -> int:
        return len(self._by_discr)

    def __iter__(self) -> Iterator[Session]:
        return iter(list(self._by_peer.values()))

    def __contains__(self, key: object) -> bool:
        return key in self._by_peer

    def get(self, key: PeerKey) -> Session | None:
        return self._by_peer.get(key)

    def by_discriminator(self, discr: int) -> Session | None:
        return self._by_discr.get(discr)

    def add(self, key: PeerKey, config: SessionConfig, now: int) -> Session:
        """Create a session for ``key`` with a fresh discriminator."""
        if key in self._by_peer:
            raise LocalProtocolError(f"a session for {key} exists already")
        discr = self._new_discriminator()
        session = Session(config, discr, now=now, rng=self._session_rng, key=key)
        self._by_discr[discr] = session
        self._by_peer[key] = session
        return session

    def remove(self, key: PeerKey) -> Session | None:
        session = self._by_peer.pop(key, None)
        if session is not None:
            del self._by_discr[session.local_discr]
        return session

    def demultiplex(
        self,
        pkt: ControlPacket,
        remote: str,
        local: str,
        scope: int = 0,
        multihop: bool = False,
        domain: str = "",
    ) -> Session:
        """Find the session a received packet belongs to, or raise PacketError.

        ``multihop`` says the packet came to the multihop port (RFC 5883);
        ``domain`` is where it arrived (see PeerKey).  A session found by Your
        Discriminator may be of another domain: the caller checks where it
        arrived (DropReason.WRONG_INTERFACE)."""
        if pkt.your_discr:
            session = self._by_discr.get(pkt.your_discr)
            if session is None:
                self.count_drop(DropReason.UNKNOWN_DISCR)
                raise PacketError(DropReason.UNKNOWN_DISCR, f"{pkt.your_discr} from {remote}")
            key = session.key
            if key.remote != remote or key.scope != scope or key.multihop != multihop:
                # Our discriminator, but from another peer than the session's.
                self.count_drop(DropReason.WRONG_PEER)
                raise PacketError(DropReason.WRONG_PEER, f"{pkt.your_discr} from {remote}")
            return session
        found = self._by_peer.get(PeerKey(remote, local, scope, multihop, domain))
        if found is None:
            self.count_drop(DropReason.UNKNOWN_PEER)
            raise PacketError(DropReason.UNKNOWN_PEER, remote)
        return found

    def count_drop(self, reason: DropReason) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + 1

    def _new_discriminator(self) -> int:
        while True:
            discr = self._rng.getrandbits(32)
            if discr and discr not in self._by_discr:
                return discr
