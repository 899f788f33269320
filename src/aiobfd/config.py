"""What to run: peer specifications and the address rules they must satisfy.

The command line (and later the config file) resolve into a list of
:class:`PeerSpec`; :func:`resolve_peers` checks them and raises
:class:`ConfigError` with one clear sentence when something is wrong.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field

from .protocol.registry import PeerKey
from .protocol.session import SessionConfig


class ConfigError(ValueError):
    """The configuration cannot be used; the message says why, in one line."""


@dataclass(frozen=True, slots=True)
class Hooks:
    """State-change commands for one peer (see :mod:`aiobfd.hooks`); empty: none."""

    on_up: str = ""
    on_down: str = ""
    on_change: str = ""
    timeout_s: float = 10.0

    def __bool__(self) -> bool:
        return bool(self.on_up or self.on_down or self.on_change)


@dataclass(frozen=True, slots=True)
class PeerSpec:
    """One configured single-hop session."""

    remote: str
    """Canonical remote address."""
    local: str
    """Canonical local address."""
    family: int
    scope: int = 0
    """Interface index for IPv6 link-local pairs, else 0."""
    interface: str = ""
    """Interface name of ``scope``, for display."""
    session: SessionConfig = field(default_factory=SessionConfig)
    shutdown: bool = False
    """Configured administratively down (AdminDown, diag 7)."""
    hooks: Hooks = field(default_factory=Hooks)
    profile: str = ""
    """Name of the profile it came from, for display."""

    @property
    def multihop(self) -> bool:
        return self.session.multihop

    @property
    def key(self) -> PeerKey:
        return PeerKey(self.remote, self.local, self.scope, self.session.multihop)

    def display_remote(self) -> str:
        return f"{self.remote}%{self.interface}" if self.interface else self.remote


@dataclass(frozen=True, slots=True)
class UnsolicitedConfig:
    """RFC 9468 unsolicited BFD: sessions created by the remote's first packet.

    Off unless configured.  A packet with Your Discriminator 0 from an unknown
    address inside ``prefixes`` (and, for single hop, arriving on one of
    ``interfaces`` when that list is not empty) creates a passive session with
    ``session``'s settings.  ``max_sessions`` and the token bucket
    (``rate_per_s``, ``burst``) bound what a flood can create; a dynamic
    session that stays down for ``down_timeout_s`` is removed.
    """

    prefixes: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    listen: tuple[str, ...]
    """Local addresses to accept unsolicited sessions on."""
    interfaces: tuple[str, ...] = ()
    session: SessionConfig = field(default_factory=lambda: SessionConfig(passive=True))
    multihop: bool = False
    """Also accept multihop (UDP 4784) unsolicited sessions."""
    max_sessions: int = 100
    rate_per_s: float = 10.0
    burst: int = 20
    down_timeout_s: float = 60.0

    def allows(self, address: str) -> bool:
        ip = ipaddress.ip_address(address)
        return any(ip in net for net in self.prefixes)


def parse_prefixes(
    values: Iterable[str],
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    out = []
    for value in values:
        try:
            out.append(ipaddress.ip_network(value, strict=False))
        except ValueError:
            raise ConfigError(f"{value!r} is not a prefix (such as 198.51.100.0/24)") from None
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Address:
    """A resolved address with its family and, for link-local IPv6, scope."""

    address: str
    family: int
    scope: int = 0
    interface: str = ""


def resolve(host: str, family: int = socket.AF_UNSPEC) -> list[Address]:
    """Resolve an address literal (``fe80::1%eth0`` allowed) or a host name."""
    text, _, zone = host.partition("%")
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        ip = None
    if ip is not None:
        fam = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        if family not in (socket.AF_UNSPEC, fam):
            want = "IPv4" if family == socket.AF_INET else "IPv6"
            raise ConfigError(f"{host} is not an {want} address")
        return [_address(ip, fam, zone, host)]
    if zone:
        raise ConfigError(f"{host}: a scope (%{zone}) needs an IPv6 address")
    try:
        infos = socket.getaddrinfo(host, None, family, socket.SOCK_DGRAM)
    except socket.gaierror as exc:
        raise ConfigError(f"cannot resolve {host!r}: {exc.strerror}") from None
    seen: list[Address] = []
    for fam, _, _, _, sockaddr in infos:
        ip = ipaddress.ip_address(str(sockaddr[0]).partition("%")[0])
        scope = int(sockaddr[3]) if fam == socket.AF_INET6 and len(sockaddr) == 4 else 0
        addr = Address(str(ip), fam, scope, socket.if_indextoname(scope) if scope else "")
        if addr not in seen:
            seen.append(addr)
    if not seen:
        raise ConfigError(f"cannot resolve {host!r}")
    return seen


def _address(
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address, fam: int, zone: str, host: str
) -> Address:
    if fam == socket.AF_INET6 and ip.is_link_local:
        if not zone:
            raise ConfigError(f"{host} is link-local: give its interface, as in {ip}%eth0")
        try:
            scope = int(zone) if zone.isdigit() else socket.if_nametoindex(zone)
        except OSError:
            raise ConfigError(f"{host}: no interface named {zone!r}") from None
        name = zone if not zone.isdigit() else socket.if_indextoname(scope)
        return Address(str(ip), fam, scope, name)
    if zone:
        raise ConfigError(f"{host}: a scope only applies to IPv6 link-local addresses")
    return Address(str(ip), fam)


def check_local_address(addr: Address) -> None:
    """Raise ConfigError unless ``addr`` is an address of this host."""
    sock = socket.socket(addr.family, socket.SOCK_DGRAM)
    try:
        if addr.family == socket.AF_INET6:
            sock.bind((addr.address, 0, 0, addr.scope))
        else:
            sock.bind((addr.address, 0))
    except OSError as exc:
        if exc.errno == errno.EADDRNOTAVAIL:
            raise ConfigError(f"{addr.address} is not an address of this host") from None
        raise ConfigError(f"cannot use local address {addr.address}: {exc.strerror}") from None
    finally:
        sock.close()


def resolve_peer(
    local: str, remote: str, session: SessionConfig, family: int = socket.AF_UNSPEC
) -> PeerSpec:
    """One checked peer spec from a local and a remote address or name."""
    loc, rem = _pick_pair(local, resolve(local, family), remote, resolve(remote, family))
    if session.multihop and (_link_local(rem) or _link_local(loc)):
        raise ConfigError(f"multihop needs routable addresses, not link-local ({remote})")
    if rem.scope and loc.scope and rem.scope != loc.scope:
        raise ConfigError(f"{remote} and {local} are on different interfaces")
    link_local = _link_local(rem)
    spec = PeerSpec(
        rem.address,
        loc.address,
        rem.family,
        (rem.scope or loc.scope) if link_local else 0,
        (rem.interface or loc.interface) if link_local else "",
        session,
    )
    check_local_address(Address(loc.address, loc.family, loc.scope))
    return spec


def resolve_peers(
    local: str,
    remotes: Iterable[str],
    session: SessionConfig,
    family: int = socket.AF_UNSPEC,
) -> list[PeerSpec]:
    """Turn the classic ``LOCAL REMOTE...`` form into checked peer specs."""
    specs: list[PeerSpec] = []
    seen: set[PeerKey] = set()
    for remote in remotes:
        spec = resolve_peer(local, remote, session, family)
        if spec.key in seen:
            raise ConfigError(f"duplicate remote {remote}")
        seen.add(spec.key)
        specs.append(spec)
    if not specs:
        raise ConfigError("no remote given")
    return specs


def _pick_pair(
    local: str, local_addrs: list[Address], remote: str, remote_addrs: list[Address]
) -> tuple[Address, Address]:
    for loc in local_addrs:
        for rem in remote_addrs:
            if loc.family == rem.family:
                return loc, rem
    raise ConfigError(f"{local} and {remote} are not of the same address family")


def _link_local(addr: Address) -> bool:
    ip = ipaddress.ip_address(addr.address)
    return ip.version == 6 and ip.is_link_local
