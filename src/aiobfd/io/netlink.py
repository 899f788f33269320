"""rtnetlink, the few messages aiobfd needs: routes and neighbours, without waiting.

:class:`RouteNetlink` is one non-blocking ``NETLINK_ROUTE`` socket of the
daemon's network namespace.  It asks the kernel for the route to an address
(``RTM_GETROUTE``: ``ip route get``'s ``dev``, ``via`` and ``src``) and for a
neighbour entry (``RTM_GETNEIGH``: ``ip neigh get``'s link-layer address and
state), and, when opened with ``neighbours=True``, hears every change of the
neighbour tables (the ``RTNLGRP_NEIGH`` group: ``ip monitor neigh``).

Nothing here waits: a query is a ``send``, and the kernel has its answer in
the socket's queue by the time the send returns (Linux serves both without
the RTNL lock), so :meth:`RouteNetlink.read` right after finds it; the owner
also reads when the event loop says the socket is readable (the events).
Answers come back as values: :class:`Route`, :class:`Neighbour` and
:class:`NetlinkError`, each with the sequence number of its query (0 for an
event).

(``aiobfd.engine.admission`` has an RTM_GETROUTE query of its own, for the
interface check of unsolicited sessions; it could use this module.)
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final, TypeVar

# linux/netlink.h, linux/rtnetlink.h, linux/neighbour.h
NETLINK_ROUTE: Final = 0
RTMGRP_NEIGH: Final = 0x4
NLMSG_ERROR: Final = 2
NLMSG_DONE: Final = 3
NLM_F_REQUEST: Final = 0x1
RTM_NEWROUTE: Final = 24
RTM_GETROUTE: Final = 26
RTM_NEWNEIGH: Final = 28
RTM_DELNEIGH: Final = 29
RTM_GETNEIGH: Final = 30
RTA_DST: Final = 1
RTA_OIF: Final = 4
RTA_GATEWAY: Final = 5
RTA_PREFSRC: Final = 7
NDA_DST: Final = 1
NDA_LLADDR: Final = 2
RTN_UNICAST: Final = 1
RTN_LOCAL: Final = 2
#: Neighbour states (NUD_*).
NUD_INCOMPLETE: Final = 0x01
NUD_REACHABLE: Final = 0x02
NUD_STALE: Final = 0x04
NUD_DELAY: Final = 0x08
NUD_PROBE: Final = 0x10
NUD_FAILED: Final = 0x20
NUD_NOARP: Final = 0x40
NUD_PERMANENT: Final = 0x80
#: States whose link-layer address may be used (``ip neigh``'s "valid" ones).
NUD_VALID: Final = NUD_PERMANENT | NUD_NOARP | NUD_REACHABLE | NUD_PROBE | NUD_STALE | NUD_DELAY
#: States confirmed lately: the address is known to answer there.
NUD_CONFIRMED: Final = NUD_PERMANENT | NUD_NOARP | NUD_REACHABLE

_NLMSGHDR = struct.Struct("=IHHII")  # length, type, flags, sequence, port id
# family, dst_len, src_len, tos, table, protocol, scope, type, flags
_RTMSG = struct.Struct("=BBBBBBBBI")
# family, pad, pad, ifindex, state, flags, type
_NDMSG = struct.Struct("=BBHiHBB")
_RTATTR = struct.Struct("=HH")  # length, type
_U32 = struct.Struct("=I")
_ERRNO = struct.Struct("=i")
#: Datagrams read from the socket per call, at most (a burst of neighbour
#: events is read over several turns of the loop).
READ_BATCH: Final = 64
_RECV_SIZE = 65536


@dataclass(frozen=True, slots=True)
class Route:
    """The kernel's answer to a route query (``ip route get ADDRESS``)."""

    seq: int
    destination: str
    kind: int
    """RTN_UNICAST, RTN_LOCAL (the address is this host's), ..."""
    ifindex: int
    """The output interface (0: none)."""
    gateway: str | None
    """The next hop when it is not the destination itself (``via``)."""
    source: str | None
    """The preferred source address (``src``)."""


