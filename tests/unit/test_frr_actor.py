from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pykka
import pytest

from pyroute2_cni.actors.address import Address
from pyroute2_cni.actors.base import ActorHooks
from pyroute2_cni.actors.frr_actor import FRRActor
from pyroute2_cni.frr.control import FrrProcessControl, parse_bgp_uptimes, reload_differences
from pyroute2_cni.frr.model import build_frr_config, missing_key_lines, render
from pyroute2_cni.messages.base import Ping, Pong
from pyroute2_cni.messages.crd import (
    Attachment,
    AttachmentType,
    ChangeKind,
    ClusterObjectChanged,
    ClusterSnapshot,
    NodeInfo,
    VrfDomainSpec,
)
from pyroute2_cni.messages.evpn import BgpSessionsSeen
from pyroute2_cni.messages.frr import FrrApplyReported, VniKnown
from pyroute2_cni.messages.node_state import FrrApplySeen, FrrStateSeen, SessionSeen, VniSeen
from pyroute2_cni.runtime.config import DaemonSection, FrrSection, Settings
from pyroute2_cni.runtime.metrics import Metrics
from pyroute2_cni.values.evpn_hold import BgpView, PeerSession
from tests.harness.domains import SYSTEM_DOMAIN
from tests.harness.fake_frr import FakeFrrControl
from tests.harness.toy_actors import Recorder
from tests.harness.waiting import wait_for

pytestmark = pytest.mark.unit

DOMAIN = SYSTEM_DOMAIN
NODES = (NodeInfo(name="n1", internal_ip="192.0.2.1"), NodeInfo(name="n2", internal_ip="192.0.2.2"))


def hooks(name: str) -> ActorHooks:
    return ActorHooks(name=name, generation=1, on_crash=lambda *a: None)


@dataclass
class Rig:
    frr: FakeFrrControl
    actor: pykka.ActorRef[Any]
    metrics: Metrics
    netlink_seen: list[Any]
    watcher_seen: list[Any]
    keeper_seen: list[Any]
    events_seen: list[Any]
    state_seen: list[Any]

    def reloads(self, result: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "pyroute2_cni_frr_reloads_total", {"result": result}
        )
        return value or 0.0


@pytest.fixture
def rig(request: pytest.FixtureRequest) -> Iterator[Rig]:
    # A test may set the periodic poll interval (and the quick one after a reload)
    # with indirect parametrisation.
    param = getattr(request, "param", 0.05)
    poll_interval, quick_poll = param if isinstance(param, tuple) else (param, 0.25)
    frr = FakeFrrControl()
    metrics = Metrics()
    netlink_seen: list[Any] = []
    watcher_seen: list[Any] = []
    keeper_seen: list[Any] = []
    events_seen: list[Any] = []
    state_seen: list[Any] = []
    netlink, watcher, keeper = Address("netlink"), Address("watcher"), Address("keeper")
    events, state = Address("events"), Address("node-state")
    refs = [
        Recorder.start(hooks("netlink"), seen=netlink_seen),
        Recorder.start(hooks("watcher"), seen=watcher_seen),
        Recorder.start(hooks("keeper"), seen=keeper_seen),
        Recorder.start(hooks("events"), seen=events_seen),
        Recorder.start(hooks("node-state"), seen=state_seen),
    ]
    netlink.bind(refs[0])
    watcher.bind(refs[1])
    keeper.bind(refs[2])
    events.bind(refs[3])
    state.bind(refs[4])
    settings = Settings(
        daemon=DaemonSection(node_name="n1"),
        frr=FrrSection(
            debounce=0.1, poll_interval=float(poll_interval), quick_poll_interval=quick_poll
        ),
    )
    actor = FRRActor.start(
        hooks("frr"),
        settings=settings,
        control_factory=lambda: frr,
        netlink=netlink,
        watcher=watcher,
        metrics=metrics,
        keeper=keeper,
        hostname="host-of-n1",
        events=events,
        state=state,
    )
    yield Rig(frr, actor, metrics, netlink_seen, watcher_seen, keeper_seen, events_seen, state_seen)
    actor.stop()
    for ref in refs:
        ref.stop()


def ask_ping(rig: Rig, seq: int) -> Pong:
    pong = rig.actor.ask(Ping(seq=seq), timeout=5)
    assert isinstance(pong, Pong)
    return pong


