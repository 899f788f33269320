"""Sending: a session's packets out of its own transmit socket.

A failed send is counted on the peer by errno and logged at 1, 10, 100 and
1,000 occurrences.  An ICMP port unreachable that came back for an earlier
packet (nothing listens on the peer's port) is reported by a connected socket
on the next send instead of sending: that packet then goes after all.
"""

from __future__ import annotations

import errno
import logging

from .peer import Peer

log = logging.getLogger("aiobfd")


def send(peer: Peer, datagrams: list[bytes]) -> None:
    """Send what one session queued."""
    for data in datagrams:
        send_one(peer, data)


def send_one(peer: Peer, data: bytes) -> None:
    try:
        if peer.connected:
            peer.sock.send(data)
        else:
            peer.sock.sendto(data, peer.dest)
    except OSError as exc:
        _send_failed(peer, data, exc)


def send_batch(outgoing: list[tuple[Peer, bytes]]) -> None:
    """Send periodic packets of many sessions, one after another."""
    for peer, data in outgoing:
        if peer.connected:
            try:
                peer.sock.send(data)
            except OSError as exc:
                _send_failed(peer, data, exc)
        else:
            send_one(peer, data)


def _send_failed(peer: Peer, data: bytes, exc: OSError) -> None:
    """Count a failed send of ``data``; after a refusal, send it again (see above)."""
    _count_send_error(peer, exc)
    if isinstance(exc, ConnectionRefusedError) and peer.connected:
        try:
            peer.sock.send(data)
        except OSError as again:
            _count_send_error(peer, again)


def _count_send_error(peer: Peer, exc: OSError) -> None:
    name = errno.errorcode.get(exc.errno or 0, "EIO")
    peer.send_errors[name] = peer.send_errors.get(name, 0) + 1
    if peer.send_errors[name] in (1, 10, 100, 1000) or log.isEnabledFor(logging.DEBUG):
        log.warning(
            "cannot send to %s: %s (%d times)",
            peer.spec.display_remote(),
            exc.strerror,
            peer.send_errors[name],
        )
