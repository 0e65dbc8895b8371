"""IPAMActor against FakeBlockStore and a fake clock."""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pykka
import pytest

from pyroute2_cni.actors.address import Address
from pyroute2_cni.actors.base import ActorHooks
from pyroute2_cni.actors.ipam_actor import SETTLE_WINDOW, IPAMActor
from pyroute2_cni.ipam.blocks import (
    Allocation,
    PodInfo,
    block_name,
    check_block_invariants,
    new_block,
    start_offset,
)
from pyroute2_cni.ipam.lease import FOREIGN_SCAN_INTERVAL, LEASE_NAME, lease_duration
from pyroute2_cni.messages import crd
from pyroute2_cni.messages.base import ErrorKind, Failure
from pyroute2_cni.messages.crd import Attachment, AttachmentType, ClusterSnapshot, VrfDomainSpec
from pyroute2_cni.messages.ipam import (
    AddressAllocated,
    AddressesReleased,
    AddressLookupResult,
    AddressReleased,
    AllocateAddress,
    LookupAddress,
    NodeBlocksChanged,
    PodRef,
    Reconcile,
    ReconcileResult,
    ReleaseAddress,
    ReleaseAllExcept,
)
from pyroute2_cni.messages.node_state import IpamUseSeen, VrfUse
from pyroute2_cni.runtime.config import IpamSection
from pyroute2_cni.runtime.metrics import Metrics
from tests.harness.fake_ipam_store import FakeBlockStore, seeded_block
from tests.harness.recording import FakeClock
from tests.harness.recording import RecordingAddress as Recording
from tests.harness.waiting import wait_for

pytestmark = pytest.mark.unit

TIMEOUT = 10.0
L3 = Attachment(type=AttachmentType.L3VNI, vni=100)
L2 = Attachment(type=AttachmentType.L2VNI, vni=200)
SETTINGS = IpamSection(leak_grace=300.0, reconcile_interval=86400.0, write_retries=3)


def make_domain(
    prefix: str = "10.244.0.0",
    prefixlen: int = 16,
    ipblocklen: int = 26,
    vrf: int = 42,
    attachments: tuple[Attachment, ...] = (L3,),
) -> VrfDomainSpec:
    return VrfDomainSpec(
        name=f"vrf-{vrf}",
        vrf=vrf,
        table=vrf,
        prefix=prefix,
        prefixlen=prefixlen,
        ipblocklen=ipblocklen,
        attachments=attachments,
    )


DOMAIN = make_domain()
SMALL = make_domain(prefix="10.9.0.0", prefixlen=27, ipblocklen=29, vrf=300)


class RecordingAddress(Recording):
    """Stands in for the NetlinkActor: keeps what IPAM tells it."""

    @property
    def last_blocks(self) -> set[str]:
        last = self.messages[-1]
        assert isinstance(last, NodeBlocksChanged)
        return {b.cidr for b in last.blocks}


class Node:
    """One running IPAMActor and what it talks to."""

    def __init__(
        self,
        name: str,
        store: FakeBlockStore,
        clock: FakeClock,
        settings: IpamSection = SETTINGS,
        metrics: Metrics | None = None,
    ) -> None:
        self.name = name
        self.store = store
        self.metrics = metrics or Metrics()
        self.netlink = RecordingAddress()
        self.events = RecordingAddress()
        self.state = RecordingAddress()
        self.crashes: list[BaseException | None] = []
        hooks = ActorHooks(
            name=f"ipam-{name}", generation=1, on_crash=lambda n, g, e: self.crashes.append(e)
        )
        self.ref: pykka.ActorRef[Any] = IPAMActor.start(
            hooks,
            node=name,
            settings=settings,
            store_factory=lambda: store,
            metrics=self.metrics,
            netlink=self.netlink,
            clock=clock,
            events=self.events,
            state=self.state,
        )
        self.address = Address(f"ipam-{name}")
        self.address.bind(self.ref)

    def ask(self, message: Any) -> Any:
        return self.address.ask(message, timeout=TIMEOUT)

    def allocate(self, key: str, domain: VrfDomainSpec = DOMAIN, pod: PodRef | None = None) -> Any:
        return self.ask(AllocateAddress(key=key, pod=pod or PodRef(), domain=domain))

    def release(self, key: str) -> Any:
        return self.ask(ReleaseAddress(key=key))

    def reconcile(self) -> ReconcileResult:
        result = self.ask(Reconcile())
        assert isinstance(result, ReconcileResult)
        return result

    def gauge(self, name: str, vrf: int) -> float | None:
        return self.metrics.registry.get_sample_value(name, {"vrf": str(vrf)})

    def stop(self) -> None:
        if self.ref.is_alive():
            self.ref.stop(timeout=TIMEOUT)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store() -> FakeBlockStore:
    return FakeBlockStore()


@pytest.fixture
def nodes(store: FakeBlockStore, clock: FakeClock) -> Iterator[Callable[..., Node]]:
    started: list[Node] = []

    def start(name: str = "n1", **kwargs: Any) -> Node:
        node = Node(name, kwargs.pop("store", store), clock, **kwargs)
        started.append(node)
        return node

    yield start
    for node in started:
        node.stop()
    assert all(not n.crashes for n in started), [n.crashes for n in started]


