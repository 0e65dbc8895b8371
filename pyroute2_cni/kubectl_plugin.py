"""`kubectl pyroute2`: the cluster's pod network at a glance, and why one pod has none.

Installed as the executable ``kubectl-pyroute2`` (kubectl finds plugins on PATH):

    kubectl pyroute2 status             nodes, VRFDomains and pools, recent warnings
    kubectl pyroute2 why POD [-n NS]    the chain a pod's network hangs on, link by link
    kubectl pyroute2 ipam check         leaked, duplicate, inconsistent allocations

``-o json`` prints the same as one JSON document.

Reads the API only (Nodes, Pods, the pyroute2 custom resources with each node's
VRFNodeState, Events, the daemon's ConfigMap), with the caller's kubeconfig; writes
nothing.  Exit status 0 when every link is fine, 1 when something is wrong (what and
what to do is printed), 2 on usage or API errors.  The report is built from plain
objects (dicts) by pure functions.
"""

from __future__ import annotations

import argparse
import configparser
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pyroute2_cni.kube.node_condition import CONDITION_TYPE

CNI_GROUP, IPAM_GROUP, VERSION = "cni.pyroute2.org", "ipam.pyroute2.org", "v1alpha1"
DAEMON_NAMESPACE, CONFIGMAP, CONFIG_KEY = "pyroute2-cni", "server-config", "server.ini"
DEFAULT_VRF = 42  # server.ini [default] vrf when the ConfigMap cannot be read
COMPONENT = "pyroute2-cni"
WARNINGS_SHOWN = 10

Obj = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Cluster:
    """What the report needs, read once."""

    nodes: list[Obj]
    domains: list[Obj]
    bindings: list[Obj]
    blocks: list[Obj]
    events: list[Obj]  # the daemon's events
    default_vrf: int = DEFAULT_VRF
    states: list[Obj] = field(default_factory=list)  # VRFNodeStates


@dataclass(frozen=True, slots=True)
class Link:
    ok: bool
    text: str


# -- reading ----------------------------------------------------------------------------


def _condition(obj: Obj, kind: str) -> Obj | None:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == kind), None)


def _name(obj: Obj) -> str:
    return str(obj.get("metadata", {}).get("name", ""))


def _spec(obj: Obj) -> Obj:
    return obj.get("spec") or {}


def default_vrf(server_ini: str | None) -> int:
    """[default] vrf of the daemon's server.ini (the VRF of unbound namespaces)."""
    if not server_ini:
        return DEFAULT_VRF
    parser = configparser.ConfigParser()
    try:
        parser.read_string(server_ini)
        return parser.getint("default", "vrf", fallback=DEFAULT_VRF)
    except (configparser.Error, ValueError):
        return DEFAULT_VRF


# -- events -----------------------------------------------------------------------------

# The Normal event that ends a Warning of this reason (from the same node, on the same
# object); a VRFDomain's rejection reasons all end with "Accepted".
RESOLVED_BY = {
    "NetworkDegraded": "NetworkHealthy",
    "VniMissing": "VniKnown",
    "FrrApplyFailed": "FrrApplied",
}


def unresolved_warnings(events: Iterable[Obj]) -> list[Obj]:
    """The Warning events no later Normal event of the same node on the same object has
    ended: what is still wrong, not what was."""
    events = list(events)

    def key(event: Obj, reason: str) -> tuple[Any, ...]:
        involved = event.get("involvedObject") or {}
        host = (event.get("source") or {}).get("host")
        return (involved.get("kind"), involved.get("name"), host, reason)

    ended: dict[tuple[Any, ...], str] = {}
    for event in events:
        if event.get("type") != "Warning":
            k = key(event, str(event.get("reason")))
            ended[k] = max(ended.get(k, ""), str(event.get("lastTimestamp") or ""))
    found = []
    for event in events:
        if event.get("type") != "Warning":
            continue
        reason = str(event.get("reason"))
        kind = (event.get("involvedObject") or {}).get("kind")
        cure = RESOLVED_BY.get(reason, "Accepted" if kind == "VRFDomain" else None)
        last = str(event.get("lastTimestamp") or "")
        if cure is not None and key(event, cure) in ended and ended[key(event, cure)] >= last:
            continue
        found.append(event)
    return found


# -- status -----------------------------------------------------------------------------


