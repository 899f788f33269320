"""State-change hooks run by a live daemon over loopback."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from pathlib import Path

from aiobfd.config import PeerSpec
from aiobfd.engine import Daemon, Peer
from aiobfd.hooks import Dampening, HookRunner, Hooks
from aiobfd.protocol.packet import State
from aiobfd.protocol.session import SessionConfig

MS = 1000
FAST = SessionConfig(desired_min_tx_us=30 * MS, required_min_rx_us=30 * MS, detect_mult=3)
DUMP_ENV = (
    f'{sys.executable} -c "import json,os,sys; '
    "open(sys.argv[1],'a').write(json.dumps({k:v for k,v in os.environ.items() "
    "if k.startswith('BFD_')})+chr(10))\""
)


def spec(local: str, remote: str) -> PeerSpec:
    return PeerSpec(remote, local, socket.AF_INET, session=FAST)


def read_lines(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


async def wait_until(pred, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        assert loop.time() < end, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_hooks_get_the_environment_on_up_and_down(tmp_path: Path) -> None:
    log = tmp_path / "hooks.jsonl"
    a = Daemon([spec("127.0.0.1", "127.0.0.2")])
    b = Daemon([spec("127.0.0.2", "127.0.0.1")])
    hooks = Hooks(on_up=f"{DUMP_ENV} {log}", on_down=f"{DUMP_ENV} {log}")
    runner = HookRunner(a, lambda peer: hooks)
    await a.start()
    await b.start()
    try:
        await wait_until(lambda: any(r.get("BFD_STATE") == "up" for r in read_lines(log)))
        b.close()
        await wait_until(lambda: any(r.get("BFD_STATE") == "down" for r in read_lines(log)))
        up, down = [r for r in read_lines(log) if r["BFD_STATE"] in ("up", "down")][:2]
        assert up["BFD_LOCAL"] == "127.0.0.1" and up["BFD_REMOTE"] == "127.0.0.2"
        assert up["BFD_OLD_STATE"] in ("init", "down")
        assert down == {
            "BFD_LOCAL": "127.0.0.1",
            "BFD_REMOTE": "127.0.0.2",
            "BFD_INTERFACE": "",
            "BFD_STATE": "down",
            "BFD_OLD_STATE": "up",
            "BFD_DIAG": "1",
            "BFD_DIAG_NAME": "control_detection_time_expired",
            "BFD_REMOTE_DIAG": "0",
        }
        assert runner.failures == 0
    finally:
        await runner.close()
        a.close()
        b.close()


async def test_a_slow_hook_never_delays_detection_and_is_killed(tmp_path: Path) -> None:
    remotes = ["127.0.0.2", "127.0.0.3"]
    hub = Daemon([spec("127.0.0.1", r) for r in remotes])
    spokes = [Daemon([spec(r, "127.0.0.1")]) for r in remotes]
    marker = tmp_path / "finished"
    slow = Hooks(on_change=f"sleep 10; touch {marker}", timeout_s=1.0)
    runner = HookRunner(hub, lambda peer: slow if peer.spec.remote == remotes[0] else Hooks())
    downs: list[tuple[Peer, int, int, int]] = []

    def on_event(peer: Peer, ev: object) -> None:
        if getattr(ev, "new_state", None) is State.DOWN and ev.last_rx_us:  # type: ignore[attr-defined]
            downs.append((peer, ev.at_us, ev.last_rx_us, ev.detection_time_us))  # type: ignore[attr-defined]

    hub.add_listener(on_event)
    await hub.start()
    for d in spokes:
        await d.start()
    try:
        await wait_until(lambda: all(p.session.state is State.UP for p in hub.peers.values()))
        spokes[1].close()  # the session whose hook is not the slow one
        await wait_until(lambda: any(p.spec.remote == remotes[1] for p, *_ in downs), 2)
        _, at, last_rx, detect = next(d for d in downs if d[0].spec.remote == remotes[1])
        assert at - last_rx - detect < 20 * MS
        await wait_until(lambda: runner.timeouts >= 1, 3)
        await asyncio.sleep(0.2)
        assert not marker.exists()  # the hung hook was killed, not left running
    finally:
        await runner.close(0.5)
        hub.close()
        for d in spokes:
            d.close()


async def test_latest_state_is_delivered_last(tmp_path: Path) -> None:
    log = tmp_path / "states"
    a = Daemon([spec("127.0.0.1", "127.0.0.2")])
    b = Daemon([spec("127.0.0.2", "127.0.0.1")])
    hooks = Hooks(on_change=f'sleep 0.3; echo "$BFD_STATE" >> {log}')
    runner = HookRunner(a, lambda peer: hooks)
    await a.start()
    await b.start()
    try:
        await wait_until(lambda: a.peers and next(iter(a.peers.values())).session.state is State.UP)
        key = next(iter(a.peers))
        for _ in range(3):  # flap faster than the hook runs
            a.disable(key)
            await asyncio.sleep(0.05)
            a.enable(key)
            await asyncio.sleep(0.05)
        await wait_until(lambda: next(iter(a.peers.values())).session.state is State.UP, 5)
        final = next(iter(a.peers.values())).session.state.label
        await asyncio.sleep(1.5)
        await runner.close(3)
        lines = log.read_text().split()
        assert lines[-1] == final
        assert len(lines) < 2 + 3 * 3  # waiting changes were coalesced
    finally:
        a.close()
        b.close()


async def test_dampening_holds_back_up_after_flaps(tmp_path: Path) -> None:
    log = tmp_path / "states"
    a = Daemon([spec("127.0.0.1", "127.0.0.2")])
    b = Daemon([spec("127.0.0.2", "127.0.0.1")])
    hooks = Hooks(on_change=f'echo "$BFD_STATE" >> {log}')
    damp = Dampening(penalty=1000, suppress=1500, reuse=750, half_life_s=0.5, max_hold_s=5)
    runner = HookRunner(a, lambda peer: hooks, dampening=damp)
    await a.start()
    await b.start()
    loop = asyncio.get_running_loop()
    try:
        session = next(iter(a.peers.values())).session
        await wait_until(lambda: session.state is State.UP)
        key_b = next(iter(b.peers))
        for _ in range(2):  # two flaps: penalty about 2000 > suppress
            b.disable(key_b)
            await wait_until(lambda: session.state is State.DOWN)
            b.enable(key_b)
            await wait_until(lambda: session.state is State.UP)
        up_at = loop.time()
        await asyncio.sleep(0.2)
        states = log.read_text().split()
        assert states[-1] != "up"  # the last Up is held back
        await wait_until(lambda: log.read_text().split()[-1] == "up", 5)
        assert loop.time() - up_at >= 0.3
    finally:
        await runner.close()
        a.close()
        b.close()
