"""Start-up and reload time of a large configuration file (default 5,000 peers).

    python bench/config_load.py                 # 5,000 peers, 5 runs of each
    python bench/config_load.py -n 1000 --runs 3 --keep /tmp/cfg

Writes a TOML file of N peers on loopback only: local addresses 127.0.0.1 to
127.0.0.4, remotes 127.1.x.y (nothing answers there and nothing leaves the
host), a profile on every other peer and keyed SHA1 from a key file on every
tenth. Then it measures, as the operator sees it:

* ``check``: ``aiobfd --config FILE --check-config`` as a process, wall clock
  from spawn to exit (interpreter start, imports, reading, checking, resolving
  and the local-address checks of every peer, secrets);
* ``start``: a daemon on the file, from spawn until its control socket answers
  (also opens a transmit socket a session);
* ``reload``: the control socket's ``reload`` on that daemon with the file
  unchanged (read, check, resolve, compare: nothing to apply), round trip;
* ``reload-all``: the same with every peer's timers changed, alternately
  (each of the N sessions takes its new timers through a Poll Sequence).

Each as wall-clock time and as CPU time of the process that did the work (the
check's process; the daemon's main thread), the latter being what to compare
on a busy machine. Medians over ``--runs``, with the spread. The daemon's
sessions stay Down (one packet a second each toward 127.1.x.y) and it is
stopped with SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

AIOBFD = [sys.executable, "-m", "aiobfd"]
LOCALS = ("127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4")


def config_text(n: int, tx_interval_ms: int = 300) -> str:
    """N peers: local 127.0.0.1-4, remote 127.1.x.y; a profile and auth on some."""
    lines = [
        "[daemon]",
        "metrics_port = 0",
        "",
        "[defaults]",
        "rx_interval_ms = 300",
        f"tx_interval_ms = {tx_interval_ms}",
        "detect_mult = 3",
        "",
        "[profiles.fast]",
        "rx_interval_ms = 100",
        f"tx_interval_ms = {tx_interval_ms // 3}",
        "",
        "[profiles.signed]",
        "auth = {type = 'keyed-sha1', keys = [{id = 1, file = 'bfd.key'}]}",
        "",
    ]
    for i in range(n):
        lines += [
            "[[peers]]",
            f'remote = "127.1.{i // 250}.{i % 250 + 1}"',
            f'local = "{LOCALS[i % len(LOCALS)]}"',
        ]
        if i % 10 == 0:
            lines.append('profile = "signed"')
        elif i % 2:
            lines.append('profile = "fast"')
        lines.append("")
    return "\n".join(lines)


def write_files(directory: Path, n: int) -> tuple[Path, str, str]:
    (directory / "bfd.key").write_text("bench-secret\n")
    (directory / "bfd.key").chmod(0o600)
    path = directory / "aiobfd.toml"
    a, b = config_text(n), config_text(n, tx_interval_ms=600)
    path.write_text(a)
    return path, a, b


def request(sock: Path, payload: dict[str, object], timeout: float = 120) -> dict[str, object]:
    """One control request, answered within ``timeout`` (aiobfdctl waits less)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(sock))
        s.sendall(json.dumps(payload).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    answer: dict[str, object] = json.loads(buf)
    return answer


def spread(values: list[float]) -> str:
    values = sorted(values)
    return (
        f"median {statistics.median(values) * 1000:7.1f} ms"
        f" (min {values[0] * 1000:.1f}, max {values[-1] * 1000:.1f})"
    )


def cpu_s(pid: int) -> float:
    """CPU time of the process's main thread so far (schedstat: nanoseconds)."""
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0]) / 1e9


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


Timing = tuple[list[float], list[float]]
"""Wall-clock and CPU seconds, one each per run."""


def time_check(path: Path, runs: int) -> Timing:
    wall, cpu = [], []
    for _ in range(runs):
        cpu_before, started = children_cpu_s(), time.perf_counter()
        result = subprocess.run(
            [*AIOBFD, "--config", str(path), "--check-config"], capture_output=True, text=True
        )
        wall.append(time.perf_counter() - started)
        cpu.append(children_cpu_s() - cpu_before)
        if result.returncode != 0:
            raise SystemExit(f"--check-config failed: {result.stderr.strip()}")
    return wall, cpu


def start_daemon(path: Path, sock: Path) -> tuple[subprocess.Popen[bytes], float, float]:
    """The daemon, once it answers, with the wall-clock and CPU seconds that took."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        [*AIOBFD, "--config", str(path), "--control-socket", str(sock), "-l", "WARNING"],
        stdout=subprocess.DEVNULL,
    )
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"the daemon exited with status {proc.returncode}")
        try:
            request(sock, {"command": "version"})
            return proc, time.perf_counter() - started, cpu_s(proc.pid)
        except OSError:
            time.sleep(0.005)


def time_reload(
    proc: subprocess.Popen[bytes],
    sock: Path,
    runs: int,
    path: Path | None = None,
    texts: tuple[str, ...] = (),
) -> Timing:
    wall, cpu = [], []
    for i in range(runs):
        if path is not None and texts:
            path.write_text(texts[i % len(texts)])
        time.sleep(0.2)  # let the daemon settle (Poll Sequences of the last reload)
        cpu_before, started = cpu_s(proc.pid), time.perf_counter()
        answer = request(sock, {"command": "reload"})
        wall.append(time.perf_counter() - started)
        cpu.append(cpu_s(proc.pid) - cpu_before)
        if not answer.get("ok"):
            raise SystemExit(f"reload failed: {answer}")
    return wall, cpu


def report(name: str, timing: Timing) -> None:
    wall, cpu = timing
    print(f"{name:<11} wall {spread(wall)}   cpu {spread(cpu)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--peers", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--keep", metavar="DIR", help="write the files here and keep them")
    args = parser.parse_args()
    import aiobfd

    print(f"aiobfd from {Path(aiobfd.__file__).parent}, {args.peers} peers, {args.runs} runs")
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(args.keep or tmp)
        directory.mkdir(parents=True, exist_ok=True)
        path, a, b = write_files(directory, args.peers)
        report("check", time_check(path, args.runs))
        starts: Timing = ([], [])
        reloads: Timing = ([], [])
        changes: Timing = ([], [])
        sock = directory / "bench.sock"
        for _ in range(max(1, args.runs // 2)):
            path.write_text(a)
            proc, wall, cpu = start_daemon(path, sock)
            starts[0].append(wall)
            starts[1].append(cpu)
            try:
                for into, got in (
                    (reloads, time_reload(proc, sock, args.runs)),
                    (changes, time_reload(proc, sock, args.runs, path, (b, a))),
                ):
                    into[0].extend(got[0])
                    into[1].extend(got[1])
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=60)
        report("start", starts)
        report("reload", reloads)
        report("reload-all", changes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
