"""The routing model: cluster state in, a frozen FRR configuration out.

Pure: no I/O except reading the Jinja2 template shipped with the package.
Nothing here imports pyroute2, kubernetes or zmq; the FRRActor owns the I/O
(write atomically, ``frr-reload.py --test``, ``--reload``, read back).

Three steps (see notes/style.md, FRR): :func:`build_frr_config` turns typed
cluster objects into a frozen, sorted :class:`FrrConfig`; :func:`render`
turns that into ``frr.conf`` text.  Identical inputs, in any order, render
byte-identical text.

Rules (keep in sync with the golden files under ``tests/golden/frr/``):

Router id
    This node's VRFNodeConfig ``routerId``, else the node's InternalIP.  It
    must be IPv4 (a BGP identifier is 32 bits).

Underlay address of a node
    ``interfaces[0].local`` of the node's VRFNodeConfig when set, else the
    node's InternalIP.  It is the address the node's BGP session is sourced
    from (``update-source``) and the address other nodes peer with, so both
    ends agree on it.  It should also be the node's VTEP address.

Peers (all iBGP, one AS, one peer group ``fabric``)
    * Route-reflector mode: this node's VRFNodeConfig lists
      ``routeReflectors``; the node peers with exactly those addresses.
    * Mesh mode (no routeReflectors): the node peers with the underlay
      address of every OTHER node that is itself in mesh mode.  Nodes that use
      route reflectors do not peer with mesh nodes, so mesh nodes do not wait
      on sessions that can never come up.
    Addresses equal to this node's own underlay address are dropped,
    duplicates collapse, peers sort by address.  A node gone from ``nodes``
    is gone from the peers.

Per VRFDomain (``vrf-<vrf>``)
    * l3vni: ``vrf vrf-<vrf> / vni <l3vni>`` and ``router bgp <as> vrf
      vrf-<vrf>`` (redistribute connected, advertise ipv4 unicast into EVPN
      type-5), RD ``<router-id>:<vrf>``, RT ``<as>:<vrf>`` import and export,
      each direction replaced by the domain's ``spec.routeTargets`` list when
      one is given (see vrf_routing).
    * What the IP-VRF installs from EVPN is bounded by a ``table-map``
      (bgpd's BGP-to-zebra filter of the VRF; the routes stay in BGP, they are
      not installed in the kernel): a prefix-list ``vrf-<vrf>-import`` and a
      route-map of the same name built by vrf_routing.import_filter_entries
      (no default route unless ``acceptDefaultRoute``; with
      ``importPrefixes``, only those and the domain's own pod network).
      Neither FRR 8.4's ``route-map vrf-import`` (VPN route leaking) nor a
      neighbor route-map (one for all VRFs) is a per-VRF EVPN import hook.
    * What the VRF exports is its connected routes (``redistribute
      connected``): only the block gateways the NetlinkActor puts on the
      domain's bridges, all inside the pod network.  Underlay interfaces are
      in the default VRF, whose instance redistributes nothing.
    * l2vni: ``vni <vni>`` under ``address-family l2vpn evpn`` of the default
      instance, RD ``<router-id>:<vrf>``, RT ``<as>:<vni>`` import and export,
      each direction replaced by the attachment's ``routeTargets`` list when
      one is given; type-2/3 routes then follow from ``advertise-all-vni``.
    An RD names (node, domain): a domain with both attachments shares one RD
    between its MAC-VRF and its IP-VRF (their routes never collide: the route
    type is part of the EVPN prefix).
    A route target list that is just the one FRR derives by itself
    (``<as & 0xffff>:<vni>`` of the same instance) is kept in the model but
    not written: FRR would neither store nor show it, and ``frr-reload.py``
    would then report a difference forever.  The effective route target is
    the same.  In a longer list that value is written last: FRR ignores a
    configured value equal to the automatic one while that is still in place,
    and drops the automatic one at the next configured value.  An automatic
    import route target is matched on its local part alone (any AS), a
    configured one exactly (vrf_routing.any_as_imports; tested in
    tests/kernel/test_frr_import_filter.py).

Rejected input
    A VRFDomain that FRR cannot carry (no attachment, two attachments of one
    type, VRF id or VNI out of range, VRF id or VNI used by another domain,
    an l2vni with a route target of a VRF (its own or another domain's),
    an invalid routing policy) is left out and listed in
    :attr:`FrrConfig.rejected`, so one bad resource does not stop routing for
    the others.  So is another node whose underlay address is not an IP
    address.  Problems with this node's own identity (router id, route
    reflectors, AS) raise :class:`FrrModelError`.

Applying it (FRRActor; measured with Debian's FRR 8.4, see the kernel tests)
    1. ``vtysh [-N ns] -f <render_vrf_bindings(config)>`` first.  It only adds
       (``vrf X / vni N``), is idempotent, and a conflicting VNI merely prints
       an error.  Why: ``frr-reload.py --reload`` sends lines added to existing
       contexts before new contexts, in one ``vtysh -f`` batch; a new ``vrf X``
       block right after a ``router bgp`` line is parsed inside ``router bgp``
       as the VNC command ``vrf-policy X``, and its ``vni N`` lands in the
       wrong node (zebra then maps the VNI to the default VRF).  It happens
       when one reload both adds a VRFDomain and changes the default instance
       (say a node joins in the same debounce window).  With the bindings
       loaded first, no ``vrf`` block is new to frr-reload.py.
    2. ``frr-reload.py --test`` (validation), then ``--reload``.
    3. ``frr-reload.py --test`` afterwards lists no difference, when the
       model carries the host's name (``hostname``, from uname): FRR always
       shows one.  Without it (golden files) the one difference is
       ``no hostname <host>``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from functools import cache

import jinja2

from pyroute2_cni.frr.vrf_routing import (
    DEFAULT_ASN,
    MAX_U16,
    MAX_U32,
    PolicyError,
    PrefixEntry,
    RouteTargets,
    frr_auto_route_target,
    import_filter_entries,
    l2vni_route_targets,
    policy_problems,
    vrf_route_targets,
)
from pyroute2_cni.messages.crd import (
    AttachmentType,
    NodeInfo,
    VrfDomainSpec,
    VrfNodeConfigSpec,
)

__all__ = [
    "DEFAULT_ASN",
    "PEER_GROUP",
    "BgpNeighbor",
    "BgpTimers",
    "FrrConfig",
    "FrrModelError",
    "ImportFilter",
    "L2Vni",
    "PeeringMode",
    "Rejection",
    "VrfConfig",
    "build_frr_config",
    "render",
    "render_vrf_bindings",
]

PEER_GROUP = "fabric"
TEMPLATE = "frr.conf.j2"
VRF_BINDINGS_TEMPLATE = "frr-vrf-bindings.conf.j2"

MAX_VNI = (1 << 24) - 1


class FrrModelError(ValueError):
    """This node's own routing identity is invalid: no config can be built."""


