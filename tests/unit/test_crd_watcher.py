"""CRDWatcherActor and its watch pumps against the in-memory FakeCluster."""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import pykka
import pytest

from pyroute2_cni.actors.address import Address
from pyroute2_cni.actors.base import ActorHooks
from pyroute2_cni.actors.crd_watcher_actor import CRDWatcherActor, default_domain
from pyroute2_cni.kube.crd_validate import LiveBlock, Verdict
from pyroute2_cni.kube.crd_writer import desired_conditions, merged_conditions
from pyroute2_cni.kube.objects import Condition, DomainObject, Resource, convert
from pyroute2_cni.kube.transport import ApiError, WatchTimings
from pyroute2_cni.messages.base import Ping, Pong
from pyroute2_cni.messages.crd import (
    DEFAULT_ACCEPT_DEFAULT_ROUTE,
    Attachment,
    AttachmentType,
    ChangeKind,
    ClusterObjectChanged,
    ClusterSnapshot,
    ImportPrefix,
    NamespaceChanged,
    NodeInfo,
    NodeInterface,
    SendSnapshot,
    VrfDomainBindingSpec,
    VrfDomainSpec,
    VrfNodeConfigSpec,
)
from pyroute2_cni.messages.frr import FrrApplyReported
from pyroute2_cni.runtime.config import DefaultSection, Settings
from tests.harness.domains import SYSTEM_DOMAIN
from tests.harness.fake_kube_watch import FakeCluster, MessageLog, recorder
from tests.harness.waiting import wait_for
from tests.harness.watch_control import WatchControl

pytestmark = pytest.mark.unit

FAST = WatchTimings(
    server_timeout=5,
    quiet_timeout=10,
    backoff_initial=0.01,
    backoff_max=0.05,
    stop_timeout=2,
)
DOMAIN = Resource.VRF_DOMAIN
BINDING = Resource.VRF_DOMAIN_BINDING
NODE_CONFIG = Resource.VRF_NODE_CONFIG
NODE = Resource.NODE
NAMESPACE = Resource.NAMESPACE


def domain_spec(
    vrf: int,
    *,
    table: int | None = None,
    prefix: str = "10.1.0.0",
    prefixlen: int = 16,
    ipblocklen: int = 26,
    vni: int | None = None,
) -> dict[str, Any]:
    return {
        "vrf": vrf,
        "table": table if table is not None else 10000 + vrf,
        "prefix": prefix,
        "prefixlen": prefixlen,
        "ipblocklen": ipblocklen,
        "attachments": [{"type": "l3vni", "vni": vni or 60000 + vrf, "port": 4789}],
    }


def node_status(ip: str, heartbeat: str = "t0") -> dict[str, Any]:
    return {
        "addresses": [{"type": "Hostname", "address": "x"}, {"type": "InternalIP", "address": ip}],
        "conditions": [{"type": "Ready", "status": "True", "lastHeartbeatTime": heartbeat}],
    }


def seed(cluster: FakeCluster) -> None:
    """The README's example objects plus a node and two namespaces."""
    cluster.put(NAMESPACE, "default")
    cluster.put(NAMESPACE, "test02")
    cluster.put(NODE, "k8s02", status=node_status("192.168.124.2"))
    cluster.put(DOMAIN, "vrf-200", spec=domain_spec(200, table=10200, vni=60200))
    cluster.put(
        BINDING,
        "test02-vrf-200",
        spec={"namespaceRef": {"name": "test02"}, "vrfDomainRef": {"name": "vrf-200"}},
    )
    cluster.put(
        NODE_CONFIG,
        "k8s02-vrnc",
        spec={
            "nodeRef": {"name": "k8s02"},
            "routerId": "192.168.124.2",
            "routeReflectors": ["192.168.124.1"],
            "interfaces": [{"name": "eth1", "local": "192.168.124.2"}],
        },
    )


@dataclass
class Rig:
    cluster: FakeCluster
    control: WatchControl
    log: MessageLog
    subscriber: Address
    ref: pykka.ActorRef[Any]
    crashes: list[BaseException | None] = field(default_factory=list)
    others: list[pykka.ActorRef[Any]] = field(default_factory=list)

    def ready(self) -> bool:
        try:
            pong = self.ref.ask(Ping(seq=1), timeout=2)
        except pykka.ActorDeadError:
            return False
        return isinstance(pong, Pong) and pong.ready

    def changes(self) -> list[Any]:
        """Every change published so far, without sync()'s markers."""
        return [
            m
            for m in self.log.all()
            if isinstance(m, ClusterObjectChanged | NamespaceChanged)
            and not _changed_name(m).startswith("marker-")
        ]

    def snapshots(self) -> list[ClusterSnapshot]:
        return self.log.of(ClusterSnapshot)

    def wait_change(self, kind: ChangeKind, name: str, timeout: float = 5.0) -> Any:
        def found() -> Any:
            for m in self.log.all():
                if (
                    isinstance(m, ClusterObjectChanged | NamespaceChanged)
                    and m.kind is kind
                    and _changed_name(m) == name
                ):
                    return m
            return None

        return wait_for(found, timeout, f"{kind.value} {name}")

    def sync(self, *resources: Resource) -> None:
        """Wait until everything the fake emitted so far for `resources` (default: all)
        went through the actor: each pump hands on events in order, so a marker
        object's ADDED and DELETED arriving means what came before it arrived too."""
        global _markers
        for resource in resources or tuple(Resource):
            _markers += 1
            marker = f"marker-{_markers}"
            match resource:
                case Resource.VRF_DOMAIN:
                    spec: dict[str, Any] | None = domain_spec(
                        3000 + _markers, prefix="172.16.0.0", vni=5_000_000 + _markers
                    )
                case Resource.VRF_DOMAIN_BINDING:
                    spec = {"namespaceRef": {"name": "m"}, "vrfDomainRef": {"name": "m"}}
                case Resource.VRF_NODE_CONFIG:
                    spec = {"nodeRef": {"name": "m"}}
                case _:
                    spec = None
            self.cluster.put(resource, marker, spec=spec)
            self.wait_change(ChangeKind.ADDED, marker)
            self.cluster.delete(resource, marker)
            self.wait_change(ChangeKind.DELETED, marker)


