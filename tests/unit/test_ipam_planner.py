"""The IPAM planner (pure): batch rounds, claim order, leaked addresses, empty blocks."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

import pytest

from pyroute2_cni.ipam.blocks import (
    Allocation,
    Block,
    PodIndex,
    PodInfo,
    block_name,
    check_block_invariants,
    new_block,
    normalized,
    start_offset,
    with_allocation,
)
from pyroute2_cni.ipam.planner import (
    DEFER,
    REPROBE_LIMIT,
    BatchRound,
    ClaimOrder,
    EmptyBlocks,
    LeakWatch,
)
from pyroute2_cni.messages.base import ErrorKind, Failure
from pyroute2_cni.messages.crd import VrfDomainSpec
from pyroute2_cni.messages.ipam import (
    AddressAllocated,
    AddressReleased,
    AllocateAddress,
    PodRef,
    ReleaseAddress,
)
from tests.harness.domains import SYSTEM_DOMAIN

pytestmark = pytest.mark.unit

NODE = "n1"
# A /24 of /28 blocks: 16 blocks of 13 pod addresses each.
DOMAIN = replace(SYSTEM_DOMAIN, prefix="10.9.0.0", prefixlen=24, ipblocklen=28)


def since() -> str:
    return "2026-01-01T00:00:00Z"


def block(cidr: str, *keys: str, node: str = NODE) -> Block:
    made = normalized(new_block(DOMAIN.vrf, ipaddress.IPv4Network(cidr), node))
    hosts = [str(h) for h in made.network.hosts() if str(h) != made.gateway]
    for key, address in zip(keys, hosts, strict=False):
        made = with_allocation(made, address, Allocation(key=key, pod=key, uid=f"uid-{key}"))
    return made


def full(cidr: str) -> Block:
    made = block(cidr)
    return block(cidr, *(f"k{i}/eth0" for i in range(made.free_count)))


def allocate(key: str, domain: VrfDomainSpec = DOMAIN) -> AllocateAddress:
    return AllocateAddress(key=key, pod=PodRef(namespace="ns", name=key), domain=domain)


def no_claim(domain: VrfDomainSpec) -> Block | Failure:
    raise AssertionError("no claim expected")


def cached(*blocks: Block) -> tuple[dict[str, Block], dict[str, tuple[str, str]]]:
    by_name = {b.name: b for b in blocks}
    index = {key: (b.name, address) for b in blocks for key, address in b.key_addresses()}
    return by_name, index


# -- a batch round ----------------------------------------------------------------------


def test_an_allocation_takes_the_lowest_block_of_the_domain_with_room() -> None:
    blocks, index = cached(block("10.9.0.32/28"), full("10.9.0.0/28"), block("10.9.0.16/28"))
    plan = BatchRound(blocks, index, set())
    target, reply = plan.allocate(allocate("a/eth0"), since=since, claim=no_claim)
    assert target == block_name(42, ipaddress.IPv4Network("10.9.0.16/28"))
    assert isinstance(reply, AddressAllocated)
    assert reply.address == "10.9.0.18" and reply.gateway == "10.9.0.17"
    assert reply.prefixlen == 28 and reply.block == "10.9.0.16/28"
    assert plan.index["a/eth0"] == (target, "10.9.0.18")
    assert check_block_invariants(plan.work[target]) == []
    assert blocks[target].pod_count == 0  # the cache is not written by planning


def test_allocations_of_one_round_share_a_block_and_never_an_address() -> None:
    blocks, index = cached(block("10.9.0.0/28"))
    plan = BatchRound(blocks, index, set())
    replies = [plan.allocate(allocate(f"p{i}/eth0"), since=since, claim=no_claim) for i in range(3)]
    assert {target for target, _ in replies} == {"vrf-42-10-9-0-0-28"}
    addresses = [r.address for _, r in replies if isinstance(r, AddressAllocated)]
    assert addresses == ["10.9.0.2", "10.9.0.3", "10.9.0.4"]
    assert plan.work["vrf-42-10-9-0-0-28"].pod_count == 3


def test_an_attachment_that_holds_an_address_gets_it_again_without_a_write() -> None:
    held = block("10.9.0.0/28", "a/eth0")
    blocks, index = cached(held)
    plan = BatchRound(blocks, index, set())
    target, reply = plan.allocate(allocate("a/eth0"), since=since, claim=no_claim)
    assert target is None
    assert isinstance(reply, AddressAllocated) and reply.address == "10.9.0.2"


def test_an_attachment_held_in_another_vrf_is_refused() -> None:
    blocks, index = cached(block("10.9.0.0/28", "a/eth0"))
    other = replace(DOMAIN, name="vrf-7", vrf=7, table=7, prefix="10.7.0.0")
    _, reply = BatchRound(blocks, index, set()).allocate(
        allocate("a/eth0", other), since=since, claim=no_claim
    )
    assert isinstance(reply, Failure) and reply.kind is ErrorKind.INVALID


def test_a_release_then_an_allocation_in_one_round_write_the_block_once() -> None:
    blocks, index = cached(block("10.9.0.0/28", "a/eth0"))
    plan = BatchRound(blocks, index, set())
    released = plan.release(ReleaseAddress(key="a/eth0"), since=since)
    again = plan.allocate(allocate("b/eth0"), since=since, claim=no_claim)
    assert released == ("vrf-42-10-9-0-0-28", AddressReleased(key="a/eth0", address="10.9.0.2"))
    assert again[0] == "vrf-42-10-9-0-0-28"
    assert isinstance(again[1], AddressAllocated) and again[1].address == "10.9.0.2"
    assert dict(plan.work["vrf-42-10-9-0-0-28"].key_addresses()) == {"b/eth0": "10.9.0.2"}


def test_a_key_that_would_change_two_blocks_in_one_round_waits_for_the_next() -> None:
    # a/eth0 is released from the upper block; allocated again, it would land in the
    # lower one: two blocks written for one key in one round, so it is deferred.
    blocks, index = cached(block("10.9.0.16/28", "a/eth0"), block("10.9.0.0/28"))
    plan = BatchRound(blocks, index, set())
    assert plan.release(ReleaseAddress(key="a/eth0"), since=since)[0] == "vrf-42-10-9-0-16-28"
    assert plan.allocate(allocate("a/eth0"), since=since, claim=no_claim) == (None, DEFER)
    assert "a/eth0" not in plan.index


def test_a_release_of_a_key_not_held_needs_no_write() -> None:
    blocks, index = cached(block("10.9.0.0/28", "a/eth0"))
    plan = BatchRound(blocks, index, set())
    assert plan.release(ReleaseAddress(key="x/eth0"), since=since) == (
        None,
        AddressReleased(key="x/eth0", address=None),
    )
    assert plan.work == {}


def test_nothing_is_answered_from_a_suspect_block() -> None:
    held = block("10.9.0.0/28", "a/eth0")
    blocks, index = cached(held, block("10.9.0.16/28"))
    plan = BatchRound(blocks, index, {held.name})
    for _, reply in (
        plan.allocate(allocate("a/eth0"), since=since, claim=no_claim),
        plan.release(ReleaseAddress(key="a/eth0"), since=since),
        # Not cached, but it may sit in the suspect block: no "nothing held" either.
        plan.release(ReleaseAddress(key="new/eth0"), since=since),
        plan.allocate(allocate("new/eth0"), since=since, claim=no_claim),
    ):
        assert isinstance(reply, Failure) and reply.kind is ErrorKind.TEMPORARY
        assert held.name in reply.reason
    assert plan.work == {}


def test_a_full_domain_claims_once_per_round_and_a_failed_claim_answers_the_rest() -> None:
    blocks, index = cached(full("10.9.0.0/28"))
    claims: list[str] = []
    exhausted = Failure(reason="exhausted", kind=ErrorKind.PERMANENT)

    def claim(domain: VrfDomainSpec) -> Block | Failure:
        claims.append(domain.name)
        return exhausted

    plan = BatchRound(blocks, index, set())
    first = plan.allocate(allocate("a/eth0"), since=since, claim=claim)
    second = plan.allocate(allocate("b/eth0"), since=since, claim=claim)
    assert first == second == (None, exhausted)
    assert claims == ["vrf-42"]


def test_a_claimed_block_serves_the_allocation_that_needed_it() -> None:
    blocks, index = cached(full("10.9.0.0/28"))
    fresh = normalized(new_block(42, ipaddress.IPv4Network("10.9.0.64/28"), NODE))

    def claim(domain: VrfDomainSpec) -> Block | Failure:
        blocks[fresh.name] = fresh  # the actor caches what it created
        return fresh

    plan = BatchRound(blocks, index, set())
    target, reply = plan.allocate(allocate("a/eth0"), since=since, claim=claim)
    assert target == fresh.name
    assert isinstance(reply, AddressAllocated) and reply.address == "10.9.0.66"
    # The next allocation finds room in the claimed block without another claim.
    assert plan.allocate(allocate("b/eth0"), since=since, claim=no_claim)[0] == fresh.name


# -- claim order ------------------------------------------------------------------------


ORDER = ClaimOrder(NODE, reprobe_after=60.0)


def walk_order() -> list[ipaddress.IPv4Network]:
    networks = list(ipaddress.IPv4Network("10.9.0.0/24").subnets(new_prefix=28))
    start = start_offset(NODE, 42, len(networks))
    return networks[start:] + networks[:start]


def test_claims_walk_from_the_nodes_offset_and_skip_held_names() -> None:
    order = walk_order()
    own = block(str(order[0]))
    taken = {block_name(42, order[1]): 100.0}
    got = list(ORDER.candidates(DOMAIN, {own.name: own}, taken, now=100.0))
    assert got == order[2:]


def test_taken_names_are_tried_again_oldest_first_once_stale_and_bounded() -> None:
    order = walk_order()
    # Every name known taken; the first ten learned at 0..9, the rest just now.
    taken = {block_name(42, n): (float(i) if i < 10 else 1000.0) for i, n in enumerate(order)}
    got = list(ORDER.candidates(DOMAIN, {}, taken, now=1000.0))
    assert got == order[:REPROBE_LIMIT]
    assert REPROBE_LIMIT < 10


def test_blocks_of_another_length_are_not_overlapped() -> None:
    # A /27 from before the domain's ipblocklen changed covers two /28 candidates.
    wide = Block(
        name=block_name(42, ipaddress.IPv4Network("10.9.0.32/27")),
        cidr="10.9.0.32/27",
        node=NODE,
        vrf=42,
        gateway="10.9.0.33",
        capacity=30,
    )
    got = ORDER.candidates(DOMAIN, {wide.name: wide}, {}, now=0.0)
    cidrs = {str(n) for n in got}
    assert len(cidrs) == 14
    assert not cidrs & {"10.9.0.32/28", "10.9.0.48/28"}


# -- leaked addresses -------------------------------------------------------------------


def test_a_leak_needs_two_looks_and_the_grace_period() -> None:
    blocks = [block("10.9.0.0/28", "gone/eth0", "alive/eth0")]
    pods = PodIndex([PodInfo(namespace="", name="alive/eth0", uid="uid-alive/eth0")])
    watch = LeakWatch(grace=300.0)
    assert watch.observe(blocks, pods, now=0.0) == {}
    assert watch.observe(blocks, pods, now=100.0) == {}  # a second look, but within grace
    leaked = watch.observe(blocks, pods, now=300.0)
    assert list(leaked) == ["gone/eth0"]


def test_a_pod_seen_again_starts_the_count_over() -> None:
    blocks = [block("10.9.0.0/28", "flaky/eth0")]
    nobody = PodIndex([])
    back = PodIndex([PodInfo(namespace="", name="flaky/eth0", uid="uid-flaky/eth0")])
    watch = LeakWatch(grace=0.0)
    watch.observe(blocks, nobody, now=0.0)
    watch.observe(blocks, back, now=1.0)
    assert watch.observe(blocks, nobody, now=2.0) == {}
    assert list(watch.observe(blocks, nobody, now=3.0)) == ["flaky/eth0"]


def test_unconfirmed_leaks_start_counting_again_and_confirmed_ones_do_not() -> None:
    blocks = [block("10.9.0.0/28", "a/eth0", "b/eth0")]
    watch = LeakWatch(grace=0.0)
    watch.observe(blocks, PodIndex([]), now=0.0)
    assert set(watch.observe(blocks, PodIndex([]), now=1.0)) == {"a/eth0", "b/eth0"}
    watch.unconfirmed({"a/eth0", "b/eth0"}, {"a/eth0"})  # a LIST still shows b's pod
    assert set(watch.observe(blocks, PodIndex([]), now=2.0)) == {"a/eth0"}


# -- empty blocks -----------------------------------------------------------------------


def test_blocks_go_back_after_two_empty_rounds_keeping_one_per_vrf() -> None:
    blocks, _ = cached(block("10.9.0.0/28"), block("10.9.0.16/28"), block("10.9.0.32/28", "a/e"))
    empty = EmptyBlocks()
    assert empty.ripe(blocks, {42}) == []
    assert [b.cidr for b in empty.ripe(blocks, {42})] == ["10.9.0.0/28", "10.9.0.16/28"]
    # All empty: the lowest stays for the next pod.
    blocks, _ = cached(block("10.9.0.0/28"), block("10.9.0.16/28"))
    empty = EmptyBlocks()
    empty.ripe(blocks, {42})
    assert [b.cidr for b in empty.ripe(blocks, {42})] == ["10.9.0.16/28"]


def test_the_block_kept_is_one_emptied_last() -> None:
    empty = EmptyBlocks()
    blocks, _ = cached(block("10.9.0.0/28"), block("10.9.0.16/28", "a/e"))
    empty.ripe(blocks, {42})
    empty.ripe(blocks, {42})
    blocks, _ = cached(block("10.9.0.0/28"), block("10.9.0.16/28"))  # a/e went
    assert [b.cidr for b in empty.ripe(blocks, {42})] == ["10.9.0.0/28"]


def test_a_gone_domain_keeps_no_block_and_an_unknown_set_keeps_one() -> None:
    blocks, _ = cached(block("10.9.0.0/28"), block("10.9.0.16/28"))
    gone, unknown = EmptyBlocks(), EmptyBlocks()
    for _ in range(2):
        returned = gone.ripe(blocks, {7})
        kept = unknown.ripe(blocks, None)
    assert len(returned) == 2
    assert [b.cidr for b in kept] == ["10.9.0.16/28"]


def test_a_block_used_again_counts_from_zero() -> None:
    empty = EmptyBlocks()
    idle, _ = cached(block("10.9.0.0/28"), block("10.9.0.16/28"))
    used, _ = cached(block("10.9.0.0/28"), block("10.9.0.16/28", "a/e"))
    empty.ripe(idle, {42})
    empty.ripe(used, {42})
    # The lower block, empty three rounds, goes; the upper one was in use a round ago.
    assert [b.cidr for b in empty.ripe(idle, {42})] == ["10.9.0.0/28"]
    assert empty.seen == {"vrf-42-10-9-0-0-28": 3, "vrf-42-10-9-0-16-28": 1}
