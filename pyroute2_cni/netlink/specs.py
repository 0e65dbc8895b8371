"""Kernel objects as values: what one should be (``*Spec``), what the kernel reports
(``*State``), and the change that takes one to the other (:class:`LinkChange`).

Pure: no I/O.  ``netlink.sessions`` encodes the specs and decodes the states (with
``netlink.decode``); ``tests/harness/fake_netlink.py`` keeps them in memory.

Routes and rules we add carry protocol :data:`OUR_PROTO`; only such objects (or objects of a
known domain) are ever deleted as stale (``netlink.plan``).
"""

from __future__ import annotations

from dataclasses import dataclass

# Protocol number on the routes and rules we add (unassigned in the kernel's
# rtnetlink.h and iproute2's rt_protos; `ip` shows it as "proto 77").
OUR_PROTO = 77
RTPROT_KERNEL = 2
RTPROT_BOOT = 3
# The highest metric iproute2 users commonly use for "last resort" routes.
UNREACHABLE_METRIC = 4278198272
TABLE_MAIN = 254
TABLE_LOCAL = 255
PREF_LOCAL_DEFAULT = 0
PREF_L3MDEV = 1000
PREF_SYSTEM = 2000
PREF_LOCAL = 32765


# -- sysctls ----------------------------------------------------------------------


def sysctl_key(*parts: str) -> str:
    """A key relative to /proc/sys, slash separated (device names may contain dots)."""
    return "/".join(parts)


@dataclass(frozen=True, slots=True, kw_only=True)
class SysctlSpec:
    key: str
    value: str
    # Skip when the key does not exist (e.g. net/vrf/strict_mode before the vrf module).
    optional: bool = False


NODE_SYSCTLS: tuple[SysctlSpec, ...] = (
    SysctlSpec(key=sysctl_key("net", "ipv4", "ip_forward"), value="1"),
    SysctlSpec(key=sysctl_key("net", "ipv4", "conf", "all", "rp_filter"), value="0"),
    SysctlSpec(key=sysctl_key("net", "ipv4", "conf", "default", "rp_filter"), value="0"),
    # Pods reach remote blocks through the bridge they sit on (in and out the same
    # device): without this the gateway answers with ICMP redirects to the remote VTEP.
    # The kernel ORs "all" with the device's value, so both are set.
    SysctlSpec(key=sysctl_key("net", "ipv4", "conf", "all", "send_redirects"), value="0"),
    SysctlSpec(key=sysctl_key("net", "ipv4", "tcp_l3mdev_accept"), value="1"),
    SysctlSpec(key=sysctl_key("net", "ipv4", "udp_l3mdev_accept"), value="1"),
    SysctlSpec(key=sysctl_key("net", "ipv4", "raw_l3mdev_accept"), value="1"),
    SysctlSpec(key=sysctl_key("net", "vrf", "strict_mode"), value="1", optional=True),
)


def device_sysctls(name: str) -> tuple[SysctlSpec, ...]:
    return (
        SysctlSpec(key=sysctl_key("net", "ipv4", "conf", name, "rp_filter"), value="0"),
        SysctlSpec(key=sysctl_key("net", "ipv4", "conf", name, "send_redirects"), value="0"),
    )


# -- desired and live objects -----------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class BridgePortSpec:
    neigh_suppress: bool
    learning: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkSpec:
    """A fabric device as it should be."""

    name: str
    kind: str  # "vrf" | "bridge" | "vxlan"
    mac: str
    mtu: int | None  # None: leave the kernel's value
    master: str = ""
    up: bool = False
    table: int = 0  # vrf
    vni: int = 0  # vxlan
    local: str = ""  # vxlan
    port: int = 0  # vxlan
    addrgen_none: bool = True
    bridge_port: BridgePortSpec | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkState:
    """A link as the kernel reports it (fields we do not understand stay at defaults)."""

    index: int
    name: str
    kind: str = ""
    mac: str = ""
    mtu: int = 0
    master: int = 0  # ifindex, 0 = none
    up: bool = False
    alias: str = ""
    table: int = 0
    vni: int = 0
    local: str = ""
    port: int = 0
    learning: bool | None = None  # vxlan learning
    addrgen_mode: int | None = None  # IN6_ADDR_GEN_MODE_*; None without IPv6
    port_neigh_suppress: bool | None = None  # set when the link is a bridge port
    port_learning: bool | None = None
    peer_in_other_netns: bool = False  # veth whose peer lives in another namespace
    arp_notify: bool | None = None  # gratuitous ARP when the link comes up; None: no IPv4