_markers = 0


def _changed_name(message: ClusterObjectChanged | NamespaceChanged) -> str:
    return message.name if isinstance(message, NamespaceChanged) else message.obj.name


def start(
    cluster: FakeCluster,
    *,
    settings: Settings | None = None,
    control: WatchControl | None = None,
    crashes: list[BaseException | None] | None = None,
    name: str = "crd-watcher",
    timings: WatchTimings = FAST,
    block_lister: Callable[[], Iterable[LiveBlock]] | None = None,
) -> tuple[pykka.ActorRef[Any], Address, MessageLog, pykka.ActorRef[Any]]:
    subscriber, log, sub_ref = recorder()
    crash_list = crashes if crashes is not None else []
    hooks = ActorHooks(name=name, generation=1, on_crash=lambda _n, _g, exc: crash_list.append(exc))
    ref = CRDWatcherActor.start(
        hooks,
        settings=settings or Settings(),
        api_factory=lambda: None,
        subscribers=[subscriber],
        timings=timings,
        edge_factory=cluster.api,
        control=control,
        **({"block_lister": block_lister} if block_lister is not None else {}),
    )
    return ref, subscriber, log, sub_ref


@pytest.fixture
def make_rig() -> Iterator[Any]:
    rigs: list[Rig] = []

    def make(
        cluster: FakeCluster | None = None,
        *,
        seeded: bool = True,
        settings: Settings | None = None,
        wait_ready: bool = True,
        timings: WatchTimings = FAST,
        block_lister: Callable[[], Iterable[LiveBlock]] | None = None,
    ) -> Rig:
        cluster = cluster or FakeCluster()
        if seeded and not cluster.names(NAMESPACE):
            seed(cluster)
        control = WatchControl()
        crashes: list[BaseException | None] = []
        ref, subscriber, log, sub_ref = start(
            cluster,
            settings=settings,
            control=control,
            crashes=crashes,
            timings=timings,
            block_lister=block_lister,
        )
        rig = Rig(cluster, control, log, subscriber, ref, crashes, [sub_ref])
        rigs.append(rig)
        if wait_ready:
            wait_for(rig.ready, 5, "watcher ready")
        return rig

    yield make
    for rig in rigs:
        rig.cluster.release_lists()
        for ref in (rig.ref, *rig.others):
            ref.stop(block=True, timeout=5)


# -- conversion --------------------------------------------------------------------------------


def test_conversion_gives_typed_values() -> None:
    cluster = FakeCluster()
    seed(cluster)
    domain = convert(DOMAIN, cluster.get(DOMAIN, "vrf-200") or {})
    assert isinstance(domain, DomainObject)
    assert domain.spec == VrfDomainSpec(
        name="vrf-200",
        vrf=200,
        table=10200,
        prefix="10.1.0.0",
        prefixlen=16,
        ipblocklen=26,
        attachments=(Attachment(type=AttachmentType.L3VNI, vni=60200, port=4789),),
        resource_version=domain.resource_version,
    )
    assert domain.generation == 1
    assert convert(NODE_CONFIG, cluster.get(NODE_CONFIG, "k8s02-vrnc") or {}) == VrfNodeConfigSpec(
        name="k8s02-vrnc",
        node="k8s02",
        router_id="192.168.124.2",
        route_reflectors=("192.168.124.1",),
        interfaces=(NodeInterface(name="eth1", local="192.168.124.2"),),
    )
    assert convert(NODE, cluster.get(NODE, "k8s02") or {}) == NodeInfo(
        name="k8s02", internal_ip="192.168.124.2"
    )


def test_unreadable_domain_keeps_the_reason() -> None:
    obj = {
        "metadata": {"name": "bad", "resourceVersion": "5"},
        "spec": {**domain_spec(5), "attachments": [{"type": "l4vni", "vni": 1}]},
    }
    domain = convert(DOMAIN, obj)
    assert isinstance(domain, DomainObject)
    assert domain.spec is None
    assert domain.error == "spec.attachments[0].type ('l4vni') must be l2vni or l3vni"
    missing = convert(DOMAIN, {"metadata": {"name": "m"}, "spec": {"vrf": "7"}})
    assert isinstance(missing, DomainObject)
    assert missing.error == "spec.vrf ('7') must be an integer"


def test_routing_policy_fields_are_converted() -> None:
    obj = {
        "metadata": {"name": "vrf-5", "resourceVersion": "5"},
        "spec": {
            **domain_spec(5),
            "routeTargets": {"import": ["65100:5", "10.0.0.1:5"], "export": ["65100:5"]},
            "importPrefixes": [{"cidr": "192.0.2.0/24", "le": 28}, {"cidr": "198.51.100.0/24"}],
            "acceptDefaultRoute": False,
        },
    }
    domain = convert(DOMAIN, obj)
    assert isinstance(domain, DomainObject) and domain.spec is not None
    assert domain.spec.import_route_targets == ("65100:5", "10.0.0.1:5")
    assert domain.spec.export_route_targets == ("65100:5",)
    assert domain.spec.import_prefixes == (
        ImportPrefix(cidr="192.0.2.0/24", le=28),
        ImportPrefix(cidr="198.51.100.0/24"),
    )
    assert domain.spec.accept_default_route is False
    # Absent: the defaults every older object gets.
    plain = convert(DOMAIN, {"metadata": {"name": "vrf-6"}, "spec": domain_spec(6)})
    assert isinstance(plain, DomainObject) and plain.spec is not None
    assert (plain.spec.import_route_targets, plain.spec.export_route_targets) == ((), ())
    assert plain.spec.import_prefixes == ()
    assert plain.spec.accept_default_route is DEFAULT_ACCEPT_DEFAULT_ROUTE
    assert all(
        (a.import_route_targets, a.export_route_targets) == ((), ()) for a in plain.spec.attachments
    )


