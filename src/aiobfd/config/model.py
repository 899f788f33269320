"""The settings model: everything aiobfd runs from, as typed frozen values.

The command line (:mod:`aiobfd.cli`) and the TOML file
(:mod:`aiobfd.config.tomlfile`) both produce one :class:`Settings`:

* :class:`DaemonSettings` - the process: logging, control socket, metrics
  endpoint, TTL check, receive hold-off, event loop (``[daemon]``);
* :class:`DampeningSettings` - flap dampening of the hooks (``[dampening]``);
* :class:`UnsolicitedConfig` - RFC 9468 unsolicited sessions (``[unsolicited]``);
* the peers, one :class:`PeerSpec` each, built from a :class:`SessionSettings`
  (``[defaults]``, a profile and the ``[[peers]]`` table merged, or ``-r -t -m
  ...`` on the command line) with its :class:`Hooks`.

:class:`Overrides` are the command line's explicit options of the process; they
win over the file's values field by field (:meth:`Overrides.apply`).
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass, field, replace
from typing import TypeVar

from ..protocol.auth import AuthConfig
from ..protocol.constants import MAX_INTERVAL_US, US_PER_MS
from ..protocol.echo import EchoConfig
from ..protocol.registry import PeerKey
from ..protocol.session import SessionConfig

_T = TypeVar("_T")

#: The longest interval in whole milliseconds: the 32-bit microsecond field.
MAX_INTERVAL_MS = MAX_INTERVAL_US // US_PER_MS

# Bounds of the other numbers: finite, above 0, and no larger than makes sense
# (nan, inf or 1e300 seconds would reach timers and token buckets otherwise).
#: ``hook_timeout_s``, ``--hook-timeout``: an hour.
MAX_HOOK_TIMEOUT_S = 3600.0
#: ``[unsolicited] down_timeout_s``, ``--unsolicited-down-timeout``: a day.
MAX_DOWN_TIMEOUT_S = 86400.0
#: ``[unsolicited] max_sessions``, ``burst``, ``rate_per_s`` and their options.
MAX_UNSOLICITED = 100_000
#: ``[dampening]`` ``penalty``, ``suppress``, ``reuse``.
MAX_PENALTY = 1_000_000.0
#: ``[dampening]`` ``half_life_s``, ``max_hold_s``: a day.
MAX_DAMPENING_S = 86400.0
#: ``hook_max_running``, ``--hook-max-running``.
MAX_HOOKS_RUNNING = 1000
#: ``realtime_priority``, ``--realtime-priority``: SCHED_FIFO's range on Linux.
REALTIME_PRIORITIES = (1, 99)


def positive_number(value: object, high: float) -> float | None:
    """``value`` as a float if it is a finite number above 0 and at most ``high``, else None.

    Booleans are not numbers here (TOML's ``true`` is Python's ``1``).
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    if not math.isfinite(number) or not 0 < number <= high:
        return None
    return number


def variable_name_error(name: object) -> str | None:
    """Why ``name`` cannot be an environment variable's name, or None."""
    if not isinstance(name, str) or not name:
        return "must be an environment variable name"
    if "=" in name or "\0" in name:
        return f"{name!r} cannot be an environment variable name (no '=' or NUL)"
    return None


class ConfigError(ValueError):
    """The configuration cannot be used; the message says why, in one line."""


class SettingError(ConfigError):
    """A :class:`ConfigError` about one key of a table, for its source to name.

    ``key`` is relative to the table (``keys[1].id``, ``transmit_key_id``); the
    file prefixes it with where the table is, the command line shows only the
    message.
    """

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


@dataclass(frozen=True, slots=True)
class Hooks:
    """State-change commands for one peer (see :mod:`aiobfd.hooks`); empty: none."""

    on_up: str = ""
    """Shell command run when the session comes Up."""
    on_down: str = ""
    """Shell command run when it leaves Up."""
    on_change: str = ""
    """Shell command run on every state change."""
    timeout_s: float = 10.0
    """A hook still running after this many seconds is killed."""

    def __bool__(self) -> bool:
        return bool(self.on_up or self.on_down or self.on_change)


