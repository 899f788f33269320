"""The TOML configuration file: its keys, checked, into :class:`Settings`.

See ``docs/configuration.md`` for the format.  :func:`load_config` reads and
checks a file as a whole and raises :class:`ConfigError` naming the file, the
key and what is wrong; nothing is applied from a file with any error.  The
file must be a regular file of at most :data:`MAX_CONFIG_BYTES` (opened
without blocking: a FIFO is refused, not waited on), and TOML nested too
deeply for the parser is an error like any other.  The
session keys are the fields of :class:`SessionSettings`; what both sources
build alike (authentication, unsolicited sessions) is in
:mod:`aiobfd.config.builders`, addresses in :mod:`aiobfd.config.addresses`.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import reprlib
import socket
import tomllib
from collections.abc import Iterator
from typing import Any

from ..logs import LEVELS
from ..protocol.auth import AuthConfig
from ..protocol.constants import MAX_DETECT_MULT, MAX_RECEIVE_HOLDOFF_MS
from ..protocol.echo import EchoConfig
from ..protocol.session import SessionConfig
from ..secret_sources import read_regular_file
from .addresses import Resolver
from .builders import (
    AUTH_TYPES,
    KeySource,
    auth_config,
    bind_peer,
    check_echo,
    check_echo_peer,
    unsolicited_config,
)
from .model import (
    MAX_DAMPENING_S,
    MAX_DOWN_TIMEOUT_S,
    MAX_HOOK_TIMEOUT_S,
    MAX_HOOKS_RUNNING,
    MAX_INTERVAL_MS,
    MAX_PENALTY,
    MAX_UNSOLICITED,
    REALTIME_PRIORITIES,
    ConfigError,
    DaemonSettings,
    DampeningSettings,
    Hooks,
    PeerSpec,
    RouteSpec,
    SessionSettings,
    SettingError,
    Settings,
    UnsolicitedConfig,
    positive_number,
    variable_name_error,
)

DEFAULT_PATH = "/etc/aiobfd/aiobfd.toml"
#: A configuration file larger than this is refused unread (5,000 peers take 300 KiB).
MAX_CONFIG_BYTES = 16 * 1024 * 1024

#: Session keys allowed in [defaults], [profiles.NAME] and [[peers]].
SESSION_KEYS = {f.name for f in dataclasses.fields(SessionSettings)}
PEER_KEYS = SESSION_KEYS | {"remote", "local", "interface", "vrf", "netns", "profile", "shutdown"}
DAEMON_KEYS = {
    "log_level",
    "log_format",
    "control_socket",
    "metrics_address",
    "metrics_port",
    "ttl_check",
    "receive_holdoff_ms",
    "hook_pass_env",
    "hook_max_running",
    "realtime_priority",
    "lock_memory",
    "drain_wait_ms",
}
DAMPENING_KEYS = {"enabled", *(f.name for f in dataclasses.fields(DampeningSettings))}
TOP_KEYS = {"daemon", "defaults", "profiles", "peers", "dampening", "unsolicited", "routes"}
ROUTE_KEYS = {"prefix", "nexthops", "table", "metric", "keep_last", "persist"}
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


class _Where:
    """Builds 'FILE: key.path: message' errors."""

    def __init__(self, path: str) -> None:
        self.path = path

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.path}: {key}: {message}" if key else f"{self.path}: {message}")

    def within(self, table: str, exc: SettingError) -> ConfigError:
        """A builder's error about a key of ``table``."""
        return self.error(f"{table}.{exc.key}" if exc.key else table, exc.message)


def find_default_config() -> str | None:
    """The default file when it exists, else None."""
    return DEFAULT_PATH if os.path.exists(DEFAULT_PATH) else None


