"""Addresses: resolving names and literals, and the rules a peer's pair must satisfy.

:func:`resolve` turns ``192.0.2.1``, ``fe80::1%eth0`` or a host name into
:class:`Address` values; :func:`check_local_address` makes sure an address is
one of this host's (by binding a socket to it).  A :class:`Resolver` does both
for one reading of the configuration, remembering the answers while it lasts
(a file names the same few local addresses on thousands of peers), and checks
a local/remote pair into a :class:`PeerSpec`.  Every failure is a
:class:`ConfigError` of one sentence.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..protocol.registry import PeerKey
from ..protocol.session import SessionConfig
from .model import ConfigError, PeerSpec


@dataclass(frozen=True, slots=True)
class Address:
    """A resolved address with its family and, for link-local IPv6, scope."""

    address: str
    family: int
    scope: int = 0
    interface: str = ""


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


class Resolver:
    """Resolves and checks addresses for one reading of the configuration.

    Answers (and local addresses found good) are kept for the reader's life
    only, so a reload sees the host as it is then.
    """

    def __init__(self) -> None:
        self._resolved: dict[tuple[str, int], list[Address]] = {}
        self._local: set[Address] = set()

    def resolve(self, host: str, family: int = socket.AF_UNSPEC) -> list[Address]:
        """:func:`resolve`, once per name and family."""
        found = self._resolved.get((host, family))
        if found is None:
            found = self._resolved[host, family] = resolve(host, family)
        return found

    def check_local(self, addr: Address) -> None:
        """:func:`check_local_address`, once per address."""
        if addr not in self._local:
            check_local_address(addr)
            self._local.add(addr)

    def peer(
        self,
        local: str,
        remote: str,
        session: SessionConfig,
        family: int = socket.AF_UNSPEC,
        **extra: Any,
    ) -> PeerSpec:
        """One checked peer spec from a local and a remote address or name.

        ``extra``: the other fields of the :class:`PeerSpec` (``shutdown``,
        ``hooks``, ``profile``).
        """
        loc, rem = _pick_pair(
            local, self.resolve(local, family), remote, self.resolve(remote, family)
        )
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
            **extra,
        )
        self.check_local(Address(loc.address, loc.family, loc.scope))
        return spec


def resolve_peer(
    local: str, remote: str, session: SessionConfig, family: int = socket.AF_UNSPEC
) -> PeerSpec:
    """One checked peer spec from a local and a remote address or name."""
    return Resolver().peer(local, remote, session, family)


def resolve_peers(
    local: str,
    remotes: Iterable[str],
    session: SessionConfig,
    family: int = socket.AF_UNSPEC,
) -> list[PeerSpec]:
    """Turn the classic ``LOCAL REMOTE...`` form into checked peer specs."""
    resolver = Resolver()
    specs: list[PeerSpec] = []
    seen: set[PeerKey] = set()
    for remote in remotes:
        spec = resolver.peer(local, remote, session, family)
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
    if addr.family != socket.AF_INET6:
        return False
    ip = ipaddress.ip_address(addr.address)
    return ip.version == 6 and ip.is_link_local
