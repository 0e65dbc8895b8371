"""The data plane as pure values: names, MACs, the desired kernel state and how to reach it.

No I/O and no pyroute2 here (see ``netlink.backend`` for the kernel side).  The NetlinkActor
feeds this module what the kernel reports (:class:`LiveView`) and what the cluster wants
(:class:`DomainIntent`) and executes the :data:`Action` tuple it returns.

Invariants (keep in sync with ``actors/netlink_actor.py`` and ``netlink/backend.py``):

- Every interface name is at most 15 characters: ``vrf-<vrf>`` (vrf ≤ 65535),
  ``l3br-<vrf>``/``l2br-<vrf>``, ``l3vx-<vni>``/``l2vx-<vni>`` (vni ≤ 16777215) and pod host
  veths ``p2c`` + 12 hex digits of sha256(container id, ifname).
- MACs are derived, never random, so that recreating a device restores the same address:
  locally administered unicast (first octet ``x2``/``x6``/``xA``/``xE``).  The l3 bridge
  MAC is the EVPN router MAC and differs per node; the l2 bridge MAC is the distributed
  anycast gateway MAC and is the same on every node (pods keep one gateway MAC).
- Routes and rules we add carry protocol :data:`OUR_PROTO`; only such objects (or objects
  of a known domain) are ever deleted as stale.
- Plans are computed from a fresh :class:`LiveView`: running a plan and planning again
  yields no action (tested by "ensure twice changes nothing").

Routing design (validated on the User-Mode Linux kernel, see tests/kernel):

- The local table rule moves from priority 0 to :data:`PREF_LOCAL` (32765, after the
  l3mdev rule at 1000).  With it at 0, a tenant pod reaches the node's own addresses (the
  local table is consulted before the VRF table).
- Tenant VRF tables end in ``unreachable default``: nothing leaves a tenant VRF.
- The system VRF table ends in ``unreachable <system prefix>`` instead, so a lookup for
  anything else falls through the l3mdev rule to the local and main tables: system pods
  reach the host, DNAT'd ClusterIPs and, masqueraded, the world.
- Rule ``to <system prefix> lookup <table>`` at :data:`PREF_SYSTEM` (2000, after l3mdev)
  lets the host (kubelet probes) and replies to masqueraded traffic reach system pods.  It
  sits after the l3mdev rule so tenant traffic, which ends in its own table, never sees it.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from pyroute2_cni.messages.crd import (
    AttachmentType,
    VrfDomainSpec,
    VrfNodeConfigSpec,
)
from pyroute2_cni.messages.ipam import BlockInfo
from pyroute2_cni.messages.netlink import Vtep
from pyroute2_cni.values.attachment import DEFAULT_NETWORK

IFNAMSIZ = 15
VXLAN_OVERHEAD = 50
DEFAULT_UNDERLAY_MTU = 1500
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
MAX_ALIAS = 255

ALIAS_PREFIX = "pyroute2-cni/v1"
HOST_VETH_PREFIX = "p2c"

_VRF_RE = re.compile(r"^vrf-(\d+)$")
_BRIDGE_RE = re.compile(r"^(l[23])br-(\d+)$")
_VXLAN_RE = re.compile(r"^(l[23])vx-(\d+)$")
_HOST_VETH_RE = re.compile(r"^p2c[0-9a-f]{12}$")
# CNI spec: container id alphanumerics, hyphen, underscore, period.
_CONTAINER_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")

_PREFIX = {AttachmentType.L3VNI: "l3", AttachmentType.L2VNI: "l2"}
_BY_PREFIX = {v: k for k, v in _PREFIX.items()}


# -- names ------------------------------------------------------------------------


def vrf_name(vrf: int) -> str:
    return f"vrf-{vrf}"


def bridge_name(kind: AttachmentType, vrf: int) -> str:
    return f"{_PREFIX[kind]}br-{vrf}"


def vxlan_name(kind: AttachmentType, vni: int) -> str:
    return f"{_PREFIX[kind]}vx-{vni}"


def host_veth_name(container_id: str, ifname: str) -> str:
    digest = hashlib.sha256(f"{container_id}/{ifname}".encode()).hexdigest()
    return HOST_VETH_PREFIX + digest[:12]


def is_host_veth_name(name: str) -> bool:
    return bool(_HOST_VETH_RE.match(name))


def is_fabric_name(name: str) -> bool:
    """True for names this daemon gives to VRFs, bridges and VXLANs."""
    return bool(_VRF_RE.match(name) or _BRIDGE_RE.match(name) or _VXLAN_RE.match(name))


def fabric_vrf_of(name: str) -> int | None:
    """The VRF id a VRF or bridge name encodes (None for VXLANs and foreign names)."""
    for pattern, group in ((_VRF_RE, 1), (_BRIDGE_RE, 2)):
        m = pattern.match(name)
        if m:
            return int(m.group(group))
    return None


def vxlan_vni_of(name: str) -> int | None:
    m = _VXLAN_RE.match(name)
    return int(m.group(2)) if m else None


def valid_ifname(name: str) -> bool:
    """Linux (and CNI) rules for an interface name."""
    return (
        0 < len(name.encode()) <= IFNAMSIZ
        and name not in (".", "..")
        and not any(c in name for c in "/:")
        and not any(c.isspace() for c in name)
    )


def valid_container_id(container_id: str) -> bool:
    return 0 < len(container_id) <= 128 and bool(_CONTAINER_ID_RE.match(container_id))


# -- MACs and MTU -----------------------------------------------------------------


def stable_mac(*parts: str) -> str:
    """A locally administered unicast MAC derived from `parts`."""
    digest = bytearray(hashlib.sha256("\0".join(parts).encode()).digest()[:6])
    digest[0] = (digest[0] & 0xFC) | 0x02
    return ":".join(f"{b:02x}" for b in digest)


def vrf_mac(node: str, vrf: int) -> str:
    return stable_mac("vrf", node, str(vrf))


def bridge_mac(node: str, kind: AttachmentType, vrf: int, vni: int) -> str:
    if kind is AttachmentType.L2VNI:
        # Distributed anycast gateway: the same on every node.
        return stable_mac("l2gw", str(vrf), str(vni))
    # EVPN router MAC: per node.
    return stable_mac("l3br", node, str(vrf), str(vni))


def vxlan_mac(node: str, vni: int) -> str:
    return stable_mac("vxlan", node, str(vni))


def pod_macs(node: str, container_id: str, ifname: str) -> tuple[str, str]:
    """(host side, pod side) MACs of a pod's veth pair."""
    return (
        stable_mac("pod-host", node, container_id, ifname),
        stable_mac("pod", node, container_id, ifname),
    )