@dataclass(frozen=True, slots=True)
class SessionSettings:
    """One session's settings as an operator writes them, in ms and seconds.

    The fields are the session keys of the file (``[defaults]``, a profile, a
    ``[[peers]]`` table) and the session options of the command line (``-r``,
    ``-t``, ``-m``, ``-p``, ``--multihop``, ``--min-ttl``, ``--auth-*``,
    ``--on-*``, ``--hook-timeout``, ``--unaffiliated-echo``,
    ``--echo-interval``, ``--echo-rx-interval``); the defaults are the built-in ones.
    """

    rx_interval_ms: int = 1000
    """Required Min RX Interval, 1 to 4294967 ms."""
    tx_interval_ms: int = 1000
    """Desired Min TX Interval once Up, 1 to 4294967 ms."""
    detect_mult: int = 3
    """Detect Mult, 1 to 255."""
    passive: bool = False
    """Wait for the remote to speak first (RFC 5880 §6.1)."""
    min_ttl: int | None = None
    """Lowest received TTL accepted (None: 255 single hop, 254 multihop)."""
    multihop: bool = False
    """An RFC 5883 multihop session (UDP 4784)."""
    auth: AuthConfig | None = None
    """Authentication (RFC 5880 §6.7), secrets already read; None: none."""
    on_up: str = ""
    """Shell command run when the session comes Up."""
    on_down: str = ""
    """Shell command run when it leaves Up."""
    on_change: str = ""
    """Shell command run on every state change."""
    hook_timeout_s: float = 10.0
    """A hook still running after this many seconds is killed."""
    unaffiliated_echo: bool = False
    """An RFC 9747 unaffiliated echo session toward the remote (a gateway that
    runs no BFD) instead of a Control session."""
    echo_interval_ms: int | None = None
    """Echo transmit interval once Up, 1 to 4294967 ms.  An unaffiliated echo
    session: None is ``tx_interval_ms``.  A Control session: our RFC 5880 Echo
    function runs at this interval (at least the remote's Required Min Echo
    RX) while the remote accepts echo packets; None: no echo."""
    echo_rx_interval_ms: int = 0
    """Required Min Echo RX Interval a Control session advertises, 0 to
    4294967 ms: the remote's echo packets are looped back at most this fast
    (RFC 5880 §6.4); 0: not willing (no echo from the remote)."""

    def echo_config(self) -> EchoConfig | None:
        """The core's :class:`EchoConfig` of an unaffiliated echo session, else None."""
        if not self.unaffiliated_echo:
            return None
        interval = self.tx_interval_ms if self.echo_interval_ms is None else self.echo_interval_ms
        return EchoConfig(interval_us=interval * US_PER_MS, detect_mult=self.detect_mult)

    def session_config(
        self, *, passive: bool | None = None, multihop: bool | None = None, echo: bool = True
    ) -> SessionConfig:
        """The protocol core's :class:`SessionConfig` (microseconds), optionally
        with ``passive`` or ``multihop`` set otherwise and without the Echo
        function (``echo=False``: unsolicited sessions)."""
        echo = echo and not self.unaffiliated_echo
        echo_rx = self.echo_rx_interval_ms * US_PER_MS if echo else 0
        echo_tx = (
            self.echo_interval_ms * US_PER_MS if echo and self.echo_interval_ms is not None else 0
        )
        return SessionConfig(
            desired_min_tx_us=self.tx_interval_ms * US_PER_MS,
            required_min_rx_us=self.rx_interval_ms * US_PER_MS,
            detect_mult=self.detect_mult,
            passive=self.passive if passive is None else passive,
            auth=self.auth,
            min_ttl=self.min_ttl,
            multihop=self.multihop if multihop is None else multihop,
            required_min_echo_rx_us=echo_rx,
            echo_tx_us=echo_tx,
        )

    @property
    def hooks(self) -> Hooks:
        return Hooks(self.on_up, self.on_down, self.on_change, self.hook_timeout_s)


