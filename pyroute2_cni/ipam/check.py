"""`pyroute2-cni ipam check`: a read-only consistency report over every IPBlock.

Reads IPBlocks, VRFDomains, Nodes and Pods (four LISTs), then reports addresses
held for pods that no longer exist, duplicate addresses or attachments within a
VRF, blocks of missing nodes, ALLOCATED counts that disagree with the records,
blocks outside their VRFDomain's prefix and overlapping blocks.  With ``--node NAME``
(run in that node's network namespace, e.g. in the DaemonSet's container) it also compares
the node's pod interfaces (their host veths' aliases) with the node's records: an address
plumbed with no record, a record with no interface.  The logic is
:func:`pyroute2_cni.ipam.blocks.check_cluster` and ``check_node``; this module only fetches
and prints.

Exit status: 0 clean, 1 problems found, 2 the check could not run.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from pyroute2_cni.ipam.blocks import PlumbedAddress, check_cluster, check_node
from pyroute2_cni.ipam.store import KubeBlockStore, StoreError


def resolve_kubeconfig(kubeconfig: str | None) -> str:
    """--kubeconfig, else in-cluster when running in a pod, else $KUBECONFIG or ~/.kube/config.

    Returns "" for the in-cluster service account.
    """
    if kubeconfig:
        return kubeconfig
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        return ""
    for candidate in os.environ.get("KUBECONFIG", "").split(os.pathsep):
        if candidate and Path(candidate).exists():
            return candidate
    default = Path.home() / ".kube" / "config"
    return str(default) if default.exists() else ""


def plumbed_on_this_node() -> list[PlumbedAddress]:
    """Pod interfaces in this network namespace (the node's), from their host veths' aliases."""
    from pyroute2_cni.netlink.names import is_host_veth_name
    from pyroute2_cni.netlink.pods import parse_pod_alias
    from pyroute2_cni.netlink.sessions import KernelNetlink
    from pyroute2_cni.values.attachment import attachment_key

    backend = KernelNetlink()
    try:
        links = backend.links("veth")
    finally:
        backend.close()
    found = []
    for link in links:
        record = parse_pod_alias(link.alias) if is_host_veth_name(link.name) else None
        if record is not None:
            found.append(
                PlumbedAddress(
                    key=attachment_key(record.network, record.container_id, record.ifname),
                    address=record.address,
                    host_ifname=link.name,
                )
            )
    return found


def run_ipam_check(kubeconfig: str | None, as_json: bool, node: str = "") -> int:
    try:
        store = KubeBlockStore.from_kubeconfig(resolve_kubeconfig(kubeconfig))
    except Exception as exc:  # kubernetes.config raises several unrelated types
        print(f"pyroute2-cni ipam check: cannot configure the API client: {exc}", file=sys.stderr)
        return 2
    try:
        blocks = store.list_blocks()
        domains = store.list_domains()
        nodes = store.list_nodes()
        pods = store.list_pods()
    except StoreError as exc:
        print(f"pyroute2-cni ipam check: {exc}", file=sys.stderr)
        return 2
    finally:
        store.close()
    report = check_cluster(blocks, domains, nodes, pods)
    if as_json and not node:
        print(json.dumps(report.to_json(), indent=2, sort_keys=True))
    elif not as_json:
        print(report.to_text())
    if not node:
        return 0 if report.clean else 1
    try:
        plumbed = plumbed_on_this_node()
    except OSError as exc:
        print(f"pyroute2-cni ipam check: cannot read the node's interfaces: {exc}", file=sys.stderr)
        return 2
    local = check_node(node, blocks, plumbed)
    if as_json:
        print(
            json.dumps(
                {"cluster": report.to_json(), "node": {"name": node, **local.to_json()}},
                indent=2,
                sort_keys=True,
            )
        )
    else:
        print(
            local.to_text().replace("IPAM check:", f"node {node} (kernel vs records):", 1)
            + f"; {len(plumbed)} pod interfaces"
        )
    return 0 if report.clean and local.clean else 1