def pod_mtu(configured: int, underlay: int | None) -> int:
    """MTU of every data plane device: the configured value, else underlay - 50."""
    if configured:
        return configured
    base = underlay if underlay else DEFAULT_UNDERLAY_MTU
    return base - VXLAN_OVERHEAD


def normalize_mac(mac: str) -> str:
    return mac.lower()


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


# -- actions ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateLink:
    spec: LinkSpec
    kind: str = "link"

    def describe(self) -> str:
        return f"create {self.spec.kind} {self.spec.name}"


@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteLink:
    name: str
    reason: str = ""
    kind: str = "link"

    def describe(self) -> str:
        return f"delete {self.name}" + (f" ({self.reason})" if self.reason else "")


@dataclass(frozen=True, slots=True, kw_only=True)
class ChangeLink:
    name: str
    change: LinkChange
    kind: str = "link"

    def describe(self) -> str:
        return f"set {self.name} {self.change.describe()}"


@dataclass(frozen=True, slots=True, kw_only=True)
class AddAddress:
    spec: AddrSpec
    kind: str = "address"

    def describe(self) -> str:
        return f"add address {self.spec.describe()}"


@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteAddress:
    spec: AddrSpec
    kind: str = "address"

    def describe(self) -> str:
        return f"delete address {self.spec.describe()}"


@dataclass(frozen=True, slots=True, kw_only=True)
class AddRoute:
    spec: RouteSpec
    kind: str = "route"

    def describe(self) -> str:
        return f"add route {self.spec.describe()}"


@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteRoute:
    spec: RouteSpec
    kind: str = "route"

    def describe(self) -> str:
        return f"delete route {self.spec.describe()}"


