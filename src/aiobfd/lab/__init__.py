"""Network-namespace labs with real BFD peers, for tests, benchmarks and example labs.

Shipped with aiobfd in the way of ``numpy.testing`` or ``trio.testing``: the daemon
never imports it. It needs root (network namespaces) and iproute2, and FRR or BIRD 2
for the peers of those names. Only documentation addresses (192.0.2.0/24,
198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32) are used, inside namespaces the lab
made; everything a lab makes is removed when it closes, and `cleanup_stale` removes
what a killed run left behind without touching a concurrent user's labs.

Modules:

- `aiobfd.lab.netns`: commands and waits, namespace ownership, `cleanup_stale`,
  and `NetnsLab`, the base of every lab (namespaces, veths, processes, rundir).
- `aiobfd.lab.topology`: `Lab` (host and peer over a veth) and `RoutedLab`
  (host, router, far).
- `aiobfd.lab.frr`: `FrrInstance` (zebra, bfdd, bgpd of one instance) and `FrrPeer`.
- `aiobfd.lab.bird`: `BirdPeer`.
- `aiobfd.lab.daemon`: `OurDaemon`, aiobfd as a process in a namespace.
"""

from __future__ import annotations

from .bird import BIRD, BIRDC, BirdNeighbor, BirdOptions, BirdPeer, parse_bird_sessions
from .daemon import DaemonError, OurDaemon, aiobfd_command, daemon_env, pythonpath
from .frr import BFDD, BGPD, VTYSH, ZEBRA, FrrInstance, FrrPeer, FrrSession, frr_version
from .netns import (
    CommandError,
    LabError,
    LabTimeout,
    Naming,
    NetnsLab,
    cleanup_stale,
    delete_namespace,
    list_namespaces,
    log_tail,
    missing_tools,
    ns_pids,
    pid_alive,
    run,
    stop_process,
    wait_until,
)
from .peer import Peer, PeerError
from .topology import LAB_NAMING, Lab, RoutedLab, Side

__all__ = [
    "BFDD",
    "BGPD",
    "BIRD",
    "BIRDC",
    "LAB_NAMING",
    "VTYSH",
    "ZEBRA",
    "BirdNeighbor",
    "BirdOptions",
    "BirdPeer",
    "CommandError",
    "DaemonError",
    "FrrInstance",
    "FrrPeer",
    "FrrSession",
    "Lab",
    "LabError",
    "LabTimeout",
    "Naming",
    "NetnsLab",
    "OurDaemon",
    "Peer",
    "PeerError",
    "RoutedLab",
    "Side",
    "aiobfd_command",
    "cleanup_stale",
    "daemon_env",
    "delete_namespace",
    "frr_version",
    "list_namespaces",
    "log_tail",
    "missing_tools",
    "ns_pids",
    "parse_bird_sessions",
    "pid_alive",
    "pythonpath",
    "run",
    "stop_process",
    "wait_until",
]
