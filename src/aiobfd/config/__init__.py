"""The configuration: one typed settings model, and the sources that produce it.

Which module holds what:

* :mod:`.model` - the settings model: :class:`Settings` with
  :class:`DaemonSettings`, :class:`DampeningSettings`,
  :class:`UnsolicitedConfig` and the peers (:class:`PeerSpec`, built from a
  :class:`SessionSettings` with its :class:`Hooks`); :class:`Overrides`, the
  command line's options of the process over the file's; :class:`ConfigError`.
* :mod:`.tomlfile` - the TOML file (docs/configuration.md) into
  :class:`Settings`: :func:`load_config`, every key checked and named in errors.
* :mod:`.builders` - what the file and the command line build alike:
  authentication from key files and variables, unsolicited sessions, the
  rules of unaffiliated echo sessions.
* :mod:`.addresses` - resolving addresses (strict literals, host names with a
  timeout) and checking peer pairs and local addresses (also used at run time
  by the engine and the control socket).

Reading a file blocks (files, names, secrets): a running daemon does it off
its event loop (:meth:`aiobfd.app.Application.reload_async`).

The command line's own syntax is parsed in :mod:`aiobfd.cli`; what runs the
settings is :class:`aiobfd.app.Application`.
"""

from .addresses import (
    RESOLVE_TIMEOUT_S,
    Address,
    Resolver,
    canonical,
    check_local_address,
    literal,
    parse_prefixes,
    resolve,
    resolve_peer,
    resolve_peers,
    stuck_lookups,
)
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
    Overrides,
    PeerSpec,
    RouteSpec,
    SessionSettings,
    SettingError,
    Settings,
    UnsolicitedConfig,
    positive_number,
    variable_name_error,
)
from .tomlfile import (
    DEFAULT_PATH,
    MAX_CONFIG_BYTES,
    find_default_config,
    load_config,
    parse_config,
)

__all__ = [
    "AUTH_TYPES",
    "DEFAULT_PATH",
    "MAX_CONFIG_BYTES",
    "MAX_DAMPENING_S",
    "MAX_DOWN_TIMEOUT_S",
    "MAX_HOOKS_RUNNING",
    "MAX_HOOK_TIMEOUT_S",
    "MAX_INTERVAL_MS",
    "MAX_PENALTY",
    "MAX_UNSOLICITED",
    "REALTIME_PRIORITIES",
    "RESOLVE_TIMEOUT_S",
    "Address",
    "ConfigError",
    "DaemonSettings",
    "DampeningSettings",
    "Hooks",
    "KeySource",
    "Overrides",
    "PeerSpec",
    "Resolver",
    "RouteSpec",
    "SessionSettings",
    "SettingError",
    "Settings",
    "UnsolicitedConfig",
    "auth_config",
    "bind_peer",
    "canonical",
    "check_echo",
    "check_echo_peer",
    "check_local_address",
    "find_default_config",
    "literal",
    "load_config",
    "parse_config",
    "parse_prefixes",
    "positive_number",
    "resolve",
    "resolve_peer",
    "resolve_peers",
    "stuck_lookups",
    "unsolicited_config",
    "variable_name_error",
]
