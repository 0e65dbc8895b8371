"""Pod plumbing (netlink.plumbing) against the fake kernel, without the actor around it."""

from __future__ import annotations

import errno
import logging
from dataclasses import replace

import pytest

from pyroute2_cni.messages.base import ErrorKind, Failure, Ok
from pyroute2_cni.messages.crd import AttachmentType
from pyroute2_cni.messages.netlink import PlumbPod, PodPlumbed, UnplumbPod
from pyroute2_cni.netlink.names import host_veth_name
from pyroute2_cni.netlink.plumbing import (
    PodPlumbing,
    alias_record,
    plumb_failure,
    plumb_problem,
    plumb_request,
    pods_from,
)
from pyroute2_cni.netlink.pods import PodAlias, parse_pod_alias, pod_alias
from pyroute2_cni.netlink.specs import LinkChange, LinkSpec
from pyroute2_cni.values.attachment import parse_key
from tests.harness.domains import SYSTEM_DOMAIN
from tests.harness.fake_netlink import FakeKernel, FakeNetlink

pytestmark = pytest.mark.unit

NODE = "n1"
DOMAIN = SYSTEM_DOMAIN


def request(netns: str, cid: str = "c0ffee", address: str = "10.244.0.2") -> PlumbPod:
    return PlumbPod(
        container_id=cid,
        ifname="eth0",
        netns=netns,
        vrf=42,
        attachment=AttachmentType.L3VNI,
        address=address,
        prefixlen=26,
        gateway="10.244.0.1",
    )


@pytest.fixture
def kernel() -> FakeKernel:
    kernel = FakeKernel()
    FakeNetlink(kernel).link_create(
        LinkSpec(name="l3br-42", kind="bridge", mac="02:00:00:00:00:42", mtu=1450, up=True)
    )
    return kernel


def plumbing() -> PodPlumbing:
    return PodPlumbing(NODE, logging.getLogger(__name__))


def test_requests_are_refused_before_any_side_effect() -> None:
    msg = request("/run/netns/p")
    bad = plumb_problem(replace(msg, ifname="a/b"), DOMAIN, NODE)
    assert isinstance(bad, Failure) and bad.kind is ErrorKind.INVALID
    missing = plumb_problem(msg, None, NODE)
    assert isinstance(missing, Failure) and missing.kind is ErrorKind.TEMPORARY
    l2 = replace(msg, attachment=AttachmentType.L2VNI)
    wrong = plumb_problem(l2, DOMAIN, NODE)
    assert isinstance(wrong, Failure) and "no l2vni attachment" in wrong.reason
    assert plumb_problem(msg, DOMAIN, NODE) is None


def test_kernel_errors_a_client_can_act_on_become_invalid_and_others_are_raised() -> None:
    msg = request("/run/netns/p")
    for code in (errno.ENOENT, errno.EEXIST, errno.ENETUNREACH, errno.EINVAL):
        failure = plumb_failure(msg, OSError(code, "x"))
        assert failure.kind is ErrorKind.INVALID
    with pytest.raises(OSError) as raised:
        plumb_failure(msg, OSError(errno.EBUSY, "busy"))
    assert raised.value.errno == errno.EBUSY


def test_an_alias_without_address_or_netns_cannot_be_plumbed_again() -> None:
    record = PodAlias(vrf=42, attachment=AttachmentType.L3VNI, container_id="c", ifname="eth0")
    assert plumb_request(record) is None
    full = PodAlias(
        vrf=42,
        attachment=AttachmentType.L3VNI,
        container_id="c",
        ifname="eth0",
        netns="/run/netns/p",
        address="10.244.0.9",
        prefixlen=26,
        gateway="10.244.0.1",
    )
    again = plumb_request(full)
    assert again is not None and again.address == "10.244.0.9" and again.netns == "/run/netns/p"


@pytest.mark.parametrize("network", ["pyroute2-cni", "other-net"])
def test_the_alias_keeps_all_a_plumb_asked_for(network: str) -> None:
    msg = replace(request("/run/netns/p"), network=network)
    record = parse_pod_alias(pod_alias(alias_record(msg)))
    assert record is not None
    assert plumb_request(record) == msg


def test_plumb_then_read_back_from_the_aliases_alone(kernel: FakeKernel) -> None:
    ns = kernel.add_namespace("p1")
    backend = FakeNetlink(kernel)
    reply = plumbing().plumb(backend, request(ns), DOMAIN, 1450)
    assert isinstance(reply, PodPlumbed) and reply.mtu == 1450
    pod = FakeNetlink(kernel).open_netns(ns)
    link = pod.link_get("eth0")
    assert link is not None and link.up
    assert [(a.address, a.prefixlen) for a in pod.addresses(link.index)] == [("10.244.0.2", 26)]
    # A new instance knows the pod from the kernel only, and could plumb it again.
    fresh = plumbing()
    fresh.read(backend)
    fresh.remember()
    host = host_veth_name("c0ffee", "eth0")
    assert set(fresh.pods) == {host}
    assert fresh.plumbed[host].address == "10.244.0.2" and fresh.plumbed[host].netns == ns


