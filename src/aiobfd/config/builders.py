"""What the command line and the file build alike: authentication and unsolicited sessions.

Each source checks its own syntax (argparse types, TOML keys) and hands the
values to these builders, so the rules are written once:

* :func:`auth_config` reads every key's secret from its file or environment
  variable (:mod:`aiobfd.secret_sources`) into an :class:`AuthConfig`;
* :func:`unsolicited_config` checks the prefixes and the listen addresses of
  RFC 9468 unsolicited sessions into an :class:`UnsolicitedConfig` (listen
  addresses resolved: the engine binds them without a lookup);
* :func:`check_echo` refuses what an RFC 9747 unaffiliated echo session
  cannot be (multihop, passive, authenticated), and :func:`check_echo_peer`
  the addresses it cannot use (link-local);
* :func:`bind_peer` binds a peer to an interface, a VRF or a network
  namespace, checked.

Session timers are :meth:`SessionSettings.session_config`.  Errors are
:class:`SettingError` naming the key within the table (``keys[1].id``), which
the file prefixes with the table's place and the command line leaves out.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from ..protocol.auth import AuthConfig, AuthKey
from ..protocol.packet import AuthType
from ..secret_sources import load_secret_env, load_secret_file
from .addresses import Resolver, canonical, parse_prefixes
from .model import ConfigError, PeerSpec, SessionSettings, SettingError, UnsolicitedConfig

#: Names of the authentication types in files and on the command line.
AUTH_TYPES: dict[str, AuthType] = {
    "simple": AuthType.SIMPLE_PASSWORD,
    "keyed-md5": AuthType.KEYED_MD5,
    "meticulous-keyed-md5": AuthType.METICULOUS_KEYED_MD5,
    "keyed-sha1": AuthType.KEYED_SHA1,
    "meticulous-keyed-sha1": AuthType.METICULOUS_KEYED_SHA1,
}


@dataclass(frozen=True, slots=True)
class KeySource:
    """Where one key's secret is: exactly one of a file and an environment variable."""

    key_id: int
    """Auth Key ID, 0 to 255."""
    file: str | None = None
    """A file holding the secret (relative: to ``base_dir`` of :func:`auth_config`)."""
    env: str | None = None
    """An environment variable holding the secret."""
    key: str = ""
    """Where the key is written, for errors (``keys[0]``)."""


def auth_config(
    type_name: str,
    sources: Iterable[KeySource],
    transmit_key_id: int | None = None,
    *,
    base_dir: str = "",
    environ: Mapping[str, str] | None = None,
    warnings: list[str] | None = None,
) -> AuthConfig:
    """Read the secrets of ``sources`` (in order) into an :class:`AuthConfig`.

    ``sources`` may be a generator that checks each entry as it is reached,
    so errors come in the order they are written.  The transmit key is
    ``transmit_key_id``, else the first key.  Key files that others may read
    add a line to ``warnings``.
    """
    auth_type = AUTH_TYPES[type_name]
    keys: list[AuthKey] = []
    for source in sources:
        if any(k.key_id == source.key_id for k in keys):
            raise SettingError(f"{source.key}.id", f"key id {source.key_id} is given twice")
        where = f"{source.key}.file" if source.file is not None else f"{source.key}.env"
        try:
            if source.file is not None:
                path = os.path.join(base_dir, source.file) if base_dir else source.file
                secret = load_secret_file(path, auth_type, warnings)
            else:
                secret = load_secret_env(source.env or "", auth_type, environ)
        except ValueError as exc:
            raise SettingError(where, str(exc)) from None
        keys.append(AuthKey(source.key_id, secret))
    if not keys:
        raise SettingError("keys", "needs at least one key")
    transmit = keys[0].key_id if transmit_key_id is None else transmit_key_id
    if not any(k.key_id == transmit for k in keys):
        ids = ", ".join(str(k.key_id) for k in keys)
        raise SettingError("transmit_key_id", f"key id {transmit} is not among the keys ({ids})")
    try:
        return AuthConfig(auth_type, tuple(keys), transmit)
    except ValueError as exc:
        raise SettingError("", str(exc)) from None


