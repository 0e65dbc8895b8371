"""CRDWatcherActor against the real etcd + kube-apiserver of the harness.

Covers the initial snapshot and readiness, typed add/modify/delete events,
resuming after a stream is cut (the HTTP response's socket is shut down from
the test, as a dropped connection would), relisting after a real 410 (the
watch is resumed from resourceVersion 1, which the API server's watch cache
no longer holds), the default VRFDomain created exactly once by five watchers
starting together, and an invalid VRFDomain reported in status and not
published.

Every test uses its own object names and VRF ids; the objects are deleted at
the end.  The default-domain test deletes every VRFDomain first: it needs a
cluster without one.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import pykka
import pytest
from kubernetes.client import ApiClient, CoreV1Api, CustomObjectsApi
from kubernetes.client.rest import ApiException

from pyroute2_cni.actors.address import Address
from pyroute2_cni.actors.base import ActorHooks
from pyroute2_cni.actors.crd_watcher_actor import CRDWatcherActor, live_blocks
from pyroute2_cni.actors.event_actor import EventActor
from pyroute2_cni.ipam.blocks import Block, new_block
from pyroute2_cni.ipam.store import BlockTaken, KubeBlockStore, StoreError
from pyroute2_cni.kube.crd_validate import LiveBlock
from pyroute2_cni.kube.objects import CRD_GROUP, CRD_VERSION, Json, Resource
from pyroute2_cni.kube.transport import (
    ApiError,
    KubeApi,
    KubernetesApi,
    RawStream,
    StreamQuiet,
    WatchTimings,
)
from pyroute2_cni.messages.base import Ping, Pong
from pyroute2_cni.messages.crd import (
    Attachment,
    AttachmentType,
    ChangeKind,
    ClusterObjectChanged,
    ClusterSnapshot,
    NamespaceChanged,
    NodeInfo,
    NodeInterface,
    VrfDomainBindingSpec,
    VrfDomainSpec,
    VrfNodeConfigSpec,
)
from pyroute2_cni.messages.frr import FrrApplyReported
from pyroute2_cni.runtime.config import Settings
from pyroute2_cni.runtime.metrics import Metrics
from tests.harness.apiserver import ApiServer
from tests.harness.fake_kube_watch import MessageLog, recorder
from tests.harness.waiting import wait_for
from tests.harness.watch_control import WatchControl

pytestmark = pytest.mark.api

TIMINGS = WatchTimings(
    server_timeout=60, quiet_timeout=90, backoff_initial=0.05, backoff_max=0.5, stop_timeout=3
)
DOMAIN = Resource.VRF_DOMAIN
BINDING = Resource.VRF_DOMAIN_BINDING
NODE_CONFIG = Resource.VRF_NODE_CONFIG
NODE = Resource.NODE
NAMESPACE = Resource.NAMESPACE
KINDS = {DOMAIN: "VRFDomain", BINDING: "VRFDomainBinding", NODE_CONFIG: "VRFNodeConfig"}
_ids = itertools.count(1)


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def crds(pyroute2_crds: ApiServer) -> ApiServer:
    return pyroute2_crds


class Cluster:
    """Test-side writes through the plain kubernetes client; remembers what to delete."""

    def __init__(self, api_client: ApiClient) -> None:
        self.custom = CustomObjectsApi(api_client)
        self.core = CoreV1Api(api_client)
        self.created: list[tuple[Resource, str]] = []

    def create(self, resource: Resource, name: str, spec: Json) -> Json:
        body = {
            "apiVersion": f"{CRD_GROUP}/{CRD_VERSION}",
            "kind": KINDS[resource],
            "metadata": {"name": name},
            "spec": dict(spec),
        }
        obj: Json = self.custom.create_cluster_custom_object(
            CRD_GROUP, CRD_VERSION, resource.value, body
        )
        self.created.append((resource, name))
        return obj

    def patch_spec(self, resource: Resource, name: str, spec: Json) -> None:
        self.custom.patch_cluster_custom_object(
            CRD_GROUP, CRD_VERSION, resource.value, name, {"spec": dict(spec)}
        )

    def get(self, resource: Resource, name: str) -> Json | None:
        try:
            obj: Json = self.custom.get_cluster_custom_object(
                CRD_GROUP, CRD_VERSION, resource.value, name
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return obj

    def delete(self, resource: Resource, name: str) -> None:
        with contextlib.suppress(ApiException):
            if resource is NODE:
                self.core.delete_node(name)
            elif resource is NAMESPACE:
                self.core.delete_namespace(name)
                # No namespace controller runs here: drop the finalizer ourselves.
                self.core.replace_namespace_finalize(
                    name, {"metadata": {"name": name}, "spec": {"finalizers": []}}
                )
            else:
                self.custom.delete_cluster_custom_object(
                    CRD_GROUP, CRD_VERSION, resource.value, name
                )

    def create_node(self, name: str, ip: str) -> None:
        self.core.create_node(
            {
                "metadata": {"name": name},
                "status": {"addresses": [{"type": "InternalIP", "address": ip}]},
            }
        )
        self.created.append((NODE, name))

    def create_namespace(self, name: str) -> None:
        self.core.create_namespace({"metadata": {"name": name}})
        self.created.append((NAMESPACE, name))

    def conditions(self, name: str) -> dict[str, Json]:
        obj = self.get(DOMAIN, name) or {}
        return {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}

    def domain_names(self) -> set[str]:
        listed = self.custom.list_cluster_custom_object(CRD_GROUP, CRD_VERSION, DOMAIN.value)
        return {item["metadata"]["name"] for item in listed.get("items") or []}

    def cleanup(self) -> None:
        for resource, name in reversed(self.created):
            self.delete(resource, name)
        self.created.clear()


@pytest.fixture
def cluster(crds: ApiServer) -> Iterator[Cluster]:
    api_client = crds.api_client()
    c = Cluster(api_client)
    try:
        yield c
    finally:
        c.cleanup()
        api_client.close()


@dataclass
class Stats:
    """What the watchers' edges did, counted at the KubeApi interface."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    lists: Counter[Resource] = field(default_factory=Counter)
    created: int = 0
    create_conflicts: int = 0
    status_written: Counter[str] = field(default_factory=Counter)
    status_conflicts: int = 0