@dataclass(frozen=True, slots=True, kw_only=True)
class AddRule:
    spec: RuleSpec
    kind: str = "rule"

    def describe(self) -> str:
        return f"add rule {self.spec.describe()}"


@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteRule:
    spec: RuleSpec
    kind: str = "rule"

    def describe(self) -> str:
        return f"delete rule {self.spec.describe()}"


Action = (
    CreateLink
    | DeleteLink
    | ChangeLink
    | AddAddress
    | DeleteAddress
    | AddRoute
    | DeleteRoute
    | AddRule
    | DeleteRule
)


# -- the desired state of a domain ------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class DomainIntent:
    """What the cluster wants for one VRFDomain on this node."""

    domain: VrfDomainSpec
    system: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class DomainDesired:
    vrf: int
    table: int
    links: tuple[LinkSpec, ...]  # in creation order: vrf, bridges, vxlans
    addresses: tuple[AddrSpec, ...]
    routes: tuple[RouteSpec, ...]
    rules: tuple[RuleSpec, ...]
    sysctls: tuple[SysctlSpec, ...]

    @property
    def names(self) -> frozenset[str]:
        return frozenset(link.name for link in self.links)

    @property
    def bridges(self) -> tuple[str, ...]:
        return tuple(link.name for link in self.links if link.kind == "bridge")


def gateway_addresses(domain: VrfDomainSpec, blocks: Iterable[BlockInfo]) -> tuple[AddrSpec, ...]:
    """Block gateways on the pod bridge: l2vni uses the domain prefixlen, l3vni ipblocklen."""
    attachment = domain.pod_attachment()
    bridge = bridge_name(attachment.type, domain.vrf)
    prefixlen = domain.prefixlen if attachment.type is AttachmentType.L2VNI else domain.ipblocklen
    seen: dict[tuple[str, int], AddrSpec] = {}
    for block in blocks:
        if block.vrf != domain.vrf or not block.gateway:
            continue
        spec = AddrSpec(ifname=bridge, address=block.gateway, prefixlen=prefixlen)
        seen.setdefault((spec.address, spec.prefixlen), spec)
    return tuple(sorted(seen.values(), key=lambda a: (a.address, a.prefixlen)))


def domain_up(
    intent: DomainIntent, brought_up: frozenset[int], known_vnis: frozenset[int]
) -> dict[int, bool]:
    """Per attachment VNI: may its devices be up?"""
    domain = intent.domain
    return {a.vni: domain.vrf in brought_up or a.vni in known_vnis for a in domain.attachments}


def desired_domain(
    intent: DomainIntent,
    *,
    node: str,
    vtep: Vtep | None,
    mtu: int,
    blocks: Sequence[BlockInfo],
    brought_up: frozenset[int],
    known_vnis: frozenset[int],
) -> DomainDesired:
    domain = intent.domain
    up_by_vni = domain_up(intent, brought_up, known_vnis)
    vrf_dev = vrf_name(domain.vrf)
    links: list[LinkSpec] = [
        LinkSpec(
            name=vrf_dev,
            kind="vrf",
            mac=vrf_mac(node, domain.vrf),
            mtu=None,
            table=domain.table,
            up=any(up_by_vni.values()),
        )
    ]
    vxlans: list[LinkSpec] = []
    for attachment in sorted(domain.attachments, key=lambda a: _PREFIX[a.type]):
        bridge = bridge_name(attachment.type, domain.vrf)
        up = up_by_vni[attachment.vni]
        links.append(
            LinkSpec(
                name=bridge,
                kind="bridge",
                mac=bridge_mac(node, attachment.type, domain.vrf, attachment.vni),
                mtu=mtu,
                master=vrf_dev,
                up=up,
            )
        )
        if vtep is None:
            continue  # a VXLAN needs the local VTEP address; added once it is known
        vxlans.append(
            LinkSpec(
                name=vxlan_name(attachment.type, attachment.vni),
                kind="vxlan",
                mac=vxlan_mac(node, attachment.vni),
                mtu=mtu,
                master=bridge,
                up=up,
                vni=attachment.vni,
                local=vtep.local,
                port=attachment.port,
                bridge_port=BridgePortSpec(
                    neigh_suppress=attachment.type is AttachmentType.L2VNI, learning=False
                ),
            )
        )
    links.extend(vxlans)
    if intent.system:
        unreachable = RouteSpec(
            table=domain.table,
            dst=str(ipaddress.IPv4Network(domain.cidr, strict=False)),
            type="unreachable",
            metric=UNREACHABLE_METRIC,
        )
        rules: tuple[RuleSpec, ...] = (
            RuleSpec(priority=PREF_SYSTEM, table=domain.table, dst=unreachable.dst),
        )
    else:
        unreachable = RouteSpec(
            table=domain.table, dst="0.0.0.0/0", type="unreachable", metric=UNREACHABLE_METRIC
        )
        rules = ()
    sysctls: list[SysctlSpec] = []
    for link in links:
        if link.kind in ("vrf", "bridge"):
            sysctls.extend(device_sysctls(link.name))
    return DomainDesired(
        vrf=domain.vrf,
        table=domain.table,
        links=tuple(links),
        addresses=gateway_addresses(domain, blocks),
        routes=(unreachable,),
        rules=rules,
        sysctls=tuple(sysctls),
    )


