"""EvpnHold: which of a peer's EVPN entries are put back, and when they go."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import replace

import pytest

from pyroute2_cni.values.evpn_hold import (
    FDB,
    NEIGH,
    REGRACE_LIMIT,
    ROUTE,
    ZEBRA_RESTART_WINDOW,
    BgpView,
    EvpnEntry,
    EvpnHold,
    PeerSession,
)

pytestmark = pytest.mark.unit

PEER = "192.168.124.1"
OTHER = "192.168.124.3"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class RecordingKernel:
    """The kernel as a set of copies: restore adds, release removes."""

    def __init__(self) -> None:
        self.copies: dict[tuple[object, ...], EvpnEntry] = {}
        self.fail_restore = False
        self.fail_kinds: set[str] = set()
        self.batches: list[list[str]] = []  # the kinds restored, per call

    def restore(self, entry: EvpnEntry) -> None:
        self.restore_all([entry])

    def restore_all(self, entries: Sequence[EvpnEntry]) -> list[OSError | None]:
        self.batches.append([e.kind for e in entries])
        errors: list[OSError | None] = []
        for entry in entries:
            if self.fail_restore or entry.kind in self.fail_kinds:
                errors.append(OSError(19, "No such device"))
                continue
            self.copies[entry.key] = entry
            errors.append(None)
        return errors

    def release(self, entry: EvpnEntry) -> None:
        self.copies.pop(entry.key, None)


def route(vtep: str = PEER, dst: str = "10.244.50.128/26") -> EvpnEntry:
    return EvpnEntry(kind=ROUTE, vtep=vtep, table=10042, dst=dst, ifindex=5, onlink=True)


def neigh(vtep: str = PEER) -> EvpnEntry:
    return EvpnEntry(kind=NEIGH, vtep=vtep, ifindex=5, dst=vtep, lladdr="02:00:00:00:00:01")


def fdb(vtep: str = PEER) -> EvpnEntry:
    return EvpnEntry(kind=FDB, vtep=vtep, ifindex=6, lladdr="02:00:00:00:00:01")


class Rig:
    def __init__(self, alive: bool = True) -> None:
        self.clock = FakeClock()
        self.kernel = RecordingKernel()
        self.alive = {PEER: alive, OTHER: alive}
        self.probed: list[str] = []
        self.peer_zebra: float | None = None  # the peer's zebra uptime, as its daemon says
        self.hold = EvpnHold(
            kernel=self.kernel,
            clock=self.clock,
            probe=self.probe,
            remote=self.remote,
            hold=120.0,
            regrace=10.0,
        )
        self.entries = [route(), neigh(), fdb(), route(OTHER, "10.244.214.192/26")]
        self.hold.snapshot(self.entries)
        self.sessions(PEER="Established", OTHER="Established", uptime=3600.0)

    def probe(self, address: str) -> bool:
        self.probed.append(address)
        return self.alive[address]

    def remote(self, _address: str) -> PeerSession:
        return PeerSession(state="Established", uptime=3600.0, zebra_uptime=self.peer_zebra)

    def sessions(
        self,
        *,
        uptime: float = 0.0,
        answered: bool = True,
        zebra: float | None = None,
        **states: str,
    ) -> None:
        self.clock.now += 0.1  # a report taken after what happened before it
        names = {"PEER": PEER, "OTHER": OTHER}
        view = {
            names[k]: PeerSession(state=v, uptime=uptime if v == "Established" else 0.0)
            for k, v in states.items()
        }
        self.hold.bgp(
            BgpView(answered=answered, taken=self.clock.now, sessions=view, zebra_uptime=zebra)
        )

    def both_up_long(self, zebra: float | None) -> None:
        """A report of both sessions up for an hour (our zebra as ``zebra``), then a check."""
        self.sessions(PEER="Established", OTHER="Established", uptime=3600.0, zebra=zebra)
        self.tick()

    def withdraw_peer(self) -> None:
        for entry in self.entries[:3]:
            self.hold.deleted(entry)

    def tick(self, seconds: float = 1.0) -> None:
        self.clock.now += seconds
        self.hold.check()


def test_deleted_entries_of_a_peer_are_put_back_at_once() -> None:
    rig = Rig()
    rig.withdraw_peer()
    assert set(rig.kernel.copies) == {e.key for e in rig.entries[:3]}
    assert rig.hold.restored == 3


def test_copies_and_unknown_neighbours_are_not_held() -> None:
    rig = Rig()
    # Our own copy going away, and a pod's neighbour (not a BGP peer).
    rig.hold.deleted(EvpnEntry(kind=ROUTE, vtep=PEER, table=1, dst="10.0.0.0/24", owned=False))
    rig.hold.deleted(neigh("10.244.37.7"))
    assert rig.kernel.copies == {}


def test_no_hold_before_any_bgp_report() -> None:
    rig = Rig()
    fresh = EvpnHold(kernel=rig.kernel, clock=rig.clock, probe=rig.probe)
    fresh.snapshot(rig.entries)
    fresh.deleted(route())
    assert rig.kernel.copies == {}


def test_a_withdrawal_while_the_session_stays_up_is_released() -> None:
    rig = Rig()
    rig.hold.deleted(route())
    rig.tick()
    assert rig.kernel.copies != {}, "a report older than the deletion decides nothing"
    rig.sessions(PEER="Established", OTHER="Established", uptime=3600.0)
    rig.tick()
    rig.tick(5.0)
    assert rig.kernel.copies != {}, "the session may still go down (peer's bgpd lost zebra)"
    rig.tick(5.0)
    assert rig.kernel.copies == {}
    assert rig.hold.released == {"withdrawn by the peer": 1}


def test_a_withdrawal_while_both_zebras_run_on_is_released() -> None:
    rig = Rig()
    rig.peer_zebra = 7200.0
    rig.withdraw_peer()
    for _ in range(12):
        rig.both_up_long(7200.0)
    assert rig.kernel.copies == {}
    assert rig.hold.released == {"withdrawn by the peer": 3}


@pytest.mark.parametrize("zebra", [0.0, 2.0], ids=["away", "just-started"])
def test_our_zebra_restarting_holds_until_it_relearns_with_the_session_up(zebra: float) -> None:
    """zebra swept the previous instance's routes at its start (bgpd and its sessions
    ran on): held past the confirmation, released as zebra installs them again."""
    rig = Rig()
    rig.withdraw_peer()
    for _ in range(40):
        rig.both_up_long(zebra)
        zebra = zebra + 1.0 if zebra else 0.0
    assert len(rig.kernel.copies) == 3, "the session stayed up, yet zebra has not re-learned"
    rig.hold.added(route())
    rig.tick()
    assert route().key not in rig.kernel.copies, "zebra's route is back: our copy goes"
    assert rig.hold.held == (), "the neighbour and FDB entry go with the last route held"
    assert "withdrawn by the peer" not in rig.hold.released


def test_a_peer_whose_zebra_restarts_is_held_until_its_routes_are_back() -> None:
    rig = Rig()
    rig.withdraw_peer()
    rig.peer_zebra = 0.0  # its bgpd withdrew when its zebra went
    for step in range(40):
        if step == 8:
            rig.peer_zebra = 1.0  # watchfrr started it again
        elif rig.peer_zebra:
            rig.peer_zebra += 1.0
        rig.both_up_long(7200.0)
    assert len(rig.kernel.copies) == 3
    rig.hold.added(route(PEER, "10.244.51.0/26"))  # the peer advertises its VRF again
    rig.tick()
    assert rig.hold.held == ()
    assert rig.hold.released == {"peer back": 3}


def test_a_zebra_restart_is_held_no_longer_than_the_hold_time() -> None:
    rig = Rig()
    rig.withdraw_peer()
    for _ in range(125):
        rig.both_up_long(0.0)
    assert rig.kernel.copies == {}
    assert rig.hold.released == {"hold time over": 3}


def test_a_zebra_started_long_before_the_withdrawal_proves_no_restart() -> None:
    rig = Rig()
    rig.peer_zebra = ZEBRA_RESTART_WINDOW + 20.0
    rig.withdraw_peer()
    for _ in range(12):
        rig.peer_zebra += 1.0
        rig.both_up_long(3600.0)
    assert rig.kernel.copies == {}


def test_withdrawal_then_session_loss_is_a_restart() -> None:
    rig = Rig()
    rig.withdraw_peer()
    rig.sessions(PEER="Established", OTHER="Established", uptime=3600.0)
    rig.tick(3.0)
    rig.sessions(PEER="Active", OTHER="Established", uptime=3600.0)
    for _ in range(15):
        rig.tick()
    assert len(rig.kernel.copies) == 3


def test_held_while_the_peer_restarts_then_released_when_relearned() -> None:
    rig = Rig()
    rig.withdraw_peer()
    for _ in range(5):
        rig.sessions(PEER="Active", OTHER="Established", uptime=3600.0)
        rig.tick()
        assert len(rig.kernel.copies) == 3
    assert rig.probed == [PEER] * 5
    # Session back: zebra re-installs the route and the neighbour first.
    rig.sessions(PEER="Established", OTHER="Established", uptime=1.0)
    rig.hold.added(route())
    rig.hold.added(neigh())
    rig.tick()
    assert {e.key for e in rig.hold.held} == {fdb().key}
    assert route().key not in rig.kernel.copies, "our route copy goes; zebra's route is back"
    rig.hold.added(fdb())
    rig.tick()
    assert rig.hold.held == ()
    assert rig.hold.released == {"re-learned": 3}


def _new_instance_with_copies_left() -> tuple[Rig, list[EvpnEntry]]:
    """A daemon started after its pod was replaced: the old one held the router MAC and
    the FDB entry its zebra took on the way out; the new zebra kept the route (--retain)."""
    rig = Rig()
    left = [dataclasses.replace(neigh(), owned=False), dataclasses.replace(fdb(), owned=False)]
    rig.kernel.copies = {e.key: e for e in left}
    rig.hold.snapshot([route(), route(OTHER, "10.244.214.192/26")])
    rig.hold.adopt([route(), *left])
    return rig, left


def test_copies_a_previous_instance_left_are_held_until_zebra_relearns_them() -> None:
    rig, left = _new_instance_with_copies_left()
    assert {e.key for e in rig.hold.held} == {e.key for e in left}, "zebra's route is no copy"
    for _ in range(5):  # our new bgpd answers, not configured yet: no sessions
        rig.sessions()
        rig.tick()
        assert set(rig.kernel.copies) == {e.key for e in left}
    rig.sessions(PEER="Established", OTHER="Established", uptime=1.0)
    for entry in (neigh(), fdb()):  # zebra's replace lands on our copies
        rig.kernel.copies[entry.key] = entry
        rig.hold.added(entry)
    rig.tick()
    assert rig.hold.held == ()
    assert rig.hold.released == {"re-learned": 2}
    assert set(rig.kernel.copies) == {neigh().key, fdb().key}, "zebra's entries stay"


def test_copies_a_previous_instance_left_go_after_the_hold_time() -> None:
    rig, _left = _new_instance_with_copies_left()
    rig.sessions()
    rig.tick(60)
    assert len(rig.hold.held) == 2
    rig.tick(61)
    assert rig.kernel.copies == {}
    assert rig.hold.released == {"hold time over": 2}


def test_a_neighbour_zebra_owns_again_is_not_deleted() -> None:
    rig = Rig()
    rig.withdraw_peer()
    rig.kernel.copies[neigh().key] = neigh()  # zebra's replace landed on our copy
    rig.sessions(PEER="Established", OTHER="Established", uptime=0.5)
    rig.hold.added(neigh())
    rig.tick()
    assert neigh().key in rig.kernel.copies


def test_whatever_is_not_relearned_goes_after_the_regrace() -> None:
    rig = Rig()
    rig.withdraw_peer()
    rig.sessions(PEER="Established", OTHER="Established", uptime=0.5)
    rig.tick()
    assert len(rig.kernel.copies) == 3
    # The peer advertises again: zebra has another route of the VRF and its router MAC back.
    rig.hold.added(route(PEER, "10.244.51.0/26"))
    rig.hold.added(neigh())
    rig.tick(9.0)
    rig.tick(2.0)
    assert rig.kernel.copies == {neigh().key: neigh()}, "zebra's neighbour stays"
    assert rig.hold.released == {"re-learned": 1, "peer back": 2}


def test_a_peer_back_that_advertises_nothing_yet_is_held_a_few_regraces() -> None:
    """Issue 15: a bgpd restarted by watchfrr had its session up again 10 s before its
    routes came, and the released copies cost echoes.  The copies stay until zebra
    re-learns something of the peer, at most REGRACE_LIMIT regraces."""
    rig = Rig()
    # A route of the peer's other VRF that zebra keeps all along is no sign of its return.
    rig.hold.added(route(PEER, "10.1.86.0/26"))
    rig.tick()
    rig.withdraw_peer()
    rig.sessions(PEER="Established", OTHER="Established", uptime=0.5)
    rig.tick()
    rig.tick(REGRACE_LIMIT * 10.0 - 2.0)
    assert len(rig.kernel.copies) == 3, "a session up is not routes back"
    rig.tick(2.0)
    assert rig.kernel.copies == {}
    assert rig.hold.released == {"peer back": 3}


def test_what_another_vrf_of_the_peer_relearns_is_no_evidence() -> None:
    """Issue 15: lab-n2 released lab-n1's VRF 42 copies as "peer back" because a route
    of lab-n1's other VRF was back, before the restarted bgpd advertised VRF 42: 9 echoes
    lost.  A route goes once a route of its own table is back; the router MAC's
    neighbour and FDB entry once no route of the peer is held."""
    rig = Rig()
    rig.withdraw_peer()
    rig.sessions(PEER="Established", OTHER="Established", uptime=0.5)
    rig.tick()
    rig.hold.added(replace(route(PEER, "10.1.86.0/26"), table=10200))
    rig.hold.added(replace(fdb(), ifindex=9, lladdr="02:00:00:00:00:09"))
    rig.tick(11.0)
    assert len(rig.kernel.copies) == 3, "nothing of VRF 42 is back yet"
    rig.hold.added(route(PEER, "10.244.51.0/26"))
    rig.tick()
    assert rig.kernel.copies == {}
    assert rig.hold.released == {"peer back": 3}


def test_a_dead_peer_is_released_once_silent_for_seconds() -> None:
    rig = Rig(alive=False)
    rig.withdraw_peer()
    rig.sessions(PEER="Connect", OTHER="Established", uptime=3600.0)
    rig.tick()
    assert len(rig.kernel.copies) == 3, "one unanswered probe is not enough"
    rig.tick(3.0)
    assert rig.kernel.copies == {}
    assert rig.hold.released == {"peer daemon not answering": 3}


def test_released_when_the_hold_time_is_over() -> None:
    rig = Rig()
    rig.withdraw_peer()
    rig.sessions(PEER="Active", OTHER="Established", uptime=3600.0)
    rig.tick(60)
    assert len(rig.kernel.copies) == 3
    rig.tick(61)
    assert rig.kernel.copies == {}
    assert rig.hold.released == {"hold time over": 3}


def test_a_peer_missing_from_a_fresh_bgpd_is_probed_not_dropped() -> None:
    rig = Rig()
    rig.withdraw_peer()
    rig.sessions()  # our bgpd has just restarted: it answers, with no neighbours yet
    rig.tick()
    assert len(rig.kernel.copies) == 3
    rig.alive[PEER] = False
    rig.tick()
    rig.tick(3.0)
    assert rig.kernel.copies == {}
    assert rig.hold.released == {"peer daemon not answering": 3}


def test_an_empty_answer_keeps_the_peers() -> None:
    rig = Rig()
    rig.sessions()
    rig.withdraw_peer()
    assert len(rig.kernel.copies) == 3


def test_own_frr_away_holds_while_the_peer_answers() -> None:
    rig = Rig()
    rig.withdraw_peer()
    rig.sessions(answered=False)
    rig.tick()
    assert len(rig.kernel.copies) == 3
    rig.alive[PEER] = False
    rig.tick()
    rig.tick(3.0)
    assert rig.kernel.copies == {}


def test_a_failed_restore_is_not_held() -> None:
    rig = Rig()
    rig.kernel.fail_restore = True
    rig.hold.deleted(route())
    assert rig.hold.held == ()


def test_hold_zero_turns_it_off() -> None:
    rig = Rig()
    off = EvpnHold(kernel=rig.kernel, clock=rig.clock, probe=rig.probe, hold=0)
    off.snapshot(rig.entries)
    off.bgp(
        BgpView(answered=True, taken=0.0, sessions={PEER: PeerSession(state="Active", uptime=0.0)})
    )
    off.deleted(route())
    assert rig.kernel.copies == {}


# -- route-reflector mode: the peer is a node, not our BGP neighbour ------------------

REFLECTOR = "192.168.124.254"


class ReflectorRig:
    """This node peers only with a reflector; PEER is another node whose daemon is asked."""

    def __init__(self) -> None:
        self.clock = FakeClock()
        self.kernel = RecordingKernel()
        self.remote_view: PeerSession | None = PeerSession(state="Established", uptime=3600.0)
        self.asked: list[str] = []
        self.hold = EvpnHold(
            kernel=self.kernel,
            clock=self.clock,
            probe=lambda _address: True,
            remote=self.remote,
            regrace=10.0,
        )
        self.entries = [route(), neigh(), fdb()]
        self.hold.snapshot(self.entries)
        self.report()

    def remote(self, address: str) -> PeerSession | None:
        self.asked.append(address)
        return self.remote_view

    def report(self) -> None:
        self.clock.now += 0.1
        sessions = {REFLECTOR: PeerSession(state="Established", uptime=7200.0)}
        view = BgpView(
            answered=True, taken=self.clock.now, sessions=sessions, nodes=frozenset({PEER})
        )
        self.hold.bgp(view)

    def tick(self, seconds: float = 1.0) -> None:
        self.clock.now += seconds
        self.report()
        self.hold.check()


def test_reflector_mode_holds_a_node_that_is_no_neighbour_while_its_frr_restarts() -> None:
    rig = ReflectorRig()
    for entry in rig.entries:
        rig.hold.deleted(entry)
    assert len(rig.kernel.copies) == 3, "held although PEER is not our BGP neighbour"
    rig.remote_view = PeerSession(state="Down", uptime=0.0)  # its bgpd is away
    for _ in range(20):
        rig.tick()
    assert len(rig.kernel.copies) == 3
    assert set(rig.asked) == {PEER}
    # Its sessions (to the reflector) are up again: released after the regrace.
    rig.remote_view = PeerSession(state="Established", uptime=1.0)
    rig.tick()
    rig.hold.added(route())
    rig.tick()
    assert route().key not in rig.kernel.copies
    for _ in range(10):
        rig.tick()
    assert rig.kernel.copies == {}
    assert rig.hold.released == {"re-learned": 1, "peer back": 2}


def test_reflector_mode_a_real_withdrawal_goes_after_the_confirmation() -> None:
    rig = ReflectorRig()
    rig.hold.deleted(route())
    for _ in range(9):
        rig.tick()
    assert rig.kernel.copies != {}, "its sessions may still go down"
    rig.tick(2.0)
    assert rig.kernel.copies == {}
    assert rig.hold.released == {"withdrawn by the peer": 1}


def test_reflector_mode_a_node_whose_daemon_is_silent_is_released() -> None:
    rig = ReflectorRig()
    rig.hold.deleted(route())
    rig.remote_view = None
    rig.tick()
    rig.tick(3.0)
    assert rig.kernel.copies == {}
    assert rig.hold.released == {"peer daemon not answering": 1}


def test_reflector_mode_leaves_addresses_that_are_no_node_alone() -> None:
    rig = ReflectorRig()
    rig.hold.deleted(neigh("10.244.37.7"))
    assert rig.kernel.copies == {}


# -- a slow answer is not a dead node --------------------------------------------------


def test_reflector_mode_one_unanswered_probe_keeps_the_copies() -> None:
    rig = ReflectorRig()
    for entry in rig.entries:
        rig.hold.deleted(entry)
    rig.remote_view = None  # its /metrics did not answer in time (a busy node)
    rig.tick()
    assert len(rig.kernel.copies) == 3, "one missed answer is no proof the node is gone"
    rig.remote_view = PeerSession(state="Down", uptime=0.0)
    rig.tick()
    rig.remote_view = None
    rig.tick()
    assert len(rig.kernel.copies) == 3, "an answer in between starts the count again"
    assert rig.hold.released == {}


def test_reflector_mode_a_node_silent_for_seconds_is_released() -> None:
    rig = ReflectorRig()
    rig.hold.deleted(route())
    rig.remote_view = None
    rig.tick()
    rig.tick()
    assert rig.kernel.copies != {}
    for _ in range(3):
        rig.tick()
    assert rig.kernel.copies == {}
    assert rig.hold.released == {"peer daemon not answering": 1}


def test_full_mesh_one_failed_probe_keeps_the_copies() -> None:
    rig = Rig()
    rig.withdraw_peer()
    rig.sessions(PEER="Active", OTHER="Established", uptime=3600.0)
    rig.alive[PEER] = False
    rig.tick()
    assert len(rig.kernel.copies) == 3
    rig.alive[PEER] = True
    rig.tick()
    assert len(rig.kernel.copies) == 3
    assert rig.hold.released == {}


# -- a burst of changes: one kernel exchange, routes first ------------------------------


def test_a_withdrawal_burst_is_restored_in_one_call_routes_first() -> None:
    rig = Rig()
    # zebra's order: the remote MAC and the neighbour go before the route.
    rig.hold.changed([(False, fdb()), (False, neigh()), (False, route())])
    assert rig.kernel.batches == [[ROUTE, NEIGH, FDB]]
    assert len(rig.hold.held) == 3


def test_an_entry_zebra_puts_back_within_the_burst_is_not_restored() -> None:
    rig = Rig()
    rig.hold.changed([(False, route()), (True, route()), (False, neigh())])
    assert rig.kernel.batches == [[NEIGH]]
    assert [e.kind for e in rig.hold.held] == [NEIGH]


def test_a_failed_entry_in_a_burst_leaves_the_others_held() -> None:
    rig = Rig()
    rig.kernel.fail_kinds = {NEIGH}
    rig.hold.changed([(False, neigh()), (False, route()), (False, fdb())])
    assert sorted(e.kind for e in rig.hold.held) == sorted([ROUTE, FDB])
    assert rig.hold.restored == 2


def test_a_held_entry_deleted_again_is_put_back_again() -> None:
    """Back-to-back restarts (the reflector restarts again within the regrace): zebra
    re-installed the entries over our copies -- the FDB entry without any notice -- and
    deletes them again before the copies were released."""
    rig = ReflectorRig()
    rig.remote_view = PeerSession(state="Down", uptime=0.0)
    rig.hold.changed([(False, e) for e in rig.entries])
    rig.tick()
    # Back: zebra re-installs route and neighbour (noticed) and the FDB entry (silently,
    # over our copy).  Its sessions are up again.
    rig.remote_view = PeerSession(state="Established", uptime=1.0)
    rig.hold.changed([(True, route()), (True, neigh())])
    rig.tick()
    assert [e.kind for e in rig.hold.held] == [FDB], "the FDB copy waits for the regrace"
    # Away again: zebra deletes what it has, the FDB entry included (our copy is gone).
    rig.kernel.copies.pop(fdb().key)
    rig.remote_view = PeerSession(state="Down", uptime=0.0)
    rig.hold.changed([(False, fdb()), (False, neigh()), (False, route())])
    assert set(rig.kernel.copies) == {e.key for e in rig.entries}, "all three back"
    assert rig.kernel.batches[-1] == [ROUTE, NEIGH, FDB]
    # The earlier regrace does not release the fresh hold while the node is away.
    for _ in range(12):
        rig.tick()
    assert len(rig.kernel.copies) == 3
