"""Sockets and framing for RFC 9747 unaffiliated BFD Echo.

An echo packet is addressed to the host itself (IP source and destination:
the local address, UDP 3785) and must leave through the gateway's link-layer
address, so that the gateway's forwarding sends it back.  The kernel's IP
stack would deliver such a packet locally without sending it, so it is sent
on a packet socket (``AF_PACKET``, ``SOCK_DGRAM``: the kernel adds the
Ethernet header for the link-layer address given with each send; we build the
IP and UDP headers, :class:`EchoFrame`).  A packet socket needs
``CAP_NET_RAW`` (:func:`open_packet_socket` says so in one line without it).
The socket is opened with protocol 0: it receives nothing.

What comes back arrives as an ordinary UDP datagram on the local address,
port 3785 (:func:`open_echo_receive_socket`, reporting the received TTL).
IPv4 drops a packet whose source is one of the host's own addresses unless
``net.ipv4.conf.IFACE.accept_local`` is 1 (:func:`accepts_local`).

While the gateway's link-layer address is not known, the engine sends the
same payload as a plain UDP datagram to the gateway (:func:`open_probe_socket`):
the kernel resolves the address (ARP, Neighbour Discovery) to send it, and
the neighbour table then has it.  Our RFC 5880 echo toward a BFD peer goes
out, and comes back, the same way.

A BFD peer's echo packets (RFC 5880 §6.4) are addressed to the peer itself
and sent to our link-layer address: a host that does not forward drops them.
:func:`open_reflect_socket` is a packet socket that sees them (a classic BPF
filter keeps only IPv4 UDP to port 3785 whose source is its destination,
arriving for this host with TTL 255), and :func:`reflected` is such a packet
with its TTL one less, as a router's forwarding would send it back.
"""

from __future__ import annotations

import ctypes
import socket
import struct
from typing import Final

from ..protocol.constants import TTL_SINGLE_HOP
from .sockets import TOS_NETWORK_CONTROL, open_receive_socket, sockaddr

#: Ethernet protocol numbers (linux/if_ether.h).
ETH_P_IP: Final = 0x0800
ETH_P_IPV6: Final = 0x86DD
#: RFC 5881 §4: the echo port.
ECHO_PORT: Final = 3785
_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_IPV6 = struct.Struct("!IHBB16s16s")
_UDP = struct.Struct("!HHHH")
_IP_DF = 0x4000
_PROTO_UDP = 17

#: A packet socket's address: interface name, protocol, packet type, hardware
#: type, link-layer address (Python's AF_PACKET tuple).
LinkAddress = tuple[str, int, int, int, bytes]


class EchoCapabilityError(PermissionError):
    """The process may not open a packet socket (no CAP_NET_RAW)."""


#: What needs the packet socket, for the message without CAP_NET_RAW.
UNAFFILIATED = "unaffiliated echo"
PEER_ECHO = "echo toward a BFD peer (echo_interval_ms, --echo-interval)"


def open_packet_socket(purpose: str = UNAFFILIATED) -> socket.socket:
    """A non-blocking packet socket that sends IP packets we frame (CAP_NET_RAW)."""
    try:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, 0)
    except PermissionError:
        raise EchoCapabilityError(
            f"{purpose} needs CAP_NET_RAW: echo packets addressed to this host "
            "go out on a packet socket (give the daemon CAP_NET_RAW, or run it as root)"
        ) from None
    sock.setblocking(False)
    return sock


# Classic BPF (linux/filter.h), on a SOCK_DGRAM packet socket: offsets from
# the IP header; the packet type is an ancillary load.
_BPF_INSN = struct.Struct("@HBBI")
_LD_W_ABS, _LD_H_ABS, _LD_B_ABS = 0x20, 0x28, 0x30
_LDX_B_MSH, _LD_H_IND, _TAX = 0xB1, 0x48, 0x07
_AND_K, _JEQ_K, _JEQ_X, _JSET_K, _RET_K = 0x54, 0x15, 0x1D, 0x45, 0x06
_SKF_AD_PKTTYPE = (-0x1000 + 4) & 0xFFFF_FFFF
_PACKET_HOST = 0
_DROP = -1


