"""The lab's scenarios (``scripts/lab scenario NAME``, the e2e tier): tenant VRF, l2vni,
route-reflector mode, FRR and reflector restarts under a continuous ping (and, in
lab_external, a border router outside the cluster).

Each takes a running ``Lab``, changes the cluster the way an operator would (VRFDomains,
bindings, VRFNodeConfigs, a restart) and returns a ``ScenarioResult`` for the summary.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from tests.harness.continuous_ping import ContinuousPing
from tests.harness.frr_instance import FRR_BASE_CONFIG, FrrInstance
from tests.harness.lab import (
    ASN,
    CNI_GROUP,
    CNI_VERSION,
    CONVERGE_TIMEOUT,
    RR_ADDRESS,
    RR_NAME,
    SUBNET,
    UPLINK,
    Lab,
    Pod,
)
from tests.harness.procs import HarnessError, netns_exists, remove_netns, wait_until

# The route reflector of `scenario rr`: plain FRR, not a node; accepts any node of the
# underlay subnet as a client and reflects EVPN routes between them.
RR_CONFIG = f"""\
frr defaults traditional
log syslog informational
no ipv6 forwarding
service integrated-vtysh-config
!
router bgp {ASN}
 bgp router-id {RR_ADDRESS}
 bgp cluster-id {RR_ADDRESS}
 no bgp default ipv4-unicast
 timers bgp 3 9
 neighbor fabric peer-group
 neighbor fabric remote-as internal
 neighbor fabric timers connect 2
 bgp listen range {SUBNET}.0/24 peer-group fabric
 !
 address-family l2vpn evpn
  neighbor fabric activate
  neighbor fabric route-reflector-client
 exit-address-family
exit
!
end
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class ScenarioResult:
    name: str
    ok: bool
    lines: tuple[str, ...]
    pods: tuple[Pod, ...]
    matrix: dict[tuple[str, str], bool]
    extra: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def text(self) -> str:
        verdict = f"result: {'PASS' if self.ok else 'FAIL'} ({self.seconds:.1f} s)"
        return "\n".join([*self.lines, verdict])


def scenario_pods(lab: Lab, namespace: str, prefix: str) -> list[Pod]:
    existing = lab.pods_in(namespace)
    if existing:
        return existing
    specs = [(n, namespace, f"{prefix}-n{lab.nodes[n].index}") for n in lab.nodes]
    lab.add_pods(specs)
    return lab.pods_in(namespace)


def tenant(lab: Lab) -> ScenarioResult:
    """VRFDomain vrf-200 bound to test02: tenant pods reach each other, not the system VRF."""
    lab.apply_object(lab.domain_object("vrf-200", 200, 10200, "10.1.0.0", 60200, "l3vni"))
    lab.apply_object(lab.binding_object("test02-vrf-200", "test02", "vrf-200"))
    lab.wait_cluster_view()
    pods = scenario_pods(lab, "test02", "tenant")
    in_prefix = all(p.address.startswith("10.1.") for p in pods)
    inside, seconds = lab.wait_matrix(pods)
    system = lab.system_pods()
    leaks = {**lab.ping_pairs(pods, system), **lab.ping_pairs(system, pods)}
    isolated = not any(leaks.values())
    green = bool(inside) and all(inside.values())
    lines = [
        "VRFDomain vrf-200 (table 10200, 10.1.0.0/16, /26 blocks, l3vni 60200) "
        "bound to namespace test02",
        "pods: "
        + ", ".join(f"{p.name}@{p.node}={p.address}" for p in pods)
        + ("" if in_prefix else "  (NOT in 10.1.0.0/16)"),
        f"tenant <-> tenant: {sum(inside.values())}/{len(inside)} replied"
        + (f" (all green {seconds:.1f} s after the pods were added)" if green else ""),
        lab.render_matrix(pods, inside),
        f"tenant <-> system VRF: {sum(leaks.values())}/{len(leaks)} replied "
        f"({'isolated' if isolated else 'NOT isolated'})",
    ]
    return ScenarioResult(
        name="tenant",
        ok=in_prefix and green and isolated,
        lines=tuple(lines),
        pods=tuple(pods),
        matrix=inside,
        extra={"in_prefix": in_prefix, "leaks": leaks, "seconds": seconds},
    )