class CountingApi:
    """A KubeApi that counts calls and outcomes of the KubeApi it wraps."""

    def __init__(self, inner: KubeApi, stats: Stats) -> None:
        self._inner = inner
        self._stats = stats

    def list(self, resource: Resource) -> tuple[list[Json], str]:
        with self._stats.lock:
            self._stats.lists[resource] += 1
        return self._inner.list(resource)

    def watch(self, resource: Resource, resource_version: str, timeout_seconds: int) -> RawStream:
        return self._inner.watch(resource, resource_version, timeout_seconds)

    def create(self, resource: Resource, body: Json) -> Json:
        try:
            created = self._inner.create(resource, body)
        except ApiError as exc:
            if exc.status == 409:
                with self._stats.lock:
                    self._stats.create_conflicts += 1
            raise
        with self._stats.lock:
            self._stats.created += 1
        return created

    def replace_status(self, resource: Resource, name: str, body: Json) -> Json:
        try:
            written = self._inner.replace_status(resource, name, body)
        except ApiError as exc:
            if exc.status == 409:
                with self._stats.lock:
                    self._stats.status_conflicts += 1
            raise
        with self._stats.lock:
            self._stats.status_written[name] += 1
        return written

    def close(self) -> None:
        self._inner.close()


@dataclass
class Watcher:
    ref: pykka.ActorRef[Any]
    log: MessageLog
    control: WatchControl
    stats: Stats
    subscriber: Address
    subscriber_ref: pykka.ActorRef[Any]
    crashes: list[BaseException | None]

    def ready(self) -> bool:
        try:
            pong = self.ref.ask(Ping(seq=1), timeout=5)
        except pykka.ActorDeadError:
            return False
        return isinstance(pong, Pong) and pong.ready

    def snapshots(self) -> list[ClusterSnapshot]:
        return self.log.of(ClusterSnapshot)

    def changes(self, name: str) -> list[tuple[ChangeKind, Any]]:
        out: list[tuple[ChangeKind, Any]] = []
        for m in self.log.all():
            if isinstance(m, NamespaceChanged) and m.name == name:
                out.append((m.kind, m.name))
            elif isinstance(m, ClusterObjectChanged) and m.obj.name == name:
                out.append((m.kind, m.obj))
        return out

    def wait_change(self, kind: ChangeKind, name: str, timeout: float = 20) -> Any:
        def found() -> Any:
            return next((obj for k, obj in self.changes(name) if k is kind), None)

        return wait_for(found, timeout, f"{kind.value} {name}")

    def knows_domain(self, name: str) -> bool:
        in_snapshot = any(d.name == name for s in self.snapshots() for d in s.domains)
        return in_snapshot or any(k is ChangeKind.ADDED for k, _ in self.changes(name))