def load_config(path: str, environ: dict[str, str] | None = None) -> Settings:
    """Read, check and resolve a configuration file.

    This blocks (files, names): a running daemon calls it off its event loop.
    """
    where = _Where(path)
    try:
        raw, _ = read_regular_file(path, MAX_CONFIG_BYTES)
    except FileNotFoundError:
        raise where.error("", "no such file") from None
    except OSError as exc:
        raise where.error("", f"cannot read it: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(raw.decode())
    except tomllib.TOMLDecodeError as exc:
        raise where.error("", f"not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise where.error("", f"not valid TOML: not UTF-8 (byte {exc.start})") from None
    except RecursionError:
        raise where.error("", "not valid TOML: nested too deeply") from None
    try:
        return parse_config(data, path, environ)
    except RecursionError:  # a value nested just below tomllib's limit, met again
        raise where.error("", "values nested too deeply") from None


def parse_config(
    data: dict[str, Any], path: str = "<config>", environ: dict[str, str] | None = None
) -> Settings:
    """Check and resolve parsed TOML; ``path`` names the file in errors.

    Every table is checked where it is written, so a bad value in [defaults]
    or in a profile is reported under its own key even when no peer uses it.
    Relative secret file paths are taken from the directory of ``path``.
    """
    reader = _Reader(path, environ)
    where = reader.where
    _unknown(where, "", data, TOP_KEYS)
    daemon = _daemon(where, data.get("daemon", {}))
    defaults_raw = _table(where, "defaults", data.get("defaults", {}))
    _unknown(where, "defaults", defaults_raw, SESSION_KEYS)
    defaults = reader.session_values("defaults", defaults_raw)
    profiles: dict[str, dict[str, Any]] = {}
    for name, raw in _table(where, "profiles", data.get("profiles", {})).items():
        pkey = f"profiles.{name}"
        profile = _table(where, pkey, raw)
        _unknown(where, pkey, profile, SESSION_KEYS)
        profiles[name] = reader.session_values(pkey, profile)
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
        merged = dict(defaults)
        profile_name = peer.get("profile")
        if profile_name is not None:
            if not isinstance(profile_name, str) or profile_name not in profiles:
                known = ", ".join(sorted(profiles)) or "none defined"
                raise where.error(
                    f"{key}.profile", f"unknown profile {_brief(profile_name)} ({known})"
                )
            merged.update(profiles[profile_name])
        merged.update(reader.session_values(key, peer))
        spec = reader.peer(key, peer, SessionSettings(**merged))
        if spec.key in seen:
            raise where.error(key, f"duplicate of {seen[spec.key]} ({spec.display_remote()})")
        seen[spec.key] = key
        specs.append(spec)
    unsolicited = reader.unsolicited(data.get("unsolicited"), defaults, profiles)
    routes = _routes(where, data.get("routes", []), specs)
    return Settings(
        tuple(specs),
        daemon,
        dampening,
        unsolicited,
        path,
        warnings=tuple(
            dict.fromkeys(
                [
                    *reader.warnings,
                    *(
                        f"{path}: local address {a} is not on this host now: "
                        "its sessions wait for it"
                        for a in reader.resolver.waiting
                    ),
                ]
            )
        ),
        secret_variables=frozenset(reader.secret_variables),
        routes=routes,
    )


class _Reader:
    """What reading one file needs throughout: where it is, secrets, addresses."""

    def __init__(self, path: str, environ: dict[str, str] | None) -> None:
        self.where = _Where(path)
        self.environ = environ
        self.base_dir = os.path.dirname(os.path.abspath(path))
        """Relative secret files are taken from here."""
        self.resolver = Resolver(wait_for_local=True)
        self.warnings: list[str] = []
        """Key files others may read, and the like (see Settings.warnings)."""
        self.secret_variables: set[str] = set()
        """Environment variables named by ``keys[n].env``."""
        self._built: dict[SessionSettings, tuple[SessionConfig, Hooks, EchoConfig | None]] = {}
        """What the peers' merged settings make, built once for all the peers
        that share them (frozen, so shared safely): a reload then compares
        them by identity, and pickles each once."""

    def built(self, settings: SessionSettings) -> tuple[SessionConfig, Hooks, EchoConfig | None]:
        """``settings``' session configuration, hooks and echo configuration."""
        got = self._built.get(settings)
        if got is None:
            got = (settings.session_config(), settings.hooks, settings.echo_config())
            self._built[settings] = got
        return got

    def session_values(self, prefix: str, table: dict[str, Any]) -> dict[str, Any]:
        """Check the session keys of one table ([defaults], a profile, a peer).

        Returns the keys it sets, checked, with ``auth`` as an :class:`AuthConfig`.
        """
        where = self.where
        out: dict[str, Any] = {}
        for name in ("tx_interval_ms", "rx_interval_ms"):
            if name in table:
                out[name] = _int(where, f"{prefix}.{name}", table[name], 1, MAX_INTERVAL_MS, " ms")
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
        if "unaffiliated_echo" in table:
            out["unaffiliated_echo"] = _bool(
                where, f"{prefix}.unaffiliated_echo", table["unaffiliated_echo"]
            )
        if "echo_interval_ms" in table:
            out["echo_interval_ms"] = _int(
                where,
                f"{prefix}.echo_interval_ms",
                table["echo_interval_ms"],
                1,
                MAX_INTERVAL_MS,
                " ms",
            )
        if "echo_rx_interval_ms" in table:
            out["echo_rx_interval_ms"] = _int(
                where,
                f"{prefix}.echo_rx_interval_ms",
                table["echo_rx_interval_ms"],
                0,
                MAX_INTERVAL_MS,
                " ms",
            )
        if "hook_timeout_s" in table:
            out["hook_timeout_s"] = _number(
                where, f"{prefix}.hook_timeout_s", table["hook_timeout_s"], MAX_HOOK_TIMEOUT_S, " s"
            )
        for name in ("on_up", "on_down", "on_change"):
            if name in table:
                if not isinstance(table[name], str):
                    raise where.error(f"{prefix}.{name}", "must be a shell command (a string)")
                out[name] = table[name]
        if "auth" in table:
            out["auth"] = self.auth(f"{prefix}.auth", table["auth"])
        return out

    def auth(self, key: str, raw: Any) -> AuthConfig:
        """An [auth] table: type, keys (each from a file or the environment), transmit key."""
        where = self.where
        table = _table(where, key, raw)
        _unknown(where, key, table, {"type", "keys", "transmit_key_id"})
        type_name = table.get("type")
        if not isinstance(type_name, str) or type_name not in AUTH_TYPES:
            raise where.error(f"{key}.type", f"must be one of {', '.join(AUTH_TYPES)}")
        keys_raw = table.get("keys")
        if not isinstance(keys_raw, list) or not keys_raw:
            raise where.error(
                f"{key}.keys",
                "needs at least one key: {id = N, file = PATH} or {id = N, env = NAME}",
            )
        transmit = table.get("transmit_key_id")
        try:
            # The builder reads transmit_key_id once every key is read, after
            # _key_sources has checked it: errors come in the file's order.
            return auth_config(
                type_name,
                self._key_sources(key, keys_raw, transmit),
                transmit,
                base_dir=self.base_dir,
                environ=self.environ,
                warnings=self.warnings,
            )
        except SettingError as exc:
            raise where.within(key, exc) from None

    def _key_sources(self, key: str, keys_raw: list[Any], transmit: Any) -> Iterator[KeySource]:
        """Each entry of ``keys``, checked as the builder reaches it, then ``transmit``."""
        where = self.where
        for i, entry in enumerate(keys_raw):
            kkey = f"{key}.keys[{i}]"
            entry = _table(where, kkey, entry)
            _unknown(where, kkey, entry, {"id", "file", "env"})
            key_id = _int(where, f"{kkey}.id", entry.get("id"), 0, 255)
            if ("file" in entry) == ("env" in entry):
                raise where.error(
                    kkey, "give exactly one of file or env (secrets never in the file)"
                )
            source = "file" if "file" in entry else "env"
            value = entry[source]
            if not isinstance(value, str) or not value:
                what = "a file name" if source == "file" else "an environment variable name"
                raise where.error(f"{kkey}.{source}", f"must be {what}")
            if source == "env":
                self.secret_variables.add(value)
            yield KeySource(
                key_id,
                file=value if source == "file" else None,
                env=value if source == "env" else None,
                key=f"keys[{i}]",
            )
        if transmit is not None:
            _int(where, f"{key}.transmit_key_id", transmit, 0, 255)

    def peer(self, key: str, peer: dict[str, Any], settings: SessionSettings) -> PeerSpec:
        """The peer's addresses, resolved and checked, with its merged session settings."""
        where = self.where
        remote = _address(where, f"{key}.remote", peer.get("remote"))
        local = _address(where, f"{key}.local", peer.get("local"))
        interface = peer.get("interface")
        if interface is not None and (not isinstance(interface, str) or not interface):
            raise where.error(f"{key}.interface", "must be an interface name")
        binding: dict[str, str] = {}
        for name in ("vrf", "netns"):
            value = peer.get(name)
            if value is not None and (not isinstance(value, str) or not value):
                what = "a VRF name" if name == "vrf" else "a network namespace name"
                raise where.error(f"{key}.{name}", f"must be {what}")
            binding[name] = value or ""
        shutdown = _bool(where, f"{key}.shutdown", peer.get("shutdown", False))
        if interface:
            # The interface is the scope of link-local addresses written without one.
            if "%" not in remote and _is_link_local(remote):
                remote = f"{remote}%{interface}"
            if "%" not in local and _is_link_local(local):
                local = f"{local}%{interface}"
        try:
            check_echo(settings)
        except SettingError as exc:
            raise where.within(key, exc) from None
        resolver = self.resolver
        for name, text in (("remote", remote), ("local", local)):
            try:
                addresses = resolver.resolve(text)
                # In another namespace or VRF the local address is not ours to check.
                if name == "local" and len(addresses) == 1 and not any(binding.values()):
                    resolver.check_peer_local(addresses[0])
            except ConfigError as exc:
                raise where.error(f"{key}.{name}", str(exc)) from None
        config, hooks, echo = self.built(settings)
        try:
            spec = resolver.peer(
                local,
                remote,
                config,
                socket.AF_UNSPEC,
                shutdown=shutdown,
                hooks=hooks,
                profile=str(peer.get("profile") or ""),
                echo=echo,
                check_local=not any(binding.values()),
            )
            check_echo_peer(spec)
        except (ConfigError, ValueError) as exc:
            raise where.error(key, str(exc)) from None
        try:
            return bind_peer(spec, interface=interface or "", **binding)
        except SettingError as exc:
            raise where.within(key, exc) from None

    def unsolicited(
        self, raw: Any, defaults: dict[str, Any], profiles: dict[str, dict[str, Any]]
    ) -> UnsolicitedConfig | None:
        """[unsolicited]: off unless present with enabled = true (the default when present)."""
        where = self.where
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
        merged = dict(defaults)
        profile_name = table.get("profile")
        if profile_name is not None:
            if not isinstance(profile_name, str) or profile_name not in profiles:
                raise where.error("unsolicited.profile", f"unknown profile {_brief(profile_name)}")
            merged.update(profiles[profile_name])
        multihop = _bool(where, "unsolicited.multihop", table.get("multihop", False))
        key = "unsolicited."
        try:
            return unsolicited_config(
                SessionSettings(**merged),
                lists["prefixes"],
                lists["listen"],
                interfaces=lists["interfaces"],
                multihop=multihop,
                max_sessions=_int(
                    where, key + "max_sessions", table.get("max_sessions", 100), 1, MAX_UNSOLICITED
                ),
                rate_per_s=_number(
                    where, key + "rate_per_s", table.get("rate_per_s", 10.0), MAX_UNSOLICITED, "/s"
                ),
                burst=_int(where, key + "burst", table.get("burst", 20), 1, MAX_UNSOLICITED),
                down_timeout_s=_number(
                    where,
                    key + "down_timeout_s",
                    table.get("down_timeout_s", 60.0),
                    MAX_DOWN_TIMEOUT_S,
                    " s",
                ),
                resolver=self.resolver,
            )
        except SettingError as exc:
            raise where.within("unsolicited", exc) from None


def _daemon(where: _Where, raw: Any) -> DaemonSettings:
    """[daemon]: the settings of the process."""
    daemon = _table(where, "daemon", raw)
    _unknown(where, "daemon", daemon, DAEMON_KEYS)
    if "log_level" in daemon and str(daemon["log_level"]).upper() not in LEVELS:
        raise where.error("daemon.log_level", f"must be one of {', '.join(sorted(LEVELS))}")
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
    pass_env = daemon.get("hook_pass_env", [])
    if not isinstance(pass_env, list):
        raise where.error("daemon.hook_pass_env", "must be a list of environment variable names")
    for i, name in enumerate(pass_env):
        problem = variable_name_error(name)
        if problem is not None:
            raise where.error(f"daemon.hook_pass_env[{i}]", problem)
    for key, (low, high) in (
        ("hook_max_running", (1, MAX_HOOKS_RUNNING)),
        ("realtime_priority", REALTIME_PRIORITIES),
        ("drain_wait_ms", (0, 3_600_000)),
    ):
        if key in daemon:
            _int(where, f"daemon.{key}", daemon[key], low, high)
    if "lock_memory" in daemon:
        _bool(where, "daemon.lock_memory", daemon["lock_memory"])
    builtin = DaemonSettings()
    return DaemonSettings(
        log_level=str(daemon.get("log_level", builtin.log_level)).upper(),
        log_format=daemon.get("log_format", builtin.log_format),
        control_socket=daemon.get("control_socket", builtin.control_socket),
        metrics_address=daemon.get("metrics_address", builtin.metrics_address),
        metrics_port=daemon.get("metrics_port", builtin.metrics_port),
        ttl_check=daemon.get("ttl_check", builtin.ttl_check),
        receive_holdoff_ms=daemon.get("receive_holdoff_ms", builtin.receive_holdoff_ms),
        hook_pass_env=tuple(pass_env),
        hook_max_running=daemon.get("hook_max_running", builtin.hook_max_running),
        realtime_priority=daemon.get("realtime_priority", builtin.realtime_priority),
        lock_memory=daemon.get("lock_memory", builtin.lock_memory),
        drain_wait_ms=daemon.get("drain_wait_ms", builtin.drain_wait_ms),
    )


def _dampening(where: _Where, raw: Any) -> DampeningSettings | None:
    if raw is None:
        return None
    table = _table(where, "dampening", raw)
    _unknown(where, "dampening", table, DAMPENING_KEYS)
    values: dict[str, float] = {}
    for name, value in table.items():
        if name == "enabled":
            _bool(where, "dampening.enabled", value)
        elif name.endswith("_s"):
            values[name] = _number(where, f"dampening.{name}", value, MAX_DAMPENING_S, " s")
        else:
            values[name] = _number(where, f"dampening.{name}", value, MAX_PENALTY)
    if not table.get("enabled", True):
        return None
    return DampeningSettings(**values)


def _routes(where: _Where, raw: Any, peers: list[PeerSpec]) -> tuple[RouteSpec, ...]:
    """[[routes]]: kernel routes whose next hops are the remotes of configured sessions."""
    if not isinstance(raw, list):
        raise where.error("routes", "must be an array of tables ([[routes]])")
    remotes: dict[str, PeerSpec] = {}
    for spec in peers:
        remotes.setdefault(spec.display_remote(), spec)
    out: list[RouteSpec] = []
    seen: dict[tuple[Any, ...], str] = {}
    for index, entry in enumerate(raw):
        key = f"routes[{index}]"
        table = _table(where, key, entry)
        _unknown(where, key, table, ROUTE_KEYS)
        text = table.get("prefix")
        if not isinstance(text, str) or not text:
            raise where.error(
                f"{key}.prefix", "required: a prefix such as 0.0.0.0/0 or 2001:db8::/32"
            )
        try:
            prefix = ipaddress.ip_network(text)
        except ValueError as exc:
            raise where.error(f"{key}.prefix", f"not a prefix: {exc}") from None
        hops_raw = table.get("nexthops")
        if not isinstance(hops_raw, list) or not hops_raw:
            raise where.error(f"{key}.nexthops", "required: a list of at least one address")
        hops: list[str] = []
        for i, hop in enumerate(hops_raw):
            hkey = f"{key}.nexthops[{i}]"
            name = hop if isinstance(hop, str) else ""
            address, _, scope = name.partition("%")
            try:
                ip = ipaddress.ip_address(address)
            except ValueError:
                raise where.error(hkey, f"not an address: {_brief(hop)}") from None
            canonical = f"{ip}%{scope}" if scope else str(ip)
            if ip.version != prefix.version:
                raise where.error(
                    hkey, f"{canonical} is IPv{ip.version}, {prefix} is IPv{prefix.version}"
                )
            peer = remotes.get(canonical)
            if peer is None:
                raise where.error(
                    hkey, f"{canonical} is not the remote of a configured session ([[peers]])"
                )
            if peer.multihop:
                raise where.error(
                    hkey, f"the session to {canonical} is multihop: a next hop must be on a link"
                )
            if canonical in hops:
                raise where.error(hkey, f"{canonical} is listed twice")
            hops.append(canonical)
        number = table.get("table", 254)
        _int(where, f"{key}.table", number, 1, 0xFFFF_FFFF)
        if number == 255:
            raise where.error(f"{key}.table", "255 is the kernel's local table")
        metric = table.get("metric")
        if metric is not None:
            _int(where, f"{key}.metric", metric, 0, 0xFFFF_FFFF)
        route = RouteSpec(
            prefix,
            tuple(hops),
            number,
            metric,
            _bool(where, f"{key}.keep_last", table.get("keep_last", True)),
            _bool(where, f"{key}.persist", table.get("persist", False)),
        )
        effective = metric if metric is not None else (0 if prefix.version == 4 else 1024)
        ident = (prefix, number, effective)
        if ident in seen:
            raise where.error(
                key, f"duplicate of {seen[ident]} ({prefix} table {number} metric {effective})"
            )
        seen[ident] = key
        out.append(route)
    return tuple(out)


def _table(where: _Where, key: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise where.error(key, "must be a table")
    return value


def _unknown(where: _Where, prefix: str, table: dict[str, Any], allowed: set[str]) -> None:
    for name in table:
        if name not in allowed:
            full = f"{prefix}.{name}" if prefix else name
            raise where.error(full, f"unknown key (allowed: {', '.join(sorted(allowed))})")


def _int(where: _Where, key: str, value: Any, low: int, high: int, unit: str = "") -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise where.error(key, f"must be a whole number from {low} to {high}{unit}")
    return value


def _number(where: _Where, key: str, value: Any, high: float, unit: str = "") -> float:
    """A finite number above 0 and at most ``high`` (TOML also has inf and nan)."""
    number = positive_number(value, high)
    if number is None:
        raise where.error(key, f"must be a positive number, at most {high:g}{unit}")
    return number


def _brief(value: Any) -> str:
    """``value`` for a message: short, whatever the file holds there."""
    return reprlib.repr(value)


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
