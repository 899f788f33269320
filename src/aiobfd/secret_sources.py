"""Where authentication secrets come from: files and environment variables.

The protocol core (:mod:`aiobfd.protocol.auth`) only takes bytes; this module
does the reading, for the command line and the configuration file.  Errors
are ``ValueError`` naming the file or variable, never the secret.

Files are opened so that opening cannot hang and reading is bounded
(:func:`read_regular_file`, also used for the configuration file): a FIFO, a
device or a directory named as a key file is refused at once instead of
blocking the daemon in ``open()`` or ``read()``.  A key file that others may
read is used, with a warning (:func:`key_file_warning`).  Symbolic links are
followed: what is checked is the file they lead to (a link from
``/etc/aiobfd/keys`` into a secret store, systemd's credentials or a
Kubernetes secret volume is a common layout, and a link's own mode means
nothing on Linux).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Mapping

from .protocol.auth import check_secret
from .protocol.packet import AuthType

__all__ = [
    "MAX_KEY_FILE_BYTES",
    "key_file_warning",
    "load_secret_env",
    "load_secret_file",
    "read_regular_file",
]

#: A key file larger than this is refused unread (the longest secret is 20 bytes).
MAX_KEY_FILE_BYTES = 4096

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def read_regular_file(path: str | os.PathLike[str], limit: int) -> tuple[bytes, os.stat_result]:
    """The content of a regular file of at most ``limit`` bytes, and its status.

    Opened with ``O_NONBLOCK`` and checked with ``fstat`` before any read, so
    a FIFO without a writer, a device or a directory is refused at once
    rather than blocking.  Raises ``OSError`` (``FileNotFoundError`` and the
    like from the system; ``EINVAL`` "a FIFO, not a regular file" or
    ``EFBIG`` "larger than N bytes" from here), with ``strerror`` set.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = next((name for test, name in _KINDS if test(st.st_mode)), "not a file")
            raise OSError(errno.EINVAL, f"{kind}, not a regular file")
        if st.st_size > limit:
            raise OSError(errno.EFBIG, f"larger than {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        while size <= limit:  # the size may have changed since fstat
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise OSError(errno.EFBIG, f"larger than {limit} bytes")
        return b"".join(chunks), st
    finally:
        os.close(fd)


def key_file_warning(path: str | os.PathLike[str], st: os.stat_result) -> str | None:
    """A warning when a key file may be read or written by others, else None.

    Others are everyone (``o+r``, ``o+w``) and a group the daemon is not
    running in (``g+r``, ``g+w``).  Mode 0640 with the daemon's own group, as
    docs/configuration.md recommends, is fine.  ``st`` is the file's status
    (of the file a symbolic link leads to).
    """
    mode = stat.S_IMODE(st.st_mode)
    groups = {os.getegid(), *os.getgroups()}
    who = []
    if mode & (stat.S_IROTH | stat.S_IWOTH):
        who.append("everyone")
    if mode & (stat.S_IRGRP | stat.S_IWGRP) and st.st_gid not in groups:
        who.append(f"group {st.st_gid}")
    if not who:
        return None
    name = os.fspath(path)
    with_target = name
    if os.path.islink(name):
        with_target = f"{name} (a link to {os.path.realpath(name)})"
    return (
        f"secret file {with_target} can be read or written by {' and '.join(who)} "
        f"(mode {mode:04o}): make it 0600, or 0640 with the daemon's group"
    )


def load_secret_file(
    path: str | os.PathLike[str], auth_type: AuthType, warnings: list[str] | None = None
) -> bytes:
    """Read a secret from a file: its raw bytes less one trailing newline.

    One final ``\\n`` (or ``\\r\\n``) is removed, as editors and ``echo`` add
    one; nothing else is touched, so binary secrets work.  Raises ``ValueError``
    naming the file, never its content, if it cannot be read, is not a regular
    file, is empty or is too long for ``auth_type``.  A file others may read
    is used; :func:`key_file_warning` says so into ``warnings``.
    """
    source = f"secret file {os.fspath(path)!s}"
    try:
        data, st = read_regular_file(path, MAX_KEY_FILE_BYTES)
    except OSError as exc:
        raise ValueError(f"{source}: cannot read it ({exc.strerror or exc})") from None
    secret = _strip_newline(data)
    check_secret(secret, auth_type, source)
    if warnings is not None:
        warning = key_file_warning(path, st)
        if warning is not None:
            warnings.append(warning)
    return secret


def load_secret_env(
    name: str, auth_type: AuthType, environ: Mapping[str, str] | None = None
) -> bytes:
    """Read a secret from the environment variable ``name``.

    The value is turned back into the bytes the OS holds (``os.fsencode``) and
    loses one trailing newline, as :func:`load_secret_file`.  Raises
    ``ValueError`` naming the variable, never its value.
    """
    env = os.environ if environ is None else environ
    source = f"environment variable {name}"
    value = env.get(name)
    if value is None:
        raise ValueError(f"{source} is not set")
    secret = _strip_newline(os.fsencode(value))
    check_secret(secret, auth_type, source)
    return secret


def _strip_newline(data: bytes) -> bytes:
    if data.endswith(b"\r\n"):
        return data[:-2]
    if data.endswith(b"\n"):
        return data[:-1]
    return data