def _pool(domain: Obj, blocks: Iterable[Obj]) -> tuple[int, int, int, int]:
    """(blocks claimed, blocks in the pool, addresses allocated, capacity claimed)."""
    spec = _spec(domain)
    mine = [b for b in blocks if _spec(b).get("vrf") == spec.get("vrf")]
    size = 2 ** max(0, int(spec.get("ipblocklen", 0)) - int(spec.get("prefixlen", 0)))
    allocated = sum(int((b.get("status") or {}).get("allocated", 0)) for b in mine)
    capacity = sum(int(_spec(b).get("capacity", 0)) for b in mine)
    return len(mine), size, allocated, capacity


NO_DAEMON = (
    "no pyroute2-cni daemon has reported on this node: is the DaemonSet's pod running there?"
)


def status_json(cluster: Cluster) -> Obj:
    """What `status` shows, as data; ``healthy`` when every node is ready and every
    VRFDomain accepted."""
    nodes = []
    states = {_name(s): s.get("status") or {} for s in cluster.states}
    for node in sorted(cluster.nodes, key=_name):
        cond = _condition(node, CONDITION_TYPE)
        state = states.get(_name(node), {})
        problems = list(state.get("problems") or [])
        ready = None if cond is None else cond.get("status") == "True"
        nodes.append(
            {
                "name": _name(node),
                "status": "Unknown" if cond is None else cond.get("status", ""),
                "ready": ready,
                "healthy": bool(ready) and not problems,
                "reason": "NoDaemon" if cond is None else cond.get("reason", ""),
                "message": NO_DAEMON if cond is None else cond.get("message", ""),
                "frr": (state.get("frr") or {}).get("reason"),
                "sessions": (state.get("bgp") or {}).get("summary"),
                "vnis": (state.get("vnis") or {}).get("summary"),
                "pods": state.get("pods"),
                # Addresses in use of those this node's blocks hold, over every VRF.
                "pool": _node_pool(state),
                "evpnHeld": state.get("evpnHeld"),
                "problems": problems,
                "lastError": state.get("lastError"),
                "version": state.get("version"),
            }
        )
    domains = []
    for domain in sorted(cluster.domains, key=_name):
        spec = _spec(domain)
        cond = _condition(domain, "Accepted") or {}
        claimed, size, allocated, capacity = _pool(domain, cluster.blocks)
        domains.append(
            {
                "name": _name(domain),
                "vrf": spec.get("vrf"),
                "prefix": f"{spec.get('prefix')}/{spec.get('prefixlen')}",
                "status": cond.get("status", "Unknown"),
                "accepted": cond.get("status") == "True",
                "reason": cond.get("reason", ""),
                "blocks": claimed,
                "poolBlocks": size,
                "allocated": allocated,
                "capacity": capacity,
            }
        )
    warnings = [
        {
            "object": f"{(e.get('involvedObject') or {}).get('kind')}/"
            f"{(e.get('involvedObject') or {}).get('name')}",
            "reason": e.get("reason"),
            "count": e.get("count", 1),
            "last": e.get("lastTimestamp") or "",
            "message": e.get("message"),
        }
        for e in unresolved_warnings(cluster.events)
    ]
    warnings.sort(key=lambda w: str(w["last"]), reverse=True)
    healthy = all(n["healthy"] for n in nodes) and all(d["accepted"] for d in domains)
    return {"healthy": healthy, "nodes": nodes, "vrfDomains": domains, "warnings": warnings}


def _node_pool(state: Obj) -> str | None:
    vrfs = state.get("vrfs")
    if vrfs is None:
        return None
    used = sum(int(v.get("addresses", 0)) for v in vrfs)
    return f"{used}/{used + sum(int(v.get('free', 0)) for v in vrfs)}"


