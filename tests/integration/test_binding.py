"""Sessions bound to an interface, a network namespace or a VRF (issue 20, part 1),
in namespaces with FRR's bfdd as the peers.

    peer (FRR 1)  198.51.100.2 --veth-- 198.51.100.1  host (our daemon)
                                        192.0.2.1     --veth-- 192.0.2.2  attacker
    far  (FRR 2)  203.0.113.2  --veth-- 203.0.113.1   side (a namespace of its own)

Our daemon runs in 'host' with two sessions: one bound to host's veth toward
FRR 1, one in the namespace 'side' (``netns``), toward FRR 2.  The attacker
sends packets with the right discriminators and addresses (spoofed) and TTL 255
that arrive on host's other veth: FRR 8.4 would take them (it matches by
discriminator only); we drop them as ``wrong_interface``, and both sessions
stay Up.  Only documentation ranges are used, inside the lab's namespaces.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from aiobfd.lab import FrrSession, Lab, OurDaemon
from aiobfd.protocol.packet import ControlPacket, Diag, State, encode
from tests.integration.conftest import FrrFactory

SIDE_OURS, SIDE_FRR = "203.0.113.1", "203.0.113.2"
ATTACK_HOST, ATTACK_X = "192.0.2.1", "192.0.2.2"
VRF_OURS, VRF_FRR = "203.0.113.129", "203.0.113.130"


def _link(lab: Lab, ns_a: str, ns_b: str, suffix: str, a: str, b: str, plen: int) -> str:
    """A veth between two namespaces of the lab with an address each; host's end's name."""
    if_a, if_b = lab.ifname(f"{suffix}a"), lab.ifname(f"{suffix}b")
    lab.add_veth(lab.netns(ns_a), if_a, lab.netns(ns_b), if_b)
    for ns, ifname, addr in ((ns_a, if_a, a), (ns_b, if_b, b)):
        lab.ip(ns, f"addr add {addr}/{plen} dev {ifname}")
        lab.ip(ns, f"link set {ifname} up")
    return if_a


def _config(tmp_path: Path, lab: Lab, side_ns: str) -> Path:
    path = tmp_path / "aiobfd.toml"
    path.write_text(
        f"""
[defaults]
tx_interval_ms = 100
rx_interval_ms = 100
detect_mult = 3

[[peers]]
local = "{lab.host.ipv4}"
remote = "{lab.peer.ipv4}"
interface = "{lab.host.ifname}"

