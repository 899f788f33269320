"""The ``aiobfd`` command line, compatible with the original aiobfd.

``aiobfd LOCAL REMOTE [REMOTE ...] -r MS -t MS -m N [-4|-6] [-p]`` and the
original logging options keep working; ``--config FILE`` runs from a TOML file
instead (see docs/configuration.md).  This module parses the arguments into
the settings model (:class:`aiobfd.config.Settings`): the session options
into a :class:`SessionSettings`, the options of the process into
:class:`Overrides` that win over the file's ``[daemon]``.  Then
:func:`aiobfd.app.run` runs them.  Bad input ends with one line on stderr and
exit status 2; SIGINT / SIGTERM end with AdminDown and status 0; SIGHUP
reloads the configuration file.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import socket
import sys
from collections.abc import Callable
from typing import Any

from . import __version__, core_build
from .argparsing import OneLineParser, whole_number
from .config import (
    AUTH_TYPES,
    MAX_DOWN_TIMEOUT_S,
    MAX_HOOK_TIMEOUT_S,
    MAX_HOOKS_RUNNING,
    MAX_INTERVAL_MS,
    MAX_UNSOLICITED,
    REALTIME_PRIORITIES,
    ConfigError,
    KeySource,
    Overrides,
    SessionSettings,
    SettingError,
    Settings,
    auth_config,
    bind_peer,
    check_echo,
    check_echo_peer,
    find_default_config,
    load_config,
    positive_number,
    resolve_peers,
    unsolicited_config,
    variable_name_error,
)
from .logs import LEVELS
from .protocol.auth import AuthConfig
from .protocol.constants import MAX_DETECT_MULT, MAX_RECEIVE_HOLDOFF_MS

_interval = whole_number(1, MAX_INTERVAL_MS, " of milliseconds")
_echo_rx_interval = whole_number(0, MAX_INTERVAL_MS, " of milliseconds")
_multiplier = whole_number(1, MAX_DETECT_MULT)


def seconds(high: float) -> Callable[[str], float]:
    """An argparse ``type``: a finite number of seconds above 0, at most ``high``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
        number = positive_number(value, high)
        if number is None:
            raise argparse.ArgumentTypeError(
                f"{text!r} is out of range: more than 0, at most {high:g} seconds"
            )
        return number

    return parse