@pytest.fixture
def start_watcher(crds: ApiServer) -> Iterator[Callable[..., Watcher]]:
    watchers: list[Watcher] = []

    def start(
        wait_ready: bool = True,
        name: str = "crd-watcher",
        timings: WatchTimings = TIMINGS,
        block_lister: Callable[[], Iterable[LiveBlock]] | None = None,
        events: Address | None = None,
    ) -> Watcher:
        stats = Stats()
        control = WatchControl()
        subscriber, log, sub_ref = recorder()
        crashes: list[BaseException | None] = []

        def edge() -> KubeApi:
            return CountingApi(KubernetesApi(crds.api_client(), timings), stats)

        ref = CRDWatcherActor.start(
            ActorHooks(name=name, generation=1, on_crash=lambda _n, _g, e: crashes.append(e)),
            settings=Settings(),
            api_factory=crds.api_client,
            subscribers=[subscriber],
            timings=timings,
            edge_factory=edge,
            control=control,
            events=events,
            **({"block_lister": block_lister} if block_lister is not None else {}),
        )
        watcher = Watcher(ref, log, control, stats, subscriber, sub_ref, crashes)
        watchers.append(watcher)
        if wait_ready:
            wait_for(watcher.ready, 30, "watcher ready", interval=0.05)
        return watcher

    yield start
    for watcher in watchers:
        watcher.ref.stop(block=True, timeout=10)
        watcher.subscriber_ref.stop(block=True, timeout=5)
        assert not watcher.crashes, watcher.crashes


@dataclass(frozen=True)
class Ids:
    """Unique names and VRF numbers for one test."""

    n: int
    suffix: str

    def name(self, base: str) -> str:
        return f"{base}-{self.suffix}"

    def domain_spec(self, k: int = 0, **changes: Any) -> dict[str, Any]:
        n = self.n * 10 + k
        spec: dict[str, Any] = {
            "vrf": 1000 + n,
            "table": 20000 + n,
            # Tenant prefixes outside the system VRF's 10.244.0.0/16.
            "prefix": f"10.100.{n % 250}.0",
            "prefixlen": 24,
            "ipblocklen": 26,
            "attachments": [{"type": "l3vni", "vni": 100000 + n, "port": 4789}],
        }
        spec.update(changes)
        return spec


@pytest.fixture
def ids() -> Ids:
    return Ids(next(_ids), uuid.uuid4().hex[:6])


def _typed(spec: dict[str, Any], name: str) -> VrfDomainSpec:
    return VrfDomainSpec(
        name=name,
        vrf=spec["vrf"],
        table=spec["table"],
        prefix=spec["prefix"],
        prefixlen=spec["prefixlen"],
        ipblocklen=spec["ipblocklen"],
        attachments=tuple(
            Attachment(type=AttachmentType(a["type"]), vni=a["vni"], port=a["port"])
            for a in spec["attachments"]
        ),
    )


def _same(a: VrfDomainSpec, b: VrfDomainSpec) -> bool:
    return replace(a, resource_version="") == replace(b, resource_version="")


# -- tests ----------------------------------------------------------------------------------


