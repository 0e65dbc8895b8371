"""RouteKeeperActor with a fake kernel and monitor: start-up clean-up, events, metrics."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from prometheus_client import generate_latest

from pyroute2_cni.actors.base import ActorHooks
from pyroute2_cni.actors.route_keeper_actor import RouteKeeperActor, peer_session_from_metrics
from pyroute2_cni.config import FrrSection, Settings
from pyroute2_cni.evpn_hold import FDB, NEIGH, ROUTE, BgpView, EvpnEntry, PeerSession
from pyroute2_cni.messages.base import Ok
from pyroute2_cni.messages.evpn import BgpSessionsSeen, CheckHeld, EvpnChanged
from pyroute2_cni.metrics import Metrics
from tests.harness.waiting import wait_for

pytestmark = pytest.mark.unit

PEER = "192.0.2.1"
ZEBRA_ROUTE = EvpnEntry(kind=ROUTE, vtep=PEER, table=42, dst="10.244.1.0/26", onlink=True)
LEFTOVER = EvpnEntry(kind=ROUTE, vtep=PEER, table=42, dst="10.244.9.0/26", owned=False)
RMAC = "02:00:00:00:00:09"
LEFTOVER_NEIGH = EvpnEntry(kind=NEIGH, vtep=PEER, ifindex=7, dst=PEER, lladdr=RMAC, owned=False)
LEFTOVER_FDB = EvpnEntry(kind=FDB, vtep=PEER, ifindex=8, lladdr=RMAC, owned=False)
ZEBRA_NEIGH = EvpnEntry(kind=NEIGH, vtep="192.0.2.7", ifindex=7, dst="192.0.2.7", lladdr=RMAC)


class FakeKernel:
    def __init__(self, entries: list[EvpnEntry]) -> None:
        self.present = {e.key: e for e in entries}
        self.closed = False

    def entries(self) -> list[EvpnEntry]:
        return list(self.present.values())

    def restore(self, entry: EvpnEntry) -> None:
        self.present[entry.key] = EvpnEntry(**{**_fields(entry), "owned": False})

    def release(self, entry: EvpnEntry) -> None:
        if not self.present.get(entry.key, entry).owned:
            self.present.pop(entry.key, None)

    def close(self) -> None:
        self.closed = True


def _fields(entry: EvpnEntry) -> dict[str, Any]:
    return {name: getattr(entry, name) for name in EvpnEntry.__slots__}


class FakeMonitor:
    def __init__(self, on_event: Callable[[bool, EvpnEntry], None], on_lost: Callable[[str], None]):
        self.on_event = on_event
        self.on_lost = on_lost
        self.started = self.closed = False

    def start(self) -> None:
        self.started = True

    def close(self) -> None:
        self.closed = True


class Rig:
    def __init__(self, hold: float = 120.0) -> None:
        self.kernel = FakeKernel([ZEBRA_ROUTE, LEFTOVER, LEFTOVER_NEIGH, LEFTOVER_FDB, ZEBRA_NEIGH])
        self.monitors: list[FakeMonitor] = []
        self.metrics = Metrics()
        self.crashes: list[BaseException | None] = []

        def monitor(on_event: Any, on_lost: Any) -> FakeMonitor:
            self.monitors.append(FakeMonitor(on_event, on_lost))
            return self.monitors[-1]

        self.ref = RouteKeeperActor.start(
            ActorHooks(
                name="route-keeper",
                generation=1,
                on_crash=lambda _name, _gen, exc: self.crashes.append(exc),
            ),
            settings=Settings(frr=FrrSection(evpn_hold=hold)),
            kernel_factory=lambda: self.kernel,
            monitor_factory=monitor,
            probe=lambda _address: True,
            metrics=self.metrics,
        )

    def ask(self, message: Any) -> Any:
        return self.ref.ask(message, timeout=5)

    def held(self) -> float:
        return self.metrics.registry.get_sample_value("pyroute2_cni_evpn_held_entries") or 0.0


@pytest.fixture
def rig() -> Iterator[Rig]:
    rig = Rig()
    yield rig
    rig.ref.stop()


def test_start_removes_leftover_copies_and_keeps_zebras_routes(rig: Rig) -> None:
    assert isinstance(rig.ask(CheckHeld()), Ok)
    # Route, neighbour and FDB copies go; zebra's own entries stay.
    assert set(rig.kernel.present) == {ZEBRA_ROUTE.key, ZEBRA_NEIGH.key}
    assert rig.monitors and rig.monitors[0].started


def test_a_deleted_route_of_an_away_peer_is_held_and_counted(rig: Rig) -> None:
    view = BgpView(answered=True, taken=0.0, sessions={PEER: PeerSession(state="Active", uptime=0)})
    rig.ask(BgpSessionsSeen(view=view))
    rig.kernel.present.pop(ZEBRA_ROUTE.key)  # zebra deletes it ...
    rig.ask(EvpnChanged(added=False, entry=ZEBRA_ROUTE))  # ... and the monitor says so
    assert ZEBRA_ROUTE.key in rig.kernel.present
    assert not rig.kernel.present[ZEBRA_ROUTE.key].owned
    assert rig.held() == 1.0


def test_stop_closes_monitor_and_kernel(rig: Rig) -> None:
    rig.ref.stop()
    assert rig.monitors[0].closed and rig.kernel.closed


def test_hold_zero_opens_nothing() -> None:
    rig = Rig(hold=0)
    try:
        assert isinstance(rig.ask(CheckHeld()), Ok)
        assert rig.monitors == [] and len(rig.kernel.present) == 5, "nothing touched"
    finally:
        rig.ref.stop()


def test_the_lab_knows_the_copies_metric() -> None:
    from pyroute2_cni import evpn_kernel
    from tests.harness import lab

    assert lab.HOLD_METRIC == evpn_kernel.HOLD_METRIC


def test_a_failed_monitor_fails_the_actor_for_a_restart(rig: Rig) -> None:
    rig.monitors[0].on_lost("reading netlink notifications: [Errno 9] Bad file descriptor")
    wait_for(lambda: rig.crashes, 5, "the crash reported to the supervisor")
    assert "EVPN monitor failed" in str(rig.crashes[0])
    assert rig.monitors[0].closed and rig.kernel.closed


def test_an_overrun_reads_the_kernel_again(rig: Rig) -> None:
    extra = EvpnEntry(kind=ROUTE, vtep=PEER, table=42, dst="10.244.2.0/26")
    rig.kernel.present[extra.key] = extra
    rig.monitors[0].on_lost("")
    view = BgpView(answered=True, taken=0.0, sessions={PEER: PeerSession(state="Active", uptime=0)})
    rig.ask(BgpSessionsSeen(view=view))
    rig.kernel.present.pop(extra.key)
    rig.ask(EvpnChanged(added=False, entry=extra))
    assert extra.key in rig.kernel.present, "known from the re-read, so held"


def test_a_peers_bgp_view_is_read_from_its_metrics() -> None:
    peer = Metrics()
    peer.bgp_established_seconds.set(42.5)
    text = generate_latest(peer.registry).decode()
    assert peer_session_from_metrics(text) == PeerSession(state="Established", uptime=42.5)
    peer.bgp_established_seconds.set(0)
    text = generate_latest(peer.registry).decode()
    assert peer_session_from_metrics(text) == PeerSession(state="Down", uptime=0.0)
    assert peer_session_from_metrics("# an older daemon says nothing about it\n") is None
    assert peer_session_from_metrics("not prometheus {{{") is None