def _reflect_filter() -> bytes:
    """IPv4, for this host (not outgoing, not another host's), UDP, not a
    fragment, TTL 255, source = destination, destination port 3785."""
    steps: list[tuple[int, int, int]] = [  # (code, k, jump to DROP when: 1 false, 2 true, 0 never)
        (_LD_W_ABS, _SKF_AD_PKTTYPE, 0),
        (_JEQ_K, _PACKET_HOST, 1),
        (_LD_B_ABS, 0, 0),
        (_AND_K, 0xF0, 0),
        (_JEQ_K, 0x40, 1),
        (_LD_B_ABS, 9, 0),
        (_JEQ_K, _PROTO_UDP, 1),
        (_LD_B_ABS, 8, 0),
        (_JEQ_K, TTL_SINGLE_HOP, 1),
        (_LD_H_ABS, 6, 0),
        (_JSET_K, 0x3FFF, 2),  # More Fragments or an offset
        (_LD_W_ABS, 12, 0),
        (_TAX, 0, 0),
        (_LD_W_ABS, 16, 0),
        (_JEQ_X, 0, 1),
        (_LDX_B_MSH, 0, 0),
        (_LD_H_IND, 2, 0),
        (_JEQ_K, ECHO_PORT, 1),
        (_RET_K, 0xFFFF, 0),
    ]
    drop = len(steps)
    out = []
    for i, (code, k, when) in enumerate(steps):
        skip = drop - i - 1
        jt, jf = (0, skip) if when == 1 else (skip, 0) if when == 2 else (0, 0)
        out.append(_BPF_INSN.pack(code, jt, jf, k))
    out.append(_BPF_INSN.pack(_RET_K, 0, 0, 0))
    return b"".join(out)


def open_reflect_socket() -> socket.socket:
    """A non-blocking packet socket that receives a BFD peer's echo packets
    (see the module docstring) and sends them back (CAP_NET_RAW)."""
    try:
        # Every interface (an unbound socket of the protocol receives from all).
        sock = socket.socket(
            socket.AF_PACKET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, socket.htons(ETH_P_IP)
        )
    except PermissionError:
        raise EchoCapabilityError(
            "looping a BFD peer's echo packets back (echo_rx_interval_ms, --echo-rx-interval) "
            "needs CAP_NET_RAW: they are not addressed to this host and reach it only on "
            "a packet socket (give the daemon CAP_NET_RAW, or run it as root)"
        ) from None
    try:
        program = _reflect_filter()
        buffer = ctypes.create_string_buffer(program, len(program))
        fprog = struct.pack("@HP", len(program) // _BPF_INSN.size, ctypes.addressof(buffer))
        sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, fprog)
        sock.setblocking(False)
        # What came before the filter was attached was not filtered: away with it.
        for _ in range(_PRE_FILTER_MAX):
            try:
                sock.recv(1)
            except (BlockingIOError, InterruptedError):
                break
    except BaseException:
        sock.close()
        raise
    return sock


_SO_ATTACH_FILTER = 26
#: Packets read and dropped at most after the filter is attached.
_PRE_FILTER_MAX = 10_000


def reflected(packet: bytes) -> tuple[str, bytes] | None:
    """A peer's echo packet (an IPv4 packet from :func:`open_reflect_socket`)
    as its source address and the packet to send back: TTL one less, header
    checksum updated.  None if it is not one (too short, not IPv4)."""
    if len(packet) < _IPV4.size or packet[0] >> 4 != 4:
        return None
    length = (packet[0] & 0x0F) * 4
    if length < _IPV4.size or len(packet) < length:
        return None
    ttl = packet[8]
    if ttl <= 1:
        return None
    header = bytearray(packet[:length])
    header[8] = ttl - 1
    header[10:12] = b"\0\0"
    struct.pack_into("!H", header, 10, _checksum(bytes(header)))
    return socket.inet_ntop(socket.AF_INET, packet[12:16]), bytes(header) + packet[length:]