def test_l2vni_route_targets_are_converted() -> None:
    attachments = [
        {"type": "l2vni", "vni": 50005, "routeTargets": {"import": ["65100:5", "65100:6"]}},
        {"type": "l3vni", "vni": 60005},
    ]
    obj = {"metadata": {"name": "vrf-5"}, "spec": {**domain_spec(5), "attachments": attachments}}
    domain = convert(DOMAIN, obj)
    assert isinstance(domain, DomainObject) and domain.spec is not None
    l2, l3 = domain.spec.attachments
    assert (l2.import_route_targets, l2.export_route_targets) == (("65100:5", "65100:6"), ())
    assert (l3.import_route_targets, l3.export_route_targets) == ((), ())
    attachments[0]["routeTargets"] = {"export": "65100:5"}
    broken = convert(DOMAIN, obj)
    assert isinstance(broken, DomainObject) and broken.spec is None
    assert "spec.attachments[0].routeTargets.export must be a list" in broken.error


@pytest.mark.parametrize(
    ("extra", "error"),
    [
        ({"routeTargets": {"import": [65100]}}, "spec.routeTargets.import[0] (65100) must be"),
        ({"routeTargets": {"export": "65100:1"}}, "spec.routeTargets.export must be a list"),
        ({"importPrefixes": [{"le": 24}]}, "spec.importPrefixes[0].cidr is missing"),
        ({"importPrefixes": [{"cidr": "1.0.0.0/8", "le": "9"}]}, "importPrefixes[0].le ('9')"),
        ({"acceptDefaultRoute": "yes"}, "spec.acceptDefaultRoute ('yes') must be true or false"),
    ],
)
def test_malformed_routing_policy_keeps_the_reason(extra: dict[str, Any], error: str) -> None:
    obj = {"metadata": {"name": "bad"}, "spec": {**domain_spec(5), **extra}}
    domain = convert(DOMAIN, obj)
    assert isinstance(domain, DomainObject)
    assert domain.spec is None
    assert error in domain.error


def test_merged_conditions_keep_transition_time_and_other_types() -> None:
    verdict = Verdict(name="d", accepted=True, reason="Valid", message="ok")
    domain = DomainObject(name="d", generation=3, resource_version="9", spec=None)
    first = merged_conditions(domain, desired_conditions(verdict), "2024-01-01T00:00:00Z")
    assert first is not None
    assert [(c.type, c.status, c.observed_generation) for c in first] == [
        ("Accepted", "True", 3),
        ("Ready", "True", 3),
    ]
    foreign = Condition(type="Other", status="True", reason="X", message="")
    written = DomainObject(
        name="d",
        generation=3,
        resource_version="10",
        spec=None,
        conditions=(*first, foreign),
        observed_generation=3,
    )
    assert merged_conditions(written, desired_conditions(verdict), "2024-02-02T00:00:00Z") is None
    # Same status, new message: the transition time stays.
    reworded = Verdict(name="d", accepted=True, reason="Valid", message="still ok")
    again = merged_conditions(written, desired_conditions(reworded), "2024-02-02T00:00:00Z")
    assert again is not None
    by_type = {c.type: c for c in again}
    assert by_type["Accepted"].last_transition_time == "2024-01-01T00:00:00Z"
    assert by_type["Other"] == foreign
    rejected = Verdict(name="d", accepted=False, reason="InvalidSpec", message="bad")
    flipped = merged_conditions(written, desired_conditions(rejected), "2024-02-02T00:00:00Z")
    assert flipped is not None
    assert {c.type: c for c in flipped}["Ready"].last_transition_time == "2024-02-02T00:00:00Z"


def test_quiet_timeout_must_exceed_the_server_timeout() -> None:
    with pytest.raises(ValueError, match="quiet_timeout"):
        WatchTimings(server_timeout=300, quiet_timeout=300)
    assert WatchTimings().backoff(100) == WatchTimings().backoff_max


# -- snapshot, events, readiness ----------------------------------------------------------------


def test_initial_snapshot_and_ready(make_rig: Any) -> None:
    rig = make_rig()
    snapshot = wait_for(lambda: rig.snapshots(), 5, "snapshot")[0]
    assert [d.name for d in snapshot.domains] == ["vrf-200"]
    assert snapshot.bindings == (
        VrfDomainBindingSpec(name="test02-vrf-200", namespace="test02", domain="vrf-200"),
    )
    assert [c.name for c in snapshot.node_configs] == ["k8s02-vrnc"]
    assert snapshot.nodes == (NodeInfo(name="k8s02", internal_ip="192.168.124.2"),)
    assert snapshot.namespaces == ("default", "test02")
    # The snapshot comes first and alone: no events before it.
    assert isinstance(rig.log.all()[0], ClusterSnapshot)
    # Only one list per resource.
    assert all(rig.cluster.calls["list", r] == 1 for r in Resource)


def test_not_ready_until_every_resource_is_listed(make_rig: Any) -> None:
    cluster = FakeCluster()
    seed(cluster)
    cluster.hold_lists()
    rig = make_rig(cluster, wait_ready=False)
    pong = rig.ref.ask(Ping(seq=1), timeout=2)
    assert not pong.ready
    assert "listing" in pong.detail
    rig.ref.tell(SendSnapshot(to=rig.subscriber))
    cluster.release_lists()
    wait_for(rig.ready, 5, "ready")
    # One snapshot for being a subscriber, one for asking.
    wait_for(lambda: len(rig.snapshots()) == 2, 5, "two snapshots")
    assert not rig.changes()


def test_send_snapshot_after_sync_answers_at_once(make_rig: Any) -> None:
    rig = make_rig()
    other, other_log, other_ref = recorder("restarted")
    rig.others.append(other_ref)
    rig.ref.tell(SendSnapshot(to=other))
    snapshot = wait_for(lambda: other_log.of(ClusterSnapshot), 5, "snapshot")[0]
    assert [d.name for d in snapshot.domains] == ["vrf-200"]