def l2vni(lab: Lab) -> ScenarioResult:
    """VRFDomain vrf-300 with an l2vni bound to test03: one subnet across the nodes."""
    lab.apply_object(lab.domain_object("vrf-300", 300, 10300, "10.30.0.0", 60300, "l2vni"))
    lab.apply_object(lab.binding_object("test03-vrf-300", "test03", "vrf-300"))
    lab.wait_cluster_view()
    pods = scenario_pods(lab, "test03", "l2")
    nets = {ipaddress.ip_interface(f"{p.address}/{p.prefixlen}").network for p in pods}
    one_subnet = len(nets) == 1 and all(p.prefixlen == 16 for p in pods)
    matrix, seconds = lab.wait_matrix(pods)
    green = bool(matrix) and all(matrix.values())
    lines = [
        "VRFDomain vrf-300 (table 10300, 10.30.0.0/16, l2vni 60300) bound to namespace test03",
        "pods: " + ", ".join(f"{p.name}@{p.node}={p.address}/{p.prefixlen}" for p in pods),
        "one stretched subnet: "
        + ("yes" if one_subnet else "NO: " + ", ".join(sorted(map(str, nets)))),
        f"ping: {sum(matrix.values())}/{len(matrix)} replied"
        + (f" (all green {seconds:.1f} s after the pods were added)" if green else ""),
        lab.render_matrix(pods, matrix),
    ]
    return ScenarioResult(
        name="l2vni",
        ok=one_subnet and green,
        lines=tuple(lines),
        pods=tuple(pods),
        matrix=matrix,
        extra={"subnets": sorted(map(str, nets)), "seconds": seconds},
    )


def frr_restart(lab: Lab) -> ScenarioResult:
    """FRR on the first node restarts (zebra first) while pods ping within and across."""
    node = next(iter(lab.nodes))
    return restart_under_ping(
        lab,
        "frr-restart",
        f"FRR on {node} stopped (zebra first) and started",
        lambda: lab.restart_frr(node),
    )


def node_restart(lab: Lab) -> ScenarioResult:
    """The first node's DaemonSet pod replaced, as a rollout does it: the daemon and FRR
    get SIGTERM together, FRR comes back first with the seed frr.conf (a new pod's
    emptyDir), then the daemon, while pods ping within and across nodes."""
    node = next(iter(lab.nodes))
    frr = lab.nodes[node].frr

    def replace_pod() -> None:
        with ThreadPoolExecutor(2) as pool:
            daemon = pool.submit(lab.stop_daemon, node)
            pool.submit(frr.stop).result()
            daemon.result()
        frr.start(FRR_BASE_CONFIG)
        lab.start_daemon(node)
        lab.wait_daemon_ready(node)

    return restart_under_ping(
        lab, "node-restart", f"the daemon and FRR on {node} replaced (FRR first)", replace_pod
    )


def rr_restart(lab: Lab) -> ScenarioResult:
    """The route reflector's FRR restarts while pods ping within and across nodes."""
    rr = lab.rr
    if rr is None or not rr.running():
        raise HarnessError("scenario rr-restart needs the route reflector: run scenario rr first")

    def restart() -> None:
        rr.stop()
        rr.start()

    return restart_under_ping(
        lab, "rr-restart", f"route reflector {RR_NAME} stopped and started", restart
    )


def restart_under_ping(
    lab: Lab, name: str, what: str, restart: Callable[[], None]
) -> ScenarioResult:
    """Pings on the first node and from another node to it while ``restart`` runs."""
    node = next(iter(lab.nodes))
    pods = lab.system_pods()
    here = [p for p in pods if p.node == node][:2]
    there = next(p for p in pods if p.node != node)
    held_before = lab.metric(there.node, "pyroute2_cni_evpn_released_total")
    with (
        ContinuousPing(here[0], here[1].address) as local,
        ContinuousPing(there, here[0].address) as cross,
    ):
        local.wait_replies(5, timeout=30)
        cross.wait_replies(5, timeout=30)
        began = time.monotonic()
        restart()
        lab.wait_sessions()
        lab.wait_converged()
        back = time.monotonic() - began
        cross.wait_replies(10, timeout=90)
        local.wait_replies(10, timeout=30)
        local_lost, cross_lost = local.lost(), cross.lost()
    held = lab.metric(there.node, "pyroute2_cni_evpn_released_total") - held_before
    lines = [
        f"{what}; sessions and routes back in {back:.1f} s",
        f"echoes lost (one every 0.2 s): {here[0].name} -> {here[1].name}: "
        f"{len(local_lost)}, {there.name} -> {here[0].name}: {len(cross_lost)}",
        f"entries {there.node} held meanwhile: {held:.0f}",
    ]
    return ScenarioResult(
        name=name,
        ok=len(local_lost) <= 1 and len(cross_lost) <= 1,
        lines=tuple(lines),
        pods=tuple(pods),
        matrix={},
        extra={"local_lost": local_lost, "cross_lost": cross_lost, "held": held},
    )


def start_route_reflector(lab: Lab) -> FrrInstance:
    """A 4th FRR, not a Kubernetes node: an EVPN route reflector at 192.168.124.254."""
    if lab.rr is not None and lab.rr.running():
        return lab.rr
    if not netns_exists(RR_NAME):
        lab.add_underlay_host(RR_NAME, RR_ADDRESS, "ul-rr")
    lab.rr = FrrInstance(RR_NAME)
    lab.rr.start(RR_CONFIG)
    return lab.rr