def variable_name(text: str) -> str:
    """An argparse ``type``: a name an environment variable can have."""
    problem = variable_name_error(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="aiobfd",
        description="Maintain BFD sessions (RFC 5880/5881) with one or more remote systems.",
        epilog="Either LOCAL REMOTE... or --config FILE (default /etc/aiobfd/aiobfd.toml when present).",
    )
    add = parser.add_argument
    add("local", nargs="?", help="local IP address or hostname")
    add("remote", nargs="*", help="remote address(es) or hostname(s); link-local as fe80::1%%eth0")
    family = parser.add_mutually_exclusive_group()
    family.add_argument(
        "-4",
        "--ipv4",
        action="store_const",
        dest="family",
        default=socket.AF_UNSPEC,
        const=socket.AF_INET,
        help="force IPv4",
    )
    family.add_argument(
        "-6",
        "--ipv6",
        action="store_const",
        dest="family",
        default=socket.AF_UNSPEC,
        const=socket.AF_INET6,
        help="force IPv6",
    )
    add(
        "-r",
        "--rx-interval",
        default=1000,
        type=_interval,
        metavar="MS",
        help="required minimum RX interval in ms (default 1000)",
    )
    add(
        "-t",
        "--tx-interval",
        default=1000,
        type=_interval,
        metavar="MS",
        help="desired minimum TX interval in ms (default 1000)",
    )
    add(
        "-m",
        "--detect-mult",
        default=3,
        type=_multiplier,
        metavar="N",
        help="detection multiplier (default 3)",
    )
    add(
        "-p", "--passive", action="store_true", help="take a passive role in session initialization"
    )
    add(
        "--multihop",
        action="store_true",
        help="multihop sessions (RFC 5883: UDP 4784, for peers behind routers)",
    )

    logging_ = parser.add_argument_group("logging")
    logging_.add_argument(
        "-l",
        "--log-level",
        default=None,
        choices=LEVELS,
        type=str.upper,
        help="logging level (default INFO)",
    )
    logging_.add_argument(
        "-o",
        "--no-log-to-stdout",
        action="store_true",
        help="disable logging to stdout; ignored if no other logging is selected",
    )
    logging_.add_argument(
        "-f", "--log-to-file", action="store_true", help="enable logging to a file"
    )
    logging_.add_argument(
        "-n",
        "--log-file",
        default="/var/log/aiobfd.log",
        help="file to log to, with -f (default /var/log/aiobfd.log)",
    )
    logging_.add_argument(
        "-s", "--log-to-syslog", action="store_true", help="enable logging to syslog"
    )
    logging_.add_argument(
        "-y", "--log-sock", default="/dev/log", help="syslog socket, with -s (default /dev/log)"
    )
    logging_.add_argument(
        "--log-format",
        choices=["text", "json"],
        default=None,
        help="log line format (default text)",
    )

    sec = parser.add_argument_group("security (RFC 5881 §5, RFC 5880 §6.7)")
    sec.add_argument(
        "--no-ttl-check",
        action="store_true",
        help="accept packets whatever their received TTL / hop limit",
    )
    sec.add_argument(
        "--min-ttl",
        type=whole_number(1, 255),
        default=None,
        metavar="N",
        help="lowest received TTL accepted: single hop with authentication (default 255), "
        "multihop (default 254)",
    )
    sec.add_argument(
        "--auth-type", choices=list(AUTH_TYPES), default=None, help="authentication type"
    )
    sec.add_argument(
        "--auth-key-id",
        type=whole_number(0, 255),
        action="append",
        default=[],
        metavar="N",
        help="key id; repeat with --auth-key-file/--auth-key-env for rotation",
    )
    sec.add_argument(
        "--auth-key-file",
        action="append",
        default=[],
        metavar="PATH",
        help="file holding the secret of the key id in the same position",
    )
    sec.add_argument(
        "--auth-key-env",
        action="append",
        default=[],
        metavar="NAME",
        help="environment variable holding a secret (instead of a file)",
    )
    sec.add_argument(
        "--auth-transmit-key-id",
        type=whole_number(0, 255),
        default=None,
        metavar="N",
        help="key that signs what we send (default: the first)",
    )

    hooks = parser.add_argument_group("state-change hooks")
    hooks.add_argument(
        "--on-up", default="", metavar="CMD", help="shell command run when a session comes Up"
    )
    hooks.add_argument(
        "--on-down", default="", metavar="CMD", help="shell command run when a session leaves Up"
    )
    hooks.add_argument(
        "--on-change", default="", metavar="CMD", help="shell command run on every change"
    )
    hooks.add_argument(
        "--hook-timeout",
        type=seconds(MAX_HOOK_TIMEOUT_S),
        default=10.0,
        metavar="S",
        help=f"kill a hook after this many seconds (default 10, at most {MAX_HOOK_TIMEOUT_S:g})",
    )
    hooks.add_argument(
        "--hook-pass-env",
        type=variable_name,
        action="append",
        default=None,
        metavar="NAME",
        help="pass this variable of the daemon's environment on to hooks (repeatable); "
        "hooks get only BFD_*, PATH, LANG, LC_ALL and TZ otherwise",
    )
    hooks.add_argument(
        "--hook-max-running",
        type=whole_number(1, MAX_HOOKS_RUNNING),
        default=None,
        metavar="N",
        help="at most N hooks run at once over all peers (default 8)",
    )
    hooks.add_argument(
        "--dampening", action="store_true", help="hold back Up from hooks for flapping sessions"
    )

    uns = parser.add_argument_group("unsolicited sessions (RFC 9468)")
    uns.add_argument(
        "--unsolicited",
        action="append",
        default=[],
        metavar="PREFIX",
        help="accept sessions started by unknown peers in PREFIX (repeatable); "
        "they are passive, with the timers above, on LOCAL",
    )
    uns.add_argument(
        "--unsolicited-max",
        type=whole_number(1, MAX_UNSOLICITED),
        default=100,
        metavar="N",
        help="at most N unsolicited sessions (default 100)",
    )
    uns.add_argument(
        "--unsolicited-rate",
        type=whole_number(1, MAX_UNSOLICITED),
        default=10,
        metavar="N",
        help="create at most N unsolicited sessions a second (default 10)",
    )
    uns.add_argument(
        "--unsolicited-down-timeout",
        type=seconds(MAX_DOWN_TIMEOUT_S),
        default=60.0,
        metavar="S",
        help="remove an unsolicited session down for S seconds "
        f"(default 60, at most {MAX_DOWN_TIMEOUT_S:g})",
    )

    echo = parser.add_argument_group("echo (RFC 5880 §6.4 with a BFD peer, RFC 9747 unaffiliated)")
    echo.add_argument(
        "--unaffiliated-echo",
        action="store_true",
        help="each REMOTE is a gateway that runs no BFD and forwards our echo packets "
        "back (needs CAP_NET_RAW; IPv4: accept_local)",
    )
    echo.add_argument(
        "--echo-interval",
        type=_interval,
        default=None,
        metavar="MS",
        help="echo transmit interval in ms once Up: with --unaffiliated-echo (default: the "
        "TX interval), or our echo toward a BFD peer that accepts it (needs CAP_NET_RAW; "
        "IPv4: accept_local; default: none)",
    )
    echo.add_argument(
        "--echo-rx-interval",
        type=_echo_rx_interval,
        default=0,
        metavar="MS",
        help="advertise Required Min Echo RX Interval MS: loop the peer's echo packets "
        "back at most this fast (IPv4; needs CAP_NET_RAW; default 0: not willing)",
    )

    where = parser.add_argument_group("interfaces, VRFs and network namespaces")
    where.add_argument(
        "--interface",
        default="",
        metavar="NAME",
        help="bind the sessions to this interface (SO_BINDTODEVICE): a packet "
        "that arrives on another is dropped",
    )
    where.add_argument(
        "--vrf", default="", metavar="NAME", help="run the sessions in this VRF (its device)"
    )
    where.add_argument(
        "--netns",
        default="",
        metavar="NAME",
        help="run the sessions in this network namespace (/run/netns/NAME; needs CAP_SYS_ADMIN)",
    )

    ops = parser.add_argument_group("operation")
    ops.add_argument("--config", metavar="FILE", default=None, help="TOML configuration file")
    ops.add_argument(
        "--event-loop",
        choices=["auto", "asyncio", "uvloop"],
        default="auto",
        help="event loop: uvloop when installed (auto, the default), or asyncio",
    )
    ops.add_argument(
        "--receive-holdoff",
        dest="receive_holdoff_ms",
        type=whole_number(0, MAX_RECEIVE_HOLDOFF_MS, " of milliseconds"),
        default=None,
        metavar="MS",
        help="longest a packet of an established session may wait for the daemon's next "
        f"wake-up, at most {MAX_RECEIVE_HOLDOFF_MS} (default: the shortest receive interval, "
        "at most 5; 0: read at once)",
    )
    ops.add_argument(
        "--check-config",
        action="store_true",
        help="check the configuration and exit (0: valid, 2: errors)",
    )
    ops.add_argument(
        "--control-socket",
        metavar="PATH",
        default=None,
        help="Unix socket for aiobfdctl ('none' disables it)",
    )
    low, high = REALTIME_PRIORITIES
    ops.add_argument(
        "--realtime-priority",
        type=whole_number(low, high),
        default=None,
        metavar="N",
        help=f"run the event loop SCHED_FIFO at priority N ({low}-{high}); hooks and "
        "worker threads stay SCHED_OTHER",
    )
    ops.add_argument(
        "--lock-memory",
        action="store_true",
        default=None,
        help="lock the daemon's memory (mlockall) so that it is never paged out",
    )
    ops.add_argument(
        "--drain-wait",
        dest="drain_wait_ms",
        type=whole_number(0, 3_600_000, " of milliseconds"),
        default=None,
        metavar="MS",
        help="a drain (aiobfdctl drain, SIGUSR1) withdraws the routes, waits this long, "
        "then says AdminDown (default 5000)",
    )
    add_metrics_options(ops)
    add("--version", action="version", version=f"aiobfd {__version__} (core: {core_build()})")
    return parser


