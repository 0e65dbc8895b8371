"""The node's VRFNodeState (issue 19, item 1), written by the real NodeStateActor to the
real kube-apiserver with the CRD installed as users install it: created owned by the
Node, `kubectl get` columns, no write while nothing changes, a burst of changes within
the minimum interval written once with the last state, recreated after a delete."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes.client import ApiClient, CoreV1Api, CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from pyroute2_cni.actors.base import ActorHooks
from pyroute2_cni.actors.node_state_actor import VERIFY_TICKS, CheckState, NodeStateActor
from pyroute2_cni.kube.node_state import GROUP, PLURAL, VERSION
from pyroute2_cni.messages.node_state import (
    FrrApplySeen,
    FrrStateSeen,
    IpamUseSeen,
    SessionSeen,
    VniSeen,
    VrfUse,
)
from pyroute2_cni.runtime.health import HealthReport
from pyroute2_cni.runtime.metrics import Metrics
from tests.harness.api_fixtures import kubectl
from tests.harness.apiserver import ApiServer
from tests.harness.waiting import wait_for

pytestmark = pytest.mark.api

READY = HealthReport(live=True, ready=True, lines=("ipam: ready", "frr: ready"))
L3 = VniSeen(vrf=42, vni=100, kind="l3vni")
MIN_INTERVAL = 1.0
APPLIED = FrrApplySeen(
    applied=True, reason="Applied", message="ok", at="2026-12-06T08:00:00Z", config_hash="sha256:ab"
)
USE = IpamUseSeen(
    vrfs=(VrfUse(vrf=42, domain="default", blocks=1, addresses=3, free=61, exhausted=False),)
)


def _frr(*states: str) -> FrrStateSeen:
    return FrrStateSeen(
        answered=True,
        sessions=tuple(
            SessionSeen(peer=f"10.0.0.{i + 2}", state=s, uptime=30.0 if s == "Established" else 0)
            for i, s in enumerate(states)
        ),
        expected=(L3,),
        known=(L3,),
    )


@pytest.fixture
def node(pyroute2_crds: ApiServer, k8s_client: ApiClient) -> Iterator[tuple[str, str]]:
    core = CoreV1Api(k8s_client)
    name = f"state-{uuid.uuid4().hex[:8]}"
    uid = core.create_node({"metadata": {"name": name}}).metadata.uid
    try:
        yield name, uid
    finally:
        core.delete_node(name)
        # No garbage collector runs in this tier: the owned object goes by hand.
        try:
            CustomObjectsApi(k8s_client).delete_cluster_custom_object(GROUP, VERSION, PLURAL, name)
        except ApiException as exc:
            assert exc.status == 404


def _writes(metrics: Metrics, result: str = "ok") -> float:
    value = metrics.registry.get_sample_value(
        "pyroute2_cni_node_state_writes_total", {"result": result}
    )
    return value or 0.0


def _read(k8s_client: ApiClient, name: str) -> dict[str, Any] | None:
    try:
        found: dict[str, Any] = CustomObjectsApi(k8s_client).get_cluster_custom_object(
            GROUP, VERSION, PLURAL, name
        )
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return found


def _start(kube_api: ApiServer, node: str, metrics: Metrics, interval: float = 0.05) -> Any:
    return NodeStateActor.start(
        ActorHooks(name="node-state", generation=1, on_crash=lambda *_args: None),
        node=node,
        api_factory=kube_api.api_client,
        readiness=lambda: READY,
        metrics=metrics,
        version="0.1.0",
        interval=interval,
        min_interval=MIN_INTERVAL,
    )


def test_the_state_is_owned_by_its_node_and_written_only_on_change(
    pyroute2_crds: ApiServer, k8s_client: ApiClient, node: tuple[str, str]
) -> None:
    name, uid = node
    metrics = Metrics()
    ref = _start(pyroute2_crds, name, metrics)
    try:
        for fact in (APPLIED, _frr("Established", "Established"), USE):
            ref.tell(fact)

        def written() -> bool:
            obj = _read(k8s_client, name)
            return obj is not None and obj.get("status", {}).get("pods") == 3

        wait_for(written, 10, "the VRFNodeState with the facts")
        obj = _read(k8s_client, name)
        assert obj is not None
        assert obj["metadata"]["ownerReferences"] == [
            {"apiVersion": "v1", "kind": "Node", "name": name, "uid": uid}
        ]
        status = obj["status"]
        assert status["ready"] is True and status["problems"] == []
        assert status["bgp"]["summary"] == "2/2"
        table = kubectl(pyroute2_crds.kubeconfig, "get", "vrfnodestates", name)
        header, row = table.splitlines()
        assert header.split()[:7] == ["NAME", "READY", "FRR", "SESSIONS", "VNIS", "PODS", "HELD"]
        assert row.split()[:7] == [name, "true", "Applied", "2/2", "1/1", "3", "0"]

        # Steady: many ticks (and a read-back), no write, the object does not move.
        writes = _writes(metrics)
        version = obj["metadata"]["resourceVersion"]
        for _ in range(VERIFY_TICKS * 2):
            ref.ask(CheckState(tick=False))
        ref.tell(_frr("Established", "Established"))  # the same again
        ref.ask(CheckState())
        assert _writes(metrics) == writes
        after = _read(k8s_client, name)
        assert after is not None and after["metadata"]["resourceVersion"] == version

        # A burst of changes within the minimum interval: one more write, the last state.
        burst = (("Active", "Established"), ("Idle", "Active"), ("Established",) * 2 + ("Active",))
        for states in burst:
            ref.tell(_frr(*states))

        def last_state_written() -> bool:
            obj = _read(k8s_client, name)
            return obj is not None and obj["status"]["bgp"]["summary"] == "2/3"

        wait_for(last_state_written, 10, "the burst's last state")
        assert _writes(metrics) - writes <= 2, "at most the first change and the last state"
        obj = _read(k8s_client, name)
        assert obj is not None
        assert obj["status"]["ready"] is False
        assert obj["status"]["problems"] == ["BGP sessions not Established: 10.0.0.4 Active"]
        row = kubectl(pyroute2_crds.kubeconfig, "get", "vrfns", name, "--no-headers")
        assert row.split()[1:4] == ["false", "Applied", "2/3"]
    finally:
        ref.stop()


def test_a_state_deleted_by_hand_is_written_again(
    pyroute2_crds: ApiServer, k8s_client: ApiClient, node: tuple[str, str]
) -> None:
    name, _ = node
    metrics = Metrics()
    ref = _start(pyroute2_crds, name, metrics, interval=0.02)
    try:
        ref.tell(APPLIED)
        wait_for(lambda: _read(k8s_client, name) is not None, 10, "the first write")
        CustomObjectsApi(k8s_client).delete_cluster_custom_object(GROUP, VERSION, PLURAL, name)

        def back() -> bool:
            obj = _read(k8s_client, name)
            return obj is not None and obj.get("status", {}).get("frr", {}).get("applied") is True

        wait_for(back, 15, "the VRFNodeState written again")
    finally:
        ref.stop()


def test_a_missing_crd_or_api_is_retried_not_crashed(kube_api: ApiServer) -> None:
    """Before the CRD is installed (or with the API away) the actor lives and retries."""
    metrics, crashes = Metrics(), []
    ref = NodeStateActor.start(
        ActorHooks(name="node-state", generation=1, on_crash=lambda *args: crashes.append(args)),
        node=f"absent-{uuid.uuid4().hex[:8]}",
        api_factory=lambda: _unreachable(kube_api),
        readiness=lambda: READY,
        metrics=metrics,
        version="0.1.0",
        interval=0.05,
        min_interval=0.1,
    )
    try:
        ref.tell(APPLIED)
        wait_for(lambda: _writes(metrics, "failed") >= 3, 20, "three failed attempts")
        assert ref.is_alive() and crashes == []
        assert _writes(metrics) == 0
    finally:
        ref.stop()


def _unreachable(kube_api: ApiServer) -> ApiClient:
    client = kube_api.api_client()
    client.configuration.host = "https://127.0.0.1:1"  # nothing listens on port 1
    return client