def test_initial_snapshot_and_ready(
    cluster: Cluster, start_watcher: Callable[..., Watcher], ids: Ids
) -> None:
    domain, binding, config = ids.name("dom"), ids.name("bind"), ids.name("nc")
    node, namespace = ids.name("node"), ids.name("ns")
    spec = ids.domain_spec()
    cluster.create(DOMAIN, domain, spec)
    cluster.create(
        BINDING, binding, {"namespaceRef": {"name": namespace}, "vrfDomainRef": {"name": domain}}
    )
    cluster.create(
        NODE_CONFIG,
        config,
        {
            "nodeRef": {"name": node},
            "routerId": "192.168.124.2",
            "routeReflectors": ["192.168.124.1"],
            "interfaces": [{"name": "eth1", "local": "192.168.124.2"}],
        },
    )
    cluster.create_node(node, "192.168.124.2")
    cluster.create_namespace(namespace)

    started = time.monotonic()
    watcher = start_watcher()
    ready_after = time.monotonic() - started
    snapshot = wait_for(watcher.snapshots, 10, "snapshot")[0]
    assert isinstance(watcher.log.all()[0], ClusterSnapshot)
    published = {d.name: d for d in snapshot.domains}
    assert _same(published[domain], _typed(spec, domain))
    assert published[domain].resource_version
    assert VrfDomainBindingSpec(name=binding, namespace=namespace, domain=domain) in (
        snapshot.bindings
    )
    assert (
        VrfNodeConfigSpec(
            name=config,
            node=node,
            router_id="192.168.124.2",
            route_reflectors=("192.168.124.1",),
            interfaces=(NodeInterface(name="eth1", local="192.168.124.2"),),
        )
        in snapshot.node_configs
    )
    assert NodeInfo(name=node, internal_ip="192.168.124.2") in snapshot.nodes
    assert {namespace, "default", "kube-system"} <= set(snapshot.namespaces)
    assert all(watcher.stats.lists[r] == 1 for r in Resource)
    assert ready_after < 10, ready_after
    wait_for(lambda: cluster.conditions(domain).get("Accepted"), 10, "status written")
    assert cluster.conditions(domain)["Accepted"]["status"] == "True"


def test_add_modify_delete_events_arrive_typed(
    cluster: Cluster, start_watcher: Callable[..., Watcher], ids: Ids
) -> None:
    watcher = start_watcher()
    domain = ids.name("dom")
    spec = ids.domain_spec()
    cluster.create(DOMAIN, domain, spec)
    added = watcher.wait_change(ChangeKind.ADDED, domain)
    assert isinstance(added, VrfDomainSpec) and _same(added, _typed(spec, domain))
    cluster.patch_spec(DOMAIN, domain, {"ipblocklen": 28})
    modified = watcher.wait_change(ChangeKind.MODIFIED, domain)
    assert modified.ipblocklen == 28
    cluster.delete(DOMAIN, domain)
    assert watcher.wait_change(ChangeKind.DELETED, domain).vrf == spec["vrf"]

    binding = ids.name("bind")
    cluster.create(BINDING, binding, {"namespaceRef": {"name": "a"}, "vrfDomainRef": {"name": "b"}})
    assert watcher.wait_change(ChangeKind.ADDED, binding) == VrfDomainBindingSpec(
        name=binding, namespace="a", domain="b"
    )
    cluster.delete(BINDING, binding)
    watcher.wait_change(ChangeKind.DELETED, binding)

    config = ids.name("nc")
    cluster.create(NODE_CONFIG, config, {"nodeRef": {"name": "k8s02"}})
    assert watcher.wait_change(ChangeKind.ADDED, config).router_id == ""
    cluster.patch_spec(NODE_CONFIG, config, {"routerId": "10.0.0.2"})
    assert watcher.wait_change(ChangeKind.MODIFIED, config).router_id == "10.0.0.2"

    node = ids.name("node")
    cluster.create_node(node, "10.9.9.9")
    assert watcher.wait_change(ChangeKind.ADDED, node) == NodeInfo(
        name=node, internal_ip="10.9.9.9"
    )
    cluster.delete(NODE, node)
    watcher.wait_change(ChangeKind.DELETED, node)

    namespace = ids.name("ns")
    cluster.create_namespace(namespace)
    watcher.wait_change(ChangeKind.ADDED, namespace)
    cluster.delete(NAMESPACE, namespace)
    watcher.wait_change(ChangeKind.DELETED, namespace)
    # Each change exactly once.
    assert [k for k, _ in watcher.changes(domain)] == [
        ChangeKind.ADDED,
        ChangeKind.MODIFIED,
        ChangeKind.DELETED,
    ]
    assert [k for k, _ in watcher.changes(namespace)] == [ChangeKind.ADDED, ChangeKind.DELETED]


