"""An attachment is (network name, container id, ifname): GC, DEL and CHECK of another network
touch nothing of ours, and GC never releases what an ADD is working on (issue 14, items 1-2).

The IPAM scoping runs on the real IPAMActor (fake block store); the CNI verbs go through the
real static shim to the real CNIServerActor (in-memory IPAM and netlink peers).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from pyroute2_cni.cni.attachment_gate import AttachmentGate
from pyroute2_cni.messages.ipam import (
    AddressesReleased,
    AllocationConfirmed,
    ConfirmAllocation,
    ReleaseAllExcept,
)
from pyroute2_cni.values.attachment import (
    DEFAULT_NETWORK,
    AttachmentId,
    attachment_key,
    key_network,
    parse_key,
)
from tests.harness.fake_ipam_store import FakeBlockStore
from tests.harness.waiting import wait_for
from tests.unit import test_cni_server as cni_server_tests
from tests.unit import test_ipam_actor as ipam_actor_tests
from tests.unit.test_cni_server import Node, call, conf
from tests.unit.test_ipam_actor import Node as IpamNode

# Fixtures shared with the CNI server and IPAM actor tests (pytest finds them by name here).
node = cni_server_tests.node
shim = cni_server_tests.shim
allocated = ipam_actor_tests.allocated
clock = ipam_actor_tests.clock
nodes = ipam_actor_tests.nodes
store = ipam_actor_tests.store

pytestmark = pytest.mark.unit

OTHER = "some-other-net"


def test_keys_of_the_default_network_keep_their_old_shape() -> None:
    assert attachment_key(DEFAULT_NETWORK, "c0ffee", "eth0") == "c0ffee/eth0"
    assert attachment_key(OTHER, "c0ffee", "eth0") == f"{OTHER}/c0ffee/eth0"
    # A record written before the network was part of the key is the default network's.
    assert parse_key("c0ffee/eth0") == AttachmentId(
        network=DEFAULT_NETWORK, container_id="c0ffee", ifname="eth0"
    )
    assert parse_key(f"{OTHER}/c0ffee/net1") == AttachmentId(
        network=OTHER, container_id="c0ffee", ifname="net1"
    )
    assert key_network("gateway") is None and parse_key("a//b") is None


def test_ipam_gc_releases_only_its_own_networks_attachments(
    nodes: Callable[..., IpamNode], store: FakeBlockStore
) -> None:
    n1 = nodes("n1")
    ours = ["a/eth0", "b/eth0", "c/eth0"]
    theirs = [f"{OTHER}/a/net1", f"{OTHER}/d/net1"]
    for key in ours + theirs:
        allocated(n1.allocate(key))
    # The lab's outage: GC for another network with nothing valid.
    assert n1.ask(ReleaseAllExcept(network="third-net", keep=frozenset())) == AddressesReleased(
        keys=()
    )
    reply = n1.ask(ReleaseAllExcept(network=OTHER, keep=frozenset({f"{OTHER}/d/net1"})))
    assert reply == AddressesReleased(keys=(f"{OTHER}/a/net1",))
    reply = n1.ask(ReleaseAllExcept(network=DEFAULT_NETWORK, keep=frozenset({"b/eth0"})))
    assert reply == AddressesReleased(keys=("a/eth0", "c/eth0"))
    (block,) = store.blocks.values()
    assert sorted(r.key for r in block.allocations.values()) == sorted(
        ["b/eth0", f"{OTHER}/d/net1", "gateway"]
    )


def test_ipam_confirms_an_allocation_before_a_replumb(nodes: Callable[..., IpamNode]) -> None:
    n1 = nodes("n1")
    first = allocated(n1.allocate("a/eth0"))
    answers: list[AllocationConfirmed] = []

    class Inbox:
        def tell(self, message: AllocationConfirmed) -> None:
            answers.append(message)

    n1.address.tell(ConfirmAllocation(key="a/eth0", address=first.address, reply_to=Inbox()))
    n1.address.tell(ConfirmAllocation(key="a/eth0", address="10.244.9.9", reply_to=Inbox()))
    n1.address.tell(ConfirmAllocation(key="gone/eth0", address=first.address, reply_to=Inbox()))
    wait_for(lambda: len(answers) == 3, 5, "three confirmations")
    assert [a.held for a in answers] == [True, False, False]


def gc_config(network: str, valid: list[str]) -> dict[str, object]:
    return {
        **conf(),
        "name": network,
        "cni.dev/valid-attachments": [{"containerID": c, "ifname": "eth0"} for c in valid],
    }


def test_gc_of_another_network_touches_nothing_of_ours(shim: Path, node: Node) -> None:
    for cid in ("aaa", "bbb", "ccc"):
        assert call(shim, node, "ADD", conf(), container=cid)[0] == 0
    before = dict(node.shared.allocations)
    assert call(shim, node, "GC", gc_config(OTHER, []), container=None)[0] == 0
    assert node.shared.allocations == before
    assert set(node.shared.plumbed) == {"aaa/eth0", "bbb/eth0", "ccc/eth0"}
    # DEL and CHECK of another network name the same container and ifname: not ours either.
    assert call(shim, node, "DEL", {**conf(), "name": OTHER}, container="aaa")[0] == 0
    assert node.shared.allocations == before
    # GC for our network keeps exactly what it lists.
    assert call(shim, node, "GC", gc_config(DEFAULT_NETWORK, ["bbb"]), container=None)[0] == 0
    assert set(node.shared.allocations) == {"bbb/eth0"}
    assert set(node.shared.plumbed) == {"bbb/eth0"}


def test_a_second_network_of_our_plugin_has_its_own_attachments(shim: Path, node: Node) -> None:
    assert call(shim, node, "ADD", conf(), container="aaa")[0] == 0
    rc, result = call(shim, node, "ADD", {**conf(), "name": OTHER}, container="bbb")
    assert rc == 0 and result is not None
    assert set(node.shared.allocations) == {"aaa/eth0", f"{OTHER}/bbb/eth0"}
    assert call(shim, node, "GC", gc_config(OTHER, []), container=None)[0] == 0
    assert set(node.shared.allocations) == {"aaa/eth0"}


def test_gc_never_releases_an_address_an_add_is_working_on(shim: Path, node: Node) -> None:
    """8 ADDs allocated and held in netlink; GC with an empty valid list meanwhile."""
    gate = threading.Event()
    node.shared.plumb_gate = gate
    node.shared.capacity = 16
    results: dict[str, tuple[int, object]] = {}

    def add(cid: str) -> None:
        results[cid] = call(shim, node, "ADD", conf(), container=cid)

    cids = [f"inflight{i}" for i in range(8)]
    threads = [threading.Thread(target=add, args=(cid,), daemon=True) for cid in cids]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: len(node.shared.allocations) == 8, 10, "8 ADDs allocated")
        gc_done: list[int] = []
        gc = threading.Thread(
            target=lambda: gc_done.append(
                call(shim, node, "GC", gc_config(DEFAULT_NETWORK, []), container=None)[0]
            ),
            daemon=True,
        )
        gc.start()
        # GC reached IPAM while every ADD is still in netlink; then let the ADDs finish.
        wait_for(lambda: node.shared.gc_calls == 1, 10, "GC answered by IPAM")
        gate.set()
        gc.join(timeout=20)
        assert gc_done == [0]
    finally:
        gate.set()
        for t in threads:
            t.join(timeout=30)
    assert all(rc == 0 for rc, _ in results.values()), results
    assert set(node.shared.allocations) == {f"{cid}/eth0" for cid in cids}
    # Once they have returned, a GC that does not list them releases them.
    assert call(shim, node, "GC", gc_config(DEFAULT_NETWORK, []), container=None)[0] == 0
    assert node.shared.allocations == {}


def test_the_gate_waits_for_gc_and_reports_open_keys() -> None:
    gate = AttachmentGate()
    entered, leave = threading.Event(), threading.Event()

    def add_b() -> None:
        with gate.working("b/eth0"):
            entered.set()
            leave.wait(5)

    with gate.working("a/eth0"):
        with gate.exclusive() as open_keys:
            assert open_keys == frozenset({"a/eth0"})
            worker = threading.Thread(target=add_b, daemon=True)
            worker.start()
            # While GC runs no attachment opens (a bounded look for a change that must
            # not happen).
            assert not entered.wait(0.2)
        assert entered.wait(5)
        assert gate.open_keys() == frozenset({"a/eth0", "b/eth0"})
    leave.set()
    worker.join(timeout=5)
    assert gate.open_keys() == frozenset()