def assert_sound(store: FakeBlockStore) -> None:
    """Every block keeps its invariants and no address is held twice in a VRF."""
    seen: dict[tuple[int, str], str] = {}
    for block in store.blocks.values():
        assert check_block_invariants(block) == [], check_block_invariants(block)
        for address in block.allocations:
            assert (block.vrf, address) not in seen, f"{address} in {block.name} and elsewhere"
            seen[(block.vrf, address)] = block.name


def nth(cidr: str, n: int) -> str:
    return str(ipaddress.IPv4Network(cidr)[n])


def allocated(reply: Any) -> AddressAllocated:
    assert isinstance(reply, AddressAllocated), reply
    return reply


# -- allocate and release ------------------------------------------------------------


def test_allocate_is_idempotent_per_key(nodes: Callable[..., Node], store: FakeBlockStore) -> None:
    n1 = nodes("n1")
    first = allocated(n1.allocate("c1/eth0", pod=PodRef(namespace="ns", name="p", uid="u")))
    assert_sound(store)
    assert first.vrf == 42 and first.prefixlen == 26
    assert first.attachment is AttachmentType.L3VNI
    network = ipaddress.IPv4Network(first.block)
    assert first.gateway == str(network.network_address + 1)
    assert first.address == str(network.network_address + 2)
    assert store.writes == {"create": 1, "status": 1}

    again = allocated(n1.allocate("c1/eth0"))
    assert again == first
    assert store.writes == {"create": 1, "status": 1}  # no write for a repeat

    second = allocated(n1.allocate("c2/eth0"))
    assert second.address == str(network.network_address + 3)
    assert store.writes == {"create": 1, "status": 2}
    assert_sound(store)
    block = store.blocks[block_name(42, network)]
    assert block.allocated == 3  # gateway + 2 pods
    assert block.allocations[first.address] == Allocation(
        key="c1/eth0",
        namespace="ns",
        pod="p",
        uid="u",
        since=block.allocations[first.address].since,
    )
    assert block.allocations[first.gateway].key == "gateway"
    assert store.lists == 1  # the LIST in on_start, none on the allocation path
    assert n1.gauge("pyroute2_cni_ipam_blocks", 42) == 1
    assert n1.gauge("pyroute2_cni_ipam_addresses", 42) == 2


def test_l2vni_pods_get_the_domain_prefix_length(nodes: Callable[..., Node]) -> None:
    n1 = nodes("n1")
    reply = allocated(n1.allocate("c1/eth0", domain=make_domain(attachments=(L3, L2))))
    assert reply.prefixlen == 16 and reply.attachment is AttachmentType.L2VNI


def test_block_claim_starts_at_the_node_offset(nodes: Callable[..., Node]) -> None:
    n1 = nodes("n1")
    reply = allocated(n1.allocate("c1/eth0"))
    index = start_offset("n1", 42, 1024)
    assert reply.block == f"10.244.{index * 64 // 256}.{index * 64 % 256}/26"


def test_each_block_has_its_own_gateway(nodes: Callable[..., Node], store: FakeBlockStore) -> None:
    n1 = nodes("n1")
    domain = make_domain(prefix="10.20.0.0", prefixlen=24, ipblocklen=29, vrf=7)
    replies = [allocated(n1.allocate(f"c{i}/eth0", domain=domain)) for i in range(12)]
    assert_sound(store)
    by_block: dict[str, set[str]] = {}
    for reply in replies:
        by_block.setdefault(reply.block, set()).add(reply.address)
        assert reply.gateway == str(ipaddress.IPv4Network(reply.block)[1])
        assert reply.address != reply.gateway
    assert sorted(len(v) for v in by_block.values()) == [2, 5, 5]  # 5 pods fill a /29
    assert len({r.address for r in replies}) == 12
    assert n1.netlink.last_blocks == set(by_block)
    assert n1.gauge("pyroute2_cni_ipam_blocks", 7) == 3
    assert n1.gauge("pyroute2_cni_ipam_free_addresses", 7) == 3


def test_release_is_idempotent_and_frees_the_lowest_address(
    nodes: Callable[..., Node], store: FakeBlockStore
) -> None:
    n1 = nodes("n1")
    a = allocated(n1.allocate("a/eth0"))
    b = allocated(n1.allocate("b/eth0"))
    assert n1.release("a/eth0") == AddressReleased(key="a/eth0", address=a.address)
    assert_sound(store)
    writes = sum(store.writes.values())
    assert n1.release("a/eth0") == AddressReleased(key="a/eth0", address=None)
    assert n1.release("never/eth0") == AddressReleased(key="never/eth0", address=None)
    assert sum(store.writes.values()) == writes
    assert n1.ask(LookupAddress(key="a/eth0")) == AddressLookupResult(allocation=None)
    assert n1.ask(LookupAddress(key="b/eth0")) == AddressLookupResult(allocation=b)
    c = allocated(n1.allocate("c/eth0"))
    assert c.address == a.address
    assert n1.gauge("pyroute2_cni_ipam_addresses", 42) == 2


def test_gc_releases_everything_not_kept(nodes: Callable[..., Node], store: FakeBlockStore) -> None:
    n1 = nodes("n1")
    for key in ("a/eth0", "b/eth0", "c/eth0"):
        allocated(n1.allocate(key))
    reply = n1.ask(
        ReleaseAllExcept(network="pyroute2-cni", keep=frozenset({"b/eth0", "unknown/eth0"}))
    )
    assert reply == AddressesReleased(keys=("a/eth0", "c/eth0"))
    assert_sound(store)
    (block,) = store.blocks.values()
    assert sorted(r.key for r in block.allocations.values()) == ["b/eth0", "gateway"]


