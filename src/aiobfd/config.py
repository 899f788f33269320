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

from .registry import PeerKey
from .session import SessionConfig


class ConfigError(ValueError):
    """The configuration cannot be used; the message says why, in one line."""


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

    @property
    def key(self) -> PeerKey:
        return PeerKey(self.remote, self.local, self.scope)

    def display_remote(self) -> str:
        return f"{self.remote}%{self.interface}" if self.interface else self.remote


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
        scope = int(sockaddr[3]) if fam == socket.AF_INET6 else 0
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


def resolve_peers(
    local: str,
    remotes: Iterable[str],
    session: SessionConfig,
    family: int = socket.AF_UNSPEC,
) -> list[PeerSpec]:
    """Turn the classic ``LOCAL REMOTE...`` form into checked peer specs."""
    local_addrs = resolve(local, family)
    specs: list[PeerSpec] = []
    seen: set[PeerKey] = set()
    for remote in remotes:
        remote_addrs = resolve(remote, family)
        pair = _pick_pair(local, local_addrs, remote, remote_addrs)
        loc, rem = pair
        scope = rem.scope or loc.scope
        if rem.scope and loc.scope and rem.scope != loc.scope:
            raise ConfigError(f"{remote} and {local} are on different interfaces")
        interface = rem.interface or loc.interface
        spec = PeerSpec(
            rem.address,
            loc.address,
            rem.family,
            scope if _link_local(rem) else 0,
            interface if _link_local(rem) else "",
            session,
        )
        if spec.key in seen:
            raise ConfigError(f"duplicate remote {remote}")
        seen.add(spec.key)
        specs.append(spec)
    if not specs:
        raise ConfigError("no remote given")
    for loc in {(s.local, s.family, s.scope if _is_ll(s.local) else 0) for s in specs}:
        check_local_address(Address(loc[0], loc[1], loc[2]))
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
    return _is_ll(addr.address)


def _is_ll(text: str) -> bool:
    ip = ipaddress.ip_address(text)
    return ip.version == 6 and ip.is_link_local
