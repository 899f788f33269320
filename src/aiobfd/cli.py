"""The ``aiobfd`` command line, compatible with the original aiobfd.

``aiobfd LOCAL REMOTE [REMOTE ...] -r MS -t MS -m N [-4|-6] [-p]`` and the
original logging options keep working; ``--config FILE`` runs from a TOML file
instead (see docs/configuration.md).  Bad input ends with one line on stderr
and exit status 2; SIGINT / SIGTERM end with AdminDown and status 0; SIGHUP
reloads the configuration file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import logging
import signal
import socket
import sys
from typing import Any

from . import __version__, core_build
from .argparsing import OneLineParser, whole_number
from .config import (
    ConfigError,
    Hooks,
    PeerSpec,
    UnsolicitedConfig,
    check_local_address,
    parse_prefixes,
    resolve,
    resolve_peers,
)
from .configfile import AUTH_TYPES, FileConfig, find_default_config, load_config
from .logs import LEVELS, setup_logging
from .protocol.auth import AuthConfig, AuthKey
from .protocol.constants import MAX_DETECT_MULT, MAX_INTERVAL_US, MAX_RECEIVE_HOLDOFF_MS, US_PER_MS
from .protocol.session import SessionConfig
from .secret_sources import load_secret_env, load_secret_file

log = logging.getLogger("aiobfd")

#: Largest interval in milliseconds that fits the 32-bit microsecond field.
MAX_INTERVAL_MS = MAX_INTERVAL_US // US_PER_MS


_interval = whole_number(1, MAX_INTERVAL_MS, " of milliseconds")
_multiplier = whole_number(1, MAX_DETECT_MULT)


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
        type=float,
        default=10.0,
        metavar="S",
        help="kill a hook after this many seconds (default 10)",
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
        type=whole_number(1, 100_000),
        default=100,
        metavar="N",
        help="at most N unsolicited sessions (default 100)",
    )
    uns.add_argument(
        "--unsolicited-rate",
        type=whole_number(1, 100_000),
        default=10,
        metavar="N",
        help="create at most N unsolicited sessions a second (default 10)",
    )
    uns.add_argument(
        "--unsolicited-down-timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="remove an unsolicited session down for S seconds (default 60)",
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
        f"wake-up (default: the shortest receive interval, at most {MAX_RECEIVE_HOLDOFF_MS}; "
        "0: read at once)",
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


def _cli_auth(args: argparse.Namespace) -> AuthConfig | None:
    if args.auth_type is None:
        if args.auth_key_id or args.auth_key_file or args.auth_key_env:
            raise ConfigError("--auth-key-* needs --auth-type")
        return None
    auth_type = AUTH_TYPES[args.auth_type]
    sources = [("file", p) for p in args.auth_key_file] + [("env", n) for n in args.auth_key_env]
    ids = args.auth_key_id or [1]
    if not sources:
        raise ConfigError("--auth-type needs --auth-key-file PATH or --auth-key-env NAME")
    if len(ids) != len(sources):
        raise ConfigError("give one --auth-key-id per --auth-key-file / --auth-key-env")
    keys = []
    for key_id, (kind, where) in zip(ids, sources, strict=True):
        secret = (
            load_secret_file(where, auth_type)
            if kind == "file"
            else load_secret_env(where, auth_type)
        )
        keys.append(AuthKey(key_id, secret))
    transmit = args.auth_transmit_key_id if args.auth_transmit_key_id is not None else ids[0]
    return AuthConfig(auth_type, tuple(keys), transmit)


def _cli_peers(args: argparse.Namespace) -> list[PeerSpec]:
    session = SessionConfig(
        desired_min_tx_us=args.tx_interval * US_PER_MS,
        required_min_rx_us=args.rx_interval * US_PER_MS,
        detect_mult=args.detect_mult,
        passive=args.passive,
        auth=_cli_auth(args),
        min_ttl=args.min_ttl,
        multihop=args.multihop,
    )
    hooks = Hooks(args.on_up, args.on_down, args.on_change, args.hook_timeout)
    specs = resolve_peers(args.local, args.remote, session, args.family)
    return [dataclasses.replace(spec, hooks=hooks) for spec in specs]


def _cli_unsolicited(args: argparse.Namespace) -> UnsolicitedConfig | None:
    if not args.unsolicited:
        return None
    if args.unsolicited_down_timeout <= 0:
        raise ConfigError("--unsolicited-down-timeout must be positive")
    session = SessionConfig(
        desired_min_tx_us=args.tx_interval * US_PER_MS,
        required_min_rx_us=args.rx_interval * US_PER_MS,
        detect_mult=args.detect_mult,
        passive=True,
        auth=_cli_auth(args),
        min_ttl=args.min_ttl,
    )
    return UnsolicitedConfig(
        prefixes=parse_prefixes(args.unsolicited),
        listen=(args.local,),
        session=session,
        multihop=args.multihop,
        max_sessions=args.unsolicited_max,
        rate_per_s=float(args.unsolicited_rate),
        burst=max(1, args.unsolicited_rate * 2),
        down_timeout_s=args.unsolicited_down_timeout,
    )


def parse(
    argv: list[str] | None = None,
) -> tuple[argparse.Namespace, list[PeerSpec], FileConfig | None]:
    """Parse and check the command line (and file); exits with status 2 on any error."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.hook_timeout <= 0:
        parser.error("--hook-timeout must be positive")
    path = args.config
    if path is None and args.local is None:
        path = find_default_config()
        if path is None:
            parser.error("give LOCAL and REMOTE, or --config FILE")
    try:
        if path is not None:
            if args.local is not None:
                raise ConfigError("give either LOCAL REMOTE... or --config, not both")
            file_config = load_config(path)
            return args, list(file_config.peers), file_config
        if not args.remote and not args.unsolicited:
            raise ConfigError("the following arguments are required: remote")
        args.unsolicited_config = _cli_unsolicited(args)
        if args.unsolicited_config is not None:
            check_local_address(resolve(args.local, args.family)[0])
        return args, _cli_peers(args) if args.remote else [], None
    except (ConfigError, ValueError) as exc:
        parser.error(str(exc))


