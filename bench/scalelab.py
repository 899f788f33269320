"""The network and process plumbing of bench/scale.py.

Two network namespaces (``abfds-TAGh`` for the daemon under test, ``abfds-TAGp``
for its peer) joined by a veth pair, with one address per session on the peer
side (each on its own macvlan when FRR is the peer: FRR 8.4 keys a single-hop
session by peer address and interface) and one address, or one per session, on
the host side.  Neighbour entries are static, so no ARP / ND traffic and no
neighbour-table garbage collection interferes at a thousand addresses.  An
nftables set in the host namespace silences chosen peers for the detection
trials.  Everything made here (namespaces, processes started in them, the
scratch directory under /tmp) is removed by :meth:`ScaleLab.close`, also after
a failure or Ctrl-C; :func:`cleanup_stale` removes what a killed run left.

Addresses: IPv4 from 198.51.100.0/24, IPv6 from 2001:db8::/64 (documentation
ranges); no traffic leaves the veth pair.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

PREFIX = "abfds-"
_OWNER_ALIAS = "abfds-lab pid={pid}"
_OWNER_RE = re.compile(r"alias abfds-lab pid=(\d+)")
HOST_MAC = "02:ab:5c:00:00:01"
PEER_MAC = "02:ab:5c:00:00:02"
CLK_TCK = os.sysconf("SC_CLK_TCK")
FRR_DIR = Path("/usr/lib/frr")


class LabError(RuntimeError):
    """Building, driving or tearing down the lab failed."""


def _cmd(*argv: str, check: bool = True, input: str | None = None, timeout: float = 60.0) -> str:
    proc = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        input=input,
        timeout=timeout,
        stdin=None if input is not None else subprocess.DEVNULL,
    )
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(argv)!r} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def peer_mac(i: int) -> str:
    """MAC of the peer-side macvlan of session ``i``."""
    return f"02:ab:5c:01:{(i >> 8) & 0xFF:02x}:{i & 0xFF:02x}"


def pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def list_namespaces(prefix: str = PREFIX) -> list[str]:
    out = _cmd("ip", "-json", "netns", "list").strip()
    return sorted(
        e["name"] for e in (json.loads(out) if out else []) if e["name"].startswith(prefix)
    )


def _ns_pids(ns: str) -> list[int]:
    return [int(p) for p in _cmd("ip", "netns", "pids", ns, check=False).split()]


def _delete_ns(ns: str) -> None:
    """Kill what runs in our namespace ``ns`` (we started it), then delete it."""
    pids = _ns_pids(ns)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 3
    while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    _cmd("ip", "netns", "delete", ns, check=False)


def cleanup_stale(prefix: str = PREFIX) -> list[str]:
    """Remove namespaces of this harness whose owning process is gone."""
    removed = []
    for ns in list_namespaces(prefix):
        out = _cmd("ip", "-n", ns, "-details", "link", "show", "lo", check=False)
        match = _OWNER_RE.search(out)
        if match and pid_alive(int(match.group(1))) and int(match.group(1)) != os.getpid():
            continue
        if not match:
            with contextlib.suppress(OSError):
                if time.time() - Path("/run/netns", ns).stat().st_mtime < 60:
                    continue  # being set up right now by another run
        _delete_ns(ns)
        shutil.rmtree(Path(tempfile.gettempdir(), ns[:-1]), ignore_errors=True)
        removed.append(ns)
    return removed


# ----------------------------------------------------------------- measurements


def proc_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def proc_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def proc_sched(pid: int) -> tuple[float, float]:
    """(seconds on CPU, seconds waiting on a run queue) from /proc/PID/schedstat."""
    run, wait, _ = Path(f"/proc/{pid}/schedstat").read_text().split()
    return int(run) / 1e9, int(wait) / 1e9


def cpu_stat() -> dict[str, list[int]]:
    """Per-CPU tick counters from /proc/stat (user nice system idle iowait irq softirq steal)."""
    out = {}
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu"):
            name, *vals = line.split()
            out[name] = [int(v) for v in vals[:8]]
    return out


def cpu_busy(
    before: dict[str, list[int]], after: dict[str, list[int]], cpu: str
) -> dict[str, float]:
    """Busy and softirq seconds of one CPU between two cpu_stat() readings."""
    d = [a - b for a, b in zip(after[cpu], before[cpu], strict=True)]
    user, nice, system, _idle, _iowait, irq, softirq, steal = d
    return {
        "busy": (user + nice + system + irq + softirq) / CLK_TCK,
        "softirq": (irq + softirq) / CLK_TCK,
        "steal": steal / CLK_TCK,
    }


def softnet_drops() -> dict[str, int]:
    """Backlog drops and squeezes of all CPUs (/proc/net/softnet_stat, hex columns 2 and 3)."""
    dropped = squeezed = 0
    for line in Path("/proc/net/softnet_stat").read_text().splitlines():
        cols = line.split()
        dropped += int(cols[1], 16)
        squeezed += int(cols[2], 16)
    return {"backlog_drops": dropped, "time_squeeze": squeezed}


def udp_errors(ns: str) -> dict[str, int]:
    """UDP receive/send errors of a namespace (IPv4 and IPv6 added up)."""
    out = _cmd("ip", "netns", "exec", ns, "cat", "/proc/net/snmp", "/proc/net/snmp6")
    names: list[str] = []
    totals = {"InErrors": 0, "RcvbufErrors": 0, "SndbufErrors": 0, "NoPorts": 0}
    for line in out.splitlines():
        if line.startswith("Udp:"):
            fields = line.split()[1:]
            if fields and not fields[0].isdigit():
                names = fields
            else:
                for k, v in zip(names, fields, strict=False):
                    if k in totals:
                        totals[k] += int(v)
        elif line.startswith("Udp6"):
            key, _, value = line.partition(" ")
            key = key[4:]
            if key in totals:
                totals[key] += int(value.strip())
    return totals


# ------------------------------------------------------------------------ lab


@dataclass(frozen=True)
class Pair:
    """One session's addresses: ours (host side) and the peer's, and the peer's interface."""

    index: int
    host: str
    peer: str
    peer_if: str


