"""The TOML configuration file: daemon settings, defaults, profiles and peers.

See ``docs/configuration.md`` for the format.  :func:`load_config` reads and
checks a file as a whole and raises :class:`ConfigError` naming the file, the
key and what is wrong; nothing is applied from a file with any error.
"""

from __future__ import annotations

import ipaddress
import math
import os
import socket
import tomllib
from dataclasses import dataclass, field
from typing import Any

from .config import (
    ConfigError,
    Hooks,
    PeerSpec,
    UnsolicitedConfig,
    check_local_address,
    parse_prefixes,
    resolve,
    resolve_peer,
)
from .protocol.auth import AuthConfig, AuthKey
from .protocol.constants import MAX_DETECT_MULT, MAX_INTERVAL_US, MAX_RECEIVE_HOLDOFF_MS, US_PER_MS
from .protocol.packet import AuthType
from .protocol.session import SessionConfig
from .secret_sources import load_secret_env, load_secret_file

DEFAULT_PATH = "/etc/aiobfd/aiobfd.toml"

#: Names of the authentication types in files and on the command line.
AUTH_TYPES: dict[str, AuthType] = {
    "simple": AuthType.SIMPLE_PASSWORD,
    "keyed-md5": AuthType.KEYED_MD5,
    "meticulous-keyed-md5": AuthType.METICULOUS_KEYED_MD5,
    "keyed-sha1": AuthType.KEYED_SHA1,
    "meticulous-keyed-sha1": AuthType.METICULOUS_KEYED_SHA1,
}

#: Session keys allowed in [defaults], [profiles.NAME] and [[peers]].
SESSION_KEYS = {
    "rx_interval_ms",
    "tx_interval_ms",
    "detect_mult",
    "passive",
    "min_ttl",
    "multihop",
    "auth",
    "on_up",
    "on_down",
    "on_change",
    "hook_timeout_s",
}
PEER_KEYS = SESSION_KEYS | {"remote", "local", "interface", "profile", "shutdown"}
DAEMON_KEYS = {
    "log_level",
    "log_format",
    "control_socket",
    "metrics_address",
    "metrics_port",
    "ttl_check",
    "receive_holdoff_ms",
}
DAMPENING_KEYS = {"enabled", "penalty", "suppress", "reuse", "half_life_s", "max_hold_s"}
TOP_KEYS = {"daemon", "defaults", "profiles", "peers", "dampening", "unsolicited"}
UNSOLICITED_KEYS = {
    "enabled",
    "prefixes",
    "listen",
    "interfaces",
    "profile",
    "multihop",
    "max_sessions",
    "rate_per_s",
    "burst",
    "down_timeout_s",
}

BUILTIN_DEFAULTS: dict[str, Any] = {
    "rx_interval_ms": 1000,
    "tx_interval_ms": 1000,
    "detect_mult": 3,
    "passive": False,
    "min_ttl": None,
    "multihop": False,
    "hook_timeout_s": 10.0,
}


@dataclass(frozen=True, slots=True)
class FileConfig:
    """A checked configuration file."""

    path: str
    peers: tuple[PeerSpec, ...]
    daemon: dict[str, Any] = field(default_factory=dict)
    """Settings of [daemon]; command-line options take precedence."""
    dampening: dict[str, Any] | None = None
    """[dampening] when enabled, else None."""
    unsolicited: UnsolicitedConfig | None = None
    """[unsolicited] (RFC 9468) when enabled, else None."""


class _Where:
    """Builds 'FILE: key.path: message' errors."""

    def __init__(self, path: str) -> None:
        self.path = path

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.path}: {key}: {message}" if key else f"{self.path}: {message}")


