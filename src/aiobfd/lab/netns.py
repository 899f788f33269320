"""Network namespaces for labs: commands, ownership, stale cleanup, and `NetnsLab`.

For tests, benchmarks and example labs, never for the daemon itself. Needs root and
iproute2 (``ip``); nothing here runs outside the namespaces it makes, except ``ip`` to
make and remove them and clients that talk over Unix sockets.

`NetnsLab` owns what it makes: a scratch directory ``/tmp/<ns_prefix><tag>``, network
namespaces ``<ns_prefix><tag><suffix>``, veth pairs ``<if_prefix><tag><suffix>`` and
the processes it starts in them. `NetnsLab.close` removes all of it, also when the
body of its ``with`` raised, was interrupted, or the interpreter exits (atexit).
Subclasses draw the topology in `NetnsLab._build`.

Each user (the tests, the benchmark, an example lab) names its things with a
`Naming` of its own, so that `cleanup_stale`, which removes what a killed run left
behind, never touches a concurrent user's lab. Ownership is recorded where the
things live: the alias of each namespace's ``lo`` and a file in the scratch directory
name the owning process (pid and start time). A namespace, scratch directory or
root-namespace veth is stale when its owner no longer runs, or is this process and
no open lab holds it. Creation and the decision to remove hold one lock
(``/run/lock/aiobfd-lab.lock``), so a namespace is never seen between being made
and being tagged, and no age rule is needed.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self, TypeVar

T = TypeVar("T")

LOCK = Path("/run/lock/aiobfd-lab.lock")
"""Held while a lab makes a scratch directory or a namespace and tags it, and while
`cleanup_stale` decides what is stale."""

_OWNER_ALIAS = "aiobfd-lab"
_OWNER_RE = re.compile(r"(?:aiobfd-lab|abfds?-lab) pid=(\d+)(?: start=(\d+))?")
"""Also the tags of earlier versions ('abfd-lab pid=N', 'abfds-lab pid=N')."""
_OWNER_FILE = "owner"
_LIVE: set[str] = set()
"""Namespaces and scratch directories of this process's labs that are open."""


class LabError(RuntimeError):
    """Setting up, driving or tearing down a lab failed."""


class CommandError(LabError):
    """A command exited non-zero; the message carries its output."""

    def __init__(self, cmd: Sequence[str], returncode: int, stdout: str, stderr: str) -> None:
        self.cmd = list(cmd)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        out = "\n".join(s.strip() for s in (stdout, stderr) if s.strip())
        super().__init__(f"{' '.join(self.cmd)!r} exited {returncode}:\n{out}")


class LabTimeout(LabError, TimeoutError):
    """A wait ran past its deadline (both a `LabError` and a `TimeoutError`)."""


# -- commands and waits ----------------------------------------------------------------


