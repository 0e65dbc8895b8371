"""The desired kernel state of one VRFDomain on this node, and the node-wide rules.

Pure: no I/O.  The NetlinkActor feeds :func:`desired_domain` what the cluster wants
(:class:`DomainIntent`) and hands the result to ``netlink.plan``.

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

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pyroute2_cni.messages.crd import AttachmentType, VrfDomainSpec
from pyroute2_cni.messages.ipam import BlockInfo
from pyroute2_cni.messages.netlink import Vtep
from pyroute2_cni.netlink.names import (
    KIND_PREFIX,
    bridge_mac,
    bridge_name,
    vrf_mac,
    vrf_name,
    vxlan_mac,
    vxlan_name,
)
from pyroute2_cni.netlink.specs import (
    PREF_L3MDEV,
    PREF_LOCAL,
    PREF_LOCAL_DEFAULT,
    PREF_SYSTEM,
    TABLE_LOCAL,
    UNREACHABLE_METRIC,
    AddrSpec,
    BridgePortSpec,
    LinkSpec,
    RouteSpec,
    RuleSpec,
    SysctlSpec,
    device_sysctls,
)


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
    for attachment in sorted(domain.attachments, key=lambda a: KIND_PREFIX[a.type]):
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
