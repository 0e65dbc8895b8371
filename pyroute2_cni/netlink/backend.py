"""The kernel as the NetlinkActor sees it: the :class:`NetlinkBackend` protocol.

Two implementations: ``netlink.sessions.KernelNetlink`` (rtnetlink, the daemon) and
``tests/harness/fake_netlink.py`` (in memory, the unit tier); one behaviour suite
(``tests/harness/netlink_behaviour.py``) runs against both.

Errors are ``OSError`` with the kernel's errno (EEXIST, ENODEV, ESRCH, ENOENT,
EADDRNOTAVAIL, ENETUNREACH...), and the kernel's extended ack message when it sent one.
Callers turn the errno that means "already so" into success; nothing else is swallowed.
"""

from __future__ import annotations

from typing import Protocol

from pyroute2_cni.netlink import specs


class NetnsSession(Protocol):
    """Operations inside one network namespace."""

    def link_get(self, name: str | int) -> specs.LinkState | None:
        """The link with this name (or ifindex); None when there is none."""

    def links(self, kind: str = "") -> tuple[specs.LinkState, ...]:
        """Every link, or only those of `kind` ("veth", "bridge", "vrf", "vxlan")."""

    def link_set(self, name: str, change: specs.LinkChange) -> None:
        """ENODEV when `name` (or the new master) does not exist."""

    def addresses(self, index: int = 0) -> tuple[specs.AddrState, ...]:
        """IPv4 addresses (of link `index` only when given)."""

    def addr_add(self, spec: specs.AddrSpec) -> None:
        """EEXIST when present; ENODEV when the link is missing."""

    def addr_delete(self, spec: specs.AddrSpec) -> None:
        """EADDRNOTAVAIL when absent."""

    def routes(self, table: int) -> tuple[specs.RouteState, ...]:
        """IPv4 routes of `table`."""

    def route_add(self, spec: specs.RouteSpec) -> None:
        """EEXIST when a route with the same table, prefix and metric exists; ENETUNREACH
        for a gateway outside every connected subnet (a link that is down has none)."""

    def route_replace(self, spec: specs.RouteSpec) -> None: ...

    def route_delete(self, spec: specs.RouteSpec) -> None:
        """ESRCH when absent."""

    def close(self) -> None: ...


class NetlinkBackend(NetnsSession, Protocol):
    """The node's namespace, plus what only it can do."""

    def link_create(self, spec: specs.LinkSpec) -> None:
        """Create a fabric device: EEXIST when the name is taken; ENODEV for a missing master.

        Applies everything in `spec` (addrgenmode and bridge port settings before up)."""

    def link_delete(self, name: str) -> None:
        """ENODEV when absent.  Deleting one end of a veth pair deletes the other."""

    def veth_create(self, spec: specs.VethSpec) -> None:
        """Create a pod's veth pair: host side up in the master bridge (addrgenmode none,
        alias), peer down in the pod netns (the kernel cannot bring it up in the same
        request).  ENOENT when the netns path does not exist; EEXIST when either name is
        taken."""

    def rules(self) -> tuple[specs.RuleState, ...]:
        """IPv4 policy routing rules."""

    def rule_add(self, spec: specs.RuleSpec) -> None:
        """EEXIST when an identical rule exists."""

    def rule_delete(self, spec: specs.RuleSpec) -> None:
        """ENOENT when absent."""

    def sysctl_get(self, key: str) -> str | None:
        """Value of /proc/sys/`key` (slash separated), None when the key does not exist."""

    def sysctl_set(self, key: str, value: str) -> None:
        """ENOENT when the key does not exist."""

    def open_netns(self, path: str) -> NetnsSession:
        """A session in the pod namespace at `path`; ENOENT when it is gone."""
