"""A two-namespace network lab for interop tests against real BFD peers.

`Lab` creates two Linux network namespaces joined by a veth pair:

    host (our daemon)                         peer (FRR or BIRD)
    198.51.100.1/24, 2001:db8::1/64  <-veth->  198.51.100.2/24, 2001:db8::2/64

Only documentation ranges are used, and no traffic leaves the pair. Everything the lab
creates (namespaces, links, processes, its scratch directory) is removed on exit, also when
the body raises or is interrupted. `cleanup_stale()` removes what crashed runs left behind.

Also here: `wait_until()` (poll with a deadline) and `log_tail()` (for error messages),
shared with `peers.py`.
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import IO, Any, TypeVar

PREFIX = "abfd-"
"""Every namespace made here is named PREFIX + a short random tag + 'h' or 'p'."""

HOST, PEER = "host", "peer"
IPV4_PREFIXLEN, IPV6_PREFIXLEN = 24, 64
ADDRESSES = {
    HOST: ("198.51.100.1", "2001:db8::1"),
    PEER: ("198.51.100.2", "2001:db8::2"),
}
BLACKHOLE_MAC = "00:00:5e:00:53:01"
"""RFC 7042 documentation MAC: neighbour entries pointing here make the veth drop frames."""

_OWNER_ALIAS = "abfd-lab pid={pid}"
_OWNER_RE = re.compile(r"alias abfd-lab pid=(\d+)")
_VETH_RE = re.compile(r"ab([0-9a-f]{6})[hp]")
_STALE_UNOWNED_S = 60.0
_LIVE: set[str] = set()
"""Namespaces owned by labs of this process that are still open."""

T = TypeVar("T")


class LabError(RuntimeError):
    """Setting up, driving or tearing down the lab failed."""


class CommandError(LabError):
    """A command run by the lab exited non-zero; the message carries its output."""

    def __init__(self, cmd: Sequence[str], returncode: int, stdout: str, stderr: str) -> None:
        self.cmd = list(cmd)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        out = "\n".join(s.strip() for s in (stdout, stderr) if s.strip())
        super().__init__(f"{' '.join(self.cmd)!r} exited {returncode}:\n{out}")


@dataclass(frozen=True)
class Side:
    """One end of the lab: its namespace, its veth and its addresses."""

    role: str
    """'host' (where our daemon runs) or 'peer' (where FRR or BIRD usually runs)."""
    ns: str
    ifname: str
    ipv4: str
    ipv6: str
    link_local: str = ""
    """fe80:: address of `ifname`, known once the link is up."""


def wait_until(
    probe: Callable[[], T | None],
    timeout: float,
    what: str | Callable[[], str],
    interval: float = 0.05,
) -> T:
    """Call `probe` until it returns something other than None or False; return that.

    Raises `TimeoutError` after `timeout` seconds, with `what` (or what it returns, so
    the message can show the last state and logs) in the message.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result is not None and result is not False:
            return result
        if time.monotonic() >= deadline:
            detail = what() if callable(what) else what
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {detail}")
        time.sleep(interval)


def log_tail(path: Path, lines: int = 30) -> str:
    """The last `lines` lines of a log file, headed by its name, for error messages."""
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"--- {path}: {exc.strerror}"
    tail = text.splitlines()[-lines:]
    return "\n".join([f"--- last {len(tail)} lines of {path}", *tail])


def _cmd(*cmd: str, check: bool = True, timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
    """Run a command in the root namespace, capture its output, raise CommandError."""
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )
    if check and proc.returncode != 0:
        raise CommandError(cmd, proc.returncode, proc.stdout, proc.stderr)
    return proc