ADDRGEN_NONE = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkChange:
    """What to change on an existing link; None means leave it."""

    mtu: int | None = None
    mac: str | None = None
    master: str | None = None  # "" removes the master
    up: bool | None = None
    addrgen_none: bool = False
    alias: str | None = None
    bridge_port: BridgePortSpec | None = None
    # Turn on net.ipv4.conf.<link>.arp_notify: the kernel announces the link's addresses
    # (gratuitous ARP) each time it comes up.  Applied before everything else.
    arp_notify: bool = False

    def empty(self) -> bool:
        return (
            self.mtu is None
            and self.mac is None
            and self.master is None
            and self.up is None
            and not self.addrgen_none
            and self.alias is None
            and self.bridge_port is None
            and not self.arp_notify
        )

    def describe(self) -> str:
        parts: list[str] = []
        if self.mtu is not None:
            parts.append(f"mtu {self.mtu}")
        if self.mac is not None:
            parts.append(f"address {self.mac}")
        if self.master is not None:
            parts.append(f"master {self.master or '(none)'}")
        if self.up is not None:
            parts.append("up" if self.up else "down")
        if self.addrgen_none:
            parts.append("addrgenmode none")
        if self.alias is not None:
            parts.append("alias")
        if self.arp_notify:
            parts.append("arp_notify")
        if self.bridge_port is not None:
            parts.append(
                f"neigh_suppress {'on' if self.bridge_port.neigh_suppress else 'off'} "
                f"learning {'on' if self.bridge_port.learning else 'off'}"
            )
        return ", ".join(parts)


@dataclass(frozen=True, slots=True, kw_only=True)
class AddrSpec:
    ifname: str
    address: str
    prefixlen: int

    def describe(self) -> str:
        return f"{self.address}/{self.prefixlen} dev {self.ifname}"


@dataclass(frozen=True, slots=True, kw_only=True)
class AddrState:
    index: int
    address: str
    prefixlen: int
    secondary: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteSpec:
    table: int
    dst: str  # a network in CIDR form; "0.0.0.0/0" for default
    type: str = "unicast"  # "unicast" | "unreachable"
    metric: int = 0
    proto: int = OUR_PROTO
    gateway: str = ""
    oif: str = ""  # interface name, for unicast routes

    def key(self) -> tuple[int, str, int, str]:
        return (self.table, self.dst, self.metric, self.type)

    def describe(self) -> str:
        via = f" via {self.gateway}" if self.gateway else ""
        dev = f" dev {self.oif}" if self.oif else ""
        return f"{self.type} {self.dst}{via}{dev} table {self.table} metric {self.metric}"


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteState:
    table: int
    dst: str
    type: str
    metric: int
    proto: int
    gateway: str = ""
    oif: int = 0

    def key(self) -> tuple[int, str, int, str]:
        return (self.table, self.dst, self.metric, self.type)


@dataclass(frozen=True, slots=True, kw_only=True)
class RuleSpec:
    priority: int
    table: int = 0  # 0 with l3mdev
    dst: str = ""  # CIDR or "" for all
    l3mdev: bool = False
    proto: int = OUR_PROTO

    def key(self) -> tuple[int, int, str, bool]:
        return (self.priority, self.table, self.dst, self.l3mdev)

    def describe(self) -> str:
        to = f" to {self.dst}" if self.dst else ""
        what = "lookup [l3mdev-table]" if self.l3mdev else f"lookup {self.table}"
        return f"pref {self.priority}{to} {what}"


@dataclass(frozen=True, slots=True, kw_only=True)
class RuleState:
    priority: int
    table: int
    dst: str = ""
    src: str = ""
    l3mdev: bool = False
    proto: int = 0
    # Selectors we never set: a rule using any of them is not one of ours.
    other_selectors: bool = False
    action: int = 1  # FR_ACT_TO_TBL

    def key(self) -> tuple[int, int, str, bool]:
        return (self.priority, self.table, self.dst, self.l3mdev)

    def plain(self) -> bool:
        return not self.src and not self.other_selectors and self.action == 1


@dataclass(frozen=True, slots=True, kw_only=True)
class VethSpec:
    """A pod's veth pair: host side in this namespace, peer created in the pod netns."""

    host_name: str
    host_mac: str
    peer_name: str
    peer_mac: str
    netns: str
    mtu: int
    master: str
    alias: str
