"""FRR in a lab namespace: `FrrInstance` (zebra, bfdd, bgpd...) and `FrrPeer` (a BFD peer).

For tests, benchmarks and example labs; needs root, iproute2 and FRR (Debian's
``frr``: /usr/lib/frr/zebra, bfdd, bgpd and ``vtysh``). The daemons run in the
foreground under `NetnsLab.popen`, each instance with its own paths (configs, pid
files, vty and zserv sockets, logs) in one directory, so several run at once;
vtysh reaches them over those Unix sockets from the root namespace.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .netns import CommandError, NetnsLab, run
from .peer import Check, Json, Peer, PeerError

FRR_DIR = Path("/usr/lib/frr")
ZEBRA, BFDD, BGPD = FRR_DIR / "zebra", FRR_DIR / "bfdd", FRR_DIR / "bgpd"
VTYSH = "vtysh"


def frr_version() -> str:
    """The version of Debian's frr package, or 'unknown'."""
    out = run("dpkg-query", "-W", "-f=${Version}", "frr", check=False).stdout
    return out.strip() or "unknown"


class FrrInstance:
    """FRR daemons of one instance in one namespace of a lab, with paths under `rundir`.

    `write_configs()` writes ``<daemon>.conf`` files (owned by the frr user, as the
    daemons drop root), `spawn()` starts a daemon with ``<daemon>.out`` as its output,
    `vtysh()` talks to a daemon. Start zebra first and wait for `zebra_ready()`.
    """

    def __init__(
        self, lab: NetnsLab, ns: str, rundir: Path, *, cpu: int | None = None, log_file: bool = True
    ) -> None:
        self.lab = lab
        self.ns = ns
        self.rundir = rundir
        self.cpu = cpu
        """Pin the daemons to this CPU."""
        self.log_file = log_file
        """Log to ``<daemon>.log`` with ``--log``; False: the configuration says where
        (``log file`` there honours ``log timestamp precision``, ``--log`` does not)."""

    @property
    def name(self) -> str:
        """The instance name (``-N``): unique on the machine, by the lab's tag."""
        return f"{self.rundir.name}{self.lab.tag}"

    def args(self, daemon: str) -> list[str]:
        """Per-instance paths; ``-P 0``: no TCP vty, so instances never clash on a port."""
        d = self.rundir
        args = [
            f"-N{self.name}", f"-f{d / daemon}.conf", f"-i{d / daemon}.pid", f"--vty_socket={d}",
            f"-z{d / 'zserv.api'}", "-P0",
        ]  # fmt: skip
        if self.log_file:
            args.append(f"--log=file:{d / daemon}.log")
        if daemon == "bfdd":
            args.append(f"--bfdctl={d / 'bfdd.sock'}")
        return args

    def write_configs(self, configs: Mapping[str, str]) -> None:
        """Write ``<daemon>.conf`` for each daemon, hand the directory to the frr user."""
        self.rundir.mkdir(exist_ok=True)
        for daemon, text in configs.items():
            (self.rundir / f"{daemon}.conf").write_text(text)
        for path in (self.rundir, *self.rundir.iterdir()):
            shutil.chown(path, "frr", "frr")

    def spawn(self, daemon: str) -> subprocess.Popen[bytes]:
        """Start /usr/lib/frr/<daemon> in the foreground; the lab stops it on close."""
        return self.lab.popen(self.ns, FRR_DIR / daemon, *self.args(daemon),
                              log=self.rundir / f"{daemon}.out", cpu=self.cpu)  # fmt: skip

    def zebra_ready(self) -> bool:
        """Whether zebra's socket exists (start the other daemons after it does)."""
        return (self.rundir / "zserv.api").exists()

    def vtysh(self, daemon: str, *commands: str, timeout: float = 10.0, check: bool = True) -> str:
        """Run commands in a daemon's vty; return the output.

        A failure (non-zero exit or a '%' error line) raises `CommandError`, or with
        `check` false returns ''.
        """
        argv = [VTYSH, f"--vty_socket={self.rundir}", "-d", daemon]
        for command in commands:
            argv += ["-c", command]
        proc = run(*argv, check=False, timeout=timeout)
        errors = [ln for ln in proc.stdout.splitlines() if ln.lstrip().startswith("%")]
        if proc.returncode != 0 or errors:
            if check:
                raise CommandError(argv, proc.returncode, proc.stdout, proc.stderr)
            return ""
        return proc.stdout

    def bfd_peers(self, timeout: float = 10.0) -> list[Json]:
        """Parsed ``show bfd peers json`` (see `FrrPeer`)."""
        return list(json.loads(self.vtysh("bfdd", "show bfd peers json", timeout=timeout)))

    def bfd_counters(self, timeout: float = 10.0) -> list[Json]:
        """Parsed ``show bfd peers counters json``: per `peer`/`local`, `control-packet-input`,
        `control-packet-output`, `session-up`, `session-down`, `zebra-notifications`."""
        out = self.vtysh("bfdd", "show bfd peers counters json", timeout=timeout)
        return list(json.loads(out))


@dataclass(frozen=True)
class FrrSession:
    """One `peer` block of bfdd.conf. Intervals in milliseconds."""

    remote: str
    local: str
    rx_ms: int = 300
    tx_ms: int = 300
    multiplier: int = 3
    interface: str | None = None
    """Needed for link-local addresses, and for several sessions toward one address."""
    passive: bool = False
    multihop: bool = False
    """RFC 5883: `peer X multihop local-address Y` (FRR's minimum TTL default is 254)."""
    minimum_ttl: int | None = None

    @property
    def key(self) -> str:
        """The `peer ...` line that names this session in FRR's configuration."""
        hop = " multihop" if self.multihop else ""
        line = f"peer {self.remote}{hop} local-address {self.local}"
        return f"{line} interface {self.interface}" if self.interface else line

    def config(self) -> str:
        lines = [
            f" {self.key}",
            f"  receive-interval {self.rx_ms}",
            f"  transmit-interval {self.tx_ms}",
            f"  detect-multiplier {self.multiplier}",
            *(["  passive-mode"] if self.passive else []),
            *([f"  minimum-ttl {self.minimum_ttl}"] if self.minimum_ttl else []),
            " !",
        ]
        return "\n".join(lines)