def domain_of(netns: str, vrf: str) -> str:
    """A PeerKey's domain: the network namespace and VRF (``netns NAME vrf
    NAME``), "" for the daemon's own namespace and default VRF."""
    return " ".join(p for p in (netns and f"netns {netns}", vrf and f"vrf {vrf}") if p)


@dataclass(frozen=True, slots=True)
class PeerSpec:
    """One configured session."""

    remote: str
    """Canonical remote address."""
    local: str
    """Canonical local address."""
    family: int
    """``socket.AF_INET`` or ``socket.AF_INET6``."""
    scope: int = 0
    """Interface index for IPv6 link-local pairs, else 0."""
    interface: str = ""
    """The interface the session is bound to (``SO_BINDTODEVICE``: its packets
    go out there, and one that arrives on another interface is dropped);
    for an IPv6 link-local pair, the interface of ``scope``.  "": none."""
    session: SessionConfig = field(default_factory=SessionConfig)
    """Timers (in microseconds), role, mode and authentication, for the protocol core."""
    shutdown: bool = False
    """Configured administratively down (AdminDown, diag 7)."""
    hooks: Hooks = field(default_factory=Hooks)
    """Commands run on its state changes."""
    profile: str = ""
    """Name of the profile it came from, for display."""
    echo: EchoConfig | None = None
    """An RFC 9747 unaffiliated echo session toward ``remote`` (its gateway)
    with these settings, instead of a Control session; ``session`` is unused."""
    vrf: str = ""
    """The VRF the session is in: its sockets are bound to the VRF's l3mdev
    device of this name.  "": the default VRF."""
    netns: str = ""
    """The network namespace the session is in (``/run/netns/NAME``): its
    sockets are created there.  "": the daemon's own."""
    _key: PeerKey | None = field(default=None, init=False, repr=False, compare=False)
    """:attr:`key`, made once: a reload of 10,000 peers asks for it 40,000 times."""

    def __post_init__(self) -> None:
        key = PeerKey(self.remote, self.local, self.scope, self.session.multihop, self.domain)
        object.__setattr__(self, "_key", key)

    @property
    def multihop(self) -> bool:
        return self.session.multihop

    @property
    def domain(self) -> str:
        """Where the addresses live (see PeerKey): "" for the daemon's own
        namespace and default VRF."""
        return domain_of(self.netns, self.vrf)

    @property
    def device(self) -> str:
        """The device the session's own sockets are bound to: its interface,
        else its VRF; "": none."""
        return self.interface or self.vrf

    @property
    def key(self) -> PeerKey:
        key = self._key
        assert key is not None  # made by __post_init__
        return key

    def display_remote(self) -> str:
        return f"{self.remote}%{self.interface}" if self.scope else self.remote


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
    """Source prefixes allowed."""
    listen: tuple[str, ...]
    """Local addresses to accept unsolicited sessions on."""
    interfaces: tuple[str, ...] = ()
    """Single hop: the interfaces the peer may be on (empty: any)."""
    session: SessionConfig = field(default_factory=lambda: SessionConfig(passive=True))
    """Timers, multiplier and authentication of the sessions created."""
    multihop: bool = False
    """Also accept multihop (UDP 4784) unsolicited sessions."""
    max_sessions: int = 100
    """At most this many dynamic sessions at once."""
    rate_per_s: float = 10.0
    """Creations per second (token bucket)."""
    burst: int = 20
    """Size of the token bucket."""
    down_timeout_s: float = 60.0
    """A dynamic session down for this many seconds is removed."""

    def allows(self, address: str) -> bool:
        ip = ipaddress.ip_address(address)
        return any(ip in net for net in self.prefixes)


@dataclass(frozen=True, slots=True)
class DampeningSettings:
    """Flap dampening of the hooks (``[dampening]``, ``--dampening``; RFC 2439's idea).

    The defaults are :class:`aiobfd.hooks.Dampening`'s (a test checks they agree).
    """

    penalty: float = 1000.0
    """Added on every Up -> Down."""
    suppress: float = 2000.0
    """Above this penalty, an Up is held back from the hooks ..."""
    reuse: float = 750.0
    """... until the penalty has decayed to this."""
    half_life_s: float = 15.0
    """Seconds for the penalty to halve."""
    max_hold_s: float = 120.0
    """An Up is never held back longer than this many seconds."""


