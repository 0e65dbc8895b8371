"""The lab's border router (``scripts/lab scenario external``, issue 21): l3vni VRFs that
reach networks outside the cluster through the fabric.

A border leaf as a fabric has one: FRR in its own namespace on the underlay, not a Node.
It is the route reflector the nodes list in VRFNodeConfig ``routeReflectors`` (as the
README describes), and it holds vrf-42 (l3vni 42) and the tenant's vrf-200 (l3vni 60200,
route target 65000:200, the value the nodes derive) with an external "server" namespace
behind each VRF.  Each VRF advertises its server network as a type-5 route; the nodes'
pod blocks come back the same way.

What the e2e tier checks with it: a pod reaches the server of its own VRF and is reached
from it, a pod of the other VRF reaches neither, the border's VRF tables hold exactly the
blocks of their own domain (and its own network), and a withdrawn server network leaves
every node.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from tests.harness.continuous_ping import PING
from tests.harness.frr_instance import FrrInstance
from tests.harness.lab import ASN, CONVERGE_TIMEOUT, SUBNET, Lab, Pod
from tests.harness.lab_scenarios import (
    ScenarioResult,
    back_to_mesh,
    node_config,
    node_sessions,
    scenario_pods,
    tenant,
)
from tests.harness.procs import (
    IP,
    HarnessError,
    in_netns,
    ip,
    ip_batch,
    netns_exists,
    remove_netns,
    run,
    wait_until,
)

BORDER_NAME = "lab-border"
BORDER_ADDRESS = f"{SUBNET}.253"
BORDER_PORT = "ul-border"
BORDER_MAC = "02:b0:de:00:00:01"


@dataclass(frozen=True, slots=True, kw_only=True)
class ExternalVrf:
    """One VRF of the border and the server network behind it."""

    vrf: int
    table: int
    l3vni: int
    network: str  # the server network, e.g. 198.51.100.0/24
    gateway: str  # the border's address in it
    server: str  # the server's address in it
    route_target: str | None  # written in the border's VRF; None: FRR's automatic one

    @property
    def vrf_name(self) -> str:
        return f"vrf-{self.vrf}"

    @property
    def server_ns(self) -> str:
        return f"lab-ext-{self.vrf}"

    @property
    def link(self) -> str:
        return f"ext-{self.vrf}"  # the border's side of the server's veth


# vrf-42 imports and exports with FRR's automatic 65000:42 on both sides; vrf-200's
# nodes write 65000:200 (derived from the vrf id, not the l3vni), so the border does too.
SYSTEM_EXTERNAL = ExternalVrf(
    vrf=42,
    table=42,
    l3vni=42,
    network="198.51.100.0/24",
    gateway="198.51.100.1",
    server="198.51.100.10",
    route_target=None,
)
TENANT_EXTERNAL = ExternalVrf(
    vrf=200,
    table=10200,
    l3vni=60200,
    network="203.0.113.0/24",
    gateway="203.0.113.1",
    server="203.0.113.10",
    route_target=f"{ASN}:200",
)
EXTERNAL_VRFS = (SYSTEM_EXTERNAL, TENANT_EXTERNAL)


def border_config(vrfs: tuple[ExternalVrf, ...] = EXTERNAL_VRFS) -> str:
    """The border's frr.conf: route reflector for the underlay subnet, a VTEP itself
    (advertise-all-vni), and one BGP instance per VRF advertising its connected network."""
    lines = [
        "frr defaults traditional",
        "log syslog informational",
        "no ipv6 forwarding",
        "service integrated-vtysh-config",
        "!",
    ]
    for v in vrfs:
        lines += [f"vrf {v.vrf_name}", f" vni {v.l3vni}", "exit-vrf", "!"]
    lines += [
        f"router bgp {ASN}",
        f" bgp router-id {BORDER_ADDRESS}",
        f" bgp cluster-id {BORDER_ADDRESS}",
        " no bgp default ipv4-unicast",
        " timers bgp 3 9",
        " neighbor fabric peer-group",
        " neighbor fabric remote-as internal",
        " neighbor fabric timers connect 2",
        f" bgp listen range {SUBNET}.0/24 peer-group fabric",
        " !",
        " address-family l2vpn evpn",
        "  neighbor fabric activate",
        "  neighbor fabric route-reflector-client",
        "  advertise-all-vni",
        " exit-address-family",
        "exit",
        "!",
    ]
    for v in vrfs:
        lines += [
            f"router bgp {ASN} vrf {v.vrf_name}",
            f" bgp router-id {BORDER_ADDRESS}",
            " no bgp default ipv4-unicast",
            " !",
            " address-family ipv4 unicast",
            "  redistribute connected",
            " exit-address-family",
            " !",
            " address-family l2vpn evpn",
            "  advertise ipv4 unicast",
        ]
        if v.route_target is not None:
            lines += [
                f"  route-target import {v.route_target}",
                f"  route-target export {v.route_target}",
            ]
        lines += [" exit-address-family", "exit", "!"]
    lines.append("end")
    return "\n".join(lines) + "\n"


def _border_devices(v: ExternalVrf) -> list[str]:
    """The VRF, its l3vni bridge and VXLAN (down: FRR learns the VNI first), and the
    border's end of the server's veth."""
    vx, br = f"l3vx-{v.vrf}", f"l3br-{v.vrf}"
    prefixlen = v.network.split("/")[1]
    return [
        f"link add {v.vrf_name} type vrf table {v.table}",
        f"link set {v.vrf_name} up",
        f"link add {br} type bridge",
        f"link set {br} address {BORDER_MAC} addrgenmode none master {v.vrf_name}",
        f"link add {vx} type vxlan id {v.l3vni} local {BORDER_ADDRESS} dstport 4789 nolearning",
        f"link set {vx} master {br} addrgenmode none",
        f"link set {v.link} master {v.vrf_name}",
        f"addr add {v.gateway}/{prefixlen} dev {v.link}",
        f"link set {v.link} up",
    ]


def _add_server(v: ExternalVrf) -> None:
    run([IP, "netns", "add", v.server_ns])
    ip(
        "link",
        "add",
        v.link,
        "netns",
        BORDER_NAME,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        v.server_ns,
    )
    prefixlen = v.network.split("/")[1]
    ip_batch(
        [
            "link set lo up",
            f"addr add {v.server}/{prefixlen} dev eth0",
            "link set eth0 up",
            f"route add default via {v.gateway}",
        ],
        v.server_ns,
    )


def _knows_vnis(border: FrrInstance) -> bool:
    data = border.vtysh_json("show vrf vni json")
    rows = data.get("vrfs") if isinstance(data, dict) else None
    known = {str(r.get("vrf")): r.get("vni") for r in rows or () if isinstance(r, dict)}
    return all(known.get(v.vrf_name) == v.l3vni for v in EXTERNAL_VRFS)


def start_border(lab: Lab) -> FrrInstance:
    """The border's namespace, devices, server namespaces and FRR (idempotent)."""
    if lab.border is not None and lab.border.running():
        return lab.border
    if not netns_exists(BORDER_NAME):
        lab.add_underlay_host(BORDER_NAME, BORDER_ADDRESS, BORDER_PORT)
        for v in EXTERNAL_VRFS:
            _add_server(v)
        ip_batch([cmd for v in EXTERNAL_VRFS for cmd in _border_devices(v)], BORDER_NAME)
    border = FrrInstance(BORDER_NAME)
    border.start(border_config())
    lab.border = border
    wait_until(
        lambda: _knows_vnis(border), CONVERGE_TIMEOUT, "the border's zebra knows its VNIs", 0.5
    )
    ip_batch(
        [f"link set {d}-{v.vrf} up" for v in EXTERNAL_VRFS for d in ("l3br", "l3vx")], BORDER_NAME
    )
    return border


