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
  authentication from key files and variables, unsolicited sessions.
* :mod:`.addresses` - resolving addresses and checking peer pairs and local
  addresses (also used at run time by the engine and the control socket).

The command line's own syntax is parsed in :mod:`aiobfd.cli`; what runs the
settings is :class:`aiobfd.app.Application`.
"""

from .addresses import (
    Address,
    Resolver,
    check_local_address,
    parse_prefixes,
    resolve,
    resolve_peer,
    resolve_peers,
)
from .builders import AUTH_TYPES, KeySource, auth_config, unsolicited_config
from .model import (
    MAX_INTERVAL_MS,
    ConfigError,
    DaemonSettings,
    DampeningSettings,
    Hooks,
    Overrides,
    PeerSpec,
    SessionSettings,
    SettingError,
    Settings,
    UnsolicitedConfig,
)
from .tomlfile import DEFAULT_PATH, find_default_config, load_config, parse_config

__all__ = [
    "AUTH_TYPES",
    "DEFAULT_PATH",
    "MAX_INTERVAL_MS",
    "Address",
    "ConfigError",
    "DaemonSettings",
    "DampeningSettings",
    "Hooks",
    "KeySource",
    "Overrides",
    "PeerSpec",
    "Resolver",
    "SessionSettings",
    "SettingError",
    "Settings",
    "UnsolicitedConfig",
    "auth_config",
    "check_local_address",
    "find_default_config",
    "load_config",
    "parse_config",
    "parse_prefixes",
    "resolve",
    "resolve_peer",
    "resolve_peers",
    "unsolicited_config",
]