def test_exhaustion_names_the_domain_and_never_duplicates(
    nodes: Callable[..., Node], store: FakeBlockStore
) -> None:
    n1, n2 = nodes("n1"), nodes("n2")
    got: list[AddressAllocated] = []
    failures: list[Failure] = []
    for i in range(30):
        node = (n1, n2)[i % 2]
        reply = node.allocate(f"c{i}/eth0", domain=SMALL)
        if isinstance(reply, Failure):
            failures.append(reply)
        else:
            got.append(allocated(reply))
        assert_sound(store)
    # 4 blocks of /29: 5 pod addresses each (6 hosts, one gateway).
    assert len(got) == 20 and len({r.address for r in got}) == 20
    assert len(store.blocks) == 4
    assert failures
    for failure in failures:
        assert failure.kind is ErrorKind.PERMANENT
        assert failure.reason == (
            "VRFDomain vrf-300 (10.9.0.0/27) has no free addresses: "
            "all 4 /29 blocks are full or held by other nodes"
        )
    # What the pool alert sums over the nodes: every block of the domain is held.
    assert sum(n.gauge("pyroute2_cni_ipam_blocks", 300) or 0 for n in (n1, n2)) == 4
    assert n1.gauge("pyroute2_cni_ipam_domain_blocks", 300) == 4
    assert n1.gauge("pyroute2_cni_ipam_free_addresses", 300) == 0
    refused = sum(n.gauge("pyroute2_cni_ipam_exhausted_total", 300) or 0 for n in (n1, n2))
    assert refused == len(failures)
    # Each refusal is an occurrence of the VRFDomain's PoolExhausted Event (aggregated by
    # the EventActor), naming the node and what to do.
    told = [m for n in (n1, n2) for m in n.events.messages]
    assert len(told) == len(failures)
    assert {(m.kind, m.name, m.reason, m.warning) for m in told} == {
        ("VRFDomain", "vrf-300", "PoolExhausted", True)
    }
    assert all(
        m.message.startswith(("node n1: VRFDomain vrf-300", "node n2: VRFDomain vrf-300"))
        for m in told
    )
    assert "larger prefix" in told[0].message

    # The nodes' VRFNodeState hears that the pool is exhausted there.
    def use(node: Node) -> VrfUse:
        last = [m for m in node.state.messages if isinstance(m, IpamUseSeen)][-1]
        (found,) = [v for v in last.vrfs if v.vrf == 300]
        return found

    assert use(n1).exhausted and use(n2).exhausted
    assert (use(n1).domain, use(n1).free) == ("vrf-300", 0)
    # A release makes room again on that node only.
    n1_block = next(b for b in store.blocks.values() if b.node == "n1")
    key = next(k for k, _ in n1_block.key_addresses())
    n1.release(key)
    assert not use(n1).exhausted and use(n1).free == 1
    assert isinstance(n2.allocate("x/eth0", domain=SMALL), Failure)
    assert allocated(n1.allocate("y/eth0", domain=SMALL)).block == n1_block.cidr
    assert_sound(store)


def test_invalid_requests(nodes: Callable[..., Node]) -> None:
    n1 = nodes("n1")
    bad = n1.allocate("gateway", domain=DOMAIN)
    assert isinstance(bad, Failure) and bad.kind is ErrorKind.INVALID
    bad = n1.allocate("a/eth0", domain=make_domain(prefix="10.244.0.1"))
    assert isinstance(bad, Failure) and bad.kind is ErrorKind.INVALID
    assert "not a network address" in bad.reason
    allocated(n1.allocate("a/eth0", domain=DOMAIN))
    other = n1.allocate("a/eth0", domain=SMALL)
    assert isinstance(other, Failure) and "already holds" in other.reason
    unknown = n1.ask("allocate please")
    assert isinstance(unknown, Failure) and unknown.kind is ErrorKind.INVALID


# -- conflicts and failures ----------------------------------------------------------


def test_conflict_is_reread_and_retried(nodes: Callable[..., Node], store: FakeBlockStore) -> None:
    n1 = nodes("n1")
    first = allocated(n1.allocate("a/eth0"))
    name = block_name(42, ipaddress.IPv4Network(first.block))
    bumps = {"left": 2}

    def someone_else_writes(op: str, target: str) -> None:
        if op == "status" and bumps["left"] > 0:
            bumps["left"] -= 1
            store.put(store.blocks[target])  # same content, new resourceVersion

    store.before_write = someone_else_writes
    second = allocated(n1.allocate("b/eth0"))
    assert second.block == first.block
    assert store.writes["status"] == 1 + 3  # two conflicts, then success
    assert_sound(store)
    assert sorted(k for k, _ in store.blocks[name].key_addresses()) == ["a/eth0", "b/eth0"]