def test_add_modify_delete_events_arrive_typed(make_rig: Any) -> None:
    rig = make_rig()
    c = rig.cluster
    c.put(DOMAIN, "vrf-300", spec=domain_spec(300, prefix="10.3.0.0"))
    added = rig.wait_change(ChangeKind.ADDED, "vrf-300")
    assert isinstance(added.obj, VrfDomainSpec) and added.obj.vrf == 300
    c.put(DOMAIN, "vrf-300", spec=domain_spec(300, prefix="10.3.0.0", ipblocklen=27))
    modified = rig.wait_change(ChangeKind.MODIFIED, "vrf-300")
    assert modified.obj.ipblocklen == 27
    c.delete(DOMAIN, "vrf-300")
    deleted = rig.wait_change(ChangeKind.DELETED, "vrf-300")
    assert deleted.obj.vrf == 300

    c.put(BINDING, "b2", spec={"namespaceRef": {"name": "n2"}, "vrfDomainRef": {"name": "vrf-200"}})
    assert rig.wait_change(ChangeKind.ADDED, "b2").obj == VrfDomainBindingSpec(
        name="b2", namespace="n2", domain="vrf-200"
    )
    c.put(NODE_CONFIG, "k8s02-vrnc", spec={"nodeRef": {"name": "k8s02"}, "routerId": "10.0.0.2"})
    assert rig.wait_change(ChangeKind.MODIFIED, "k8s02-vrnc").obj.router_id == "10.0.0.2"
    c.put(NODE, "k8s03", status=node_status("192.168.124.3"))
    assert rig.wait_change(ChangeKind.ADDED, "k8s03").obj == NodeInfo(
        name="k8s03", internal_ip="192.168.124.3"
    )
    c.delete(NAMESPACE, "test02")
    rig.wait_change(ChangeKind.DELETED, "test02")
    rig.sync()
    kinds = [
        (type(m.obj if isinstance(m, ClusterObjectChanged) else m).__name__, m.kind)
        for m in rig.changes()
    ]
    assert ("NodeInfo", ChangeKind.ADDED) in kinds
    assert not rig.crashes


def test_changes_that_keep_the_typed_value_are_not_published(make_rig: Any) -> None:
    rig = make_rig()
    c = rig.cluster
    c.put(NODE, "k8s02", status=node_status("192.168.124.2", heartbeat="t1"))
    c.put(NAMESPACE, "default", status={"phase": "Active"})
    # Someone else rewrites the domain's status: no spec change, nothing published.
    c.put(DOMAIN, "vrf-200", status={"conditions": []})
    rig.sync()
    assert rig.changes() == []


def test_unreadable_binding_is_treated_as_absent(make_rig: Any) -> None:
    rig = make_rig()
    rig.cluster.put(BINDING, "test02-vrf-200", spec={"namespaceRef": {"name": "test02"}})
    deleted = rig.wait_change(ChangeKind.DELETED, "test02-vrf-200")
    assert deleted.obj.domain == "vrf-200"


def test_unknown_event_types_are_ignored(make_rig: Any) -> None:
    rig = make_rig()
    rig.cluster.inject(NAMESPACE, {"type": "SOMETHING", "object": {"metadata": {"name": "x"}}})
    rig.cluster.inject(NAMESPACE, {"type": "ADDED", "object": "not an object"})
    rig.sync()
    assert not [m for m in rig.changes() if isinstance(m, NamespaceChanged) and m.name == "x"]
    assert rig.cluster.calls["list", NAMESPACE] == 1
    assert not rig.crashes


# -- resume, relist ------------------------------------------------------------------------------


def _offline_changes(cluster: FakeCluster) -> None:
    cluster.put(DOMAIN, "vrf-301", spec=domain_spec(301, prefix="10.31.0.0"))
    cluster.put(DOMAIN, "vrf-200", spec=domain_spec(200, table=10200, vni=60200, ipblocklen=28))
    cluster.delete(BINDING, "test02-vrf-200")
    cluster.put(NAMESPACE, "created-offline")
    cluster.delete(NAMESPACE, "default")


def _assert_offline_changes_seen(rig: Rig) -> None:
    rig.wait_change(ChangeKind.ADDED, "vrf-301")
    assert rig.wait_change(ChangeKind.MODIFIED, "vrf-200").obj.ipblocklen == 28
    rig.wait_change(ChangeKind.DELETED, "test02-vrf-200")
    rig.wait_change(ChangeKind.ADDED, "created-offline")
    rig.wait_change(ChangeKind.DELETED, "default")
    rig.sync()
    seen = [(m.kind, _changed_name(m)) for m in rig.changes()]
    # Each exactly once: nothing lost, nothing repeated.
    assert sorted(seen, key=str) == sorted(
        [
            (ChangeKind.ADDED, "vrf-301"),
            (ChangeKind.MODIFIED, "vrf-200"),
            (ChangeKind.DELETED, "test02-vrf-200"),
            (ChangeKind.ADDED, "created-offline"),
            (ChangeKind.DELETED, "default"),
        ],
        key=str,
    )


@pytest.mark.parametrize("how", ["closed", "broken", "quiet"])
def test_resume_after_a_dropped_stream_loses_nothing(make_rig: Any, how: str) -> None:
    rig = make_rig()
    c, control = rig.cluster, rig.control
    wait_for(lambda: all(c.open_streams(r) for r in Resource), 5, "streams open")
    for resource in (DOMAIN, BINDING, NAMESPACE):
        control.hold(resource)
        if how == "broken":
            c.break_streams(resource)
        elif how == "quiet":
            c.go_quiet(resource)
    wait_for(lambda: all(control.waiting(r) for r in (DOMAIN, BINDING, NAMESPACE)), 5, "pumps held")
    last_seen = {r: c.watch_versions[r][-1] for r in (DOMAIN, BINDING, NAMESPACE)}
    _offline_changes(c)
    for resource in (DOMAIN, BINDING, NAMESPACE):
        control.release(resource)
    _assert_offline_changes_seen(rig)
    # Resumed, not relisted, and from where the stream stopped.
    assert all(c.calls["list", r] == 1 for r in Resource)
    assert len(rig.snapshots()) == 1
    for resource, version in last_seen.items():
        assert int(c.watch_versions[resource][1]) >= int(version)


