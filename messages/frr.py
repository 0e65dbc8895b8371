"""FRRActor's events."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class VniKnown:
    """zebra has the VNI (and, for an l3vni, its VRF mapping): devices may come up."""

    vrf: int
    vni: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ApplyFrr:
    """Self-scheduled after the debounce: render and apply the current model."""

    generation: int


@dataclass(frozen=True, slots=True, kw_only=True)
class PollFrr:
    """Self-scheduled: read BGP sessions and known VNIs from vtysh.

    `once` polls are the quick ones after a reload, while zebra has not
    reported every VNI yet; they do not reschedule the periodic poll.
    """

    once: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class FrrApplyReported:
    """Outcome of the last apply, for this node's VRFNodeConfig status (condition FrrApplied)."""

    node: str
    ok: bool
    reason: str
    message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RestoreFrr:
    """Self-told after a reload failed midway: put the last good configuration back.

    `applied` is the count of successful applies when the reload failed: when
    another apply has succeeded since, FRR runs that one and nothing is restored.
    A handler of its own keeps each handler within config.frr_apply_bound.
    """

    applied: int
    failure: str