def test_a_repeated_plumb_answers_the_same(kernel: FakeKernel) -> None:
    ns = kernel.add_namespace("p1")
    backend = FakeNetlink(kernel)
    pods = plumbing()
    first = pods.plumb(backend, request(ns), DOMAIN, 1450)
    writes = len(kernel.writes)
    assert pods.plumb(backend, request(ns), DOMAIN, 9000) == first  # the MTU it was given
    assert len(kernel.writes) == writes


def test_another_attachments_pair_is_not_taken_over(kernel: FakeKernel) -> None:
    ns = kernel.add_namespace("p1")
    backend = FakeNetlink(kernel)
    pods = plumbing()
    pods.plumb(backend, request(ns), DOMAIN, 1450)
    host = host_veth_name("c0ffee", "eth0")
    other = PodAlias(vrf=42, attachment=AttachmentType.L3VNI, container_id="x", ifname="eth0")
    backend.link_set(host, LinkChange(alias=pod_alias(other)))
    again = pods.plumb(backend, request(ns), DOMAIN, 1450)
    assert isinstance(again, Failure) and again.kind is ErrorKind.CONFLICT
    assert isinstance(pods.unplumb(backend, _unplumb(ns)), Failure)
    assert backend.link_get(host) is not None


def _unplumb(ns: str) -> UnplumbPod:
    return UnplumbPod(container_id="c0ffee", ifname="eth0", netns=ns)


def test_unplumb_removes_the_pair_and_a_second_unplumb_is_ok(kernel: FakeKernel) -> None:
    ns = kernel.add_namespace("p1")
    backend = FakeNetlink(kernel)
    pods = plumbing()
    pods.plumb(backend, request(ns), DOMAIN, 1450)
    assert pods.unplumb(backend, _unplumb(ns)) == Ok()
    assert pods.unplumb(backend, _unplumb(ns)) == Ok()
    assert backend.link_get(host_veth_name("c0ffee", "eth0")) is None
    assert pods.pods == {} and pods.plumbed == {}


def test_reconcile_puts_a_pod_back_on_its_bridge_and_hands_back_vanished_pairs(
    kernel: FakeKernel,
) -> None:
    backend = FakeNetlink(kernel)
    pods = plumbing()
    stays, goes = kernel.add_namespace("p1"), kernel.add_namespace("p2")
    pods.plumb(backend, request(stays, "aaaa"), DOMAIN, 1450)
    pods.plumb(backend, request(goes, "bbbb", "10.244.0.3"), DOMAIN, 1450)
    kept, gone = host_veth_name("aaaa", "eth0"), host_veth_name("bbbb", "eth0")
    backend.link_set(kept, LinkChange(master=""))
    kernel.delete_link(gone)
    done: list[str] = []
    missing = pods.reconcile(backend, done.append)
    assert [m.container_id for m in missing] == ["bbbb"]
    assert gone not in pods.plumbed  # handed to the caller, not counted as plumbed
    assert len(done) == 1 and kept in done[0]
    bridge = backend.link_get("l3br-42")
    link = backend.link_get(kept)
    assert bridge is not None and link is not None and link.master == bridge.index
    assert pods.reconcile(backend, done.append) == []  # nothing more to repair


def test_only_the_awaited_address_is_plumbed_again() -> None:
    pods = plumbing()
    msg = request("/run/netns/p")
    pods.awaiting[host_veth_name("c0ffee", "eth0")] = msg
    key = parse_key("c0ffee/eth0")
    assert key is not None
    assert pods.confirmed(key, "10.244.0.99") is None  # plumbed afresh with another address
    assert pods.confirmed(key, "10.244.0.2") == msg
    assert pods.awaiting == {}
    assert pods.confirmed(key, "10.244.0.2") is None


def test_pods_are_read_from_host_veth_aliases_only(kernel: FakeKernel) -> None:
    ns = kernel.add_namespace("p1")
    backend = FakeNetlink(kernel)
    plumbing().plumb(backend, request(ns), DOMAIN, 1450)
    links = backend.links()
    assert set(pods_from(links)) == {host_veth_name("c0ffee", "eth0")}
    assert pods_from(FakeNetlink(kernel, netns=ns).links()) == {}  # the pod end has no alias
