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
    from . import session

    return "python" if (session.__file__ or "").endswith(".py") else "mypyc"


__all__ = ["__version__", "core_build"]