def load_config(path: str, environ: dict[str, str] | None = None) -> FileConfig:
    """Read, check and resolve a configuration file."""
    where = _Where(path)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise where.error("", "no such file") from None
    except OSError as exc:
        raise where.error("", f"cannot read it: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise where.error("", f"not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise where.error("", f"not valid TOML: not UTF-8 (byte {exc.start})") from None
    return parse_config(data, path, environ)


def parse_config(
    data: dict[str, Any], path: str = "<config>", environ: dict[str, str] | None = None
) -> FileConfig:
    """Check and resolve parsed TOML; ``path`` names the file in errors.

    Every table is checked where it is written, so a bad value in [defaults]
    or in a profile is reported under its own key even when no peer uses it.
    Relative secret file paths are taken from the directory of ``path``.
    """
    where = _Where(path)
    base_dir = os.path.dirname(os.path.abspath(path))
    _unknown(where, "", data, TOP_KEYS)
    daemon = _table(where, "daemon", data.get("daemon", {}))
    _unknown(where, "daemon", daemon, DAEMON_KEYS)
    _check_daemon(where, daemon)
    defaults_raw = _table(where, "defaults", data.get("defaults", {}))
    _unknown(where, "defaults", defaults_raw, SESSION_KEYS)
    defaults = _session_values(where, "defaults", defaults_raw, environ, base_dir)
    profiles: dict[str, dict[str, Any]] = {}
    for name, raw in _table(where, "profiles", data.get("profiles", {})).items():
        pkey = f"profiles.{name}"
        profile = _table(where, pkey, raw)
        _unknown(where, pkey, profile, SESSION_KEYS)
        profiles[name] = _session_values(where, pkey, profile, environ, base_dir)
    dampening = _dampening(where, data.get("dampening"))

    peers_raw = data.get("peers", [])
    if not isinstance(peers_raw, list):
        raise where.error("peers", "must be an array of tables ([[peers]])")
    specs: list[PeerSpec] = []
    seen: dict[Any, str] = {}
    for index, raw in enumerate(peers_raw):
        key = f"peers[{index}]"
        peer = _table(where, key, raw)
        _unknown(where, key, peer, PEER_KEYS)
        merged: dict[str, Any] = dict(BUILTIN_DEFAULTS)
        merged.update(defaults)
        profile_name = peer.get("profile")
        if profile_name is not None:
            if not isinstance(profile_name, str) or profile_name not in profiles:
                known = ", ".join(sorted(profiles)) or "none defined"
                raise where.error(f"{key}.profile", f"unknown profile {profile_name!r} ({known})")
            merged.update(profiles[profile_name])
        merged.update(_session_values(where, key, peer, environ, base_dir))
        spec = _peer_spec(where, key, peer, merged)
        if spec.key in seen:
            raise where.error(key, f"duplicate of {seen[spec.key]} ({spec.display_remote()})")
        seen[spec.key] = key
        specs.append(spec)
    unsolicited = _unsolicited(where, data.get("unsolicited"), defaults, profiles)
    return FileConfig(path, tuple(specs), daemon, dampening, unsolicited)


def _unsolicited(
    where: _Where, raw: Any, defaults: dict[str, Any], profiles: dict[str, dict[str, Any]]
) -> UnsolicitedConfig | None:
    """[unsolicited]: off unless present with enabled = true (the default when present)."""
    if raw is None:
        return None
    table = _table(where, "unsolicited", raw)
    _unknown(where, "unsolicited", table, UNSOLICITED_KEYS)
    if not _bool(where, "unsolicited.enabled", table.get("enabled", True)):
        return None
    lists: dict[str, tuple[str, ...]] = {}
    for name in ("prefixes", "listen", "interfaces"):
        value = table.get(name, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise where.error(f"unsolicited.{name}", "must be a list of strings")
        lists[name] = tuple(value)
    for name in ("prefixes", "listen"):
        if not lists[name]:
            raise where.error(f"unsolicited.{name}", "required: at least one")
    try:
        prefixes = parse_prefixes(lists["prefixes"])
    except ConfigError as exc:
        raise where.error("unsolicited.prefixes", str(exc)) from None
    for i, address in enumerate(lists["listen"]):
        try:
            check_local_address(resolve(address)[0])
        except ConfigError as exc:
            raise where.error(f"unsolicited.listen[{i}]", str(exc)) from None
    merged: dict[str, Any] = dict(BUILTIN_DEFAULTS)
    merged.update(defaults)
    profile_name = table.get("profile")
    if profile_name is not None:
        if profile_name not in profiles:
            raise where.error("unsolicited.profile", f"unknown profile {profile_name!r}")
        merged.update(profiles[profile_name])
    multihop = _bool(where, "unsolicited.multihop", table.get("multihop", False))
    session = SessionConfig(
        desired_min_tx_us=merged["tx_interval_ms"] * US_PER_MS,
        required_min_rx_us=merged["rx_interval_ms"] * US_PER_MS,
        detect_mult=merged["detect_mult"],
        passive=True,
        auth=merged.get("auth"),
        min_ttl=merged["min_ttl"],
        multihop=multihop,
    )
    numbers: dict[str, float] = {}
    for name, default, low in (
        ("max_sessions", 100, 1),
        ("rate_per_s", 10.0, 0.001),
        ("burst", 20, 1),
        ("down_timeout_s", 60.0, 0.001),
    ):
        value = table.get(name, default)
        if not isinstance(value, int | float) or isinstance(value, bool) or value < low:
            raise where.error(f"unsolicited.{name}", f"must be a number of at least {low}")
        numbers[name] = value
    return UnsolicitedConfig(
        prefixes=prefixes,
        listen=lists["listen"],
        interfaces=lists["interfaces"],
        session=session,
        multihop=multihop,
        max_sessions=int(numbers["max_sessions"]),
        rate_per_s=float(numbers["rate_per_s"]),
        burst=int(numbers["burst"]),
        down_timeout_s=float(numbers["down_timeout_s"]),
    )


def _table(where: _Where, key: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise where.error(key, "must be a table")
    return value


def _unknown(where: _Where, prefix: str, table: dict[str, Any], allowed: set[str]) -> None:
    for name in table:
        if name not in allowed:
            full = f"{prefix}.{name}" if prefix else name
            raise where.error(full, f"unknown key (allowed: {', '.join(sorted(allowed))})")


def _check_daemon(where: _Where, daemon: dict[str, Any]) -> None:
    levels = {"CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG"}
    if "log_level" in daemon and str(daemon["log_level"]).upper() not in levels:
        raise where.error("daemon.log_level", f"must be one of {', '.join(sorted(levels))}")
    if "log_format" in daemon and daemon["log_format"] not in ("text", "json"):
        raise where.error("daemon.log_format", "must be 'text' or 'json'")
    for key in ("control_socket", "metrics_address"):
        if key in daemon and not isinstance(daemon[key], str):
            raise where.error(f"daemon.{key}", "must be a string")
    if "metrics_port" in daemon:
        port = daemon["metrics_port"]
        if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
            raise where.error("daemon.metrics_port", "must be a port number 0-65535 (0: off)")
    if "ttl_check" in daemon and not isinstance(daemon["ttl_check"], bool):
        raise where.error("daemon.ttl_check", "must be true or false")
    if "receive_holdoff_ms" in daemon:
        holdoff = daemon["receive_holdoff_ms"]
        if (
            not isinstance(holdoff, int)
            or isinstance(holdoff, bool)
            or not 0 <= holdoff <= MAX_RECEIVE_HOLDOFF_MS
        ):
            raise where.error(
                "daemon.receive_holdoff_ms", f"must be a whole number 0-{MAX_RECEIVE_HOLDOFF_MS}"
            )


def _dampening(where: _Where, raw: Any) -> dict[str, Any] | None:
    if raw is None:
        return None
    table = _table(where, "dampening", raw)
    _unknown(where, "dampening", table, DAMPENING_KEYS)
    for name, value in table.items():
        if name == "enabled":
            if not isinstance(value, bool):
                raise where.error("dampening.enabled", "must be true or false")
        elif not _positive(value):
            raise where.error(f"dampening.{name}", "must be a positive number")
    if not table.get("enabled", True):
        return None
    return {k: float(v) for k, v in table.items() if k != "enabled"}


def _int(where: _Where, key: str, value: Any, low: int, high: int, unit: str = "") -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise where.error(key, f"must be a whole number from {low} to {high}{unit}")
    return value


def _session_values(
    where: _Where,
    prefix: str,
    table: dict[str, Any],
    environ: dict[str, str] | None,
    base_dir: str,
) -> dict[str, Any]:
    """Check the session keys of one table ([defaults], a profile, a peer).

    Returns the keys it sets, checked, with ``auth`` as an :class:`AuthConfig`.
    """
    out: dict[str, Any] = {}
    max_ms = MAX_INTERVAL_US // US_PER_MS
    for name in ("tx_interval_ms", "rx_interval_ms"):
        if name in table:
            out[name] = _int(where, f"{prefix}.{name}", table[name], 1, max_ms, " ms")
    if "detect_mult" in table:
        out["detect_mult"] = _int(
            where, f"{prefix}.detect_mult", table["detect_mult"], 1, MAX_DETECT_MULT
        )
    if "min_ttl" in table:
        out["min_ttl"] = _int(where, f"{prefix}.min_ttl", table["min_ttl"], 1, 255)
    if "passive" in table:
        out["passive"] = _bool(where, f"{prefix}.passive", table["passive"])
    if "multihop" in table:
        out["multihop"] = _bool(where, f"{prefix}.multihop", table["multihop"])
    if "hook_timeout_s" in table:
        timeout = table["hook_timeout_s"]
        if not _positive(timeout):
            raise where.error(f"{prefix}.hook_timeout_s", "must be a positive number of seconds")
        out["hook_timeout_s"] = float(timeout)
    for name in ("on_up", "on_down", "on_change"):
        if name in table:
            if not isinstance(table[name], str):
                raise where.error(f"{prefix}.{name}", "must be a shell command (a string)")
            out[name] = table[name]
    if "auth" in table:
        out["auth"] = _auth(where, f"{prefix}.auth", table["auth"], environ, base_dir)
    return out


def _positive(value: Any) -> bool:
    """A finite number above 0 (TOML also has inf and nan)."""
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


def _bool(where: _Where, key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise where.error(key, "must be true or false")
    return value


def _address(where: _Where, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise where.error(key, "required: an address or host name")
    return value


def _is_link_local(text: str) -> bool:
    try:
        ip = ipaddress.ip_address(text.partition("%")[0])
    except ValueError:
        return False
    return ip.version == 6 and ip.is_link_local


def _peer_spec(where: _Where, key: str, peer: dict[str, Any], merged: dict[str, Any]) -> PeerSpec:
    """The peer's addresses, resolved and checked, with its merged session values."""
    remote = _address(where, f"{key}.remote", peer.get("remote"))
    local = _address(where, f"{key}.local", peer.get("local"))
    interface = peer.get("interface")
    if interface is not None and (not isinstance(interface, str) or not interface):
        raise where.error(f"{key}.interface", "must be an interface name")
    shutdown = _bool(where, f"{key}.shutdown", peer.get("shutdown", False))
    if interface:
        # The interface is the scope of link-local addresses written without one.
        if "%" not in remote and _is_link_local(remote):
            remote = f"{remote}%{interface}"
        if "%" not in local and _is_link_local(local):
            local = f"{local}%{interface}"
    for name, text in (("remote", remote), ("local", local)):
        try:
            addresses = resolve(text)
        except ConfigError as exc:
            raise where.error(f"{key}.{name}", str(exc)) from None
        if name == "local" and len(addresses) == 1:
            try:
                check_local_address(addresses[0])
            except ConfigError as exc:
                raise where.error(f"{key}.local", str(exc)) from None
    session = SessionConfig(
        desired_min_tx_us=merged["tx_interval_ms"] * US_PER_MS,
        required_min_rx_us=merged["rx_interval_ms"] * US_PER_MS,
        detect_mult=merged["detect_mult"],
        passive=merged["passive"],
        auth=merged.get("auth"),
        min_ttl=merged["min_ttl"],
        multihop=merged["multihop"],
    )
    try:
        spec = resolve_peer(local, remote, session, socket.AF_UNSPEC)
    except (ConfigError, ValueError) as exc:
        raise where.error(key, str(exc)) from None
    if interface and not spec.scope:
        raise where.error(f"{key}.interface", "only applies to IPv6 link-local peers (fe80::/10)")
    return PeerSpec(
        spec.remote,
        spec.local,
        spec.family,
        spec.scope,
        spec.interface,
        session,
        shutdown=shutdown,
        hooks=Hooks(
            merged.get("on_up", ""),
            merged.get("on_down", ""),
            merged.get("on_change", ""),
            merged["hook_timeout_s"],
        ),
        profile=str(peer.get("profile") or ""),
    )


def _auth(
    where: _Where, key: str, raw: Any, environ: dict[str, str] | None, base_dir: str
) -> AuthConfig:
    """An [auth] table: type, keys (each from a file or the environment), transmit key."""
    table = _table(where, key, raw)
    _unknown(where, key, table, {"type", "keys", "transmit_key_id"})
    type_name = table.get("type")
    if not isinstance(type_name, str) or type_name not in AUTH_TYPES:
        raise where.error(f"{key}.type", f"must be one of {', '.join(AUTH_TYPES)}")
    auth_type = AUTH_TYPES[type_name]
    keys_raw = table.get("keys")
    if not isinstance(keys_raw, list) or not keys_raw:
        raise where.error(
            f"{key}.keys", "needs at least one key: {id = N, file = PATH} or {id = N, env = NAME}"
        )
    keys: list[AuthKey] = []
    for i, entry in enumerate(keys_raw):
        kkey = f"{key}.keys[{i}]"
        entry = _table(where, kkey, entry)
        _unknown(where, kkey, entry, {"id", "file", "env"})
        key_id = _int(where, f"{kkey}.id", entry.get("id"), 0, 255)
        if any(k.key_id == key_id for k in keys):
            raise where.error(f"{kkey}.id", f"key id {key_id} is given twice")
        if ("file" in entry) == ("env" in entry):
            raise where.error(kkey, "give exactly one of file or env (secrets never in the file)")
        source = "file" if "file" in entry else "env"
        value = entry[source]
        if not isinstance(value, str) or not value:
            what = "a file name" if source == "file" else "an environment variable name"
            raise where.error(f"{kkey}.{source}", f"must be {what}")
        try:
            if source == "file":
                secret = load_secret_file(os.path.join(base_dir, value), auth_type)
            else:
                secret = load_secret_env(value, auth_type, environ)
        except ValueError as exc:
            raise where.error(f"{kkey}.{source}", str(exc)) from None
        keys.append(AuthKey(key_id, secret))
    transmit = _int(
        where, f"{key}.transmit_key_id", table.get("transmit_key_id", keys[0].key_id), 0, 255
    )
    if not any(k.key_id == transmit for k in keys):
        ids = ", ".join(str(k.key_id) for k in keys)
        raise where.error(
            f"{key}.transmit_key_id", f"key id {transmit} is not among the keys ({ids})"
        )
    try:
        return AuthConfig(auth_type, tuple(keys), transmit)
    except ValueError as exc:
        raise where.error(key, str(exc)) from None


def find_default_config() -> str | None:
    """The default file when it exists, else None."""
    return DEFAULT_PATH if os.path.exists(DEFAULT_PATH) else None
