"""A one-shot wake-up on the event loop, precise to the microsecond (Linux timerfd).

asyncio sleeps in ``epoll_wait``, whose timeout is in whole milliseconds and
is rounded up: a ``call_at`` fires up to 1 ms after its time.  For a Detection
Time of a few tens of milliseconds that is a lot.  A timerfd is a file
descriptor that becomes readable at an absolute CLOCK_MONOTONIC instant (the
protocol clock, ``time.monotonic_ns``) with the kernel's hrtimer precision;
the loop watches it like any socket.  Python has no binding for it before
3.13, so it is called through ``ctypes``; where that fails,
:func:`open_precise_timer` returns None and the caller keeps ``call_at``.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
from collections.abc import Callable

#: Linux values (<sys/timerfd.h>).
CLOCK_MONOTONIC = 1
TFD_CLOEXEC = 0o2000000
TFD_NONBLOCK = 0o4000
TFD_TIMER_ABSTIME = 1

_NS_PER_US = 1000
_US_PER_S = 1_000_000


class _Timespec(ctypes.Structure):
    _fields_ = (("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long))


class _Itimerspec(ctypes.Structure):
    _fields_ = (("it_interval", _Timespec), ("it_value", _Timespec))


class PreciseTimer:
    """One timer: :meth:`arm` at an instant (integer microseconds of
    CLOCK_MONOTONIC), and the loop calls ``callback`` then.  Arming again
    moves it; an expiry not yet served is forgotten."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        callback: Callable[[], None],
        fd: int,
        settime: Callable[..., int],
    ) -> None:
        self._loop = loop
        self._callback = callback
        self._fd = fd
        self._settime = settime
        self._spec = _Itimerspec()
        self._spec_ref = ctypes.byref(self._spec)
        self.armed_at: int | None = None
        loop.add_reader(fd, self._fired)

    def arm(self, at_us: int) -> None:
        value = self._spec.it_value
        if at_us <= 0:
            at_us = 1  # zero would disarm; an instant passed fires at once
        value.tv_sec, rest = divmod(at_us, _US_PER_S)
        value.tv_nsec = rest * _NS_PER_US
        if self._settime(self._fd, TFD_TIMER_ABSTIME, self._spec_ref, None) != 0:
            raise OSError(ctypes.get_errno(), "timerfd_settime failed")
        self.armed_at = at_us

    def disarm(self) -> None:
        value = self._spec.it_value
        value.tv_sec = value.tv_nsec = 0
        if self._settime(self._fd, 0, self._spec_ref, None) != 0:
            raise OSError(ctypes.get_errno(), "timerfd_settime failed")
        self.armed_at = None

    def _fired(self) -> None:
        try:
            os.read(self._fd, 8)  # the expiry count: reading it clears the fd
        except (BlockingIOError, InterruptedError):
            return  # re-armed after it became readable: not due any more
        self.armed_at = None
        self._callback()

    def close(self) -> None:
        if self._fd < 0:
            return
        if not self._loop.is_closed():
            self._loop.remove_reader(self._fd)
        os.close(self._fd)
        self._fd = -1
        self.armed_at = None


def open_precise_timer(
    loop: asyncio.AbstractEventLoop, callback: Callable[[], None]
) -> PreciseTimer | None:
    """A :class:`PreciseTimer` on ``loop``, or None where timerfd is not there."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        create = libc.timerfd_create
        settime = libc.timerfd_settime
    except (OSError, AttributeError):
        return None
    create.argtypes = (ctypes.c_int, ctypes.c_int)
    create.restype = ctypes.c_int
    settime.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)
    settime.restype = ctypes.c_int
    fd = create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)
    if fd < 0:
        return None
    try:
        return PreciseTimer(loop, callback, fd, settime)
    except (OSError, NotImplementedError):
        os.close(fd)
        return None
