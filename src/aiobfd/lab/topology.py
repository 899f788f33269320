"""Ready-made lab topologies: `Lab` (two namespaces over a veth) and `RoutedLab`.

For tests and example labs; needs root and iproute2. `Lab`::

    host (our daemon)                         peer (FRR or BIRD)
    198.51.100.1/24, 2001:db8::1/64  <-veth->  198.51.100.2/24, 2001:db8::2/64

`RoutedLab` makes 'peer' a router and hangs a third namespace, 'far', off it on
203.0.113.0/24 and 2001:db8:2::/64: packets between host and far cross one router,
so they arrive with TTL 254. Only documentation ranges are used, and no traffic
leaves the namespaces.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, replace

from .netns import LabError, Naming, NetnsLab, wait_until

LAB_NAMING = Naming("abfd-", "ab")
"""The names of `Lab` and `RoutedLab` by default: namespaces 'abfd-<tag>h', links 'ab<tag>h'."""

HOST, PEER, FAR = "host", "peer", "far"
IPV4_PREFIXLEN, IPV6_PREFIXLEN = 24, 64
ADDRESSES = {
    HOST: ("198.51.100.1", "2001:db8::1"),
    PEER: ("198.51.100.2", "2001:db8::2"),
    FAR: ("203.0.113.2", "2001:db8:2::2"),
}
ROUTER_FAR_V4, ROUTER_FAR_V6 = "203.0.113.1", "2001:db8:2::1"
BLACKHOLE_MAC = "00:00:5e:00:53:01"
"""RFC 7042 documentation MAC: neighbour entries pointing here make the veth drop frames."""


@dataclass(frozen=True)
class Side:
    """One end of the lab: its namespace, its veth and its addresses."""

    role: str
    """'host' (where our daemon runs), 'peer' (where FRR or BIRD usually runs) or 'far'."""
    ns: str
    ifname: str
    ipv4: str
    ipv6: str
    link_local: str = ""
    """fe80:: address of `ifname`, known once the link is up."""


class Lab(NetnsLab):
    """Two namespaces ('host' and 'peer') joined by a veth pair; a context manager.

    Commands take a side as 'host', 'peer' or the namespace's own name. For example::

        with Lab() as lab:
            daemon = lab.popen(
                "host", sys.executable, "-m", "aiobfd", lab.host.ipv4, lab.peer.ipv4,
                "--control-socket", lab.rundir / "aiobfd.sock",  # short: AF_UNIX limit
                log=tmp_path / "aiobfd.log",
            )
    """

    def __init__(self, naming: Naming = LAB_NAMING) -> None:
        super().__init__(naming)
        self.host = Side(HOST, "", "", *ADDRESSES[HOST])
        self.peer = Side(PEER, "", "", *ADDRESSES[PEER])

    def sides(self) -> list[Side]:
        return [self.host, self.peer]

    def side(self, ns: str) -> Side:
        """The side for 'host', 'peer' or a namespace name of this lab."""
        for side in self.sides():
            if ns == side.role or (side.ns and ns == side.ns):
                return side
        raise LabError(f"no side {ns!r} in this lab")

    def _build(self) -> None:
        self.host = self._add_side(HOST, "h")
        self.peer = self._add_side(PEER, "p")
        self.add_veth(self.host.ns, self.host.ifname, self.peer.ns, self.peer.ifname)
        for side in (self.host, self.peer):
            self._configure(side.ns, side.ifname, side.ipv4, side.ipv6)
        self.host = replace(self.host, link_local=self.link_local(HOST))
        self.peer = replace(self.peer, link_local=self.link_local(PEER))

    def _add_side(self, role: str, suffix: str) -> Side:
        ns = self.add_namespace(role, suffix)
        # New interfaces in the namespace (veths, macvlans) get no DAD and keep
        # addresses on down.
        self.sysctls(
            ns,
            {"net.ipv6.conf.default.accept_dad": 0, "net.ipv6.conf.default.keep_addr_on_down": 1},
        )
        return Side(role, ns, self.ifname(suffix), *ADDRESSES[role])

    def _configure(self, ns: str, ifname: str, ipv4: str, ipv6: str) -> None:
        """Addresses on a link, usable at once; IPv6 addresses kept over link_down()."""
        self.sysctls(
            ns,
            {
                f"net.ipv6.conf.{ifname}.accept_dad": 0,
                f"net.ipv6.conf.{ifname}.keep_addr_on_down": 1,
            },
        )
        self.ip(ns, f"addr add {ipv4}/{IPV4_PREFIXLEN} dev {ifname}")
        self.ip(ns, f"-6 addr add {ipv6}/{IPV6_PREFIXLEN} dev {ifname} nodad")
        self.ip(ns, f"link set {ifname} up")

    # -- link and addresses ----------------------------------------------------------------

    def link_local(self, ns: str, timeout: float = 5.0) -> str:
        """The fe80:: address of a side's veth, waiting until it exists and is usable."""
        side = self.side(ns)

        def probe() -> str | None:
            out = self.ip(side.ns, f"-json -6 addr show dev {side.ifname} scope link")
            for link in json.loads(out.stdout or "[]"):
                for addr in link.get("addr_info", []):  # filtered-out entries come as {}
                    if "local" in addr and not addr.get("tentative") and not addr.get("dadfailed"):
                        return str(addr["local"])
            return None

        return wait_until(probe, timeout, f"a link-local address on {side.ifname} in {side.ns}")

    def link_down(self) -> None:
        """Set the peer's veth down: the host side loses carrier and nothing passes."""
        self.ip(PEER, f"link set {self.peer.ifname} down")

    def link_up(self, timeout: float = 5.0) -> None:
        """Undo `link_down()` and wait until both ends are operationally up."""
        self.ip(PEER, f"link set {self.peer.ifname} up")

        def operstate(side: Side) -> str:
            [link] = json.loads(self.ip(side.ns, f"-json link show {side.ifname}").stdout)
            return str(link["operstate"])

        def both_up() -> bool:
            return all(operstate(s) == "UP" for s in (self.host, self.peer))

        wait_until(both_up, timeout, "the veth pair to come back up")
        self.link_local(PEER, timeout)

    def drop_traffic(self) -> None:
        """Silently drop all unicast IP between host and peer, links staying up.

        Each side's neighbour entries for the other side's addresses point at a
        documentation MAC, so the receiving veth discards the frames: a peer stops
        hearing us without any interface event, as with a failure in the path.
        """
        for here, there in ((self.host, self.peer), (self.peer, self.host)):
            entry = f"lladdr {BLACKHOLE_MAC} dev {here.ifname} nud permanent"
            for addr in (there.ipv4, there.ipv6, there.link_local):
                self.ip(here.ns, f"neigh replace {addr} {entry}")

    def restore_traffic(self) -> None:
        """Undo `drop_traffic()`."""
        for side in (self.host, self.peer):
            self.ip(side.ns, f"neigh flush dev {side.ifname} nud permanent")

    def add_macvlan(self, ns: str, name: str, *addrs: str) -> str:
        """Add a macvlan on a side's veth with addresses (each with /24 or /64); return its name.

        For several BFD sessions from one FRR toward one address: FRR keys single-hop
        sessions by interface, so each local address needs its own. ARP is answered only
        by the interface owning the address (`arp_ignore=1`). The name is prefixed with the
        lab's link prefix and tag; keep `name` to 4 characters (15-character limit).
        """
        side = self.side(ns)
        ifname = self.ifname(name)
        self.sysctl(side.ns, "net.ipv4.conf.all.arp_ignore", 1)
        self.ip(side.ns, f"link add {ifname} link {side.ifname} type macvlan mode bridge")
        for addr in addrs:
            ip = ipaddress.ip_address(addr)
            plen = IPV4_PREFIXLEN if ip.version == 4 else IPV6_PREFIXLEN
            nodad = " nodad" if ip.version == 6 else ""
            self.ip(side.ns, f"addr add {addr}/{plen} dev {ifname}{nodad}")
        self.ip(side.ns, f"link set {ifname} up")
        return ifname