def snapshot(*domains: VrfDomainSpec) -> ClusterSnapshot:
    return ClusterSnapshot(
        domains=domains, bindings=(), node_configs=(), nodes=NODES, namespaces=()
    )


def test_not_ready_until_first_apply_then_ready(rig: Rig) -> None:
    assert ask_ping(rig, 1).ready is False
    rig.actor.tell(snapshot(DOMAIN))
    wait_for(lambda: rig.frr.reloads == 1, 5, "first reload")
    assert rig.frr.running is not None and "vni 42" in rig.frr.running
    assert "neighbor 192.0.2.2 peer-group fabric" in rig.frr.running
    assert "\nhostname host-of-n1\n" in rig.frr.running  # what FRR shows: no diff
    wait_for(lambda: ask_ping(rig, 2).ready, 5, "ready")
    assert any(isinstance(m, FrrApplyReported) and m.ok for m in rig.watcher_seen)


def test_burst_is_debounced_and_identical_config_reloads_nothing(rig: Rig) -> None:
    rig.actor.tell(snapshot(DOMAIN))
    for i in range(5):
        node = NodeInfo(name=f"extra{i}", internal_ip=f"192.0.2.{10 + i}")
        rig.actor.tell(ClusterObjectChanged(kind=ChangeKind.ADDED, obj=node))
    wait_for(lambda: rig.reloads("ok") == 1, 5, "one reload after the burst")
    assert rig.frr.running is not None and "192.0.2.14" in rig.frr.running
    # A change that does not alter the rendering: no reload.
    rig.actor.tell(ClusterObjectChanged(kind=ChangeKind.MODIFIED, obj=DOMAIN))
    wait_for(lambda: rig.reloads("unchanged") == 1, 5, "unchanged counted")
    assert rig.frr.reloads == 1


def test_vrf_bindings_are_loaded_only_when_they_change(rig: Rig) -> None:
    rig.actor.tell(snapshot(DOMAIN))
    wait_for(lambda: rig.frr.reloads == 1, 5, "first reload")
    node = NodeInfo(name="n3", internal_ip="192.0.2.3")
    rig.actor.tell(ClusterObjectChanged(kind=ChangeKind.ADDED, obj=node))
    wait_for(lambda: rig.frr.reloads == 2, 5, "reload for the new peer")
    other = replace(
        DOMAIN, name="vrf-7", vrf=7, table=7, attachments=(replace(DOMAIN.attachments[0], vni=7),)
    )
    rig.actor.tell(ClusterObjectChanged(kind=ChangeKind.ADDED, obj=other))
    wait_for(lambda: rig.frr.reloads == 3, 5, "reload for the new domain")
    first, peer_only, new_domain = rig.frr.bindings_loaded
    assert "vrf vrf-42\n vni 42\n" in first
    assert peer_only == ""  # FRR has them: one vtysh call saved
    assert "vrf vrf-7\n vni 7\n" in new_domain and "vrf vrf-42\n" in new_domain


def test_invalid_config_keeps_last_good_and_recovers(rig: Rig) -> None:
    rig.actor.tell(snapshot(DOMAIN))
    wait_for(lambda: rig.frr.reloads == 1, 5, "first reload")
    good = rig.frr.running
    rig.frr.reject_containing = "vni 4242"
    bad = replace(
        DOMAIN,
        name="vrf-43",
        vrf=43,
        table=43,
        prefix="10.43.0.0",
        attachments=(Attachment(type=AttachmentType.L3VNI, vni=4242),),
    )
    rig.actor.tell(ClusterObjectChanged(kind=ChangeKind.ADDED, obj=bad))
    wait_for(lambda: rig.reloads("invalid") >= 1, 5, "failed validation counted")
    assert rig.frr.running == good
    wait_for(
        lambda: any(
            isinstance(m, FrrApplyReported) and not m.ok and m.reason == "ValidationFailed"
            for m in rig.watcher_seen
        ),
        5,
        "failure reported to the watcher",
    )
    rig.frr.reject_containing = None  # the input is fixed; the retry (2 s backoff) applies it
    wait_for(lambda: rig.frr.reloads == 2, 10, "recovered reload")
    assert rig.frr.running is not None and "vni 4242" in rig.frr.running


