"""aiobfd: a Bidirectional Forwarding Detection daemon (RFC 5880, RFC 5881) on asyncio.

The protocol core is sans-IO (:mod:`aiobfd.packet`, :mod:`aiobfd.session`,
:mod:`aiobfd.registry`); :mod:`aiobfd.daemon` drives it from an event loop.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("aiobfd")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0+unknown"

__all__ = ["__version__"]