@dataclass(frozen=True, slots=True)
class RouteSpec:
    """A kernel route whose next hops follow their sessions (``[[routes]]``).

    See :mod:`aiobfd.routes`: installed under aiobfd's route protocol number
    with every next hop whose session is Up.
    """

    prefix: ipaddress.IPv4Network | ipaddress.IPv6Network
    """The destination (``0.0.0.0/0``: the default route)."""
    nexthops: tuple[str, ...]
    """Gateways, each the remote of a configured session (``PeerSpec.display_remote()``)."""
    table: int = 254
    """Routing table, 1 to 4294967295 except 255 (local); 254 is ``main``."""
    metric: int | None = None
    """Route metric (``RTA_PRIORITY``), 0 to 4294967295; None: the kernel's
    default (0 for IPv4, 1024 for IPv6)."""
    keep_last: bool = True
    """Never remove the last next hop: when every session is down the route
    keeps the next hops it had."""
    persist: bool = False
    """Leave the route in the table when the daemon stops or a reload drops it."""


@dataclass(frozen=True, slots=True)
class DaemonSettings:
    """Settings of the process, read at start (a reload does not change them).

    ``[daemon]`` in the file; the command line's options win (:class:`Overrides`).
    Where logs go and the event loop are set on the command line only.
    """

    log_level: str = "INFO"
    """CRITICAL, ERROR, WARNING, INFO or DEBUG."""
    log_format: str = "text"
    """``text`` or ``json`` (one object a line)."""
    log_to_stdout: bool = True
    """Log to stdout (ignored when no other destination is set)."""
    log_file: str | None = None
    """Also log to this file (logrotate-safe); None: no file."""
    syslog_socket: str | None = None
    """Also log to syslog on this socket; None: no syslog."""
    control_socket: str | None = None
    """Path of the control socket; None or empty: the default path
    (:func:`aiobfd.paths.default_socket_path`); ``"none"``: no socket."""
    metrics_address: str | None = None
    """Address of the Prometheus endpoint; None: ``aiobfd.metrics.DEFAULT_METRICS_ADDRESS``."""
    metrics_port: int | None = None
    """Its port; None: ``aiobfd.metrics.DEFAULT_METRICS_PORT``; 0: no endpoint."""
    ttl_check: bool = True
    """RFC 5881 §5: drop packets that did not arrive with TTL / Hop Limit 255."""
    receive_holdoff_ms: int | None = None
    """Receive coalescing, 0 to 1000 ms; None: automatic; 0: read every packet at once."""
    event_loop: str = "auto"
    """``auto`` (uvloop when installed), ``asyncio`` or ``uvloop``."""
    hook_pass_env: tuple[str, ...] = ()
    """Variables of the daemon's environment passed on to hooks (never a secret's)."""
    hook_max_running: int | None = None
    """Hooks running at once over all peers; None: ``aiobfd.hooks.MAX_RUNNING``."""
    realtime_priority: int | None = None
    """Run the event loop's thread SCHED_FIFO at this priority, 1-99; None: no."""
    lock_memory: bool = False
    """Lock the process's memory (``mlockall``) at start."""
    drain_wait_ms: int = 5000
    """A drain (``aiobfdctl drain``, SIGUSR1): the wait between the routes'
    withdrawal and AdminDown, ms (0-3600000)."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the daemon runs from, whichever source gave it."""

    peers: tuple[PeerSpec, ...] = ()
    """The configured sessions."""
    daemon: DaemonSettings = field(default_factory=DaemonSettings)
    """Settings of the process."""
    dampening: DampeningSettings | None = None
    """Hooks dampening; None: off."""
    unsolicited: UnsolicitedConfig | None = None
    """RFC 9468 unsolicited sessions; None: off."""
    path: str | None = None
    """The configuration file read; None: the command line (nothing to reload)."""
    warnings: tuple[str, ...] = ()
    """What is worth telling the operator but does not make the settings unusable
    (a key file others may read), one line each."""
    secret_variables: frozenset[str] = frozenset()
    """Environment variables that hold authentication secrets: never passed to hooks."""
    routes: tuple[RouteSpec, ...] = ()
    """Kernel routes driven by the sessions (``[[routes]]``, :mod:`aiobfd.routes`)."""

    @property
    def source(self) -> str:
        """What the settings came from, for messages."""
        return self.path if self.path is not None else "command line"