@dataclass(frozen=True, slots=True)
class Neighbour:
    """A neighbour entry: an answer to a query, or a change (``seq`` 0)."""

    seq: int
    address: str
    ifindex: int
    state: int
    """NUD_* bits."""
    lladdr: bytes | None
    """The link-layer address, when the entry has one."""
    deleted: bool = False
    """An RTM_DELNEIGH event: the entry is gone."""

    @property
    def usable(self) -> bool:
        return self.lladdr is not None and not self.deleted and bool(self.state & NUD_VALID)


@dataclass(frozen=True, slots=True)
class NetlinkError:
    """The kernel refused a query (no route, no such neighbour, ...)."""

    seq: int
    errno: int

    @property
    def message(self) -> str:
        return f"{errno.errorcode.get(self.errno, str(self.errno))}: {os.strerror(self.errno)}"


Answer = Route | Neighbour | NetlinkError


_Parsed = TypeVar("_Parsed")


def message(kind: int, flags: int, seq: int, body: bytes) -> bytes:
    """One netlink message: the header before ``body``."""
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), kind, flags, seq, 0) + body


def messages(data: bytes) -> Iterator[tuple[int, int, int, int, int]]:
    """The messages of one netlink datagram: (type, flags, sequence number,
    offset of the body, its end), up to the first one that does not fit."""
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length, kind, flags, seq, _port = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size or offset + length > len(data):
            return
        yield kind, flags, seq, offset + _NLMSGHDR.size, offset + length
        offset += (length + 3) & ~3


def error_of(data: bytes, body: int, end: int, seq: int) -> NetlinkError | None:
    """The refusal an NLMSG_ERROR carries (None: an acknowledgement, or too short)."""
    if end - body < _ERRNO.size:
        return None
    code = -_ERRNO.unpack_from(data, body)[0]
    return NetlinkError(seq, code) if code else None


