"""aiobfd: a Bidirectional Forwarding Detection daemon (RFC 5880, RFC 5881) on asyncio.

The protocol core is sans-IO (:mod:`aiobfd.packet`, :mod:`aiobfd.session`,
:mod:`aiobfd.registry`); :mod:`aiobfd.daemon` drives it from an event loop.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("aiobfd")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0+unknown"


def core_build() -> str:
    """How the sans-IO core runs: "mypyc" when it was compiled at install time
    (``AIOBFD_MYPYC=1``, see setup.py), else "python"."""
    from importlib.machinery import EXTENSION_SUFFIXES

    from . import session

    path = session.__file__ or ""
    return "mypyc" if path.endswith(tuple(EXTENSION_SUFFIXES)) else "python"


__all__ = ["__version__", "core_build"]