def _setting(
    args: argparse.Namespace, file_config: FileConfig | None, name: str, default: Any
) -> Any:
    """A command-line option, else the file's [daemon] value, else the default."""
    value = getattr(args, name, None)
    if value is not None:
        return value
    if file_config is not None and name in file_config.daemon:
        return file_config.daemon[name]
    return default


async def run(
    args: argparse.Namespace, peers: list[PeerSpec], file_config: FileConfig | None = None
) -> int:
    """Run the daemon until SIGINT or SIGTERM."""
    from .control import ControlError, ControlServer, default_socket_path
    from .engine import Daemon
    from .hooks import Dampening, HookRunner
    from .metrics import DEFAULT_METRICS_ADDRESS, DEFAULT_METRICS_PORT, start_metrics_server
    from .systemd import Notifier

    ttl_check = not args.no_ttl_check and (
        file_config is None or bool(file_config.daemon.get("ttl_check", True))
    )
    unsolicited = getattr(args, "unsolicited_config", None)
    if unsolicited is None and file_config is not None:
        unsolicited = file_config.unsolicited
    holdoff_ms = _setting(args, file_config, "receive_holdoff_ms", None)
    daemon = Daemon(
        peers,
        ttl_check=ttl_check,
        unsolicited=unsolicited,
        rx_holdoff_us=None if holdoff_ms is None else holdoff_ms * 1000,
    )
    try:
        await daemon.start()
    except OSError as exc:
        print(f"aiobfd: error: cannot open sockets: {exc}", file=sys.stderr)
        return 2

    dampening = None
    if args.dampening:
        dampening = Dampening()
    elif file_config is not None and file_config.dampening is not None:
        dampening = Dampening(**file_config.dampening)
    hooks = HookRunner(daemon, lambda peer: peer.spec.hooks, dampening=dampening)

    loaded = [file_config]
    """The file as last applied, to tell which settings a reload cannot change."""

    def reload() -> dict[str, Any]:
        current = loaded[0]
        if current is None:
            raise ControlError("no configuration file to reload (started without --config)")
        try:
            new = load_config(current.path)
        except ConfigError as exc:
            log.error("reload refused, running configuration kept: %s", exc)
            raise ControlError(f"reload refused, running configuration kept: {exc}") from None
        try:
            summary = daemon.apply_config(list(new.peers))
        except OSError as exc:
            log.error("reload incomplete: %s", exc)
            raise ControlError(f"reload incomplete: {exc}") from None
        loaded[0] = new
        log.info(
            "configuration reloaded: %s",
            ", ".join(f"{len(v)} {k}" for k, v in summary.items()),
        )
        for table in ("daemon", "dampening"):
            if getattr(new, table) != getattr(current, table):
                log.warning("reload: changes in [%s] take effect at the next restart", table)
        return summary

    # Signals first: a SIGHUP or SIGTERM right after start must not kill us.
    loop = asyncio.get_running_loop()
    # Start-up objects live as long as the process: keep them out of the
    # collector's way so its pauses stay short on the packet path.
    gc.freeze()
    notifier = Notifier.from_environment()

    def stop() -> None:
        # systemd: STOPPING=1 as the stop begins, before the AdminDown burst.
        notifier.stopping()
        daemon.request_stop()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)

    def on_sighup() -> None:
        if file_config is None:
            log.warning("SIGHUP ignored: no configuration file (started without --config)")
            return
        with contextlib.suppress(ControlError):
            reload()

    loop.add_signal_handler(signal.SIGHUP, on_sighup)

    control: ControlServer | None = None
    path = _setting(args, file_config, "control_socket", None) or default_socket_path()
    if path != "none":
        control = ControlServer(daemon, path, reload if file_config is not None else None)
        try:
            await control.start()
        except OSError as exc:
            daemon.close()
            print(f"aiobfd: error: control socket: {exc}", file=sys.stderr)
            return 2

    metrics = None
    port = _setting(args, file_config, "metrics_port", DEFAULT_METRICS_PORT)
    if port:
        address = _setting(args, file_config, "metrics_address", DEFAULT_METRICS_ADDRESS)
        try:
            metrics = await start_metrics_server(daemon, address, port)
        except OSError as exc:
            daemon.close()
            if control is not None:
                await control.close()
            print(f"aiobfd: error: metrics endpoint {address}:{port}: {exc}", file=sys.stderr)
            return 2

    notifier.ready(f"{len(peers)} session(s)")
    log.info(
        "aiobfd %s (core: %s) running %d session(s)%s%s",
        __version__,
        core_build(),
        len(peers),
        f", control socket {path}" if control else "",
        f", metrics on {metrics.url}" if metrics else "",
    )
    try:
        await daemon.serve_forever()
    finally:
        notifier.stopping()
        await hooks.close()
        if metrics is not None:
            await metrics.close()
        if control is not None:
            await control.close()
        daemon.close()
        notifier.close()
    log.info("aiobfd stopped")
    return 0