class RoutedLab(Lab):
    """host (198.51.100.1) -- router ('peer', .2 / 203.0.113.1) -- far (203.0.113.2)."""

    def __init__(self, naming: Naming = LAB_NAMING) -> None:
        super().__init__(naming)
        self.far = Side(FAR, "", "", *ADDRESSES[FAR])
        self.router_far_if = ""

    def sides(self) -> list[Side]:
        return [*super().sides(), self.far]

    def _build(self) -> None:
        super()._build()
        self.far = self._add_side(FAR, "f")
        self.router_far_if = self.ifname("r")
        self.add_veth(self.peer.ns, self.router_far_if, self.far.ns, self.far.ifname)
        self._configure(self.peer.ns, self.router_far_if, ROUTER_FAR_V4, ROUTER_FAR_V6)
        self._configure(self.far.ns, self.far.ifname, self.far.ipv4, self.far.ipv6)
        self.sysctls(PEER, {"net.ipv4.ip_forward": 1, "net.ipv6.conf.all.forwarding": 1})
        self.ip(HOST, f"route add 203.0.113.0/24 via {self.peer.ipv4}")
        self.ip(HOST, f"-6 route add 2001:db8:2::/64 via {self.peer.ipv6}")
        self.ip(FAR, f"route add 198.51.100.0/24 via {ROUTER_FAR_V4}")
        self.ip(FAR, f"-6 route add 2001:db8::/64 via {ROUTER_FAR_V6}")
        self.far = replace(self.far, link_local=self.link_local(FAR))
