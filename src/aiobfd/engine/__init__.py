"""The engine: the sans-IO core driven by asyncio.

:class:`Daemon` is the facade the rest of aiobfd uses; :class:`Peer` is one
configured session with its sockets.  docs/architecture.md says which module
of this package does what.
"""

from .daemon import Daemon, EventListener, Peer, monotonic_us

__all__ = ["Daemon", "EventListener", "Peer", "monotonic_us"]