def pid_alive(pid: int) -> bool:
    """Whether `pid` runs; a zombie (dead, waiting to be reaped) counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def _ns_pids(ns: str) -> list[int]:
    proc = _cmd("ip", "netns", "pids", ns, check=False)
    return [int(p) for p in proc.stdout.split()]


def _kill_ns_processes(ns: str, timeout: float = 3.0) -> None:
    """SIGKILL whatever still runs inside `ns` and wait until it is gone."""
    pids = _ns_pids(ns)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(TimeoutError):
        wait_until(lambda: not any(pid_alive(p) for p in pids), timeout, f"processes of {ns}")


def _delete_ns(ns: str) -> None:
    _kill_ns_processes(ns)
    _cmd("ip", "netns", "delete", ns, check=False)


def list_namespaces(prefix: str = PREFIX) -> list[str]:
    """Names of the network namespaces that start with `prefix`."""
    out = _cmd("ip", "-json", "netns", "list").stdout.strip()
    names = [entry["name"] for entry in json.loads(out)] if out else []
    return sorted(n for n in names if n.startswith(prefix))


def _owner(ns: str) -> int | None:
    out = _cmd("ip", "-n", ns, "-details", "link", "show", "lo", check=False).stdout
    match = _OWNER_RE.search(out)
    return int(match.group(1)) if match else None


def _is_stale(ns: str) -> bool:
    owner = _owner(ns)
    if owner is None:  # crashed between `netns add` and tagging, or not ours
        try:
            age = time.time() - Path("/run/netns", ns).stat().st_mtime
        except OSError:
            return True
        return age > _STALE_UNOWNED_S
    if owner == os.getpid():
        return ns not in _LIVE
    return not pid_alive(owner)


def cleanup_stale(prefix: str = PREFIX) -> list[str]:
    """Remove lab namespaces left behind by runs that crashed; return their names.

    A namespace is stale when the process that made it is gone (its pid is written in
    the alias of the namespace's `lo`). Labs of live processes, such as a parallel run,
    are left alone. Processes still running inside a stale namespace are killed, and its
    scratch directory is removed.
    """
    removed = []
    for ns in list_namespaces(prefix):
        if _is_stale(ns):
            _delete_ns(ns)
            tag = ns[len(prefix) : -1]
            shutil.rmtree(Path(tempfile.gettempdir(), f"{prefix}{tag}"), ignore_errors=True)
            removed.append(ns)
    # A veth still in the root namespace: a run died between creating and moving it.
    live_tags = {ns[len(prefix) : -1] for ns in list_namespaces(prefix)}
    for link in json.loads(_cmd("ip", "-json", "link", "show", "type", "veth").stdout or "[]"):
        match = _VETH_RE.fullmatch(link["ifname"])
        if match and match.group(1) not in live_tags:
            _cmd("ip", "link", "delete", link["ifname"], check=False)
            removed.append(link["ifname"])
    return removed


class Lab:
    """Two namespaces ('host' and 'peer') joined by a veth pair; a context manager.

    Commands take a side as 'host', 'peer' or the namespace's own name. Processes
    started with `popen` are stopped on exit. `rundir` is a short scratch directory
    (readable by the `frr` user) for sockets, pid files and runtime logs; it is removed
    on exit, so copy what should be kept (the peers do, into their workdir).
    """

    def __init__(self, prefix: str = PREFIX) -> None:
        self.prefix = prefix
        self.tag = ""
        self.rundir = Path()
        self.host = Side(HOST, "", "", *ADDRESSES[HOST])
        self.peer = Side(PEER, "", "", *ADDRESSES[PEER])
        self._procs: list[subprocess.Popen[bytes]] = []
        self._logs: list[IO[bytes]] = []
        self._open = False

    # -- lifecycle ---------------------------------------------------------------------

    def __enter__(self) -> Lab:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(raise_errors=exc_type is None)

    def start(self) -> None:
        """Create namespaces, veth pair and addresses; undo everything if that fails."""
        if self._open:
            raise LabError("lab already started")
        self._open = True
        atexit.register(self.close)
        try:
            self._make_rundir()
            self.host = Side(HOST, f"{self.prefix}{self.tag}h", f"ab{self.tag}h", *ADDRESSES[HOST])
            self.peer = Side(PEER, f"{self.prefix}{self.tag}p", f"ab{self.tag}p", *ADDRESSES[PEER])
            self._build()
        except BaseException:
            self.close(raise_errors=False)
            raise

    def _make_rundir(self) -> None:
        for _ in range(16):
            self.tag = secrets.token_hex(3)
            path = Path(tempfile.gettempdir(), f"{self.prefix}{self.tag}")
            try:
                path.mkdir(mode=0o755)
            except FileExistsError:
                continue
            path.chmod(0o755)  # despite the umask: frr must reach its subdirectory
            self.rundir = path
            return
        raise LabError("no free lab tag")

    def _build(self) -> None:
        for side in (self.host, self.peer):
            _cmd("ip", "netns", "add", side.ns)
            _LIVE.add(side.ns)
            owner = _OWNER_ALIAS.format(pid=os.getpid())
            self.run(side.ns, "ip", "link", "set", "lo", "alias", owner)
            self.run(side.ns, "ip", "link", "set", "lo", "up")
            # New interfaces in the namespace (macvlans) get no DAD and keep addresses on down.
            self._sysctl(side.ns, "net.ipv6.conf.default.accept_dad", 0)
            self._sysctl(side.ns, "net.ipv6.conf.default.keep_addr_on_down", 1)
        _cmd(*f"ip link add {self.host.ifname} type veth peer name {self.peer.ifname}".split())
        for side in (self.host, self.peer):
            _cmd("ip", "link", "set", side.ifname, "netns", side.ns)
            # Link-local and global addresses usable at once; keep IPv6 addresses over link_down().
            self._sysctl(side.ns, f"net.ipv6.conf.{side.ifname}.accept_dad", 0)
            self._sysctl(side.ns, f"net.ipv6.conf.{side.ifname}.keep_addr_on_down", 1)
            self._ip(side, f"addr add {side.ipv4}/{IPV4_PREFIXLEN} dev {side.ifname}")
            self._ip(side, f"-6 addr add {side.ipv6}/{IPV6_PREFIXLEN} dev {side.ifname} nodad")
            self._ip(side, f"link set {side.ifname} up")
        self.host = replace(self.host, link_local=self.link_local(HOST))
        self.peer = replace(self.peer, link_local=self.link_local(PEER))

    def close(self, raise_errors: bool = False) -> None:
        """Stop processes, delete namespaces and the scratch directory. Idempotent.

        Errors are collected so that one failing step does not stop the others; they are
        raised as `LabError` only when `raise_errors` (the body did not raise).
        """
        if not self._open:
            return
        self._open = False
        atexit.unregister(self.close)
        errors: list[str] = []
        for proc in reversed(self._procs):
            try:
                self.stop_process(proc)
            except Exception as exc:
                errors.append(f"stopping pid {proc.pid}: {exc}")
        for log in self._logs:
            log.close()
        for side in (self.host, self.peer):
            if not side.ns:
                continue
            try:
                _delete_ns(side.ns)
            except Exception as exc:
                errors.append(f"deleting {side.ns}: {exc}")
            _LIVE.discard(side.ns)
        if self.host.ifname:  # the veth outlives the namespaces only if it was never moved
            _cmd("ip", "link", "delete", self.host.ifname, check=False)
        if self.rundir != Path():
            shutil.rmtree(self.rundir, ignore_errors=True)
        try:
            present = set(list_namespaces(self.prefix))
        except Exception as exc:
            errors.append(f"listing namespaces: {exc}")
            present = set()
        if leftover := [s.ns for s in (self.host, self.peer) if s.ns in present]:
            errors.append(f"namespaces left behind: {leftover}")
        if errors and raise_errors:
            raise LabError("lab cleanup failed: " + "; ".join(errors))

    # -- running things ----------------------------------------------------------------

    def side(self, ns: str) -> Side:
        """The side for 'host', 'peer' or a namespace name of this lab."""
        for side in (self.host, self.peer):
            if ns in (side.role, side.ns):
                return side
        raise LabError(f"no side {ns!r} in this lab")

    def run(
        self,
        ns: str,
        *cmd: str | os.PathLike[str],
        check: bool = True,
        timeout: float = 10.0,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command to completion in a namespace, capturing its text output.

        Raises `CommandError` (with stdout and stderr) when `check` and it exits non-zero.
        """
        argv = ["ip", "netns", "exec", self.side(ns).ns, *(os.fspath(c) for c in cmd)]
        proc = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
        if check and proc.returncode != 0:
            raise CommandError(argv, proc.returncode, proc.stdout, proc.stderr)
        return proc

    def popen(
        self,
        ns: str,
        *cmd: str | os.PathLike[str],
        log: Path | None = None,
        extra_env: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> subprocess.Popen[bytes]:
        """Start a background process in a namespace; it is stopped when the lab closes.

        `ip netns exec` execs the command, so the returned pid is the command's own.
        stdout and stderr go to `log` (appended) when given, else to /dev/null, unless
        passed in `kwargs`. `extra_env` is added to this process's environment.
        Other `kwargs` go to `subprocess.Popen` (for example `cwd`). For example::

            daemon = lab.popen(
                "host", sys.executable, "-m", "aiobfd", lab.host.ipv4, lab.peer.ipv4,
                "-r", "100", "-t", "100", "-m", "3",
                "--control-socket", lab.rundir / "aiobfd.sock",  # short: AF_UNIX limit
                log=tmp_path / "aiobfd.log", extra_env={"PYTHONPATH": "src"},
            )
        """
        argv = ["ip", "netns", "exec", self.side(ns).ns, *(os.fspath(c) for c in cmd)]
        out: IO[bytes] | int = subprocess.DEVNULL
        if log is not None:
            logfile = log.open("ab")
            self._logs.append(logfile)
            out = logfile
        kwargs.setdefault("stdout", out)
        kwargs.setdefault("stderr", subprocess.STDOUT if log is not None else out)
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        kwargs.setdefault("start_new_session", True)  # no terminal signals, own group
        if extra_env:
            kwargs["env"] = {**os.environ, **kwargs.get("env", {}), **extra_env}
        proc = subprocess.Popen(argv, **kwargs)
        self._procs.append(proc)
        return proc

    def stop_process(self, proc: subprocess.Popen[bytes], timeout: float = 3.0) -> int:
        """SIGTERM, then SIGKILL after `timeout` s; return the exit code."""
        if proc.poll() is None:
            proc.terminate()
            try:
                return proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
        return proc.wait(timeout)

    def pids(self, ns: str) -> list[int]:
        """Pids of all processes running in a namespace of this lab."""
        return _ns_pids(self.side(ns).ns)

    # -- link and addresses --------------------------------------------------------------

    def link_local(self, ns: str, timeout: float = 5.0) -> str:
        """The fe80:: address of a side's veth, waiting until it exists and is usable."""
        side = self.side(ns)

        def probe() -> str | None:
            out = self._ip(side, f"-json -6 addr show dev {side.ifname} scope link")
            for link in json.loads(out.stdout or "[]"):
                for addr in link.get("addr_info", []):  # filtered-out entries come as {}
                    if "local" in addr and not addr.get("tentative") and not addr.get("dadfailed"):
                        return str(addr["local"])
            return None

        return wait_until(probe, timeout, f"a link-local address on {side.ifname} in {side.ns}")

    def link_down(self) -> None:
        """Set the peer's veth down: the host side loses carrier and nothing passes."""
        self._ip(self.peer, f"link set {self.peer.ifname} down")

    def link_up(self, timeout: float = 5.0) -> None:
        """Undo `link_down()` and wait until both ends are operationally up."""
        self._ip(self.peer, f"link set {self.peer.ifname} up")

        def operstate(side: Side) -> str:
            [link] = json.loads(self._ip(side, f"-json link show {side.ifname}").stdout)
            return str(link["operstate"])

        def both_up() -> bool:
            return all(operstate(s) == "UP" for s in (self.host, self.peer))

        wait_until(both_up, timeout, "the veth pair to come back up")
        self.link_local(PEER, timeout)

    def drop_traffic(self) -> None:
        """Silently drop all unicast IP between the sides, links staying up.

        Each side's neighbour entries for the other side's addresses point at a
        documentation MAC, so the receiving veth discards the frames: a peer stops
        hearing us without any interface event, as with a failure in the path.
        """
        for here, there in ((self.host, self.peer), (self.peer, self.host)):
            entry = f"lladdr {BLACKHOLE_MAC} dev {here.ifname} nud permanent"
            for addr in (there.ipv4, there.ipv6, there.link_local):
                self._ip(here, f"neigh replace {addr} {entry}")

    def restore_traffic(self) -> None:
        """Undo `drop_traffic()`."""
        for side in (self.host, self.peer):
            self._ip(side, f"neigh flush dev {side.ifname} nud permanent")

    def add_macvlan(self, ns: str, name: str, *addrs: str) -> str:
        """Add a macvlan on a side's veth with addresses (each with /24 or /64); return its name.

        For several BFD sessions from one FRR toward one address: FRR keys single-hop
        sessions by interface, so each local address needs its own. ARP is answered only
        by the interface owning the address (`arp_ignore=1`). The name is prefixed with the
        lab tag ('ab' + tag + name); keep `name` to 4 characters (15-character limit).
        """
        side = self.side(ns)
        ifname = f"ab{self.tag}{name}"
        self._sysctl(side.ns, "net.ipv4.conf.all.arp_ignore", 1)
        self._ip(side, f"link add {ifname} link {side.ifname} type macvlan mode bridge")
        for addr in addrs:
            ip = ipaddress.ip_address(addr)
            plen = IPV4_PREFIXLEN if ip.version == 4 else IPV6_PREFIXLEN
            nodad = " nodad" if ip.version == 6 else ""
            self._ip(side, f"addr add {addr}/{plen} dev {ifname}{nodad}")
        self._ip(side, f"link set {ifname} up")
        return ifname

    # -- helpers -------------------------------------------------------------------------

    def _ip(self, side: Side, args: str) -> subprocess.CompletedProcess[str]:
        """`ip -n NS ARGS...`, ARGS split on whitespace."""
        return _cmd("ip", "-n", side.ns, *args.split())

    def _sysctl(self, ns: str, key: str, value: int) -> None:
        """Set a sysctl of a namespace (through /proc/sys: procps may be missing)."""
        path = "/proc/sys/" + key.replace(".", "/")
        self.run(ns, "sh", "-c", f"echo {value} > {path}")
