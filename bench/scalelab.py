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
a failure or Ctrl-C; ``aiobfd.lab.cleanup_stale(NAMING)`` removes what a killed
run left.  The namespaces, processes and FRR are ``aiobfd.lab``'s.

Addresses: IPv4 from 198.51.100.0/24, IPv6 from 2001:db8::/64 (documentation
ranges); no traffic leaves the veth pair.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiobfd.lab import FrrInstance, LabError, Naming, NetnsLab, run, wait_until

NAMING = Naming("abfds-", "as")
"""Namespaces 'abfds-<tag>h' and 'abfds-<tag>p', links 'as<tag>h' and 'as<tag>p'."""
HOST_MAC = "02:ab:5c:00:00:01"
PEER_MAC = "02:ab:5c:00:00:02"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def peer_mac(i: int) -> str:
    """MAC of the peer-side macvlan of session ``i``."""
    return f"02:ab:5c:01:{(i >> 8) & 0xFF:02x}:{i & 0xFF:02x}"


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
    out = run("ip", "netns", "exec", ns, "cat", "/proc/net/snmp", "/proc/net/snmp6").stdout
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


class ScaleLab(NetnsLab):
    """Host and peer namespaces with ``n`` sessions' worth of addresses; a context manager."""

    def __init__(
        self,
        n: int,
        *,
        family: int = 4,
        many_locals: bool = False,
        macvlans: bool = True,
        nice: int = 0,
        naming: Naming = NAMING,
    ) -> None:
        if family == 4 and n + (n if many_locals else 1) > 252:
            raise LabError(f"{n} sessions do not fit in 198.51.100.0/24: use IPv6")
        super().__init__(naming, nice=nice)
        self.n = n
        self.family = family
        self.many_locals = many_locals
        self.macvlans = macvlans
        self.host_if = self.peer_if = ""
        self.pairs: list[Pair] = []

    @property
    def host_ns(self) -> str:
        return self.namespaces.get("host", "")

    @property
    def peer_ns(self) -> str:
        return self.namespaces.get("peer", "")

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

    def _build(self) -> None:
        for role, suffix in (("host", "h"), ("peer", "p")):
            self.add_namespace(role, suffix)
            self.sysctls(
                role,
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
        self.host_if, self.peer_if = self.ifname("h"), self.ifname("p")
        self.add_veth("host", self.host_if, "peer", self.peer_if, mac_a=HOST_MAC, mac_b=PEER_MAC)
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
        self.ip_batch("host", host_lines)
        self.ip_batch("peer", peer_lines)
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
        self.run("host", "nft", "-f", "-", input=ruleset, timeout=60)

    def silence(self, addrs: Sequence[str], on: bool = True) -> None:
        """Drop (or stop dropping) every packet from these peer addresses in the host namespace."""
        if not addrs:
            return
        verb = "add" if on else "delete"
        setname = "silent4" if self.family == 4 else "silent6"
        elements = "{ " + ", ".join(addrs) + " }"
        self.run("host", "nft", verb, "element", "inet", "abfds", setname, elements, timeout=60)


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
        self.instance = FrrInstance(lab, "peer", lab.rundir / "frr", cpu=cpu)
        self.dir = self.instance.rundir
        self.interval_ms = interval_ms
        self.mult = mult
        self.bfdd: subprocess.Popen[bytes] | None = None
        self.zebra: subprocess.Popen[bytes] | None = None

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
        self.instance.write_configs({"zebra": "", "bfdd": self.config()})
        self.zebra = self.instance.spawn("zebra")
        wait_until(self.instance.zebra_ready, timeout, "zebra's socket", 0.1)
        self.bfdd = self.instance.spawn("bfdd")

        def configured() -> bool:
            if self.bfdd is not None and self.bfdd.poll() is not None:
                raise LabError(f"bfdd exited with {self.bfdd.returncode}")
            try:
                return len(self.peers()) >= self.lab.n
            except (LabError, ValueError):
                return False

        wait_until(configured, timeout, "bfdd to list every session", 0.2)

    def peers(self) -> list[dict[str, Any]]:
        return self.instance.bfd_peers(timeout=60)

    def counters(self) -> list[dict[str, Any]]:
        return self.instance.bfd_counters(timeout=60)
