"""RFC 9747 unaffiliated echo through FRR's zebra as the router, in network namespaces.

The lab's 'peer' namespace runs FRR's zebra alone (no bfdd: the gateway runs no
BFD), with ``ip forwarding`` in its configuration, so zebra is what turns the
forwarding on.  Our daemon on 'host' runs an echo session toward it at 50 ms x
3.  Up; an nftables drop in the router's forward chain -> Down with diag 2
within the echo Detection Time + 20 ms; restored -> Up; zebra told ``no ip
forwarding`` -> Down with diag 2 likewise; ``ip forwarding`` again -> Up.
Needs root, FRR (zebra, vtysh) and nftables.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from aiobfd.lab import VTYSH, ZEBRA, FrrInstance, Lab, OurDaemon, wait_until

from .conftest import require

INTERVAL_MS = 50
MULT = 3
DETECT_S = INTERVAL_MS * MULT / 1000
SLACK_S = 0.020
TABLE = "aiobfd_echo_zebra"

Cut = Callable[[], object]


def _zebra(lab: Lab) -> FrrInstance:
    """zebra alone in 'peer', forwarding IPv4 because its configuration says so."""
    lab.sysctl("peer", "net.ipv4.ip_forward", 0)
    zebra = FrrInstance(lab, "peer", lab.rundir / "zebra-peer")
    zebra.write_configs({"zebra": "ip forwarding\n!\n"})
    zebra.spawn("zebra")
    wait_until(zebra.zebra_ready, 10, "zebra's socket")

    def forwarding() -> bool:
        return lab.run("peer", "cat", "/proc/sys/net/ipv4/ip_forward").stdout.strip() == "1"

    wait_until(forwarding, 10, "zebra to turn IPv4 forwarding on")
    return zebra


def _down_after(ours: OurDaemon, remote: str, cut: Cut, restore: Cut) -> float:
    """Seconds from the end of `cut` to the session's Down (diag 2); then restore, Up."""
    ours.wait_state(remote, "up", 15)
    time.sleep(2 * DETECT_S)
    cut()
    cut_at = time.monotonic()
    info = ours.wait_state(remote, "down", 5)
    assert info["local_diag"] == 2, info
    latency = float(info["last_state_change_monotonic"]) - cut_at
    restore()
    ours.wait_state(remote, "up", 15)
    return latency


def test_echo_through_zebra(lab: Lab) -> None:
    require(ZEBRA, VTYSH, "nft")
    lab.sysctl("host", f"net.ipv4.conf.{lab.host.ifname}.accept_local", 1)
    zebra = _zebra(lab)
    # ('ip forwarding' is zebra's default: its running-config does not show it.)
    assert "IP forwarding is on" in zebra.vtysh("zebra", "show ip forwarding")
    remote = lab.peer.ipv4
    ours = OurDaemon(
        lab,
        "host",
        lab.host.ipv4,
        [remote],
        "--unaffiliated-echo",
        "--echo-interval",
        str(INTERVAL_MS),
        "-m",
        str(MULT),
    ).start()
    try:
        info = ours.wait_state(remote, "up", 15)
        assert info["mode"] == "unaffiliated_echo"
        time.sleep(1)
        counters = ours.session(remote)["counters"]
        assert counters["packets_in"] >= 15, counters

        latencies = []
        for _ in range(3):
            latencies.append(
                _down_after(
                    ours,
                    remote,
                    lambda: lab.run(
                        "peer",
                        "nft",
                        f"add table inet {TABLE} ; add chain inet {TABLE} forward "
                        "{ type filter hook forward priority 0 ; policy drop ; }",
                    ),
                    lambda: lab.run("peer", "nft", "delete", "table", "inet", TABLE),
                )
            )
        # Forwarding turned off by zebra itself.
        latencies.append(
            _down_after(
                ours,
                remote,
                lambda: zebra.vtysh("zebra", "configure terminal", "no ip forwarding"),
                lambda: zebra.vtysh("zebra", "configure terminal", "ip forwarding"),
            )
        )
        print(f"echo Down through zebra: {[round(x * 1000, 1) for x in latencies]} ms")
        # The last one includes vtysh's own round trip to zebra (a few ms).
        for latency in latencies:
            assert latency <= DETECT_S + SLACK_S, latencies
        info = ours.session(remote)
        assert info["counters"]["session_down"] == len(latencies)
    finally:
        ours.stop()
