"""Real BFD peers for interop tests: FRR's bfdd (`FrrPeer`) and BIRD 2 (`BirdPeer`).

Each runs inside one namespace of a `netns.Lab`, in the foreground under `lab.popen`
(so the lab kills it whatever happens), with its sockets, pid files and logs in a short
directory under `lab.rundir`. `stop()` copies configs and logs into the peer's `workdir`,
where they stay after the test. Every wait has a deadline; a timeout or an early death
raises `PeerError` whose message ends with the last state seen and the tails of the logs.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

from .netns import Lab, log_tail, wait_until

FRR_DIR = Path("/usr/lib/frr")
ZEBRA = FRR_DIR / "zebra"
BFDD = FRR_DIR / "bfdd"
VTYSH = "vtysh"
BIRD = "bird"
BIRDC = "birdc"

T = TypeVar("T")
Json = dict[str, Any]


class PeerError(RuntimeError):
    """A peer failed to start, died, refused a command or missed a deadline."""


# -- shared plumbing ----------------------------------------------------------------------


class _Peer:
    """Start/stop bookkeeping, waits that watch for death, error messages with logs."""

    kind = "peer"
    logs: tuple[str, ...] = ()
    """Files in `rundir` whose tails go into error messages."""

    def __init__(self, lab: Lab, ns: str, workdir: Path) -> None:
        self.lab = lab
        self.side = lab.side(ns)
        self.workdir = Path(workdir)
        self.rundir = lab.rundir / f"{self.kind}-{self.side.role}"
        """Set for real by `start()`: the first free `<kind>-<role>[n]` under lab.rundir."""
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._stopped = False

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self, timeout: float = 10.0) -> None:
        """Write the configuration, start the daemon(s), wait until they answer."""
        raise NotImplementedError

    def _make_rundir(self) -> Path:
        for n in range(100):
            self.rundir = self.lab.rundir / f"{self.kind}-{self.side.role}{n or ''}"
            try:
                self.rundir.mkdir()
            except FileExistsError:
                continue
            return self.rundir
        raise PeerError(f"no free directory for {self.kind} under {self.lab.rundir}")

    def _spawn(self, name: str, *cmd: str | Path) -> subprocess.Popen[bytes]:
        """Start one daemon in the foreground; its stdout and stderr go to NAME.out."""
        proc = self.lab.popen(self.side.ns, *cmd, log=self.rundir / f"{name}.out")
        self.procs[name] = proc
        return proc

    def _dead(self) -> str | None:
        """Which of our daemons exited, if any (those stopped by `kill()` are not tracked)."""
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                return f"{name} exited with {proc.returncode}"
        return None

    def error(self, message: str, state: Any = None) -> PeerError:
        """A PeerError with the last state seen and the log tails, for a useful CI log."""
        parts = [f"{self.kind} in {self.side.ns}: {message}"]
        if state is not None:
            text = state if isinstance(state, str) else json.dumps(state, indent=1)
            parts.append(f"--- last state seen\n{text}")
        parts += [log_tail(self.rundir / n) for n in self.logs if (self.rundir / n).exists()]
        parts.append(f"(configs and logs are copied to {self.workdir} on stop)")
        return PeerError("\n".join(parts))

    def wait(
        self, probe: Callable[[], T | None], timeout: float, what: str, last: Callable[[], Any]
    ) -> T:
        """Poll `probe` until it returns something truthy and return that.

        A `PeerError` from `probe` (the daemon not answering yet) counts as "not yet".
        Raises `PeerError`, with `last()` and the logs, at once if a daemon died, or
        at the deadline.
        """
        failure: list[str] = []

        def checked() -> T | None:
            try:
                result = probe()
            except PeerError as exc:
                failure[:] = [str(exc)]
                result = None
            if not result and (death := self._dead()):
                raise self.error(f"{death} while waiting for {what}", _safe(last))
            return result

        try:
            return wait_until(checked, timeout, what)
        except TimeoutError as exc:
            message = f"{exc}; last error: {failure[0]}" if failure else str(exc)
            raise self.error(message, _safe(last)) from None

    def _kill(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(5)

    def stop(self) -> None:
        """Stop all daemons (SIGTERM, then SIGKILL) and keep configs and logs. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        for proc in reversed(list(self.procs.values())):
            self.lab.stop_process(proc)
        self.procs.clear()
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.rundir.is_dir():
            for path in self.rundir.iterdir():
                if path.is_file() and path.suffix in (".conf", ".log", ".out"):
                    shutil.copy(path, self.workdir / path.name)


