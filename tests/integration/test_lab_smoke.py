"""Smoke tests of the interop infrastructure itself, without our daemon.

FRR bfdd (host side) and BIRD (peer side) peer with each other over the lab's veth, so
a failure here points at the lab, the peers' setup or their parsers, not at aiobfd.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from aiobfd.lab import (
    BFDD,
    BIRD,
    LAB_NAMING,
    BirdNeighbor,
    BirdPeer,
    FrrPeer,
    FrrSession,
    Lab,
    Naming,
    cleanup_stale,
    daemon_env,
    list_namespaces,
    parse_bird_sessions,
    pid_alive,
)

from .conftest import BirdFactory, FrrFactory, require


def fast(remote: str, local: str, interface: str | None = None) -> FrrSession:
    """An FRR session at 100 ms x 3."""
    return FrrSession(remote, local, rx_ms=100, tx_ms=100, multiplier=3, interface=interface)


def frr_toward_peer(lab: Lab, *, ipv6: bool = True) -> list[FrrSession]:
    sessions = [fast(lab.peer.ipv4, lab.host.ipv4)]
    if ipv6:
        sessions.append(fast(lab.peer.ipv6, lab.host.ipv6))
    return sessions


def bird_toward_host(lab: Lab, *, ipv6: bool = True) -> list[BirdNeighbor]:
    neighbors = [BirdNeighbor(lab.host.ipv4, local=lab.peer.ipv4)]
    if ipv6:
        neighbors.append(BirdNeighbor(lab.host.ipv6, local=lab.peer.ipv6))
    return neighbors


def test_lab_addresses(lab: Lab) -> None:
    assert len(lab.host.ns) <= 12 and lab.host.ns.startswith("abfd-")
    assert set(list_namespaces(LAB_NAMING.ns_prefix)) >= {lab.host.ns, lab.peer.ns}
    assert lab.host.link_local.startswith("fe80::") and lab.peer.link_local.startswith("fe80::")
    out = lab.run("host", "ip", "-o", "addr", "show", "dev", lab.host.ifname).stdout
    assert "198.51.100.1/24" in out and "2001:db8::1/64" in out and "tentative" not in out
    lab.link_down()
    lab.link_up()
    out = lab.run("peer", "ip", "-o", "addr", "show", "dev", lab.peer.ifname).stdout
    assert "2001:db8::2/64" in out and lab.peer.link_local in out  # kept over down/up


def test_frr_and_bird_come_up_then_frr_shutdown(
    lab: Lab, frr_peer: FrrFactory, bird_peer: BirdFactory
) -> None:
    frr = frr_peer("host", frr_toward_peer(lab))
    bird = bird_peer("peer", bird_toward_host(lab), interval_ms=100, multiplier=3)

    for remote in (lab.peer.ipv4, lab.peer.ipv6):
        up = frr.wait_status(remote, "up", timeout=10)
        assert up["remote-receive-interval"] == 100
        assert up["remote-transmit-interval"] == 100
        assert up["remote-detect-multiplier"] == 3
    for remote in (lab.host.ipv4, lab.host.ipv6):
        session = bird.wait_state(remote, "Up", timeout=10)
        assert session["interface"] == lab.peer.ifname
        assert session["interval"] == pytest.approx(0.1)
        assert session["timeout"] == pytest.approx(0.3)
    counters = {c["peer"]: c for c in frr.counters()}
    assert counters[lab.peer.ipv4]["session-up"] == 1
    assert counters[lab.peer.ipv4]["control-packet-input"] > 0

    frr.configure(lab.peer.ipv4, lab.host.ipv4, "shutdown")
    bird.wait_state(lab.host.ipv4, "Down", timeout=5)
    frr.wait_status(lab.peer.ipv4, "shutdown", timeout=1)
    other = bird.session(lab.host.ipv6)
    assert other is not None and other["state"] == "Up"  # the IPv6 session is untouched

    frr.configure(lab.peer.ipv4, lab.host.ipv4, "no shutdown")
    bird.wait_state(lab.host.ipv4, "Up", timeout=10)


def test_failures_detected_both_ways(
    lab: Lab, frr_peer: FrrFactory, bird_peer: BirdFactory
) -> None:
    """drop_traffic, link_down and kill each take the sessions down; they recover."""
    frr = frr_peer("host", frr_toward_peer(lab, ipv6=False))
    bird = bird_peer("peer", bird_toward_host(lab, ipv6=False), interval_ms=100, multiplier=3)
    frr.wait_status(lab.peer.ipv4, "up")
    bird.wait_state(lab.host.ipv4, "Up")

    lab.drop_traffic()
    down = frr.wait_status(lab.peer.ipv4, "down", timeout=3)
    assert down["diagnostic"] == "control detection time expired"
    bird.wait_state(lab.host.ipv4, "Down", timeout=3)
    lab.restore_traffic()
    frr.wait_status(lab.peer.ipv4, "up")
    bird.wait_state(lab.host.ipv4, "Up")

    lab.link_down()
    frr.wait_status(lab.peer.ipv4, "down", timeout=3)
    lab.link_up()
    frr.wait_status(lab.peer.ipv4, "up")
    bird.wait_state(lab.host.ipv4, "Up")

    bird.kill()
    frr.wait_status(lab.peer.ipv4, "down", timeout=3)


def test_link_local_ipv6(lab: Lab, frr_peer: FrrFactory, bird_peer: BirdFactory) -> None:
    frr = frr_peer("host", [fast(lab.peer.link_local, lab.host.link_local, lab.host.ifname)])
    bird = bird_peer(
        "peer",
        [BirdNeighbor(lab.host.link_local, local=lab.peer.link_local, interface=lab.peer.ifname)],
    )
    frr.wait_status(lab.peer.link_local, "up")
    bird.wait_state(lab.host.link_local, "Up")


def test_reconfigure_bird_and_frr(lab: Lab, frr_peer: FrrFactory, bird_peer: BirdFactory) -> None:
    frr = frr_peer("host", frr_toward_peer(lab, ipv6=False))
    bird = bird_peer("peer", bird_toward_host(lab, ipv6=False), interval_ms=100, multiplier=3)
    frr.wait_status(lab.peer.ipv4, "up")

    bird.reconfigure(interval_ms=200, multiplier=5)
    frr.wait_peer(lab.peer.ipv4, lambda p: p["remote-detect-multiplier"] == 5, 5, "mult 5")
    # BIRD's detection time: FRR's multiplier x max(BIRD's min rx, FRR's tx), in seconds.
    bird.wait_session(lab.host.ipv4, lambda s: s["timeout"] == pytest.approx(0.6), 5)
    frr.configure(lab.peer.ipv4, lab.host.ipv4, "transmit-interval 300")
    bird.wait_session(lab.host.ipv4, lambda s: s["timeout"] == pytest.approx(0.9), 5)


def test_frr_restart_after_kill(lab: Lab, frr_peer: FrrFactory, bird_peer: BirdFactory) -> None:
    frr = frr_peer("host", frr_toward_peer(lab, ipv6=False))
    bird = bird_peer("peer", bird_toward_host(lab, ipv6=False))
    first = frr.wait_status(lab.peer.ipv4, "up")
    frr.kill()
    bird.wait_state(lab.host.ipv4, "Down", timeout=3)
    frr.restart()
    again = frr.wait_status(lab.peer.ipv4, "up")
    assert again["id"] != first["id"]  # a new local discriminator


def test_several_frr_sessions_toward_one_address(
    lab: Lab, frr_peer: FrrFactory, bird_peer: BirdFactory
) -> None:
    """FRR keys sessions by interface: one macvlan per local address gives N sessions."""
    locals_ = ["198.51.100.3", "198.51.100.4"]
    ifnames = [lab.add_macvlan("peer", f"m{i}", addr) for i, addr in enumerate(locals_)]
    frr = frr_peer(
        "peer", [fast(lab.host.ipv4, a, i) for a, i in zip(locals_, ifnames, strict=True)]
    )
    bird = bird_peer("host", [BirdNeighbor(a, local=lab.host.ipv4) for a in locals_])
    for addr in locals_:
        frr.wait_status(lab.host.ipv4, "up", local=addr)
        bird.wait_state(addr, "Up")
    assert len(frr.peers()) == 2


def test_wait_timeout_reports_state_and_logs(lab: Lab, bird_peer: BirdFactory) -> None:
    bird = bird_peer("peer", bird_toward_host(lab, ipv6=False))
    with pytest.raises(Exception) as info:
        bird.wait_state(lab.host.ipv4, "Up", timeout=0.3)
    message = str(info.value)
    assert "timed out after 0.3 s" in message
    assert "last state seen" in message and lab.host.ipv4 in message
    assert "bird.log" in message


def test_parse_bird_sessions_with_spaces_in_since() -> None:
    text = (
        "BIRD 2.0.12 ready.\nbfd1:\n"
        "IP address                Interface  State      Since         Interval  Timeout\n"
        "198.51.100.2              ---        Init       2024-01-02 10:11:12    1.000    0.000\n"
    )
    [s] = parse_bird_sessions(text)
    assert s == {
        "protocol": "bfd1",
        "address": "198.51.100.2",
        "interface": "---",
        "state": "Init",
        "since": "2024-01-02 10:11:12",
        "interval": 1.0,
        "timeout": 0.0,
    }


@pytest.mark.interop
def test_cleanup_leaves_nothing_even_on_error(tmp_path: Path) -> None:
    require("ip", BFDD, BIRD)
    pids: list[int] = []
    with pytest.raises(KeyboardInterrupt), Lab() as lab:
        frr = FrrPeer(lab, "host", tmp_path / "frr", frr_toward_peer(lab, ipv6=False))
        frr.start()
        bird = BirdPeer(lab, "peer", tmp_path / "bird", bird_toward_host(lab, ipv6=False))
        bird.start()
        # A stray process nobody tracks: namespace deletion must still kill it.
        subprocess.run(["ip", "netns", "exec", lab.peer.ns, "sh", "-c", "sleep 60 &"], check=True)
        pids = lab.pids("host") + lab.pids("peer")
        names, rundir, veth = {lab.host.ns, lab.peer.ns}, lab.rundir, lab.host.ifname
        raise KeyboardInterrupt  # neither peer is stopped: the lab must do it
    assert len(pids) >= 4
    assert not names & set(list_namespaces(LAB_NAMING.ns_prefix))
    assert not rundir.exists()
    assert subprocess.run(["ip", "link", "show", veth], capture_output=True).returncode != 0
    assert not [p for p in pids if pid_alive(p)]  # zombies awaiting init count as gone


KILLED_LAB = """
import os, signal, sys
from aiobfd.lab import Lab, Naming
lab = Lab(Naming(sys.argv[1], sys.argv[2]))
lab.start()
print(lab.tag, flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # no close(), no atexit: as a crashed run
"""


def _killed_lab(naming: Naming) -> str:
    """Make a lab of `naming` in a process that then dies at once; return its tag."""
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_LAB, naming.ns_prefix, naming.if_prefix],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **daemon_env()},
    )
    assert proc.returncode == -9, proc.stderr
    return proc.stdout.strip()


@pytest.mark.interop
def test_cleanup_stale_removes_dead_runs_only_of_its_own_user(_interop_session: None) -> None:
    """A killed run's namespaces, scratch directory and root-namespace veth are removed;
    a live lab of the same user, and a dead run of another user, are left alone."""
    mine, other = Naming("abfdt-", "at"), Naming("abfdu-", "au")
    dead, dead_other = _killed_lab(mine), _killed_lab(other)
    stray = [f"at{dead}v", f"at{dead}w"]  # as if a run died before moving its veth
    subprocess.run(["ip", "link", "add", stray[0], "type", "veth", "peer", "name", stray[1]],
                   check=True)  # fmt: skip
    try:
        with Lab(mine) as live:
            assert set(list_namespaces("abfdt-")) >= {f"abfdt-{dead}h", f"abfdt-{dead}p"}
            removed = set(cleanup_stale(mine))
            assert removed - set(stray) == {
                f"abfdt-{dead}h", f"abfdt-{dead}p", str(mine.rundir(dead))
            }  # fmt: skip
            assert len(removed & set(stray)) == 1  # one end, which takes the other along
            for veth in stray:
                assert subprocess.run(["ip", "link", "show", veth], capture_output=True).returncode
            assert list_namespaces("abfdt-") == sorted([live.host.ns, live.peer.ns])
            assert live.rundir.is_dir() and not mine.rundir(dead).exists()
            assert set(list_namespaces("abfdu-")) == {
                f"abfdu-{dead_other}h",
                f"abfdu-{dead_other}p",
            }
            assert cleanup_stale(mine) == []
        assert list_namespaces("abfdt-") == []
    finally:
        cleanup_stale(mine)
        removed_other = set(cleanup_stale(other))
    assert removed_other >= {f"abfdu-{dead_other}h", f"abfdu-{dead_other}p"}
    assert list_namespaces("abfdu-") == []
