"""BIRD 2 in a lab namespace as a BFD peer: `BirdPeer`, its configuration and parser.

For tests and example labs; needs root, iproute2 and BIRD 2 (Debian's ``bird2``:
``bird``, ``birdc``). bird runs in the foreground under `NetnsLab.popen`, with its
configuration, control socket and log in its own directory; birdc reaches it over
the control socket from the root namespace.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .netns import NetnsLab
from .peer import Check, Json, Peer, PeerError, run_client
from .topology import Lab

BIRD = "bird"
BIRDC = "birdc"


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


class BirdPeer(Peer):
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
        lab: NetnsLab,
        ns: str,
        workdir: Path,
        neighbors: Sequence[BirdNeighbor] = (),
        options: BirdOptions = BirdOptions(),
        router_id: str | None = None,
    ) -> None:
        super().__init__(lab, ns, workdir)
        self.neighbors = list(neighbors)
        self.options = options
        if router_id is None and isinstance(lab, Lab):
            router_id = lab.side(ns).ipv4
        if router_id is None:
            raise PeerError("BirdPeer needs a router_id outside a Lab")
        self.router_id = router_id

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
        check = run_client([BIRD, "-p", "-c", str(conf)])
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
        proc = run_client([BIRDC, "-s", str(self.socket), *args])
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

    def state(self, remote: str) -> str | None:
        """The state BIRD shows for the session toward `remote` ("Up", ...), or None."""
        session = self.session(remote)
        return None if session is None else str(session["state"])

    def wait_session(
        self, remote: str, check: Check, timeout: float = 10.0, what: str = "a condition"
    ) -> Json:
        """Wait until `check(session)` holds for the session toward `remote`; return it."""
        last = lambda: self.birdc("show", "bfd", "sessions")  # noqa: E731 - as printed
        what = f"BIRD session to {remote}: {what}"
        return self._wait_session(lambda: self.session(remote), check, timeout, what, last)

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
    "BIRD",
    "BIRDC",
    "BirdNeighbor",
    "BirdOptions",
    "BirdPeer",
    "parse_bird_sessions",
]