NODE_RULES: tuple[RuleSpec, ...] = (
    # The kernel adds this rule with the first VRF; we only put it back if it went.
    RuleSpec(priority=PREF_L3MDEV, l3mdev=True),
    RuleSpec(priority=PREF_LOCAL, table=TABLE_LOCAL),
)
# Removed once NODE_RULES are in place (see the module docstring).
NODE_RULES_ABSENT: tuple[RuleSpec, ...] = (
    RuleSpec(priority=PREF_LOCAL_DEFAULT, table=TABLE_LOCAL, proto=0),
)


def domain_conflicts(intents: Iterable[DomainIntent]) -> dict[int, str]:
    """VRFs whose devices would collide with an earlier domain's (VNI or table reused)."""
    problems: dict[int, str] = {}
    vnis: dict[int, int] = {}
    tables: dict[int, int] = {}
    for intent in sorted(intents, key=lambda i: i.domain.vrf):
        d = intent.domain
        if d.table in tables and tables[d.table] != d.vrf:
            problems[d.vrf] = f"table {d.table} already used by vrf {tables[d.table]}"
            continue
        clash = [a.vni for a in d.attachments if a.vni in vnis and vnis[a.vni] != d.vrf]
        if clash:
            problems[d.vrf] = f"vni {clash[0]} already used by vrf {vnis[clash[0]]}"
            continue
        if len({a.type for a in d.attachments}) != len(d.attachments):
            problems[d.vrf] = "two attachments of the same type"
            continue
        tables[d.table] = d.vrf
        for a in d.attachments:
            vnis[a.vni] = d.vrf
    return problems


# -- the live view and planning ---------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class LiveView:
    links: tuple[LinkState, ...]
    addresses: tuple[AddrState, ...]
    routes: tuple[RouteState, ...]  # of the tables the plan looks at
    rules: tuple[RuleState, ...]
    by_name: Mapping[str, LinkState] = field(default_factory=dict)
    by_index: Mapping[int, LinkState] = field(default_factory=dict)

    @staticmethod
    def build(
        links: Iterable[LinkState],
        addresses: Iterable[AddrState],
        routes: Iterable[RouteState],
        rules: Iterable[RuleState],
    ) -> LiveView:
        links_t = tuple(links)
        return LiveView(
            links=links_t,
            addresses=tuple(addresses),
            routes=tuple(routes),
            rules=tuple(rules),
            by_name={link.name: link for link in links_t},
            by_index={link.index: link for link in links_t},
        )

    def master_name(self, link: LinkState) -> str:
        if not link.master:
            return ""
        master = self.by_index.get(link.master)
        return master.name if master else f"#{link.master}"

    def addresses_of(self, name: str) -> tuple[AddrState, ...]:
        link = self.by_name.get(name)
        if link is None:
            return ()
        return tuple(a for a in self.addresses if a.index == link.index)


