"""Typed writes of our custom resources: VRFDomain status conditions, the default
VRFDomain, a VRFNodeConfig's status.

What to write is pure (:func:`desired_conditions`, :func:`merged_conditions`); the
:class:`DomainWriter` writes it through ``kube.transport``'s :class:`KubeApi`, conditional on
the object's resourceVersion (409 when someone else wrote first).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pyroute2_cni.kube.crd_validate import REASON_PREFIX_CHANGE_REFUSED, BlockCut, Verdict
from pyroute2_cni.kube.objects import (
    CRD_GROUP,
    CRD_VERSION,
    Condition,
    DomainObject,
    Resource,
    domain_from,
)
from pyroute2_cni.kube.transport import ApiError, KubeApi
from pyroute2_cni.messages.crd import VrfDomainSpec


@dataclass(frozen=True, slots=True, kw_only=True)
class DesiredCondition:
    """A condition as this node would write it; ``merged_conditions`` makes it a Condition."""

    type: str
    status: bool
    reason: str
    message: str


CONDITION_ACCEPTED = "Accepted"
CONDITION_READY = "Ready"


def desired_conditions(verdict: Verdict) -> tuple[DesiredCondition, ...]:
    """Accepted and Ready for one verdict.

    Ready is cluster-wide: True when the spec is accepted, so every node deploys
    it; per-node deployment state is each node's own business (metrics, logs),
    not something every node should write into one shared object.
    """
    accepted = DesiredCondition(
        type=CONDITION_ACCEPTED,
        status=verdict.accepted,
        reason=verdict.reason,
        message=verdict.message,
    )
    if verdict.accepted:
        ready = DesiredCondition(
            type=CONDITION_READY,
            status=True,
            reason="Accepted",
            message="accepted; every node deploys the VRF",
        )
    elif verdict.reason == REASON_PREFIX_CHANGE_REFUSED and verdict.cut is not None:
        ready = DesiredCondition(
            type=CONDITION_READY,
            status=True,
            reason="PreviousCutDeployed",
            message=(
                f"every node deploys the VRF with the previously accepted "
                f"{verdict.cut.describe()}; the change of them is refused (see Accepted)"
            ),
        )
    else:
        ready = DesiredCondition(
            type=CONDITION_READY, status=False, reason=verdict.reason, message=verdict.message
        )
    return (accepted, ready)


def _status_text(value: bool) -> str:
    return "True" if value else "False"


def merged_conditions(
    domain: DomainObject, wanted: Sequence[DesiredCondition], now: str
) -> tuple[Condition, ...] | None:
    """The conditions to write, or None when the object already says what we want.

    Conditions of other types are kept; lastTransitionTime changes only when the
    status does.
    """
    current = {c.type: c for c in domain.conditions}
    changed = domain.observed_generation != domain.generation
    result: dict[str, Condition] = dict(current)
    for want in wanted:
        status = _status_text(want.status)
        have = current.get(want.type)
        same = (
            have is not None
            and have.status == status
            and have.reason == want.reason
            and have.message == want.message
            and have.observed_generation == domain.generation
        )
        if same:
            continue
        changed = True
        transition = have.last_transition_time if have is not None and have.status == status else ""
        result[want.type] = Condition(
            type=want.type,
            status=status,
            reason=want.reason,
            message=want.message,
            last_transition_time=transition or now,
            observed_generation=domain.generation,
        )
    if not changed:
        return None
    return tuple(result.values())


def _condition_json(condition: Condition) -> dict[str, Any]:
    return {
        "type": condition.type,
        "status": condition.status,
        "reason": condition.reason,
        "message": condition.message,
        "lastTransitionTime": condition.last_transition_time,
        "observedGeneration": condition.observed_generation,
    }


def default_domain_body(spec: VrfDomainSpec) -> dict[str, Any]:
    return {
        "apiVersion": f"{CRD_GROUP}/{CRD_VERSION}",
        "kind": "VRFDomain",
        "metadata": {"name": spec.name},
        "spec": {
            "vrf": spec.vrf,
            "table": spec.table,
            "prefix": spec.prefix,
            "prefixlen": spec.prefixlen,
            "ipblocklen": spec.ipblocklen,
            "attachments": [
                {"type": a.type.value, "vni": a.vni, "port": a.port} for a in spec.attachments
            ],
        },
    }


class DomainWriter:
    """Typed writes of VRFDomains: create the default one, write status conditions."""

    def __init__(self, api: KubeApi) -> None:
        self.api = api

    def create_domain(self, spec: VrfDomainSpec) -> DomainObject:
        """Create `spec`; raises ApiError (409 AlreadyExists when it exists)."""
        return domain_from(self.api.create(Resource.VRF_DOMAIN, default_domain_body(spec)))

    def write_conditions(
        self,
        domain: DomainObject,
        conditions: Sequence[Condition],
        accepted_cut: BlockCut | None = None,
    ) -> DomainObject:
        """Replace the status of `domain`, conditional on its resourceVersion (409 if stale).

        `accepted_cut` (status.acceptedCut) is written when given; omitted, it is dropped.
        """
        status: dict[str, Any] = {
            "observedGeneration": domain.generation,
            "conditions": [_condition_json(c) for c in conditions],
        }
        if accepted_cut is not None:
            status["acceptedCut"] = {
                "vrf": accepted_cut.vrf,
                "prefix": accepted_cut.prefix,
                "prefixlen": accepted_cut.prefixlen,
                "ipblocklen": accepted_cut.ipblocklen,
            }
        body = {
            "apiVersion": f"{CRD_GROUP}/{CRD_VERSION}",
            "kind": "VRFDomain",
            "metadata": {"name": domain.name, "resourceVersion": domain.resource_version},
            "status": status,
        }
        return domain_from(self.api.replace_status(Resource.VRF_DOMAIN, domain.name, body))

    def write_node_config_status(
        self, name: str, *, accepted: bool, ready: bool, conditions: Sequence[Condition]
    ) -> None:
        """Replace a VRFNodeConfig's status (written only by the node it names).

        Rare (only when FRR's outcome changes), so the current resourceVersion
        is read with a LIST of the few VRFNodeConfigs; a 409 is retried once.
        """
        for attempt in range(2):
            items, _ = self.api.list(Resource.VRF_NODE_CONFIG)
            current = next((i for i in items if i["metadata"]["name"] == name), None)
            if current is None:
                return
            try:
                self._replace_node_config_status(
                    name,
                    current["metadata"]["resourceVersion"],
                    accepted=accepted,
                    ready=ready,
                    conditions=conditions,
                )
                return
            except ApiError as exc:
                if exc.status != 409 or attempt:
                    raise

    def _replace_node_config_status(
        self,
        name: str,
        resource_version: str,
        *,
        accepted: bool,
        ready: bool,
        conditions: Sequence[Condition],
    ) -> None:
        body = {
            "apiVersion": f"{CRD_GROUP}/{CRD_VERSION}",
            "kind": "VRFNodeConfig",
            "metadata": {"name": name, "resourceVersion": resource_version},
            "status": {
                "accepted": accepted,
                "ready": ready,
                "conditions": [_condition_json(c) for c in conditions],
            },
        }
        self.api.replace_status(Resource.VRF_NODE_CONFIG, name, body)