def test_known_vnis_are_told_to_netlink_once(rig: Rig) -> None:
    def vnis(kind: str) -> float | None:
        return rig.metrics.registry.get_sample_value(f"pyroute2_cni_evpn_vnis_{kind}")

    rig.actor.tell(snapshot(DOMAIN))
    wait_for(lambda: rig.frr.reloads == 1, 5, "first reload")
    wait_for(lambda: vnis("expected") == 1, 5, "the expected VNI exported")
    assert vnis("known") == 0, "zebra does not know it yet: the VNI-missing alert's input"
    assert not any(isinstance(m, VniKnown) for m in rig.netlink_seen)
    rig.frr.l3vnis = {"vrf-42": 43}  # zebra has the VRF with another VNI: still missing
    polls = rig.frr.polls
    wait_for(lambda: rig.frr.polls >= polls + 1, 5, "one more poll")
    assert vnis("known") == 0
    rig.frr.l3vnis = {"vrf-42": 42}
    wait_for(lambda: VniKnown(vrf=42, vni=42) in rig.netlink_seen, 5, "VniKnown told")
    wait_for(lambda: vnis("known") == 1, 5, "the known VNI exported")
    polls = rig.frr.polls
    wait_for(lambda: rig.frr.polls >= polls + 3, 5, "three more polls")
    assert rig.netlink_seen.count(VniKnown(vrf=42, vni=42)) == 1


@pytest.mark.parametrize("rig", [300.0], indirect=True)
def test_vni_reported_after_reload_is_told_without_waiting_for_the_periodic_poll(
    rig: Rig,
) -> None:
    rig.actor.tell(snapshot(DOMAIN))
    wait_for(lambda: rig.frr.reloads == 1, 5, "first reload")
    rig.frr.l3vnis = {"vrf-42": 42}  # zebra learns the VNI a little after the reload
    # The periodic poll is 300 s away: only the quick polls can tell it.
    wait_for(lambda: VniKnown(vrf=42, vni=42) in rig.netlink_seen, 5, "VniKnown told")
    settled = rig.frr.polls
    # Every VNI is known: the quick polls stop (no poll in 4 quick intervals).
    time.sleep(4 * FrrSection().quick_poll_interval)  # an absence can only be shown by waiting
    assert rig.frr.polls == settled


@pytest.mark.parametrize("rig", [(0.05, 0.01)], indirect=True)
def test_a_vni_zebra_lacks_after_the_quick_polls_is_an_event_on_its_domain(rig: Rig) -> None:
    """Issue 19 item 3: a VRFDomain accepted but not programmable on this node."""
    rig.actor.tell(snapshot(DOMAIN))
    wait_for(lambda: rig.events_seen, 5, "an event")
    (missing,) = rig.events_seen
    assert (missing.kind, missing.name, missing.reason, missing.warning) == (
        "VRFDomain",
        "vrf-42",
        "VniMissing",
        True,
    )
    assert "node n1: zebra does not know VNI 42 of vrf-42" in missing.message
    assert rig.frr.polls > FrrSection().quick_polls, "not before zebra had its quick polls"
    polls = rig.frr.polls
    wait_for(lambda: rig.frr.polls >= polls + 3, 5, "three more polls")
    assert len(rig.events_seen) == 1, "said once, not per poll"
    rig.frr.l3vnis = {"vrf-42": 42}
    wait_for(lambda: len(rig.events_seen) == 2, 5, "the recovery event")
    known = rig.events_seen[1]
    assert (known.reason, known.warning, known.name) == ("VniKnown", False, "vrf-42")


@pytest.mark.parametrize("rig", [(300.0, 0.01)], indirect=True)
def test_quick_polls_are_bounded_when_zebra_never_reports_the_vni(rig: Rig) -> None:
    quick_polls = FrrSection().quick_polls
    rig.actor.tell(snapshot(DOMAIN))
    wait_for(lambda: rig.frr.polls >= quick_polls + 1, 5, "the quick polls")
    settled = rig.frr.polls
    time.sleep(0.2)  # an absence can only be shown by waiting
    assert rig.frr.polls == settled == quick_polls + 1
    assert not any(isinstance(m, VniKnown) for m in rig.netlink_seen)


def test_bgp_sessions_exported(rig: Rig) -> None:
    rig.frr.sessions = {"192.0.2.2": "Established", "192.0.2.3": "Active"}
    rig.actor.tell(snapshot(DOMAIN))

    def gauge(state: str) -> float | None:
        return rig.metrics.registry.get_sample_value("pyroute2_cni_bgp_sessions", {"state": state})

    wait_for(lambda: gauge("Established") == 1 and gauge("Active") == 1, 5, "session gauges")