class NetlinkSocket:
    """A non-blocking rtnetlink socket subscribed to ``groups``: requests
    numbered in sequence, what comes back read in bounded batches."""

    def __init__(self, groups: int = 0, *, rcvbuf: int = 0) -> None:
        sock = socket.socket(
            socket.AF_NETLINK,
            socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC,
            NETLINK_ROUTE,
        )
        try:
            if rcvbuf:
                with contextlib.suppress(OSError):  # else the default, and a dump again on loss
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.bind((0, groups))
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self._seq = 0
        self.lost = 0
        """Times the kernel said answers or events were lost (ENOBUFS)."""

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    def request(self, kind: int, flags: int, body: bytes) -> int:
        """Send a request; its sequence number (OSError if refused)."""
        self._seq = seq = self._seq % 0x7FFF_FFFF + 1  # never 0: that is an event
        self.sock.sendto(message(kind, NLM_F_REQUEST | flags, seq, body), (0, 0))
        return seq

    def read_parsed(
        self, parse: Callable[[bytes], list[_Parsed]], batch: int = READ_BATCH
    ) -> list[_Parsed]:
        """What waits on the socket (``batch`` datagrams at most), parsed."""
        out: list[_Parsed] = []
        for _ in range(batch):
            try:
                data = self.sock.recv(_RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:  # the queue overflowed: events were lost
                    self.lost += 1
                    continue
                raise
            out.extend(parse(data))
        return out


class RouteNetlink(NetlinkSocket):
    """A non-blocking rtnetlink socket: route and neighbour queries, neighbour events."""

    def __init__(self, *, neighbours: bool = False) -> None:
        super().__init__(RTMGRP_NEIGH if neighbours else 0)

    def ask_route(self, address: str) -> int:
        """Send a route query for ``address``; its sequence number (OSError if refused)."""
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        dst = socket.inet_pton(family, address)
        attr = _RTATTR.pack(_RTATTR.size + len(dst), RTA_DST) + dst
        body = _RTMSG.pack(family, len(dst) * 8, 0, 0, 0, 0, 0, 0, 0) + attr
        return self.request(RTM_GETROUTE, 0, body)

    def ask_neighbour(self, address: str, ifindex: int) -> int:
        """Send a query for the neighbour entry of ``address`` on ``ifindex``."""
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        dst = socket.inet_pton(family, address)
        attr = _RTATTR.pack(_RTATTR.size + len(dst), NDA_DST) + dst
        body = _NDMSG.pack(family, 0, 0, ifindex, 0, 0, 0) + attr
        return self.request(RTM_GETNEIGH, 0, body)

    def read(self) -> list[Answer]:
        """What waits on the socket, parsed (answers and events, in order)."""
        return self.read_parsed(parse)


def parse(data: bytes) -> list[Answer]:
    """The messages of one netlink datagram that this module knows."""
    out: list[Answer] = []
    for kind, _flags, seq, body, end in messages(data):
        if kind == NLMSG_ERROR:
            error = error_of(data, body, end, seq)
            if error is not None:
                out.append(error)
        elif kind == RTM_NEWROUTE and end - body >= _RTMSG.size:
            out.append(_route(data, body, end, seq))
        elif kind in (RTM_NEWNEIGH, RTM_DELNEIGH) and end - body >= _NDMSG.size:
            neighbour = _neighbour(data, body, end, seq, deleted=kind == RTM_DELNEIGH)
            if neighbour is not None:
                out.append(neighbour)
    return out


def _attributes(data: bytes, at: int, end: int) -> dict[int, bytes]:
    attrs: dict[int, bytes] = {}
    while at + _RTATTR.size <= end:
        size, kind = _RTATTR.unpack_from(data, at)
        if size < _RTATTR.size or at + size > end:
            break
        attrs[kind & 0x3FFF] = data[at + _RTATTR.size : at + size]
        at += (size + 3) & ~3
    return attrs


def _address(family: int, raw: bytes | None) -> str | None:
    if raw is None:
        return None
    try:
        return socket.inet_ntop(family, raw)
    except (ValueError, OSError):
        return None


def _route(data: bytes, body: int, end: int, seq: int) -> Route:
    family, _dst_len, _src_len, _tos, _table, _proto, _scope, kind, _flags = _RTMSG.unpack_from(
        data, body
    )
    attrs = _attributes(data, body + _RTMSG.size, end)
    oif = attrs.get(RTA_OIF)
    return Route(
        seq,
        _address(family, attrs.get(RTA_DST)) or "",
        kind,
        int(_U32.unpack(oif[:4])[0]) if oif is not None and len(oif) >= 4 else 0,
        _address(family, attrs.get(RTA_GATEWAY)),
        _address(family, attrs.get(RTA_PREFSRC)),
    )


def _neighbour(data: bytes, body: int, end: int, seq: int, *, deleted: bool) -> Neighbour | None:
    family, _p1, _p2, ifindex, state, _flags, _kind = _NDMSG.unpack_from(data, body)
    if family not in (socket.AF_INET, socket.AF_INET6):
        return None  # bridge FDB entries and the like
    attrs = _attributes(data, body + _NDMSG.size, end)
    address = _address(family, attrs.get(NDA_DST))
    if address is None:
        return None
    lladdr = attrs.get(NDA_LLADDR)
    return Neighbour(seq, address, ifindex, state, lladdr or None, deleted)


# -- links and addresses (``ip monitor link address``) ----------------------------------

RTMGRP_LINK: Final = 0x1
RTMGRP_IPV4_IFADDR: Final = 0x10
RTMGRP_IPV6_IFADDR: Final = 0x100
NLM_F_MULTI: Final = 0x2
NLM_F_DUMP: Final = 0x300
RTM_NEWLINK: Final = 16
RTM_DELLINK: Final = 17
RTM_GETLINK: Final = 18
RTM_NEWADDR: Final = 20
RTM_DELADDR: Final = 21
RTM_GETADDR: Final = 22
IFLA_IFNAME: Final = 3
IFLA_OPERSTATE: Final = 16
IFA_ADDRESS: Final = 1
IFA_LOCAL: Final = 2
IFA_FLAGS: Final = 8
IFF_UP: Final = 0x1
IFF_LOWER_UP: Final = 0x10000
#: Address flags of an address that cannot be used yet (or ever): IPv6
#: Duplicate Address Detection under way, or failed.
IFA_F_DADFAILED: Final = 0x08
IFA_F_TENTATIVE: Final = 0x40

# family, pad, type, index, flags, change
_IFINFOMSG = struct.Struct("=BBHiII")
# family, prefix length, flags, scope, index
_IFADDRMSG = struct.Struct("=BBBBI")


@dataclass(frozen=True, slots=True)
class Link:
    """An interface as RTM_NEWLINK / RTM_DELLINK tells it."""

    ifindex: int
    name: str
    flags: int
    """IFF_* bits."""
    deleted: bool = False

    @property
    def up(self) -> bool:
        """Administratively up with a carrier (``ip link``'s UP and LOWER_UP)."""
        return not self.deleted and bool(self.flags & IFF_UP) and bool(self.flags & IFF_LOWER_UP)


@dataclass(frozen=True, slots=True)
class IfAddress:
    """An address of an interface, as RTM_NEWADDR / RTM_DELADDR tells it."""

    address: str
    ifindex: int
    flags: int
    """IFA_F_* bits."""
    deleted: bool = False

    @property
    def usable(self) -> bool:
        """Present and bindable (not tentative, DAD not failed)."""
        return not self.deleted and not self.flags & (IFA_F_TENTATIVE | IFA_F_DADFAILED)


@dataclass(frozen=True, slots=True)
class DumpDone:
    """The end of a dump (NLMSG_DONE)."""

    seq: int


LinkEvent = Link | IfAddress | DumpDone | NetlinkError


class LinkNetlink(NetlinkSocket):
    """A non-blocking rtnetlink socket that hears link and address changes.

    It is subscribed to RTMGRP_LINK and both address groups; :meth:`dump`
    asks for every link and address once (at start, and after lost events:
    ``lost`` grew).
    """

    def __init__(self) -> None:
        super().__init__(RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR)

    def dump(self) -> list[LinkEvent]:
        """Every link, then every address, read at once (the kernel builds a
        dump as it is read: nothing here waits).  Events that arrive meanwhile
        come in their place."""
        out: list[LinkEvent] = []
        for kind, body in (
            (RTM_GETLINK, _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0, 0)),
            (RTM_GETADDR, _IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)),
        ):
            seq = self.request(kind, NLM_F_DUMP, body)
            while True:
                batch = self.read()
                out.extend(batch)
                if any(isinstance(m, DumpDone | NetlinkError) and m.seq == seq for m in batch):
                    break
                if not batch:
                    break  # nothing more queued (should not happen before DONE)
        return out

    def read(self) -> list[LinkEvent]:
        """What waits on the socket, parsed, in order."""
        return self.read_parsed(parse_links)