class FrrPeer(Peer):
    """FRR's zebra and bfdd in one namespace, driven through vtysh.

    `peers()`/`peer()` parse `show bfd peers json`: per session `peer`, `local`,
    `interface` (if set), `status` ('up', 'down', 'init', 'shutdown'), `diagnostic`,
    `remote-diagnostic` (text such as 'ok', 'control detection time expired',
    'neighbor signaled session down'), `id`, `remote-id`, `receive-interval`,
    `transmit-interval`, `detect-multiplier`, their `remote-*` twins (ms), and
    `uptime` or `downtime` (s).
    """

    kind = "frr"
    logs = ("bfdd.log", "bfdd.out", "zebra.log")

    def __init__(
        self, lab: NetnsLab, ns: str, workdir: Path, sessions: Sequence[FrrSession] = ()
    ) -> None:
        super().__init__(lab, ns, workdir)
        self.sessions = list(sessions)

    @property
    def instance(self) -> FrrInstance:
        return FrrInstance(self.lab, self.ns, self.rundir)

    def start(self, timeout: float = 10.0) -> None:
        """Write the configs, start zebra then bfdd, wait until bfdd lists every session."""
        self._make_rundir()
        body = "\n".join(s.config() for s in self.sessions)
        bfdd = f"debug bfd peer\ndebug bfd network\n!\nbfd\n{body}\n!\n"
        self.instance.write_configs({"zebra": "", "bfdd": bfdd})
        self.procs["zebra"] = self.instance.spawn("zebra")
        self.wait(self.instance.zebra_ready, timeout, "zebra's socket", lambda: None)
        self.restart(timeout)

    def restart(self, timeout: float = 10.0) -> None:
        """Start bfdd (again, after `kill()`) from bfdd.conf and wait for its sessions.

        Changes made with `configure()` are not in bfdd.conf: a restart forgets them.
        """
        if "bfdd" in self.procs:
            raise PeerError("bfdd is running: kill() it first")
        self.procs["bfdd"] = self.instance.spawn("bfdd")
        expected = {(s.remote, s.local) for s in self.sessions}

        def configured() -> bool:
            return expected <= {(p["peer"], p.get("local")) for p in self.peers()}

        self.wait(configured, timeout, "bfdd to answer with every configured peer", self.peers)

    def vtysh(self, *commands: str, timeout: float = 10.0) -> str:
        """Run commands in bfdd's vty; raise PeerError on failure or a '%' error line."""
        try:
            return self.instance.vtysh("bfdd", *commands, timeout=timeout)
        except CommandError as exc:
            raise PeerError(f"vtysh {commands!r}: {exc}") from None

    def peers(self) -> list[Json]:
        """Parsed `show bfd peers json`."""
        return list(json.loads(self.vtysh("show bfd peers json")))

    def peer(self, remote: str, local: str | None = None) -> Json | None:
        """The session toward `remote` (and from `local`, if given), or None."""
        for p in self.peers():
            if p["peer"] == remote and local in (None, p.get("local")):
                return p
        return None

    def counters(self) -> list[Json]:
        """Parsed `show bfd peers counters json` (see `FrrInstance.bfd_counters`)."""
        return list(json.loads(self.vtysh("show bfd peers counters json")))

    def configure(
        self,
        remote: str,
        local: str,
        *lines: str,
        interface: str | None = None,
        multihop: bool | None = None,
    ) -> None:
        """Apply config lines under `bfd` / `peer REMOTE local-address LOCAL [interface I]`.

        For example `"shutdown"`, `"no shutdown"`, `"transmit-interval 100"`. The interface
        defaults to that of the configured session with these addresses.
        """
        known = [s for s in self.sessions if (s.remote, s.local) == (remote, local)]
        if interface is None:
            interface = known[0].interface if known else None
        if multihop is None:
            multihop = known[0].multihop if known else False
        key = FrrSession(remote, local, interface=interface, multihop=multihop).key
        self.vtysh("configure terminal", "bfd", key, *lines)

    def wait_peer(
        self,
        remote: str,
        check: Check,
        timeout: float = 10.0,
        what: str = "a condition",
        local: str | None = None,
    ) -> Json:
        """Wait until `check(session)` holds for the session toward `remote`; return it."""
        what = f"FRR session to {remote}: {what}"
        return self._wait_session(
            lambda: self.peer(remote, local), check, timeout, what, self.peers
        )

    def wait_status(
        self, remote: str, status: str, timeout: float = 10.0, local: str | None = None
    ) -> Json:
        """Wait until the session toward `remote` has `status` ('up', 'down', ...)."""
        return self.wait_peer(
            remote, lambda p: p["status"] == status, timeout, f"status {status!r}", local
        )

    def kill(self) -> None:
        """SIGKILL bfdd: it stops sending at once, without AdminDown. zebra keeps running."""
        self._kill("bfdd")


__all__ = [
    "BFDD",
    "BGPD",
    "FRR_DIR",
    "VTYSH",
    "ZEBRA",
    "FrrInstance",
    "FrrPeer",
    "FrrSession",
    "frr_version",
]