def status_report(cluster: Cluster) -> tuple[list[str], bool]:
    """`status` as text: the lines of :func:`status_json`."""
    data = status_json(cluster)
    lines = [
        f"{'NODE':<20} {'CNI-READY':<10} {'FRR':<16} {'SESSIONS':<9} {'VNIS':<6} {'PODS':>5}"
        f" {'POOL':>9} {'REASON':<15} MESSAGE"
    ]
    for n in data["nodes"]:
        frr, sessions, vnis, pool = (n[k] or "-" for k in ("frr", "sessions", "vnis", "pool"))
        pods = "-" if n["pods"] is None else str(n["pods"])
        lines.append(
            f"{n['name']:<20} {n['status']:<10} {frr:<16} {sessions:<9} {vnis:<6} {pods:>5}"
            f" {pool:>9} {n['reason']:<15} {n['message']}"
        )
    lines.append("")
    lines.append(
        f"{'VRFDOMAIN':<24} {'VRF':>5} {'PREFIX':<18} {'ACCEPTED':<9} {'BLOCKS':>9}"
        f" {'ADDRESSES':>11} REASON"
    )
    for d in data["vrfDomains"]:
        blocks, addresses = f"{d['blocks']}/{d['poolBlocks']}", f"{d['allocated']}/{d['capacity']}"
        lines.append(
            f"{d['name']:<24} {d['vrf']:>5} {d['prefix']:<18} {d['status']:<9}"
            f" {blocks:>9} {addresses:>11} {d['reason']}"
        )
    if data["warnings"]:
        lines.append("")
        lines.append(f"RECENT WARNINGS (newest first, at most {WARNINGS_SHOWN})")
        for w in data["warnings"][:WARNINGS_SHOWN]:
            lines.append(
                f"{w['last']}  {w['object']}  {w['reason']} (x{w['count']}): {w['message']}"
            )
    return lines, bool(data["healthy"])


# -- why --------------------------------------------------------------------------------


def why_report(cluster: Cluster, pod: Obj) -> list[Link]:
    """The links a pod's network depends on, in order; the first broken one explains."""
    links: list[Link] = []
    namespace = pod["metadata"]["namespace"]
    name = f"{namespace}/{_name(pod)}"
    node_name = _spec(pod).get("nodeName")
    if not node_name:
        return [Link(False, f"pod {name} is not scheduled yet: no node, no network to set up")]
    if _spec(pod).get("hostNetwork"):
        return [Link(True, f"pod {name} uses the host's network: pyroute2-cni is not involved")]
    ips = [p.get("ip") for p in (pod.get("status") or {}).get("podIPs") or []]
    links.append(
        Link(
            bool(ips),
            f"pod {name} on node {node_name}: "
            + (
                f"address {', '.join(ips)}"
                if ips
                else "no address yet (its CNI ADD failed or runs)"
            ),
        )
    )
    # Which VRFDomain: the namespace's binding, else the default domain.
    bound = [
        b for b in cluster.bindings if _spec(b).get("namespaceRef", {}).get("name") == namespace
    ]
    domain: Obj | None
    if not bound:
        domain = next(
            (d for d in cluster.domains if _spec(d).get("vrf") == cluster.default_vrf), None
        )
        links.append(
            Link(
                domain is not None,
                f"namespace {namespace} has no VRFDomainBinding: its pods join the default"
                f" domain (vrf {cluster.default_vrf})"
                + ("" if domain is not None else ", which does not exist: check the daemon's log"),
            )
        )
    else:
        binding = bound[0]
        ready = _condition(binding, "Ready") or {}
        target = _spec(binding).get("vrfDomainRef", {}).get("name", "")
        ok = len(bound) == 1 and ready.get("status") != "False"
        text = (
            f"namespace {namespace} is bound by VRFDomainBinding {_name(binding)}"
            f" to VRFDomain {target}"
        )
        if len(bound) > 1:
            names = ", ".join(sorted(map(_name, bound)))
            text += f"; {len(bound)} bindings name it ({names}): delete all but one"
        elif not ok:
            text += f"; binding not ready: {ready.get('reason')}: {ready.get('message')}"
        links.append(Link(ok, text))
        domain = next((d for d in cluster.domains if _name(d) == target), None)
        if domain is None:
            links.append(
                Link(False, f"VRFDomain {target} does not exist: create it or fix the binding")
            )
    if domain is not None:
        links.append(_domain_link(domain))
        links.append(_pool_link(domain, cluster.blocks, node_name))
    node = next((n for n in cluster.nodes if _name(n) == node_name), None)
    links.append(_node_link(node, node_name))
    state = next((st for st in cluster.states if _name(st) == node_name), None)
    vrf = None if domain is None else _spec(domain).get("vrf")
    links.extend(_state_links(state, node_name, vrf, name))
    concerned = {("Node", node_name)} | ({("VRFDomain", _name(domain))} if domain else set())
    for event in unresolved_warnings(cluster.events):
        involved = event.get("involvedObject") or {}
        if (involved.get("kind"), involved.get("name")) in concerned:
            links.append(
                Link(
                    False,
                    f"event on {involved.get('kind')}/{involved.get('name')}: {event.get('reason')}"
                    f" (x{event.get('count', 1)}, last {event.get('lastTimestamp')}):"
                    f" {event.get('message')}",
                )
            )
    return links


