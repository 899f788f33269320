"""Open files: the descriptors the daemon's sessions need, and RLIMIT_NOFILE raised to fit.

Each session holds two descriptors: its transmit socket, bound to a source port
of its own (RFC 5881 §4), and, once established, a receive socket connected to
the peer (docs/performance.md, "Descriptors and source ports", says why both).
With the listening sockets, the connections the control socket and the metrics
endpoint accept at most, the hooks' pipes and what the process itself holds,
:func:`needed` is what a configuration needs; :func:`fit` raises the soft
limit to cover it (and, with CAP_SYS_RESOURCE, the hard limit, which the kernel
caps at ``fs.nr_open``).

Only the transmit socket is indispensable: a session without a receive socket
of its own is read from its address's listener, at a higher cost a packet.  So
when the limit cannot reach the need but reaches the *minimum* (one descriptor
a session), :func:`fit` says how many receive sockets fit
(:attr:`Fit.receive_sockets`), the daemon gives no more than that, and the
application logs one line naming the knob; below the minimum it raises
:class:`FileLimitError` with one line that names the limit, the number needed
and the knob.

A process without the privilege can raise its soft limit up to the hard one
and no further: under systemd that is the unit's ``LimitNOFILE=``, in a shell
``ulimit -n``.
"""

from __future__ import annotations

import contextlib
import resource
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

#: Descriptors a session holds: its transmit socket and its receive socket.
PER_SESSION: Final = 2
#: ... of which it cannot do without one: the transmit socket.
PER_SESSION_MINIMUM: Final = 1
#: ... and a removed one while it says AdminDown (its transmit socket, 100 ms).
PER_FAREWELL: Final = 1
#: A listening socket per local address (and per port: 3784, 4784).
PER_LISTENER: Final = 1
#: Connections the control socket serves at once (aiobfd.control.MAX_CLIENTS).
CONTROL_CONNECTIONS: Final = 64
#: Connections the metrics endpoint holds at once (HttpLimits.max_connections).
METRICS_CONNECTIONS: Final = 64
#: A running hook: its stdout and stderr pipes, both ends while it starts.
PER_HOOK: Final = 4
#: What the process holds besides: standard input, output and error; the event
#: loop's epoll and wake-up pipe; the receive path's epoll and the timerfd; the
#: log file and syslog socket; systemd's notification socket; the route
#: lookup's netlink socket; the listening sockets of the control socket and the
#: metrics endpoint; what a reload reads (the file, key files, the resolver's
#: sockets).  Counted generously: a few dozen at most are open.
PROCESS: Final = 64

#: The kernel's ceiling on any process's RLIMIT_NOFILE.
NR_OPEN_PATH: Final = "/proc/sys/fs/nr_open"
#: fs.nr_open's default, when the file cannot be read.
NR_OPEN_DEFAULT: Final = 1024 * 1024


def needed(
    sessions: int,
    listeners: int,
    *,
    unsolicited: int = 0,
    hooks: int = 0,
    farewells: int = 0,
    receive_sockets: bool = True,
) -> int:
    """Descriptors needed by ``sessions`` configured sessions on ``listeners``
    listening sockets, at most ``unsolicited`` sessions created by remotes (RFC
    9468), ``hooks`` hooks running at once and ``farewells`` removed sessions
    still saying AdminDown (a reload); without ``receive_sockets``, the
    minimum: no session with a receive socket of its own."""
    per_session = PER_SESSION if receive_sockets else PER_SESSION_MINIMUM
    return (
        per_session * (sessions + unsolicited)
        + PER_FAREWELL * farewells
        + PER_LISTENER * listeners
        + CONTROL_CONNECTIONS
        + METRICS_CONNECTIONS
        + PER_HOOK * hooks
        + PROCESS
    )


class FileLimitError(Exception):
    """RLIMIT_NOFILE is too low for the configuration and cannot be raised (one line)."""


@dataclass(frozen=True, slots=True)
class Fit:
    """What :func:`fit` found and did: the limits (soft, hard) before and after,
    and how many sessions may have a receive socket of their own (None: all)."""

    need: int
    before: tuple[int, int]
    after: tuple[int, int]
    receive_sockets: int | None = None

    @property
    def raised(self) -> bool:
        return self.after != self.before


