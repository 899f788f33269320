"""The ``aiobfd`` command line, compatible with the original aiobfd.

``aiobfd LOCAL REMOTE [REMOTE ...] -r MS -t MS -m N [-4|-6] [-p]`` and the
original logging options keep working.  Bad input ends with one line on
stderr and exit status 2; SIGINT / SIGTERM end with AdminDown and status 0.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import socket
import sys
from typing import NoReturn

from . import __version__
from .config import ConfigError, PeerSpec, resolve_peers
from .constants import MAX_DETECT_MULT, MAX_INTERVAL_US, US_PER_MS
from .logs import LEVELS, setup_logging
from .session import SessionConfig

log = logging.getLogger("aiobfd")

#: Largest interval in milliseconds that fits the 32-bit microsecond field.
MAX_INTERVAL_MS = MAX_INTERVAL_US // US_PER_MS


class _Parser(argparse.ArgumentParser):
    """argparse that reports an error in one line, without the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _interval(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a whole number of milliseconds"
        ) from None
    if not 1 <= value <= MAX_INTERVAL_MS:
        raise argparse.ArgumentTypeError(
            f"{value} ms is out of range: an interval is 1 to {MAX_INTERVAL_MS} ms"
        )
    return value


def _multiplier(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= value <= MAX_DETECT_MULT:
        raise argparse.ArgumentTypeError(f"{value} is out of range: 1 to {MAX_DETECT_MULT}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="aiobfd",
        description="Maintain BFD sessions (RFC 5880/5881) with one or more remote systems.",
    )
    parser.add_argument("local", help="local IP address or hostname")
    parser.add_argument(
        "remote",
        nargs="+",
        help="remote IP address(es) or hostname(s); link-local as fe80::1%%eth0",
    )
    family = parser.add_mutually_exclusive_group()
    family.add_argument(
        "-4",
        "--ipv4",
        action="store_const",
        dest="family",
        default=socket.AF_UNSPEC,
        const=socket.AF_INET,
        help="force IPv4 connectivity",
    )
    family.add_argument(
        "-6",
        "--ipv6",
        action="store_const",
        dest="family",
        default=socket.AF_UNSPEC,
        const=socket.AF_INET6,
        help="force IPv6 connectivity",
    )
    parser.add_argument(
        "-r",
        "--rx-interval",
        default=1000,
        type=_interval,
        metavar="MS",
        help="required minimum RX interval in ms (default 1000)",
    )
    parser.add_argument(
        "-t",
        "--tx-interval",
        default=1000,
        type=_interval,
        metavar="MS",
        help="desired minimum TX interval in ms (default 1000)",
    )
    parser.add_argument(
        "-m",
        "--detect-mult",
        default=3,
        type=_multiplier,
        metavar="N",
        help="detection multiplier (default 3)",
    )
    parser.add_argument(
        "-p", "--passive", action="store_true", help="take a passive role in session initialization"
    )
    parser.add_argument(
        "-l",
        "--log-level",
        default="INFO",
        choices=LEVELS,
        type=str.upper,
        help="logging level (default INFO)",
    )
    parser.add_argument(
        "-o",
        "--no-log-to-stdout",
        action="store_true",
        help="disable logging to stdout; ignored if no other logging is selected",
    )
    parser.add_argument("-f", "--log-to-file", action="store_true", help="enable logging to a file")
    parser.add_argument(
        "-n",
        "--log-file",
        default="/var/log/aiobfd.log",
        help="path to log to, with --log-to-file (default /var/log/aiobfd.log)",
    )
    parser.add_argument(
        "-s", "--log-to-syslog", action="store_true", help="enable logging to syslog"
    )
    parser.add_argument(
        "-y",
        "--log-sock",
        default="/dev/log",
        help="syslog socket, with --log-to-syslog (default /dev/log)",
    )
    parser.add_argument(
        "--log-format",
        choices=["text", "json"],
        default=None,
        help="log line format (default: text on a terminal, else text)",
    )
    parser.add_argument(
        "--control-socket",
        metavar="PATH",
        default=None,
        help="Unix socket for aiobfdctl ('none' disables it)",
    )
    parser.add_argument("--version", action="version", version=f"aiobfd {__version__}")
    return parser


def parse(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[PeerSpec]]:
    """Parse and check the command line; exits with status 2 on any error."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        session = SessionConfig(
            desired_min_tx_us=args.tx_interval * US_PER_MS,
            required_min_rx_us=args.rx_interval * US_PER_MS,
            detect_mult=args.detect_mult,
            passive=args.passive,
        )
        peers = resolve_peers(args.local, args.remote, session, args.family)
    except (ConfigError, ValueError) as exc:
        parser.error(str(exc))
    return args, peers


async def run(args: argparse.Namespace, peers: list[PeerSpec]) -> int:
    """Run the daemon until SIGINT or SIGTERM."""
    from .control import ControlServer, default_socket_path
    from .daemon import Daemon

    daemon = Daemon(peers)
    try:
        await daemon.start()
    except OSError as exc:
        print(f"aiobfd: error: cannot open sockets: {exc}", file=sys.stderr)
        return 2
    control: ControlServer | None = None
    path = args.control_socket or default_socket_path()
    if path != "none":
        control = ControlServer(daemon, path)
        try:
            await control.start()
        except OSError as exc:
            daemon.close()
            print(f"aiobfd: error: control socket: {exc}", file=sys.stderr)
            return 2
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, daemon.request_stop)
    log.info(
        "aiobfd %s running %d session(s)%s",
        __version__,
        len(peers),
        f", control socket {path}" if control else "",
    )
    try:
        await daemon.serve_forever()
    finally:
        if control is not None:
            await control.close()
        daemon.close()
    log.info("aiobfd stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    args, peers = parse(argv)
    try:
        setup_logging(
            level=args.log_level,
            to_stdout=not args.no_log_to_stdout,
            log_file=args.log_file if args.log_to_file else None,
            syslog_socket=args.log_sock if args.log_to_syslog else None,
            log_format=args.log_format or "text",
        )
    except OSError as exc:
        print(f"aiobfd: error: cannot set up logging: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(run(args, peers))
    except KeyboardInterrupt:
        return 0
