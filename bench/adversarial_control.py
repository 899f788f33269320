"""Control-socket clients that misbehave, against two daemon processes over loopback.

Two ``aiobfd`` processes (127.0.0.1 <-> 127.0.0.2, one session at 50 ms x 3,
``--log-format json``); once the session is Up, daemon A's control socket is
attacked and we report what it cost the sessions (issue 18):

* ``flood``: ``--clients`` clients (a thread each, in a separate process) each
  write ``--requests`` ``show sessions`` requests at once and never read;
* ``resolver``: ``peer add router1.stuck.example`` while the resolver never
  answers for ``--stall`` seconds (A's process gets a ``sitecustomize`` whose
  ``socket.getaddrinfo`` sleeps that long for names under ``.stuck.example``,
  then fails as an unreachable DNS server does);
* ``malformed``: 60,000 ``[``, a 5,000-digit number, bytes that are not
  UTF-8, on one connection, then ``version`` on the same connection.

Figures: Down events of either side before the stop (flaps, from the JSON logs),
the largest receive gap of each side (``max_rx_gap_ms`` of ``show session``; A
is asked only after the attack, within 10 s), A's peak RSS growth (VmHWM after
resetting it through /proc/PID/clear_refs), how long another client waits for
``version`` during the attack (a probe every 0.5 s), and how long A takes to
exit after SIGTERM sent while the attack still holds its connections (systemd
gives it TimeoutStopSec=5s).

The daemons import aiobfd from ``--src`` (default: this checkout's src), so the
same bench measures another version, e.g. the commit before a change::

    git worktree add /tmp/ctl-before HEAD
    unshare -n sh -c 'ip link set lo up; python bench/adversarial_control.py flood'
    unshare -n sh -c 'ip link set lo up; python bench/adversarial_control.py flood --src /tmp/ctl-before/src'

Run it in a network namespace of its own (port 3784 on 127.0.0.1 and 127.0.0.2).
The bench asks the daemons through this checkout's ``aiobfd.client`` (the
control protocol of any version; bench/adversarial_pair.py); the attacking
clients are plain sockets.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from adversarial_pair import (
    A,
    B,
    ClientError,
    Pinger,
    Proc,
    raise_nofile,
    request,
    reset_peak,
    status_kb,
    wait_for,
)

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"

STUB = """
import socket, time
_real = socket.getaddrinfo
def getaddrinfo(host, *args, **kwargs):
    if isinstance(host, str) and host.endswith(".stuck.example"):
        time.sleep({stall})
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
    return _real(host, *args, **kwargs)