def unsolicited_config(
    session: SessionSettings,
    prefixes: Sequence[str],
    listen: Sequence[str],
    *,
    interfaces: Sequence[str] = (),
    multihop: bool = False,
    max_sessions: int = 100,
    rate_per_s: float = 10.0,
    burst: int = 20,
    down_timeout_s: float = 60.0,
    family: int = socket.AF_UNSPEC,
    resolver: Resolver | None = None,
) -> UnsolicitedConfig:
    """RFC 9468 unsolicited sessions: passive, with ``session``'s timers and keys.

    Checks that ``prefixes`` are prefixes and that every ``listen`` address
    is one of this host's.
    """
    try:
        networks = parse_prefixes(prefixes)
    except ConfigError as exc:
        raise SettingError("prefixes", str(exc)) from None
    resolver = resolver or Resolver()
    addresses: list[str] = []
    for i, address in enumerate(listen):
        try:
            addr = resolver.resolve(address, family)[0]
            resolver.check_local(addr)
        except ConfigError as exc:
            raise SettingError(f"listen[{i}]", str(exc)) from None
        addresses.append(canonical(addr))
    return UnsolicitedConfig(
        prefixes=networks,
        listen=tuple(addresses),
        interfaces=tuple(interfaces),
        session=session.session_config(passive=True, multihop=multihop, echo=False),
        multihop=multihop,
        max_sessions=max_sessions,
        rate_per_s=rate_per_s,
        burst=burst,
        down_timeout_s=down_timeout_s,
    )


def check_echo(session: SessionSettings) -> None:
    """Refuse settings an unaffiliated echo session (RFC 9747) cannot have.

    The gateway runs no BFD: there is no one to authenticate to, nothing to
    wait for (passive) and no multihop path (the gateway is a neighbour whose
    forwarding sends the packets back).
    """
    if not session.unaffiliated_echo:
        if session.multihop and (
            session.echo_interval_ms is not None or session.echo_rx_interval_ms
        ):
            key = (
                "echo_interval_ms"
                if session.echo_interval_ms is not None
                else "echo_rx_interval_ms"
            )
            raise SettingError(key, "the Echo function is single hop only (RFC 5883 §3)")
        return
    for key, set_ in (
        ("multihop", session.multihop),
        ("passive", session.passive),
        ("auth", session.auth is not None),
    ):
        if set_:
            raise SettingError(key, f"an unaffiliated echo session cannot be {key}")


#: The longest interface name (IFNAMSIZ less its NUL).
IFNAME_MAX = 15


def check_netns_name(name: str) -> str | None:
    """Why ``name`` cannot name a namespace under /run/netns, or None."""
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        return f"{name!r} is not a network namespace name (as in `ip netns add NAME`)"
    return None


def check_device_name(name: str) -> str | None:
    """Why ``name`` cannot be an interface (or VRF device) name, or None."""
    if (
        not name
        or len(name) > IFNAME_MAX
        or name in (".", "..")
        or any(c.isspace() or c in "/:\0" for c in name)
    ):
        return (
            f"{name!r} is not an interface name (1-{IFNAME_MAX} characters, no '/', ':' or space)"
        )
    return None


def bind_peer(spec: PeerSpec, *, interface: str = "", vrf: str = "", netns: str = "") -> PeerSpec:
    """``spec`` bound to an interface, a VRF or a network namespace (``""``:
    not), checked: the names, a link-local scope that names another interface,
    and echo, which runs unbound in the daemon's own namespace and default VRF.
    Raises :class:`SettingError` naming the key."""
    for key, name, check in (
        ("interface", interface, check_device_name),
        ("vrf", vrf, check_device_name),
        ("netns", netns, check_netns_name),
    ):
        if name and (why := check(name)) is not None:
            raise SettingError(key, why)
    if interface and spec.scope and interface != spec.interface:
        raise SettingError(
            "interface", f"{spec.display_remote()} is on {spec.interface}, not {interface}"
        )
    config = spec.session
    echo = spec.echo is not None or config.echo_tx_us or config.required_min_echo_rx_us
    if echo and (vrf or netns or (interface and not spec.scope)):
        key = "interface" if interface and not spec.scope else "vrf" if vrf else "netns"
        raise SettingError(
            key, "echo is not supported on a session bound to an interface, a VRF or a namespace"
        )
    interface = interface or spec.interface
    if (interface, vrf, netns) == (spec.interface, spec.vrf, spec.netns):
        return spec  # nothing to bind (most peers): no copy
    return replace(spec, interface=interface, vrf=vrf, netns=netns)


def check_echo_peer(spec: PeerSpec) -> None:
    """Refuse addresses an unaffiliated echo session cannot use: routers do
    not forward packets from or to link-local addresses (RFC 4291 §2.5.6)."""
    if spec.echo is not None and spec.scope:
        raise ConfigError(
            f"unaffiliated echo toward {spec.display_remote()} needs global addresses: "
            "a gateway does not forward link-local ones"
        )
    config = spec.session
    if spec.echo is None and spec.scope and (config.echo_tx_us or config.required_min_echo_rx_us):
        raise ConfigError(
            f"echo with {spec.display_remote()} needs global addresses: "
            "routers do not forward link-local ones"
        )
    if spec.echo is None and spec.family == socket.AF_INET6 and config.required_min_echo_rx_us:
        raise ConfigError(
            f"echo_rx_interval_ms toward {spec.display_remote()}: looping a peer's echo "
            "packets back is IPv4 only"
        )
