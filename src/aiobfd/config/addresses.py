"""Addresses: resolving names and literals, and the rules a peer's pair must satisfy.

:func:`resolve` turns ``192.0.2.1``, ``fe80::1%eth0`` or a host name into
:class:`Address` values; :func:`check_local_address` makes sure an address is
one of this host's (by binding a socket to it).  A :class:`Resolver` does both
for one reading of the configuration, remembering the answers while it lasts
(a file names the same few local addresses on thousands of peers), and checks
a local/remote pair into a :class:`PeerSpec`.  Every failure is a
:class:`ConfigError` of one sentence.

Address literals are strict: what :mod:`ipaddress` accepts.  A string that
looks like an IPv4 address in one of the old ``inet_aton`` forms (``010.0.0.1``,
octal: 8.0.0.1; ``127.1``; ``0x7f.1``) or that ends in a number is an error,
never a host name handed to the resolver (which would read it the ``inet_aton``
way); a string with a colon must be an IPv6 address.

A host name is resolved by ``getaddrinfo`` in a thread of its own, waited for
at most :data:`RESOLVE_TIMEOUT_S`: a resolver that never answers makes the
configuration fail with a reason instead of hanging whoever reads it.  The
lookup that timed out keeps its thread until the resolver gives up; while
:data:`MAX_STUCK_LOOKUPS` of them wait, no new lookup is started.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import threading
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


#: Seconds a host name may take to resolve before the configuration is refused.
RESOLVE_TIMEOUT_S = 5.0
#: Lookups still waiting for the resolver after their timeout; at this many,
#: no new one is started (each holds a thread until the resolver answers).
MAX_STUCK_LOOKUPS = 4
#: The longest host name (RFC 1035: 253 characters, and a final dot).
MAX_NAME = 254


def literal(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address ``text`` is written as, or None for a host name.

    Raises :class:`ConfigError` for what looks like an address but is not one
    :mod:`ipaddress` accepts: these are never resolved (see the module docstring).
    """
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    if ":" in text:
        raise ConfigError(f"{text} is not a valid IPv6 address")
    labels = text.split(".")
    if len(labels) > 1 and labels[-1] == "":
        labels.pop()  # a final dot
    last = labels[-1].lower()
    numeric = last.isdigit() or (
        last.startswith("0x") and all(c in "0123456789abcdef" for c in last[2:])
    )
    if numeric and last.isascii():
        raise ConfigError(
            f"{text} is not a valid IPv4 address (four decimal numbers 0-255 without "
            "leading zeros; a host name cannot end in a number)"
        )
    return None


def check_host_name(host: str) -> None:
    """ConfigError unless ``host`` can be a host name (length, no blanks or control characters)."""
    if not host or len(host) > MAX_NAME:
        raise ConfigError(f"{host[:64]}...: too long for a host name" if host else "empty name")
    if any(c.isspace() or not c.isprintable() or c in "/\\" for c in host):
        raise ConfigError(f"{host!r} is not a host name")


def resolve(
    host: str, family: int = socket.AF_UNSPEC, timeout_s: float | None = None
) -> list[Address]:
    """Resolve an address literal (``fe80::1%eth0`` allowed) or a host name.

    A host name must resolve within ``timeout_s`` (None: :data:`RESOLVE_TIMEOUT_S`;
    see the module docstring).
    """
    if len(host) > MAX_NAME + 16:  # a name, or an address and an interface name
        raise ConfigError(f"{host[:64]}...: too long for an address or host name")
    text, _, zone = host.partition("%")
    ip = literal(text)
    if ip is not None:
        fam = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        if family not in (socket.AF_UNSPEC, fam):
            want = "IPv4" if family == socket.AF_INET else "IPv6"
            raise ConfigError(f"{host} is not an {want} address")
        return [_address(ip, fam, zone, host)]
    if zone:
        raise ConfigError(f"{host}: a scope (%{zone}) needs an IPv6 address")
    check_host_name(host)
    infos = _Lookup(host, family).wait(RESOLVE_TIMEOUT_S if timeout_s is None else timeout_s)
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


_stuck_lock = threading.Lock()
_stuck = 0
"""Lookups abandoned after their timeout whose thread still waits for the resolver."""


