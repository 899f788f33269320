"""Two or more daemons in one event loop over loopback: the asyncio layer end to end."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

import pytest

from aiobfd.config import PeerSpec
from aiobfd.engine import Daemon, Peer, monotonic_us, transmit
from aiobfd.protocol.auth import AuthConfig, AuthKey
from aiobfd.protocol.errors import DropReason
from aiobfd.protocol.events import Event, StateChanged
from aiobfd.protocol.packet import AuthType, ControlPacket, Diag, State, encode
from aiobfd.protocol.session import SessionConfig
from aiobfd.status import session_info

MS = 1000
FAST = SessionConfig(desired_min_tx_us=50 * MS, required_min_rx_us=50 * MS, detect_mult=3)


def spec(local: str, remote: str, cfg: SessionConfig = FAST) -> PeerSpec:
    return PeerSpec(remote, local, socket.AF_INET, session=cfg)


class Recorder:
    """Collects state changes of a daemon, with a way to wait for one."""

    def __init__(self, daemon: Daemon) -> None:
        self.changes: list[tuple[Peer, StateChanged]] = []
        self._cond = asyncio.Condition()
        daemon.add_listener(self._on_event)

    def _on_event(self, peer: Peer, event: Event) -> None:
        if isinstance(event, StateChanged):
            self.changes.append((peer, event))
            asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._cond:
            self._cond.notify_all()

    async def wait_for(
        self, pred: Callable[[Peer, StateChanged], bool], timeout: float = 5.0
    ) -> StateChanged:
        async def _wait() -> StateChanged:
            async with self._cond:
                while True:
                    for peer, ev in self.changes:
                        if pred(peer, ev):
                            return ev
                    await self._cond.wait()

        return await asyncio.wait_for(_wait(), timeout)


def entered(state: State, remote: str | None = None) -> Callable[[Peer, StateChanged], bool]:
    return lambda p, e: e.new_state is state and (remote is None or p.spec.remote == remote)


Pair = tuple[Daemon, Daemon, Recorder, Recorder]


@pytest.fixture
async def pair() -> AsyncIterator[Pair]:
    a = Daemon([spec("127.0.0.1", "127.0.0.2")])
    b = Daemon([spec("127.0.0.2", "127.0.0.1")])
    ra, rb = Recorder(a), Recorder(b)
    await a.start()
    await b.start()
    try:
        yield a, b, ra, rb
    finally:
        a.close()
        b.close()


async def test_two_daemons_come_up_with_configured_timers(pair: Pair) -> None:
    a, b, ra, rb = pair
    await ra.wait_for(entered(State.UP))
    await rb.wait_for(entered(State.UP))
    await asyncio.sleep(0.3)  # the Poll Sequence after Up completes
    for daemon in (a, b):
        (peer,) = daemon.peers.values()
        s = peer.session
        assert s.state is State.UP
        assert s.desired_min_tx_us == 50 * MS
        assert s.transmit_interval_us == 50 * MS
        assert s.detection_time_us == 150 * MS
        assert not s.poll_active
        assert 49152 <= peer.source_port <= 65535


async def test_silent_peer_is_detected_on_time(pair: Pair) -> None:
    _a, b, ra, _ = pair
    await ra.wait_for(entered(State.UP))
    await asyncio.sleep(0.3)
    b.close()  # vanish without a goodbye
    ev = await ra.wait_for(entered(State.DOWN), timeout=2)
    assert ev.diag is Diag.CONTROL_DETECTION_TIME_EXPIRED
    assert ev.last_rx_us is not None
    lateness = ev.at_us - ev.last_rx_us - ev.detection_time_us
    # The detection timer fires at the deadline; the budget here only absorbs
    # scheduling noise of a loaded CI machine (bench/detection.py measures it).
    assert 0 <= lateness <= 10 * MS, lateness


async def test_detection_counts_from_the_arrival_of_the_last_packet(pair: Pair) -> None:
    """Packets wait for the next wake-up (receive coalescing) and are first counted
    from when the drain before began; Down still comes one Detection Time after
    the last packet really arrived, not before (nor after)."""
    _a, b, ra, _ = pair
    await ra.wait_for(entered(State.UP))
    await asyncio.sleep(0.5)
    (silent,) = b.peers.values()
    # Silence b right after it sends: its packet is then the last one.
    sent = asyncio.get_running_loop().create_future()
    last_tx = silent.session.last_tx_us

    def watch() -> None:
        if silent.session.last_tx_us != last_tx:
            sent.set_result(silent.session.last_tx_us)
        else:
            asyncio.get_running_loop().call_later(0.0005, watch)

    watch()
    sent_at = await asyncio.wait_for(sent, 1)
    b.close()
    ev = await ra.wait_for(entered(State.DOWN), timeout=2)
    assert ev.diag is Diag.CONTROL_DETECTION_TIME_EXPIRED and ev.last_rx_us is not None
    # Over loopback a packet arrives within a millisecond of being sent.
    assert 0 <= ev.last_rx_us - sent_at < 1 * MS
    lateness = ev.at_us - sent_at - ev.detection_time_us
    assert 0 <= lateness <= 10 * MS, lateness


async def test_packets_waiting_after_a_stall_keep_the_session_up(pair: Pair) -> None:
    """The daemon stalls longer than the Detection Time while the peer keeps
    sending: whichever of its deadlines comes up first afterwards, the packets
    waiting in the socket are read before the session could be declared down."""
    a, b, ra, _ = pair
    await ra.wait_for(entered(State.UP))
    await asyncio.sleep(0.5)
    (theirs,) = b.peers.values()
    s = theirs.session
    packet = encode(
        ControlPacket(
            State.UP,
            Diag.NO_DIAGNOSTIC,
            0,
            s.detect_mult,
            s.local_discr,
            s.remote_discr,
            s.desired_min_tx_us,
            s.required_min_rx_us,
            0,
            None,
        )
    )
    port = theirs.source_port
    b.close()
    # The peer carries on from another thread, from the same address and port.
    stop = threading.Event()
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 255)
    sender.bind(("127.0.0.2", port))
    sender.connect(("127.0.0.1", 3784))

    def speak() -> None:
        while not stop.wait(0.02):
            sender.send(packet)

    thread = threading.Thread(target=speak)
    thread.start()
    try:
        time.sleep(0.4)  # the event loop stalls: 400 ms > 150 ms Detection Time
        await asyncio.sleep(0.3)
        assert not [e for _, e in ra.changes if e.old_state is State.UP]
        (ours,) = a.peers.values()
        assert ours.session.state is State.UP
    finally:
        stop.set()
        thread.join()
        sender.close()
    ev = await ra.wait_for(entered(State.DOWN), timeout=2)
    assert ev.diag is Diag.CONTROL_DETECTION_TIME_EXPIRED


def send_with_ttl(peer: Peer, ttl: int, data: bytes) -> None:
    """Send ``data`` from ``peer``'s transmit socket (its session's source port) with ``ttl``."""
    peer.sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
    try:
        peer.sock.send(data)
    finally:
        peer.sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 255)


async def test_ttl_drops_on_a_session_socket_are_counted_as_kernel(pair: Pair) -> None:
    """RFC 5881 §5 on an established session's own socket: the kernel's filter drops
    the packet, and the session's counters (control socket, metrics) say so."""
    a, b, ra, _ = pair
    await ra.wait_for(entered(State.UP))
    await asyncio.sleep(0.3)
    (ours,) = a.peers.values()
    (theirs,) = b.peers.values()
    assert ours.rx_sock is not None  # the peer's packets come on a socket of its own
    packets_in = ours.session.counters.packets_in
    send_with_ttl(theirs, 64, b"not even a BFD packet")
    await asyncio.sleep(0.2)
    info = session_info(ours, monotonic_us())
    assert info["counters"]["drops"] == {"kernel": 1}
    assert info["counters"]["packets_dropped"] == 1
    assert ours.drops() == {"kernel": 1}  # what the metrics report
    assert ours.session.counters.packets_in > packets_in  # the others keep coming
    assert ours.session.state is State.UP


