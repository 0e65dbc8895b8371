"""The reclaimer (pure): Lease election on our own clock, and the look for deleted Nodes."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

import pytest

from pyroute2_cni.ipam.blocks import Block, new_block
from pyroute2_cni.ipam.lease import (
    LEASE_NAME,
    ForeignScan,
    LeaseElection,
    LeaseRecord,
    lease_duration,
)
from pyroute2_cni.runtime.config import IpamSection

pytestmark = pytest.mark.unit

NS = "pyroute2-cni"
DURATION = 30


def election(node: str = "n1") -> LeaseElection:
    return LeaseElection(node=node, namespace=NS, duration=DURATION)


def lease(holder: str, version: str = "1", transitions: int = 0) -> LeaseRecord:
    return LeaseRecord(
        namespace=NS,
        name=LEASE_NAME,
        holder=holder,
        duration_seconds=DURATION,
        transitions=transitions,
        resource_version=version,
    )


def test_the_duration_is_three_reconcile_rounds_and_at_least_15_seconds() -> None:
    assert lease_duration(IpamSection(reconcile_interval=30.0)) == 90
    assert lease_duration(IpamSection(reconcile_interval=10.5)) == 32
    assert lease_duration(IpamSection(reconcile_interval=1.0)) == 15


def test_no_lease_is_created_with_this_node_as_holder() -> None:
    e = election()
    assert e.claim(None, now=0.0) == LeaseRecord(
        namespace=NS, name=LEASE_NAME, holder="n1", duration_seconds=DURATION
    )


def test_our_own_lease_is_renewed_without_a_transition() -> None:
    e = election()
    wanted = e.claim(lease("n1", transitions=3), now=0.0)
    assert wanted is not None and wanted.holder == "n1" and wanted.transitions == 3
    assert wanted.resource_version == "1"  # the update is conditional on what was read


def test_an_unheld_lease_is_taken_at_once() -> None:
    wanted = election().claim(lease(""), now=0.0)
    assert wanted is not None and wanted.holder == "n1" and wanted.transitions == 1


def test_another_holders_lease_is_taken_only_after_a_duration_unchanged_on_our_clock() -> None:
    e = election()
    assert e.claim(lease("n2"), now=1000.0) is None
    assert e.claim(lease("n2"), now=1000.0 + DURATION - 1) is None
    wanted = e.claim(lease("n2", transitions=4), now=1000.0 + DURATION)
    assert wanted is not None and wanted.holder == "n1" and wanted.transitions == 5


def test_a_renewal_by_the_holder_starts_the_wait_over() -> None:
    e = election()
    e.claim(lease("n2", version="1"), now=0.0)
    assert e.claim(lease("n2", version="2"), now=DURATION - 1) is None  # renewed
    assert e.claim(lease("n2", version="2"), now=2 * DURATION - 2) is None
    assert e.claim(lease("n2", version="2"), now=2 * DURATION - 1) is not None


def test_a_non_holder_reads_the_lease_once_per_duration() -> None:
    e = election()
    assert e.should_read(0.0)
    e.claim(lease("n2"), now=0.0)
    assert not e.should_read(DURATION - 1)
    assert e.should_read(DURATION)


def test_the_holder_reads_every_round() -> None:
    e = election()
    wanted = e.claim(None, now=0.0)
    assert wanted is not None
    e.held(replace(wanted, resource_version="7"), now=0.0)
    assert e.should_read(1.0)
    # Our own renewal does not count as a change by another holder.
    assert e.seen == ("n1", "7")


def test_a_lost_race_leaves_the_other_holder_in_charge() -> None:
    # Our takeover write conflicted; the next read shows the winner, just renewed.
    e = election()
    e.claim(lease("n2", version="1"), now=0.0)
    assert e.claim(lease("n2", version="1"), now=DURATION) is not None
    assert e.claim(lease("n3", version="2"), now=DURATION + 1) is None


# -- the look for deleted Nodes ---------------------------------------------------------


def foreign(cidr: str, node: str) -> Block:
    return new_block(42, ipaddress.IPv4Network(cidr), node)


def test_a_block_is_reclaimed_when_its_node_is_missing_twice_in_a_row() -> None:
    scan = ForeignScan("n1", interval=3600.0)
    blocks = [
        foreign("10.9.0.0/28", "n1"),  # ours
        foreign("10.9.0.16/28", "n2"),  # a live node's
        foreign("10.9.0.32/28", "gone"),
    ]
    assert scan.observe(blocks, {"n2"}, now=0.0) == []
    assert [b.node for b in scan.observe(blocks, {"n2"}, now=10.0)] == ["gone"]


def test_a_node_back_between_looks_keeps_its_blocks() -> None:
    scan = ForeignScan("n1")
    blocks = [foreign("10.9.0.32/28", "n3")]
    scan.observe(blocks, set(), now=0.0)
    scan.observe(blocks, {"n3"}, now=10.0)
    assert scan.observe(blocks, set(), now=20.0) == []


def test_a_block_not_deleted_is_looked_at_again_and_a_deleted_one_is_not() -> None:
    scan = ForeignScan("n1")
    blocks = [foreign("10.9.0.32/28", "gone"), foreign("10.9.0.48/28", "gone")]
    scan.observe(blocks, set(), now=0.0)
    scan.observe(blocks, set(), now=10.0)
    scan.deleted(blocks[0].name)  # the other one conflicted
    assert scan.missing == {blocks[1].name: 2}
    assert scan.wanted(now=20.0)  # a candidate waits: the next round looks


def test_the_holder_looks_when_told_of_changes_or_hourly() -> None:
    scan = ForeignScan("n1", interval=3600.0)
    assert scan.wanted(now=0.0)  # its first round
    scan.observe([], set(), now=0.0)
    assert not scan.wanted(now=10.0)
    scan.expect_changes()  # a Node deleted
    assert scan.wanted(now=10.0)
    scan.observe([], set(), now=10.0)
    assert not scan.wanted(now=3609.0)
    assert scan.wanted(now=3610.0)


def test_losing_the_lease_forgets_what_was_seen() -> None:
    scan = ForeignScan("n1")
    blocks = [foreign("10.9.0.32/28", "gone")]
    scan.observe(blocks, set(), now=0.0)
    scan.lease_lost()
    assert scan.wanted(now=1.0)
    assert scan.observe(blocks, set(), now=1.0) == []  # a first look again