class _Lookup:
    """One ``getaddrinfo`` in a daemon thread, waited for with a timeout."""

    def __init__(self, host: str, family: int) -> None:
        self.host = host
        self.family = family
        self.done = threading.Event()
        self.infos: list[Any] = []
        self.error: Exception | None = None
        self.abandoned = False

    def wait(self, timeout_s: float) -> list[Any]:
        """The answers; ConfigError on a resolver error, a timeout or too many stuck lookups."""
        global _stuck
        with _stuck_lock:
            if _stuck >= MAX_STUCK_LOOKUPS:
                raise ConfigError(
                    f"cannot resolve {self.host!r}: the resolver has not answered "
                    f"{_stuck} earlier lookups"
                )
        threading.Thread(target=self._run, name="aiobfd-resolve", daemon=True).start()
        if not self.done.wait(timeout_s):
            with _stuck_lock:
                if not self.done.is_set():
                    self.abandoned = True
                    _stuck += 1
                    raise ConfigError(
                        f"cannot resolve {self.host!r}: no answer from the resolver "
                        f"within {timeout_s:g} s"
                    )
        error = self.error
        if isinstance(error, socket.gaierror):
            raise ConfigError(f"cannot resolve {self.host!r}: {error.strerror}")
        if isinstance(error, UnicodeError | ValueError):
            raise ConfigError(f"{self.host!r} is not a host name ({error})")
        if error is not None:
            raise ConfigError(f"cannot resolve {self.host!r}: {error}")
        return self.infos

    def _run(self) -> None:
        global _stuck
        try:
            self.infos = socket.getaddrinfo(self.host, None, self.family, socket.SOCK_DGRAM)
        except Exception as exc:  # reported by wait(), in the reader's thread
            self.error = exc
        finally:
            with _stuck_lock:
                self.done.set()
                if self.abandoned:
                    _stuck -= 1


def stuck_lookups() -> int:
    """Lookups abandoned after their timeout that still wait for the resolver."""
    return _stuck


def canonical(addr: Address) -> str:
    """``addr`` as text that :func:`resolve` reads back without a lookup."""
    return f"{addr.address}%{addr.interface}" if addr.scope else addr.address


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


class MissingLocalAddress(ConfigError):
    """The address is not (yet) one of this host's (EADDRNOTAVAIL)."""


def check_local_address(addr: Address) -> None:
    """Raise ConfigError unless ``addr`` is an address of this host
    (:class:`MissingLocalAddress` when it is not on the host)."""
    sock = socket.socket(addr.family, socket.SOCK_DGRAM)
    try:
        if addr.family == socket.AF_INET6:
            sock.bind((addr.address, 0, 0, addr.scope))
        else:
            sock.bind((addr.address, 0))
    except OSError as exc:
        if exc.errno == errno.EADDRNOTAVAIL:
            raise MissingLocalAddress(f"{addr.address} is not an address of this host") from None
        raise ConfigError(f"cannot use local address {addr.address}: {exc.strerror}") from None
    finally:
        sock.close()


class Resolver:
    """Resolves and checks addresses for one reading of the configuration.

    Answers (and local addresses found good) are kept for the reader's life
    only, so a reload sees the host as it is then.
    """

    def __init__(self, *, wait_for_local: bool = False) -> None:
        self._resolved: dict[tuple[str, int], list[Address]] = {}
        self._local: set[Address] = set()
        self.wait_for_local = wait_for_local
        """A peer's local address that is not on the host is no error: its
        session waits for it (the configuration file; see aiobfd.engine.links)."""
        self.waiting: list[str] = []
        """Local addresses of peers not on the host now (with wait_for_local)."""

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

    def check_peer_local(self, addr: Address) -> None:
        """:meth:`check_local` for a peer's local address: with
        ``wait_for_local``, a missing one is listed in ``waiting`` instead."""
        try:
            self.check_local(addr)
        except MissingLocalAddress:
            if not self.wait_for_local:
                raise
            if addr.address not in self.waiting:
                self.waiting.append(addr.address)

    def peer(
        self,
        local: str,
        remote: str,
        session: SessionConfig,
        family: int = socket.AF_UNSPEC,
        *,
        check_local: bool = True,
        **extra: Any,
    ) -> PeerSpec:
        """One checked peer spec from a local and a remote address or name.

        ``extra``: the other fields of the :class:`PeerSpec` (``shutdown``,
        ``hooks``, ``profile``).  ``check_local=False``: the local address is
        not this namespace's or default VRF's to check (a session in another).
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
        if check_local:
            self.check_peer_local(Address(loc.address, loc.family, loc.scope))
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
    *,
    check_local: bool = True,
) -> list[PeerSpec]:
    """Turn the classic ``LOCAL REMOTE...`` form into checked peer specs
    (``check_local``: as :meth:`Resolver.peer`'s)."""
    resolver = Resolver()
    specs: list[PeerSpec] = []
    seen: set[PeerKey] = set()
    for remote in remotes:
        spec = resolver.peer(local, remote, session, family, check_local=check_local)
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