def test_gives_up_after_write_retries_and_keeps_memory_unchanged(
    nodes: Callable[..., Node], store: FakeBlockStore
) -> None:
    n1 = nodes("n1")
    a = allocated(n1.allocate("a/eth0"))

    def always_conflict(op: str, target: str) -> None:
        if op == "status":
            store.put(store.blocks[target])

    store.before_write = always_conflict
    reply = n1.allocate("b/eth0")
    assert isinstance(reply, Failure) and reply.kind is ErrorKind.CONFLICT
    assert "gave up after 4 conflicting writes" in reply.reason
    assert n1.ask(LookupAddress(key="b/eth0")) == AddressLookupResult(allocation=None)
    store.before_write = None
    assert allocated(n1.allocate("b/eth0")).address == nth(a.block, 3)
    assert_sound(store)


def test_api_down_fails_temporarily_without_changing_memory(
    nodes: Callable[..., Node], store: FakeBlockStore
) -> None:
    n1 = nodes("n1")
    a = allocated(n1.allocate("a/eth0"))
    store.unavailable = True
    reply = n1.allocate("b/eth0")
    assert isinstance(reply, Failure) and reply.kind is ErrorKind.TEMPORARY
    # The write may have committed before the API went away: no answer until a re-read.
    for message in (LookupAddress(key="b/eth0"), ReleaseAddress(key="a/eth0")):
        failed = n1.ask(message)
        assert isinstance(failed, Failure) and failed.kind is ErrorKind.TEMPORARY
    store.unavailable = False
    assert n1.ask(LookupAddress(key="b/eth0")) == AddressLookupResult(allocation=None)
    assert n1.ask(LookupAddress(key="a/eth0")) == AddressLookupResult(allocation=a)
    assert allocated(n1.allocate("b/eth0")).address == nth(a.block, 3)
    assert_sound(store)


def test_release_after_a_lost_status_reply_frees_what_the_write_committed(
    nodes: Callable[..., Node], store: FakeBlockStore
) -> None:
    n1 = nodes("n1")
    allocated(n1.allocate("a/eth0"))
    store.lose_replies = {"status"}
    reply = n1.allocate("b/eth0")
    assert isinstance(reply, Failure) and reply.kind is ErrorKind.TEMPORARY
    (block,) = store.blocks.values()
    committed = dict(block.key_addresses())
    assert "b/eth0" in committed  # the write took effect; the caller was told it failed
    store.lose_replies = set()
    # The runtime's DEL for the failed ADD frees what the API holds, not what the cache says.
    assert n1.release("b/eth0") == AddressReleased(key="b/eth0", address=committed["b/eth0"])
    (block,) = store.blocks.values()
    assert [k for k, _ in block.key_addresses()] == ["a/eth0"]
    assert_sound(store)


def test_a_retried_add_after_a_lost_status_reply_gets_the_committed_address(
    nodes: Callable[..., Node], store: FakeBlockStore
) -> None:
    n1 = nodes("n1")
    allocated(n1.allocate("a/eth0"))
    store.lose_replies = {"status"}
    assert isinstance(n1.allocate("b/eth0"), Failure)
    store.lose_replies = set()
    committed = dict(store.node_blocks("n1")[0].key_addresses())["b/eth0"]
    writes = store.writes["status"]
    assert allocated(n1.allocate("b/eth0")).address == committed
    assert store.writes["status"] == writes  # re-read first: nothing left to write
    assert [k for b in store.blocks.values() for k, _ in b.key_addresses()].count("b/eth0") == 1


def test_nothing_is_answered_about_a_block_whose_write_outcome_is_unknown(
    nodes: Callable[..., Node], store: FakeBlockStore
) -> None:
    n1 = nodes("n1")
    a = allocated(n1.allocate("a/eth0"))
    store.lose_replies = {"status"}
    assert isinstance(n1.allocate("b/eth0"), Failure)
    store.lose_replies = set()
    store.unavailable = True  # the API server is still restarting: the block cannot be re-read
    for message in (ReleaseAddress(key="b/eth0"), LookupAddress(key="b/eth0")):
        reply = n1.ask(message)
        assert isinstance(reply, Failure) and reply.kind is ErrorKind.TEMPORARY, reply
        name = block_name(42, ipaddress.IPv4Network(a.block))
        assert "unknown" in reply.reason and name in reply.reason, reply.reason
    store.unavailable = False
    found = n1.ask(LookupAddress(key="b/eth0"))
    assert isinstance(found, AddressLookupResult) and found.allocation is not None
    assert n1.release("b/eth0") == AddressReleased(key="b/eth0", address=found.allocation.address)
    assert_sound(store)


def test_a_create_whose_reply_is_lost_is_adopted_not_leaked(
    nodes: Callable[..., Node], store: FakeBlockStore
) -> None:
    n1 = nodes("n1")
    store.lose_replies = {"create"}
    reply = n1.allocate("a/eth0")
    assert isinstance(reply, Failure) and reply.kind is ErrorKind.TEMPORARY
    (created,) = store.node_blocks("n1")  # committed, though the caller heard otherwise
    store.lose_replies = set()
    n1.reconcile()
    # The actor knows the block the API holds for it (published, so it can be returned later).
    assert n1.netlink.last_blocks == {created.cidr}
    assert allocated(n1.allocate("a/eth0")).block == created.cidr
    assert store.writes["create"] == 1 and len(store.blocks) == 1
    assert_sound(store)


