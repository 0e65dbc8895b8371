"""`pyroute2-cni ipam check`: a read-only consistency report over every IPBlock.

Reads IPBlocks, VRFDomains, Nodes and Pods (four LISTs), then reports addresses
held for pods that no longer exist, duplicate addresses or attachments within a
VRF, blocks of missing nodes, ALLOCATED counts that disagree with the records,
blocks outside their VRFDomain's prefix and overlapping blocks.  The logic is
:func:`pyroute2_cni.ipam_blocks.check_cluster`; this module only fetches and prints.

Exit status: 0 clean, 1 problems found, 2 the check could not run.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from pyroute2_cni.ipam_blocks import check_cluster
from pyroute2_cni.ipam_store import KubeBlockStore, StoreError


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


def run_ipam_check(kubeconfig: str | None, as_json: bool) -> int:
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
    if as_json:
        print(json.dumps(report.to_json(), indent=2, sort_keys=True))
    else:
        print(report.to_text())
    return 0 if report.clean else 1
