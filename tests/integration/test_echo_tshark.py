"""Wireshark's BFD dissector (tshark) on the RFC 5880 Echo function with FRR 8.4.

FRR's bfdd in 'peer' runs ``echo-mode`` toward our daemon and accepts ours
(``echo receive-interval``); 'peer' forwards, so our echo comes back.  Two
seconds captured on FRR's veth must hold our Control packets (UDP 3784, TTL
255, Required Min Echo RX Interval advertised, Required Min RX slowed to 1 s
while our echo runs), our echo packets (UDP 3785, source = destination = our
address, TTL 255 out and 254 back) and FRR's echo looped back by us (source =
destination = FRR's address, TTL 254), and tshark must decode every one of
them without an expert warning (UDP checksums checked on the echo packets:
the Control packets of both daemons carry the partial checksum of the veth's
checksum offload, see below).  Needs root, FRR and tshark.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from aiobfd.lab import FrrSession, Lab, OurDaemon

from .conftest import FrrFactory, require

ECHO_MS = 50
IP_CHECK = ["-o", "ip.check_checksum:TRUE"]


def _tshark(capture: Path, *args: str, udp_check: bool = False) -> str:
    checks = [*IP_CHECK, "-o", f"udp.check_checksum:{'TRUE' if udp_check else 'FALSE'}"]
    return subprocess.run(
        ["tshark", "-r", str(capture), *checks, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout


def test_tshark_decodes_rfc5880_echo_and_control(
    lab: Lab, frr_peer: FrrFactory, tmp_path: Path
) -> None:
    require("tshark")
    lab.sysctl("peer", "net.ipv4.ip_forward", 1)
    lab.sysctl("host", f"net.ipv4.conf.{lab.host.ifname}.accept_local", 1)
    ours_ip, frr_ip = lab.host.ipv4, lab.peer.ipv4
    session = FrrSession(
        ours_ip, frr_ip, rx_ms=300, tx_ms=300, multiplier=3, interface=lab.peer.ifname
    )
    frr = frr_peer("peer", [session])
    for line in (
        "echo-mode",
        f"echo transmit-interval {ECHO_MS}",
        f"echo receive-interval {ECHO_MS}",
    ):
        # (echo-mode answers with a '%' note about IPv6: not an error.)
        frr.instance.vtysh("bfdd", "configure terminal", "bfd", session.key, line, check=False)
    ours = OurDaemon(
        lab,
        "host",
        ours_ip,
        [frr_ip],
        "-r",
        "300",
        "-t",
        "300",
        "--echo-interval",
        str(ECHO_MS),
        "--echo-rx-interval",
        str(ECHO_MS),
    ).start()
    ours.wait_state(frr_ip, "up")

    def both_ways() -> bool:
        echo = ours.session(frr_ip)["echo"]
        return bool(echo and echo["active"] and echo["reflected"] > 0)

    ours.wait(both_ways, 15, "our echo active and FRR's looped back")
    frr.wait_peer(ours_ip, lambda p: p["remote-receive-interval"] == 1000, what="our RX at 1 s")

    capture = tmp_path / "echo-frr.pcap"
    lab.run(
        "peer",
        "tshark",
        "-q",
        "-i",
        lab.peer.ifname,
        "-f",
        "udp port 3784 or udp port 3785",
        "-a",
        "duration:2",
        "-w",
        str(capture),
        timeout=30,
    )
    fields = ("ip.src", "ip.dst", "ip.ttl", "udp.dstport", "_ws.col.Protocol")
    rows = [
        line.split(",")
        for line in _tshark(
            capture,
            "-T",
            "fields",
            "-E",
            "separator=,",
            *(arg for f in fields for arg in ("-e", f)),
        ).splitlines()
    ]
    ours_control = [r for r in rows if r[0] == ours_ip and r[1] == frr_ip and r[3] == "3784"]
    ours_echo = [r for r in rows if r[0] == ours_ip and r[1] == ours_ip and r[3] == "3785"]
    frr_echo = [r for r in rows if r[0] == frr_ip and r[1] == frr_ip and r[3] == "3785"]
    print(
        f"2 s on FRR's veth: {len(ours_control)} of our Control packets, "
        f"{len(ours_echo)} of our echo (out and back), {len(frr_echo)} of FRR's echo"
    )
    assert ours_control, rows[:10]
    assert all(r[2] == "255" for r in ours_control)
    assert len(ours_echo) >= 40, rows[:10]  # ~20/s, each seen going and coming back
    assert {r[2] for r in ours_echo} == {"255", "254"}
    assert len(frr_echo) >= 40, rows[:10]
    assert {r[2] for r in frr_echo} == {"255", "254"}  # FRR's, and looped back by us

    # Our Control packets as Wireshark reads them: echo RX advertised, RX at 1 s.
    control = _tshark(
        capture,
        "-Y",
        f"ip.src == {ours_ip} && udp.dstport == 3784",
        "-T",
        "fields",
        "-E",
        "separator=,",
        "-e",
        "bfd.required_min_echo_interval",
        "-e",
        "bfd.required_min_rx_interval",
        "-e",
        "bfd.version",
    ).splitlines()
    assert control, "no BFD Control fields decoded"
    for line in control:
        echo_rx, min_rx, version = line.split(",")
        assert int(echo_rx) == ECHO_MS * 1000, line
        assert int(min_rx) == 1_000_000, line
        assert version == "1", line

    # UDP checksums are checked on the echo packets only: those are built whole
    # by aiobfd (and by FRR) for a packet socket.  The Control packets go through
    # kernel UDP sockets of both daemons, and the veth's transmit checksum
    # offload leaves them with the partial (pseudo-header) checksum that no NIC
    # completes on a veth, so tshark calls FRR's "bad" exactly like ours.
    for udp_check, only in ((False, ""), (True, "udp.port == 3785")):
        # (-z counts every packet unless given the filter itself.)
        stat = f"expert,note,{only}" if only else "expert,note"
        expert = _tshark(capture, "-z", stat, "-q", udp_check=udp_check)
        for bad in ("Malformed", "Warning", "Error", "incorrect"):
            assert bad not in expert, expert
        verbose = _tshark(capture, *(("-Y", only) if only else ()), "-V", udp_check=udp_check)
        assert "Bidirectional Forwarding Detection" in verbose or "BFD" in verbose
        assert "[Expert Info" not in verbose, _first_expert(verbose)


def _first_expert(text: str) -> str:
    at = text.find("[Expert Info")
    return text[max(0, at - 2000) : at + 300]