def _needs_recreate(spec: LinkSpec, live: LinkState) -> str:
    if live.kind != spec.kind:
        return f"kind {live.kind or 'none'} instead of {spec.kind}"
    if spec.kind == "vrf" and live.table != spec.table:
        return f"table {live.table} instead of {spec.table}"
    if spec.kind == "vxlan":
        if live.vni != spec.vni:
            return f"vni {live.vni} instead of {spec.vni}"
        if live.local != spec.local:
            return f"local {live.local or 'none'} instead of {spec.local}"
        if live.port != spec.port:
            return f"port {live.port} instead of {spec.port}"
        if live.learning:
            return "learning on"
    return ""


def link_change(spec: LinkSpec, live: LinkState, view: LiveView) -> LinkChange:
    master = spec.master if view.master_name(live) != spec.master else None
    bridge_port = None
    if spec.bridge_port is not None and (
        master is not None
        or live.port_neigh_suppress != spec.bridge_port.neigh_suppress
        or live.port_learning != spec.bridge_port.learning
    ):
        bridge_port = spec.bridge_port
    return LinkChange(
        mtu=spec.mtu if spec.mtu is not None and live.mtu != spec.mtu else None,
        mac=spec.mac if normalize_mac(live.mac) != normalize_mac(spec.mac) else None,
        master=master,
        up=spec.up if live.up != spec.up else None,
        addrgen_none=spec.addrgen_none
        and live.addrgen_mode is not None
        and live.addrgen_mode != ADDRGEN_NONE,
        bridge_port=bridge_port,
    )


def owned_by_domain(link: LinkState, vrf: int, view: LiveView) -> bool:
    """Is this live fabric device part of domain `vrf` (by name, or a VXLAN by master)?"""
    if fabric_vrf_of(link.name) == vrf:
        return True
    if vxlan_vni_of(link.name) is not None:
        return fabric_vrf_of(view.master_name(link)) == vrf
    return False


def plan_links(desired: DomainDesired, view: LiveView) -> list[Action]:
    actions: list[Action] = []
    wanted = desired.names
    # Stale devices of this domain (an attachment dropped or its VNI changed): VXLANs first.
    stale = [
        link
        for link in view.links
        if is_fabric_name(link.name)
        and link.name not in wanted
        and owned_by_domain(link, desired.vrf, view)
    ]
    stale.sort(key=lambda link: {"vxlan": 0, "bridge": 1}.get(link.kind, 2))
    actions.extend(DeleteLink(name=link.name, reason="not in the domain") for link in stale)
    changes: list[Action] = []
    for spec in desired.links:
        live = view.by_name.get(spec.name)
        if live is not None:
            why = _needs_recreate(spec, live)
            if why:
                actions.append(DeleteLink(name=spec.name, reason=why))
                live = None
        if live is None:
            actions.append(CreateLink(spec=spec))
            continue
        change = link_change(spec, live, view)
        if not change.empty():
            changes.append(ChangeLink(name=spec.name, change=change))
    actions.extend(changes)
    return actions


def plan_addresses(desired: DomainDesired, view: LiveView, *, prune: bool) -> list[Action]:
    actions: list[Action] = []
    wanted = set(desired.addresses)
    for bridge in desired.bridges:
        link = view.by_name.get(bridge)
        if link is None:
            # Created by this plan: every address is new.
            actions.extend(AddAddress(spec=a) for a in desired.addresses if a.ifname == bridge)
            continue
        live = {
            AddrSpec(ifname=bridge, address=a.address, prefixlen=a.prefixlen)
            for a in view.addresses
            if a.index == link.index
        }
        if prune:
            actions.extend(
                DeleteAddress(spec=a)
                for a in sorted(live - wanted, key=lambda a: (a.address, a.prefixlen))
            )
        actions.extend(
            AddAddress(spec=a) for a in desired.addresses if a.ifname == bridge and a not in live
        )
    return actions


def plan_routes(desired: DomainDesired, view: LiveView) -> list[Action]:
    actions: list[Action] = []
    live = {r.key(): r for r in view.routes if r.table == desired.table}
    wanted = {r.key(): r for r in desired.routes}
    for key, route in sorted(live.items()):
        if route.proto == OUR_PROTO and key not in wanted:
            actions.append(DeleteRoute(spec=_route_spec(route)))
    for key, spec in wanted.items():
        if key not in live:
            actions.append(AddRoute(spec=spec))
    return actions


