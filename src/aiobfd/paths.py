"""Where the control socket lives by default, for the daemon and its clients alike.

A room of its own so that the clients (:mod:`aiobfd.client`, ``aiobfdctl``,
``aiobfd-exabgp``) find the socket without importing the server, the engine
or asyncio.
"""

from __future__ import annotations

import os


def default_socket_path() -> str:
    """``/run/aiobfd/aiobfd.sock`` as root, else under ``$XDG_RUNTIME_DIR``."""
    if os.geteuid() == 0:
        return "/run/aiobfd/aiobfd.sock"
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return os.path.join(runtime, "aiobfd.sock")
    return f"/tmp/aiobfd-{os.getuid()}.sock"