def add_metrics_options(group: Any) -> None:
    """The Prometheus options (see :mod:`aiobfd.metrics`)."""
    from .metrics import DEFAULT_METRICS_ADDRESS, DEFAULT_METRICS_PORT

    group.add_argument(
        "--metrics-address",
        default=None,
        metavar="ADDR",
        help=f"address of the /metrics endpoint (default {DEFAULT_METRICS_ADDRESS})",
    )
    group.add_argument(
        "--metrics-port",
        type=whole_number(0, 65535),
        default=None,
        metavar="PORT",
        help=f"port of the /metrics endpoint (default {DEFAULT_METRICS_PORT}; 0: off)",
    )


def _auth(args: argparse.Namespace, warnings: list[str]) -> AuthConfig | None:
    """--auth-type with its keys, read from --auth-key-file / --auth-key-env."""
    if args.auth_type is None:
        if args.auth_key_id or args.auth_key_file or args.auth_key_env:
            raise ConfigError("--auth-key-* needs --auth-type")
        return None
    places = [(path, None) for path in args.auth_key_file]
    places += [(None, name) for name in args.auth_key_env]
    ids = args.auth_key_id or [1]
    if not places:
        raise ConfigError("--auth-type needs --auth-key-file PATH or --auth-key-env NAME")
    if len(ids) != len(places):
        raise ConfigError("give one --auth-key-id per --auth-key-file / --auth-key-env")
    sources = [
        KeySource(key_id, file=path, env=name)
        for key_id, (path, name) in zip(ids, places, strict=True)
    ]
    return auth_config(args.auth_type, sources, args.auth_transmit_key_id, warnings=warnings)