def border_routes(border: FrrInstance, v: ExternalVrf) -> set[str]:
    """The prefixes in the border's BGP table of the VRF (vtysh JSON)."""
    data = border.vtysh_json(f"show bgp vrf {v.vrf_name} ipv4 unicast json")
    routes = data.get("routes") if isinstance(data, dict) else None
    return set(routes) if isinstance(routes, dict) else set()


def node_blocks(lab: Lab, vrf: int) -> set[str]:
    """The CIDRs of the IPBlocks of `vrf` (what the nodes advertise for it)."""
    return {
        str(b["spec"]["cidr"])
        for b in lab.ipblocks()
        if int(b["spec"].get("vrf", -1)) == vrf and b["spec"].get("node")
    }


def server_ping(v: ExternalVrf, address: str, wait: float = 1.0) -> bool:
    argv = [PING, "-n", "-q", "-c", "1", "-W", f"{wait:g}", address]
    return run(in_netns(v.server_ns, argv), check=False, timeout=wait + 30).returncode == 0


def reach(lab: Lab, pods: list[Pod], v: ExternalVrf) -> dict[str, tuple[bool, bool]]:
    """pod label -> (the pod reaches the server, the server reaches the pod)."""
    return {p.label: (lab.ping(p, v.server), server_ping(v, p.address)) for p in pods}