def test_a_domain_s_pool_size_is_exported_while_it_exists(nodes: Callable[..., Node]) -> None:
    n1 = nodes("n1")
    empty = ClusterSnapshot(domains=(), bindings=(), node_configs=(), nodes=(), namespaces=())
    n1.ask(empty)
    assert n1.gauge("pyroute2_cni_ipam_domain_blocks", 42) is None
    n1.ask(
        ClusterSnapshot(domains=(DOMAIN,), bindings=(), node_configs=(), nodes=(), namespaces=())
    )
    assert n1.gauge("pyroute2_cni_ipam_domain_blocks", 42) == 1024  # a /16 in /26 blocks
    n1.ask(empty)
    assert n1.gauge("pyroute2_cni_ipam_domain_blocks", 42) is None


def test_a_failed_allocation_leaves_the_known_domain_unchanged(
    nodes: Callable[..., Node], store: FakeBlockStore
) -> None:
    n1 = nodes("n1")
    n1.ask(
        ClusterSnapshot(domains=(DOMAIN,), bindings=(), node_configs=(), nodes=(), namespaces=())
    )
    a = allocated(n1.allocate("a/eth0"))
    store.unavailable = True
    reply = n1.allocate("b/eth0", domain=make_domain(attachments=(L2,)))
    assert isinstance(reply, Failure) and reply.kind is ErrorKind.TEMPORARY
    store.unavailable = False
    # Lookups still render replies with the domain the actor knew, not the failed request's.
    assert n1.ask(LookupAddress(key="a/eth0")) == AddressLookupResult(allocation=a)


def test_an_ordinary_release_miss_costs_no_api_request(
    nodes: Callable[..., Node], store: FakeBlockStore, clock: FakeClock
) -> None:
    n1 = nodes("n1")
    allocated(n1.allocate("a/eth0"))
    clock.advance(SETTLE_WINDOW)
    lists, gets = store.lists, store.gets
    assert n1.release("never/eth0") == AddressReleased(key="never/eth0", address=None)
    assert (store.lists, store.gets) == (lists, gets)


def _late_predecessor_write(nodes: Callable[..., Node]) -> tuple[Node, AddressAllocated]:
    """A replacement actor that loaded, then a predecessor's allocation it did not see."""
    replacement = nodes("n1")
    allocated(replacement.allocate("a/eth0"))
    predecessor = nodes("n1")  # its load comes after the replacement's, so its write is unseen
    late = allocated(predecessor.allocate("late/eth0"))
    predecessor.stop()
    return replacement, late


def test_a_predecessors_write_that_commits_after_the_load_is_released_by_a_del(
    nodes: Callable[..., Node], store: FakeBlockStore, clock: FakeClock
) -> None:
    # The daemon killed with -9 while its status write was in flight: the API server
    # commits it after the new daemon read the node's blocks.  The runtime's DEL for
    # that sandbox must free the address, not hear "nothing held" from the cache.
    replacement, late = _late_predecessor_write(nodes)
    clock.advance(SETTLE_WINDOW - 1)
    lists = store.lists
    assert replacement.release("late/eth0") == AddressReleased(
        key="late/eth0", address=late.address
    )
    assert store.lists == lists + 1  # one LIST for the miss, within the window only
    assert "late/eth0" not in dict(store.node_blocks("n1")[0].key_addresses())
    assert_sound(store)


def test_a_del_miss_that_cannot_re_read_fails_temporarily_and_keeps_the_record(
    nodes: Callable[..., Node], store: FakeBlockStore
) -> None:
    replacement, late = _late_predecessor_write(nodes)
    store.unavailable = True
    reply = replacement.release("late/eth0")
    assert isinstance(reply, Failure) and reply.kind is ErrorKind.TEMPORARY, reply
    assert "retry the DEL" in reply.reason, reply.reason
    store.unavailable = False
    assert replacement.release("late/eth0") == AddressReleased(
        key="late/eth0", address=late.address
    )


def test_a_write_of_unknown_outcome_opens_the_window_again(
    nodes: Callable[..., Node], store: FakeBlockStore, clock: FakeClock
) -> None:
    n1 = nodes("n1")
    allocated(n1.allocate("a/eth0"))
    clock.advance(SETTLE_WINDOW)
    store.lose_replies = {"status"}
    assert isinstance(n1.allocate("b/eth0"), Failure)
    store.lose_replies = set()
    clock.advance(SETTLE_WINDOW - 1)
    lists = store.lists
    assert n1.release("never/eth0") == AddressReleased(key="never/eth0", address=None)
    assert store.lists == lists + 1
    clock.advance(1)
    assert n1.release("never/eth0") == AddressReleased(key="never/eth0", address=None)
    assert store.lists == lists + 1  # the window closed: answered from the cache


def test_start_with_api_down_is_not_ready_then_loads(
    nodes: Callable[..., Node], store: FakeBlockStore
) -> None:
    store.unavailable = True
    n1 = nodes("n1")
    reply = n1.allocate("a/eth0")
    assert isinstance(reply, Failure) and reply.kind is ErrorKind.TEMPORARY
    assert n1.reconcile().loaded is False
    store.unavailable = False
    assert n1.reconcile().loaded is True
    allocated(n1.allocate("a/eth0"))