async def test_a_reload_moves_the_kernel_ttl_check_with_min_ttl() -> None:
    """With authentication a session's minimum TTL is configurable (RFC 5881 §5);
    a reload that changes it changes what the kernel lets through."""
    auth = AuthConfig(AuthType.KEYED_SHA1, (AuthKey(1, b"sixteen-byte-key"),), 1)

    def authed(local: str, remote: str, min_ttl: int) -> PeerSpec:
        return spec(local, remote, replace(FAST, auth=auth, min_ttl=min_ttl))

    a = Daemon([authed("127.0.0.1", "127.0.0.2", 255)])
    b = Daemon([authed("127.0.0.2", "127.0.0.1", 255)])
    ra = Recorder(a)
    await a.start()
    await b.start()
    try:
        await ra.wait_for(entered(State.UP))
        await asyncio.sleep(0.3)
        (ours,) = a.peers.values()
        (theirs,) = b.peers.values()
        send_with_ttl(theirs, 100, b"unauthenticated")
        await asyncio.sleep(0.2)
        assert ours.drops() == {"kernel": 1}
        assert DropReason.SHORT not in a.table.drops
        a.apply_config([authed("127.0.0.1", "127.0.0.2", 64)])
        send_with_ttl(theirs, 100, b"unauthenticated")
        await asyncio.sleep(0.2)
        # Let through by the kernel now; the daemon drops it (not a BFD packet).
        assert ours.drops() == {"kernel": 1}
        assert a.table.drops[DropReason.SHORT] == 1
        assert ours.session.state is State.UP
    finally:
        a.close()
        b.close()


