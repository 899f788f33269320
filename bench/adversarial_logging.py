"""A log destination that stops taking lines, against an established pair.

A's stdout is a pipe nobody reads, as when journald stalls or an operator
leaves ``aiobfd ... | less`` on its first page: once the pipe's 64 KB are
full, every write to it blocks.  With the pair (A 127.0.0.1, B 127.0.0.2,
50 ms x 3) Up, A is reloaded (SIGHUP) with ``--absent`` more peers toward
addresses where nobody listens: a line for each session created and for its
first refused send, hundreds of kilobytes of log at once.  Then the pair is
watched for ``--watch`` seconds and the pipe read again.

Figures: Down events of either side, the largest gap B counted between A's
packets, whether A answered its control socket during the watch (its slowest
answer), and A's lines that reached the pipe, with the count of dropped
records the daemon reported there.

    python bench/adversarial_logging.py --absent 3000      # root: a private namespace
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
import time
from pathlib import Path

from adversarial_pair import (
    A,
    B,
    Json,
    Pinger,
    Proc,
    downs,
    enter_namespace,
    flaps,
    pair,
    raise_nofile,
    run_and_print,
    rx_gaps,
    sessions,
)


def config(path: Path, sock: Path, absent: int) -> None:
    lines = [
        "[daemon]",
        f'control_socket = "{sock}"',
        "metrics_port = 0",
        "[defaults]",
        "rx_interval_ms = 50",
        "tx_interval_ms = 50",
        "detect_mult = 3",
        "[[peers]]",
        f'remote = "{B}"',
        f'local = "{A}"',
    ]
    for i in range(absent):  # 127.0.3.0/24 and up: nobody listens there
        lines += [
            "[[peers]]",
            f'remote = "127.0.{3 + i // 250}.{1 + i % 250}"',
            f'local = "{A}"',
            "rx_interval_ms = 1000",
            "tx_interval_ms = 1000",
        ]
    path.write_text("\n".join(lines) + "\n")


def run(args: argparse.Namespace, tmp: Path) -> Json:
    raise_nofile()
    read_end, write_end = os.pipe()
    conf = tmp / "a.toml"
    config(conf, tmp / "a.sock", 0)

    def start_a() -> Proc:
        return Proc(tmp, "a", ["--config", str(conf)], socket_arg=False, stdout=write_end)

    def start_b() -> Proc:
        return Proc(tmp, "b", [B, A, "-r", "50", "-t", "50", "-m", "3", "--metrics-port", "0"])

    with pair(start_a, start_b) as (a, b):
        os.close(write_end)  # A holds the only write end; nobody reads
        before = sessions(a, b)
        config(conf, tmp / "a.sock", args.absent)
        pinger = Pinger(a.sock, period=0.05, timeout=args.watch + 5)
        a.proc.send_signal(signal.SIGHUP)
        time.sleep(args.watch)
        after_b = b.session(A)
        slowest = pinger.stop(wait=1.0)
        got: list[bytes] = []
        reader = threading.Thread(target=lambda: got.append(_read_all(read_end)), daemon=True)
        reader.start()  # the pipe is read again
        time.sleep(2.0)
        after_a = a.session_or_empty(B, 10)
    reader.join(10)
    text = b"".join(got).decode(errors="replace")
    dropped = [line for line in text.splitlines() if "log record(s) dropped" in line]
    a_after = after_a or before[0]  # A still stuck: its last answer
    return {
        "absent_peers": args.absent,
        "flaps": flaps(a_after, after_b, (downs(before[0]), downs(before[1]))),
        "largest_rx_gap_ms": rx_gaps(a_after, after_b),
        "a_control_answered_during_watch": sum(ok for _, ok in pinger.answers),
        "a_control_slowest_answer_s": round(slowest, 3),
        "a_answered_after_the_pipe_was_read": bool(after_a),
        "a_log_lines_read": len(text.splitlines()),
        "a_dropped_notes": [line.split("WARNING", 1)[-1].strip() for line in dropped][:3],
    }


def _read_all(fd: int) -> bytes:
    """Everything until the write end closes; the read end is closed then."""
    with open(fd, "rb") as pipe:
        return pipe.read()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--absent", type=int, default=3000, help="peers added by the reload")
    parser.add_argument("--watch", type=float, default=5.0, help="seconds watched after it")
    args = parser.parse_args()
    enter_namespace()
    return run_and_print(run, args, "aiobfd-logging-")


if __name__ == "__main__":
    raise SystemExit(main())