def test_restart_rebuilds_state_from_the_api(
    nodes: Callable[..., Node], store: FakeBlockStore
) -> None:
    n1 = nodes("n1")
    replies = [allocated(n1.allocate(f"c{i}/eth0")) for i in range(70)]
    n1.stop()
    lists = store.lists
    again = nodes("n1")
    assert store.lists == lists + 1
    # The domain is not known until a request or the watcher names it.
    unknown = again.ask(LookupAddress(key="c3/eth0"))
    assert isinstance(unknown, Failure) and unknown.kind is ErrorKind.TEMPORARY
    again.ask(
        ClusterSnapshot(domains=(DOMAIN,), bindings=(), node_configs=(), nodes=(), namespaces=())
    )
    assert again.ask(LookupAddress(key="c3/eth0")) == AddressLookupResult(allocation=replies[3])
    writes = sum(store.writes.values())
    assert [again.allocate(f"c{i}/eth0") for i in range(70)] == replies
    assert sum(store.writes.values()) == writes
    assert again.netlink.last_blocks == {r.block for r in replies}
    assert store.lists == lists + 1


def test_load_repairs_a_block_without_gateway_record(
    nodes: Callable[..., Node], store: FakeBlockStore
) -> None:
    store.put(new_block(42, ipaddress.IPv4Network("10.244.1.0/26"), "n1"))
    nodes("n1")
    (block,) = store.blocks.values()
    assert block.gateway_recorded and check_block_invariants(block) == []


def test_a_409_on_our_own_block_adopts_it(
    nodes: Callable[..., Node], store: FakeBlockStore
) -> None:
    n1 = nodes("n1")
    index = start_offset("n1", 42, 1024)
    network = ipaddress.IPv4Network((0x0AF40000 + index * 64, 26))
    store.put(new_block(42, network, "n1"))  # an earlier create whose answer was lost
    reply = allocated(n1.allocate("a/eth0"))
    assert reply.block == str(network)
    assert len(store.blocks) == 1
    assert_sound(store)


def test_blocks_taken_by_others_are_skipped(
    nodes: Callable[..., Node], store: FakeBlockStore
) -> None:
    n1 = nodes("n1")
    index = start_offset("n1", 42, 1024)
    for i in range(3):
        net = ipaddress.IPv4Network((0x0AF40000 + ((index + i) % 1024) * 64, 26))
        store.put(new_block(42, net, "other"))
    reply = allocated(n1.allocate("a/eth0"))
    expected = ipaddress.IPv4Network((0x0AF40000 + ((index + 3) % 1024) * 64, 26))
    assert reply.block == str(expected)
    assert store.writes["create"] == 4


def test_queued_requests_share_one_write(nodes: Callable[..., Node], store: FakeBlockStore) -> None:
    n1 = nodes("n1")
    allocated(n1.allocate("warm/eth0"))
    gate = threading.Event()
    entered = threading.Event()

    def hold_first_write(op: str, target: str) -> None:
        if not entered.is_set():
            entered.set()
            gate.wait(TIMEOUT)

    store.before_write = hold_first_write
    first = n1.ref.ask(AllocateAddress(key="k0/eth0", pod=PodRef(), domain=DOMAIN), block=False)
    entered.wait(TIMEOUT)
    futures = [
        n1.ref.ask(AllocateAddress(key=f"k{i}/eth0", pod=PodRef(), domain=DOMAIN), block=False)
        for i in range(1, 30)
    ]
    futures.append(n1.ref.ask(ReleaseAddress(key="k1/eth0"), block=False))
    futures.append(
        n1.ref.ask(AllocateAddress(key="k1/eth0", pod=PodRef(), domain=DOMAIN), block=False)
    )
    writes = store.writes["status"]
    gate.set()
    replies = [first.get(timeout=TIMEOUT), *(f.get(timeout=TIMEOUT) for f in futures)]
    assert all(isinstance(r, AddressAllocated | AddressReleased) for r in replies), replies
    # k0 alone, then k1..k29 + release + re-allocate of k1 in a single write.
    assert store.writes["status"] - writes <= 2
    held = {r.key: r.address for r in replies if isinstance(r, AddressAllocated)}
    assert len(set(held.values())) == len(held) == 30
    assert replies[-2] == AddressReleased(key="k1/eth0", address=replies[1].address)
    assert_sound(store)
    (block,) = store.blocks.values()
    assert {k for k, _ in block.key_addresses()} == {"warm/eth0", *held}


# -- housekeeping --------------------------------------------------------------------


def test_empty_blocks_are_returned_after_two_observations_keeping_one(
    nodes: Callable[..., Node], store: FakeBlockStore
) -> None:
    n1 = nodes("n1")
    domain = make_domain(prefix="10.20.0.0", prefixlen=24, ipblocklen=29, vrf=7)
    keys = [f"c{i}/eth0" for i in range(12)]
    for key in keys:
        allocated(n1.allocate(key, domain=domain))
    allocated(n1.allocate("other/eth0"))  # another VRF, untouched
    assert len(store.blocks) == 4
    for key in keys[:5] + keys[10:]:
        n1.release(key)
    first = n1.reconcile()
    assert first.returned_blocks == ()
    assert len(store.blocks) == 4
    # One of the two empty blocks is in use again at the second look: only the other goes.
    again = allocated(n1.allocate("again/eth0", domain=domain))
    second = n1.reconcile()
    assert len(second.returned_blocks) == 1
    assert block_name(7, ipaddress.IPv4Network(again.block)) not in second.returned_blocks
    assert_sound(store)
    for key in [*keys[5:10], "again/eth0"]:
        n1.release(key)
    assert n1.reconcile().returned_blocks == ()
    third = n1.reconcile()
    assert len(third.returned_blocks) == 1
    vrf7 = [b for b in store.blocks.values() if b.vrf == 7]
    assert len(vrf7) == 1 and vrf7[0].pod_count == 0  # one block kept per VRF
    assert len(store.blocks) == 2
    assert n1.netlink.last_blocks == {b.cidr for b in store.blocks.values()}
    assert n1.gauge("pyroute2_cni_ipam_blocks", 7) == 1
    assert n1.gauge("pyroute2_cni_ipam_addresses", 7) == 0
    assert_sound(store)
    assert n1.reconcile().returned_blocks == ()


