"""The EVPN hold against the kernel: zebra's entries are seen (dump and notifications),
put back when deleted, and the copies go again without touching what zebra re-installed.

"zebra" here is iproute2 writing what zebra writes for a remote VTEP of an l3vni: a
protocol-bgp route in the VRF table, an externally learned router-MAC neighbour on the
bridge and an externally learned FDB entry on the VXLAN device.  Read-back is iproute2 too.
"""

from __future__ import annotations

import contextlib
import queue
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from pyroute2_cni.netlink.evpn_kernel import HOLD_METRIC, EvpnMonitor, KernelEvpn
from pyroute2_cni.values.evpn_hold import (
    FDB,
    NEIGH,
    ROUTE,
    BgpView,
    EvpnEntry,
    EvpnHold,
    PeerSession,
)
from tests.harness.netns import ip, ip_json

pytestmark = pytest.mark.kernel

PEER = "192.168.124.1"
RMAC = "02:00:00:00:00:01"
BLOCK = "10.244.50.128/26"
TABLE = 42


def _zebra_installs(ns: str) -> None:
    ip(
        [
            "neigh",
            "replace",
            PEER,
            "lladdr",
            RMAC,
            "dev",
            "l3br-42",
            "nud",
            "noarp",
            "extern_learn",
        ],
        ns,
    )
    ip(["route", "replace", BLOCK, "via", PEER, "dev", "l3br-42", "onlink", "table", str(TABLE),
        "proto", "bgp", "metric", "20"], ns)  # fmt: skip


def _zebra_fdb(ns: str) -> None:
    # zebra installs a remote MAC twice: on the VXLAN device (self, with the VTEP) and on
    # its bridge port (master); both externally learned.
    _bridge(ns, "fdb", "replace", RMAC, "dev", "l3vx-42", "master", "extern_learn")
    _bridge(ns, "fdb", "replace", RMAC, "dev", "l3vx-42", "dst", PEER, "self", "extern_learn")


def _zebra_fdb_withdrawn(ns: str) -> None:
    _bridge(ns, "fdb", "del", RMAC, "dev", "l3vx-42", "dst", PEER, "self")
    _bridge(ns, "fdb", "del", RMAC, "dev", "l3vx-42", "master")