def read_nr_open(path: str = NR_OPEN_PATH) -> int:
    """``fs.nr_open``: the highest RLIMIT_NOFILE the kernel allows."""
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return NR_OPEN_DEFAULT


def covers(limit: int, need: int) -> bool:
    """Whether a limit of ``limit`` descriptors (RLIM_INFINITY: none) is ``need`` or more."""
    return limit == resource.RLIM_INFINITY or limit >= need


def fit(
    need: int,
    what: str = "the sessions",
    *,
    minimum: int | None = None,
    nr_open: Callable[[], int] = read_nr_open,
) -> Fit:
    """Raise RLIMIT_NOFILE so that ``need`` descriptors fit; FileLimitError when
    not even ``minimum`` (default: ``need``) fits.

    The soft limit goes up to the hard one (as far as it goes: sockets the
    configuration does not count, such as a session added with ``aiobfdctl peer
    add``, have room too).  When the hard limit is below ``need``, it is raised
    to ``need`` - which only a process with CAP_SYS_RESOURCE (root) may do, and
    the kernel allows up to ``fs.nr_open`` (read only then).  ``what`` names
    what needs them, for the message.  Between ``minimum`` and ``need``, the
    sessions' receive sockets are what is short: the result says how many fit.
    """
    getrlimit, setrlimit, kind = resource.getrlimit, resource.setrlimit, resource.RLIMIT_NOFILE
    before = soft, hard = getrlimit(kind)
    ceiling: int | None = None
    if not covers(hard, need):
        ceiling = nr_open()
        with contextlib.suppress(ValueError, OSError):  # EPERM: not privileged
            setrlimit(kind, (min(need, ceiling), min(need, ceiling)))
            soft, hard = getrlimit(kind)
    if soft != hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, need)
        with contextlib.suppress(ValueError, OSError):
            setrlimit(kind, (target, hard))
            soft, hard = getrlimit(kind)
    if covers(soft, need):
        return Fit(need, before, (soft, hard))
    floor = need if minimum is None else minimum
    if not covers(soft, floor):
        raise FileLimitError(refusal(need, soft, hard, what, ceiling, floor))
    # One descriptor a receive socket: those that fit above the minimum.
    return Fit(need, before, (soft, hard), receive_sockets=soft - floor)


def describe(limits: tuple[int, int]) -> str:
    """RLIMIT_NOFILE's (soft, hard) for a message."""
    return "/".join("unlimited" if v == resource.RLIM_INFINITY else str(v) for v in limits)


def shortfall(fit: Fit, sessions: int, what: str = "the sessions") -> str:
    """The one line that says some sessions are read from the shared listener, and the knob."""
    shared = sessions - (fit.receive_sockets or 0)
    return (
        f"RLIMIT_NOFILE {describe(fit.after)} is short of the {fit.need} descriptors {what} "
        f"need for a receive socket each: up to {shared} session(s) will be read from the "
        f"shared listener instead, at a higher cost a packet; set LimitNOFILE={fit.need} in "
        f"the systemd unit, or ulimit -n {fit.need} in the shell that starts aiobfd"
    )


def refusal(
    need: int,
    soft: int,
    hard: int,
    what: str = "the sessions",
    nr_open: int | None = None,
    minimum: int | None = None,
) -> str:
    """The one line that says the limit is short, by how much and what raises it."""
    limit = "unlimited" if soft == resource.RLIM_INFINITY else str(soft)
    hard_text = "unlimited" if hard == resource.RLIM_INFINITY else str(hard)
    least = f" ({minimum} at the least)" if minimum is not None and minimum < need else ""
    kernel = (
        f" (and first sysctl fs.nr_open={need}: the kernel allows {nr_open} at most)"
        if nr_open is not None and nr_open < need
        else ""
    )
    return (
        f"RLIMIT_NOFILE too low: {what} need {need} descriptors{least} and the limit is {limit} "
        f"(hard limit {hard_text}); set LimitNOFILE={need} in the systemd unit, or "
        f"ulimit -n {need} in the shell that starts aiobfd{kernel}"
    )