def _safe(fn: Callable[[], Any]) -> Any:
    """`fn()`, or the error it raised as text: error paths must not raise anew."""
    try:
        return fn()
    except Exception as exc:
        return f"<unavailable: {exc}>"


def _run(argv: Sequence[str], timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
    """Run a client (vtysh, birdc, bird -p) in the root namespace: Unix sockets suffice."""
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


# -- FRR ----------------------------------------------------------------------------------


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


class FrrPeer(_Peer):
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
        self, lab: Lab, ns: str, workdir: Path, sessions: Sequence[FrrSession] = ()
    ) -> None:
        super().__init__(lab, ns, workdir)
        self.sessions = list(sessions)

    def _daemon_args(self, name: str) -> list[str]:
        """Per-instance paths; `-P 0`: no TCP vty, so instances never clash on a port."""
        d = self.rundir
        return [
            f"-N{d.name}", f"-f{d / name}.conf", f"-i{d / name}.pid", f"--vty_socket={d}",
            f"-z{d / 'zserv.api'}", "-P0", f"--log=file:{d / name}.log",
        ]  # fmt: skip

    def start(self, timeout: float = 10.0) -> None:
        """Write the configs, start zebra then bfdd, wait until bfdd lists every session."""
        d = self._make_rundir()
        (d / "zebra.conf").write_text("")
        body = "\n".join(s.config() for s in self.sessions)
        (d / "bfdd.conf").write_text(f"debug bfd peer\ndebug bfd network\n!\nbfd\n{body}\n!\n")
        for path in (d, *d.iterdir()):
            shutil.chown(path, "frr", "frr")  # the daemons drop root for user frr
        self._spawn("zebra", ZEBRA, *self._daemon_args("zebra"))
        self.wait(lambda: (d / "zserv.api").exists(), timeout, "zebra's socket", lambda: None)
        self.restart(timeout)

    def restart(self, timeout: float = 10.0) -> None:
        """Start bfdd (again, after `kill()`) from bfdd.conf and wait for its sessions.

        Changes made with `configure()` are not in bfdd.conf: a restart forgets them.
        """
        if "bfdd" in self.procs:
            raise PeerError("bfdd is running: kill() it first")
        d = self.rundir
        self._spawn("bfdd", BFDD, *self._daemon_args("bfdd"), f"--bfdctl={d / 'bfdd.sock'}")
        expected = {(s.remote, s.local) for s in self.sessions}

        def configured() -> bool:
            return expected <= {(p["peer"], p.get("local")) for p in self.peers()}

        self.wait(configured, timeout, "bfdd to answer with every configured peer", self.peers)

    def vtysh(self, *commands: str, timeout: float = 10.0) -> str:
        """Run commands in bfdd's vty; raise PeerError on failure or a '%' error line."""
        argv = [VTYSH, f"--vty_socket={self.rundir}", "-d", "bfdd"]
        for command in commands:
            argv += ["-c", command]
        proc = _run(argv, timeout)
        errors = [ln for ln in proc.stdout.splitlines() if ln.lstrip().startswith("%")]
        if proc.returncode != 0 or errors:
            raise PeerError(f"vtysh {commands!r}: {proc.returncode}: {proc.stdout}{proc.stderr}")
        return proc.stdout

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
        """Parsed `show bfd peers counters json`: per `peer`/`local`, `control-packet-input`,
        `control-packet-output`, `session-up`, `session-down`, `zebra-notifications`."""
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
        check: Callable[[Json], bool],
        timeout: float = 10.0,
        what: str = "a condition",
        local: str | None = None,
    ) -> Json:
        """Wait until `check(session)` holds for the session toward `remote`; return it."""

        def probe() -> Json | None:
            p = self.peer(remote, local)
            return p if p is not None and check(p) else None

        return self.wait(probe, timeout, f"FRR session to {remote}: {what}", self.peers)

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