def test_missing_frr_is_reported_not_crashed(rig: Rig) -> None:
    rig.frr.missing = "/usr/bin/vtysh is missing: install frr"
    rig.actor.tell(snapshot(DOMAIN))
    wait_for(
        lambda: any(isinstance(m, FrrApplyReported) and not m.ok for m in rig.watcher_seen),
        5,
        "failure reported",
    )
    pong = ask_ping(rig, 3)
    assert pong.ready is False and "vtysh is missing" in pong.detail
    assert rig.actor.is_alive()


def test_the_node_state_hears_applies_sessions_and_vnis(rig: Rig) -> None:
    """Issue 19 item 1: what the VRFNodeState shows comes from every apply and poll."""
    rig.frr.sessions = {"192.0.2.2": "Established", "192.0.2.3": "Active"}
    rig.frr.uptimes = {"192.0.2.2": 42.0}
    rig.actor.tell(snapshot(DOMAIN))

    def last(kind: type) -> Any:
        return next((m for m in reversed(list(rig.state_seen)) if isinstance(m, kind)), None)

    wait_for(lambda: last(FrrStateSeen) is not None, 5, "a poll told to the node state")
    applied = last(FrrApplySeen)
    assert applied.applied and applied.reason == "Applied"
    assert applied.config_hash.startswith("sha256:") and len(applied.config_hash) == 23
    seen = last(FrrStateSeen)
    assert seen.answered
    assert seen.sessions == (
        SessionSeen(peer="192.0.2.2", state="Established", uptime=42.0),
        SessionSeen(peer="192.0.2.3", state="Active", uptime=0.0),
    )
    assert seen.expected == (VniSeen(vrf=42, vni=42, kind="l3vni"),)
    assert seen.known == ()
    rig.frr.l3vnis = {"vrf-42": 42}
    wait_for(lambda: last(FrrStateSeen).known == seen.expected, 5, "the VNI known")
    # The apply result is told again with the polls (a restarted NodeStateActor learns it).
    count = sum(isinstance(m, FrrApplySeen) for m in list(rig.state_seen))
    wait_for(
        lambda: sum(isinstance(m, FrrApplySeen) for m in list(rig.state_seen)) > count,
        5,
        "the apply result again",
    )


def _views(rig: Rig) -> list[BgpView]:
    return [m.view for m in list(rig.keeper_seen) if isinstance(m, BgpSessionsSeen)]


def test_sessions_and_uptimes_reach_the_route_keeper(rig: Rig) -> None:
    rig.frr.sessions = {"192.0.2.2": "Established", "192.0.2.3": "Active"}
    rig.frr.uptimes = {"192.0.2.2": 42.0}
    rig.actor.tell(snapshot(DOMAIN))
    wait_for(lambda: _views(rig), 5, "a BGP view for the route keeper")
    view = _views(rig)[-1]
    assert view.answered
    assert view.sessions == {
        "192.0.2.2": PeerSession(state="Established", uptime=42.0),
        "192.0.2.3": PeerSession(state="Active", uptime=0.0),
    }
    assert view.nodes == {"192.0.2.2"}, "the other nodes' VTEPs, for route-reflector mode"

    def established_seconds() -> float | None:
        return rig.metrics.registry.get_sample_value("pyroute2_cni_bgp_established_seconds")

    wait_for(lambda: established_seconds() == 42.0, 5, "what peers read of this node")
    rig.frr.answered = False
    rig.frr.sessions = {}
    wait_for(lambda: not _views(rig)[-1].answered, 5, "a view saying bgpd did not answer")
    wait_for(lambda: established_seconds() == 0.0, 5, "0 while bgpd does not answer")


def test_a_view_is_dated_when_frr_was_asked_not_when_it_answered(rig: Rig) -> None:
    # Under load vtysh answers seconds late: an answer the dead bgpd gave before a kill
    # must not pass for news from after the deletions the kill caused.
    asked: list[float] = []

    def slow_answer() -> None:
        asked.append(time.monotonic())
        threading.Event().wait(0.05)  # FRR answering late, not synchronisation

    rig.frr.while_asked = slow_answer
    rig.frr.sessions = {"192.0.2.2": "Established"}
    rig.actor.tell(snapshot(DOMAIN))
    wait_for(lambda: len(_views(rig)) >= 2, 5, "two BGP views")
    for view in _views(rig):
        assert any(a - 0.05 < view.taken <= a for a in asked), (view.taken, asked)