class PeeringMode(Enum):
    MESH = "mesh"
    ROUTE_REFLECTORS = "route-reflectors"


@dataclass(frozen=True, slots=True, kw_only=True)
class BgpTimers:
    """Short timers so sessions converge in seconds (tests, node restarts)."""

    keepalive: int = 3
    hold: int = 9
    connect: int = 2


@dataclass(frozen=True, slots=True, kw_only=True)
class BgpNeighbor:
    """One iBGP peer of the ``fabric`` peer group."""

    address: str
    description: str  # the peer's node name, or "route-reflector"


@dataclass(frozen=True, slots=True, kw_only=True)
class ImportFilter:
    """The prefix-list and route-map (one name) that bound what a VRF installs."""

    name: str
    entries: tuple[PrefixEntry, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class VrfConfig:
    """An IP-VRF with its L3VNI: EVPN type-5 routes for the domain's prefixes."""

    vrf: int
    name: str
    table: int
    l3vni: int
    rd: str
    # Effective route targets, sorted.
    import_targets: tuple[str, ...]
    export_targets: tuple[str, ...]
    # The `route-target import/export` lines, in the order to write them:
    # empty when FRR derives the same single value itself.
    written_imports: tuple[str, ...]
    written_exports: tuple[str, ...]
    import_filter: ImportFilter | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class L2Vni:
    """A MAC-VRF: EVPN type-2/3 routes for a stretched layer-2 domain."""

    vni: int
    vrf: int
    rd: str
    import_targets: tuple[str, ...]
    export_targets: tuple[str, ...]
    # The route-target lines; a list that is just FRR's own value is not written.
    written_imports: tuple[str, ...]
    written_exports: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True, order=True)
