"""``aiobfdctl``: show the daemon's sessions over its control socket.

``aiobfdctl show sessions`` prints one line per session, in the way of FRR's
``show bfd peers brief``; ``aiobfdctl show session PEER`` prints every detail
with counters; ``--json`` prints the daemon's answer as JSON.  Exit status 1
when the daemon cannot be reached or the peer is unknown, 2 on bad usage.  The
socket client (:func:`request`, :func:`watch`) is :mod:`aiobfd.client`.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from . import __version__
from .argparsing import OneLineParser
from .client import ClientError, request, watch
from .paths import default_socket_path


def _fmt_ms(value: float) -> str:
    return f"{value:g}"


def _uptime(info: dict[str, Any]) -> str:
    secs = info.get("uptime_s")
    if secs is None:
        return "-"
    secs = int(secs)
    days, rest = divmod(secs, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h{minutes:02d}m"
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}"


BRIEF_COLUMNS = (
    (
        "Peer",
        lambda i: (
            i["peer"]
            + (" (mh)" if i.get("multihop") else "")
            + (" (echo)" if i.get("mode") == "unaffiliated_echo" else "")
            + (" *" if i.get("dynamic") else "")
            + (" +" if i.get("runtime") else "")
        ),
    ),
    ("Local", lambda i: i["local"]),
    ("State", lambda i: i["state"]),
    ("Uptime", _uptime),
    ("Diag L/R", lambda i: f"{i['local_diag']}/{i['remote_diag']}"),
    ("TX ms", lambda i: _fmt_ms(i["tx_interval_ms"])),
    ("RX ms", lambda i: _fmt_ms(i["rx_interval_ms"])),
    ("Detect ms", lambda i: _fmt_ms(i["detect_time_ms"])),
    ("Pkts in", lambda i: str(i["counters"]["packets_in"])),
    ("Pkts out", lambda i: str(i["counters"]["packets_out"])),
)


def format_brief(sessions: list[dict[str, Any]]) -> str:
    rows = [[name for name, _ in BRIEF_COLUMNS]]
    rows += [[get(s) for _, get in BRIEF_COLUMNS] for s in sessions]
    widths = [max(len(r[c]) for r in rows) for c in range(len(BRIEF_COLUMNS))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows
    ]
    lines.append(f"{len(sessions)} session(s)")
    if any(s.get("dynamic") for s in sessions):
        lines.append("* dynamic (unsolicited, RFC 9468)")
    if any(s.get("runtime") for s in sessions):
        lines.append("+ changed at run time with aiobfdctl (a reload restores the file)")
    return "\n".join(lines)


def format_detail(info: dict[str, Any]) -> str:
    c = info["counters"]
    bound = [
        f"{k} {info[k]}"
        for k in ("interface", "vrf", "netns")
        if info.get(k) and not (k == "interface" and "%" in info["peer"])
    ]
    lines = [
        f"peer {info['peer']} local-address {info['local']}" + "".join(f" {b}" for b in bound),
        f"  State: {info['state']} (remote {info['remote_state']})"
        + (f", up for {_uptime(info)}" if info.get("uptime_s") is not None else ""),
        f"  Diagnostics: local {info['local_diag']} ({info['local_diag_name']}),"
        f" remote {info['remote_diag']} ({info['remote_diag_name']})",
        f"  Discriminators: local {info['local_discr']}, remote {info['remote_discr']}",
        (
            "  Unaffiliated echo (RFC 9747) through the gateway"
            if info.get("mode") == "unaffiliated_echo"
            else f"  Source port: {info['source_port']}"
        )
        + (
            "  (multihop, minimum TTL " + str(info.get("min_rx_ttl")) + ")"
            if info.get("multihop")
            else ""
        )
        + ("  (passive)" if info["passive"] else "")
        + ("  (dynamic)" if info.get("dynamic") else ""),
        "  Local timers:",
        f"    Detect multiplier: {info['detect_mult']}",
        f"    Desired min TX: {_fmt_ms(info['desired_min_tx_ms'])} ms"
        f" (configured {_fmt_ms(info['configured_tx_ms'])} ms)",
        f"    Required min RX: {_fmt_ms(info['required_min_rx_ms'])} ms"
        f" (configured {_fmt_ms(info['configured_rx_ms'])} ms)",
        "  Remote timers:",
        f"    Detect multiplier: {info['remote_detect_mult']}",
        f"    Desired min TX: {_fmt_ms(info['remote_desired_min_tx_ms'])} ms",
        f"    Required min RX: {_fmt_ms(info['remote_required_min_rx_ms'])} ms",
        f"    Demand mode: {'yes' if info['remote_demand_mode'] else 'no'}",
        "  Negotiated:",
        f"    TX interval: {_fmt_ms(info['tx_interval_ms'])} ms",
        f"    RX interval: {_fmt_ms(info['rx_interval_ms'])} ms",
        f"    Detection time: {_fmt_ms(info['detect_time_ms'])} ms",
        f"    Largest RX gap while up: {_fmt_ms(info['max_rx_gap_ms'])} ms",
        "  Counters:",
        f"    Control packets in: {c['packets_in']}",
        f"    Control packets out: {c['packets_out']}",
        f"    Packets dropped: {c['packets_dropped']}"
        + (f" ({', '.join(f'{k} {v}' for k, v in c['drops'].items())})" if c["drops"] else ""),
        f"    Session up events: {c['session_up']}",
        f"    Session down events: {c['session_down']}",
        f"    Poll sequences: {c['poll_sequences']}",
        f"    Detection expiries: {c['detection_expiries']}",
    ]
    echo = info.get("echo")
    if echo and echo.get("mode") == "rfc5880":
        ours = (
            f"ours every {_fmt_ms(echo['tx_interval_ms'])} ms"
            if echo["active"]
            else "ours not active"
            if echo["interval_ms"] is not None
            else "none of ours"
        )
        if echo["interval_ms"] is not None:
            ours += (
                f" (configured {_fmt_ms(echo['interval_ms'])} ms),"
                f" via {echo['interface'] or '?'}"
                f" to {echo['gateway_mac'] or 'an address not resolved yet'},"
                f" {echo['packets_out']} out, {echo['packets_in']} back,"
                f" {echo['detection_expiries']} failures"
            )
        lines.append(
            f"  Echo (RFC 5880): {ours}; the peer's: advertised"
            f" {_fmt_ms(echo['required_min_echo_rx_ms'])} ms, {echo['reflected']} looped back,"
            f" {echo['reflect_limited']} not; peer accepts"
            f" {_fmt_ms(echo['remote_required_min_echo_rx_ms'])} ms"
        )
    elif echo:
        lines.append(
            f"  Echo: every {_fmt_ms(echo['tx_interval_ms'])} ms"
            f" (configured {_fmt_ms(echo['interval_ms'])} ms), via {echo['interface'] or '?'}"
            f" to {echo['gateway_mac'] or 'an address not resolved yet'},"
            f" minimum TTL back {echo['min_rx_ttl']}"
        )
    if c["send_errors"]:
        lines.append(
            "    Send errors: " + ", ".join(f"{k} {v}" for k, v in c["send_errors"].items())
        )
    return "\n".join(lines)


def format_reload(summary: dict[str, list[str]]) -> str:
    parts = [
        f"{name} {len(peers)}" + (f" ({', '.join(peers)})" if peers and name != "unchanged" else "")
        for name, peers in summary.items()
    ]
    return "reloaded: " + ", ".join(parts)


#: Shell-completion hints, read by shtab when scripts/gen-man-completions.py
#: writes completions/ (aiobfdctl does not import shtab): a PEER completes the
#: peers of the running daemon (the shell functions are in that script), the
#: socket file names.
PEER_COMPLETION = {"bash": "_aiobfdctl_peers", "zsh": "_aiobfdctl_peers"}
PATH_COMPLETION = {"bash": "_shtab_compgen_files", "zsh": "_files"}


def _complete(action: argparse.Action, hint: dict[str, str]) -> None:
    action.complete = hint  # type: ignore[attr-defined]


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="aiobfdctl", description="Show and control a running aiobfd.")
    socket_option = parser.add_argument(
        "-s",
        "--socket",
        default=None,
        metavar="PATH",
        help=f"control socket (default {default_socket_path()})",
    )
    _complete(socket_option, PATH_COMPLETION)
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--version", action="version", version=f"aiobfdctl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    show = sub.add_parser("show", help="show sessions")
    show_sub = show.add_subparsers(dest="what", required=True, metavar="WHAT")
    sessions = show_sub.add_parser("sessions", help="one line per session")
    sessions.add_argument("--json", action="store_true", dest="json_sub", help="print JSON")
    one = show_sub.add_parser("session", help="every detail of one session")
    _complete(
        one.add_argument("peer", help="remote address (fe80::1%%eth0 for link-local)"),
        PEER_COMPLETION,
    )
    one.add_argument("--json", action="store_true", dest="json_sub", help="print JSON")
    sub.add_parser("reload", help="re-read the configuration file (as SIGHUP)")
    sub.add_parser("watch", help="print session state changes as they happen (JSON lines)")
    peer = sub.add_parser("peer", help="add, delete, shut down or enable a peer at run time")
    peer_sub = peer.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = peer_sub.add_parser("add", help="start a session (lost on reload)")
    add.add_argument("remote", help="remote address")
    add.add_argument("--local", help="local address (default: that of the other sessions)")
    add.add_argument("--interface", help="interface, for link-local peers")
    add.add_argument("-r", "--rx-interval", type=int, metavar="MS", help="required min RX, ms")
    add.add_argument("-t", "--tx-interval", type=int, metavar="MS", help="desired min TX, ms")
    add.add_argument("-m", "--detect-mult", type=int, metavar="N", help="detect multiplier")
    add.add_argument("-p", "--passive", action="store_true", help="passive role")
    for name, text in (
        ("drain", "withdraw the routes (aiobfd-exabgp), wait, then AdminDown"),
        ("undrain", "end a drain: enable the sessions again"),
    ):
        drain = sub.add_parser(name, help=text)
        _complete(
            drain.add_argument("peer", nargs="?", help="remote address (or --all)"),
            PEER_COMPLETION,
        )
        drain.add_argument("--all", action="store_true", help="every session")
        if name == "drain":
            drain.add_argument(
                "--wait",
                type=int,
                metavar="MS",
                help="between the withdrawal and AdminDown (default: the daemon's drain_wait_ms)",
            )
    for action, text in (
        ("del", "say AdminDown and remove the session (until the next reload)"),
        ("shutdown", "take the session administratively down (AdminDown, diag 7)"),
        ("enable", "bring an administratively down session back"),
    ):
        _complete(
            peer_sub.add_parser(action, help=text).add_argument("peer", help="remote address"),
            PEER_COMPLETION,
        )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    path = args.socket or default_socket_path()
    as_json = args.json or getattr(args, "json_sub", False)
    try:
        if args.command == "watch":
            for record in watch(path):
                print(json.dumps(record), flush=True)
            return 0
        if args.command == "reload":
            answer = request(path, {"command": "reload"})
            summary = answer["reload"]
            print(json.dumps(summary, indent=2) if as_json else format_reload(summary))
            return 0
        if args.command in ("drain", "undrain"):
            if args.all == (args.peer is not None):
                print(f"aiobfdctl: {args.command} needs a PEER or --all", file=sys.stderr)
                return 2
            drain_request: dict[str, Any] = {"command": args.command}
            if args.all:
                drain_request["all"] = True
            else:
                drain_request["peer"] = args.peer
            if getattr(args, "wait", None) is not None:
                drain_request["wait_ms"] = args.wait
            answer = request(path, drain_request)
            if as_json:
                print(json.dumps({k: v for k, v in answer.items() if k != "ok"}, indent=2))
            elif args.command == "drain":
                names = ", ".join(answer["draining"]) or "nothing new"
                print(f"draining {names}: AdminDown in {answer['wait_ms']} ms")
            else:
                print(f"undrained {', '.join(answer['undrained']) or 'nothing'}")
            return 0
        if args.command == "peer":
            payload: dict[str, Any] = {"command": f"peer {args.action}"}
            if args.action == "add":
                payload.update(remote=args.remote, passive=args.passive)
                for key, value in (
                    ("local", args.local),
                    ("interface", args.interface),
                    ("rx_interval_ms", args.rx_interval),
                    ("tx_interval_ms", args.tx_interval),
                    ("detect_mult", args.detect_mult),
                ):
                    if value is not None:
                        payload[key] = value
            else:
                payload["peer"] = args.peer
            answer = request(path, payload)
            if as_json:
                print(json.dumps({k: v for k, v in answer.items() if k != "ok"}, indent=2))
            elif "removed" in answer:
                print(f"removed {answer['removed']}")
            else:
                info = answer["session"]
                print(
                    f"{info['peer']}: {info['state']} (run-time change; a reload restores the file)"
                )
            return 0
        if args.what == "sessions":
            answer = request(path, {"command": "show sessions"})
            out = (
                json.dumps(answer["sessions"], indent=2)
                if as_json
                else format_brief(answer["sessions"])
            )
        else:
            answer = request(path, {"command": "show session", "peer": args.peer})
            out = (
                json.dumps(answer["session"], indent=2)
                if as_json
                else format_detail(answer["session"])
            )
    except ClientError as exc:
        print(f"aiobfdctl: {exc}", file=sys.stderr)
        return 1
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
