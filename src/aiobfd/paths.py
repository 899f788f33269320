"""Where the control socket lives by default, and which directories may hold it.

A room of its own so that the clients (:mod:`aiobfd.client`, ``aiobfdctl``,
``aiobfd-exabgp``) find the socket without importing the server, the engine
or asyncio.

The socket is how an operator (and ExaBGP) learns whether a path is alive, so
nobody but the daemon's user (or root) may put a socket where the clients look
for it.  The default is therefore never a name in a world-writable directory
that another user could take first (as ``/tmp/aiobfd-UID.sock`` was):

* as root: ``/run/aiobfd/aiobfd.sock``;
* ``$XDG_RUNTIME_DIR/aiobfd.sock`` when that directory is this user's;
* ``/run/user/UID/aiobfd.sock`` when that directory exists and is this user's;
* else ``/tmp/aiobfd-UID/aiobfd.sock``: the daemon creates that directory with
  mode 0700 and refuses it if it exists and is not this user's.

:func:`check_socket_directory` is the rule the server applies to whatever
directory it binds in (default or ``--control-socket``); the clients check
the daemon itself (its uid, from the connected socket) in
:mod:`aiobfd.client`: root or this user, or for root the owner of a directory
only its owner may write in (``/run/aiobfd`` of the systemd unit, which runs
the daemon as ``aiobfd``).
"""

from __future__ import annotations

import contextlib
import os
import stat

ROOT_SOCKET = "/run/aiobfd/aiobfd.sock"
SOCKET_NAME = "aiobfd.sock"
#: Where systemd-logind makes each user's runtime directory.
RUN_USER_DIR = "/run/user"
#: Where the private fallback directory ``aiobfd-UID`` is made.
TMP_DIR = "/tmp"


class UnsafeDirectory(OSError):
    """A directory another user could put a socket in; the message says why."""


def default_socket_path() -> str:
    """The default control socket of this user (see the module docstring).

    It only looks at the file system (nothing is created), so the daemon and
    its clients agree on it.
    """
    uid = os.geteuid()
    if uid == 0:
        return ROOT_SOCKET
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isabs(runtime) and private_to(runtime, uid):
        return os.path.join(runtime, SOCKET_NAME)
    run_user = os.path.join(RUN_USER_DIR, str(uid))
    if private_to(run_user, uid):
        return os.path.join(run_user, SOCKET_NAME)
    return os.path.join(TMP_DIR, f"aiobfd-{uid}", SOCKET_NAME)


def private_to(directory: str, uid: int) -> bool:
    """`directory` is a real directory of `uid` that no one else may write in."""
    try:
        st = os.lstat(directory)
    except OSError:
        return False
    return (
        stat.S_ISDIR(st.st_mode)
        and st.st_uid == uid
        and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    )


def check_socket_directory(directory: str, *, create: bool = True) -> None:
    """Make sure only this user (or root) can place a socket in `directory`.

    Missing, it is created with mode 0700 (its parents as ``os.makedirs``
    makes them).  Raises :class:`UnsafeDirectory` (one sentence naming the
    directory) when it is not a directory, belongs to another user, or may be
    written by others without the sticky bit (``/tmp`` itself is fine: owned
    by root, sticky).  A symbolic link is followed, but must itself belong to
    this user or root.
    """
    directory = directory or "."
    if create:
        with contextlib.suppress(FileExistsError):
            os.makedirs(directory, mode=0o700)
    uid = os.geteuid()
    trusted = (0, uid)
    link = os.lstat(directory)
    if stat.S_ISLNK(link.st_mode) and link.st_uid not in trusted:
        raise UnsafeDirectory(
            f"{directory} is a symbolic link of uid {link.st_uid}, not of this user "
            f"({uid}) or root: refusing to put the control socket there"
        )
    st = os.stat(directory)
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafeDirectory(f"{directory} is not a directory")
    if st.st_uid not in trusted:
        raise UnsafeDirectory(
            f"{directory} belongs to uid {st.st_uid}, not to this user ({uid}) or root: "
            "refusing to put the control socket there"
        )
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not st.st_mode & stat.S_ISVTX:
        raise UnsafeDirectory(
            f"{directory} may be written by other users (mode {stat.S_IMODE(st.st_mode):04o}, "
            "not sticky): refusing to put the control socket there"
        )
