"""State-change hooks run by a live daemon over loopback."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from aiobfd.config import Hooks, PeerSpec
from aiobfd.engine import Daemon, Peer
from aiobfd.hooks import HOOK_PATH, Dampening, HookRunner
from aiobfd.protocol.events import Event, StateChanged
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


# ---------------------------------------------------------------- misbehaving hooks
# An established pair at 50 ms x 3; the hook is on_up, so it runs as the session
# comes Up, and the session must stay Up (no Down on either side) while it runs.

PAIR = SessionConfig(desired_min_tx_us=50 * MS, required_min_rx_us=50 * MS, detect_mult=3)
SHELL_ADDED = {"PWD", "OLDPWD", "SHLVL", "_", "LC_CTYPE"}  # sh, and Python's locale coercion


def vm_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(field)


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper is dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def group_members(pgid: int) -> list[int]:
    """Living processes of a process group."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            out.append(int(entry.name))
    return out


class Pair:
    """127.0.0.1 (running the hooks) and 127.0.0.2, with every Down counted."""

    def __init__(self, hooks: Hooks, **runner: object) -> None:
        self.a = Daemon([PeerSpec("127.0.0.2", "127.0.0.1", socket.AF_INET, session=PAIR)])
        self.b = Daemon([PeerSpec("127.0.0.1", "127.0.0.2", socket.AF_INET, session=PAIR)])
        self.runner = HookRunner(self.a, lambda peer: hooks, **runner)  # type: ignore[arg-type]
        self.downs: list[StateChanged] = []
        for d in (self.a, self.b):
            d.add_listener(self._count)

    def _count(self, peer: Peer, ev: Event) -> None:
        if isinstance(ev, StateChanged) and ev.old_state is State.UP:
            self.downs.append(ev)

    @property
    def up(self) -> bool:
        return all(p.session.state is State.UP for d in (self.a, self.b) for p in d.peers.values())

    async def __aenter__(self) -> Pair:
        await self.a.start()
        await self.b.start()
        await wait_until(lambda: self.up)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.close(0.5)
        self.a.close()
        self.b.close()


async def output_flood(tmp_path: Path) -> None:
    """A hook writing 300 MB: memory stays flat, the session stays Up."""
    size = 300_000_000
    hooks = Hooks(on_up=f"head -c {size} /dev/zero; echo done >&2", timeout_s=20)
    base = vm_kb("VmRSS")
    try:  # reset the peak RSS (VmHWM) to the current RSS
        Path("/proc/self/clear_refs").write_text("5")
        exact = True
    except OSError:
        exact = False
    peak = base
    async with Pair(hooks) as pair:
        await wait_until(lambda: pair.runner.runs == 1)
        while pair.runner.running:  # sample too, in case VmHWM could not be reset
            peak = max(peak, vm_kb("VmRSS"))
            await asyncio.sleep(0.01)
        if exact:
            peak = max(peak, vm_kb("VmHWM"))
        await asyncio.sleep(0.3)  # any late effect of the flood on the session
        assert pair.up and pair.downs == []
        assert pair.runner.failures == pair.runner.timeouts == 0
        assert pair.runner.output_dropped >= size - 4096
    assert (peak - base) / 1024 < 30, f"RSS grew by {(peak - base) / 1024:.0f} MB"


async def test_a_hook_writing_hundreds_of_mb_costs_no_memory_and_no_flap(tmp_path: Path) -> None:
    await output_flood(tmp_path)


