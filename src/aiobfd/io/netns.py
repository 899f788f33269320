"""Sockets in another network namespace, and sockets bound to a device.

A session bound to a network namespace (``netns = "NAME"``, the namespaces
``ip netns add`` keeps under ``/run/netns``) has every socket of its own
created inside that namespace.  Only ``socket()`` needs to happen there: a
socket belongs for life to the namespace it was created in, and ``bind``,
``connect``, ``setsockopt`` and the I/O on it work from any thread whatever
namespace that thread is in.

So :func:`socket_in` creates the socket in a short-lived helper thread that
enters the namespace with ``setns(2)`` and ends: the namespace of a thread is
its own (``setns`` with ``CLONE_NEWNET`` changes the calling thread only), so
the event loop's thread never leaves the daemon's namespace.  Doing the
``setns`` on the loop thread and back would be cheaper (no thread), but any
failure to come back (or a signal handler, a hook started, a name looked up
in between) would leave the whole daemon in the wrong namespace; a thread
that ends cannot leak its namespace.  Sockets are opened when a session
starts or a peer's own socket is made (at most once a second a peer), so the
thread's cost (~0.1 ms) is paid rarely.

A session bound to an interface or a VRF has its sockets bound to that
device (``SO_BINDTODEVICE``; a VRF is its l3mdev device).  Since Linux 5.7 a
socket not bound to a device yet may be bound without privilege; before, or
to bind it again, CAP_NET_RAW is needed.  Entering a namespace needs
CAP_SYS_ADMIN.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import os
import socket
import struct
import threading
from typing import Final

#: The directory of named network namespaces (iproute2's ``ip netns``).
NETNS_RUN_DIR: Final = "/run/netns"
#: setns(2): join a network namespace.
CLONE_NEWNET: Final = 0x40000000
#: ioctl: an interface's index by name, in the socket's namespace.
SIOCGIFINDEX: Final = 0x8933
_IFREQ = struct.Struct("16si20x")

_libc: ctypes.CDLL | None = None


class BindingError(OSError):
    """A socket cannot be placed in its namespace or bound to its device; the
    message says why in one line (and which capability is missing)."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


def _setns(fd: int) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def socket_in(netns: str, family: int, kind: int, proto: int = 0) -> socket.socket:
    """A new socket in the network namespace ``netns`` ("": the daemon's own).

    Raises :class:`BindingError` when the namespace does not exist or cannot
    be entered (no CAP_SYS_ADMIN).
    """
    if not netns:
        return socket.socket(family, kind, proto)
    path = os.path.join(NETNS_RUN_DIR, netns)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise BindingError(exc.errno, f"netns {netns}: {path}: {exc.strerror}") from None
    result: list[socket.socket | BaseException] = []

    def create() -> None:
        try:
            _setns(fd)
            result.append(socket.socket(family, kind, proto))
        except BaseException as exc:
            result.append(exc)

    try:
        helper = threading.Thread(target=create, name=f"netns-{netns}", daemon=True)
        helper.start()
        helper.join()
    finally:
        os.close(fd)
    if not result:
        raise BindingError(errno.EIO, f"netns {netns}: the helper thread failed")
    got = result[0]
    if isinstance(got, socket.socket):
        return got
    if isinstance(got, OSError):
        if got.errno == errno.EPERM:
            raise BindingError(
                got.errno, f"netns {netns}: entering a network namespace needs CAP_SYS_ADMIN"
            ) from None
        if got.errno == errno.EINVAL:
            raise BindingError(got.errno, f"netns {netns}: {path} is not a network namespace")
        raise BindingError(got.errno, f"netns {netns}: {got.strerror}") from None
    raise got


def bind_to_device(sock: socket.socket, device: str) -> None:
    """``SO_BINDTODEVICE``: ``sock`` sends and receives through ``device`` only
    (an interface, or a VRF's l3mdev device: its routing table).  Raises
    :class:`BindingError` with the reason (no such device, CAP_NET_RAW)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, device.encode())
    except OSError as exc:
        if exc.errno == errno.EPERM:
            raise BindingError(
                exc.errno,
                f"binding to {device} (SO_BINDTODEVICE) needs CAP_NET_RAW (or Linux 5.7 or later)",
            ) from None
        if exc.errno == errno.ENODEV:
            raise BindingError(exc.errno, f"no interface named {device}") from None
        raise BindingError(exc.errno, f"binding to {device}: {exc.strerror}") from None


def ifindex_of(sock: socket.socket, device: str) -> int:
    """The index of ``device`` in ``sock``'s namespace (``if_nametoindex`` looks
    in the calling thread's); BindingError when there is no such device."""
    try:
        reply = fcntl.ioctl(sock.fileno(), SIOCGIFINDEX, _IFREQ.pack(device.encode(), 0))
    except OSError as exc:
        raise BindingError(exc.errno, f"no interface named {device}") from None
    return int(_IFREQ.unpack(reply)[1])