class Rejection:
    """An input left out of the configuration, and why (for status/metrics)."""

    kind: str  # "VRFDomain" or "Node"
    name: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class FrrConfig:
    """Everything ``frr.conf`` says, sorted; equal inputs give equal values."""

    node: str
    asn: int
    router_id: str
    update_source: str
    mode: PeeringMode
    neighbors: tuple[BgpNeighbor, ...]
    vrfs: tuple[VrfConfig, ...]
    l2vnis: tuple[L2Vni, ...]
    timers: BgpTimers = field(default_factory=BgpTimers)
    peer_group: str = PEER_GROUP
    rejected: tuple[Rejection, ...] = ()
    # The other nodes' underlay (VTEP) addresses, whatever the peering mode; not
    # rendered: the RouteKeeperActor needs them when the peers are route reflectors.
    vteps: tuple[str, ...] = ()
    # The host's name as FRR shows it (uname); "" renders no `hostname` line.
    hostname: str = ""

    @property
    def peer_addresses(self) -> frozenset[str]:
        return frozenset(n.address for n in self.neighbors)


# --------------------------------------------------------------------- helpers


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def _ip_key(address: str) -> tuple[int, int, str]:
    parsed = _ip(address)
    if parsed is None:  # not reached: only parsed addresses become peers
        return (99, 0, address)
    return (parsed.version, int(parsed), address)


def _usable_hostname(hostname: str) -> str:
    """`hostname` when FRR's `hostname WORD` takes it as one word, else "" (no line: one
    difference frr-reload.py keeps finding, which costs time, not correctness)."""
    return hostname if re.fullmatch(r"[!-~]{1,253}", hostname) else ""


def _check_asn(asn: int) -> None:
    if isinstance(asn, bool) or not isinstance(asn, int) or not 1 <= asn <= MAX_U32:
        raise FrrModelError(f"AS number {asn!r} is not in 1..{MAX_U32}")


def _written(targets: tuple[str, ...], auto: str) -> tuple[str, ...]:
    """The route-target lines for `targets` (see the module docstring)."""
    if targets == (auto,):
        return ()
    return tuple(sorted(targets, key=lambda t: t == auto))  # stable: auto last


def _import_filter(domain: VrfDomainSpec) -> ImportFilter | None:
    entries = import_filter_entries(domain)
    return ImportFilter(name=f"{domain.vrf_name}-import", entries=entries) if entries else None


def _node_config(configs: Sequence[VrfNodeConfigSpec], node: str) -> VrfNodeConfigSpec | None:
    """The VRFNodeConfig for `node`; with several, the first by name wins."""
    matching = sorted((c for c in configs if c.node == node), key=lambda c: c.name)
    return matching[0] if matching else None


def _underlay(config: VrfNodeConfigSpec | None, node: NodeInfo | None) -> str:
    if config is not None and config.interfaces and config.interfaces[0].local.strip():
        return config.interfaces[0].local.strip()
    return node.internal_ip.strip() if node is not None else ""


# ----------------------------------------------------------------------- peers