def test_leaked_addresses_are_reclaimed_after_grace_and_second_look(
    nodes: Callable[..., Node], store: FakeBlockStore, clock: FakeClock
) -> None:
    n1 = nodes("n1")
    alive = PodInfo(namespace="ns", name="alive", uid="u-alive")
    gone = PodInfo(namespace="ns", name="gone", uid="u-gone")
    renamed = PodInfo(namespace="ns", name="same-name", uid="u-new")
    store.set_pods("n1", [alive, gone])
    allocated(n1.allocate("alive/eth0", pod=PodRef(namespace="ns", name="alive", uid="u-alive")))
    allocated(n1.allocate("gone/eth0", pod=PodRef(namespace="ns", name="gone", uid="u-gone")))
    allocated(n1.allocate("old/eth0", pod=PodRef(namespace="ns", name="same-name", uid="u-old")))
    allocated(n1.allocate("anon/eth0"))  # no pod recorded: never reclaimed by pod listing
    store.set_pods("n1", [alive, renamed])
    assert n1.reconcile().reclaimed == ()  # first observation
    clock.advance(SETTINGS.leak_grace - 1)
    assert n1.reconcile().reclaimed == ()  # second look, grace not over
    clock.advance(2)
    result = n1.reconcile()
    assert result.reclaimed == ("gone/eth0", "old/eth0")
    assert_sound(store)
    for key in ("alive/eth0", "anon/eth0"):
        assert isinstance(n1.ask(LookupAddress(key=key)), AddressLookupResult)
    (block,) = store.blocks.values()
    assert sorted(k for k, _ in block.key_addresses()) == ["alive/eth0", "anon/eth0"]


def test_leak_needs_a_second_observation_even_without_grace(
    nodes: Callable[..., Node], store: FakeBlockStore, clock: FakeClock
) -> None:
    n1 = nodes("n1", settings=IpamSection(leak_grace=0.0, reconcile_interval=86400.0))
    pod = PodRef(namespace="ns", name="p", uid="u")
    allocated(n1.allocate("p/eth0", pod=pod))
    assert n1.reconcile().reclaimed == ()
    # The pod shows up (a slow watch, say): the count starts again.
    store.set_pods("n1", [PodInfo(namespace="ns", name="p", uid="u")])
    assert n1.reconcile().reclaimed == ()
    store.set_pods("n1", [])
    assert n1.reconcile().reclaimed == ()
    assert n1.reconcile().reclaimed == ("p/eth0",)


def test_with_a_pod_watch_rounds_list_nothing_and_a_leak_is_confirmed_by_a_list(
    nodes: Callable[..., Node], store: FakeBlockStore, clock: FakeClock
) -> None:
    n1 = nodes("n1", settings=IpamSection(leak_grace=0.0, reconcile_interval=86400.0))
    late = PodInfo(namespace="ns", name="late", uid="u-late")
    gone = PodInfo(namespace="ns", name="gone", uid="u-gone")
    allocated(n1.allocate("late/eth0", pod=PodRef(namespace="ns", name="late", uid="u-late")))
    allocated(n1.allocate("gone/eth0", pod=PodRef(namespace="ns", name="gone", uid="u-gone")))
    store.set_pods("n1", [late])  # what the API server has
    store.pod_cache = {"n1": [late, gone]}  # the watch agrees for now
    lists = store.pod_lists
    for _ in range(3):
        assert n1.reconcile().reclaimed == ()
    assert store.pod_lists == lists  # steady state: no pod LIST at all
    # The watch lags: it lost `late` (say a relist is pending) and saw `gone` go.
    store.pod_cache = {"n1": []}
    assert n1.reconcile().reclaimed == ()  # first observation
    assert store.pod_lists == lists
    result = n1.reconcile()
    # Two candidates; the LIST confirms one: `late` exists, so its address stays.
    assert result.reclaimed == ("gone/eth0",)
    assert store.pod_lists == lists + 1
    assert isinstance(n1.ask(LookupAddress(key="late/eth0")), AddressLookupResult)
    # `late` counts again from the start: one more cache-only round reclaims nothing.
    assert n1.reconcile().reclaimed == ()
    assert store.pod_lists == lists + 1
    assert_sound(store)