def _more_watches(control: WatchControl, than: int) -> bool:
    return control.watches(NAMESPACE) > than


def test_streams_cut_mid_way_lose_no_event(
    cluster: Cluster, start_watcher: Callable[..., Watcher], ids: Ids
) -> None:
    watcher = start_watcher()
    control = watcher.control
    wait_for(lambda: control.watches(NAMESPACE) >= 1, 10, "namespace watch open")
    names = [ids.name(f"cut{i}") for i in range(30)]
    done = threading.Event()

    def create_all() -> None:
        try:
            for name in names:
                cluster.create_namespace(name)
        finally:
            done.set()

    writer = threading.Thread(target=create_all)
    writer.start()
    cuts = 0
    # Cut every stream as soon as it is open, while the namespaces are being created.
    while not done.is_set():
        opened = control.watches(NAMESPACE)
        control.cut(NAMESPACE)
        cuts += 1
        wait_for(partial(_more_watches, control, opened), 10, "reconnected")
    writer.join()
    for name in names:
        watcher.wait_change(ChangeKind.ADDED, name)
    assert all(watcher.changes(name) == [(ChangeKind.ADDED, name)] for name in names)
    # Resumed each time from the last resourceVersion: never relisted.
    assert watcher.stats.lists[NAMESPACE] == 1
    assert cuts >= 2
    assert len(watcher.snapshots()) == 1


def test_resume_after_a_held_stream_and_after_expiry(
    cluster: Cluster, start_watcher: Callable[..., Watcher], ids: Ids
) -> None:
    kept, gone, fresh, binding = (ids.name(k) for k in ("kept", "gone", "new", "bind"))
    cluster.create(DOMAIN, kept, ids.domain_spec(0))
    cluster.create(DOMAIN, gone, ids.domain_spec(1))
    cluster.create(
        BINDING, binding, {"namespaceRef": {"name": "x"}, "vrfDomainRef": {"name": kept}}
    )
    watcher = start_watcher()
    control = watcher.control

    for round_, expire in enumerate((False, True)):
        for resource in (DOMAIN, BINDING):
            control.hold(resource)
        wait_for(lambda: control.waiting(DOMAIN) and control.waiting(BINDING), 10, "pumps held")
        if round_ == 0:
            cluster.create(DOMAIN, fresh, ids.domain_spec(2))
            cluster.patch_spec(DOMAIN, kept, {"ipblocklen": 27})
            cluster.delete(DOMAIN, gone)
            cluster.delete(BINDING, binding)
        else:
            cluster.create(DOMAIN, gone, ids.domain_spec(1))
            cluster.patch_spec(DOMAIN, kept, {"ipblocklen": 28})
            cluster.delete(DOMAIN, fresh)
            cluster.create(
                BINDING, binding, {"namespaceRef": {"name": "y"}, "vrfDomainRef": {"name": kept}}
            )
        for resource in (DOMAIN, BINDING):
            # resourceVersion 1 is far older than the watch cache holds: 410 Expired.
            control.release(resource, "1" if expire else None)
        if round_ == 0:
            watcher.wait_change(ChangeKind.ADDED, fresh)
            watcher.wait_change(ChangeKind.DELETED, gone)
            watcher.wait_change(ChangeKind.DELETED, binding)
            wait_for(
                lambda: any(o.ipblocklen == 27 for _, o in watcher.changes(kept)), 20, "kept 27"
            )
            assert watcher.stats.lists[DOMAIN] == 1 and watcher.stats.lists[BINDING] == 1
        else:
            wait_for(lambda: watcher.stats.lists[DOMAIN] == 2, 20, "domains relisted")
            wait_for(lambda: watcher.stats.lists[BINDING] == 2, 20, "bindings relisted")
            wait_for(lambda: len(watcher.changes(gone)) == 2, 20, "gone re-added")
            wait_for(lambda: len(watcher.changes(fresh)) == 2, 20, "fresh deleted")
            wait_for(lambda: len(watcher.changes(binding)) == 2, 20, "binding re-added")
            wait_for(
                lambda: any(o.ipblocklen == 28 for _, o in watcher.changes(kept)), 20, "kept 28"
            )
            wait_for(lambda: len(watcher.snapshots()) >= 3, 20, "a fresh snapshot per relist")
            snapshot = watcher.snapshots()[-1]
            names = {d.name for d in snapshot.domains}
            assert {kept, gone} <= names and fresh not in names

    assert [k for k, _ in watcher.changes(fresh)] == [ChangeKind.ADDED, ChangeKind.DELETED]
    assert [k for k, _ in watcher.changes(gone)] == [ChangeKind.DELETED, ChangeKind.ADDED]
    assert [k for k, _ in watcher.changes(binding)] == [ChangeKind.DELETED, ChangeKind.ADDED]
    assert [o.ipblocklen for _, o in watcher.changes(kept)] == [27, 28]
    assert watcher.changes(binding)[-1][1].namespace == "y"


