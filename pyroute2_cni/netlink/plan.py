"""Planning: the actions that take the kernel from what it reports to the desired state.

Pure: no I/O.  Each :data:`Action` is one kernel change; the NetlinkActor executes a plan's
actions in order.  Plans are computed from a fresh :class:`LiveView`: running a plan and
planning again yields no action (tested by "ensure twice changes nothing").  Stale objects
are deleted only when they are ours: routes and rules of protocol ``OUR_PROTO``, devices
named after a domain (``netlink.names``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from pyroute2_cni.netlink.desired import NODE_RULES_ABSENT, DomainDesired
from pyroute2_cni.netlink.names import fabric_vrf_of, is_fabric_name, normalize_mac, vxlan_vni_of
from pyroute2_cni.netlink.specs import (
    ADDRGEN_NONE,
    OUR_PROTO,
    AddrSpec,
    AddrState,
    LinkChange,
    LinkSpec,
    LinkState,
    RouteSpec,
    RouteState,
    RuleSpec,
    RuleState,
)

# -- the steps of a plan ---------------------------------------------------------


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
