"""aiobfd: a Bidirectional Forwarding Detection daemon (RFC 5880, RFC 5881) on asyncio.

The protocol core is the sans-IO package :mod:`aiobfd.protocol`;
:mod:`aiobfd.engine` drives it from an event loop and :mod:`aiobfd.app`
builds the daemon from its settings.  docs/architecture.md draws the layout.
"""

from __future__ import annotations

from typing import Any


def _version() -> str:
    # importlib.metadata pulls in email and socket: looked up on first use
    # only, so that importing the core stays free of them.
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("aiobfd")
    except PackageNotFoundError:  # running from a source tree
        return "0+unknown"


def __getattr__(name: str) -> Any:
    if name == "__version__":
        value = _version()
        globals()["__version__"] = value
        return value
    raise AttributeError(f"module 'aiobfd' has no attribute {name!r}")


def core_build() -> str:
    """How the sans-IO core runs: "mypyc" when it was compiled at install time
    (``AIOBFD_MYPYC=1``, see setup.py), else "python"."""
    from importlib.machinery import EXTENSION_SUFFIXES

    from .protocol import session

    path = session.__file__ or ""
    return "mypyc" if path.endswith(tuple(EXTENSION_SUFFIXES)) else "python"


__all__ = ["__version__", "core_build"]
