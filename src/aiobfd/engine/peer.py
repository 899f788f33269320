"""What the engine keeps per session and per listening socket.

:class:`Peer` is one configured session (the core's
:class:`~aiobfd.protocol.session.Session`) with its sockets and its place in
the wake-up schedule; :class:`Listener` is a socket bound to a local address
and BFD's port, shared by every session of that address.  Plain data: the
rooms of the engine (receive, wake-up, admission) act on them.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..config import PeerSpec
from ..config.model import domain_of
from ..io.sockets import SockAddr, kernel_drops
from ..protocol.echo import EchoSession
from ..protocol.errors import DropReason
from ..protocol.events import Event
from ..protocol.session import Session


@dataclass(eq=False, slots=True)
class Peer:
    """A configured session with its I/O: transmit socket and timer.

    (What the packet path touches comes first: slots are laid out in order.)
    """

    spec: PeerSpec
    session: Session | EchoSession
    """The core's session: a Control session, or an RFC 9747 unaffiliated echo one."""
    sock: socket.socket
    dest: SockAddr
    timer_at: int | None = None
    """The deadline this peer has in the wake-up schedule (None: none, or closed)."""
    connected: bool = False
    """The transmit socket is connected to ``dest`` (send() without an address)."""
    rx_sock: socket.socket | None = None
    """Receive socket connected to the peer's address and source port."""
    rx_accepted_read: int = 0
    """A time by which the last packet accepted from ``rx_sock`` had come
    (when it was read, or when its socket was seen ready)."""
    send_errors: dict[str, int] = field(default_factory=dict)
    dynamic: bool = False
    """Created by an unsolicited packet (RFC 9468), not by configuration."""
    runtime: bool = False
    """Added or changed at run time (aiobfdctl), not by the configuration."""
    rx_from: Any = None
    rx_connected_at: int = 0
    rx_dropped_read: int = 0
    """When the last packet dropped from ``rx_sock`` was read."""
    rx_kernel_drops: int = 0
    """Packets the kernel dropped on former ``rx_sock`` sockets (see kernel_drops)."""
    ifindex: int = 0
    """The index of the interface the session is bound to, in its namespace
    (``spec.interface``); 0: not bound to one.  A packet on a listener that
    arrived on another interface is dropped (DropReason.WRONG_INTERFACE)."""

    @property
    def source_port(self) -> int:
        return int(self.sock.getsockname()[1])

    @property
    def kernel_drops(self) -> int:
        """Packets for this session the kernel dropped before the daemon saw them:
        a TTL below the minimum (the socket filter) or a full receive buffer."""
        sock = self.rx_sock
        return self.rx_kernel_drops + (kernel_drops(sock) if sock is not None else 0)

    def drops(self) -> dict[str, int]:
        """Packets of this session that were discarded, by reason (the kernel's too)."""
        out = {str(k): v for k, v in list(self.session.counters.drops.items())}
        kernel = self.kernel_drops
        if kernel:
            out[DropReason.KERNEL.value] = kernel
        return out


@dataclass(slots=True)
class Listener:
    """A receive socket on a local address and BFD's port (3784, or 4784 multihop)."""

    sock: socket.socket
    local: str
    family: int
    scope: int
    multihop: bool
    users: int = 0
    """Sessions using it; 0 for a listener kept for unsolicited sessions."""
    permanent: bool = False
    netns: str = ""
    """The network namespace it was opened in ("": the daemon's own)."""
    vrf: str = ""
    """The VRF device it is bound to ("": the default VRF)."""

    @property
    def domain(self) -> str:
        """Where the packets it hears arrived: a PeerKey's domain."""
        return domain_of(self.netns, self.vrf)

    @property
    def key(self) -> tuple[str, int, bool, str]:
        return (self.local, self.scope, self.multihop, self.domain)


EventListener = Callable[[Peer, Event], None]
"""Called with every session event (``Daemon.add_listener``)."""