def wait_reach(
    lab: Lab, pods: list[Pod], v: ExternalVrf, timeout: float = CONVERGE_TIMEOUT
) -> dict[str, tuple[bool, bool]]:
    """Ping both ways until every pair answers or ``timeout``."""
    deadline = time.monotonic() + timeout
    result = reach(lab, pods, v)
    while not all(a and b for a, b in result.values()) and time.monotonic() < deadline:
        result = reach(lab, pods, v)
    return result


def external(lab: Lab) -> ScenarioResult:
    """The border as every node's route reflector; pods reach their VRF's server."""
    tenant(lab)  # vrf-200 and its pods (kept when they are there already)
    border = start_border(lab)
    for name in lab.nodes:
        lab.apply_object(node_config(lab, name, [BORDER_ADDRESS]))
    want = {n: {BORDER_ADDRESS: "Established"} for n in lab.nodes}
    peering = True
    try:
        wait_until(lambda: node_sessions(lab) == want, CONVERGE_TIMEOUT, "border peering", 0.5)
    except HarnessError:
        peering = False
    system = lab.system_pods()
    tenants = scenario_pods(lab, "test02", "tenant")
    own = {
        SYSTEM_EXTERNAL.vrf: wait_reach(lab, system, SYSTEM_EXTERNAL),
        TENANT_EXTERNAL.vrf: wait_reach(lab, tenants, TENANT_EXTERNAL),
    }
    across = {
        SYSTEM_EXTERNAL.vrf: reach(lab, tenants, SYSTEM_EXTERNAL),
        TENANT_EXTERNAL.vrf: reach(lab, system, TENANT_EXTERNAL),
    }
    tables: dict[int, dict[str, Any]] = {}
    for v in EXTERNAL_VRFS:
        expected = node_blocks(lab, v.vrf) | {v.network}
        held = border_routes(border, v)
        tables[v.vrf] = {"expected": sorted(expected), "held": sorted(held)}
    reached = all(a and b for r in own.values() for a, b in r.values())
    isolated = not any(a or b for r in across.values() for a, b in r.values())
    exact = all(t["expected"] == t["held"] for t in tables.values())
    lines = [
        f"border {BORDER_NAME} at {BORDER_ADDRESS} (FRR only, not a node): route reflector "
        f"of {', '.join(lab.nodes)}"
        + ("" if peering else f"  (NOT every session up: {node_sessions(lab)})"),
    ]
    for v in EXTERNAL_VRFS:
        both, other = own[v.vrf], across[v.vrf]
        held, expected = tables[v.vrf]["held"], tables[v.vrf]["expected"]
        lines.append(
            f"{v.vrf_name}: server {v.server} ({v.network}): "
            f"{sum(a and b for a, b in both.values())}/{len(both)} pods reach it and are "
            f"reached; from the other VRF {sum(a or b for a, b in other.values())}/{len(other)}"
        )
        mismatch = "" if held == expected else f"  (expected {', '.join(expected)})"
        lines.append(f"  border's {v.vrf_name} BGP table: {', '.join(held)}{mismatch}")
    return ScenarioResult(
        name="external",
        ok=peering and reached and isolated and exact,
        lines=tuple(lines),
        pods=tuple(system + tenants),
        matrix={},
        extra={"own": own, "across": across, "tables": tables},
    )


def node_tables_have(lab: Lab, v: ExternalVrf) -> dict[str, bool]:
    """Node -> its VRF table holds the server network (installed from BGP)."""
    return {n: v.network in lab.vrf_routes(n, v.table) for n in lab.nodes}


def withdraw(v: ExternalVrf) -> None:
    """The server network goes away on the border (its link down: the connected route,
    and so the type-5 route, are withdrawn)."""
    ip("link", "set", v.link, "down", netns=BORDER_NAME)


def restore(v: ExternalVrf) -> None:
    # The address stayed on the link: up again, its connected route is back.
    ip("link", "set", v.link, "up", netns=BORDER_NAME)


def revert_external(lab: Lab) -> None:
    """Back to the full mesh: VRFNodeConfigs deleted, the border and its servers gone."""
    back_to_mesh(lab)
    if lab.border is not None:
        lab.border.remove()
        lab.border = None
    for name in (BORDER_NAME, *(v.server_ns for v in EXTERNAL_VRFS)):
        remove_netns(name)
    lab.scenarios.pop("external", None)