def parse_links(data: bytes) -> list[LinkEvent]:
    """The link and address messages of one netlink datagram."""
    out: list[LinkEvent] = []
    for kind, _flags, seq, body, end in messages(data):
        if kind == NLMSG_DONE:
            out.append(DumpDone(seq))
        elif kind == NLMSG_ERROR:
            error = error_of(data, body, end, seq)
            if error is not None:
                out.append(error)
        elif kind in (RTM_NEWLINK, RTM_DELLINK) and end - body >= _IFINFOMSG.size:
            _family, _pad, _type, index, flags, _change = _IFINFOMSG.unpack_from(data, body)
            attrs = _attributes(data, body + _IFINFOMSG.size, end)
            name = attrs.get(IFLA_IFNAME, b"").split(b"\0", 1)[0].decode(errors="replace")
            out.append(Link(index, name, flags, kind == RTM_DELLINK))
        elif kind in (RTM_NEWADDR, RTM_DELADDR) and end - body >= _IFADDRMSG.size:
            family, _plen, flags, _scope, index = _IFADDRMSG.unpack_from(data, body)
            if family in (socket.AF_INET, socket.AF_INET6):
                attrs = _attributes(data, body + _IFADDRMSG.size, end)
                extended = attrs.get(IFA_FLAGS)
                if extended is not None and len(extended) >= 4:
                    flags = _U32.unpack(extended[:4])[0]
                address = _address(family, attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS))
                if address is not None:
                    out.append(IfAddress(address, index, flags, kind == RTM_DELADDR))
    return out