class ScaleLab:
    """Host and peer namespaces with ``n`` sessions' worth of addresses; a context manager."""

    def __init__(
        self,
        n: int,
        *,
        family: int = 4,
        many_locals: bool = False,
        macvlans: bool = True,
        nice: int = 0,
        prefix: str = PREFIX,
    ) -> None:
        if family == 4 and n + (n if many_locals else 1) > 252:
            raise LabError(f"{n} sessions do not fit in 198.51.100.0/24: use IPv6")
        self.n = n
        self.family = family
        self.many_locals = many_locals
        self.macvlans = macvlans
        self.nice = nice
        """Niceness of the daemons started with popen (negative: ahead of other work)."""
        self.prefix = prefix
        self.tag = ""
        self.rundir = Path()
        self.host_ns = self.peer_ns = ""
        self.host_if = self.peer_if = ""
        self.pairs: list[Pair] = []
        self.procs: list[subprocess.Popen[bytes]] = []
        self._files: list[IO[bytes]] = []
        self._open = False

    # addresses
    def _host_addr(self, i: int) -> str:
        if self.family == 4:
            return f"198.51.100.{1 + i}"
        return f"2001:db8::1:{i + 1:x}"

    def _peer_addr(self, i: int) -> str:
        if self.family == 4:
            base = 1 + (self.n if self.many_locals else 1)
            return f"198.51.100.{base + i}"
        return f"2001:db8::2:{i + 1:x}"

    @property
    def plen(self) -> int:
        return 24 if self.family == 4 else 64

    def __enter__(self) -> ScaleLab:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        self._open = True
        try:
            for _ in range(16):
                self.tag = secrets.token_hex(3)
                path = Path(tempfile.gettempdir(), f"{self.prefix}{self.tag}")
                try:
                    path.mkdir(mode=0o755)
                except FileExistsError:
                    continue
                path.chmod(0o755)
                self.rundir = path
                break
            else:
                raise LabError("no free lab tag")
            self.host_ns, self.peer_ns = f"{self.prefix}{self.tag}h", f"{self.prefix}{self.tag}p"
            self.host_if, self.peer_if = f"as{self.tag}h", f"as{self.tag}p"
            self._build()
        except BaseException:
            self.close()
            raise

    def _sysctls(self, ns: str, values: dict[str, int]) -> None:
        script = "; ".join(f"echo {v} > /proc/sys/{k.replace('.', '/')}" for k, v in values.items())
        _cmd("ip", "netns", "exec", ns, "sh", "-c", script)

    def _batch(self, ns: str, lines: Sequence[str]) -> None:
        if lines:
            _cmd("ip", "-n", ns, "-batch", "-", input="\n".join(lines) + "\n", timeout=300)

    def _build(self) -> None:
        owner = _OWNER_ALIAS.format(pid=os.getpid())
        for ns in (self.host_ns, self.peer_ns):
            _cmd("ip", "netns", "add", ns)
            _cmd("ip", "-n", ns, "link", "set", "lo", "alias", owner)
            _cmd("ip", "-n", ns, "link", "set", "lo", "up")
            self._sysctls(
                ns,
                {
                    "net.ipv6.conf.default.accept_dad": 0,
                    "net.ipv6.conf.all.accept_dad": 0,
                    "net.ipv6.conf.default.accept_ra": 0,
                    "net.ipv6.conf.default.router_solicitations": 0,
                    "net.ipv4.conf.all.rp_filter": 0,
                    "net.ipv4.conf.default.rp_filter": 0,
                    "net.ipv4.conf.all.arp_ignore": 1,
                },
            )
        _cmd(
            "ip",
            "link",
            "add",
            self.host_if,
            "address",
            HOST_MAC,
            "type",
            "veth",
            "peer",
            "name",
            self.peer_if,
            "address",
            PEER_MAC,
        )
        _cmd("ip", "link", "set", self.host_if, "netns", self.host_ns)
        _cmd("ip", "link", "set", self.peer_if, "netns", self.peer_ns)
        nodad = " nodad" if self.family == 6 else ""
        hosts = [self._host_addr(i) for i in range(self.n if self.many_locals else 1)]
        host_lines = [f"addr add {a}/{self.plen} dev {self.host_if}{nodad}" for a in hosts]
        host_lines.append(f"link set {self.host_if} up")
        peer_lines = []
        self.pairs = []
        for i in range(self.n):
            host = hosts[i if self.many_locals else 0]
            peer = self._peer_addr(i)
            if self.macvlans:
                ifname = f"m{i}"
                peer_lines += [
                    f"link add {ifname} link {self.peer_if} address {peer_mac(i)} "
                    "type macvlan mode bridge",
                    f"addr add {peer}/{self.plen} dev {ifname}{nodad}",
                ]
                mac = peer_mac(i)
            else:
                ifname = self.peer_if
                peer_lines.append(f"addr add {peer}/{self.plen} dev {ifname}{nodad}")
                mac = PEER_MAC
            self.pairs.append(Pair(i, host, peer, ifname))
            host_lines.append(f"neigh replace {peer} lladdr {mac} dev {self.host_if} nud permanent")
        peer_lines.append(f"link set {self.peer_if} up")
        if self.macvlans:
            peer_lines += [f"link set m{i} up" for i in range(self.n)]
        for pair in self.pairs:
            if self.many_locals or pair.index == 0 or self.macvlans:
                peer_lines.append(
                    f"neigh replace {pair.host} lladdr {HOST_MAC} dev {pair.peer_if} nud permanent"
                )
        self._batch(self.host_ns, host_lines)
        self._batch(self.peer_ns, peer_lines)
        # The detection trials silence peers by adding their address to a set.
        ruleset = (
            "table inet abfds {\n"
            " set silent4 { type ipv4_addr; }\n"
            " set silent6 { type ipv6_addr; }\n"
            " chain input { type filter hook input priority 0; policy accept;\n"
            "  ip saddr @silent4 drop\n"
            "  ip6 saddr @silent6 drop\n"
            " }\n"
            "}\n"
        )
        _cmd("ip", "netns", "exec", self.host_ns, "nft", "-f", "-", input=ruleset)

    def silence(self, addrs: Sequence[str], on: bool = True) -> None:
        """Drop (or stop dropping) every packet from these peer addresses in the host namespace."""
        if not addrs:
            return
        verb = "add" if on else "delete"
        setname = "silent4" if self.family == 4 else "silent6"
        _cmd(
            "ip",
            "netns",
            "exec",
            self.host_ns,
            "nft",
            verb,
            "element",
            "inet",
            "abfds",
            setname,
            "{ " + ", ".join(addrs) + " }",
        )

    def popen(
        self,
        ns: str,
        argv: Sequence[str],
        *,
        cpu: int | None,
        log: Path,
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` in ``ns`` (pinned to ``cpu``); the returned pid is the command's own."""
        pin = ["taskset", "-c", str(cpu)] if cpu is not None else []
        if self.nice:
            pin = ["nice", "-n", str(self.nice), *pin]
        out = log.open("ab")
        self._files.append(out)
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, *pin, *argv],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
        )
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        if not self._open:
            return
        self._open = False
        for proc in reversed(self.procs):
            stop_process(proc)
        for f in self._files:
            f.close()
        for ns in (self.host_ns, self.peer_ns):
            if ns:
                _delete_ns(ns)
        if self.host_if:
            _cmd("ip", "link", "delete", self.host_if, check=False)
        if self.rundir != Path():
            shutil.rmtree(self.rundir, ignore_errors=True)


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 3.0) -> None:
    """SIGTERM, then SIGKILL."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            proc.wait(timeout)
            return
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout)


def wait_for(probe: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise LabError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


# ------------------------------------------------------------------ clients


def ctl_request(path: str | Path, payload: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
    """One request on aiobfd's control socket (JSON lines; see docs/control.md)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(path))
        sock.sendall(json.dumps(payload).encode() + b"\n")
        chunks = []
        while True:
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
            if chunk.endswith(b"\n"):
                break
    finally:
        sock.close()
    answer = json.loads(b"".join(chunks))
    if not answer.get("ok"):
        raise LabError(f"control socket: {answer.get('error')}")
    return dict(answer)


class Frr:
    """FRR's zebra and bfdd in the peer namespace, one session per pair."""

    def __init__(self, lab: ScaleLab, interval_ms: int, mult: int, cpu: int | None) -> None:
        self.lab = lab
        self.dir = lab.rundir / "frr"
        self.interval_ms = interval_ms
        self.mult = mult
        self.cpu = cpu
        self.bfdd: subprocess.Popen[bytes] | None = None
        self.zebra: subprocess.Popen[bytes] | None = None

    def _args(self, name: str) -> list[str]:
        d = self.dir
        return [
            f"-N{d.name}{self.lab.tag}",
            f"-f{d / name}.conf",
            f"-i{d / name}.pid",
            f"--vty_socket={d}",
            f"-z{d / 'zserv.api'}",
            "-P0",
            f"--log=file:{d / name}.log",
        ]

    def config(self) -> str:
        lines = ["bfd"]
        for p in self.lab.pairs:
            lines += [
                f" peer {p.host} interface {p.peer_if} local-address {p.peer}",
                f"  receive-interval {self.interval_ms}",
                f"  transmit-interval {self.interval_ms}",
                f"  detect-multiplier {self.mult}",
                " !",
            ]
        return "\n".join(lines) + "\n!\n"

    def start(self, timeout: float = 30.0) -> None:
        d = self.dir
        d.mkdir()
        (d / "zebra.conf").write_text("")
        (d / "bfdd.conf").write_text(self.config())
        for path in (d, *d.iterdir()):
            shutil.chown(path, "frr", "frr")
        ns = self.lab.peer_ns
        self.zebra = self.lab.popen(
            ns, [str(FRR_DIR / "zebra"), *self._args("zebra")], cpu=self.cpu, log=d / "zebra.out"
        )
        wait_for(lambda: (d / "zserv.api").exists(), timeout, "zebra's socket")
        self.bfdd = self.lab.popen(
            ns,
            [str(FRR_DIR / "bfdd"), *self._args("bfdd"), f"--bfdctl={d / 'bfdd.sock'}"],
            cpu=self.cpu,
            log=d / "bfdd.out",
        )

        def configured() -> bool:
            if self.bfdd is not None and self.bfdd.poll() is not None:
                raise LabError(f"bfdd exited with {self.bfdd.returncode}")
            try:
                return len(self.peers()) >= self.lab.n
            except (LabError, ValueError):
                return False

        wait_for(configured, timeout, "bfdd to list every session", 0.2)

    def vtysh(self, command: str) -> str:
        return _cmd("vtysh", f"--vty_socket={self.dir}", "-d", "bfdd", "-c", command, timeout=60)

    def peers(self) -> list[dict[str, Any]]:
        return list(json.loads(self.vtysh("show bfd peers json")))

    def counters(self) -> list[dict[str, Any]]:
        return list(json.loads(self.vtysh("show bfd peers counters json")))


def frr_version() -> str:
    out = _cmd("dpkg-query", "-W", "-f=${Version}", "frr", check=False)
    return out.strip() or "unknown"