[[peers]]
local = "{SIDE_OURS}"
remote = "{SIDE_FRR}"
netns = "{side_ns}"
"""
    )
    return path


def _forge(lab: Lab, ns: str, source: str, dest: str, my: int, your: int) -> None:
    """From ``ns``: a Control packet (Down, diag 3) from ``source`` (added to its
    loopback: spoofed) to ``dest``:3784, TTL 255, routed through the host."""
    lab.ip(ns, f"addr replace {source}/32 dev lo")
    packet = encode(
        ControlPacket(
            State.DOWN, Diag.NEIGHBOR_SIGNALED_SESSION_DOWN, 0, 3, my, your, 100_000, 100_000
        )
    )
    script = (
        "import socket,sys;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);"
        "s.setsockopt(socket.IPPROTO_IP,socket.IP_TTL,255);"
        f"s.bind(({source!r},49999));s.sendto(bytes.fromhex({packet.hex()!r}),({dest!r},3784))"
    )
    for _ in range(3):
        lab.run(ns, sys.executable, "-c", script)


def test_a_netns_session_beside_ours_and_forged_packets_on_another_interface(
    lab: Lab, frr_peer: FrrFactory, tmp_path: Path
) -> None:
    side = lab.add_namespace("side", "s")
    lab.add_namespace("far", "f")
    lab.add_namespace("attacker", "x")
    _link(lab, "side", "far", "s", SIDE_OURS, SIDE_FRR, 25)
    attack_if = _link(lab, "host", "attacker", "x", ATTACK_HOST, ATTACK_X, 24)
    # The host takes packets whose source is not on the interface they came in
    # on (the test is our check, not the kernel's reverse path filter).
    for key in ("all", "default", attack_if):
        lab.sysctl("host", f"net.ipv4.conf.{key}.rp_filter", 0)
    lab.ip("attacker", f"route add {lab.host.ipv4}/32 via {ATTACK_HOST}")

    frr1 = frr_peer("peer", [FrrSession(lab.host.ipv4, lab.peer.ipv4, 100, 100, 3)])
    frr2 = frr_peer("far", [FrrSession(SIDE_OURS, SIDE_FRR, 100, 100, 3)])
    ours = OurDaemon.from_config(lab, "host", _config(tmp_path, lab, side)).start()

    # (a) Up on both sides: ours in the daemon's namespace, bound to its veth, and
    # the one in 'side', whose addresses the host's namespace does not have.
    a = ours.wait_state(lab.peer.ipv4, "up", timeout=15)
    c = ours.wait_state(SIDE_FRR, "up", timeout=15)
    frr1.wait_status(lab.host.ipv4, "up")
    frr2.wait_status(SIDE_OURS, "up")
    assert a["interface"] == lab.host.ifname and a["netns"] is None
    assert c["netns"] == side and c["interface"] is None
    assert lab.ip("host", f"-4 addr show to {SIDE_OURS}").stdout.strip() == ""
    shown = ours.ctl("show", "session", SIDE_FRR).stdout
    assert f"netns {side}" in shown, shown

    # (b) The attacker's forgeries, TTL 255, right discriminators, arriving on
    # the host's other veth: for the bound session from FRR 1's address, and for
    # the netns session from FRR 2's (into the host's namespace, not 'side').
    _forge(lab, "attacker", lab.peer.ipv4, lab.host.ipv4, a["remote_discr"], a["local_discr"])
    _forge(lab, "attacker", SIDE_FRR, lab.host.ipv4, c["remote_discr"], c["local_discr"])

    def dropped(remote: str) -> int:
        return int(ours.session(remote)["counters"]["drops"].get("wrong_interface", 0))

    ours.wait(lambda: dropped(lab.peer.ipv4) >= 3 and dropped(SIDE_FRR) >= 3, 5, "drops")
    time.sleep(0.5)
    for remote in (lab.peer.ipv4, SIDE_FRR):
        info = ours.session(remote)
        assert info["state"] == "up", info
        assert info["counters"]["session_down"] == 0, info
        assert info["counters"]["drops"] == {"wrong_interface": 3}, info
    frr1.wait_status(lab.host.ipv4, "up")
    frr2.wait_status(SIDE_OURS, "up")


def _vrf_support(lab: Lab) -> str | None:
    """Why the kernel cannot make a VRF (None: it can)."""
    probe = subprocess.run(
        ["ip", "-n", lab.netns("host"), "link", "add", "vrfprobe", "type", "vrf", "table", "77"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        return probe.stderr.strip() or f"exit status {probe.returncode}"
    lab.ip("host", "link del vrfprobe")
    return None


def test_a_vrf_session_with_frr(lab: Lab, frr_peer: FrrFactory, tmp_path: Path) -> None:
    why = _vrf_support(lab)
    if why is not None:
        pytest.skip(f"this kernel has no VRF support (ip link add ... type vrf: {why})")
    lab.add_namespace("vrfpeer", "v")
    host_if = _link(lab, "host", "vrfpeer", "v", VRF_OURS, VRF_FRR, 25)
    lab.ip("host", "link add vrfb type vrf table 10")
    lab.ip("host", "link set vrfb up")
    lab.ip("host", f"link set {host_if} master vrfb")
    lab.ip("host", f"addr replace {VRF_OURS}/25 dev {host_if}")  # (moving it may flush it)
    frr = frr_peer("vrfpeer", [FrrSession(VRF_OURS, VRF_FRR, 100, 100, 3)])
    path = tmp_path / "aiobfd.toml"
    path.write_text(
        f'[[peers]]\nlocal = "{VRF_OURS}"\nremote = "{VRF_FRR}"\nvrf = "vrfb"\n'
        "tx_interval_ms = 100\nrx_interval_ms = 100\n"
    )
    ours = OurDaemon.from_config(lab, "host", path).start()
    info = ours.wait_state(VRF_FRR, "up", timeout=15)
    assert info["vrf"] == "vrfb"
    frr.wait_status(VRF_OURS, "up")
