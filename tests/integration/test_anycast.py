"""The anycast use case end to end (examples/anycast/lab.py, in network namespaces).

FRR (zebra, bgpd, bfdd) routes 192.0.2.53/32 toward two hosts, each running ExaBGP
with aiobfd-exabgp and aiobfd at 100 ms x 3. One host's link goes down: bgpd must
drop it because BFD said so, well within a second, and take it back once the link
returns. Then the host's aiobfd dies: the route must stay withdrawn until it is
back. Needs root, iproute2, FRR, exabgp and nft; skipped without them, failed under
CI=true.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

from aiobfd.lab import list_namespaces, wait_until

from .conftest import require

pytestmark = pytest.mark.interop

LAB_PATH = Path(__file__).resolve().parents[2] / "examples" / "anycast" / "lab.py"


def _load_lab() -> ModuleType:
    name = "aiobfd_anycast_lab"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, LAB_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


anycast = _load_lab()
TRIALS = 2


def test_failover_with_bfd_within_a_second_and_route_returns(
    _interop_session: None, tmp_path: Path
) -> None:
    require(*anycast.TOOLS)
    host_a, host_b = anycast.HOSTS["a"], anycast.HOSTS["b"]
    lab = anycast.AnycastLab(bfd=True, interval_ms=100, multiplier=3, workdir=tmp_path / "lab")
    served_while_failed: list[str | None] = []
    with lab:
        namespaces = list(lab.namespaces.values())
        assert lab.fib() == {host_a, host_b}  # ECMP over both hosts
        assert lab.ask_anycast() in ("a", "b")
        trials = [
            lab.trial(
                "link",
                fail_timeout=5,
                recover_timeout=30,
                while_failed=lambda: served_while_failed.append(lab.ask_anycast()),
            )
            for _ in range(TRIALS)
        ]
        # The route came back: both hosts in the FIB again, BGP and BFD up.
        lab.wait_steady(30)
        assert lab.fib() == {host_a, host_b}

        # aiobfd dies on host a. The router's BFD drops the host, bgpd takes the BGP
        # session down and lets it come back, but the host's aiobfd-exabgp has
        # withdrawn the route: a host without BFD must not attract traffic.
        mark = lab.monitor.mark()
        killed = time.time()
        lab.kill_aiobfd("a")
        gone = lab.monitor.wait(mark, lambda e: not e.points_at(host_a), 5)
        assert gone is not None and gone.time - killed < 1.0, gone
        wait_until(lambda: host_a in lab.established(), 15, "BGP with host a again")
        time.sleep(1.0)
        assert lab.fib() == {host_b}
        lab.start_aiobfd("a")
        lab.wait_steady(30)
        assert lab.fib() == {host_a, host_b}
        bgpd_log = (lab.frr_dir / "bgpd.log").read_text(errors="replace")
        helper_log = (lab.rundir / "exabgp-a.out").read_text(errors="replace")
    summary = ", ".join(f"failover {t.failover_s}, back after {t.recovery_s}" for t in trials)
    for t in trials:
        assert t.failover_s is not None, f"the FIB kept host a: {summary}"
        assert t.failover_s < 1.0, f"failover too slow with BFD 100 ms x 3: {summary}"
        assert t.recovery_s is not None and t.recovery_s < 30, summary
    # While host a was cut off, the client was served by host b.
    assert served_while_failed == ["b"] * TRIALS
    # It was BFD that made bgpd drop the session, once per trial.
    assert bgpd_log.count("(Cease/BFD Down)") >= TRIALS
    # And host a's own helper followed its BFD session: withdraw, then announce again.
    assert helper_log.count("aiobfd-exabgp: INFO withdraw") >= TRIALS
    assert helper_log.count("aiobfd-exabgp: INFO announce") >= TRIALS + 1
    assert not set(namespaces) & set(list_namespaces(anycast.NAMING.ns_prefix))


DRAIN_WAIT_MS = 2000


def test_drain_loses_nothing_where_a_plain_stop_loses_packets(
    _interop_session: None, tmp_path: Path
) -> None:
    """A client's stream of 1,000 packets a second to the anycast address, carried by
    both hosts. ``aiobfdctl drain --all`` on host a (then its service stops once the
    session is AdminDown): not one packet lost. SIGTERM to aiobfd, ExaBGP and the
    service at once: the packets sent to host a until the router moves them are lost."""
    require(*anycast.TOOLS)
    lab = anycast.AnycastLab(bfd=True, interval_ms=100, multiplier=3, workdir=tmp_path / "lab")
    with lab:
        drained = lab.loss_round("drain", drain_wait_ms=DRAIN_WAIT_MS, first=0)
        stopped = lab.loss_round("term", drain_wait_ms=DRAIN_WAIT_MS, first=10**6)
        lab.wait_steady(30)
        helper_log = (lab.rundir / "exabgp-a.out").read_text(errors="replace")
    print(anycast.loss_table([drained, stopped]))
    # The stream reached host a before each action: it carried part of the traffic.
    for r in (drained, stopped):
        assert r.last_to_host_ms is not None and r.last_to_host_ms > -100, r
    assert drained.lost == 0, drained
    # The router moved the traffic within the drain's wait, while host a still served it.
    assert drained.withdrawn_ms is not None and drained.withdrawn_ms < DRAIN_WAIT_MS, drained
    assert drained.last_to_host_ms is not None and drained.last_to_host_ms < DRAIN_WAIT_MS
    assert stopped.lost > 0, stopped
    assert stopped.withdrawn_ms is not None and stopped.withdrawn_ms < 1000, stopped
    # The helper withdrew because of the drain, not because a session went Down.
    assert "(draining)" in helper_log, helper_log[-2000:]
