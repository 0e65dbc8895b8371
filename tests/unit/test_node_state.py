"""The VRFNodeState status built from the actors' facts (issue 19, item 1): what it says
is wrong, and that equal facts give an equal status (the actor writes only on a change)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pyroute2_cni.actors.base import ActorHooks
from pyroute2_cni.actors.node_state_actor import EVENT_DELAY, CheckState, NodeStateActor
from pyroute2_cni.kube.node_condition import REASON_DEGRADED, REASON_READY, condition_for
from pyroute2_cni.kube.node_state import (
    NodeFacts,
    new_object,
    problems,
    status_for,
    with_apply,
    with_failure,
    with_frr_state,
)
from pyroute2_cni.messages.node_state import (
    CniFailureSeen,
    FrrApplySeen,
    FrrStateSeen,
    IpamUseSeen,
    NodeProblems,
    SessionSeen,
    VniSeen,
    VrfUse,
)
from pyroute2_cni.runtime.health import HealthReport
from pyroute2_cni.runtime.metrics import Metrics
from tests.harness.recording import FakeClock, RecordingAddress
from tests.harness.steady_writes import changed_paths

pytestmark = pytest.mark.unit

READY = HealthReport(live=True, ready=True, lines=("ipam: ready", "frr: ready"))
T0 = datetime(2026, 12, 6, 8, 0, 0, tzinfo=UTC)
L3 = VniSeen(vrf=42, vni=100, kind="l3vni")
L2 = VniSeen(vrf=1002, vni=2002, kind="l2vni")
APPLIED = FrrApplySeen(
    applied=True,
    reason="Applied",
    message="FRR runs the configuration for 1 VRFs",
    at="2026-12-06T07:59:00Z",
    config_hash="sha256:0123456789abcdef",
)


def _sessions(*states: tuple[str, str, float]) -> tuple[SessionSeen, ...]:
    return tuple(SessionSeen(peer=p, state=s, uptime=u) for p, s, u in states)


def healthy() -> NodeFacts:
    facts = with_apply(NodeFacts(), APPLIED)
    seen = FrrStateSeen(
        answered=True,
        sessions=_sessions(("10.0.0.2", "Established", 60), ("10.0.0.3", "Established", 30)),
        expected=(L3, L2),
        known=(L3, L2),
    )
    facts = with_frr_state(facts, seen, T0)
    use = VrfUse(vrf=42, domain="default", blocks=1, addresses=3, free=61, exhausted=False)
    return replace(facts, ipam=IpamUseSeen(vrfs=(use,)))


def test_a_healthy_node_is_ready_with_its_counts() -> None:
    status = status_for(healthy(), READY, version="0.1.0")
    assert status["ready"] is True
    assert status["problems"] == []
    assert status["frr"]["reason"] == "Applied"
    assert status["frr"]["configHash"] == "sha256:0123456789abcdef"
    assert status["bgp"]["summary"] == "2/2"
    assert status["vnis"]["summary"] == "2/2"
    assert status["pods"] == 3
    assert status["vrfs"][0]["domain"] == "default"
    assert status["bgp"]["sessions"][0]["establishedSince"] == "2026-12-06T07:59:00Z"
    assert status["lastError"] is None


def test_every_key_is_always_there_so_a_merge_patch_replaces_the_status() -> None:
    def keys(node: Any, path: str = "") -> set[str]:
        if not isinstance(node, dict):
            return set()
        found = set()
        for key, value in node.items():
            found.add(path + key)
            found |= keys(value, path + key + ".")
        return found

    empty = status_for(NodeFacts(), READY, version="0.1.0")
    full = status_for(healthy(), READY, version="0.1.0")
    assert keys(empty) <= keys(full)
    assert {k for k in keys(full) if k.count(".") <= 1} == {
        k for k in keys(empty) if k.count(".") <= 1
    }


def test_each_fault_is_named() -> None:
    facts = healthy()
    broken = with_frr_state(
        facts,
        FrrStateSeen(
            answered=True,
            sessions=_sessions(("10.0.0.2", "Established", 70), ("10.0.0.3", "Active", 0)),
            expected=(L3, L2),
            known=(L3,),
        ),
        T0 + timedelta(seconds=10),
    )
    full = VrfUse(vrf=42, domain="default", blocks=1, addresses=64, free=0, exhausted=True)
    broken = replace(broken, ipam=IpamUseSeen(vrfs=(full,)))
    broken = with_apply(
        broken,
        replace(APPLIED, applied=False, reason="ReloadFailed", message="frr-reload.py: error"),
    )
    found = problems(broken, READY)
    assert found == [
        "FRR apply failed (ReloadFailed): frr-reload.py: error",
        "BGP sessions not Established: 10.0.0.3 Active",
        "zebra does not know VNIs: 2002 (l2vni of VRF 1002)",
        "pool of default exhausted: an ADD found no free address",
    ]
    status = status_for(broken, READY, version="0.1.0")
    assert status["ready"] is False
    assert (status["bgp"]["summary"], status["vnis"]["summary"]) == ("1/2", "1/2")
    assert status["lastError"]["source"] == "frr"


def test_a_silent_bgpd_and_a_daemon_not_ready_are_problems() -> None:
    silent = with_frr_state(
        healthy(), FrrStateSeen(answered=False, sessions=(), expected=(L3,), known=()), T0
    )
    waiting = HealthReport(live=True, ready=False, lines=("ipam: ready", "frr: not ready (x)"))
    found = problems(silent, waiting)
    assert found[0] == "not ready: frr: not ready (x)"
    assert any(line.startswith("bgpd does not answer: BGP sessions unknown") for line in found)
    assert "zebra does not know VNIs: 100 (l3vni of VRF 42)" in found
    # What bgpd said last about the sessions' start is kept while it is silent.
    assert silent.since == healthy().since


def test_unmanaged_frr_is_no_problem() -> None:
    facts = NodeFacts(frr_managed=False)
    assert problems(facts, READY) == []
    assert status_for(facts, READY, version="0.1.0")["frr"]["managed"] is False


def test_a_failing_streak_keeps_its_first_time() -> None:
    failed = replace(APPLIED, applied=False, reason="FrrUnavailable", message="no vtysh")
    first = with_apply(healthy(), failed)
    again = with_apply(first, replace(failed, at="2026-12-06T08:05:00Z"))
    assert again is first
    assert status_for(again, READY, version="v") == status_for(first, READY, version="v")
    other = with_apply(again, replace(failed, message="vtysh timed out", at="2026-12-06T08:06:00Z"))
    assert other.last_error is not None and other.last_error.at == "2026-12-06T08:06:00Z"


def test_the_same_cni_error_again_changes_nothing() -> None:
    seen = CniFailureSeen(
        verb="ADD", pod="t/p", message="no VRFDomain x", at="2026-12-06T08:00:00Z"
    )
    first = with_failure(healthy(), seen)
    again = with_failure(first, replace(seen, at="2026-12-06T08:00:20Z"))
    assert first.last_error == again.last_error
    assert again.last_error is not None
    assert again.last_error.message == "CNI ADD t/p: no VRFDomain x"
    assert again.last_error.at == "2026-12-06T08:00:00Z"


def test_an_established_session_keeps_its_start_through_poll_jitter() -> None:
    facts = healthy()
    seen = FrrStateSeen(
        answered=True,
        sessions=_sessions(("10.0.0.2", "Established", 62), ("10.0.0.3", "Established", 33)),
        expected=(L3, L2),
        known=(L3, L2),
    )
    later = with_frr_state(facts, seen, T0 + timedelta(seconds=1))
    assert later.since == facts.since
    # A session that came up again (its uptime restarted) has a new start.
    reset = replace(
        seen, sessions=_sessions(("10.0.0.2", "Established", 100), ("10.0.0.3", "Established", 2))
    )
    again = with_frr_state(facts, reset, T0 + timedelta(seconds=40))
    assert again.since["10.0.0.2"] == facts.since["10.0.0.2"]
    assert again.since["10.0.0.3"] == "2026-12-06T08:00:38Z"


def test_the_condition_stays_true_but_says_degraded() -> None:
    ok = condition_for(READY)
    assert (ok.status, ok.reason) == ("True", REASON_READY)
    degraded = condition_for(READY, ("BGP sessions not Established: 10.0.0.3 Active",))
    assert (degraded.status, degraded.reason) == ("True", REASON_DEGRADED)
    assert "10.0.0.3 Active" in degraded.message
    waiting = HealthReport(live=True, ready=False, lines=("frr: not ready (x)",))
    assert condition_for(waiting, ("anything",)).status == "False"


def test_the_object_is_owned_by_its_node() -> None:
    owned = new_object("n1", "uid-1")
    assert owned["metadata"]["ownerReferences"] == [
        {"apiVersion": "v1", "kind": "Node", "name": "n1", "uid": "uid-1"}
    ]
    assert owned["spec"] == {"nodeRef": {"name": "n1"}}
    assert "ownerReferences" not in new_object("n1", None)["metadata"]


# -- the actor's Events and what it tells the node condition ---------------------------


class Unreachable:
    """What the api_factory gives: writes fail (the API is not what is tested here)."""


def _start(
    clock: FakeClock,
    events: RecordingAddress,
    condition: RecordingAddress | None = None,
    health: HealthReport = READY,
) -> Any:
    return NodeStateActor.start(
        ActorHooks(name="node-state", generation=1, on_crash=lambda *_args: None),
        node="n1",
        api_factory=Unreachable,
        readiness=lambda: health,
        metrics=Metrics(),
        version="0.1.0",
        interval=3600.0,  # ticks by hand
        min_interval=0.0,
        condition=condition,
        events=events,
        clock=clock,
    )


def test_lasting_problems_are_one_event_and_their_end_another() -> None:
    clock, condition, events = FakeClock(), RecordingAddress(), RecordingAddress()
    ref = _start(clock, events, condition)
    try:
        healthy_frr = FrrStateSeen(
            answered=True, sessions=_sessions(("10.0.0.2", "Established", 5)), expected=(), known=()
        )
        down = replace(healthy_frr, sessions=_sessions(("10.0.0.2", "Active", 0)))
        ref.ask(healthy_frr)
        assert condition.messages[-1] == NodeProblems(problems=())
        ref.ask(down)
        problem = "BGP sessions not Established: 10.0.0.2 Active"
        assert condition.messages[-1] == NodeProblems(problems=(problem,)), "at once"
        clock.advance(EVENT_DELAY - 1)
        ref.ask(CheckState())
        assert events.messages == [], "a problem younger than EVENT_DELAY is no news"
        # Back before the delay: nothing at all; down again, the delay starts over.
        ref.ask(healthy_frr)
        ref.ask(down)
        clock.advance(EVENT_DELAY - 1)
        ref.ask(CheckState())
        assert events.messages == []
        clock.advance(1)
        ref.ask(CheckState())
        ref.ask(CheckState())
        (degraded,) = events.messages
        assert (degraded.kind, degraded.name, degraded.reason, degraded.warning) == (
            "Node",
            "n1",
            "NetworkDegraded",
            True,
        )
        assert degraded.message == f"node n1: {problem}"
        # Problems that keep changing: at most one Event per EVENT_DELAY.
        idle = replace(healthy_frr, sessions=_sessions(("10.0.0.2", "Idle", 0)))
        ref.ask(idle)
        assert len(events.messages) == 1
        clock.advance(EVENT_DELAY)
        ref.ask(CheckState())
        assert [m.reason for m in events.messages] == ["NetworkDegraded"] * 2
        assert "10.0.0.2 Idle" in events.messages[-1].message
        ref.ask(healthy_frr)
        assert [m.reason for m in events.messages][-1] == "NetworkHealthy"
        assert events.messages[-1].warning is False
        assert condition.messages[-1] == NodeProblems(problems=())
    finally:
        ref.stop()


def test_a_daemon_that_never_was_ready_makes_no_events() -> None:
    """Starting is what the condition (DaemonNotReady) tells; no NetworkDegraded for it."""
    clock, events = FakeClock(), RecordingAddress()
    starting = HealthReport(live=True, ready=False, lines=("frr: not ready (waiting)",))
    ref = _start(clock, events, health=starting)
    try:
        ref.ask(CheckState())
        clock.advance(EVENT_DELAY * 3)
        ref.ask(CheckState())
        assert events.messages == []
    finally:
        ref.stop()


def test_the_steady_writes_tool_names_what_a_write_changed() -> None:
    old = {"ready": True, "bgp": {"sessions": [{"peer": "a", "state": "Established"}]}}
    new = {"ready": True, "bgp": {"sessions": [{"peer": "a", "state": "Idle"}]}, "pods": 2}
    assert changed_paths(old, new) == ["bgp.sessions[0].state", "pods"]
    assert changed_paths(old, old) == []
    assert changed_paths([1], [1, 2]) == ["."]
