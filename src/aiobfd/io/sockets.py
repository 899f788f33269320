"""Socket set-up for RFC 5881 single-hop BFD.

* One receive socket per local address on UDP 3784 that reports each packet's
  received TTL / Hop Limit (``IP_RECVTTL``, ``IPV6_RECVHOPLIMIT``).
* One receive socket per established session, connected to the peer.  Its
  packets are read bare (no address, no ancillary data: the cheapest read
  there is); the kernel checks their TTL with a socket filter instead
  (:func:`attach_min_ttl_filter`) and keeps the arrival time of the last one
  read (:func:`last_arrival_ns`).
* One transmit socket per session, bound to the local address and to a source
  port of 49152-65535 that no other socket holds and none of the daemon's other
  sessions, whatever their address, while one is left (RFC 5881 §4; see
  :mod:`.ports`), sending with TTL / Hop Limit 255 (RFC 5881 §5).

A session bound to a network namespace has these sockets created there, and
one bound to an interface or a VRF has them bound to that device
(:mod:`.netns`); listeners then report each packet's arrival interface
(``IP_PKTINFO``, ``IPV6_RECVPKTINFO``) for the daemon to check.
"""

from __future__ import annotations

import ctypes
import fcntl
import socket
import struct
import sys
from typing import Final

from ..protocol.constants import SINGLE_HOP_PORT, TTL_SINGLE_HOP
from .netns import bind_to_device, socket_in
from .ports import SourcePorts

#: Linux value; Python's socket module does not export it.
IP_RECVTTL: Final = getattr(socket, "IP_RECVTTL", 12)
IPV6_RECVHOPLIMIT: Final = getattr(socket, "IPV6_RECVHOPLIMIT", 51)
IPV6_HOPLIMIT: Final = getattr(socket, "IPV6_HOPLIMIT", 52)
#: DSCP CS6 (network control), as FRR and BIRD mark BFD.
TOS_NETWORK_CONTROL: Final = 0xC0
#: Room for the ancillary data of recvmsg (one int, with headers).
ANCILLARY_SIZE: Final = socket.CMSG_SPACE(4)
#: Room for a listener's: the TTL and the arrival interface (in6_pktinfo, 20
#: octets, the larger of the two families').
LISTENER_ANCILLARY_SIZE: Final = socket.CMSG_SPACE(4) + socket.CMSG_SPACE(20)
IPV6_RECVPKTINFO: Final = getattr(socket, "IPV6_RECVPKTINFO", 49)
IPV6_PKTINFO: Final = getattr(socket, "IPV6_PKTINFO", 50)
IP_PKTINFO: Final = getattr(socket, "IP_PKTINFO", 8)
_TIMESPEC = struct.Struct("@qq")
#: ioctl: the arrival time of the last packet read from a socket (Linux).
SIOCGSTAMPNS: Final = 0x8907
#: Linux values: attach a classic BPF socket filter; a socket's memory
#: counters, the ninth of which (SK_MEMINFO_DROPS) counts packets it dropped.
SO_ATTACH_FILTER: Final = 26
SO_MEMINFO: Final = 55
_SK_MEMINFO_VARS = 9
_SK_MEMINFO_DROPS = 8
#: Classic BPF: loads relative to the network header (linux/filter.h).
_SKF_NET_OFF = -0x100000
_BPF_LD_B_ABS = 0x30
_BPF_JGE_K = 0x35
_BPF_RET_K = 0x06
_BPF_INSN = struct.Struct("@HBBI")

SockAddr = tuple[str, int] | tuple[str, int, int, int]


def sockaddr(family: int, address: str, port: int, scope: int = 0) -> SockAddr:
    """A socket address for ``address`` (``scope`` is the IPv6 interface index)."""
    if family == socket.AF_INET6:
        return (address, port, 0, scope)
    return (address, port)