def _route_spec(route: RouteState) -> RouteSpec:
    return RouteSpec(
        table=route.table,
        dst=route.dst,
        type=route.type,
        metric=route.metric,
        proto=route.proto,
        gateway=route.gateway,
    )


def _rule_spec(rule: RuleState) -> RuleSpec:
    return RuleSpec(
        priority=rule.priority,
        table=rule.table,
        dst=rule.dst,
        l3mdev=rule.l3mdev,
        proto=rule.proto,
    )


def plan_rules(
    wanted: Iterable[RuleSpec],
    view: LiveView,
    *,
    prune_tables: frozenset[int] | None,
) -> list[Action]:
    """Node rules plus system rules.

    Adds before it deletes (the local rule moves: add at 32765, then drop priority 0).
    Stale rules of ours (protocol OUR_PROTO) are deleted when `prune_tables` is None (the
    desired set is complete) or when they point at one of `prune_tables`.
    """
    actions: list[Action] = []
    live_plain = {r.key(): r for r in view.rules if r.plain()}
    wanted_keys: dict[tuple[int, int, str, bool], RuleSpec] = {}
    for spec in wanted:
        wanted_keys.setdefault(spec.key(), spec)
    for key, spec in wanted_keys.items():
        if key not in live_plain:
            actions.append(AddRule(spec=spec))
    for spec in NODE_RULES_ABSENT:
        if spec.key() in live_plain:
            actions.append(DeleteRule(spec=spec))
    for key, rule in sorted(live_plain.items()):
        if rule.proto != OUR_PROTO or key in wanted_keys:
            continue
        if prune_tables is None or rule.table in prune_tables:
            actions.append(DeleteRule(spec=_rule_spec(rule)))
    return actions


def plan_orphans(
    wanted_names: frozenset[str], view: LiveView
) -> tuple[list[Action], frozenset[int]]:
    """Fabric devices no desired domain claims; also the tables of orphan VRFs."""
    orphans = [
        link for link in view.links if is_fabric_name(link.name) and link.name not in wanted_names
    ]
    orphans.sort(key=lambda link: {"vxlan": 0, "bridge": 1}.get(link.kind, 2))
    tables = frozenset(link.table for link in orphans if link.kind == "vrf" and link.table)
    return [DeleteLink(name=link.name, reason="no such domain") for link in orphans], tables


def plan_orphan_routes(tables: frozenset[int], view: LiveView) -> list[Action]:
    return [
        DeleteRoute(spec=_route_spec(r))
        for r in view.routes
        if r.table in tables and r.proto == OUR_PROTO
    ]


# -- VTEP -------------------------------------------------------------------------


def primary_ipv4(index: int, addresses: Iterable[AddrState]) -> str:
    for addr in addresses:
        if addr.index == index and not addr.secondary:
            return addr.address
    return ""


def choose_vtep(
    *,
    node: str,
    node_configs: Iterable[VrfNodeConfigSpec],
    configured_interface: str,
    links: Sequence[LinkState],
    addresses: Sequence[AddrState],
    main_routes: Sequence[RouteState],
) -> Vtep | None:
    """The VXLAN underlay endpoint.

    Order: this node's VRFNodeConfig interfaces (first one), then [netlink]
    vtep_interface, then the interface of the default route in the main table.
    """
    by_name = {link.name: link for link in links}
    by_index = {link.index: link for link in links}
    for config in node_configs:
        if config.node != node or not config.interfaces:
            continue
        iface = config.interfaces[0]
        link = by_name.get(iface.name)
        local = iface.local or (primary_ipv4(link.index, addresses) if link else "")
        if local:
            return Vtep(interface=iface.name, local=local, mtu=link.mtu if link else 0)
    if configured_interface:
        link = by_name.get(configured_interface)
        if link is None:
            return None
        local = primary_ipv4(link.index, addresses)
        return Vtep(interface=link.name, local=local, mtu=link.mtu) if local else None
    defaults = sorted(
        (r for r in main_routes if r.dst == "0.0.0.0/0" and r.type == "unicast" and r.oif),
        key=lambda r: r.metric,
    )
    for route in defaults:
        link = by_index.get(route.oif)
        if link is None:
            continue
        local = primary_ipv4(link.index, addresses)
        if local:
            return Vtep(interface=link.name, local=local, mtu=link.mtu)
    return None