@pytest.mark.parametrize("as_http", [False, True])
def test_expired_resume_relists_and_synthesises_deletes(make_rig: Any, as_http: bool) -> None:
    rig = make_rig()
    c, control = rig.cluster, rig.control
    c.expire_as_http = as_http
    for resource in (DOMAIN, BINDING, NAMESPACE):
        control.hold(resource)
    wait_for(lambda: all(control.waiting(r) for r in (DOMAIN, BINDING, NAMESPACE)), 5, "pumps held")
    _offline_changes(c)
    for resource in (DOMAIN, BINDING, NAMESPACE):
        c.compact(resource)
        control.release(resource)
    _assert_offline_changes_seen(rig)
    assert all(c.calls["list", r] == 2 for r in (DOMAIN, BINDING, NAMESPACE))
    # A fresh snapshot after each relist, matching the cluster.
    snapshot = wait_for(lambda: len(rig.snapshots()) >= 4 and rig.snapshots()[-1], 5, "snapshots")
    assert [d.name for d in snapshot.domains] == ["vrf-200", "vrf-301"]
    assert snapshot.bindings == ()
    assert "default" not in snapshot.namespaces


def test_expired_error_event_mid_stream_relists(make_rig: Any) -> None:
    rig = make_rig()
    c = rig.cluster
    wait_for(lambda: c.open_streams(NODE), 5, "node stream")
    c.inject(
        NODE, {"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired"}}
    )
    wait_for(lambda: c.calls["list", NODE] == 2, 5, "node relist")
    wait_for(lambda: len(rig.snapshots()) == 2, 5, "second snapshot")
    c.put(NODE, "k8s09", status=node_status("10.0.0.9"))
    rig.wait_change(ChangeKind.ADDED, "k8s09")


def test_bookmark_moves_the_resume_version(make_rig: Any) -> None:
    rig = make_rig()
    c = rig.cluster
    wait_for(lambda: c.open_streams(NODE_CONFIG), 5, "stream")
    version = c.bookmark(NODE_CONFIG)
    wait_for(lambda: c.drained(NODE_CONFIG), 5, "bookmark handed on")
    assert c.calls["watch", NODE_CONFIG] == 1
    rig.control.cut(NODE_CONFIG)
    wait_for(lambda: len(c.watch_versions[NODE_CONFIG]) == 2, 5, "resumed")
    assert c.watch_versions[NODE_CONFIG][1] == version


def test_errors_back_off_and_recover(make_rig: Any) -> None:
    cluster = FakeCluster()
    seed(cluster)
    cluster.fail_next("list", ApiError(503, "ServiceUnavailable"), times=3)
    cluster.fail_next("watch", ApiError(0, "Unreachable"), times=3)
    rig = make_rig(cluster)
    rig.cluster.put(NAMESPACE, "after-errors")
    rig.wait_change(ChangeKind.ADDED, "after-errors")
    assert not rig.crashes


def test_a_pump_bug_crashes_the_actor(make_rig: Any) -> None:
    cluster = FakeCluster()
    seed(cluster)
    cluster.fail_next("watch", RuntimeError("bug in the edge"))
    rig = make_rig(cluster, wait_ready=False)
    wait_for(lambda: rig.crashes, 5, "crash reported")
    assert "bug in the edge" in str(rig.crashes[0])


def test_stop_ends_every_pump_promptly(make_rig: Any) -> None:
    rig = make_rig()
    wait_for(lambda: all(rig.cluster.open_streams(r) for r in Resource), 5, "streams open")
    rig.ref.stop(block=True, timeout=5)
    wait_for(
        lambda: not [t for t in threading.enumerate() if t.name.startswith("crd-watcher-")],
        2,
        "pump threads gone",
    )
    assert not any(rig.cluster.open_streams(r) for r in Resource)


# -- validation and status -----------------------------------------------------------------------


def conditions(cluster: FakeCluster, name: str) -> dict[str, dict[str, Any]]:
    obj = cluster.get(DOMAIN, name) or {}
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}


def test_status_is_written_once(make_rig: Any) -> None:
    rig = make_rig()
    c = rig.cluster
    wait_for(lambda: conditions(c, "vrf-200").get("Accepted"), 5, "Accepted written")
    cond = conditions(c, "vrf-200")
    assert cond["Accepted"]["status"] == "True"
    assert cond["Ready"]["status"] == "True"
    assert cond["Accepted"]["observedGeneration"] == 1
    assert (c.get(DOMAIN, "vrf-200") or {})["status"]["observedGeneration"] == 1
    rig.sync()
    assert c.status_writes["vrf-200"] == 1
    c.put(NODE, "k8s02", status=node_status("192.168.124.2", heartbeat="t9"))
    c.put(DOMAIN, "vrf-300", spec=domain_spec(300, prefix="10.3.0.0"))
    rig.wait_change(ChangeKind.ADDED, "vrf-300")
    wait_for(lambda: conditions(c, "vrf-300").get("Accepted"), 5, "vrf-300 status")
    rig.sync()
    assert (c.status_writes["vrf-200"], c.status_writes["vrf-300"]) == (1, 1)


