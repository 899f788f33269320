"""RFC 9747 unaffiliated echo toward a gateway that runs no BFD, in network namespaces.

The lab's 'peer' namespace is a plain Linux router: ``net.ipv4.ip_forward=1``
and nothing else, no BFD.  Our daemon on 'host' runs an echo session toward it
at 50 ms x 3: the echo packets (198.51.100.1 -> 198.51.100.1, UDP 3785) go to
the router's MAC and its forwarding sends them back.  A failure of that
forwarding (an nftables drop in its forward chain, its link set down) takes
the session Down with diag 2 within the echo Detection Time + 20 ms, and the
hook runs; restored, the session comes Up again.  Needs root (namespaces and
CAP_NET_RAW); nftables and tshark where installed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aiobfd.lab import Lab, OurDaemon, aiobfd_command, daemon_env

from .conftest import require

INTERVAL_MS = 50
MULT = 3
DETECT_S = INTERVAL_MS * MULT / 1000
#: What the issue allows beyond the Detection Time.
SLACK_S = 0.020
TRIALS = 5


@pytest.fixture
def router(lab: Lab) -> Lab:
    """The lab with 'peer' forwarding (and nothing else) and 'host' accepting
    its own address as the source of what comes back (see docs/configuration.md)."""
    lab.sysctl("peer", "net.ipv4.ip_forward", 1)
    lab.sysctl("host", f"net.ipv4.conf.{lab.host.ifname}.accept_local", 1)
    return lab


@pytest.fixture
def echo(router: Lab, tmp_path: Path) -> Iterator[tuple[OurDaemon, Path]]:
    hook_log = tmp_path / "hooks.log"
    hook = f'echo "$BFD_REMOTE $BFD_OLD_STATE $BFD_STATE $BFD_DIAG" >> {hook_log}'
    ours = OurDaemon(
        router,
        "host",
        router.host.ipv4,
        [router.peer.ipv4],
        "--unaffiliated-echo",
        "--echo-interval",
        str(INTERVAL_MS),
        "-m",
        str(MULT),
        "--on-change",
        hook,
    ).start()
    try:
        yield ours, hook_log
    finally:
        ours.stop()


def _down_after(
    lab: Lab, ours: OurDaemon, cut: list[str], restore: list[str], remote: str = ""
) -> float:
    """Cut the forwarding with ``cut`` (a command in 'peer'), wait for Down; the
    seconds from the end of the cut to Down (the daemon's monotonic clock is
    the test's).  Then restore and wait for Up."""
    remote = remote or lab.peer.ipv4
    ours.wait_state(remote, "up", 10)
    time.sleep(2 * DETECT_S)  # steady at the fast rate
    lab.run("peer", *cut)
    cut_at = time.monotonic()
    info = ours.wait_state(remote, "down", 5)
    assert info["local_diag"] == 2, info  # Echo Function Failed
    assert info["local_diag_name"] == "echo_function_failed"
    latency = float(info["last_state_change_monotonic"]) - cut_at
    lab.run("peer", *restore)
    ours.wait_state(remote, "up", 10)
    return latency


def test_echo_through_a_plain_router(echo: tuple[OurDaemon, Path], router: Lab) -> None:
    ours, hook_log = echo
    remote = router.peer.ipv4
    info = ours.wait_state(remote, "up", 10)
    assert info["mode"] == "unaffiliated_echo"
    assert info["local_discr"] == info["remote_discr"]  # the remote is ourselves
    echo_info = info["echo"]
    assert echo_info["interface"] == router.host.ifname
    mac = json.loads(router.ip("peer", f"-json link show {router.peer.ifname}").stdout)[0]
    assert echo_info["gateway_mac"] == mac["address"]
    time.sleep(1)
    info = ours.session(remote)
    assert info["tx_interval_ms"] == INTERVAL_MS
    assert info["detect_time_ms"] == INTERVAL_MS * MULT
    # 1 s at 50 ms (75-100 % jitter): 20-27 packets, every one back.
    counters = info["counters"]
    assert counters["packets_out"] >= 20
    assert counters["packets_in"] >= counters["packets_out"] - 2
    assert counters["drops"] == {}
    assert counters["send_errors"] == {}

    latencies: list[float] = []
    if shutil.which("nft"):
        table = "aiobfd_echo_test"
        for _ in range(TRIALS):
            latencies.append(
                _down_after(
                    router,
                    ours,
                    [
                        "nft",
                        f"add table inet {table} ; "
                        f"add chain inet {table} forward "
                        "{ type filter hook forward priority 0 ; policy drop ; }",
                    ],
                    ["nft", "delete", "table", "inet", table],
                )
            )
    for _ in range(2):
        latencies.append(
            _down_after(
                router,
                ours,
                ["ip", "link", "set", router.peer.ifname, "down"],
                ["ip", "link", "set", router.peer.ifname, "up"],
            )
        )
    print(f"echo Down after a forwarding failure: {[round(x * 1000, 1) for x in latencies]} ms")
    for latency in latencies:
        assert latency <= DETECT_S + SLACK_S, latencies

    # The hook ran for each change, with diag 2 on the way down.
    def hook_lines() -> list[str]:
        return hook_log.read_text().splitlines() if hook_log.exists() else []

    ours.wait(lambda: len(hook_lines()) >= 2 + 3 * len(latencies), 10, "hooks")
    lines = hook_lines()
    assert f"{remote} up down 2" in lines
    assert lines.count(f"{remote} up down 2") == len(latencies)
    info = ours.session(remote)
    assert info["counters"]["session_down"] == len(latencies)
    assert info["counters"]["detection_expiries"] == len(latencies)


def test_metrics_show_the_echo_session(echo: tuple[OurDaemon, Path], router: Lab) -> None:
    ours, _ = echo
    ours.wait_state(router.peer.ipv4, "up", 10)
    out = ours.ctl("show", "sessions")
    assert out.returncode == 0, out.stderr
    assert router.peer.ipv4 in out.stdout and " up " in out.stdout
    assert f"{router.peer.ipv4} (echo)" in out.stdout
    detail = ours.ctl("show", "session", router.peer.ipv4)
    assert detail.returncode == 0, detail.stderr
    assert "Unaffiliated echo (RFC 9747)" in detail.stdout
    assert "Source port" not in detail.stdout
    assert "  Echo: every " in detail.stdout and "minimum TTL back 254" in detail.stdout


def test_refused_without_cap_net_raw(router: Lab) -> None:
    """One line naming the capability, exit status 2."""
    require("setpriv")
    proc = router.run(
        "host",
        "env",
        *(f"{k}={v}" for k, v in daemon_env().items()),
        "setpriv",
        "--bounding-set=-net_raw",
        "--inh-caps=-all",
        "--",
        *aiobfd_command(
            router.host.ipv4,
            router.peer.ipv4,
            "--unaffiliated-echo",
            "--control-socket",
            "none",
            "--metrics-port",
            "0",
        ),
        check=False,
        timeout=20,
    )
    assert proc.returncode == 2, proc
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "CAP_NET_RAW" in lines[0]


def test_tshark_decodes_echo_packets_without_warnings(
    echo: tuple[OurDaemon, Path], router: Lab, tmp_path: Path
) -> None:
    """Wireshark's dissector decodes what we send (and what the router sends back)."""
    if not shutil.which("tshark"):
        pytest.skip("tshark is not installed (apt-get install tshark)")
    ours, _ = echo
    ours.wait_state(router.peer.ipv4, "up", 10)
    capture = tmp_path / "echo.pcap"
    router.run(
        "peer",
        "tshark",
        "-q",
        "-i",
        router.peer.ifname,
        "-f",
        "udp port 3785",
        "-a",
        "duration:2",
        "-w",
        str(capture),
        timeout=30,
    )
    # (Read in the root namespace: the file is all it needs.)
    checks = ["-o", "ip.check_checksum:TRUE", "-o", "udp.check_checksum:TRUE"]
    fields = subprocess.run(
        ["tshark", "-r", str(capture), *checks, "-T", "fields", "-E", "separator=,"]
        + [
            arg
            for f in ("ip.src", "ip.dst", "ip.ttl", "udp.dstport", "_ws.col.Protocol")
            for arg in ("-e", f)
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.splitlines()
    assert len(fields) >= 40, fields  # ~2 s x 20/s, each seen twice (to the router, back)
    rows = [line.split(",") for line in fields]
    host = router.host.ipv4
    assert all(r[0] == host and r[1] == host and r[3] == "3785" for r in rows), rows[:5]
    assert {r[2] for r in rows} == {"255", "254"}  # sent, and forwarded back
    expert = subprocess.run(
        ["tshark", "-r", str(capture), *checks, "-z", "expert,note", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    verbose = subprocess.run(
        ["tshark", "-r", str(capture), *checks, "-V"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "BFD Echo" in verbose or "Bidirectional Forwarding Detection" in verbose
    for bad in ("Malformed", "Warning", "Error", "incorrect"):
        assert bad not in expert, expert
    assert "[Expert Info" not in verbose, _first_expert(verbose)


def _first_expert(text: str) -> Any:
    at = text.find("[Expert Info")
    return text[max(0, at - 2000) : at + 300]


def test_echo_over_ipv6(lab: Lab) -> None:
    """IPv6 needs no accept_local: up, down with diag 2 when forwarding stops, up again."""
    lab.sysctl("peer", "net.ipv6.conf.all.forwarding", 1)
    remote = lab.peer.ipv6
    ours = OurDaemon(
        lab, "host", lab.host.ipv6, [remote], "--unaffiliated-echo", "-t", str(INTERVAL_MS)
    ).start()
    try:
        info = ours.wait_state(remote, "up", 10)
        assert info["echo"]["interface"] == lab.host.ifname
        latency = _down_after(
            lab,
            ours,
            ["ip", "link", "set", lab.peer.ifname, "down"],
            ["ip", "link", "set", lab.peer.ifname, "up"],
            remote,
        )
        assert latency <= DETECT_S + SLACK_S
    finally:
        ours.stop()