# -- pods -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class PodAlias:
    """What the host veth's alias records, so a restarted daemon can take inventory."""

    vrf: int
    attachment: AttachmentType
    container_id: str
    ifname: str
    netns: str = ""
    # What the pod was given, so that any later instance can plumb it again ("" in
    # aliases written before these fields existed).
    address: str = ""
    prefixlen: int = 0
    gateway: str = ""
    # Aliases of the default network carry no net= (as before the field existed).
    network: str = DEFAULT_NETWORK


def pod_alias(record: PodAlias) -> str:
    head = (
        f"{ALIAS_PREFIX} vrf={record.vrf} att={record.attachment.value}"
        f" cid={record.container_id} if={record.ifname}"
    )
    if record.network != DEFAULT_NETWORK:
        head += f" net={record.network}"
    if record.address:
        head += f" ip={record.address}/{record.prefixlen} gw={record.gateway}"
    full = f"{head} ns={record.netns}"
    # The netns path is informational: drop it rather than exceed IFALIASZ - 1.
    return full if len(full.encode()) <= MAX_ALIAS else f"{head} ns="


def parse_pod_alias(alias: str) -> PodAlias | None:
    if not alias.startswith(ALIAS_PREFIX + " "):
        return None
    head, sep, netns = alias.partition(" ns=")
    if not sep:
        return None
    fields_: dict[str, str] = {}
    for word in head.split()[1:]:
        key, eq, value = word.partition("=")
        if not eq:
            return None
        fields_[key] = value
    try:
        address, _, prefixlen = fields_.get("ip", "").partition("/")
        return PodAlias(
            vrf=int(fields_["vrf"]),
            attachment=AttachmentType(fields_["att"]),
            container_id=fields_["cid"],
            ifname=fields_["if"],
            netns=netns,
            address=address,
            prefixlen=int(prefixlen) if address else 0,
            gateway=fields_.get("gw", "") if address else "",
            network=fields_.get("net", DEFAULT_NETWORK),
        )
    except (KeyError, ValueError):
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class PodExpectation:
    ifname: str
    address: str
    prefixlen: int
    gateway: str
    mtu: int  # 0: not checked (prevResult without mtu)
    bridge: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PodSide:
    """The pod end as read inside the pod's namespace."""

    link: LinkState | None
    addresses: tuple[AddrState, ...]
    default_gateways: tuple[str, ...]


def pod_differences(
    expected: PodExpectation,
    host: LinkState | None,
    host_master: str,
    pod: PodSide | None,
) -> tuple[str, ...]:
    diffs: list[str] = []
    if host is None:
        diffs.append("host veth is missing")
    else:
        if host_master != expected.bridge:
            diffs.append(f"host veth master is {host_master or 'none'}, want {expected.bridge}")
        if not host.up:
            diffs.append("host veth is down")
        if expected.mtu and host.mtu != expected.mtu:
            diffs.append(f"host veth mtu is {host.mtu}, want {expected.mtu}")
    if pod is None:
        diffs.append("pod network namespace is gone")
        return tuple(diffs)
    if pod.link is None:
        diffs.append(f"{expected.ifname} is missing in the pod")
        return tuple(diffs)
    if not pod.link.up:
        diffs.append(f"{expected.ifname} is down")
    if expected.mtu and pod.link.mtu != expected.mtu:
        diffs.append(f"{expected.ifname} mtu is {pod.link.mtu}, want {expected.mtu}")
    have = {(a.address, a.prefixlen) for a in pod.addresses if a.index == pod.link.index}
    if (expected.address, expected.prefixlen) not in have:
        listed = ", ".join(f"{a}/{p}" for a, p in sorted(have)) or "none"
        diffs.append(
            f"{expected.ifname} lacks {expected.address}/{expected.prefixlen} (has {listed})"
        )
    if expected.gateway not in pod.default_gateways:
        listed = ", ".join(pod.default_gateways) or "none"
        diffs.append(f"default route is not via {expected.gateway} (via {listed})")
    return tuple(diffs)
