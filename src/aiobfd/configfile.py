"""The TOML configuration file: daemon settings, defaults, profiles and peers.

See ``docs/configuration.md`` for the format.  :func:`load_config` reads and
checks a file as a whole and raises :class:`ConfigError` naming the file, the
key and what is wrong; nothing is applied from a file with any error.
"""

from __future__ import annotations

import os
import socket
import tomllib
from dataclasses import dataclass, field
from typing import Any

from .auth import AuthConfig, AuthKey, load_secret_env, load_secret_file
from .config import ConfigError, Hooks, PeerSpec, resolve_peer
from .constants import MAX_DETECT_MULT, MAX_INTERVAL_US, US_PER_MS
from .packet import AuthType
from .session import SessionConfig

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
}
DAMPENING_KEYS = {"enabled", "penalty", "suppress", "reuse", "half_life_s", "max_hold_s"}
TOP_KEYS = {"daemon", "defaults", "profiles", "peers", "dampening"}

BUILTIN_DEFAULTS: dict[str, Any] = {
    "rx_interval_ms": 1000,
    "tx_interval_ms": 1000,
    "detect_mult": 3,
    "passive": False,
    "min_ttl": 255,
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
    return parse_config(data, path, environ)


def parse_config(
    data: dict[str, Any], path: str = "<config>", environ: dict[str, str] | None = None
) -> FileConfig:
    where = _Where(path)
    _unknown(where, "", data, TOP_KEYS)
    daemon = _table(where, "daemon", data.get("daemon", {}))
    _unknown(where, "daemon", daemon, DAEMON_KEYS)
    _check_daemon(where, daemon)
    defaults = _table(where, "defaults", data.get("defaults", {}))
    _unknown(where, "defaults", defaults, SESSION_KEYS)
    profiles = _table(where, "profiles", data.get("profiles", {}))
    for name, profile in profiles.items():
        _unknown(
            where, f"profiles.{name}", _table(where, f"profiles.{name}", profile), SESSION_KEYS
        )
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
        merged.update({k: v for k, v in peer.items() if k in SESSION_KEYS})
        spec = _peer_spec(where, key, peer, merged, environ)
        if spec.key in seen:
            raise where.error(key, f"duplicate of {seen[spec.key]} ({spec.display_remote()})")
        seen[spec.key] = key
        specs.append(spec)
    return FileConfig(path, tuple(specs), daemon, dampening)


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


def _dampening(where: _Where, raw: Any) -> dict[str, Any] | None:
    if raw is None:
        return None
    table = _table(where, "dampening", raw)
    _unknown(where, "dampening", table, DAMPENING_KEYS)
    for name, value in table.items():
        if name == "enabled":
            if not isinstance(value, bool):
                raise where.error("dampening.enabled", "must be true or false")
        elif not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
            raise where.error(f"dampening.{name}", "must be a positive number")
    if not table.get("enabled", True):
        return None
    return {k: float(v) for k, v in table.items() if k != "enabled"}


def _int(where: _Where, key: str, value: Any, low: int, high: int, unit: str = "") -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise where.error(key, f"must be a whole number from {low} to {high}{unit}")
    return value


def _peer_spec(
    where: _Where,
    key: str,
    peer: dict[str, Any],
    merged: dict[str, Any],
    environ: dict[str, str] | None,
) -> PeerSpec:
    for required in ("remote", "local"):
        if not isinstance(peer.get(required), str) or not peer[required]:
            raise where.error(f"{key}.{required}", "required: an address or host name")
    interface = peer.get("interface")
    if interface is not None and (not isinstance(interface, str) or not interface):
        raise where.error(f"{key}.interface", "must be an interface name")
    max_ms = MAX_INTERVAL_US // US_PER_MS
    tx = _int(where, f"{key}.tx_interval_ms", merged["tx_interval_ms"], 1, max_ms, " ms")
    rx = _int(where, f"{key}.rx_interval_ms", merged["rx_interval_ms"], 1, max_ms, " ms")
    mult = _int(where, f"{key}.detect_mult", merged["detect_mult"], 1, MAX_DETECT_MULT)
    min_ttl = _int(where, f"{key}.min_ttl", merged["min_ttl"], 1, 255)
    for flag in ("passive", "shutdown"):
        value = merged.get(flag, peer.get(flag, False))
        if not isinstance(value, bool):
            raise where.error(f"{key}.{flag}", "must be true or false")
    timeout = merged["hook_timeout_s"]
    if not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout <= 0:
        raise where.error(f"{key}.hook_timeout_s", "must be a positive number of seconds")
    hooks = {}
    for name in ("on_up", "on_down", "on_change"):
        value = merged.get(name, "")
        if not isinstance(value, str):
            raise where.error(f"{key}.{name}", "must be a shell command (a string)")
        hooks[name] = value
    auth = _auth(where, f"{key}.auth", merged.get("auth"), environ)
    try:
        session = SessionConfig(
            desired_min_tx_us=tx * US_PER_MS,
            required_min_rx_us=rx * US_PER_MS,
            detect_mult=mult,
            passive=merged["passive"],
            auth=auth,
            min_ttl=min_ttl,
        )
        remote = peer["remote"] + (
            f"%{interface}" if interface and "%" not in peer["remote"] else ""
        )
        local = peer["local"]
        if interface and "%" not in local and local.lower().startswith("fe80"):
            local = f"{local}%{interface}"
        spec = resolve_peer(local, remote, session, socket.AF_UNSPEC)
    except (ConfigError, ValueError) as exc:
        raise where.error(key, str(exc)) from None
    return PeerSpec(
        spec.remote,
        spec.local,
        spec.family,
        spec.scope,
        spec.interface or (interface or ""),
        session,
        shutdown=bool(peer.get("shutdown", False)),
        hooks=Hooks(hooks["on_up"], hooks["on_down"], hooks["on_change"], float(timeout)),
        profile=str(peer.get("profile") or ""),
    )


def _auth(where: _Where, key: str, raw: Any, environ: dict[str, str] | None) -> AuthConfig | None:
    if raw is None:
        return None
    table = _table(where, key, raw)
    _unknown(where, key, table, {"type", "keys", "transmit_key_id"})
    type_name = table.get("type")
    if type_name not in AUTH_TYPES:
        raise where.error(f"{key}.type", f"must be one of {', '.join(AUTH_TYPES)}")
    auth_type = AUTH_TYPES[type_name]
    keys_raw = table.get("keys")
    if not isinstance(keys_raw, list) or not keys_raw:
        raise where.error(
            f"{key}.keys", "needs at least one key: {id = N, file = PATH} or {id = N, env = NAME}"
        )
    keys = []
    for i, entry in enumerate(keys_raw):
        kkey = f"{key}.keys[{i}]"
        entry = _table(where, kkey, entry)
        _unknown(where, kkey, entry, {"id", "file", "env"})
        key_id = _int(where, f"{kkey}.id", entry.get("id"), 0, 255)
        if ("file" in entry) == ("env" in entry):
            raise where.error(kkey, "give exactly one of file or env (secrets never in the file)")
        try:
            if "file" in entry:
                secret = load_secret_file(str(entry["file"]), auth_type)
            else:
                secret = load_secret_env(str(entry["env"]), auth_type, environ)
        except ValueError as exc:
            raise where.error(kkey, str(exc)) from None
        keys.append(AuthKey(key_id, secret))
    transmit = table.get("transmit_key_id", keys[0].key_id)
    try:
        return AuthConfig(
            auth_type, tuple(keys), _int(where, f"{key}.transmit_key_id", transmit, 0, 255)
        )
    except ValueError as exc:
        raise where.error(key, str(exc)) from None


def find_default_config() -> str | None:
    """The default file when it exists, else None."""
    return DEFAULT_PATH if os.path.exists(DEFAULT_PATH) else None