def _domain_link(domain: Obj) -> Link:
    cond = _condition(domain, "Accepted")
    spec = _spec(domain)
    cidr = f"{spec.get('prefix')}/{spec.get('prefixlen')}"
    what = f"VRFDomain {_name(domain)} (vrf {spec.get('vrf')}, {cidr})"
    if cond is None:
        return Link(
            False, f"{what} has no Accepted condition yet: is any pyroute2-cni daemon running?"
        )
    if cond.get("status") != "True":
        return Link(False, f"{what} is not accepted: {cond.get('reason')}: {cond.get('message')}")
    return Link(True, f"{what} is accepted")


def _pool_link(domain: Obj, blocks: Iterable[Obj], node: str) -> Link:
    vrf = _spec(domain).get("vrf")
    mine = [b for b in blocks if _spec(b).get("vrf") == vrf]
    on_node = [b for b in mine if _spec(b).get("node") == node]
    free = sum(
        int(_spec(b).get("capacity", 0)) - int((b.get("status") or {}).get("allocated", 0))
        for b in on_node
    )
    claimed, size, _, _ = _pool(domain, mine)
    text = (
        f"pool of VRFDomain {_name(domain)}: {claimed} of {size} blocks claimed;"
        f" node {node} holds {len(on_node)} with {free} free addresses"
    )
    if free > 0 or claimed < size:
        return Link(True, text)
    return Link(
        False,
        text + ": the pool is exhausted for this node; delete pods that are done, or bind"
        " the namespace to a VRFDomain with a larger prefix",
    )


def _node_link(node: Obj | None, name: str) -> Link:
    if node is None:
        return Link(False, f"node {name} does not exist")
    cond = _condition(node, CONDITION_TYPE)
    if cond is None:
        return Link(
            False,
            f"node {name}: no {CONDITION_TYPE} condition: no pyroute2-cni daemon has reported"
            " there; is the DaemonSet's pod running on it?",
        )
    if cond.get("status") != "True":
        return Link(
            False, f"node {name}: {CONDITION_TYPE}={cond.get('status')}: {cond.get('message')}"
        )
    return Link(True, f"node {name}: the pyroute2-cni daemon serves CNI requests")


def _state_links(state: Obj | None, node: str, vrf: Any, pod: str) -> list[Link]:
    """The node's VRFNodeState for this pod's VRF: FRR, sessions, its VNIs, its pool on
    the node, and the node's last error when it names the pod."""
    if state is None:
        return [Link(False, f"node {node}: no VRFNodeState: no pyroute2-cni daemon reported")]
    status = state.get("status") or {}
    links = []
    frr = status.get("frr") or {}
    if frr.get("managed") is not False:
        applied = frr.get("applied")
        bgp = status.get("bgp") or {}
        up, _, total = str(bgp.get("summary")).partition("/")
        links.append(
            Link(
                applied is True,
                f"node {node}: FRR {frr.get('reason') or 'not applied yet'}"
                + ("" if applied is not False else f": {frr.get('message')}"),
            )
        )
        down = [
            f"{s.get('peer')} {s.get('state')}"
            for s in bgp.get("sessions") or []
            if s.get("state") != "Established"
        ]
        links.append(
            Link(
                bgp.get("answered") is not False and up == total,
                f"node {node}: BGP sessions Established {bgp.get('summary')}"
                + (f" (down: {', '.join(down)})" if down else "")
                + (": bgpd does not answer there" if bgp.get("answered") is False else ""),
            )
        )
        vnis = [v for v in (status.get("vnis") or {}).get("items") or [] if v.get("vrf") == vrf]
        missing = [str(v.get("vni")) for v in vnis if not v.get("known")]
        if vnis:
            links.append(
                Link(
                    not missing,
                    f"node {node}: zebra knows the VNIs of vrf {vrf}"
                    if not missing
                    else f"node {node}: zebra does not know VNI {', '.join(missing)} of vrf {vrf}:"
                    " its VXLAN device stays down, the pod reaches no other node",
                )
            )
    for use in status.get("vrfs") or []:
        if use.get("vrf") == vrf and use.get("exhausted"):
            links.append(
                Link(False, f"node {node}: an ADD in vrf {vrf} found no free address (pool full)")
            )
    error = status.get("lastError") or {}
    if f" {pod}:" in str(error.get("message", "")):
        links.append(
            Link(
                False,
                f"node {node}: last error for this pod ({error.get('time')}):"
                f" {error.get('message')}",
            )
        )
    return links