async def test_hooks_see_only_their_variables_and_the_passed_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIOBFD_TEST_AUTH_KEY", "s3cret")  # as for --auth-key-env
    monkeypatch.setenv("AIOBFD_TEST_PASSED", "passed value")
    monkeypatch.delenv("AIOBFD_TEST_UNSET", raising=False)
    dump = tmp_path / "env.json"
    hooks = Hooks(
        on_up=f"{sys.executable} -c 'import json,os,sys; json.dump(dict(os.environ), "
        f'open(sys.argv[1], "w"))\' {dump}'
    )
    passed = ("AIOBFD_TEST_PASSED", "AIOBFD_TEST_UNSET")
    async with Pair(hooks, pass_env=passed) as pair:
        await wait_until(lambda: pair.runner.runs == 1 and not pair.runner.running)
        assert pair.runner.failures == 0
    env = json.loads(dump.read_text())
    assert "AIOBFD_TEST_AUTH_KEY" not in env
    assert env["AIOBFD_TEST_PASSED"] == "passed value"
    assert "AIOBFD_TEST_UNSET" not in env
    assert env["PATH"] == HOOK_PATH
    assert env["BFD_STATE"] == "up" and env["BFD_REMOTE"] == "127.0.0.2"
    allowed = {"PATH", "LANG", "LC_ALL", "TZ", "AIOBFD_TEST_PASSED"} | SHELL_ADDED
    assert {k for k in env if not k.startswith("BFD_")} <= allowed


async def group_kill(tmp_path: Path) -> None:
    """A hook leaving `sleep 30 &` behind and sleeping past its timeout: both
    end, with the hook's whole process group, and the run is over at once."""
    pids = tmp_path / "pids"
    timeout = 1.0
    hooks = Hooks(on_up=f'sleep 30 & echo "$$ $!" > {pids}; sleep 30', timeout_s=timeout)
    loop = asyncio.get_running_loop()
    async with Pair(hooks) as pair:
        await wait_until(lambda: pids.exists() and pids.read_text().endswith("\n"))
        started = loop.time()
        shell, child = map(int, pids.read_text().split())
        assert alive(shell) and alive(child)
        await wait_until(lambda: pair.runner.timeouts == 1 and not pair.runner.running, 5)
        took = loop.time() - started
        assert timeout - 0.1 < took <= timeout + 1.0
        assert not alive(shell) and not alive(child)
        assert group_members(shell) == []
        assert pair.up and pair.downs == []


async def test_a_timed_out_hook_ends_with_its_group_and_at_once(tmp_path: Path) -> None:
    await group_kill(tmp_path)


async def test_a_child_that_left_the_group_does_not_hold_up_the_run(tmp_path: Path) -> None:
    """setsid takes a child out of the hook's group (the documented limit: it
    is not killed); it still holds the pipes, but the run ends all the same."""
    pid_file = tmp_path / "pid"
    timeout = 1.0
    hooks = Hooks(on_up=f"setsid sleep 30 & echo $! > {pid_file}; sleep 30", timeout_s=timeout)
    loop = asyncio.get_running_loop()
    escaped = 0
    try:
        async with Pair(hooks) as pair:
            await wait_until(lambda: pid_file.exists() and pid_file.read_text().endswith("\n"))
            started = loop.time()
            escaped = int(pid_file.read_text())
            await wait_until(lambda: pair.runner.timeouts == 1 and not pair.runner.running, 5)
            assert loop.time() - started <= timeout + 1.0
            assert pair.up and pair.downs == []
    finally:
        if escaped and alive(escaped):
            os.kill(escaped, signal.SIGKILL)


async def test_hooks_running_at_once_are_capped(tmp_path: Path) -> None:
    remotes = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    hub = Daemon([spec("127.0.0.1", r) for r in remotes])
    spokes = [Daemon([spec(r, "127.0.0.1")]) for r in remotes]
    log = tmp_path / "spans"
    hooks = Hooks(on_up=f'echo "start $BFD_REMOTE" >> {log}; sleep 0.2; echo end >> {log}')
    runner = HookRunner(hub, lambda peer: hooks, max_running=1)
    await hub.start()
    for d in spokes:
        await d.start()
    try:
        await wait_until(lambda: runner.runs == 3 and not runner.running)
        lines = log.read_text().split("\n")
        assert [line.split()[0] for line in lines if line] == ["start", "end"] * 3
        assert {line.split()[1] for line in lines if line.startswith("start")} == set(remotes)
    finally:
        await runner.close(0.5)
        hub.close()
        for d in spokes:
            d.close()


@pytest.mark.parametrize("scenario", [output_flood, group_kill])
def test_the_same_under_uvloop(tmp_path: Path, scenario: Callable[[Path], Awaitable[None]]) -> None:
    uvloop = pytest.importorskip("uvloop")
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(scenario(tmp_path))  # type: ignore[arg-type]