def test_zebras_uptime_reaches_the_route_keeper_and_the_peers(rig: Rig) -> None:
    rig.frr.zebra_uptime = 12.5
    rig.actor.tell(snapshot(DOMAIN))

    def zebra_uptime() -> float | None:
        return rig.metrics.registry.get_sample_value("pyroute2_cni_frr_zebra_uptime_seconds")

    wait_for(lambda: _views(rig) and _views(rig)[-1].zebra_uptime == 12.5, 5, "in the view")
    wait_for(lambda: zebra_uptime() == 12.5, 5, "what peers read of this node's zebra")
    rig.frr.zebra_uptime = 0.0  # zebra does not answer
    wait_for(lambda: zebra_uptime() == 0.0, 5, "0 while zebra is away")


def test_parse_bgp_uptimes_reads_established_sessions_only() -> None:
    summary = {
        "routerId": "192.0.2.1",
        "peers": {
            "192.0.2.2": {"state": "Established", "peerUptimeMsec": 61500},
            "192.0.2.3": {"state": "Active", "peerUptimeMsec": 0},
        },
    }
    assert parse_bgp_uptimes(summary) == {"192.0.2.2": 61.5}
    assert parse_bgp_uptimes({"l2VpnEvpn": summary}) == {"192.0.2.2": 61.5}
    assert parse_bgp_uptimes(None) == {}


def test_the_real_control_without_frr_says_what_is_missing(tmp_path: Path) -> None:
    control = FrrProcessControl(
        FrrSection(
            vtysh=str(tmp_path / "vtysh"),
            reload_command=str(tmp_path / "frr-reload.py"),
            config_file=str(tmp_path / "frr.conf"),
        )
    )
    check = control.validate("frr defaults datacenter\n")
    assert not check.ok and "frr-reload.py" in check.output
    missing = control.available()
    assert missing is not None
    assert "vtysh is missing or not executable" in missing and "frr-pythontools" in missing
    assert list(tmp_path.iterdir()) == [], "no candidate file left behind"


def restores(rig: Rig, result: str) -> float:
    value = rig.metrics.registry.get_sample_value(
        "pyroute2_cni_frr_restores_total", {"result": result}
    )
    return value or 0.0


def drift(rig: Rig) -> float:
    return rig.metrics.registry.get_sample_value("pyroute2_cni_frr_drift_total") or 0.0


BAD = replace(
    DOMAIN,
    name="vrf-43",
    vrf=43,
    table=43,
    prefix="10.43.0.0",
    attachments=(Attachment(type=AttachmentType.L3VNI, vni=4343),),
)


def test_reload_failing_midway_puts_the_last_good_config_back(rig: Rig) -> None:
    rig.actor.tell(snapshot(DOMAIN))
    wait_for(lambda: rig.frr.reloads == 1, 5, "first reload")
    good = rig.frr.running
    rig.frr.fail_apply_containing = "vni 4343"  # passes --test, fails while applied
    rig.actor.tell(ClusterObjectChanged(kind=ChangeKind.ADDED, obj=BAD))
    wait_for(lambda: restores(rig, "verified") == 1, 5, "restore counted")
    assert rig.frr.restores == [good], "the last good text, not the file FRR-reload wrote"
    assert rig.frr.running == good, "FRR runs the last good configuration, not a mix"
    reports = wait_for(
        lambda: [
            m
            for m in list(rig.watcher_seen)
            if isinstance(m, FrrApplyReported) and m.reason == "ReloadFailed"
        ],
        5,
        "the failure reported",
    )
    report = reports[0]
    assert not report.ok and "last good configuration" in report.message
    assert "VNI is already configured" in report.message
    assert ask_ping(rig, 4).ready, "FRR runs a good configuration: still ready"
    # The input is fixed: the retry applies the new configuration as a whole.
    rig.frr.fail_apply_containing = None
    wait_for(lambda: rig.reloads("ok") == 2, 10, "recovered reload")
    assert rig.frr.running is not None and "vni 4343" in rig.frr.running
    assert "vrf vrf-43\n vni 4343\n" in rig.frr.bindings_loaded[-1]