def _peers(
    *,
    node: str,
    own_address: str,
    own_config: VrfNodeConfigSpec | None,
    node_configs: Sequence[VrfNodeConfigSpec],
    nodes: Sequence[NodeInfo],
    rejected: list[Rejection],
) -> tuple[PeeringMode, tuple[BgpNeighbor, ...]]:
    found: dict[str, str] = {}
    if own_config is not None and own_config.route_reflectors:
        for text in own_config.route_reflectors:
            parsed = _ip(text)
            if parsed is None:
                raise FrrModelError(
                    f"VRFNodeConfig {own_config.name}: route reflector {text!r} "
                    "is not an IP address"
                )
            found.setdefault(str(parsed), "route-reflector")
        mode = PeeringMode.ROUTE_REFLECTORS
    else:
        seen: set[str] = {node}
        for other in sorted(nodes, key=lambda n: (n.name, n.internal_ip)):
            if other.name in seen:
                continue  # this node, or a duplicate name (the first by address wins)
            seen.add(other.name)
            config = _node_config(node_configs, other.name)
            if config is not None and config.route_reflectors:
                continue  # it peers with its route reflectors, not with us
            address = _underlay(config, other)
            parsed = _ip(address)
            if parsed is None:
                rejected.append(
                    Rejection(
                        kind="Node",
                        name=other.name,
                        reason=f"underlay address {address!r} is not an IP address",
                    )
                )
                continue
            found.setdefault(str(parsed), other.name)
        mode = PeeringMode.MESH
    own = _ip(own_address)
    if own is not None:
        found.pop(str(own), None)
    neighbors = tuple(
        BgpNeighbor(address=address, description=description)
        for address, description in sorted(found.items(), key=lambda item: _ip_key(item[0]))
    )
    return mode, neighbors


# --------------------------------------------------------------------- domains


@dataclass(frozen=True, slots=True)
class _Candidate:
    domain: VrfDomainSpec
    l3vni: int | None
    l2vni: int | None

    @property
    def vnis(self) -> tuple[int, ...]:
        return tuple(v for v in (self.l3vni, self.l2vni) if v is not None)


def _candidate(domain: VrfDomainSpec) -> _Candidate | str:
    """The domain's VNIs, or the reason FRR cannot carry it."""
    if not domain.attachments:
        return "no attachments"
    if not 1 <= domain.vrf <= MAX_U16:
        return f"vrf {domain.vrf} is not in 1..{MAX_U16} (it is the RD's local part)"
    found: dict[AttachmentType, int] = {}
    for attachment in domain.attachments:
        if attachment.type in found:
            return f"more than one {attachment.type.value} attachment"
        if not 1 <= attachment.vni <= MAX_VNI:
            return f"{attachment.type.value} vni {attachment.vni} is not in 1..{MAX_VNI}"
        found[attachment.type] = attachment.vni
    l3vni = found.get(AttachmentType.L3VNI)
    l2vni = found.get(AttachmentType.L2VNI)
    if l3vni is not None and l3vni == l2vni:
        return f"l2vni and l3vni are both {l3vni}"
    problems = policy_problems(domain)
    if problems:
        return "; ".join(problems)
    return _Candidate(domain, l3vni, l2vni)


def _reject_conflicts(candidates: list[_Candidate], rejected: list[Rejection]) -> list[_Candidate]:
    """Drop every domain that shares a VRF id or a VNI with another one.

    All parties of a conflict go: the result cannot depend on input order, and
    there is no creation order to prefer one of them.
    """
    by_vrf: dict[int, list[str]] = {}
    by_vni: dict[int, list[str]] = {}
    for candidate in candidates:
        by_vrf.setdefault(candidate.domain.vrf, []).append(candidate.domain.name)
        for vni in candidate.vnis:
            by_vni.setdefault(vni, []).append(candidate.domain.name)
    kept: list[_Candidate] = []
    for candidate in candidates:
        name = candidate.domain.name
        reasons = []
        others = sorted(set(by_vrf[candidate.domain.vrf]) - {name})
        if others:
            reasons.append(f"vrf {candidate.domain.vrf} also used by {', '.join(others)}")
        for vni in candidate.vnis:
            others = sorted(set(by_vni[vni]) - {name})
            if others:
                reasons.append(f"vni {vni} also used by {', '.join(others)}")
        if reasons:
            rejected.append(Rejection(kind="VRFDomain", name=name, reason="; ".join(reasons)))
        else:
            kept.append(candidate)
    return kept


def _duplicate_names(domains: Sequence[VrfDomainSpec], rejected: list[Rejection]) -> set[str]:
    seen: dict[str, VrfDomainSpec] = {}
    duplicates: set[str] = set()
    for domain in domains:
        if domain.name in seen and seen[domain.name] != domain:
            duplicates.add(domain.name)
        seen[domain.name] = domain
    for name in sorted(duplicates):
        rejected.append(
            Rejection(kind="VRFDomain", name=name, reason="two different specs with this name")
        )
    return duplicates