def test_blocks_of_deleted_nodes_are_reclaimed_by_the_lease_holder_only(
    nodes: Callable[..., Node], store: FakeBlockStore, clock: FakeClock
) -> None:
    store.nodes = {"n1", "n2", "n3"}
    n1, n2, n3 = nodes("n1"), nodes("n2"), nodes("n3")
    for i in range(3):
        allocated(n3.allocate(f"c{i}/eth0"))
    allocated(n1.allocate("x/eth0"))
    n3.stop()
    store.nodes.discard("n3")
    r1 = n1.reconcile()
    assert r1.lease_held and r1.foreign_blocks_reclaimed == ()  # first observation
    assert store.leases[("pyroute2-cni", LEASE_NAME)].holder == "n1"
    reads = store.lease_reads
    for _ in range(3):
        r2 = n2.reconcile()
        assert not r2.lease_held and r2.foreign_blocks_reclaimed == ()
    # Another node holds it: read once per lease duration, not every round.
    assert store.lease_reads == reads + 1
    assert any(b.node == "n3" for b in store.blocks.values())
    r1 = n1.reconcile()
    assert len(r1.foreign_blocks_reclaimed) == 1
    assert {b.node for b in store.blocks.values()} == {"n1"}
    assert_sound(store)

    # The holder stops renewing (its last renewal was the round above, which n2 has not
    # read): n2 reads it a lease duration later, sees that renewal, and takes over at
    # the next read, a duration on, having seen no renewal since: within two durations.
    n1.stop()
    duration = lease_duration(SETTINGS)
    reads = store.lease_reads
    assert not n2.reconcile().lease_held
    clock.advance(duration - 1)
    assert not n2.reconcile().lease_held
    assert store.lease_reads == reads  # n2 read it at this clock's time already
    clock.advance(2)
    assert not n2.reconcile().lease_held
    assert store.lease_reads == reads + 1
    clock.advance(duration - 1)
    assert not n2.reconcile().lease_held
    clock.advance(1)
    assert n2.reconcile().lease_held
    lease = store.leases[("pyroute2-cni", LEASE_NAME)]
    assert lease.holder == "n2" and lease.transitions == 1


def test_the_holder_looks_for_deleted_nodes_when_told_of_one_and_hourly(
    nodes: Callable[..., Node], store: FakeBlockStore, clock: FakeClock
) -> None:
    store.nodes = {"n1", "n2"}
    n1, n2 = nodes("n1"), nodes("n2")
    allocated(n2.allocate("c/eth0"))
    n2.stop()
    assert n1.reconcile().lease_held  # the first round as holder scans
    assert store.node_lists == 1
    for _ in range(3):
        n1.reconcile()
    assert store.node_lists == 1  # nothing said a Node went: no cluster-wide LIST
    store.nodes.discard("n2")
    gone = crd.NodeInfo(name="n2", internal_ip="")
    n1.ask(crd.ClusterObjectChanged(kind=crd.ChangeKind.DELETED, obj=gone))
    assert n1.reconcile().foreign_blocks_reclaimed == ()  # first look
    assert len(n1.reconcile().foreign_blocks_reclaimed) == 1  # second look: gone
    assert store.node_lists == 3
    n1.reconcile()
    assert store.node_lists == 3
    clock.advance(FOREIGN_SCAN_INTERVAL)
    n1.reconcile()  # the hourly look, in case a deletion was missed
    assert store.node_lists == 4


def test_reconcile_reschedules_itself(store: FakeBlockStore, clock: FakeClock) -> None:
    node = Node("n1", store, clock, settings=IpamSection(reconcile_interval=0.5))
    try:
        store.nodes = {"n1"}
        wait_for(lambda: ("pyroute2-cni", LEASE_NAME) in store.leases, 5.0, "timer reconcile")
        lists = store.lists
        wait_for(lambda: store.lists > lists, 5.0, "a second timer reconcile")
    finally:
        node.stop()
    assert not node.crashes


def test_stop_cancels_the_timer(store: FakeBlockStore, clock: FakeClock) -> None:
    # A previous test's node of the same name may still be stopping its timer.
    before = set(threading.enumerate())
    node = Node("n1", store, clock, settings=IpamSection(reconcile_interval=3600.0))
    timers = [
        t for t in threading.enumerate() if t.name == "ipam-n1-reconcile-timer" and t not in before
    ]
    assert len(timers) == 1
    node.stop()
    timers[0].join(TIMEOUT)
    assert not timers[0].is_alive()
    assert store.closed == 1


def test_requests_in_an_exhausted_domain_cost_a_bounded_number_of_calls(
    nodes: Callable[..., Node], store: FakeBlockStore, clock: FakeClock
) -> None:
    domain = make_domain(prefix="10.30.0.0", prefixlen=24, ipblocklen=28, vrf=9)  # 16 blocks
    for i in range(16):
        net = ipaddress.IPv4Network((0x0A1E0000 + i * 16, 28))
        store.put(seeded_block(new_block(9, net, "other")))
    n1 = nodes("n1")
    first = n1.allocate("a/eth0", domain=domain)
    assert isinstance(first, Failure) and "all 16 /28 blocks" in first.reason
    assert store.writes["create"] == 16  # learned once which names are taken
    assert isinstance(n1.allocate("b/eth0", domain=domain), Failure)
    assert store.writes["create"] == 16  # nothing new to try within a reconcile interval
    # The other node returns one block; after an interval a few old names are tried again.
    freed = sorted(store.blocks)[5]
    del store.blocks[freed]
    tries = 0
    while True:
        clock.advance(SETTINGS.reconcile_interval)
        before = store.writes["create"]
        reply = n1.allocate("b/eth0", domain=domain)
        assert store.writes["create"] - before <= 8
        tries += 1
        if isinstance(reply, AddressAllocated):
            break
    assert tries <= 2 and block_name(9, ipaddress.IPv4Network(reply.block)) == freed
    assert_sound(store)
