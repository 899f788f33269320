"""systemd's notify protocol (sd_notify), in a few lines over a Unix datagram socket.

With ``Type=notify`` systemd sets ``NOTIFY_SOCKET``; we send ``READY=1`` once
sockets are bound, ``STOPPING=1`` on the way out, and ``WATCHDOG=1`` every half
``WATCHDOG_USEC`` when ``WatchdogSec=`` is set.  Without ``NOTIFY_SOCKET``
every call does nothing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket

log = logging.getLogger("aiobfd.systemd")


class Notifier:
    """Talks to systemd if it asked us to (``NOTIFY_SOCKET``)."""

    def __init__(self, address: str | None, watchdog_usec: int = 0) -> None:
        self._address = address
        self._sock: socket.socket | None = None
        self._watchdog_s = watchdog_usec / 1e6 if watchdog_usec > 0 else 0.0
        self._watchdog: asyncio.TimerHandle | None = None
        self._stopping = False
        if address:
            if address.startswith("@"):  # abstract namespace
                address = "\0" + address[1:]
            self._address = address
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @classmethod
    def from_environment(cls, environ: dict[str, str] | None = None) -> Notifier:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET")
        watchdog = 0
        pid = env.get("WATCHDOG_PID")
        if env.get("WATCHDOG_USEC", "").isdigit() and (not pid or pid == str(os.getpid())):
            watchdog = int(env["WATCHDOG_USEC"])
        return cls(address, watchdog)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def notify(self, message: str) -> None:
        if self._sock is None or self._address is None:
            return
        try:
            self._sock.sendto(message.encode(), self._address)
        except OSError as exc:
            log.warning("cannot notify systemd: %s", exc)

    def ready(self, status: str = "") -> None:
        """READY=1, and start the watchdog pings if systemd wants them."""
        self.notify("READY=1" + (f"\nSTATUS={status}" if status else ""))
        if self._watchdog_s and self._sock is not None:
            self._ping()

    def _ping(self) -> None:
        self.notify("WATCHDOG=1")
        loop = asyncio.get_running_loop()
        # A ping is a sign of a live event loop: it runs on it, between packets.
        self._watchdog = loop.call_later(self._watchdog_s / 2, self._ping)

    def stopping(self) -> None:
        """STOPPING=1, once, and no more watchdog pings."""
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if not self._stopping:
            self._stopping = True
            self.notify("STOPPING=1")

    def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        if self._sock is not None:
            self._sock.close()
            self._sock = None