def test_invalid_domain_is_rejected_not_published_and_recovers(make_rig: Any) -> None:
    rig = make_rig()
    c = rig.cluster
    c.put(DOMAIN, "vrf-400", spec=domain_spec(400, prefix="10.4.0.0", prefixlen=24, ipblocklen=20))
    wait_for(lambda: conditions(c, "vrf-400").get("Accepted"), 5, "status written")
    accepted = conditions(c, "vrf-400")["Accepted"]
    assert accepted["status"] == "False"
    assert accepted["reason"] == "InvalidSpec"
    assert "spec.ipblocklen (20)" in accepted["message"]
    assert "spec.prefixlen (24)" in accepted["message"]
    assert conditions(c, "vrf-400")["Ready"]["status"] == "False"
    rig.sync()
    assert not [m for m in rig.changes() if isinstance(m, ClusterObjectChanged)]
    # Fixed: published as ADDED, status flips.
    c.put(DOMAIN, "vrf-400", spec=domain_spec(400, prefix="10.4.0.0", prefixlen=24, ipblocklen=28))
    rig.wait_change(ChangeKind.ADDED, "vrf-400")
    wait_for(lambda: conditions(c, "vrf-400")["Accepted"]["status"] == "True", 5, "accepted")
    # Broken again: published as DELETED.
    c.put(DOMAIN, "vrf-400", spec=domain_spec(400, prefix="10.4.0.1", prefixlen=24))
    rig.wait_change(ChangeKind.DELETED, "vrf-400")
    wait_for(lambda: conditions(c, "vrf-400")["Accepted"]["status"] == "False", 5, "rejected")
    assert conditions(c, "vrf-400")["Accepted"]["observedGeneration"] == 3


def test_invalid_routing_policy_is_reported_in_accepted(make_rig: Any) -> None:
    rig = make_rig()
    c = rig.cluster
    policy = {
        "routeTargets": {"import": ["70000:65536"]},
        "importPrefixes": [{"cidr": "192.0.2.1/24"}],
    }
    c.put(DOMAIN, "vrf-401", spec={**domain_spec(401, prefix="10.41.0.0"), **policy})
    wait_for(lambda: conditions(c, "vrf-401").get("Accepted"), 5, "status written")
    accepted = conditions(c, "vrf-401")["Accepted"]
    assert (accepted["status"], accepted["reason"]) == ("False", "InvalidSpec")
    assert "spec.routeTargets.import[0] '70000:65536'" in accepted["message"]
    assert "spec.importPrefixes[0].cidr (192.0.2.1/24) has host bits set" in accepted["message"]
    rig.sync()
    assert not [m for m in rig.changes() if isinstance(m, ClusterObjectChanged)]
    # Fixed: deployed with its policy.
    fixed: dict[str, Any] = {"routeTargets": {"import": ["70000:65535"]}}
    fixed["acceptDefaultRoute"] = False
    c.put(DOMAIN, "vrf-401", spec={**domain_spec(401, prefix="10.41.0.0"), **fixed})
    added = rig.wait_change(ChangeKind.ADDED, "vrf-401")
    assert added.obj.import_route_targets == ("70000:65535",)
    assert added.obj.accept_default_route is False
    wait_for(lambda: conditions(c, "vrf-401")["Accepted"]["status"] == "True", 5, "accepted")


def test_route_target_leak_between_domains_rejects_the_newer(make_rig: Any) -> None:
    rig = make_rig()
    c = rig.cluster
    # vrf-200 (seeded) imports and exports the derived 65000:200.
    spec = {**domain_spec(402, prefix="10.42.0.0"), "routeTargets": {"export": ["65000:200"]}}
    c.put(DOMAIN, "vrf-402", spec=spec)
    wait_for(lambda: conditions(c, "vrf-402").get("Accepted"), 5, "status written")
    accepted = conditions(c, "vrf-402")["Accepted"]
    assert (accepted["status"], accepted["reason"]) == ("False", "DuplicateRouteTarget")
    assert "65000:200" in accepted["message"] and "VRFDomain vrf-200" in accepted["message"]
    assert conditions(c, "vrf-200")["Accepted"]["status"] == "True"


def test_conflict_loser_is_published_when_the_winner_goes(make_rig: Any) -> None:
    rig = make_rig()
    c = rig.cluster
    c.put(DOMAIN, "vrf-201", spec=domain_spec(201, prefix="10.9.0.0", vni=60200))
    wait_for(lambda: conditions(c, "vrf-201").get("Accepted"), 5, "status written")
    assert conditions(c, "vrf-201")["Accepted"]["reason"] == "DuplicateVNI"
    assert "VRFDomain vrf-200" in conditions(c, "vrf-201")["Accepted"]["message"]
    c.delete(DOMAIN, "vrf-200")
    rig.wait_change(ChangeKind.DELETED, "vrf-200")
    rig.wait_change(ChangeKind.ADDED, "vrf-201")
    wait_for(lambda: conditions(c, "vrf-201")["Accepted"]["status"] == "True", 5, "accepted")


def test_status_conflict_is_re_evaluated_on_the_next_event(make_rig: Any) -> None:
    cluster = FakeCluster()
    seed(cluster)
    cluster.fail_next("replace_status", ApiError(409, "Conflict", "modified"))
    make_rig(cluster)
    # The first write (at the end of the initial list) got the 409 and is not retried.
    assert cluster.status_writes["vrf-200"] == 1
    assert not conditions(cluster, "vrf-200")
    # Whatever changed the object (another node) shows up as an event: re-evaluated.
    cluster.put(DOMAIN, "vrf-200", status={"conditions": []})
    wait_for(lambda: conditions(cluster, "vrf-200").get("Accepted"), 5, "status written")


def test_temporary_status_failure_is_retried(make_rig: Any) -> None:
    cluster = FakeCluster()
    seed(cluster)
    cluster.fail_next("replace_status", ApiError(503, "ServiceUnavailable"), times=2)
    make_rig(cluster)
    wait_for(lambda: conditions(cluster, "vrf-200").get("Accepted"), 5, "status written")
    assert cluster.status_writes["vrf-200"] == 3


def test_permanent_status_failure_is_not_retried_until_the_object_changes(make_rig: Any) -> None:
    cluster = FakeCluster()
    seed(cluster)
    cluster.fail_next("replace_status", ApiError(422, "Invalid", "no"))
    rig = make_rig(cluster)
    rig.sync()
    rig.sync()
    assert cluster.status_writes["vrf-200"] == 1
    cluster.put(DOMAIN, "vrf-200", spec=domain_spec(200, table=10200, vni=60200, ipblocklen=27))
    wait_for(lambda: conditions(cluster, "vrf-200").get("Accepted"), 5, "written after change")