# ----------------------------------------------------------------------- build


def build_frr_config(
    *,
    node: str,
    asn: int,
    domains: Sequence[VrfDomainSpec],
    node_configs: Sequence[VrfNodeConfigSpec],
    nodes: Sequence[NodeInfo],
    hostname: str = "",
) -> FrrConfig:
    """Build this node's routing model from cluster state (see module docstring)."""
    _check_asn(asn)
    rejected: list[Rejection] = []

    own_config = _node_config(node_configs, node)
    own_info = next((n for n in sorted(nodes, key=lambda n: n.internal_ip) if n.name == node), None)
    router_id_text = (own_config.router_id.strip() if own_config else "") or (
        own_info.internal_ip.strip() if own_info else ""
    )
    router_id = _ip(router_id_text)
    if not isinstance(router_id, ipaddress.IPv4Address):
        raise FrrModelError(
            f"node {node}: no IPv4 router id (VRFNodeConfig routerId or Node InternalIP), "
            f"got {router_id_text!r}"
        )
    own_address_text = _underlay(own_config, own_info) or str(router_id)
    own_address = _ip(own_address_text)
    if own_address is None:
        raise FrrModelError(f"node {node}: underlay address {own_address_text!r} is not an IP")

    mode, neighbors = _peers(
        node=node,
        own_address=str(own_address),
        own_config=own_config,
        node_configs=node_configs,
        nodes=nodes,
        rejected=rejected,
    )

    duplicates = _duplicate_names(domains, rejected)
    unique = {d.name: d for d in domains if d.name not in duplicates}
    candidates: list[_Candidate] = []
    for name in sorted(unique):
        outcome = _candidate(unique[name])
        if isinstance(outcome, str):
            rejected.append(Rejection(kind="VRFDomain", name=name, reason=outcome))
        else:
            candidates.append(outcome)
    candidates = _reject_conflicts(candidates, rejected)

    rd_prefix = str(router_id)
    vrf_rts: dict[int, frozenset[str]] = {}
    for candidate in candidates:
        # _candidate checked the policy, and vrf <= 65535 fits every AS.  A
        # layer-2-only domain counts with its derived value, as it always did.
        vrf_rts[candidate.domain.vrf] = vrf_route_targets(asn, candidate.domain).all

    vrfs: list[VrfConfig] = []
    l2vnis: list[L2Vni] = []
    for candidate in sorted(candidates, key=lambda c: c.domain.vrf):
        domain = candidate.domain
        l2_rts: RouteTargets | None = None
        if candidate.l2vni is not None:
            try:
                l2_rts = l2vni_route_targets(asn, domain)
            except PolicyError as exc:
                rejected.append(Rejection(kind="VRFDomain", name=domain.name, reason=str(exc)))
                continue
            assert l2_rts is not None  # the candidate has an l2vni
            clashes = sorted((t, v) for v, rts in vrf_rts.items() for t in l2_rts.all & rts)
            if clashes:
                rejected.append(
                    Rejection(
                        kind="VRFDomain",
                        name=domain.name,
                        reason="l2vni route target "
                        + ", ".join(f"{t} is a route target of vrf-{v}" for t, v in clashes),
                    )
                )
                continue
        rd = f"{rd_prefix}:{domain.vrf}"
        if candidate.l3vni is not None:
            targets = vrf_route_targets(asn, domain)
            auto = frr_auto_route_target(asn, candidate.l3vni)
            vrfs.append(
                VrfConfig(
                    vrf=domain.vrf,
                    name=domain.vrf_name,
                    table=domain.table,
                    l3vni=candidate.l3vni,
                    rd=rd,
                    import_targets=targets.imports,
                    export_targets=targets.exports,
                    written_imports=_written(targets.imports, auto),
                    written_exports=_written(targets.exports, auto),
                    import_filter=_import_filter(domain),
                )
            )
        if candidate.l2vni is not None and l2_rts is not None:
            auto = frr_auto_route_target(asn, candidate.l2vni)
            l2vnis.append(
                L2Vni(
                    vni=candidate.l2vni,
                    vrf=domain.vrf,
                    rd=rd,
                    import_targets=l2_rts.imports,
                    export_targets=l2_rts.exports,
                    written_imports=_written(l2_rts.imports, auto),
                    written_exports=_written(l2_rts.exports, auto),
                )
            )

    return FrrConfig(
        node=node,
        asn=asn,
        router_id=str(router_id),
        update_source=str(own_address),
        mode=mode,
        neighbors=neighbors,
        vrfs=tuple(vrfs),
        l2vnis=tuple(sorted(l2vnis, key=lambda v: v.vni)),
        rejected=tuple(sorted(set(rejected))),
        vteps=_other_vteps(node, str(own_address), node_configs, nodes),
        hostname=_usable_hostname(hostname),
    )