def _session(args: argparse.Namespace, warnings: list[str]) -> SessionSettings:
    """The session options, as a file's [defaults] would give them."""
    return SessionSettings(
        rx_interval_ms=args.rx_interval,
        tx_interval_ms=args.tx_interval,
        detect_mult=args.detect_mult,
        passive=args.passive,
        min_ttl=args.min_ttl,
        multihop=args.multihop,
        auth=_auth(args, warnings),
        on_up=args.on_up,
        on_down=args.on_down,
        on_change=args.on_change,
        hook_timeout_s=args.hook_timeout,
        unaffiliated_echo=args.unaffiliated_echo,
        echo_interval_ms=args.echo_interval,
        echo_rx_interval_ms=args.echo_rx_interval,
    )


def _command_line(args: argparse.Namespace) -> Settings:
    """LOCAL REMOTE... (and --unsolicited): one peer per REMOTE, the same settings each."""
    if not args.remote and not args.unsolicited:
        raise ConfigError("the following arguments are required: remote")
    warnings: list[str] = []
    session = _session(args, warnings)
    if args.echo_rx_interval and args.unaffiliated_echo:
        raise ConfigError("--echo-rx-interval is for Control sessions, not --unaffiliated-echo")
    if args.unaffiliated_echo and args.unsolicited:
        raise ConfigError("--unaffiliated-echo and --unsolicited cannot be combined")
    check_echo(session)
    unsolicited = None
    if args.unsolicited:
        unsolicited = unsolicited_config(
            session,
            args.unsolicited,
            (args.local,),
            multihop=args.multihop,
            max_sessions=args.unsolicited_max,
            rate_per_s=float(args.unsolicited_rate),
            burst=max(1, args.unsolicited_rate * 2),
            down_timeout_s=args.unsolicited_down_timeout,
            family=args.family,
        )
    peers = []
    if args.remote:
        elsewhere = bool(args.vrf or args.netns)
        specs = resolve_peers(
            args.local,
            args.remote,
            session.session_config(),
            args.family,
            check_local=not elsewhere,
        )
        echo = session.echo_config()
        peers = [dataclasses.replace(spec, hooks=session.hooks, echo=echo) for spec in specs]
        for spec in peers:
            check_echo_peer(spec)
        try:
            peers = [
                bind_peer(spec, interface=args.interface, vrf=args.vrf, netns=args.netns)
                for spec in peers
            ]
        except SettingError as exc:
            raise ConfigError(f"--{exc.key}: {exc.message}") from None
    return Settings(
        tuple(peers),
        unsolicited=unsolicited,
        warnings=tuple(dict.fromkeys(warnings)),
        secret_variables=frozenset(args.auth_key_env),
    )


def _overrides(args: argparse.Namespace) -> Overrides:
    """The options of the process that were given (None: not given)."""
    return Overrides(
        log_level=args.log_level,
        log_format=args.log_format,
        log_to_stdout=False if args.no_log_to_stdout else None,
        log_file=args.log_file if args.log_to_file else None,
        syslog_socket=args.log_sock if args.log_to_syslog else None,
        control_socket=args.control_socket,
        metrics_address=args.metrics_address,
        metrics_port=args.metrics_port,
        ttl_check=False if args.no_ttl_check else None,
        receive_holdoff_ms=args.receive_holdoff_ms,
        event_loop=args.event_loop,
        hook_pass_env=None if args.hook_pass_env is None else tuple(args.hook_pass_env),
        hook_max_running=args.hook_max_running,
        realtime_priority=args.realtime_priority,
        lock_memory=args.lock_memory,
        drain_wait_ms=args.drain_wait_ms,
        dampening=args.dampening,
    )


def from_file(path: str, overrides: Overrides) -> Settings:
    """The file's settings under the command line's options: at start and each reload."""
    return overrides.apply(load_config(path))


def parse(argv: list[str] | None = None) -> tuple[argparse.Namespace, Settings, Overrides]:
    """Parse and check the command line (and file); exits with status 2 on any error."""
    parser = build_parser()
    args = parser.parse_args(argv)
    path = args.config
    if path is None and args.local is None:
        path = find_default_config()
        if path is None:
            parser.error("give LOCAL and REMOTE, or --config FILE")
    overrides = _overrides(args)
    try:
        if path is None:
            return args, overrides.apply(_command_line(args)), overrides
        if args.local is not None:
            raise ConfigError("give either LOCAL REMOTE... or --config, not both")
        return args, from_file(path, overrides), overrides
    except (ConfigError, ValueError) as exc:
        parser.error(str(exc))


def main(argv: list[str] | None = None) -> int:
    args, settings, overrides = parse(argv)
    if args.check_config:
        for warning in settings.warnings:
            print(f"aiobfd: warning: {warning}", file=sys.stderr)
        print(f"{settings.source}: configuration valid, {len(settings.peers)} peer(s)")
        return 0
    from .app import run

    path = settings.path
    return run(settings, None if path is None else functools.partial(from_file, path, overrides))