def open_receive_socket(
    family: int,
    local: str,
    scope: int = 0,
    port: int = SINGLE_HOP_PORT,
    *,
    netns: str = "",
    device: str = "",
    pktinfo: bool = False,
) -> socket.socket:
    """A non-blocking UDP socket on ``local``:3784 that reports received TTLs
    (and, with ``pktinfo``, each packet's arrival interface: :func:`arrival`).

    It is opened with SO_REUSEADDR so that per-session sockets connected to a
    known peer (:func:`open_session_socket`) can share the port; a probe bind
    without it first makes sure no other process holds the port.  ``netns``:
    created in that network namespace; ``device``: bound to that interface or
    VRF device (:mod:`.netns`; BindingError).
    """
    probe = socket_in(netns, family, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    try:
        if family == socket.AF_INET6:
            probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if device:
            bind_to_device(probe, device)
        probe.bind(sockaddr(family, local, port, scope))
    finally:
        probe.close()
    return _bound_receiver(family, local, scope, port, netns=netns, device=device, pktinfo=pktinfo)


def open_session_socket(
    family: int,
    local: str,
    scope: int,
    remote: SockAddr,
    port: int = SINGLE_HOP_PORT,
    min_ttl: int | None = None,
    *,
    netns: str = "",
    device: str = "",
) -> socket.socket:
    """A receive socket on ``local``:3784 connected to one peer's address and port.

    The kernel prefers a connected socket to the shared one, so an established
    session's packets queue apart from everything else that arrives on 3784:
    a flood of strangers fills the shared socket, not this one.  Packets with
    a TTL / Hop Limit below ``min_ttl`` never reach it (counted in
    :func:`kernel_drops`); the arrival of the last packet read is kept.
    Bound to ``device``, it hears the peer on that interface or VRF only.
    """
    sock = _bound_receiver(family, local, scope, port, report_ttl=False, netns=netns, device=device)
    try:
        if min_ttl is not None:
            attach_min_ttl_filter(sock, min_ttl)
        # The first ask turns the kernel's arrival times on for this socket.
        last_arrival_ns(sock)
        sock.connect(remote)
    except BaseException:
        sock.close()
        raise
    return sock


def attach_min_ttl_filter(sock: socket.socket, min_ttl: int) -> None:
    """Have the kernel drop packets whose TTL / Hop Limit is below ``min_ttl``
    (RFC 5881 §5, RFC 5883 §5) before they reach ``sock``; replaces any filter."""
    # The TTL is octet 8 of an IPv4 header, the Hop Limit octet 7 of IPv6's.
    offset = 8 if sock.family == socket.AF_INET else 7
    program = b"".join(
        _BPF_INSN.pack(*insn)
        for insn in (
            (_BPF_LD_B_ABS, 0, 0, (_SKF_NET_OFF + offset) & 0xFFFF_FFFF),
            (_BPF_JGE_K, 0, 1, min_ttl),
            (_BPF_RET_K, 0, 0, 0xFFFF_FFFF),  # accept the whole packet
            (_BPF_RET_K, 0, 0, 0),  # drop it
        )
    )
    buffer = ctypes.create_string_buffer(program, len(program))
    # struct sock_fprog: the count of instructions, then a pointer to them.
    fprog = struct.pack("@HP", len(program) // _BPF_INSN.size, ctypes.addressof(buffer))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


def last_arrival_ns(sock: socket.socket) -> int:
    """When the last packet read from ``sock`` arrived (CLOCK_REALTIME, ns); 0 if unknown."""
    try:
        stamp = fcntl.ioctl(sock.fileno(), SIOCGSTAMPNS, bytes(_TIMESPEC.size))
    except OSError:
        return 0
    sec, nsec = _TIMESPEC.unpack(stamp)
    return int(sec * 1_000_000_000 + nsec)


def kernel_drops(sock: socket.socket) -> int:
    """Packets the kernel dropped on their way into ``sock`` (filter, full buffer)."""
    try:
        info = sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, 4 * _SK_MEMINFO_VARS)
    except OSError:
        return 0
    return int(struct.unpack_from("@I", info, 4 * _SK_MEMINFO_DROPS)[0])


def _bound_receiver(
    family: int,
    local: str,
    scope: int,
    port: int,
    *,
    report_ttl: bool = True,
    netns: str = "",
    device: str = "",
    pktinfo: bool = False,
) -> socket.socket:
    sock = socket_in(netns, family, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if report_ttl:
                sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVHOPLIMIT, 1)
            if pktinfo:
                sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
        else:
            if report_ttl:
                sock.setsockopt(socket.IPPROTO_IP, IP_RECVTTL, 1)
            if pktinfo:
                sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        if device:
            bind_to_device(sock, device)
        sock.bind(sockaddr(family, local, port, scope))
    except BaseException:
        sock.close()
        raise
    return sock


def open_transmit_socket(
    family: int,
    local: str,
    scope: int,
    ports: SourcePorts,
    *,
    netns: str = "",
    device: str = "",
) -> socket.socket:
    """A non-blocking UDP socket on ``local`` with a source port of 49152-65535
    that none of the daemon's other sessions holds, while one is left (``ports``:
    the daemon's account, see :mod:`.ports`).  Close it with
    :func:`close_transmit_socket`, which gives the port back.  ``netns``,
    ``device``: as :func:`open_receive_socket`'s (it sends through the device).
    """
    sock = socket_in(netns, family, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    try:
        sock.setblocking(False)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, TTL_SINGLE_HOP)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, TOS_NETWORK_CONTROL)
        else:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, TTL_SINGLE_HOP)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, TOS_NETWORK_CONTROL)
        if device:
            bind_to_device(sock, device)
        ports.bind(lambda port: sock.bind(sockaddr(family, local, port, scope)))
    except BaseException:
        sock.close()
        raise
    return sock