def node_config(lab: Lab, name: str, reflectors: Sequence[str]) -> dict[str, Any]:
    node = lab.nodes[name]
    return {
        "apiVersion": f"{CNI_GROUP}/{CNI_VERSION}",
        "kind": "VRFNodeConfig",
        "metadata": {"name": f"{name}-vrnc"},
        "spec": {
            "nodeRef": {"name": name},
            "routerId": node.address,
            "routeReflectors": list(reflectors),
            "interfaces": [{"name": UPLINK, "local": node.address}],
        },
    }


def node_sessions(lab: Lab) -> dict[str, dict[str, str]]:
    return {n: node.frr.bgp_sessions() for n, node in lab.nodes.items()}


def rr_mode(lab: Lab) -> ScenarioResult:
    """Route-reflector mode through VRFNodeConfig: every node peers only with the RR."""
    began = time.monotonic()
    rr = start_route_reflector(lab)
    for name in lab.nodes:
        lab.apply_object(node_config(lab, name, [RR_ADDRESS]))
    want = {n: {RR_ADDRESS: "Established"} for n in lab.nodes}
    try:
        wait_until(lambda: node_sessions(lab) == want, CONVERGE_TIMEOUT, "RR-only peering", 0.5)
        peering = True
    except HarnessError:
        peering = False
    with contextlib.suppress(HarnessError):
        lab.wait_converged()
    pods = lab.system_pods()
    matrix, _ = lab.wait_matrix(pods, timeout=60)
    seconds = time.monotonic() - began
    green = bool(matrix) and all(matrix.values())
    peerings = node_sessions(lab)
    lines = [
        f"route reflector {RR_NAME} at {RR_ADDRESS} (FRR only, not a node); VRFNodeConfig "
        f"routeReflectors=[{RR_ADDRESS}] for {', '.join(lab.nodes)}",
        "node sessions: "
        + "; ".join(
            f"{n}: " + ", ".join(f"{a} {s}" for a, s in peers.items())
            for n, peers in peerings.items()
        )
        + ("" if peering else "  (NOT only the RR)"),
        "RR sessions: " + ", ".join(f"{a} {s}" for a, s in rr.bgp_sessions().items()),
        f"ping (system VRF): {sum(matrix.values())}/{len(matrix)} replied"
        + (f" ({seconds:.1f} s after the VRFNodeConfigs)" if green else ""),
        lab.render_matrix(pods, matrix),
    ]
    return ScenarioResult(
        name="rr",
        ok=peering and green,
        lines=tuple(lines),
        pods=tuple(pods),
        matrix=matrix,
        extra={"sessions": peerings, "seconds": seconds},
    )


def back_to_mesh(lab: Lab) -> None:
    """The nodes' VRFNodeConfigs deleted; until every node peers with every other again."""
    for name in lab.nodes:
        lab.delete_object("vrfnodeconfigs", f"{name}-vrnc")
    mesh = {n.address for n in lab.nodes.values()}
    want = {
        n: dict.fromkeys(sorted(mesh - {node.address}), "Established")
        for n, node in lab.nodes.items()
    }
    wait_until(lambda: node_sessions(lab) == want, CONVERGE_TIMEOUT, "the full mesh back", 0.5)


def revert_rr(lab: Lab) -> None:
    """Back to the full mesh: VRFNodeConfigs deleted, RR stopped."""
    back_to_mesh(lab)
    if lab.rr is not None:
        lab.rr.remove()
        lab.rr = None
    remove_netns(RR_NAME)
    lab.scenarios.pop("rr", None)


def run(lab: Lab, name: str) -> list[ScenarioResult]:
    """Run one scenario (or all); each result is also kept for the lab's summary."""
    # lab_external builds on this module's scenarios: imported here, not at the top.
    from tests.harness.lab_external import external

    runners: dict[str, Callable[[Lab], ScenarioResult]] = {
        "tenant": tenant,
        "l2vni": l2vni,
        "rr": rr_mode,
        "frr-restart": frr_restart,
        "rr-restart": rr_restart,
        "node-restart": node_restart,
        "external": external,
    }
    if name == "all":
        return [r for each in runners for r in run(lab, each)]
    if name not in runners:
        raise HarnessError(f"unknown scenario {name!r}: one of {', '.join(runners)}, all")
    began = time.monotonic()
    lab.progress(f"scenario {name}")
    result = runners[name](lab)
    result = dataclasses.replace(result, seconds=time.monotonic() - began)
    lab.scenarios[name] = result.text()
    lab.progress(f"scenario {name}: {'PASS' if result.ok else 'FAIL'} in {result.seconds:.1f} s")
    return [result]
