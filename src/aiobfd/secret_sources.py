"""Where authentication secrets come from: files and environment variables.

The protocol core (:mod:`aiobfd.protocol.auth`) only takes bytes; this module
does the reading, for the command line and the configuration file.  Errors
are ``ValueError`` naming the file or variable, never the secret.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from .protocol.auth import check_secret
from .protocol.packet import AuthType

__all__ = ["load_secret_env", "load_secret_file"]


def load_secret_file(path: str | os.PathLike[str], auth_type: AuthType) -> bytes:
    """Read a secret from a file: its raw bytes less one trailing newline.

    One final ``\\n`` (or ``\\r\\n``) is removed, as editors and ``echo`` add
    one; nothing else is touched, so binary secrets work.  Raises ``ValueError``
    naming the file, never its content, if it cannot be read, is empty or is
    too long for ``auth_type``.
    """
    source = f"secret file {os.fspath(path)!s}"
    try:
        with open(path, "rb") as f:
            data = f.read(4096)
    except OSError as exc:
        raise ValueError(f"{source}: cannot read it ({exc.strerror or exc})") from None
    secret = _strip_newline(data)
    check_secret(secret, auth_type, source)
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