def test_two_watchers_agree_without_a_write_storm(make_rig: Any) -> None:
    cluster = FakeCluster()
    seed(cluster)
    first = make_rig(cluster)
    second = make_rig(cluster)
    cluster.put(DOMAIN, "vrf-500", spec=domain_spec(500, prefix="10.5.0.0", ipblocklen=10))
    for rig in (first, second):
        rig.sync()
    wait_for(lambda: conditions(cluster, "vrf-500").get("Accepted"), 5, "status written")
    for rig in (first, second):
        rig.sync()
    generation_writes = [
        e for e in cluster.log[DOMAIN] if e.event["object"]["metadata"]["name"] == "vrf-500"
    ]
    # ADDED + exactly one status write; the other watcher's write got 409 or was unnecessary.
    assert len(generation_writes) == 2


def test_a_disagreeing_writer_cannot_make_it_ping_pong(make_rig: Any) -> None:
    interval = 0.5
    cluster = FakeCluster()
    seed(cluster)
    make_rig(cluster, timings=replace(FAST, status_min_interval=interval))
    wait_for(lambda: conditions(cluster, "vrf-200").get("Accepted"), 5, "status written")
    assert cluster.status_writes["vrf-200"] == 1
    obj = cluster.get(DOMAIN, "vrf-200") or {}
    theirs = copy.deepcopy(obj["status"])
    for c in theirs["conditions"]:
        c["message"] = "what an older version says"
    for _ in range(2):
        overwritten = time.monotonic()
        cluster.put(DOMAIN, "vrf-200", status=theirs)
        wait_for(
            lambda: (
                conditions(cluster, "vrf-200")["Accepted"]["message"]
                != theirs["conditions"][0]["message"]
            ),
            5,
            "our status back",
        )
        # Not at once: one rewrite per interval, whatever the other writer does.
        assert time.monotonic() - overwritten >= interval * 0.8
    assert cluster.status_writes["vrf-200"] == 3


def test_a_new_verdict_is_written_at_once(make_rig: Any) -> None:
    cluster = FakeCluster()
    # Older than vrf-200, and harmless at first.
    cluster.put(DOMAIN, "aaa-old", spec=domain_spec(300, prefix="10.3.0.0"))
    seed(cluster)
    make_rig(cluster, timings=replace(FAST, status_min_interval=60))
    wait_for(lambda: conditions(cluster, "vrf-200").get("Accepted"), 5, "status written")
    # The older domain takes vrf-200's VNI: vrf-200 loses at the same generation.
    cluster.put(DOMAIN, "aaa-old", spec=domain_spec(300, prefix="10.3.0.0", vni=60200))
    wait_for(
        lambda: conditions(cluster, "vrf-200")["Accepted"]["reason"] == "DuplicateVNI",
        5,
        "vrf-200 rejected",
    )


def test_frr_reports_are_accepted(make_rig: Any) -> None:
    rig = make_rig()
    for ok in (True, False):
        reply = rig.ref.ask(
            FrrApplyReported(node="k8s02", ok=ok, reason="Applied", message=""), timeout=2
        )
        assert reply is None
    assert not rig.crashes


# -- the default domain ------------------------------------------------------------------------


def test_default_domain_is_created_when_none_exists(make_rig: Any) -> None:
    cluster = FakeCluster()
    cluster.put(NAMESPACE, "default")
    settings = Settings(
        default=DefaultSection(
            vrf=42, prefix="10.244.0.0", prefixlen=16, ipblocklen=26, system_vrf_type="l2vni"
        )
    )
    rig = make_rig(cluster, settings=settings)
    added = rig.wait_change(ChangeKind.ADDED, "vrf-42")
    assert added.obj == replace(
        SYSTEM_DOMAIN,
        attachments=(Attachment(type=AttachmentType.L2VNI, vni=42, port=4789),),
        resource_version=added.obj.resource_version,
    )
    assert rig.snapshots()[0].domains == ()
    wait_for(lambda: conditions(cluster, "vrf-42").get("Accepted"), 5, "accepted")
    assert cluster.calls["create", DOMAIN] == 1


def test_default_domain_uses_table_and_vni_settings() -> None:
    spec = default_domain(Settings(default=DefaultSection(vrf=7, table=1007, vni=5007)))
    assert (spec.name, spec.table, spec.attachments[0].vni) == ("vrf-7", 1007, 5007)


def test_default_domain_is_not_created_when_an_invalid_one_exists(make_rig: Any) -> None:
    cluster = FakeCluster()
    cluster.put(DOMAIN, "mine", spec=domain_spec(9, ipblocklen=9))
    rig = make_rig(cluster, seeded=False)
    rig.sync()
    assert cluster.calls["create", DOMAIN] == 0
    assert cluster.names(DOMAIN) == {"mine"}


def test_default_domain_create_conflict_counts_as_success(make_rig: Any) -> None:
    cluster = FakeCluster()
    cluster.fail_next("create", ApiError(409, "AlreadyExists", "exists"))
    rig = make_rig(cluster, seeded=False)
    rig.sync()
    assert cluster.calls["create", DOMAIN] == 1
    assert cluster.names(DOMAIN) == set()


def test_default_domain_create_is_retried(make_rig: Any) -> None:
    cluster = FakeCluster()
    cluster.fail_next("create", ApiError(500, "InternalError"), times=2)
    rig = make_rig(cluster, seeded=False)
    rig.wait_change(ChangeKind.ADDED, "vrf-42")
    assert cluster.calls["create", DOMAIN] == 3


def knows(rig: Rig, name: str) -> bool:
    """The domain reached the subscriber, in the snapshot or as an event."""
    in_snapshot = any(d.name == name for s in rig.snapshots() for d in s.domains)
    added = any(
        isinstance(m, ClusterObjectChanged) and m.obj.name == name and m.kind is ChangeKind.ADDED
        for m in rig.changes()
    )
    return in_snapshot or added