def _bridge(ns: str, *args: str) -> str:
    return subprocess.run(
        ["/usr/sbin/bridge", "-n", ns, *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout


@pytest.fixture
def node(netns: str) -> str:
    for args in (
        ["link", "add", "vrf-42", "type", "vrf", "table", str(TABLE)],
        ["link", "add", "l3br-42", "type", "bridge"],
        ["link", "set", "l3br-42", "master", "vrf-42"],
        ["link", "add", "ul0", "type", "dummy"],
        ["addr", "add", "192.168.124.2/24", "dev", "ul0"],
        ["link", "add", "l3vx-42", "type", "vxlan", "id", "42", "local", "192.168.124.2",
         "dstport", "4789", "nolearning"],
        ["link", "set", "l3vx-42", "master", "l3br-42"],
    ):  # fmt: skip
        ip(args, netns)
    for dev in ("vrf-42", "l3br-42", "ul0", "l3vx-42"):
        ip(["link", "set", dev, "up"], netns)
    _zebra_installs(netns)
    _zebra_fdb(netns)
    return netns


def _routes(ns: str) -> list[dict[str, Any]]:
    return [r for r in ip_json(["route", "show", "table", str(TABLE)], ns) if r["dst"] == BLOCK]


def _neighbours(ns: str) -> list[dict[str, Any]]:
    return [
        n
        for n in ip_json(["neigh", "show", "dev", "l3br-42", "nud", "all"], ns)
        if n["dst"] == PEER
    ]


def _fdb(ns: str) -> list[str]:
    return [
        line for line in _bridge(ns, "fdb", "show", "dev", "l3vx-42").splitlines() if PEER in line
    ]


def test_dump_sees_what_zebra_installs(node: str) -> None:
    kernel = KernelEvpn(node)
    try:
        entries = {e.kind: e for e in kernel.entries()}
    finally:
        kernel.close()
    assert set(entries) == {ROUTE, NEIGH, FDB}
    assert entries[ROUTE].table == TABLE and entries[ROUTE].dst == BLOCK
    assert entries[ROUTE].vtep == PEER and entries[ROUTE].onlink and entries[ROUTE].owned
    assert entries[NEIGH].lladdr == RMAC and entries[NEIGH].owned
    assert entries[FDB].lladdr == RMAC and entries[FDB].vtep == PEER and entries[FDB].owned


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Feed:
    """The monitor's notifications, handed to ``hold`` until a condition holds."""

    def __init__(self, hold: EvpnHold) -> None:
        self.hold = hold
        self.events: queue.SimpleQueue[tuple[bool, EvpnEntry]] = queue.SimpleQueue()
        self.seen: list[tuple[bool, EvpnEntry]] = []

    def put(self, changes: tuple[tuple[bool, EvpnEntry], ...]) -> None:
        for change in changes:
            self.events.put(change)

    def until(self, done: Any, what: str) -> None:
        for _ in range(200):
            if done():
                return
            try:
                added, entry = self.events.get(timeout=0.05)
            except queue.Empty:
                continue
            self.seen.append((added, entry))
            (self.hold.added if added else self.hold.deleted)(entry)
        raise AssertionError(f"timed out waiting for {what}; events: {self.seen}")


@contextlib.contextmanager
def _hold_watching(node: str) -> Iterator[tuple[EvpnHold, Feed, Clock, KernelEvpn]]:
    """A hold fed by a real monitor on ``node``, after the snapshot, its peer's session
    down (Active): what zebra deletes from now on is held."""
    kernel = KernelEvpn(node)
    clock = Clock()
    hold = EvpnHold(kernel=kernel, clock=clock, probe=lambda _addr: True, regrace=10.0)
    feed = Feed(hold)
    monitor = EvpnMonitor(feed.put, lambda _error: None, netns=node)
    monitor.start()
    try:
        hold.snapshot(kernel.entries())
        clock.now += 1
        hold.bgp(
            BgpView(
                answered=True, taken=clock(), sessions={PEER: PeerSession(state="Active", uptime=0)}
            )
        )
        yield hold, feed, clock, kernel
    finally:
        monitor.close()
        kernel.close()


def test_deleted_entries_come_back_and_the_copies_go(node: str) -> None:
    with _hold_watching(node) as (hold, feed, clock, kernel):
        feed_until = feed.until
        # zebra withdraws everything towards the peer (its session went down).
        ip(["route", "del", BLOCK, "table", str(TABLE), "proto", "bgp", "metric", "20"], node)
        ip(["neigh", "del", PEER, "dev", "l3br-42"], node)
        _zebra_fdb_withdrawn(node)
        feed_until(lambda: len(hold.held) == 3, "three entries held")
        (route,) = _routes(node)
        assert route["metric"] == HOLD_METRIC and route["protocol"] == "kernel"
        assert route["gateway"] == PEER and "onlink" in route["flags"]
        neighbours = _neighbours(node)
        assert len(neighbours) == 1, ip_json(["neigh", "show", "nud", "all"], node)
        assert neighbours[0]["lladdr"] == RMAC
        assert "extern_learn" not in neighbours[0], "a copy is not externally learned"
        assert len(_fdb(node)) == 1 and "extern_learn" not in _fdb(node)[0]

        # Restoring again (a repeated event) changes nothing; one datagram for all three,
        # each acked.
        assert kernel.restore_all(hold.held) == [None, None, None]
        assert len(_routes(node)) == 1 and len(_neighbours(node)) == 1 and len(_fdb(node)) == 1

        # The peer is back: zebra re-installs route, neighbour and FDB entry.  Replacing
        # a VXLAN FDB entry does not set extern_learn on it (no notice either), so the
        # FDB copy stays ours until the regrace; zebra does not install the MAC again
        # if it goes missing, so the release hands the entry over to zebra instead.
        clock.now += 5
        hold.bgp(
            BgpView(
                answered=True,
                taken=clock(),
                sessions={PEER: PeerSession(state="Established", uptime=1)},
            )
        )
        _zebra_installs(node)
        _zebra_fdb(node)

        def relearned() -> bool:
            hold.check()
            return len(hold.held) <= 1

        feed_until(relearned, "route and neighbour re-learned")
        assert [e.kind for e in hold.held] == [FDB]
        protocols = sorted((r["protocol"], r.get("metric", 0)) for r in _routes(node))
        assert protocols == [("bgp", 20)], "our route copy is gone, zebra's stays"
        (neighbour,) = _neighbours(node)
        assert "extern_learn" in neighbour, "zebra's neighbour is left alone"
        clock.now += 11
        hold.check()
        assert hold.held == ()
        assert hold.released == {"re-learned": 2, "peer back": 1}
        (fdb,) = _fdb(node)
        assert "extern_learn" in fdb, f"the FDB copy became zebra's entry: {fdb}"
        assert [r["protocol"] for r in _routes(node)] == ["bgp"]
        assert len(_neighbours(node)) == 1


def test_a_neighbour_zebra_marks_failed_is_replaced_by_the_copy_at_once(node: str) -> None:
    """zebra marks a router MAC's neighbour FAILED before it deletes it (up to 30 ms
    later on a busy node); packets queued on the FAILED entry go with it.  The copy
    replaces the FAILED entry at once (its queue is sent when it turns valid)."""
    with _hold_watching(node) as (hold, feed, _clock, _kernel):
        ip(["neigh", "change", PEER, "dev", "l3br-42", "nud", "failed"], node)
        feed.until(lambda: [e.kind for e in hold.held] == [NEIGH], "the neighbour held")
        (neighbour,) = _neighbours(node)
        assert neighbour["lladdr"] == RMAC and "NOARP" in neighbour["state"], neighbour
        assert "extern_learn" not in neighbour, "the FAILED entry was replaced by the copy"
        # zebra's deletion that follows takes the copy; it is put back again.
        ip(["neigh", "del", PEER, "dev", "l3br-42"], node)
        feed.until(lambda: len(_neighbours(node)) == 1, "the copy back after the deletion")
        assert [e.kind for e in hold.held] == [NEIGH]


def test_an_fdb_copy_zebra_no_longer_wants_goes_and_one_it_wants_stays(node: str) -> None:
    """Releasing an FDB copy: deleted when zebra has no entry for the MAC on the bridge
    port (the peer is gone), left as zebra's own entry when it has (issue 15: a peer's
    router MAC vanished after an FRR restart and the node stayed unreachable)."""
    kernel = KernelEvpn(node)
    try:
        (zebras,) = [e for e in kernel.entries() if e.kind == FDB]
        (as_zebra_wrote,) = _fdb(node)
        _zebra_fdb_withdrawn(node)
        assert kernel.restore_all([zebras]) == [None]
        (copy,) = _fdb(node)
        assert "extern_learn" not in copy
        kernel.release(zebras)
        assert _fdb(node) == [], "no master entry: the peer's MAC is gone, so is the copy"

        assert kernel.restore_all([zebras]) == [None]
        _zebra_fdb(node)  # zebra re-installs: the kernel keeps our copy as it was
        assert "extern_learn" not in _fdb(node)[0]
        kernel.release(zebras)
        (fdb,) = _fdb(node)
        assert fdb == as_zebra_wrote
        kernel.release(zebras)  # zebra's now: a second release leaves it alone
        assert _fdb(node) == [fdb]
    finally:
        kernel.close()


def test_copies_a_stopped_instance_left_are_found_and_removed(node: str) -> None:
    kernel = KernelEvpn(node)
    fresh = KernelEvpn(node)  # the next instance, after the first stopped mid-hold
    try:
        zebras = kernel.entries()
        assert sorted(e.kind for e in zebras) == sorted([ROUTE, NEIGH, FDB])
        ip(["route", "del", BLOCK, "table", str(TABLE), "proto", "bgp", "metric", "20"], node)
        ip(["neigh", "del", PEER, "dev", "l3br-42"], node)
        _zebra_fdb_withdrawn(node)
        # One datagram: a bad entry in it fails alone, the others are put back.
        gone = EvpnEntry(kind=NEIGH, vtep=PEER, ifindex=999999, dst="192.0.2.99", lladdr=RMAC)
        errors = kernel.restore_all([*zebras, gone])
        assert errors[:-1] == [None] * len(zebras), errors
        assert isinstance(errors[-1], OSError) and "192.0.2.99" in str(errors[-1]), errors
        # zebra's flood entry towards another VTEP is not a copy of ours.
        flood = ["00:00:00:00:00:00", "dev", "l3vx-42", "dst", "192.168.124.9", "self"]
        _bridge(node, "fdb", "append", *flood, "permanent")

        copies = [e for e in fresh.entries() if not e.owned]
        assert sorted(e.kind for e in copies) == sorted([ROUTE, NEIGH, FDB]), copies
        assert {e.key for e in copies} == {e.key for e in zebras}
        for entry in copies:
            fresh.release(entry)
        assert _routes(node) == [] and _neighbours(node) == [] and _fdb(node) == []
        assert "192.168.124.9" in _bridge(node, "fdb", "show", "dev", "l3vx-42")
        assert [e for e in fresh.entries() if not e.owned] == []
    finally:
        kernel.close()
        fresh.close()
