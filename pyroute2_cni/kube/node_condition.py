"""The node condition ``Pyroute2CNIReady``: whether this node's daemon can serve CNI ADDs.

Derived from the supervisor's health report (the lines /readyz shows), written to the
Node's status with a strategic merge patch that names only this condition (the list is
merged by ``type``), so the kubelet's own conditions are never touched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pyroute2_cni.runtime.health import HealthReport

CONDITION_TYPE = "Pyroute2CNIReady"
REASON_READY = "DaemonReady"
REASON_NOT_READY = "DaemonNotReady"
REASON_DEGRADED = "Degraded"
# Long enough for the actors' reasons, short enough for `kubectl describe node`.
MESSAGE_LIMIT = 512


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeCondition:
    status: str  # "True" or "False", as Kubernetes writes it
    reason: str
    message: str


def condition_for(report: HealthReport, problems: tuple[str, ...] = ()) -> NodeCondition:
    """True while ADDs are served; Degraded (still True) when the node's VRFNodeState
    names problems that do not stop ADDs (BGP sessions down, a VNI zebra lacks)."""
    if report.ready and problems:
        message = "pyroute2-cni serves CNI requests on this node, but: " + "; ".join(problems)
        return NodeCondition(status="True", reason=REASON_DEGRADED, message=_clip(message))
    if report.ready:
        return NodeCondition(
            status="True",
            reason=REASON_READY,
            message="pyroute2-cni serves CNI requests on this node (every actor is ready)",
        )
    waiting = [line for line in report.lines if not line.endswith(": ready")]
    message = "pyroute2-cni cannot serve CNI ADDs yet: " + "; ".join(waiting or report.lines)
    return NodeCondition(status="False", reason=REASON_NOT_READY, message=_clip(message))


def _clip(message: str) -> str:
    return message if len(message) <= MESSAGE_LIMIT else message[: MESSAGE_LIMIT - 1] + "…"


def status_patch(condition: NodeCondition, now: str, transition: str) -> dict[str, Any]:
    """The body of PATCH nodes/NAME/status (strategic merge: conditions merge by type)."""
    return {
        "status": {
            "conditions": [
                {
                    "type": CONDITION_TYPE,
                    "status": condition.status,
                    "reason": condition.reason,
                    "message": condition.message,
                    "lastHeartbeatTime": now,
                    "lastTransitionTime": transition,
                }
            ]
        }
    }


def current_transition(node_status: Any, status: str) -> str | None:
    """The lastTransitionTime of our condition on the Node when its status is `status`
    (kept across daemon restarts), else None."""
    for condition in getattr(node_status, "conditions", None) or []:
        if condition.type == CONDITION_TYPE and condition.status == status:
            when = condition.last_transition_time
            return None if when is None else str(when.strftime("%Y-%m-%dT%H:%M:%SZ"))
    return None