# -- BIRD ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class BirdNeighbor:
    """One `neighbor` line of BIRD's bfd protocol."""

    remote: str
    local: str | None = None
    interface: str | None = None
    """Needed for link-local addresses."""
    multihop: bool = False

    def config(self) -> str:
        parts = [f"  neighbor {self.remote}"]
        if self.interface:
            parts.append(f'dev "{self.interface}"')
        if self.local:
            parts.append(f"local {self.local}")
        if self.multihop:
            parts.append("multihop on")
        return " ".join(parts) + ";"


@dataclass(frozen=True)
class BirdOptions:
    """Session options of BIRD's bfd protocol, applied to every neighbor. Milliseconds."""

    interval_ms: int = 100
    """Sets both min rx and min tx unless those are given."""
    min_rx_ms: int | None = None
    min_tx_ms: int | None = None
    idle_tx_ms: int | None = None
    """TX interval while not Up (BIRD's default is 1000)."""
    multiplier: int = 3
    passive: bool = False
    authentication: str | None = None
    """None, or 'simple', '[meticulous] keyed md5', '[meticulous] keyed sha1'."""
    password: str = "s3cret"
    password_id: int = 1
    extra_passwords: tuple[tuple[str, int], ...] = ()
    """More (password, id) pairs, accepted too: for key rotation."""

    def config(self) -> str:
        lines = [f"interval {self.interval_ms} ms"]
        for name, value in (
            ("min rx interval", self.min_rx_ms),
            ("min tx interval", self.min_tx_ms),
            ("idle tx interval", self.idle_tx_ms),
        ):
            if value is not None:
                lines.append(f"{name} {value} ms")
        lines.append(f"multiplier {self.multiplier}")
        if self.passive:
            lines.append("passive on")
        if self.authentication:
            lines.append(f"authentication {self.authentication}")
            lines.append(f'password "{self.password}" {{ id {self.password_id}; }}')
            for password, key_id in self.extra_passwords:
                lines.append(f'password "{password}" {{ id {key_id}; }}')
        return "".join(f"    {line};\n" for line in lines)