def close_transmit_socket(sock: socket.socket, ports: SourcePorts) -> None:
    """Close a socket of :func:`open_transmit_socket` and give its port back (once)."""
    if sock.fileno() == -1:
        return  # closed already: its port was given back then
    try:
        port = int(sock.getsockname()[1])
    finally:
        sock.close()
    ports.release(port)


_LOW_BYTE = 0 if sys.byteorder == "little" else 3


def received_ttl(ancdata: list[tuple[int, int, bytes]]) -> int | None:
    """The TTL / Hop Limit from ``recvmsg`` ancillary data, if present."""
    if len(ancdata) == 1:
        # The usual case: just the TTL (a native int that fits in one byte).
        level, kind, data = ancdata[0]
        if len(data) == 4 and (
            (level == socket.IPPROTO_IP and kind == socket.IP_TTL)
            or (level == socket.IPPROTO_IPV6 and kind == IPV6_HOPLIMIT)
        ):
            return data[_LOW_BYTE]
    for level, kind, data in ancdata:
        if (level == socket.IPPROTO_IP and kind == socket.IP_TTL) or (
            level == socket.IPPROTO_IPV6 and kind == IPV6_HOPLIMIT
        ):
            if len(data) >= 4:
                return int.from_bytes(data[:4], sys.byteorder)
            if data:
                return data[0]
    return None


def arrival(ancdata: list[tuple[int, int, bytes]]) -> tuple[int | None, int]:
    """The TTL / Hop Limit (None if absent) and the arrival interface's index
    (0 if absent) from a listener's ``recvmsg`` ancillary data."""
    ifindex = 0
    for level, kind, data in ancdata:
        if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(data) >= 4:
            ifindex = int.from_bytes(data[:4], sys.byteorder)  # in_pktinfo.ipi_ifindex
        elif level == socket.IPPROTO_IPV6 and kind == IPV6_PKTINFO and len(data) >= 20:
            ifindex = int.from_bytes(data[16:20], sys.byteorder)  # in6_pktinfo.ipi6_ifindex
    return received_ttl(ancdata), ifindex
