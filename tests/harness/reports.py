"""What the daemons report about a lab's nodes (issue 19), read as an operator would:
each node's VRFNodeState, its Pyroute2CNIReady condition, and `kubectl pyroute2`."""

from __future__ import annotations

import io
from typing import Any

from kubernetes.client.exceptions import ApiException

from pyroute2_cni import kubectl_plugin
from pyroute2_cni.kube.node_state import GROUP, PLURAL, VERSION
from tests.harness.lab import Lab

# A fault reaches the VRFNodeStates within a poll ([frr] poll_interval), a write
# ([daemon] node_state_min_interval, 10 s) and the Node condition's tick (5 s); under
# User-Mode Linux each of those can take seconds more.
STATE_TIMEOUT = 90.0


def node_state(lab: Lab, node: str) -> dict[str, Any]:
    """The node's VRFNodeState status ({} before its first write)."""
    try:
        obj = lab.custom().get_cluster_custom_object(GROUP, VERSION, PLURAL, node)
    except ApiException as exc:
        if exc.status == 404:
            return {}
        raise
    return dict(obj.get("status") or {})


def cni_condition(lab: Lab, node: str) -> tuple[str, str, str]:
    """(status, reason, message) of the node's Pyroute2CNIReady condition."""
    return lab.cni_condition(node)


def plugin(lab: Lab, *argv: str) -> tuple[int, str]:
    """`kubectl pyroute2 ARGV` against the lab: (exit status, output)."""
    out = io.StringIO()
    code = kubectl_plugin.main([*argv, "--kubeconfig", str(lab.kubeconfig)], out=out)
    return code, out.getvalue()


def events_on(lab: Lab, kind: str, name: str, reason: str) -> list[Any]:
    """The daemons' Events with `reason` on the object (in "default", as for every
    cluster-scoped object)."""
    found = (
        lab.core()
        .list_namespaced_event("default", field_selector=f"involvedObject.name={name}")
        .items
    )
    return [e for e in found if e.involved_object.kind == kind and e.reason == reason]


def all_healthy(lab: Lab) -> bool:
    return all(
        node_state(lab, n).get("ready") is True and cni_condition(lab, n)[1] == "DaemonReady"
        for n in lab.nodes
    )
