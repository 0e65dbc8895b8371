"""The node's pod watch (issue 20: no LIST per IPAM round) against a real kube-apiserver.

Pods are created with spec.nodeName set (no scheduler, no kubelet: they stay Pending,
which is all the watch looks at) and deleted with a zero grace period.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest
from kubernetes import client

from pyroute2_cni.ipam.pod_watch import NodePodWatch
from pyroute2_cni.ipam.store import KubeBlockStore
from pyroute2_cni.kube.transport import WatchTimings
from pyroute2_cni.runtime.metrics import Metrics
from tests.harness.api_fixtures import pending_pod
from tests.harness.apiserver import ApiServer
from tests.harness.waiting import wait_for

pytestmark = pytest.mark.api

NAMESPACE = "pod-watch"
NODE = "pw-node-a"
OTHER = "pw-node-b"
# Watches that end every 2 s: the test sees the watch resume from its resourceVersion.
SHORT = WatchTimings(server_timeout=2.0, server_timeout_jitter=0.0, quiet_timeout=10.0)


@pytest.fixture
def core(k8s_client: client.ApiClient) -> Iterator[client.CoreV1Api]:
    api = client.CoreV1Api(k8s_client)
    calls: list[Callable[[], object]] = [
        lambda: api.create_namespace({"metadata": {"name": NAMESPACE}}),
        # No controller-manager here: the pods' service account is made by hand.
        lambda: api.create_namespaced_service_account(NAMESPACE, {"metadata": {"name": "default"}}),
    ]
    for create in calls:
        try:
            create()
        except client.ApiException as exc:
            if exc.status != 409:
                raise
    yield api
    for pod in api.list_namespaced_pod(NAMESPACE).items:
        api.delete_namespaced_pod(pod.metadata.name, NAMESPACE, grace_period_seconds=0)


def make_pod(core: client.CoreV1Api, name: str, node: str) -> str:
    return str(
        core.create_namespaced_pod(NAMESPACE, pending_pod(name, NAMESPACE, node)).metadata.uid
    )


def delete_pod(core: client.CoreV1Api, name: str) -> None:
    core.delete_namespaced_pod(name, NAMESPACE, grace_period_seconds=0)


def names(watch: NodePodWatch) -> set[str] | None:
    pods = watch.pods()
    return None if pods is None else {p.name for p in pods}


def test_the_watch_follows_the_nodes_pods_across_reconnects_and_an_api_server_restart(
    kube_api: ApiServer, k8s_client: client.ApiClient, core: client.CoreV1Api
) -> None:
    uid = make_pod(core, "before", NODE)
    make_pod(core, "elsewhere", OTHER)
    api_client = kube_api.api_client()
    watch = NodePodWatch(api_client, NODE, timings=SHORT)
    watch.start()
    try:
        wait_for(lambda: names(watch) == {"before"}, 30, "the first list")
        (pod,) = watch.pods() or []
        assert pod.uid == uid and pod.namespace == NAMESPACE
        make_pod(core, "added", NODE)
        make_pod(core, "added-elsewhere", OTHER)
        wait_for(lambda: names(watch) == {"before", "added"}, 30, "an added pod")
        delete_pod(core, "before")
        wait_for(lambda: names(watch) == {"added"}, 30, "a deleted pod")
        # Several 2 s watches later the cache still follows, with one list in all.
        reconnects = watch.watches
        wait_for(lambda: watch.watches >= reconnects + 2, 30, "two more watch requests")
        make_pod(core, "later", NODE)
        wait_for(lambda: names(watch) == {"added", "later"}, 30, "a pod after reconnects")
        assert watch.lists == 1

        # The API server goes away and comes back: the thread retries, then sees changes.
        kube_api.restart_apiserver()
        make_pod(core, "after-restart", NODE)
        delete_pod(core, "added")
        wait_for(lambda: names(watch) == {"later", "after-restart"}, 60, "changes after a restart")
    finally:
        stopped = watch.stop(timeout=10)
        api_client.close()
    assert stopped, "the watch thread did not end"


def test_the_store_serves_the_nodes_pods_from_its_watch_and_stops_it_on_close(
    kube_api: ApiServer, core: client.CoreV1Api
) -> None:
    make_pod(core, "cached", NODE)
    metrics = Metrics()
    store = KubeBlockStore(kube_api.api_client(), metrics)
    try:
        first = store.cached_node_pods(NODE)  # starts the watch; None until it listed
        assert first is None or {p.name for p in first} <= {"cached"}
        got = wait_for(lambda: store.cached_node_pods(NODE), 30, "the cached pods")
        assert {p.name for p in got} == {"cached"}
        assert store.cached_node_pods(OTHER) is None  # one watch per store: its node
        listed = lists(metrics)
        assert listed >= 1  # the watch's first list counts as the store's LIST
        for _ in range(5):
            store.cached_node_pods(NODE)
        assert lists(metrics) == listed  # served without a LIST
    finally:
        store.close()
    assert not [t for t in threading.enumerate() if t.name == f"pods-{NODE}"]


def lists(metrics: Metrics) -> float:
    return metrics.registry.get_sample_value("pyroute2_cni_ipam_api_lists_total") or 0.0
