"""NetlinkActor against FakeNetlink: domains, pods, inventory, drift, names."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import pykka
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyroute2_cni.actors.base import ActorHooks
from pyroute2_cni.actors.netlink_actor import NetlinkActor
from pyroute2_cni.messages.base import ErrorKind, Failure, Ok
from pyroute2_cni.messages.crd import (
    Attachment,
    AttachmentType,
    ChangeKind,
    ClusterObjectChanged,
    ClusterSnapshot,
    NamespaceChanged,
    NodeInterface,
    VrfDomainSpec,
    VrfNodeConfigSpec,
)
from pyroute2_cni.messages.frr import VniKnown
from pyroute2_cni.messages.ipam import (
    BlockInfo,
    NodeBlocksChanged,
)
from pyroute2_cni.messages.netlink import (
    BringUpVrfDomain,
    CheckPod,
    DomainState,
    EnsureVrfDomain,
    ListPlumbedPods,
    PlumbedPods,
    PlumbPod,
    PodCheckResult,
    PodPlumbed,
    Reconcile,
    ReconcileResult,
    RemoveVrfDomain,
    UnplumbPod,
)
from pyroute2_cni.netlink.names import (
    IFNAMSIZ,
    bridge_mac,
    bridge_name,
    host_veth_name,
    stable_mac,
    valid_ifname,
    vrf_name,
    vxlan_name,
)
from pyroute2_cni.netlink.pods import PodAlias, parse_pod_alias, pod_alias
from pyroute2_cni.netlink.specs import (
    OUR_PROTO,
    PREF_L3MDEV,
    PREF_LOCAL,
    PREF_SYSTEM,
    TABLE_LOCAL,
    UNREACHABLE_METRIC,
    LinkChange,
    LinkState,
    RouteSpec,
    RuleSpec,
)
from pyroute2_cni.runtime.config import NetlinkSection, Settings
from pyroute2_cni.runtime.metrics import Metrics
from tests.harness.domains import SYSTEM_DOMAIN
from tests.harness.fake_netlink import FakeKernel, FakeNetlink
from tests.harness.fake_peers import IpamStub
from tests.harness.waiting import wait_for

pytestmark = pytest.mark.unit

NODE = "node-a"
TIMEOUT = 10.0

# The system domain on 10.42.0.0/16 (vrf 42, l3vni 42).
SYSTEM = replace(SYSTEM_DOMAIN, name="system", prefix="10.42.0.0")
TENANT = VrfDomainSpec(
    name="tenant",
    vrf=200,
    table=200,
    prefix="10.200.0.0",
    prefixlen=16,
    ipblocklen=26,
    attachments=(
        Attachment(type=AttachmentType.L3VNI, vni=200),
        Attachment(type=AttachmentType.L2VNI, vni=2000, port=4790),
    ),
)
BLOCKS = (
    BlockInfo(vrf=42, cidr="10.42.0.0/26", gateway="10.42.0.1"),
    BlockInfo(vrf=200, cidr="10.200.0.0/26", gateway="10.200.0.1"),
)


def settings(**netlink: Any) -> Settings:
    # No timer-driven reconcile during a test unless it asks for one.
    return Settings(netlink=NetlinkSection(**{"reconcile_interval": 3600, **netlink}))


@dataclass
class Rig:
    kernel: FakeKernel
    ipam: IpamStub = field(default_factory=IpamStub)
    metrics: Metrics = field(default_factory=Metrics)
    settings: Settings = field(default_factory=settings)
    actor: pykka.ActorRef[Any] | None = None
    crashes: list[BaseException | None] = field(default_factory=list)

    def start(self) -> None:
        self.actor = NetlinkActor.start(
            ActorHooks(
                name="netlink", generation=1, on_crash=lambda n, g, e: self.crashes.append(e)
            ),
            node=NODE,
            settings=self.settings,
            backend_factory=lambda: FakeNetlink(self.kernel),
            metrics=self.metrics,
            ipam=self.ipam,
        )

    def restart(self) -> None:
        assert self.actor is not None
        self.actor.stop()
        self.start()

    def ask(self, message: Any) -> Any:
        assert self.actor is not None
        return self.actor.ask(message, timeout=TIMEOUT)

    def link(self, name: str, netns: str | None = None) -> LinkState | None:
        return FakeNetlink(self.kernel, netns=netns).link_get(name)

    def names(self) -> set[str]:
        return {link.name for link in FakeNetlink(self.kernel).links()}

    def repairs(self, kind: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "pyroute2_cni_netlink_repairs_total", {"kind": kind}
        )
        return value or 0.0

    def pod(self, name: str) -> str:
        return self.kernel.add_namespace(name)

    def ready(self) -> None:
        """Both domains ensured, blocks known, devices up."""
        assert isinstance(self.ask(EnsureVrfDomain(domain=SYSTEM, system=True)), DomainState)
        assert isinstance(self.ask(EnsureVrfDomain(domain=TENANT, system=False)), DomainState)
        assert self.ask(NodeBlocksChanged(blocks=BLOCKS)) == Ok()
        assert isinstance(self.ask(BringUpVrfDomain(vrf=42)), DomainState)
        assert isinstance(self.ask(BringUpVrfDomain(vrf=200)), DomainState)


@pytest.fixture
def rig() -> Iterator[Rig]:
    kernel = FakeKernel()
    kernel.add_uplink("eth0", "192.168.50.2", 24, "192.168.50.1", mtu=1500)
    rig = Rig(kernel=kernel)
    rig.start()
    yield rig
    pykka.ActorRegistry.stop_all()
    assert rig.crashes == []


def plumb(netns: str, cid: str, address: str, vrf: int = 42, **kw: Any) -> PlumbPod:
    defaults: dict[str, Any] = {
        "container_id": cid,
        "ifname": "eth0",
        "netns": netns,
        "vrf": vrf,
        "attachment": AttachmentType.L3VNI if vrf == 42 else AttachmentType.L2VNI,
        "address": address,
        "prefixlen": 26 if vrf == 42 else 16,
        "gateway": "10.42.0.1" if vrf == 42 else "10.200.0.1",
    }
    defaults.update(kw)
    return PlumbPod(**defaults)


# -- domains ---------------------------------------------------------------------------


def test_ensure_creates_the_domain_down_with_stable_macs(rig: Rig) -> None:
    state = rig.ask(EnsureVrfDomain(domain=SYSTEM, system=True))
    assert state == DomainState(vrf=42, devices=("l3br-42", "l3vx-42", "vrf-42"), up=False)
    vrf, bridge, vxlan = rig.link("vrf-42"), rig.link("l3br-42"), rig.link("l3vx-42")
    assert vrf is not None and bridge is not None and vxlan is not None
    assert (vrf.kind, vrf.table, vrf.up) == ("vrf", 42, False)
    assert (bridge.master, bridge.up, bridge.mtu) == (vrf.index, False, 1450)
    assert bridge.mac == bridge_mac(NODE, AttachmentType.L3VNI, 42, 42)
    assert (vxlan.vni, vxlan.local, vxlan.port, vxlan.learning, vxlan.master) == (
        42,
        "192.168.50.2",
        4789,
        False,
        bridge.index,
    )
    assert (vxlan.port_neigh_suppress, vxlan.port_learning) == (False, False)
    assert all(int(link.mac[:2], 16) & 0x03 == 0x02 for link in (vrf, bridge, vxlan))
    node = FakeNetlink(rig.kernel)
    # The system table falls through for everything but its own prefix.
    assert [(r.dst, r.type, r.metric, r.proto) for r in node.routes(42)] == [
        ("10.42.0.0/16", "unreachable", UNREACHABLE_METRIC, OUR_PROTO)
    ]
    rules = {(r.priority, r.table, r.dst, r.l3mdev) for r in node.rules()}
    assert (PREF_SYSTEM, 42, "10.42.0.0/16", False) in rules
    assert (PREF_LOCAL, TABLE_LOCAL, "", False) in rules
    assert (0, TABLE_LOCAL, "", False) not in rules
    assert (PREF_L3MDEV, 0, "", True) in rules
    assert node.sysctl_get("net/ipv4/ip_forward") == "1"
    assert node.sysctl_get("net/ipv4/conf/default/rp_filter") == "0"
    assert node.sysctl_get("net/ipv4/conf/l3br-42/rp_filter") == "0"
    assert node.sysctl_get("net/ipv4/conf/all/send_redirects") == "0"
    assert node.sysctl_get("net/ipv4/conf/l3br-42/send_redirects") == "0"
    assert node.sysctl_get("net/ipv4/tcp_l3mdev_accept") == "1"
    assert node.sysctl_get("net/vrf/strict_mode") == "1"


def test_tenant_table_ends_unreachable_and_gets_no_rule(rig: Rig) -> None:
    rig.ask(EnsureVrfDomain(domain=TENANT, system=False))
    node = FakeNetlink(rig.kernel)
    assert [(r.dst, r.type) for r in node.routes(200)] == [("0.0.0.0/0", "unreachable")]
    assert not [r for r in node.rules() if r.table == 200]
    l2vx = rig.link("l2vx-2000")
    assert l2vx is not None
    assert (l2vx.port, l2vx.port_neigh_suppress, l2vx.port_learning) == (4790, True, False)
    assert rig.names() >= {"vrf-200", "l2br-200", "l3br-200", "l2vx-2000", "l3vx-200"}


def test_ensure_twice_changes_nothing(rig: Rig) -> None:
    rig.ready()
    before = list(rig.kernel.writes)
    rig.ready()
    assert rig.kernel.writes == before


def test_devices_come_up_per_vni_known(rig: Rig) -> None:
    rig.ask(EnsureVrfDomain(domain=TENANT, system=False))
    assert rig.ask(VniKnown(vrf=200, vni=2000)) == Ok()
    up = {
        n: link.up
        for n in ("vrf-200", "l2br-200", "l2vx-2000", "l3br-200", "l3vx-200")
        if (link := rig.link(n))
    }
    assert up == {
        "vrf-200": True,
        "l2br-200": True,
        "l2vx-2000": True,
        "l3br-200": False,
        "l3vx-200": False,
    }
    state = rig.ask(BringUpVrfDomain(vrf=200))
    assert isinstance(state, DomainState) and state.up
    assert all(link.up for link in FakeNetlink(rig.kernel).links() if link.name.endswith("-200"))


def test_bring_up_of_an_unknown_domain_waits_for_it(rig: Rig) -> None:
    reply = rig.ask(BringUpVrfDomain(vrf=42))
    assert isinstance(reply, Failure) and reply.kind is ErrorKind.TEMPORARY
    state = rig.ask(EnsureVrfDomain(domain=SYSTEM, system=True))
    assert isinstance(state, DomainState) and state.up


def test_block_gateways_follow_node_blocks(rig: Rig) -> None:
    rig.ready()
    node = FakeNetlink(rig.kernel)

    def addrs(name: str) -> set[tuple[str, int]]:
        link = node.link_get(name)
        assert link is not None
        return {(a.address, a.prefixlen) for a in node.addresses(link.index)}

    assert addrs("l3br-42") == {("10.42.0.1", 26)}
    # l2vni: one stretched subnet with the domain's prefix length, on the l2 bridge.
    assert addrs("l2br-200") == {("10.200.0.1", 16)}
    assert addrs("l3br-200") == set()
    rig.ask(
        NodeBlocksChanged(
            blocks=(
                BlockInfo(vrf=42, cidr="10.42.0.64/26", gateway="10.42.0.65"),
                BlockInfo(vrf=200, cidr="10.200.0.0/26", gateway="10.200.0.1"),
            )
        )
    )
    assert addrs("l3br-42") == {("10.42.0.65", 26)}


def test_addresses_are_not_pruned_before_blocks_are_known(rig: Rig) -> None:
    rig.ready()
    rig.restart()
    rig.ask(EnsureVrfDomain(domain=SYSTEM, system=True))
    link = rig.link("l3br-42")
    assert link is not None
    assert FakeNetlink(rig.kernel).addresses(link.index)


def test_remove_removes_everything(rig: Rig) -> None:
    rig.ready()
    assert rig.ask(RemoveVrfDomain(vrf=42)) == Ok()
    assert rig.ask(RemoveVrfDomain(vrf=200)) == Ok()
    node = FakeNetlink(rig.kernel)
    assert rig.names() == {"lo", "eth0"}
    assert node.routes(42) == () and node.routes(200) == ()
    assert not [r for r in node.rules() if r.table in (42, 200)]
    # Removing again is a success.
    assert rig.ask(RemoveVrfDomain(vrf=42)) == Ok()


def test_tenants_may_overlap_each_other_and_the_system_prefix(rig: Rig) -> None:
    rig.ask(EnsureVrfDomain(domain=SYSTEM, system=True))
    for vrf in (300, 301):
        overlapping = replace(
            SYSTEM,
            name=f"t{vrf}",
            vrf=vrf,
            table=vrf,
            attachments=(Attachment(type=AttachmentType.L3VNI, vni=vrf),),
        )
        assert isinstance(rig.ask(EnsureVrfDomain(domain=overlapping, system=False)), DomainState)
    rig.ask(
        NodeBlocksChanged(
            blocks=tuple(
                BlockInfo(vrf=v, cidr="10.42.0.0/26", gateway="10.42.0.1") for v in (42, 300, 301)
            )
        )
    )
    node = FakeNetlink(rig.kernel)
    for name in ("l3br-42", "l3br-300", "l3br-301"):
        link = node.link_get(name)
        assert link is not None
        assert [(a.address, a.prefixlen) for a in node.addresses(link.index)] == [("10.42.0.1", 26)]
    # Only the system domain has a rule; tenants end in their own table.
    assert [r.table for r in node.rules() if r.proto == OUR_PROTO and r.table not in (0, 255)] == [
        42
    ]


def test_conflicting_domains_are_reported_not_built(rig: Rig) -> None:
    rig.ask(EnsureVrfDomain(domain=SYSTEM, system=True))
    clash = replace(
        TENANT,
        name="clash",
        vrf=43,
        table=43,
        attachments=(Attachment(type=AttachmentType.L3VNI, vni=42),),
    )
    reply = rig.ask(EnsureVrfDomain(domain=clash, system=False))
    assert isinstance(reply, Failure) and reply.kind is ErrorKind.INVALID
    assert "vrf-43" not in rig.names()


# -- cluster state ---------------------------------------------------------------------


def snapshot(
    *domains: VrfDomainSpec, configs: tuple[VrfNodeConfigSpec, ...] = ()
) -> ClusterSnapshot:
    return ClusterSnapshot(
        domains=domains, bindings=(), node_configs=configs, nodes=(), namespaces=()
    )


def test_snapshot_prunes_unknown_domains_only_once_the_desired_set_is_known(rig: Rig) -> None:
    rig.ready()
    rig.restart()
    # A new instance with no desired set yet: nothing is deleted.
    assert rig.ask(EnsureVrfDomain(domain=SYSTEM, system=True)) is not None
    assert rig.ask(Reconcile()).repairs == ()
    assert "vrf-200" in rig.names()
    # The snapshot says only the system domain exists: the tenant's devices go.
    assert rig.ask(snapshot(SYSTEM)) == Ok()
    assert not {n for n in rig.names() if n.endswith("-200") or n.endswith("-2000")}
    assert FakeNetlink(rig.kernel).routes(200) == ()
    # The system flag comes from [default] vrf.
    assert [r.table for r in FakeNetlink(rig.kernel).rules() if r.priority == PREF_SYSTEM] == [42]


def test_watch_events_add_and_delete_domains(rig: Rig) -> None:
    rig.ask(snapshot(SYSTEM))
    assert rig.ask(ClusterObjectChanged(kind=ChangeKind.ADDED, obj=TENANT)) == Ok()
    assert "vrf-200" in rig.names()
    assert rig.ask(ClusterObjectChanged(kind=ChangeKind.DELETED, obj=TENANT)) == Ok()
    assert "vrf-200" not in rig.names()
    assert rig.ask(NamespaceChanged(kind=ChangeKind.ADDED, name="x")) is None


def test_vtep_from_this_nodes_vrfnodeconfig(rig: Rig) -> None:
    rig.kernel.add_uplink("eth1", "198.51.100.7", 24, "198.51.100.1", mtu=9000)
    mine = VrfNodeConfigSpec(
        name="a", node=NODE, interfaces=(NodeInterface(name="eth1", local="198.51.100.7"),)
    )
    other = VrfNodeConfigSpec(
        name="b", node="node-b", interfaces=(NodeInterface(name="eth0", local="192.168.50.9"),)
    )
    rig.ask(snapshot(SYSTEM, configs=(other, mine)))
    vxlan, bridge = rig.link("l3vx-42"), rig.link("l3br-42")
    assert vxlan is not None and bridge is not None
    assert (vxlan.local, bridge.mtu) == ("198.51.100.7", 8950)
    moved = replace(mine, interfaces=(NodeInterface(name="eth0", local="192.168.50.2"),))
    rig.ask(ClusterObjectChanged(kind=ChangeKind.MODIFIED, obj=moved))
    vxlan = rig.link("l3vx-42")
    assert vxlan is not None and vxlan.local == "192.168.50.2"


def test_settings_mtu_and_vtep_interface_override() -> None:
    kernel = FakeKernel()
    kernel.add_uplink("eth0", "192.168.50.2", 24, "192.168.50.1")
    kernel.add_uplink("eth9", "203.0.113.5", 24, "203.0.113.1", mtu=9000)
    base = settings(vtep_interface="eth9")
    rig = Rig(kernel=kernel, settings=replace(base, daemon=replace(base.daemon, mtu=1300)))
    rig.start()
    try:
        rig.ask(EnsureVrfDomain(domain=SYSTEM, system=True))
        vxlan = rig.link("l3vx-42")
        assert vxlan is not None and (vxlan.local, vxlan.mtu) == ("203.0.113.5", 1300)
    finally:
        pykka.ActorRegistry.stop_all()


# -- pods ------------------------------------------------------------------------------


def test_plumb_check_unplumb(rig: Rig) -> None:
    rig.ready()
    ns = rig.pod("pod1")
    result = rig.ask(plumb(ns, "c0ffee", "10.42.0.2"))
    assert isinstance(result, PodPlumbed)
    host = host_veth_name("c0ffee", "eth0")
    assert (result.host.name, result.container.name, result.container.sandbox) == (host, "eth0", ns)
    assert result.mtu == result.container.mtu == 1450
    link = rig.link(host)
    bridge = rig.link("l3br-42")
    assert link is not None and bridge is not None
    assert (link.master, link.up, link.mtu, link.mac) == (bridge.index, True, 1450, result.host.mac)
    record = parse_pod_alias(link.alias)
    assert record == PodAlias(
        vrf=42,
        attachment=AttachmentType.L3VNI,
        container_id="c0ffee",
        ifname="eth0",
        netns=ns,
        address="10.42.0.2",
        prefixlen=26,
        gateway="10.42.0.1",
    )
    pod = FakeNetlink(rig.kernel).open_netns(ns)
    peer = pod.link_get("eth0")
    assert peer is not None and peer.up and peer.mac == result.container.mac
    assert {(a.address, a.prefixlen) for a in pod.addresses(peer.index)} == {("10.42.0.2", 26)}
    assert [(r.gateway, r.oif) for r in pod.routes(254) if r.dst == "0.0.0.0/0"] == [
        ("10.42.0.1", peer.index)
    ]
    assert rig.kernel.ns(ns).announcements == [("eth0", "10.42.0.2", result.container.mac)]

    check = CheckPod(
        container_id="c0ffee",
        ifname="eth0",
        netns=ns,
        address="10.42.0.2",
        prefixlen=26,
        gateway="10.42.0.1",
        mtu=1450,
    )
    assert rig.ask(check) == PodCheckResult(ok=True, differences=())
    wrong = rig.ask(replace(check, address="10.42.0.3", gateway="10.42.0.9", mtu=1400))
    assert isinstance(wrong, PodCheckResult) and not wrong.ok
    assert len(wrong.differences) == 4  # host mtu, pod mtu, address, gateway

    assert rig.ask(UnplumbPod(container_id="c0ffee", ifname="eth0", netns=ns)) == Ok()
    assert rig.link(host) is None
    assert FakeNetlink(rig.kernel).open_netns(ns).link_get("eth0") is None
    assert rig.ask(UnplumbPod(container_id="c0ffee", ifname="eth0", netns=ns)) == Ok()
    gone = rig.ask(check)
    assert isinstance(gone, PodCheckResult) and "host veth is missing" in gone.differences


def test_plumb_twice_returns_the_same_and_writes_nothing(rig: Rig) -> None:
    rig.ready()
    ns = rig.pod("pod1")
    first = rig.ask(plumb(ns, "c0ffee", "10.200.1.2", vrf=200))
    writes = list(rig.kernel.writes)
    assert rig.ask(plumb(ns, "c0ffee", "10.200.1.2", vrf=200)) == first
    assert rig.kernel.writes == writes
    link = rig.link(first.host.name)
    l2 = rig.link("l2br-200")
    assert link is not None and l2 is not None and link.master == l2.index
    # Drift inside the pod is put back by a repeated ADD.
    pod = FakeNetlink(rig.kernel).open_netns(ns)
    pod.link_set("eth0", LinkChange(up=False))
    assert rig.ask(plumb(ns, "c0ffee", "10.200.1.2", vrf=200)) == first
    peer = pod.link_get("eth0")
    assert peer is not None and peer.up


def test_unplumb_succeeds_when_the_netns_is_gone(rig: Rig) -> None:
    rig.ready()
    ns = rig.pod("pod1")
    result = rig.ask(plumb(ns, "c0ffee", "10.42.0.2"))
    assert isinstance(result, PodPlumbed)
    rig.kernel.remove_namespace(ns)
    assert rig.ask(UnplumbPod(container_id="c0ffee", ifname="eth0", netns=ns)) == Ok()
    assert rig.link(result.host.name) is None
    check = rig.ask(
        CheckPod(
            container_id="c0ffee",
            ifname="eth0",
            netns=ns,
            address="10.42.0.2",
            prefixlen=26,
            gateway="10.42.0.1",
            mtu=0,
        )
    )
    assert (
        isinstance(check, PodCheckResult) and "pod network namespace is gone" in check.differences
    )


def test_a_pair_half_made_by_a_killed_daemon_is_replaced(rig: Rig) -> None:
    """kill -9 between creating the veth and setting its alias leaves an unlabelled pair."""
    rig.ready()
    ns = rig.pod("pod1")
    first = rig.ask(plumb(ns, "c0ffee", "10.42.0.2"))
    assert isinstance(first, PodPlumbed)
    FakeNetlink(rig.kernel).link_set(first.host.name, LinkChange(alias=""))
    rig.restart()
    rig.ready()
    again = rig.ask(plumb(ns, "c0ffee", "10.42.0.2"))
    assert isinstance(again, PodPlumbed) and again.host.name == first.host.name
    live = rig.link(first.host.name)
    assert live is not None and "c0ffee" in live.alias
    FakeNetlink(rig.kernel).link_set(first.host.name, LinkChange(alias=""))
    assert rig.ask(UnplumbPod(container_id="c0ffee", ifname="eth0", netns=ns)) == Ok()
    assert rig.link(first.host.name) is None


def test_plumb_failures_leave_nothing_behind(rig: Rig) -> None:
    unknown = rig.ask(plumb(rig.pod("p0"), "c1", "10.42.0.2"))
    assert isinstance(unknown, Failure) and unknown.kind is ErrorKind.TEMPORARY
    rig.ready()
    missing = rig.ask(plumb("/run/netns/nope", "c1", "10.42.0.2"))
    assert isinstance(missing, Failure) and missing.kind is ErrorKind.INVALID
    ns = rig.pod("p1")
    bad_gateway = rig.ask(plumb(ns, "c1", "10.42.0.2", gateway="10.99.0.1"))
    assert isinstance(bad_gateway, Failure) and bad_gateway.kind is ErrorKind.INVALID
    assert rig.link(host_veth_name("c1", "eth0")) is None
    assert FakeNetlink(rig.kernel).open_netns(ns).link_get("eth0") is None
    bad_id = rig.ask(plumb(ns, "bad id", "10.42.0.2"))
    assert isinstance(bad_id, Failure) and bad_id.kind is ErrorKind.INVALID
    wrong_attachment = rig.ask(plumb(ns, "c2", "10.42.0.2", attachment=AttachmentType.L2VNI))
    assert isinstance(wrong_attachment, Failure) and wrong_attachment.kind is ErrorKind.INVALID


def test_inventory_after_restart_finds_pods_and_creates_nothing(rig: Rig) -> None:
    rig.ready()
    results = {}
    for i in range(5):
        ns = rig.pod(f"pod{i}")
        results[i] = rig.ask(plumb(ns, f"c{i}", f"10.42.0.{i + 2}"))
    rig.restart()
    listed = rig.ask(ListPlumbedPods())
    assert isinstance(listed, PlumbedPods)
    assert sorted(p.container_id for p in listed.pods) == [f"c{i}" for i in range(5)]
    assert {p.vrf for p in listed.pods} == {42}
    writes = list(rig.kernel.writes)
    # The watcher's snapshot and IPAM's blocks arrive again; FRR has not said a word yet.
    assert rig.ask(snapshot(SYSTEM, TENANT)) == Ok()
    assert rig.ask(NodeBlocksChanged(blocks=BLOCKS)) == Ok()
    assert rig.ask(plumb("/run/netns/pod0", "c0", "10.42.0.2")) == results[0]
    assert rig.kernel.writes == writes, "a restarted actor changed the kernel"


def test_reconcile_repairs_drift_and_counts_it(rig: Rig) -> None:
    rig.ready()
    ns = rig.pod("pod1")
    host = rig.ask(plumb(ns, "c0ffee", "10.42.0.2")).host.name
    assert rig.ask(Reconcile()) == ReconcileResult(repairs=())
    rig.kernel.delete_link("l3vx-42")
    rig.kernel.drift_link("l3br-42", mtu=9000)
    rig.kernel.drift_link(host, master=0)
    node = FakeNetlink(rig.kernel)
    node.rule_delete(RuleSpec(priority=PREF_SYSTEM, table=42, dst="10.42.0.0/16"))
    node.route_delete(
        RouteSpec(table=200, dst="0.0.0.0/0", type="unreachable", metric=UNREACHABLE_METRIC)
    )
    node.sysctl_set("net/ipv4/ip_forward", "0")
    result = rig.ask(Reconcile())
    assert isinstance(result, ReconcileResult) and result.errors == ()
    assert len(result.repairs) == 6, result.repairs
    vxlan, bridge = rig.link("l3vx-42"), rig.link("l3br-42")
    assert vxlan is not None and bridge is not None
    assert (vxlan.up, vxlan.master, bridge.mtu) == (True, bridge.index, 1450)
    pod_link = rig.link(host)
    assert pod_link is not None and pod_link.master == bridge.index
    assert rig.repairs("link") == 2 and rig.repairs("pod") == 1
    assert rig.repairs("rule") == 1 and rig.repairs("route") == 1 and rig.repairs("sysctl") == 1
    assert rig.ask(Reconcile()).repairs == ()
    # Every pass is timed for /metrics, those that repaired nothing too.
    passes = rig.metrics.registry.get_sample_value("pyroute2_cni_netlink_reconcile_seconds_count")
    assert passes == 3


def test_a_pod_pair_deleted_by_hand_is_plumbed_again(rig: Rig) -> None:
    rig.ready()
    ns = rig.pod("pod1")
    first = rig.ask(plumb(ns, "c0ffee", "10.42.0.2"))
    gone_ns = rig.pod("pod2")
    gone = rig.ask(plumb(gone_ns, "c2", "10.42.0.3"))
    assert isinstance(first, PodPlumbed) and isinstance(gone, PodPlumbed)
    rig.ipam.held = {"c0ffee/eth0": "10.42.0.2", "c2/eth0": "10.42.0.3"}
    rig.kernel.delete_link(first.host.name)  # `ip link del` on the node: the pod end goes too
    assert FakeNetlink(rig.kernel).open_netns(ns).link_get("eth0") is None
    rig.kernel.remove_namespace(gone_ns)  # a sandbox gone without DEL: nothing to plumb into
    result = rig.ask(Reconcile())
    assert isinstance(result, ReconcileResult) and result.errors == ()
    # IPAM is asked first; its answer (already queued) plumbs the pod again.
    assert sorted(rig.ipam.asked) == ["c0ffee/eth0", "c2/eth0"]
    rig.ask(ListPlumbedPods())
    link, bridge = rig.link(first.host.name), rig.link("l3br-42")
    assert link is not None and bridge is not None
    assert (link.master, link.up, link.mac) == (bridge.index, True, first.host.mac)
    pod = FakeNetlink(rig.kernel).open_netns(ns)
    peer = pod.link_get("eth0")
    assert peer is not None and peer.up and peer.mac == first.container.mac
    assert {(a.address, a.prefixlen) for a in pod.addresses(peer.index)} == {("10.42.0.2", 26)}
    assert [r.gateway for r in pod.routes(254) if r.dst == "0.0.0.0/0"] == ["10.42.0.1"]
    assert rig.link(gone.host.name) is None
    assert rig.repairs("pod") == 1
    assert rig.ask(Reconcile()).repairs == ()
    # A restarted instance knows from the alias what the pod was given.
    rig.restart()
    rig.ready()
    rig.kernel.delete_link(first.host.name)
    rig.ask(Reconcile())
    rig.ask(ListPlumbedPods())
    assert rig.link(first.host.name) is not None and rig.repairs("pod") == 2
    # After a DEL there is nothing to put back.
    assert rig.ask(UnplumbPod(container_id="c0ffee", ifname="eth0", netns=ns)) == Ok()
    assert rig.ask(Reconcile()).repairs == ()
    assert rig.link(first.host.name) is None


def test_a_pod_is_not_plumbed_again_with_an_address_ipam_reclaimed(rig: Rig) -> None:
    """Issue 14 item 3: the alias says 10.42.0.2, IPAM gave it away meanwhile."""
    rig.ready()
    ns = rig.pod("pod1")
    first = rig.ask(plumb(ns, "c0ffee", "10.42.0.2"))
    assert isinstance(first, PodPlumbed)
    rig.kernel.delete_link(first.host.name)
    rig.ipam.held = {"c0ffee/eth0": None}  # IPAM not loaded yet: ask again next round
    rig.ask(Reconcile())
    rig.ask(ListPlumbedPods())
    assert rig.link(first.host.name) is None and rig.ipam.asked == ["c0ffee/eth0"]
    rig.ipam.held = {}  # reclaimed: the key holds nothing (or another pod holds .2)
    rig.ask(Reconcile())
    rig.ask(ListPlumbedPods())
    assert rig.ipam.asked == ["c0ffee/eth0", "c0ffee/eth0"]
    assert rig.link(first.host.name) is None
    assert FakeNetlink(rig.kernel).open_netns(ns).link_get("eth0") is None
    assert rig.repairs("pod") == 0
    # Given up: not asked again on later rounds.
    rig.ask(Reconcile())
    rig.ask(ListPlumbedPods())
    assert rig.ipam.asked == ["c0ffee/eth0", "c0ffee/eth0"]


def test_another_networks_del_and_check_leave_our_pod_alone(rig: Rig) -> None:
    rig.ready()
    ns = rig.pod("pod1")
    ours = rig.ask(plumb(ns, "c0ffee", "10.42.0.2"))
    assert isinstance(ours, PodPlumbed)
    other = UnplumbPod(container_id="c0ffee", ifname="eth0", netns=ns, network="other-net")
    assert rig.ask(other) == Ok()
    assert rig.link(ours.host.name) is not None
    check = rig.ask(
        CheckPod(
            container_id="c0ffee",
            ifname="eth0",
            netns=ns,
            network="other-net",
            address="10.42.0.2",
            prefixlen=26,
            gateway="10.42.0.1",
            mtu=0,
        )
    )
    assert isinstance(check, PodCheckResult) and not check.ok
    assert "attached to network pyroute2-cni, not other-net" in check.differences[0]
    # An ADD of another network for the same container and ifname is refused.
    clash = rig.ask(plumb(ns, "c0ffee", "10.42.0.9", network="other-net"))
    assert isinstance(clash, Failure) and "attached to network pyroute2-cni" in clash.reason
    (listed,) = rig.ask(ListPlumbedPods()).pods
    assert (listed.network, listed.address) == ("pyroute2-cni", "10.42.0.2")


def test_a_second_networks_pod_records_its_network_in_the_alias(rig: Rig) -> None:
    rig.ready()
    ns = rig.pod("pod1")
    pod = rig.ask(plumb(ns, "c0ffee", "10.42.0.7", ifname="net1", network="net-b"))
    assert isinstance(pod, PodPlumbed)
    link = rig.link(pod.host.name)
    assert link is not None and " net=net-b " in link.alias
    rig.restart()  # a new instance reads the network back from the alias
    rig.ready()
    (listed,) = rig.ask(ListPlumbedPods()).pods
    assert (listed.network, listed.ifname) == ("net-b", "net1")
    assert rig.ask(UnplumbPod(container_id="c0ffee", ifname="net1", netns=ns)) == Ok()
    assert rig.link(pod.host.name) is not None  # a DEL of the default network: not its
    gone = UnplumbPod(container_id="c0ffee", ifname="net1", netns=ns, network="net-b")
    assert rig.ask(gone) == Ok()
    assert rig.link(pod.host.name) is None


def test_scheduled_reconcile_rearms_itself() -> None:
    kernel = FakeKernel()
    kernel.add_uplink("eth0", "192.168.50.2", 24, "192.168.50.1")
    rig = Rig(kernel=kernel, settings=settings(reconcile_interval=0.5))
    rig.start()
    try:
        rig.ask(EnsureVrfDomain(domain=SYSTEM, system=True))
        kernel.delete_link("l3vx-42")
        wait_for(lambda: rig.link("l3vx-42") is not None, 10, "the scheduled reconcile")
        kernel.delete_link("l3vx-42")
        wait_for(lambda: rig.link("l3vx-42") is not None, 10, "the next scheduled reconcile")
    finally:
        pykka.ActorRegistry.stop_all()


def test_unknown_message_is_an_error(rig: Rig) -> None:
    reply = rig.ask(object())
    assert isinstance(reply, Failure) and reply.kind is ErrorKind.INVALID


# -- names and records -----------------------------------------------------------------


@given(
    vrf=st.integers(1, 65535),
    vni=st.integers(1, 16777215),
    cid=st.text("0123456789abcdefABCDEF-_.", min_size=1, max_size=128).filter(
        lambda s: s[0].isalnum()
    ),
    ifname=st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=15),
)
def test_names_fit_ifnamsiz(vrf: int, vni: int, cid: str, ifname: str) -> None:
    names = [vrf_name(vrf), host_veth_name(cid, ifname)]
    for kind in AttachmentType:
        names += [bridge_name(kind, vrf), vxlan_name(kind, vni)]
    assert all(len(n) <= IFNAMSIZ and valid_ifname(n) for n in names), names
    record = PodAlias(
        vrf=vrf,
        attachment=AttachmentType.L2VNI,
        container_id=cid,
        ifname=ifname,
        netns="/run/netns/" + "x" * 200,
        address="255.255.255.254",
        prefixlen=31,
        gateway="255.255.255.253",
    )
    alias = pod_alias(record)
    assert len(alias.encode()) <= 255
    parsed = parse_pod_alias(alias)
    assert parsed is not None and (parsed.container_id, parsed.ifname, parsed.vrf) == (
        cid,
        ifname,
        vrf,
    )
    assert (parsed.address, parsed.prefixlen, parsed.gateway) == (
        "255.255.255.254",
        31,
        "255.255.255.253",
    )
    # An alias from before the address fields still reads, without them.
    old = parse_pod_alias(pod_alias(replace(record, address="", netns="/run/netns/p")))
    assert old is not None and (old.address, old.prefixlen, old.netns) == ("", 0, "/run/netns/p")


def test_macs_are_stable_local_unicast_and_the_l2_gateway_is_anycast() -> None:
    assert stable_mac("a", "b") == stable_mac("a", "b") != stable_mac("a", "c")
    assert int(stable_mac("x")[:2], 16) & 0x03 == 0x02
    l2 = AttachmentType.L2VNI
    l3 = AttachmentType.L3VNI
    assert bridge_mac("n1", l2, 200, 2000) == bridge_mac("n2", l2, 200, 2000)
    assert bridge_mac("n1", l3, 200, 200) != bridge_mac("n2", l3, 200, 200)