async def test_a_dropped_last_packet_does_not_extend_detection(pair: Pair) -> None:
    """The peer's last word is garbage, from its own address and port: the Detection
    Time still runs from the last packet accepted, not from the garbage."""
    _a, b, ra, _ = pair
    await ra.wait_for(entered(State.UP))
    await asyncio.sleep(0.5)
    (theirs,) = b.peers.values()
    port = theirs.source_port
    b.close()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        sender.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 255)
        sender.bind(("127.0.0.2", port))
        # Longer than the receive hold-off (50 ms): the last good packet is read
        # by then, and the garbage is the last packet read.
        await asyncio.sleep(0.08)
        garbage_at = monotonic_us()
        sender.sendto(b"not a BFD packet", ("127.0.0.1", 3784))
        ev = await ra.wait_for(entered(State.DOWN), timeout=2)
    assert ev.diag is Diag.CONTROL_DETECTION_TIME_EXPIRED and ev.last_rx_us is not None
    assert ev.last_rx_us < garbage_at
    assert ev.at_us - ev.last_rx_us >= ev.detection_time_us


async def test_graceful_shutdown_sends_admin_down(pair: Pair) -> None:
    _a, b, ra, _ = pair
    await ra.wait_for(entered(State.UP))
    loop = asyncio.get_running_loop()
    started = loop.time()
    await b.shutdown()
    assert loop.time() - started < 1.0
    ev = await ra.wait_for(entered(State.DOWN), timeout=1)
    assert ev.diag is Diag.NEIGHBOR_SIGNALED_SESSION_DOWN
    assert ev.remote_state is State.ADMIN_DOWN
    assert ev.remote_diag is Diag.ADMINISTRATIVELY_DOWN


async def test_three_peers_from_one_process() -> None:
    remotes = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    hub = Daemon([spec("127.0.0.1", r) for r in remotes])
    spokes = [Daemon([spec(r, "127.0.0.1")]) for r in remotes]
    rec = Recorder(hub)
    await hub.start()
    for d in spokes:
        await d.start()
    try:
        for r in remotes:
            await rec.wait_for(entered(State.UP, r))
        sources = {p.source_port for p in hub.peers.values()}
        discrs = {p.session.local_discr for p in hub.peers.values()}
        assert len(sources) == 3 and len(discrs) == 3 and 0 not in discrs
        spokes[1].close()
        ev = await rec.wait_for(entered(State.DOWN, remotes[1]), timeout=2)
        assert ev.diag is Diag.CONTROL_DETECTION_TIME_EXPIRED
        await asyncio.sleep(0.3)
        states = {p.spec.remote: p.session.state for p in hub.peers.values()}
        assert states == {remotes[0]: State.UP, remotes[1]: State.DOWN, remotes[2]: State.UP}
    finally:
        hub.close()
        for d in spokes:
            d.close()


async def test_disable_and_enable_at_runtime(pair: Pair) -> None:
    a, _b, ra, rb = pair
    await ra.wait_for(entered(State.UP))
    key = next(iter(a.peers))
    a.disable(key)
    ev = await rb.wait_for(entered(State.DOWN), timeout=1)
    assert ev.diag is Diag.NEIGHBOR_SIGNALED_SESSION_DOWN
    a.enable(key)
    rb.changes.clear()
    await rb.wait_for(entered(State.UP), timeout=3)


async def test_timer_change_while_up_does_not_flap(pair: Pair) -> None:
    a, b, ra, rb = pair
    await ra.wait_for(entered(State.UP))
    await asyncio.sleep(0.3)
    key = next(iter(a.peers))
    a.set_timers(key, desired_min_tx_us=20 * MS, required_min_rx_us=20 * MS)
    await asyncio.sleep(0.5)
    (pb,) = b.peers.values()
    assert pb.session.remote_desired_min_tx_us == 20 * MS
    assert pb.session.remote_min_rx_us == 20 * MS
    assert pb.session.transmit_interval_us == 50 * MS  # b's own desired tx is larger
    assert a.peers[key].session.detection_time_us == 150 * MS
    assert all(e.new_state is State.UP for _, e in ra.changes[1:] + rb.changes[1:]) or (
        len(ra.changes) == 2 and len(rb.changes) <= 2
    )
    assert [e.new_state for _, e in ra.changes].count(State.DOWN) == 0
    assert [e.new_state for _, e in rb.changes].count(State.DOWN) == 0


