"""VRFNodeState: one node's network state, as the daemon writes it into the API.

A cluster-scoped ``cni.pyroute2.org/v1alpha1`` object named after the node and owned by
its Node (the garbage collector removes it with the Node).  The daemon writes its status
from the facts the actors report (messages.node_state) and the health report: FRR's last
apply, BGP sessions, the VNIs zebra knows against those expected, this node's pods and
blocks per VRF, EVPN entries held, the last error, and ``problems``: one line per thing
that is wrong, which also feeds the node condition's message.

Everything here is pure: the status is a plain dict built from the facts, equal
facts give an equal dict (no clocks inside, times come from the facts), so the actor
writes only when something changed.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from pyroute2_cni.messages.node_state import (
    CniFailureSeen,
    FrrApplySeen,
    FrrStateSeen,
    IpamUseSeen,
)
from pyroute2_cni.runtime.health import HealthReport

GROUP, VERSION, PLURAL, KIND = "cni.pyroute2.org", "v1alpha1", "vrfnodestates", "VRFNodeState"
# bgpd gives uptimes in whole seconds and polls come late: an Established session whose
# computed start moved less than this is the same session (no write for the jitter).
SINCE_TOLERANCE = 5.0
MESSAGE_LIMIT = 300  # per problem or error line: the object stays small


@dataclass(frozen=True, slots=True, kw_only=True)
class LastError:
    source: str  # "frr" or "cni"
    message: str
    at: str


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeFacts:
    """All the NodeStateActor knows; replaced, never mutated."""

    frr_managed: bool = True
    apply: FrrApplySeen | None = None
    frr: FrrStateSeen | None = None
    ipam: IpamUseSeen | None = None
    held: int = 0
    last_error: LastError | None = None
    # peer -> when its Established session came up (RFC 3339), kept across polls.
    since: dict[str, str] = field(default_factory=dict)


def _clip(text: str) -> str:
    return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 1] + "…"


def _stamp(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def with_apply(facts: NodeFacts, seen: FrrApplySeen) -> NodeFacts:
    """A new apply result; an identical one (a retry failing the same way) keeps the time
    of the first, so a failing streak is one write."""
    old = facts.apply
    if old is not None and (old.applied, old.reason, old.message, old.config_hash) == (
        seen.applied,
        seen.reason,
        seen.message,
        seen.config_hash,
    ):
        return facts
    error = facts.last_error
    if not seen.applied:
        error = _error(error, "frr", f"{seen.reason}: {seen.message}", seen.at)
    return replace(facts, apply=seen, last_error=error)


def with_failure(facts: NodeFacts, seen: CniFailureSeen) -> NodeFacts:
    pod = f" {seen.pod}" if seen.pod else ""
    message = f"CNI {seen.verb}{pod}: {seen.message}"
    return replace(facts, last_error=_error(facts.last_error, "cni", message, seen.at))


def _error(old: LastError | None, source: str, message: str, at: str) -> LastError:
    message = _clip(message)
    if old is not None and (old.source, old.message) == (source, message):
        return old  # the same error again: its first time stays, no write
    return LastError(source=source, message=message, at=at)


def with_frr_state(facts: NodeFacts, seen: FrrStateSeen, now: datetime) -> NodeFacts:
    since: dict[str, str] = {}
    for session in seen.sessions:
        if session.state != "Established":
            continue
        start = now - timedelta(seconds=session.uptime)
        previous = facts.since.get(session.peer)
        if previous is not None:
            old = datetime.strptime(previous, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
            if abs((start - old).total_seconds()) <= SINCE_TOLERANCE:
                since[session.peer] = previous
                continue
        since[session.peer] = _stamp(start)
    if not seen.answered:
        since = facts.since  # bgpd silent: nothing is known to have changed
    return replace(facts, frr=seen, since=since)


def problems(facts: NodeFacts, health: HealthReport) -> list[str]:
    """What is wrong on this node, one line each, most fundamental first."""
    found = [f"not ready: {line}" for line in health.lines if not line.endswith(": ready")]
    if not facts.frr_managed:
        return found
    if facts.apply is not None and not facts.apply.applied:
        found.append(_clip(f"FRR apply failed ({facts.apply.reason}): {facts.apply.message}"))
    frr = facts.frr
    if frr is not None and not frr.answered:
        found.append(
            "bgpd does not answer: BGP sessions unknown (is it running? see the pyroute2-frr "
            "container's log)"
        )
    elif frr is not None:
        down = sorted((s.peer, s.state) for s in frr.sessions if s.state != "Established")
        if down:
            listed = ", ".join(f"{peer} {state}" for peer, state in down)
            found.append(f"BGP sessions not Established: {listed}")
    if frr is not None:
        known = set(frr.known)
        missing = [v for v in frr.expected if v not in known]
        if missing:
            listed = ", ".join(f"{v.vni} ({v.kind} of VRF {v.vrf})" for v in missing)
            found.append(f"zebra does not know VNIs: {listed}")
    if facts.ipam is not None:
        for use in facts.ipam.vrfs:
            if use.exhausted:
                name = use.domain or f"VRF {use.vrf}"
                found.append(f"pool of {name} exhausted: an ADD found no free address")
    return found


def status_for(facts: NodeFacts, health: HealthReport, *, version: str) -> dict[str, Any]:
    """The VRFNodeState status: every key always present (null when unknown), so a merge
    patch of it replaces the previous status exactly."""
    wrong = problems(facts, health)
    apply = facts.apply
    frr = facts.frr
    sessions = [] if frr is None else sorted(frr.sessions, key=lambda s: s.peer)
    up = sum(1 for s in sessions if s.state == "Established")
    expected = [] if frr is None else list(frr.expected)
    known = set(() if frr is None else frr.known)
    vrfs = [] if facts.ipam is None else sorted(facts.ipam.vrfs, key=lambda v: v.vrf)
    error = facts.last_error
    return {
        "ready": health.ready and not wrong,
        "problems": wrong,
        "version": version,
        "frr": {
            "managed": facts.frr_managed,
            "applied": None if apply is None else apply.applied,
            "reason": None if apply is None else apply.reason,
            "message": None if apply is None else _clip(apply.message),
            "time": None if apply is None else apply.at,
            "configHash": None if apply is None or not apply.config_hash else apply.config_hash,
        },
        "bgp": {
            "answered": None if frr is None else frr.answered,
            "summary": None
            if frr is None
            else (f"{up}/{len(sessions)}" if frr.answered else "unknown"),
            "sessions": [
                {"peer": s.peer, "state": s.state, "establishedSince": facts.since.get(s.peer)}
                for s in sessions
            ],
        },
        "vnis": {
            "summary": None if frr is None else f"{len(known & set(expected))}/{len(expected)}",
            "items": [
                {"vni": v.vni, "vrf": v.vrf, "kind": v.kind, "known": v in known}
                for v in sorted(expected, key=lambda v: (v.vrf, v.vni))
            ],
        },
        "pods": sum(v.addresses for v in vrfs),
        "vrfs": [
            {
                "vrf": v.vrf,
                "domain": v.domain or None,
                "blocks": v.blocks,
                "addresses": v.addresses,
                "free": v.free,
                "exhausted": v.exhausted,
            }
            for v in vrfs
        ],
        "evpnHeld": facts.held,
        "lastError": None
        if error is None
        else {"source": error.source, "message": error.message, "time": error.at},
    }


def new_object(node: str, node_uid: str | None) -> dict[str, Any]:
    """The object created once per node (its status is written after, as a subresource)."""
    metadata: dict[str, Any] = {"name": node}
    if node_uid:
        metadata["ownerReferences"] = [
            {"apiVersion": "v1", "kind": "Node", "name": node, "uid": node_uid}
        ]
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": metadata,
        "spec": {"nodeRef": {"name": node}},
    }