class BirdPeer(_Peer):
    """BIRD 2 in one namespace with one `protocol bfd`, driven through birdc.

    `sessions()` parses `birdc show bfd sessions` into dicts with `protocol`, `address`,
    `interface` ('---' when none), `state` ('Up', 'Down', 'Init', 'AdminDown'), `since`
    (BIRD's time format, as printed), `interval` and `timeout` (seconds, float: the TX
    interval in effect and the detection time). A session whose interface goes away
    (`lab.link_down()`) is removed from the list until the interface is back.
    """

    kind = "bird"
    logs = ("bird.log", "bird.out")

    def __init__(
        self,
        lab: Lab,
        ns: str,
        workdir: Path,
        neighbors: Sequence[BirdNeighbor] = (),
        options: BirdOptions = BirdOptions(),
        router_id: str | None = None,
    ) -> None:
        super().__init__(lab, ns, workdir)
        self.neighbors = list(neighbors)
        self.options = options
        self.router_id = router_id or self.side.ipv4

    @property
    def socket(self) -> Path:
        """birdc's control socket."""
        return self.rundir / "bird.ctl"

    def config(self) -> str:
        """The text of bird.conf for the current neighbors and options."""
        neighbors = "".join(f"{n.config()}\n" for n in self.neighbors)
        multihop = ""
        if any(n.multihop for n in self.neighbors):
            multihop = f"  multihop {{\n{self.options.config()}  }};\n"
        return (
            f"router id {self.router_id};\n"
            f'log "{self.rundir / "bird.log"}" all;\n'
            "protocol device {}\n"
            "protocol bfd {\n"
            "  debug { states, events };\n"
            f'  interface "*" {{\n{self.options.config()}  }};\n'
            f"{multihop}{neighbors}"
            "}\n"
        )

    def _write_config(self) -> None:
        conf = self.rundir / "bird.conf"
        conf.write_text(self.config())
        check = _run([BIRD, "-p", "-c", str(conf)])
        if check.returncode != 0:
            raise self.error(f"bird.conf rejected: {check.stdout}{check.stderr}", self.config())

    def start(self, timeout: float = 10.0) -> None:
        """Write and check bird.conf, start bird, wait until birdc answers."""
        self._make_rundir()
        self._write_config()
        self.restart(timeout)

    def restart(self, timeout: float = 10.0) -> None:
        """Start bird (again, after `kill()`) from bird.conf and wait until birdc answers."""
        if "bird" in self.procs:
            raise PeerError("bird is running: kill() it first")
        d = self.rundir
        self._spawn("bird", BIRD, "-f", f"-c{d / 'bird.conf'}", f"-s{self.socket}",
                    f"-P{d / 'bird.pid'}")  # fmt: skip
        self.wait(lambda: self.birdc("show", "status"), timeout, "birdc to answer", lambda: None)

    def birdc(self, *args: str) -> str:
        """Run a birdc command; return its output, raise PeerError on failure."""
        proc = _run([BIRDC, "-s", str(self.socket), *args])
        if proc.returncode != 0:
            out = f"{proc.stdout}{proc.stderr}"
            raise PeerError(f"birdc {' '.join(args)}: {proc.returncode}: {out}")
        return proc.stdout

    def sessions(self) -> list[Json]:
        """Parsed `show bfd sessions` (see the class docstring)."""
        return parse_bird_sessions(self.birdc("show", "bfd", "sessions"))

    def session(self, remote: str) -> Json | None:
        """The session toward `remote`, or None."""
        for s in self.sessions():
            if s["address"] == remote:
                return s
        return None

    def wait_session(
        self,
        remote: str,
        check: Callable[[Json], bool],
        timeout: float = 10.0,
        what: str = "a condition",
    ) -> Json:
        """Wait until `check(session)` holds for the session toward `remote`; return it."""

        def probe() -> Json | None:
            s = self.session(remote)
            return s if s is not None and check(s) else None

        last = lambda: self.birdc("show", "bfd", "sessions")  # noqa: E731 - as printed
        return self.wait(probe, timeout, f"BIRD session to {remote}: {what}", last)

    def wait_state(self, remote: str, state: str, timeout: float = 10.0) -> Json:
        """Wait until the session toward `remote` is in `state` ('Up', 'Down'...; any case)."""
        return self.wait_session(
            remote, lambda s: s["state"].lower() == state.lower(), timeout, f"state {state!r}"
        )

    def reconfigure(self, neighbors: Sequence[BirdNeighbor] | None = None, **changes: Any) -> None:
        """Change neighbors and/or `BirdOptions` fields, rewrite bird.conf, `birdc configure`."""
        if neighbors is not None:
            self.neighbors = list(neighbors)
        self.options = replace(self.options, **changes)
        self._write_config()
        out = self.birdc("configure")
        if "Reconfigured" not in out and "Reconfiguration in progress" not in out:
            raise self.error(f"birdc configure: {out}", self.config())

    def kill(self) -> None:
        """SIGKILL bird: it stops sending at once, without AdminDown."""
        self._kill("bird")


def parse_bird_sessions(text: str) -> list[Json]:
    """Parse the output of `birdc show bfd sessions` (BIRD 2.0), for example:

        BIRD 2.0.12 ready.
        bfd1:
        IP address                Interface  State      Since         Interval  Timeout
        198.51.100.2              abt1h      Up         14:10:00.781    0.100    0.300

    'Since' may contain a space with other time formats, so it is everything between the
    state and the last two columns.
    """
    sessions = []
    protocol = ""
    for line in text.splitlines():
        fields = line.split()
        if not fields or line.startswith(("BIRD ", "IP address")):
            continue
        if len(fields) == 1 and line.endswith(":"):
            protocol = line[:-1]
            continue
        if len(fields) < 6:
            raise PeerError(f"unexpected line in `show bfd sessions`: {line!r}")
        sessions.append(
            {
                "protocol": protocol,
                "address": fields[0],
                "interface": fields[1],
                "state": fields[2],
                "since": " ".join(fields[3:-2]),
                "interval": float(fields[-2]),
                "timeout": float(fields[-1]),
            }
        )
    return sessions


__all__ = [
    "BirdNeighbor",
    "BirdOptions",
    "BirdPeer",
    "FrrPeer",
    "FrrSession",
    "PeerError",
    "parse_bird_sessions",
]