def test_default_domain_is_created_once_when_five_watchers_start_together(
    cluster: Cluster, start_watcher: Callable[..., Watcher]
) -> None:
    for name in cluster.domain_names():
        cluster.delete(DOMAIN, name)
    wait_for(lambda: not cluster.domain_names(), 30, "no VRFDomain left")
    cluster.created.append((DOMAIN, "vrf-42"))  # cleaned up after the test

    barrier = threading.Barrier(5)
    watchers: list[Watcher] = []
    lock = threading.Lock()

    def start_one(i: int) -> None:
        barrier.wait(timeout=30)
        w = start_watcher(wait_ready=False, name=f"crd-watcher-{i}")
        with lock:
            watchers.append(w)

    threads = [threading.Thread(target=start_one, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(watchers) == 5
    for w in watchers:
        wait_for(w.ready, 30, "watcher ready", interval=0.05)
        wait_for(partial(w.knows_domain, "vrf-42"), 30, "vrf-42 published")
    assert cluster.domain_names() == {"vrf-42"}
    created = sum(w.stats.created for w in watchers)
    conflicts = sum(w.stats.create_conflicts for w in watchers)
    assert created == 1, (created, conflicts)
    obj = cluster.get(DOMAIN, "vrf-42") or {}
    assert obj["spec"] == {
        "vrf": 42,
        "table": 42,
        "prefix": "10.244.0.0",
        "prefixlen": 16,
        "ipblocklen": 26,
        "attachments": [{"type": "l3vni", "vni": 42, "port": 4789}],
    }
    wait_for(lambda: cluster.conditions("vrf-42").get("Accepted"), 20, "status written")
    assert cluster.conditions("vrf-42")["Accepted"]["status"] == "True"
    # One status write won; the others were refused (409) or saw it was already there.
    wait_for(
        lambda: all(w.knows_domain("vrf-42") for w in watchers), 10, "every watcher knows vrf-42"
    )
    assert sum(w.stats.status_written["vrf-42"] for w in watchers) == 1


def test_invalid_domain_is_rejected_in_status_and_not_published(
    cluster: Cluster, start_watcher: Callable[..., Watcher], ids: Ids
) -> None:
    watcher = start_watcher()
    bad, marker = ids.name("bad"), ids.name("marker")
    cluster.create(DOMAIN, bad, ids.domain_spec(0, prefixlen=24, ipblocklen=20))
    wait_for(lambda: cluster.conditions(bad).get("Accepted"), 20, "status written")
    accepted = cluster.conditions(bad)["Accepted"]
    assert accepted["status"] == "False"
    assert accepted["reason"] == "InvalidSpec"
    assert "spec.ipblocklen (20)" in accepted["message"]
    assert "spec.prefixlen (24)" in accepted["message"]
    assert accepted["observedGeneration"] == 1
    assert cluster.conditions(bad)["Ready"]["status"] == "False"
    # A later domain event went through, so the bad one would have been published by now.
    cluster.create(DOMAIN, marker, ids.domain_spec(1))
    watcher.wait_change(ChangeKind.ADDED, marker)
    assert watcher.changes(bad) == []
    assert all(bad not in {d.name for d in s.domains} for s in watcher.snapshots())


def test_a_rejected_domain_gets_a_warning_event_and_its_fix_a_normal_one(
    crds: ApiServer, cluster: Cluster, start_watcher: Callable[..., Watcher], ids: Ids
) -> None:
    """Issue 19 item 3: `kubectl describe vrfdomain` shows why it was rejected."""
    events = Address("events")
    recorder_ref = EventActor.start(
        ActorHooks(name="events", generation=1, on_crash=lambda *_args: None),
        node=ids.name("node"),
        api_factory=crds.api_client,
        metrics=Metrics(),
    )
    events.bind(recorder_ref)
    core = CoreV1Api(crds.api_client())
    try:
        start_watcher(events=events)
        bad = ids.name("bad")
        created = cluster.create(DOMAIN, bad, ids.domain_spec(0, prefixlen=24, ipblocklen=20))

        def on_it(reason: str) -> Any:
            found = core.list_namespaced_event(
                "default", field_selector=f"involvedObject.name={bad}"
            ).items
            return next((e for e in found if e.reason == reason), None)

        warning = wait_for(lambda: on_it("InvalidSpec"), 20, "the InvalidSpec event")
        assert warning.type == "Warning" and "spec.ipblocklen (20)" in warning.message
        assert warning.involved_object.kind == "VRFDomain"
        assert warning.involved_object.uid == created["metadata"]["uid"]
        cluster.patch_spec(DOMAIN, bad, {"ipblocklen": 26})
        normal = wait_for(lambda: on_it("Accepted"), 20, "the Accepted event")
        assert normal.type == "Normal"
        good = ids.name("good")
        cluster.create(DOMAIN, good, ids.domain_spec(1))
        wait_for(lambda: cluster.conditions(good).get("Accepted"), 20, "good accepted")
        recorder_ref.ask(Ping(seq=1), timeout=10)
        assert not core.list_namespaced_event(
            "default", field_selector=f"involvedObject.name={good}"
        ).items, "a domain accepted from the start needs no event"
    finally:
        recorder_ref.stop(block=True, timeout=10)


def test_stop_closes_the_streams_promptly(start_watcher: Callable[..., Watcher]) -> None:
    watcher = start_watcher()
    wait_for(lambda: all(watcher.control.watches(r) for r in Resource), 10, "watches open")
    started = time.monotonic()
    watcher.ref.stop(block=True, timeout=10)
    elapsed = time.monotonic() - started
    assert elapsed < TIMINGS.stop_timeout, elapsed
    assert not [t for t in threading.enumerate() if t.name.startswith("crd-watcher-")]


def test_a_quiet_stream_is_reported_by_the_edge(crds: ApiServer) -> None:
    """No byte within quiet_timeout: StreamQuiet, on which the pump reconnects."""
    timings = WatchTimings(server_timeout=0.5, server_timeout_jitter=0, quiet_timeout=1.0)
    api = KubernetesApi(crds.api_client(), timings)
    try:
        _, version = api.list(NODE_CONFIG)
        stream = api.watch(NODE_CONFIG, version, timeout_seconds=60)
        started = time.monotonic()
        with pytest.raises(StreamQuiet):
            for _ in stream:
                pass
        assert 0.9 <= time.monotonic() - started < 10
        stream.close()
    finally:
        api.close()


def test_frr_outcome_lands_in_the_node_config_status(
    cluster: Cluster, start_watcher: Callable[..., Watcher], ids: Ids
) -> None:
    node = ids.name("frrnode")
    config = ids.name("frrnode-vrnc")
    cluster.create(Resource.VRF_NODE_CONFIG, config, {"nodeRef": {"name": node}})
    watcher = start_watcher()  # ready: the config is in its initial list

    def frr_condition() -> Json | None:
        obj = cluster.get(Resource.VRF_NODE_CONFIG, config) or {}
        conditions = (obj.get("status") or {}).get("conditions") or []
        return next((c for c in conditions if c["type"] == "FrrApplied"), None)

    report = FrrApplyReported(node=node, ok=False, reason="ValidationFailed", message="line 3")
    watcher.ref.tell(report)
    failed = wait_for(lambda: (c := frr_condition()) and c["status"] == "False" and c, 20, "False")
    assert failed["reason"] == "ValidationFailed" and failed["message"] == "line 3"
    watcher.ref.tell(replace(report, ok=True, reason="Applied", message="FRR runs 1 VRF"))
    wait_for(lambda: (c := frr_condition()) and c["status"] == "True", 20, "FrrApplied True")
    status = (cluster.get(Resource.VRF_NODE_CONFIG, config) or {})["status"]
    assert status["ready"] is True and status["accepted"] is True


# -- a spec change that would re-cut live IPBlocks (issue #14 item 5) -------------------------


def test_prefix_change_over_a_live_block_is_refused_until_it_is_deleted(
    crds: ApiServer, cluster: Cluster, start_watcher: Callable[..., Watcher], ids: Ids
) -> None:
    # 1.20 drops the CRD's CEL rule, so the change reaches the daemon; the
    # IPBlocks are listed from the real API with the store production uses.
    spec = ids.domain_spec(0)
    block = new_block(spec["vrf"], ipaddress.IPv4Network(f"{spec['prefix']}/26"), "node-a")
    store = KubeBlockStore(crds.api_client())
    try:
        watcher = start_watcher(
            timings=replace(TIMINGS, recut_recheck=0.2), block_lister=lambda: live_blocks(store)
        )
        name = ids.name("recut")
        cluster.create(DOMAIN, name, spec)
        watcher.wait_change(ChangeKind.ADDED, name)
        wait_for(
            lambda: ((cluster.get(DOMAIN, name) or {}).get("status") or {}).get("acceptedCut"),
            20,
            "cut recorded",
        )
        wait_for(lambda: _try_create_block(store, block), 20, "IPBlock created", interval=0.2)
        moved = dict(spec, prefix="10.99.0.0", prefixlen=16)
        cluster.patch_spec(DOMAIN, name, moved)
        wait_for(
            lambda: (
                cluster.conditions(name).get("Accepted", {}).get("reason") == "PrefixChangeRefused"
            ),
            20,
            "change refused",
        )
        assert block.name in cluster.conditions(name)["Accepted"]["message"]
        assert cluster.conditions(name)["Ready"]["status"] == "True"
        assert not [o for k, o in watcher.changes(name) if k is ChangeKind.MODIFIED]
        # The block is deleted (drained): the recheck lets the change through.
        current = store.get_block(block.name)
        assert current is not None
        store.delete_block(block.name, current.resource_version)
        modified = watcher.wait_change(ChangeKind.MODIFIED, name)
        assert modified.cidr == "10.99.0.0/16"
        wait_for(lambda: cluster.conditions(name)["Accepted"]["status"] == "True", 20, "accepted")
    finally:
        with contextlib.suppress(StoreError):
            leftover = store.get_block(block.name)
            if leftover is not None:
                store.delete_block(leftover.name, leftover.resource_version)
        store.close()


def _try_create_block(store: KubeBlockStore, block: Block) -> bool:
    # The IPBlock CRD may still be getting Established after the module's apply.
    try:
        store.create_block(block)
    except BlockTaken:
        return True
    except StoreError:
        return False
    return True