def test_five_watchers_create_the_default_domain_once(make_rig: Any) -> None:
    cluster = FakeCluster()
    cluster.hold_lists()
    rigs = [make_rig(cluster, seeded=False, wait_ready=False) for _ in range(5)]
    cluster.release_lists()
    for rig in rigs:
        wait_for(rig.ready, 5, "ready")
        wait_for(partial(knows, rig, "vrf-42"), 5, "every watcher knows vrf-42")
    created = [e for e in cluster.log[DOMAIN] if e.event["type"] == "ADDED"]
    assert len(created) == 1
    # Those that listed after the winner's create did not even try.
    assert 1 <= cluster.calls["create", DOMAIN] <= 5


# -- a spec change that would re-cut live IPBlocks (issue #14 item 5) ----------------------


class FakeBlocks:
    """The IPBlocks the watcher lists; tests drain them by assignment."""

    def __init__(self, *blocks: LiveBlock) -> None:
        self.blocks = list(blocks)
        self.lock = threading.Lock()
        self.lists = 0

    def __call__(self) -> list[LiveBlock]:
        with self.lock:
            self.lists += 1
            return list(self.blocks)

    def drain(self) -> None:
        with self.lock:
            self.blocks = []


LIVE_200 = LiveBlock(name="vrf-200-10-1-0-0-26", cidr="10.1.0.0/26", vrf=200, pods=2)
CUT_200 = {"vrf": 200, "prefix": "10.1.0.0", "prefixlen": 16, "ipblocklen": 26}
RECHECK = replace(FAST, recut_recheck=0.05)


def published_200(rig: Rig) -> list[ClusterObjectChanged]:
    return [
        m for m in rig.changes() if isinstance(m, ClusterObjectChanged) and m.obj.name == "vrf-200"
    ]


def status_of(cluster: FakeCluster, name: str) -> dict[str, Any]:
    status: dict[str, Any] = (cluster.get(DOMAIN, name) or {}).get("status") or {}
    return status


def test_prefix_change_over_live_blocks_is_refused_until_they_drain(make_rig: Any) -> None:
    blocks = FakeBlocks(LIVE_200)
    rig = make_rig(timings=RECHECK, block_lister=blocks)
    c = rig.cluster
    wait_for(lambda: status_of(c, "vrf-200").get("acceptedCut") == CUT_200, 5, "cut recorded")
    moved = domain_spec(200, table=10200, vni=60200, prefix="10.2.0.0")
    c.put(DOMAIN, "vrf-200", spec=moved)
    wait_for(
        lambda: conditions(c, "vrf-200")["Accepted"]["reason"] == "PrefixChangeRefused",
        5,
        "the change refused",
    )
    accepted = conditions(c, "vrf-200")["Accepted"]
    assert accepted["status"] == "False" and accepted["observedGeneration"] == 2
    assert "10.1.0.0/16 -> 10.2.0.0/16" in accepted["message"]
    assert "vrf-200-10-1-0-0-26" in accepted["message"]
    # The old cut stays deployed: Ready, recorded, and nodes are not told to move.
    ready = conditions(c, "vrf-200")["Ready"]
    assert ready["status"] == "True" and ready["reason"] == "PreviousCutDeployed"
    assert "10.1.0.0/16" in ready["message"]
    assert status_of(c, "vrf-200")["acceptedCut"] == CUT_200
    rig.sync(DOMAIN)
    assert published_200(rig) == []
    rig.ref.tell(SendSnapshot(to=rig.subscriber))
    wait_for(lambda: len(rig.snapshots()) == 2, 5, "second snapshot")
    (deployed,) = [d for d in rig.snapshots()[-1].domains if d.name == "vrf-200"]
    assert deployed.cidr == "10.1.0.0/16"
    # Drained: the periodic recheck lets the change through.
    blocks.drain()
    change = rig.wait_change(ChangeKind.MODIFIED, "vrf-200")
    assert change.obj.cidr == "10.2.0.0/16"
    wait_for(lambda: conditions(c, "vrf-200")["Accepted"]["status"] == "True", 5, "accepted")
    assert status_of(c, "vrf-200")["acceptedCut"]["prefix"] == "10.2.0.0"


def test_a_restarted_watcher_keeps_refusing_from_the_recorded_cut(make_rig: Any) -> None:
    cluster = FakeCluster()
    seed(cluster)
    # Changed while no daemon ran: only status.acceptedCut remembers the old cut.
    cluster.put(
        DOMAIN,
        "vrf-200",
        spec=domain_spec(200, table=10200, vni=60200, ipblocklen=27),
        status={"acceptedCut": CUT_200},
    )
    rig = make_rig(cluster, block_lister=FakeBlocks(LIVE_200))
    (deployed,) = [d for d in rig.snapshots()[0].domains if d.name == "vrf-200"]
    assert deployed.ipblocklen == 26
    wait_for(lambda: conditions(cluster, "vrf-200").get("Accepted"), 5, "status written")
    assert conditions(cluster, "vrf-200")["Accepted"]["reason"] == "PrefixChangeRefused"
    assert "spec.ipblocklen 26 -> 27" in conditions(cluster, "vrf-200")["Accepted"]["message"]


def test_a_change_the_blocks_fit_is_followed(make_rig: Any) -> None:
    rig = make_rig(block_lister=FakeBlocks(LIVE_200))
    c = rig.cluster
    wait_for(lambda: status_of(c, "vrf-200").get("acceptedCut") == CUT_200, 5, "cut recorded")
    c.put(
        DOMAIN,
        "vrf-200",
        spec=domain_spec(200, table=10200, vni=60200, prefix="10.0.0.0", prefixlen=15),
    )
    change = rig.wait_change(ChangeKind.MODIFIED, "vrf-200")
    assert change.obj.cidr == "10.0.0.0/15"
    wait_for(
        lambda: status_of(c, "vrf-200")["acceptedCut"]["prefixlen"] == 15, 5, "new cut recorded"
    )