def raise_file_limit() -> None:
    """Three sockets a session: lift the soft descriptor limit to the hard one."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def run_loop(choice: str, main_coro: Any) -> int:
    """Run ``main_coro`` on the chosen event loop (uvloop when asked or available)."""
    if choice != "asyncio":
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                main_coro.close()
                print(
                    "aiobfd: error: --event-loop uvloop: uvloop is not installed "
                    "(pip install 'aiobfd[uvloop]')",
                    file=sys.stderr,
                )
                return 2
        else:
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                return int(runner.run(main_coro))
    return int(asyncio.run(main_coro))


def main(argv: list[str] | None = None) -> int:
    args, peers, file_config = parse(argv)
    raise_file_limit()
    if args.check_config:
        source = file_config.path if file_config else "command line"
        print(f"{source}: configuration valid, {len(peers)} peer(s)")
        return 0
    try:
        setup_logging(
            level=_setting(args, file_config, "log_level", "INFO").upper(),
            to_stdout=not args.no_log_to_stdout,
            log_file=args.log_file if args.log_to_file else None,
            syslog_socket=args.log_sock if args.log_to_syslog else None,
            log_format=_setting(args, file_config, "log_format", "text"),
        )
    except OSError as exc:
        print(f"aiobfd: error: cannot set up logging: {exc}", file=sys.stderr)
        return 2
    try:
        return run_loop(args.event_loop, run(args, peers, file_config))
    except KeyboardInterrupt:
        return 0
