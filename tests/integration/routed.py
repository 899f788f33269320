"""A routed lab for multihop tests: host -- router -- far, three namespaces.

The 'peer' namespace of :class:`~.netns.Lab` becomes a router (forwarding on)
and a third namespace, 'far', hangs off it on 203.0.113.0/24 and 2001:db8:2::/64.
Packets between host and far cross one router, so they arrive with TTL 254.
"""

from __future__ import annotations

from dataclasses import replace

from .netns import _LIVE, _OWNER_ALIAS, Lab, LabError, Side, _cmd, _delete_ns

FAR = "far"
FAR_V4, ROUTER_FAR_V4 = "203.0.113.2", "203.0.113.1"
FAR_V6, ROUTER_FAR_V6 = "2001:db8:2::2", "2001:db8:2::1"


class RoutedLab(Lab):
    """host (198.51.100.1) -- router ('peer', .2 / 203.0.113.1) -- far (203.0.113.2)."""

    def __init__(self) -> None:
        super().__init__()
        self.far = Side(FAR, "", "", FAR_V4, FAR_V6)
        self.router_far_if = ""

    def _build(self) -> None:
        super()._build()
        tag = self.tag
        self.far = Side(FAR, f"{self.prefix}{tag}f", f"ab{tag}f", FAR_V4, FAR_V6)
        self.router_far_if = f"ab{tag}r"
        _cmd("ip", "netns", "add", self.far.ns)
        _LIVE.add(self.far.ns)
        self.run(
            self.far.ns,
            "ip",
            "link",
            "set",
            "lo",
            "alias",
            _OWNER_ALIAS.format(pid=__import__("os").getpid()),
        )
        self.run(self.far.ns, "ip", "link", "set", "lo", "up")
        _cmd(*f"ip link add {self.router_far_if} type veth peer name {self.far.ifname}".split())
        _cmd("ip", "link", "set", self.router_far_if, "netns", self.peer.ns)
        _cmd("ip", "link", "set", self.far.ifname, "netns", self.far.ns)
        for ns, ifname, v4, v6 in (
            (self.peer.ns, self.router_far_if, ROUTER_FAR_V4, ROUTER_FAR_V6),
            (self.far.ns, self.far.ifname, FAR_V4, FAR_V6),
        ):
            self._sysctl(ns, f"net.ipv6.conf.{ifname}.accept_dad", 0)
            self.run(ns, "ip", "addr", "add", f"{v4}/24", "dev", ifname)
            self.run(ns, "ip", "-6", "addr", "add", f"{v6}/64", "dev", ifname, "nodad")
            self.run(ns, "ip", "link", "set", ifname, "up")
        self._sysctl(self.peer.ns, "net.ipv4.ip_forward", 1)
        self._sysctl(self.peer.ns, "net.ipv6.conf.all.forwarding", 1)
        self.run(self.host.ns, "ip", "route", "add", "203.0.113.0/24", "via", self.peer.ipv4)
        self.run(self.host.ns, "ip", "-6", "route", "add", "2001:db8:2::/64", "via", self.peer.ipv6)
        self.run(self.far.ns, "ip", "route", "add", "198.51.100.0/24", "via", ROUTER_FAR_V4)
        self.run(self.far.ns, "ip", "-6", "route", "add", "2001:db8::/64", "via", ROUTER_FAR_V6)
        self.far = replace(self.far, link_local=self.link_local(FAR))

    def close(self, raise_errors: bool = False) -> None:
        if self.far.ns:
            try:
                # Processes in 'far' are in self._procs and stopped by the base class
                # first; the namespace goes after them.
                super().close(raise_errors=False)
            finally:
                _delete_ns(self.far.ns)
                _LIVE.discard(self.far.ns)
                self.far = replace(self.far, ns="")
            return
        super().close(raise_errors)

    def side(self, ns: str) -> Side:
        if ns in (FAR, self.far.ns) and self.far.ns:
            return self.far
        return super().side(ns)

    def link_local(self, ns: str, timeout: float = 5.0) -> str:
        if ns == FAR:
            out = self.run(
                self.far.ns,
                "ip",
                "-6",
                "-o",
                "addr",
                "show",
                "dev",
                self.far.ifname,
                "scope",
                "link",
            ).stdout
            for word in out.split():
                if word.startswith("fe80::"):
                    return word.split("/")[0]
            raise LabError("no link-local address on far")
        return super().link_local(ns, timeout)