def link_address(ifname: str, family: int, lladdr: bytes) -> LinkAddress:
    """Where a packet socket sends an IP packet of ``family`` to ``lladdr`` on ``ifname``."""
    return (ifname, ETH_P_IPV6 if family == socket.AF_INET6 else ETH_P_IP, 0, 0, lladdr)


def open_probe_socket(family: int, local: str, scope: int = 0) -> socket.socket:
    """An unconnected UDP socket on ``local`` sending with TTL 255: the plain
    UDP datagrams that make the kernel resolve the gateway's address."""
    sock = socket.socket(family, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, socket.IPPROTO_UDP)
    try:
        sock.setblocking(False)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, TTL_SINGLE_HOP)
        else:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, TTL_SINGLE_HOP)
        sock.bind(sockaddr(family, local, 0, scope))
    except BaseException:
        sock.close()
        raise
    return sock


def open_echo_receive_socket(family: int, local: str, scope: int = 0) -> socket.socket:
    """A non-blocking UDP socket on ``local``:3785 that reports received TTLs."""
    return open_receive_socket(family, local, scope, ECHO_PORT)


def accepts_local(ifname: str) -> bool | None:
    """Whether IPv4 on ``ifname`` accepts packets with a local source address
    (``accept_local`` of the interface or of ``all``); None if unknown."""
    values: list[int] = []
    for name in ("all", ifname):
        try:
            with open(f"/proc/sys/net/ipv4/conf/{name}/accept_local", "rb") as f:
                values.append(int(f.read().strip() or b"0"))
        except (OSError, ValueError):
            return None
    return any(values)


def forwards(ifname: str) -> bool:
    """Whether IPv4 on ``ifname`` forwards (``net.ipv4.conf.IFACE.forwarding``;
    False if unknown)."""
    try:
        with open(f"/proc/sys/net/ipv4/conf/{ifname}/forwarding", "rb") as f:
            return int(f.read().strip() or b"0") != 0
    except (OSError, ValueError):
        return False


def _checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of ``data``."""
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


class EchoFrame:
    """The IP and UDP headers of echo packets from and to ``local`` (the
    session's frame function: ``frame(payload)`` is what the packet socket sends).

    IPv4: DSCP CS6 as our Control packets, Don't Fragment, TTL 255 (RFC 5881
    §5).  IPv6: Traffic Class CS6, Hop Limit 255.  UDP from ``source_port`` to
    3785, with its checksum.
    """

    __slots__ = ("_address", "_family", "_source_port")

    def __init__(self, family: int, local: str, source_port: int) -> None:
        self._family = family
        self._address = socket.inet_pton(family, local)
        self._source_port = source_port

    def __call__(self, payload: bytes) -> bytes:
        addr = self._address
        udp_length = _UDP.size + len(payload)
        if self._family == socket.AF_INET6:
            pseudo = addr + addr + struct.pack("!I3xB", udp_length, _PROTO_UDP)
        else:
            pseudo = addr + addr + struct.pack("!xBH", _PROTO_UDP, udp_length)
        udp = _UDP.pack(self._source_port, ECHO_PORT, udp_length, 0)
        checksum = _checksum(pseudo + udp + payload) or 0xFFFF  # 0 means "none"
        udp = _UDP.pack(self._source_port, ECHO_PORT, udp_length, checksum)
        if self._family == socket.AF_INET6:
            first = (6 << 28) | (TOS_NETWORK_CONTROL << 20)
            header = _IPV6.pack(first, udp_length, _PROTO_UDP, TTL_SINGLE_HOP, addr, addr)
        else:
            length = _IPV4.size + udp_length
            fields = (0x45, TOS_NETWORK_CONTROL, length, 0, _IP_DF, TTL_SINGLE_HOP, _PROTO_UDP)
            header = _IPV4.pack(*fields, 0, addr, addr)
            header = _IPV4.pack(*fields, _checksum(header), addr, addr)
        return header + udp + payload