# -- the API ----------------------------------------------------------------------------


def read_cluster(api_client: Any) -> Cluster:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    core = client.CoreV1Api(api_client)
    custom = client.CustomObjectsApi(api_client)
    sanitize = api_client.sanitize_for_serialization

    def custom_list(group: str, plural: str) -> list[Obj]:
        return list(custom.list_cluster_custom_object(group, VERSION, plural).get("items", []))

    try:
        config = core.read_namespaced_config_map(CONFIGMAP, DAEMON_NAMESPACE)
        server_ini = (config.data or {}).get(CONFIG_KEY)
    except ApiException:
        server_ini = None
    events = core.list_event_for_all_namespaces(field_selector=f"source={COMPONENT}").items
    try:
        states = custom_list(CNI_GROUP, "vrfnodestates")
    except ApiException as exc:
        if exc.status != 404:  # 404: CRDs of a release without VRFNodeState
            raise
        states = []
    return Cluster(
        nodes=[sanitize(n) for n in core.list_node().items],
        domains=custom_list(CNI_GROUP, "vrfdomains"),
        bindings=custom_list(CNI_GROUP, "vrfdomainbindings"),
        blocks=custom_list(IPAM_GROUP, "ipblocks"),
        events=[sanitize(e) for e in events],
        default_vrf=default_vrf(server_ini),
        states=states,
    )


def _api_client(kubeconfig: str | None, context: str | None) -> Any:
    from kubernetes import config

    return config.new_client_from_config(config_file=kubeconfig, context=context)


def main(
    argv: Sequence[str] | None = None,
    *,
    client_factory: Callable[[str | None, str | None], Any] = _api_client,
    out: Any = None,
) -> int:
    out = out or sys.stdout
    # Flags go after the subcommand, as with kubectl's own (`status -o json`).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--kubeconfig", help="the kubeconfig to use (default: kubectl's)")
    common.add_argument("--context", help="the kubeconfig context to use")
    common.add_argument("-o", "--output", choices=("text", "json"), default="text")
    parser = argparse.ArgumentParser(prog="kubectl pyroute2", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("status", parents=[common], help="nodes, VRFDomains, pools, warnings")
    why = sub.add_parser("why", parents=[common], help="why a pod has (or lacks) its network")
    why.add_argument("pod")
    why.add_argument("-n", "--namespace", default="default")
    ipam = sub.add_parser("ipam", help="IPAM maintenance")
    ipam.add_subparsers(dest="ipam_command", required=True).add_parser(
        "check", parents=[common], help="leaked, duplicate and inconsistent allocations"
    )
    args = parser.parse_args(argv)
    as_json = args.output == "json"
    if args.command == "ipam":
        from pyroute2_cni.ipam.check import run_ipam_check

        return run_ipam_check(kubeconfig=args.kubeconfig, as_json=as_json)
    from kubernetes.client.exceptions import ApiException

    try:
        api_client = client_factory(args.kubeconfig, args.context)
        cluster = read_cluster(api_client)
        if args.command == "status" and as_json:
            data = status_json(cluster)
            print(json.dumps(data, indent=2, sort_keys=True), file=out)
            return 0 if data["healthy"] else 1
        if args.command == "status":
            lines, healthy = status_report(cluster)
            print("\n".join(lines), file=out)
            return 0 if healthy else 1
        from kubernetes import client

        try:
            pod = client.CoreV1Api(api_client).read_namespaced_pod(args.pod, args.namespace)
        except ApiException as exc:
            if exc.status == 404:
                print(f"pod {args.namespace}/{args.pod} does not exist", file=out)
                return 1
            raise
        links = why_report(cluster, api_client.sanitize_for_serialization(pod))
    except (ApiException, OSError) as exc:
        print(f"kubectl pyroute2: cannot read the cluster: {exc}", file=sys.stderr)
        return 2
    if as_json:
        body = [{"ok": link.ok, "text": link.text} for link in links]
        print(
            json.dumps({"pod": f"{args.namespace}/{args.pod}", "links": body}, indent=2), file=out
        )
    else:
        for link in links:
            print(f"{'ok ' if link.ok else 'BAD'} {link.text}", file=out)
    return 0 if all(link.ok for link in links) else 1