def test_a_failed_restore_is_reported_and_the_next_apply_is_a_full_one(rig: Rig) -> None:
    rig.actor.tell(snapshot(DOMAIN))
    wait_for(lambda: rig.frr.reloads == 1, 5, "first reload")
    rig.frr.fail_apply_containing = "vni 4343"
    rig.frr.restore_fails = True
    rig.actor.tell(ClusterObjectChanged(kind=ChangeKind.ADDED, obj=BAD))
    wait_for(lambda: restores(rig, "failed") == 1, 5, "failed restore counted")
    wait_for(
        lambda: any(
            isinstance(m, FrrApplyReported) and not m.ok and m.reason == "RestoreFailed"
            for m in rig.watcher_seen
        ),
        5,
        "RestoreFailed reported",
    )
    # Back to the old input: FRR runs an unknown mix, so even the old text is applied
    # again, bindings included.
    rig.frr.fail_apply_containing = None
    rig.frr.restore_fails = False
    rig.actor.tell(ClusterObjectChanged(kind=ChangeKind.DELETED, obj=BAD))
    wait_for(lambda: rig.reloads("ok") == 2, 10, "full apply of the old input")
    assert rig.frr.running is not None and "vni 4343" not in rig.frr.running
    assert "vrf vrf-42\n vni 42\n" in rig.frr.bindings_loaded[-1]


BASE_ONLY = "frr defaults traditional\nservice integrated-vtysh-config\n!\nend\n"


def test_a_daemon_restarted_without_its_config_gets_it_again(rig: Rig) -> None:
    rig.actor.tell(snapshot(DOMAIN))
    wait_for(lambda: rig.frr.reloads == 1, 5, "first reload")
    applied = rig.frr.running
    rig.frr.running = BASE_ONLY  # bgpd and zebra came back empty
    wait_for(lambda: rig.frr.reloads == 2, 5, "applied again")
    assert rig.frr.running == applied
    assert drift(rig) == 1
    assert "vrf vrf-42\n vni 42\n" in rig.frr.bindings_loaded[-1], "zebra lost the bindings"
    # Running what was applied: no more reloads (polls every 0.05 s).
    polls = rig.frr.polls
    wait_for(lambda: rig.frr.polls >= polls + 5, 5, "five more polls")
    assert rig.frr.reloads == 2 and drift(rig) == 1


def test_a_change_by_hand_is_undone_but_a_silent_daemon_is_not_drift(rig: Rig) -> None:
    rig.actor.tell(snapshot(DOMAIN))
    wait_for(lambda: rig.frr.reloads == 1, 5, "first reload")
    applied = rig.frr.running
    assert applied is not None
    rig.frr.answered = False  # restarting: it does not answer, that is no drift
    polls = rig.frr.polls
    wait_for(lambda: rig.frr.polls >= polls + 5, 5, "five more polls")
    assert rig.frr.reloads == 1
    rig.frr.answered = True
    rig.frr.running = applied.replace("router bgp 65000 vrf vrf-42\n", "")  # by hand
    wait_for(lambda: rig.frr.reloads == 2, 5, "applied again")
    assert rig.frr.running == applied and drift(rig) == 1


def test_key_lines_of_a_rendering_are_all_shown_in_it() -> None:
    model = build_frr_config(
        node="n1", asn=65000, domains=[DOMAIN, BAD], node_configs=[], nodes=list(NODES)
    )
    text = render(model)
    assert missing_key_lines(model, text) == []
    assert missing_key_lines(model, BASE_ONLY) == sorted(
        [
            "router bgp 65000",
            "router bgp 65000 / neighbor 192.0.2.2 peer-group fabric",
            "router bgp 65000 vrf vrf-42",
            "router bgp 65000 vrf vrf-43",
            "vrf vrf-42 / vni 42",
            "vrf vrf-43 / vni 4343",
        ]
    )


def test_reload_differences_reads_frr_reload_test_output() -> None:
    assert reload_differences("") == []
    output = (
        "\nLines To Delete\n===============\nno hostname vm\nrouter bgp 65000 vrf vrf-43\n"
        "\nLines To Add\n============\nvrf vrf-42\n vni 42\n"
    )
    assert reload_differences(output) == ["router bgp 65000 vrf vrf-43", "vrf vrf-42", "vni 42"]