def run(
    *cmd: str | os.PathLike[str],
    check: bool = True,
    timeout: float = 10.0,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command in this process's namespace, capturing its text output.

    Raises `CommandError` (with stdout and stderr) when `check` and it exits non-zero.
    """
    argv = [os.fspath(c) for c in cmd]
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


def wait_until(
    probe: Callable[[], T | None],
    timeout: float,
    what: str | Callable[[], str],
    interval: float = 0.05,
) -> T:
    """Call `probe` until it returns something other than None or False; return that.

    Raises `LabTimeout` after `timeout` seconds, with `what` (or what it returns, so
    the message can show the last state and logs) in the message.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result is not None and result is not False:
            return result
        if time.monotonic() >= deadline:
            detail = what() if callable(what) else what
            raise LabTimeout(f"timed out after {timeout:g} s waiting for {detail}")
        time.sleep(interval)


def log_tail(path: Path, lines: int = 30) -> str:
    """The last `lines` lines of a log file, headed by its name, for error messages."""
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"--- {path}: {exc.strerror}"
    tail = text.splitlines()[-lines:]
    return "\n".join([f"--- last {len(tail)} lines of {path}", *tail])


def missing_tools(*tools: str | Path) -> list[str]:
    """Those of `tools` (names looked up on PATH, or paths) that are not installed."""
    return [
        str(t)
        for t in tools
        if (shutil.which(t) is None if isinstance(t, str) else not Path(t).is_file())
    ]


# -- processes -----------------------------------------------------------------------------


def _start_time(pid: int) -> int | None:
    """When `pid` started (clock ticks after boot), None if it is gone or a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return None if fields[0] in ("Z", "X") else int(fields[19])


def pid_alive(pid: int, start: int | None = None) -> bool:
    """Whether `pid` runs (a zombie counts as gone); with `start`, whether it is still
    the process that started then, not a later one that reuses the pid."""
    started = _start_time(pid)
    return started is not None and start in (None, started)


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 3.0) -> int:
    """SIGCONT and SIGTERM, then SIGKILL to its process group after `timeout` s.

    SIGCONT first: a stopped process would hold SIGTERM until continued. Returns the
    exit status; raises `subprocess.TimeoutExpired` if even SIGKILL did not end it.
    """
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGCONT)
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
    return proc.wait(timeout)


# -- namespaces ----------------------------------------------------------------------------


def list_namespaces(prefix: str) -> list[str]:
    """Names of the network namespaces that start with `prefix`."""
    out = run("ip", "-json", "netns", "list").stdout.strip()
    names = [entry["name"] for entry in json.loads(out)] if out else []
    return sorted(n for n in names if n.startswith(prefix))


def ns_pids(ns: str) -> list[int]:
    """Pids of all processes running in namespace `ns`."""
    return [int(p) for p in run("ip", "netns", "pids", ns, check=False).stdout.split()]


def delete_namespace(ns: str, timeout: float = 3.0) -> None:
    """SIGKILL whatever still runs in `ns`, wait until it is gone, delete `ns`."""
    pids = ns_pids(ns)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(LabTimeout):
        wait_until(lambda: not any(pid_alive(p) for p in pids), timeout, f"processes of {ns}")
    run("ip", "netns", "delete", ns, check=False)


@dataclass(frozen=True)
class Naming:
    """How one user of labs names what it makes, apart from every other user.

    Namespaces and scratch directories are ``ns_prefix + tag (+ suffix)``, links
    ``if_prefix + tag + suffix`` (15 characters at most); the tag is 6 random hex
    digits. Give each user (tests, a benchmark, an example) prefixes that no other
    user's prefixes start with: `cleanup_stale` of one never sees another's labs.
    """

    ns_prefix: str
    """For example 'abfd-': namespaces 'abfd-1a2b3ch', scratch directory /tmp/abfd-1a2b3c."""
    if_prefix: str
    """For example 'ab': links 'ab1a2b3ch'."""

    def _tag(self, prefix: str, name: str) -> str | None:
        match = re.match(re.escape(prefix) + "([0-9a-f]{6})", name)
        return match.group(1) if match else None

    def namespace_tag(self, name: str) -> str | None:
        """The tag of one of this user's namespaces or scratch directories, else None."""
        return self._tag(self.ns_prefix, name)

    def interface_tag(self, name: str) -> str | None:
        """The tag of one of this user's links, else None."""
        return self._tag(self.if_prefix, name)

    def rundir(self, tag: str) -> Path:
        return Path(tempfile.gettempdir(), f"{self.ns_prefix}{tag}")

    def rundirs(self) -> list[Path]:
        """This user's scratch directories (of any process)."""
        pattern = re.compile(re.escape(self.ns_prefix) + "[0-9a-f]{6}")
        tmp = Path(tempfile.gettempdir())
        return sorted(p for p in tmp.glob(f"{self.ns_prefix}*") if pattern.fullmatch(p.name))


@contextlib.contextmanager
def _lock() -> Iterator[None]:
    path = LOCK if LOCK.parent.is_dir() else Path(tempfile.gettempdir(), LOCK.name)
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield  # closing the file releases the lock


def _owner_tag() -> str:
    return f"{_OWNER_ALIAS} pid={os.getpid()} start={_start_time(os.getpid())}"


def _owner_live(text: str, thing: str) -> bool:
    """Whether the owner named in `text` (an owner tag) still holds `thing`."""
    match = _OWNER_RE.search(text)
    if match is None:  # untagged: under the lock, nobody is still making it
        return False
    pid = int(match.group(1))
    if pid == os.getpid():
        return thing in _LIVE
    return pid_alive(pid, int(match.group(2)) if match.group(2) else None)


def _namespace_live(ns: str) -> bool:
    lo = run("ip", "-n", ns, "-details", "link", "show", "lo", check=False).stdout
    return _owner_live(lo, ns)


def _rundir_live(path: Path) -> bool:
    try:
        text = (path / _OWNER_FILE).read_text()
    except OSError:
        text = ""
    return _owner_live(text, str(path))


def _root_veths() -> list[str]:
    out = run("ip", "-json", "link", "show", "type", "veth").stdout
    return [link["ifname"] for link in json.loads(out or "[]")]


def cleanup_stale(naming: Naming) -> list[str]:
    """Remove what labs of `naming` left behind when their process died; return it.

    Namespaces (after SIGKILL to whatever still runs in them), scratch directories and
    veths in the root namespace whose owner is gone are removed; those of live labs,
    such as a parallel run's, are left alone. Other users' labs are never looked at.
    """
    with _lock():
        names = list_namespaces(naming.ns_prefix)
        stale = [ns for ns in names if not _namespace_live(ns)]
        live_tags = {naming.namespace_tag(ns) for ns in names if ns not in stale}
        rundirs = [
            d
            for d in naming.rundirs()
            if naming.namespace_tag(d.name) not in live_tags and not _rundir_live(d)
        ]
        veths = [
            name
            for name in _root_veths()
            if (tag := naming.interface_tag(name)) is not None and tag not in live_tags
        ]
    for ns in stale:
        delete_namespace(ns)
    # A veth left in the root namespace by an interrupted setup (deleting one end
    # deletes the other: only what was there is reported).
    veths = [v for v in veths if run("ip", "link", "delete", v, check=False).returncode == 0]
    for d in rundirs:
        shutil.rmtree(d, ignore_errors=True)
    return [*stale, *veths, *(str(d) for d in rundirs)]


# -- a lab ---------------------------------------------------------------------------------


class NetnsLab:
    """Namespaces, links and processes one lab owns; a context manager.

    Namespaces are known by a role (a short name the subclass gives, such as 'host')
    or by their own name; every method taking ``ns`` accepts either. `rundir` is a
    short scratch directory (mode 0755: FRR's user must reach its subdirectories) for
    sockets, pid files and logs; it is removed on close, so copy what should be kept.
    """

    def __init__(self, naming: Naming, *, nice: int = 0) -> None:
        self.naming = naming
        self.nice = nice
        """Niceness of the processes `popen` starts, unless it is told otherwise
        (negative: ahead of other work)."""
        self.tag = ""
        self.rundir = Path()
        self.namespaces: dict[str, str] = {}
        """Role -> namespace name, in the order they were made."""
        self._veths: list[str] = []
        self._procs: list[subprocess.Popen[bytes]] = []
        self._files: list[IO[bytes]] = []
        self._open = False

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> Self:
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
        """Make the scratch directory, then `_build`; undo everything if that fails."""
        if self._open:
            raise LabError("lab already started")
        self._open = True
        atexit.register(self.close)
        try:
            self._make_rundir()
            self._build()
        except BaseException:
            self.close(raise_errors=False)
            raise

    def _build(self) -> None:
        """Make the namespaces, links and addresses (subclasses)."""

    def _make_rundir(self) -> None:
        with _lock():
            for _ in range(16):
                tag = secrets.token_hex(3)
                path = self.naming.rundir(tag)
                try:
                    path.mkdir(mode=0o755)
                except FileExistsError:
                    continue
                path.chmod(0o755)  # despite the umask
                (path / _OWNER_FILE).write_text(_owner_tag() + "\n")
                self.tag, self.rundir = tag, path
                _LIVE.add(str(path))
                return
        raise LabError("no free lab tag")

    def stop_processes(self) -> list[str]:
        """Stop every process `popen` started, last first; return what went wrong."""
        errors = []
        while self._procs:
            proc = self._procs.pop()
            try:
                stop_process(proc)
            except Exception as exc:
                errors.append(f"stopping pid {proc.pid}: {exc}")
        for f in self._files:
            f.close()
        self._files.clear()
        return errors

    def close(self, raise_errors: bool = False) -> None:
        """Stop processes, delete namespaces, links and the scratch directory. Idempotent.

        Errors are collected so that one failing step does not stop the others; they are
        raised as `LabError` only when `raise_errors` (the body did not raise).
        """
        if not self._open:
            return
        self._open = False
        atexit.unregister(self.close)
        errors = self.stop_processes()
        for ns in reversed(self.namespaces.values()):
            try:
                delete_namespace(ns)
            except Exception as exc:
                errors.append(f"deleting {ns}: {exc}")
            _LIVE.discard(ns)
        for name in self._veths:  # still there only if it never reached a namespace
            with contextlib.suppress(Exception):
                run("ip", "link", "delete", name, check=False)
        if self.rundir != Path():
            shutil.rmtree(self.rundir, ignore_errors=True)
            _LIVE.discard(str(self.rundir))
        try:
            present = set(list_namespaces(self.naming.ns_prefix))
        except Exception as exc:
            errors.append(f"listing namespaces: {exc}")
            present = set()
        if leftover := [ns for ns in self.namespaces.values() if ns in present]:
            errors.append(f"namespaces left behind: {leftover}")
        if errors and raise_errors:
            raise LabError("lab cleanup failed: " + "; ".join(errors))

    # -- building --------------------------------------------------------------------------

    def ifname(self, suffix: str) -> str:
        """The name of a link of this lab: if_prefix + tag + suffix."""
        name = f"{self.naming.if_prefix}{self.tag}{suffix}"
        if len(name) > 15:
            raise LabError(f"link name {name!r} longer than 15 characters")
        return name

    def add_namespace(self, role: str, suffix: str) -> str:
        """Make namespace ns_prefix + tag + `suffix`, known as `role`, with `lo` up."""
        ns = f"{self.naming.ns_prefix}{self.tag}{suffix}"
        with _lock():
            run("ip", "netns", "add", ns)
            self.namespaces[role] = ns
            _LIVE.add(ns)
            run("ip", "-n", ns, "link", "set", "lo", "alias", _owner_tag())
        run("ip", "-n", ns, "link", "set", "lo", "up")
        return ns

    def add_veth(
        self,
        ns_a: str,
        if_a: str,
        ns_b: str,
        if_b: str,
        *,
        mac_a: str | None = None,
        mac_b: str | None = None,
    ) -> None:
        """A veth pair made directly in two namespaces (`if_a` in `ns_a`, `if_b` in `ns_b`)."""
        self._veths.append(if_a)
        address_a = ["address", mac_a] if mac_a else []
        address_b = ["address", mac_b] if mac_b else []
        run("ip", "link", "add", if_a, *address_a, "netns", self.netns(ns_a), "type", "veth",
            "peer", "name", if_b, *address_b, "netns", self.netns(ns_b))  # fmt: skip

    # -- running things --------------------------------------------------------------------

    def netns(self, ns: str) -> str:
        """The namespace name for a role or a namespace name of this lab."""
        if ns in self.namespaces:
            return self.namespaces[ns]
        if ns in self.namespaces.values():
            return ns
        raise LabError(f"no namespace {ns!r} in this lab")

    def role(self, ns: str) -> str:
        """The role for a role or a namespace name of this lab."""
        name = self.netns(ns)
        return next(role for role, n in self.namespaces.items() if n == name)

    def run(
        self,
        ns: str,
        *cmd: str | os.PathLike[str],
        check: bool = True,
        timeout: float = 10.0,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command to completion in a namespace (see `run`)."""
        return run("ip", "netns", "exec", self.netns(ns), *cmd, check=check, timeout=timeout,
                   input=input)  # fmt: skip

    def ip(
        self, ns: str, args: str, check: bool = True, timeout: float = 10.0
    ) -> subprocess.CompletedProcess[str]:
        """``ip -n NS ARGS...``, ARGS split on whitespace."""
        return run("ip", "-n", self.netns(ns), *args.split(), check=check, timeout=timeout)

    def ip_batch(self, ns: str, lines: Sequence[str], timeout: float = 300.0) -> None:
        """Many ``ip`` commands in one process (``ip -n NS -batch -``)."""
        if lines:
            run("ip", "-n", self.netns(ns), "-batch", "-", input="\n".join(lines) + "\n",
                timeout=timeout)  # fmt: skip

    def sysctls(self, ns: str, values: Mapping[str, int]) -> None:
        """Set sysctls of a namespace (through /proc/sys: procps may be missing)."""
        script = "; ".join(f"echo {v} > /proc/sys/{k.replace('.', '/')}" for k, v in values.items())
        self.run(ns, "sh", "-c", script)

    def sysctl(self, ns: str, key: str, value: int) -> None:
        self.sysctls(ns, {key: value})

    def popen(
        self,
        ns: str,
        *cmd: str | os.PathLike[str],
        log: Path | None = None,
        extra_env: Mapping[str, str] | None = None,
        cpu: int | None = None,
        nice: int | None = None,
        **kwargs: Any,
    ) -> subprocess.Popen[bytes]:
        """Start a background process in a namespace; it is stopped when the lab closes.

        `ip netns exec` execs the command, so the returned pid is the command's own (or
        that of ``nice``/``taskset``, which exec it in turn), in a process group of its
        own. stdout and stderr go to `log` (appended) when given, else to /dev/null,
        unless passed in `kwargs`. `extra_env` is added to the environment, `cpu` pins
        the process, `nice` (default: the lab's `nice`) sets its niceness. Other
        `kwargs` go to `subprocess.Popen` (for example `cwd` or a whole `env`).
        """
        nice = self.nice if nice is None else nice
        wrap = ["nice", "-n", str(nice)] if nice else []
        wrap += ["taskset", "-c", str(cpu)] if cpu is not None else []
        argv = ["ip", "netns", "exec", self.netns(ns), *wrap, *(os.fspath(c) for c in cmd)]
        out: IO[bytes] | int = subprocess.DEVNULL
        if log is not None:
            out = log.open("ab")
            self._files.append(out)
        kwargs.setdefault("stdout", out)
        kwargs.setdefault("stderr", subprocess.STDOUT if log is not None else out)
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        kwargs.setdefault("start_new_session", True)  # no terminal signals, own group
        if extra_env:
            kwargs["env"] = {**os.environ, **(kwargs.get("env") or {}), **extra_env}
        proc = subprocess.Popen(argv, **kwargs)
        self._procs.append(proc)
        return proc

    def stop_process(self, proc: subprocess.Popen[bytes], timeout: float = 3.0) -> int:
        """SIGTERM, then SIGKILL after `timeout` s; return the exit code."""
        return stop_process(proc, timeout)

    def pids(self, ns: str) -> list[int]:
        """Pids of all processes running in a namespace of this lab."""
        return ns_pids(self.netns(ns))
