"""`ipam check --node`: the node's pod interfaces against its IPBlock records (issue 14)."""

from __future__ import annotations

import ipaddress

import pytest

from pyroute2_cni.ipam.blocks import (
    NOT_PLUMBED,
    UNRECORDED,
    Allocation,
    Block,
    PlumbedAddress,
    check_node,
    new_block,
    with_allocation,
)

pytestmark = pytest.mark.unit


def block(node: str, cidr: str, held: dict[str, str]) -> Block:
    result = new_block(42, ipaddress.IPv4Network(cidr), node)
    for address, key in held.items():
        result = with_allocation(result, address, Allocation(key=key, since="t"))
    return result


def pod(key: str, address: str) -> PlumbedAddress:
    return PlumbedAddress(key=key, address=address, host_ifname="p2c" + key[:6])


def test_a_node_whose_kernel_matches_its_records_is_clean() -> None:
    blocks = [
        block("n1", "10.244.0.0/26", {"10.244.0.2": "a/eth0", "10.244.0.3": "net-b/b/net1"}),
        block("n2", "10.244.0.64/26", {"10.244.0.66": "z/eth0"}),  # another node's: ignored
    ]
    plumbed = [pod("a/eth0", "10.244.0.2"), pod("net-b/b/net1", "10.244.0.3")]
    report = check_node("n1", blocks, plumbed)
    assert report.clean and (report.blocks, report.addresses) == (1, 2)


def test_what_ipam_check_cannot_see_is_reported() -> None:
    blocks = [block("n1", "10.244.0.0/26", {"10.244.0.2": "a/eth0", "10.244.0.4": "c/eth0"})]
    plumbed = [
        pod("a/eth0", "10.244.0.2"),
        pod("b/eth0", "10.244.0.9"),  # plumbed, never recorded (or released under it)
        pod("d/eth0", "10.244.0.4"),  # shares c's address: a re-plumb after reclaim
        pod("old/eth0", ""),  # an old alias without an address: judged by its key
    ]
    report = check_node("n1", blocks, plumbed)
    kinds = [(p.kind, p.address) for p in report.problems]
    assert kinds == [
        (UNRECORDED, ""),
        (UNRECORDED, "10.244.0.4"),
        (UNRECORDED, "10.244.0.9"),
        (NOT_PLUMBED, "10.244.0.4"),
    ]
    assert "no IPBlock of node n1 holds an address for it" in report.problems[2].message
    assert "held by attachment c/eth0, which has no interface on node n1" in (
        report.problems[3].message
    )
    assert "no IPBlock of node n1" in report.to_text()