@dataclass(frozen=True, slots=True)
class Overrides:
    """The command line's explicit options of the process, over the file's values.

    Each field is the :class:`DaemonSettings` field of the same name; None
    leaves the file's value (or the built-in one).  ``dampening`` turns
    dampening on with the built-in parameters, whatever ``[dampening]`` says.
    """

    log_level: str | None = None
    """``-l``, ``--log-level``."""
    log_format: str | None = None
    """``--log-format``."""
    log_to_stdout: bool | None = None
    """False with ``-o``, ``--no-log-to-stdout``."""
    log_file: str | None = None
    """``-n``, ``--log-file`` with ``-f``, ``--log-to-file``."""
    syslog_socket: str | None = None
    """``-y``, ``--log-sock`` with ``-s``, ``--log-to-syslog``."""
    control_socket: str | None = None
    """``--control-socket``."""
    metrics_address: str | None = None
    """``--metrics-address``."""
    metrics_port: int | None = None
    """``--metrics-port``."""
    ttl_check: bool | None = None
    """False with ``--no-ttl-check``."""
    receive_holdoff_ms: int | None = None
    """``--receive-holdoff``, in ms."""
    event_loop: str | None = None
    """``--event-loop``."""
    hook_pass_env: tuple[str, ...] | None = None
    """``--hook-pass-env`` (all of them, replacing the file's list)."""
    hook_max_running: int | None = None
    """``--hook-max-running``."""
    realtime_priority: int | None = None
    """``--realtime-priority``."""
    lock_memory: bool | None = None
    """True with ``--lock-memory``."""
    drain_wait_ms: int | None = None
    """``--drain-wait``, in ms."""
    dampening: bool = False
    """``--dampening``."""

    def apply(self, settings: Settings) -> Settings:
        """``settings`` with these options in place of its own values.

        Raises :class:`ConfigError` when a variable passed to hooks holds an
        authentication secret.
        """
        d = settings.daemon
        daemon = DaemonSettings(
            log_level=_given(self.log_level, d.log_level),
            log_format=_given(self.log_format, d.log_format),
            log_to_stdout=_given(self.log_to_stdout, d.log_to_stdout),
            log_file=_given(self.log_file, d.log_file),
            syslog_socket=_given(self.syslog_socket, d.syslog_socket),
            control_socket=_given(self.control_socket, d.control_socket),
            metrics_address=_given(self.metrics_address, d.metrics_address),
            metrics_port=_given(self.metrics_port, d.metrics_port),
            ttl_check=_given(self.ttl_check, d.ttl_check),
            receive_holdoff_ms=_given(self.receive_holdoff_ms, d.receive_holdoff_ms),
            event_loop=_given(self.event_loop, d.event_loop),
            hook_pass_env=_given(self.hook_pass_env, d.hook_pass_env),
            hook_max_running=_given(self.hook_max_running, d.hook_max_running),
            realtime_priority=_given(self.realtime_priority, d.realtime_priority),
            lock_memory=_given(self.lock_memory, d.lock_memory),
            drain_wait_ms=_given(self.drain_wait_ms, d.drain_wait_ms),
        )
        for name in daemon.hook_pass_env:
            if name in settings.secret_variables:
                where = (
                    "--hook-pass-env"
                    if self.hook_pass_env is not None or settings.path is None
                    else f"{settings.path}: daemon.hook_pass_env"
                )
                raise ConfigError(
                    f"{where}: {name} holds an authentication key (hooks never get a secret)"
                )
        dampening = DampeningSettings() if self.dampening else settings.dampening
        return replace(settings, daemon=daemon, dampening=dampening)


def _given(option: _T | None, value: _T) -> _T:
    return value if option is None else option