socket.getaddrinfo = getaddrinfo
"""


class Aiobfd(Proc):
    """One daemon process, logging JSON lines to a file."""

    def __init__(
        self,
        tmp: Path,
        name: str,
        local: str,
        remote: str,
        args: argparse.Namespace,
        env: dict[str, str],
    ) -> None:
        ms = str(args.interval)
        argv = [
            local, remote, "-r", ms, "-t", ms, "-m", "3", "--metrics-port", "0",
            "--log-format", "json", "--event-loop", args.loop,
        ]  # fmt: skip
        super().__init__(tmp, name, argv, env=env)

    def downs(self, before: float) -> list[str]:
        """Up -> Down changes logged before `before` (Unix time): not the goodbye (AdminDown)."""
        out = []
        for line in self.log.read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if (
                rec.get("old_state") == "up"
                and rec.get("new_state") == "down"
                and rec.get("diag_name") != "neighbor_signaled_session_down"  # the goodbye
            ):
                stamp = rec.get("timestamp") or rec.get("time") or ""
                if _unix(stamp) < before:
                    out.append(f"{rec.get('new_state')} ({rec.get('diag_name')})")
        return out

    def tracebacks(self) -> int:
        return self.log.read_text().count("Traceback")


def _unix(stamp: str) -> float:
    from datetime import datetime

    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


# -- the attacker process ------------------------------------------------------------------


def attacker(path: str, clients: int, requests: int) -> None:
    """Connect `clients` clients, each writes `requests` requests, none reads; hold until stdin closes."""
    raise_nofile()
    threading.stack_size(256 * 1024)
    payload = b'{"command": "show sessions"}\n' * requests
    release = threading.Event()
    lock = threading.Lock()
    counts = {"connected": 0, "sent": 0, "failed": 0}
    socks: list[socket.socket] = []

    def one() -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # blocking: waits for room
        try:
            sock.connect(path)
            with lock:
                counts["connected"] += 1
            sock.sendall(payload)
            with lock:
                counts["sent"] += 1
                socks.append(sock)
        except OSError:
            with lock:
                counts["failed"] += 1
            sock.close()
            return
        release.wait()

    started = time.monotonic()
    threads = [threading.Thread(target=one, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()

    def report() -> None:
        while not release.is_set():
            with lock:
                line = dict(counts, t=round(time.monotonic() - started, 2))
            print(json.dumps(line), flush=True)
            release.wait(0.5)

    threading.Thread(target=report, daemon=True).start()
    sys.stdin.read()  # the bench closes it: let go
    release.set()
    for sock in socks:
        sock.close()


# -- the cases ---------------------------------------------------------------------------


def prober(a: Proc) -> Pinger:
    """Another client: ``version`` every 0.5 s, answered within 10 s or not."""
    return Pinger(a.sock, period=0.5, timeout=10)


def run(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="aiobfd-ctl-"))
    env = {**os.environ, "PYTHONPATH": str(Path(args.src).resolve())}
    env_a = dict(env)
    if args.case == "resolver":
        stub = tmp / "stub"
        stub.mkdir()
        (stub / "sitecustomize.py").write_text(STUB.format(stall=args.stall))
        env_a["PYTHONPATH"] = f"{stub}:{env['PYTHONPATH']}"
    started: list[Aiobfd] = []
    attack: subprocess.Popen[str] | None = None
    try:
        started.append(Aiobfd(tmp, "a", A, B, args, env_a))
        started.append(Aiobfd(tmp, "b", B, A, args, env))
        a, b = started
        wait_for(
            lambda: all(
                d.session_or_empty(r, 10).get("state") == "up" for d, r in ((a, B), (b, A))
            ),
            "the session to come Up",
            20,
        )
        time.sleep(0.5)
        pid = a.pid
        base_rss = status_kb("VmRSS", pid)
        peak_field = reset_peak(pid)
        print(f"case {args.case}, daemons from {args.src}, loop {args.loop}")
        began = time.monotonic()
        extra: list[str] = []

        if args.case == "flood":
            attack = subprocess.Popen(
                [sys.executable, __file__, "--attacker", str(a.sock), str(args.clients), str(args.requests)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            pinger = prober(a)
            time.sleep(args.duration)
            assert attack.stdout is not None
            last = ""
            while True:  # the attacker's latest count
                line = attack.stdout.readline()
                if not line:
                    break
                last = line
                if json.loads(line)["t"] >= time.monotonic() - began - 0.6:
                    break
            extra.append(f"attacker: {last.strip()}")
        elif args.case == "resolver":
            pinger = prober(a)
            asked = time.monotonic()
            try:
                answer = request(
                    a.sock,
                    {"command": "peer add", "remote": "router1.stuck.example", "local": A},
                    args.stall + 10,
                )
            except ClientError as exc:
                answer = {"ok": False, "error": str(exc)}
            took = time.monotonic() - asked
            extra.append(f"peer add answered in {took:.2f} s: {json.dumps(answer)[:200]}")
            time.sleep(max(0.0, args.duration - (time.monotonic() - began)))
        else:
            pinger = prober(a)
            sock: socket.socket | None = None
            for name, bad in (
                ("60,000 [", b"[" * 60_000),
                ("5,000 digits", b"1" * 5_000),
                ("not UTF-8", b'{"command": "show session", "peer": "\xff\xfe"}'),
                ("version after", b'{"command": "version"}'),
            ):
                if sock is None:  # the first, or the daemon closed the last one
                    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    sock.settimeout(10)
                    sock.connect(str(a.sock))
                    reader = sock.makefile("rb")
                    if name != "60,000 [":
                        name += " (new connection)"
                try:
                    sock.sendall(bad + b"\n")
                    reply = reader.readline().decode(errors="replace").strip()
                except OSError as exc:
                    reply = f"(no answer: {exc!r})"
                if not reply or reply.startswith("(no answer"):
                    sock.close()
                    sock = None
                extra.append(f"{name}: {reply[:120] or '(closed, no answer)'}")
            if sock is not None:
                sock.close()
            time.sleep(max(0.0, args.duration - (time.monotonic() - began)))

        pinger.stop()  # the probe under way finishes before the stop
        probes = pinger.answers
        peak_rss = status_kb(peak_field, pid)
        b_info = b.session_or_empty(A, 10)
        a_info = a.session_or_empty(B, 10)
        sigterm_at = time.time()
        exit_s = a.stop(30)
        if attack is not None:
            with contextlib.suppress(OSError):
                assert attack.stdin is not None
                attack.stdin.close()
            attack.wait(30)
            attack = None

        flaps_a, flaps_b = a.downs(sigterm_at), b.downs(sigterm_at)
        answered = [t for t, ok in probes if ok]
        print(
            f"flaps (Down before SIGTERM): A {len(flaps_a)} {flaps_a[:4]}, B {len(flaps_b)} {flaps_b[:4]}"
        )
        print(
            f"largest receive gap: A {a_info.get('max_rx_gap_ms', 'no answer')} ms, "
            f"B {b_info.get('max_rx_gap_ms')} ms (Detection Time {3 * args.interval} ms)"
        )
        print(
            f"A's RSS growth {(peak_rss - base_rss) / 1024:.1f} MB ({peak_field}; {base_rss / 1024:.0f} MB before)"
        )
        if answered:
            print(
                f"another client (version, every 0.5 s): {len(answered)}/{len(probes)} answered, "
                f"median {statistics.median(answered):.3f} s, max {max(answered):.3f} s"
            )
        else:
            print(f"another client (version, every 0.5 s): 0/{len(probes)} answered within 10 s")
        print(
            f"SIGTERM to exit: {exit_s:.2f} s (exit status {a.proc.returncode}), sent at {sigterm_at:.3f}"
        )
        print(f"tracebacks in A's log: {a.tracebacks()}")
        for line in extra:
            print(line)
    finally:
        if attack is not None:
            attack.kill()
            attack.wait()
        for d in started:
            if d.proc.poll() is None:
                d.proc.kill()
                d.proc.wait()


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--attacker":
        attacker(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("case", choices=["flood", "resolver", "malformed"], nargs="?", default="flood")
    p.add_argument("--clients", type=int, default=2000)
    p.add_argument("--requests", type=int, default=1000)
    p.add_argument("--duration", type=float, default=6.0, help="seconds of attack before SIGTERM")
    p.add_argument("--stall", type=float, default=6.0, help="seconds the resolver takes (resolver)")
    p.add_argument("--interval", type=int, default=50, help="ms")
    p.add_argument("--loop", choices=["auto", "asyncio", "uvloop"], default="auto")
    p.add_argument("--src", default=str(SRC), help="where the daemons import aiobfd from")
    run(p.parse_args())


if __name__ == "__main__":
    main()