async def test_garbage_is_counted_not_fatal(pair: Pair) -> None:
    a, _b, ra, _ = pair
    await ra.wait_for(entered(State.UP))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.3", 0))
        for payload in (b"", b"x" * 10, os.urandom(24), b"\x20" + os.urandom(40)):
            s.sendto(payload, ("127.0.0.1", 3784))
    await asyncio.sleep(0.2)
    assert sum(a.table.drops.values()) >= 3
    assert all(p.session.state is State.UP for p in a.peers.values())


async def signal_down(a: Daemon, b: Daemon, ra: Recorder) -> tuple[StateChanged, int, int]:
    """Once a's session is Up and settled, b goes AdminDown: a's Down event, when b
    sent it, and when a handled it (monotonic microseconds)."""
    await ra.wait_for(entered(State.UP))
    await asyncio.sleep(0.3)
    seen: list[int] = []
    a.add_listener(
        lambda _p, e: seen.append(monotonic_us()) if isinstance(e, StateChanged) else None
    )
    (pb,) = b.peers.values()
    sent_at = monotonic_us()
    b.disable(pb.spec.key)
    ev = await ra.wait_for(entered(State.DOWN), timeout=1)
    return ev, sent_at, seen[0]


async def test_a_signalled_down_is_read_within_one_receive_interval(pair: Pair) -> None:
    # Packets of established sessions may wait for the daemon's next wake-up
    # (receive coalescing), but no longer than the Required Min RX (50 ms).
    a, b, ra, _ = pair
    ev, sent_at, seen_at = await signal_down(a, b, ra)
    assert ev.diag is Diag.NEIGHBOR_SIGNALED_SESSION_DOWN
    # The change counts from the packet's arrival; it is handled within 50 ms.
    assert 0 <= ev.at_us - sent_at <= 5 * MS
    assert seen_at - sent_at <= 50 * MS + 20 * MS  # the budget absorbs CI noise


async def test_without_receive_holdoff_every_packet_is_read_at_once() -> None:
    a = Daemon([spec("127.0.0.1", "127.0.0.2")], rx_holdoff_us=0)
    b = Daemon([spec("127.0.0.2", "127.0.0.1")])
    ra = Recorder(a)
    await a.start()
    await b.start()
    try:
        _ev, sent_at, seen_at = await signal_down(a, b, ra)
        assert seen_at - sent_at <= 15 * MS  # no waiting for a wake-up; CI noise only
        assert a.timing.receive_wakeups > 0
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("burst", [False, True], ids=["single", "burst"])
async def test_a_refused_send_is_counted_and_the_packet_still_sent(burst: bool) -> None:
    # Transmit sockets are connected: an ICMP port unreachable for one packet is
    # reported by the next send, which must not lose that next packet; the same
    # for the periodic packets of Up sessions, sent back to back (burst).
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.9", 0))
        port = probe.getsockname()[1]
    daemon = Daemon([spec("127.0.0.1", "127.0.0.9")], port=port)
    await daemon.start()
    try:
        (peer,) = daemon.peers.values()
        assert peer.connected
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as nobody:
            nobody.bind(("127.0.0.9", port))
        transmit.send(peer, [b"unheard"])  # nothing listens: port unreachable
        await asyncio.sleep(0.05)
        refused = peer.send_errors.get("ECONNREFUSED", 0)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as listener:
            listener.bind(("127.0.0.9", port))
            listener.settimeout(1)
            if burst:
                transmit.send_batch([(peer, b"heard")])
            else:
                transmit.send(peer, [b"heard"])
            while (data := listener.recv(512)) != b"heard":
                assert len(data) >= 24  # only the session's own packets besides
        # (The session's own first packet, sent before anyone listened, was
        # refused too.)
        assert set(peer.send_errors) == {"ECONNREFUSED"}
        assert peer.send_errors["ECONNREFUSED"] == refused + 1
    finally:
        daemon.close()


async def test_a_peer_removed_and_added_again_is_not_taken_down_by_the_old_goodbye(
    pair: Pair,
) -> None:
    """The AdminDown a removed session repeats (twice, 50 ms apart) stops when
    a session to the same peer is added again: the remote, already on the new
    session, would take it down again (seen with FRR: an extra session-down)."""
    a, _b, _ra, rb = pair
    await rb.wait_for(entered(State.UP))
    (key,) = a.peers
    spec_a = a.peers[key].spec
    a.remove_peer(key)
    await rb.wait_for(entered(State.DOWN))
    downs = sum(ev.new_state is State.DOWN for _, ev in rb.changes)
    ups = [ev for _, ev in rb.changes if ev.new_state is State.UP]
    a.add_peer(spec_a)
    await asyncio.sleep(0.3)  # past the old session's last AdminDown
    assert sum(ev.new_state is State.DOWN for _, ev in rb.changes) == downs
    await rb.wait_for(lambda _p, e: e.new_state is State.UP and e not in ups, timeout=5)