def _other_vteps(
    node: str,
    own_address: str,
    node_configs: Sequence[VrfNodeConfigSpec],
    nodes: Sequence[NodeInfo],
) -> tuple[str, ...]:
    found = set()
    for other in nodes:
        if other.name == node:
            continue
        parsed = _ip(_underlay(_node_config(node_configs, other.name), other))
        if parsed is not None and str(parsed) != own_address:
            found.add(str(parsed))
    return tuple(sorted(found, key=_ip_key))


# ---------------------------------------------------------------------- render


@cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("pyroute2_cni.frr", "templates"),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )


def render(config: FrrConfig) -> str:
    """``frr.conf`` text for `config`; equal configs give byte-identical text."""
    return _environment().get_template(TEMPLATE).render(config=config)


def render_vrf_bindings(config: FrrConfig) -> str:
    """Only the ``vrf <name> / vni <l3vni>`` blocks of :func:`render`.

    Load them with ``vtysh -f`` before ``frr-reload.py --reload`` (see the
    module docstring); empty when the config has no IP-VRF.
    """
    return _environment().get_template(VRF_BINDINGS_TEMPLATE).render(config=config)


# ---------------------------------------------------------------------- drift


def key_lines(config: FrrConfig) -> frozenset[tuple[str, str]]:
    """The lines FRR must show while it runs `config`, as (block, line) pairs.

    Not the whole configuration: the lines without which this node does not
    route (a daemon restarted without its configuration, a change by hand):
    the default BGP instance and its neighbours, each VRF's BGP instance,
    each VRF-to-L3VNI binding and each L2VNI.  FRR shows them exactly as
    rendered, so a running configuration that has them all matches.  Keep in
    sync with templates/frr.conf.j2 and frr-vrf-bindings.conf.j2.
    """
    bgp = f"router bgp {config.asn}"
    lines = {(bgp, "")}
    lines |= {
        (bgp, f"neighbor {n.address} peer-group {config.peer_group}") for n in config.neighbors
    }
    lines |= {(bgp, f"vni {vni.vni}") for vni in config.l2vnis}
    for vrf in config.vrfs:
        lines.add((f"{bgp} vrf {vrf.name}", ""))
        lines.add((f"vrf {vrf.name}", f"vni {vrf.l3vni}"))
    return frozenset(lines)


def shown_lines(text: str) -> frozenset[tuple[str, str]]:
    """(block, line) pairs of a configuration as FRR shows it (``show running-config``).

    A block is a line that starts in column 0; indented lines belong to the
    block above them, nested blocks (address families) included.
    """
    pairs: set[tuple[str, str]] = set()
    block = ""
    for raw in text.splitlines():
        line = raw.rstrip()
        stripped = line.strip()
        if not stripped or stripped.startswith("!"):
            continue
        if line[0] != " ":
            block = "" if stripped in ("exit", "end", "exit-vrf") else stripped
            if block:
                pairs.add((block, ""))
        elif block:
            pairs.add((block, stripped))
    return frozenset(pairs)


def missing_key_lines(config: FrrConfig, running: str) -> list[str]:
    """The :func:`key_lines` of `config` that `running` lacks, sorted, for a log line."""
    missing = key_lines(config) - shown_lines(running)
    return sorted(f"{block} / {line}" if line else block for block, line in missing)
