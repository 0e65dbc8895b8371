"""The Node's Pyroute2CNIReady condition (issue 19, item 2), written by the real
NodeConditionActor to the real kube-apiserver: it follows the readiness, names what is not
ready, leaves the kubelet's conditions alone, and costs no write while nothing changes."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes.client import ApiClient, CoreV1Api

from pyroute2_cni.actors.base import ActorHooks
from pyroute2_cni.actors.node_condition_actor import CheckCondition, NodeConditionActor
from pyroute2_cni.kube.node_condition import CONDITION_TYPE
from pyroute2_cni.runtime.health import HealthReport
from pyroute2_cni.runtime.metrics import Metrics
from tests.harness.apiserver import ApiServer
from tests.harness.waiting import wait_for

pytestmark = pytest.mark.api

READY = HealthReport(live=True, ready=True, lines=("ipam: ready", "frr: ready"))
FRR_DOWN = HealthReport(
    live=True,
    ready=False,
    lines=("ipam: ready", "frr: not ready (ApplyFailed: frr-reload.py failed)"),
)


class Readiness:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.report = FRR_DOWN

    def set(self, report: HealthReport) -> None:
        with self._lock:
            self.report = report

    def __call__(self) -> HealthReport:
        with self._lock:
            return self.report


@pytest.fixture
def node_name(k8s_client: ApiClient) -> Iterator[str]:
    core = CoreV1Api(k8s_client)
    name = f"cond-{uuid.uuid4().hex[:8]}"
    core.create_node({"metadata": {"name": name}})
    # The kubelet's own condition, which ours must leave as it is.
    kubelet = {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "ok"}
    core.patch_node_status(name, {"status": {"conditions": [kubelet]}})
    try:
        yield name
    finally:
        core.delete_node(name)


def _conditions(core: CoreV1Api, name: str) -> dict[str, Any]:
    status = core.read_node_status(name).status
    return {c.type: c for c in status.conditions or []}


def _writes(metrics: Metrics, result: str = "ok") -> float:
    value = metrics.registry.get_sample_value(
        "pyroute2_cni_node_condition_writes_total", {"result": result}
    )
    return value or 0.0


def _start(
    kube_api: ApiServer, node: str, readiness: Readiness, metrics: Metrics, generation: int = 1
) -> Any:
    return NodeConditionActor.start(
        ActorHooks(name="node-condition", generation=generation, on_crash=lambda *_args: None),
        node=node,
        readiness=readiness,
        api_factory=kube_api.api_client,
        interval=0.05,
        metrics=metrics,
    )


def test_the_condition_follows_readiness_and_writes_only_changes(
    kube_api: ApiServer, k8s_client: ApiClient, node_name: str
) -> None:
    core = CoreV1Api(k8s_client)
    readiness, metrics = Readiness(), Metrics()
    ref = _start(kube_api, node_name, readiness, metrics)
    try:
        wait_for(lambda: CONDITION_TYPE in _conditions(core, node_name), 10, "the condition")
        ours = _conditions(core, node_name)[CONDITION_TYPE]
        assert ours.status == "False" and ours.reason == "DaemonNotReady"
        assert "frr: not ready (ApplyFailed: frr-reload.py failed)" in ours.message
        assert "ipam" not in ours.message, "only what is not ready is named"
        assert _conditions(core, node_name)["Ready"].reason == "KubeletReady"
        went_false = ours.last_transition_time

        # Steady: many ticks, no write (the resourceVersion does not move either).
        version = core.read_node(node_name).metadata.resource_version
        ticks = 20
        for _ in range(ticks):
            ref.ask(CheckCondition())
        assert _writes(metrics) == 1
        assert core.read_node(node_name).metadata.resource_version == version

        readiness.set(READY)
        wait_for(lambda: _conditions(core, node_name)[CONDITION_TYPE].status == "True", 10, "True")
        ours = _conditions(core, node_name)[CONDITION_TYPE]
        assert ours.reason == "DaemonReady" and ours.last_transition_time >= went_false
        assert _conditions(core, node_name)["Ready"].reason == "KubeletReady"
        assert _writes(metrics) == 2
    finally:
        ref.stop()

    # A restarted daemon keeps the transition time when the status has not changed.
    before = _conditions(core, node_name)[CONDITION_TYPE]
    metrics = Metrics()
    ref = _start(kube_api, node_name, readiness, metrics, generation=2)
    try:
        wait_for(lambda: _writes(metrics) == 1, 10, "the restarted actor's first write")
        after = _conditions(core, node_name)[CONDITION_TYPE]
        assert after.status == "True"
        assert after.last_transition_time == before.last_transition_time
    finally:
        ref.stop()


def test_a_missing_node_is_retried_not_crashed(kube_api: ApiServer) -> None:
    metrics, crashes = Metrics(), []
    ref = NodeConditionActor.start(
        ActorHooks(
            name="node-condition", generation=1, on_crash=lambda *args: crashes.append(args)
        ),
        node=f"absent-{uuid.uuid4().hex[:8]}",
        readiness=Readiness(),
        api_factory=kube_api.api_client,
        interval=0.05,
        metrics=metrics,
    )
    try:
        wait_for(lambda: _writes(metrics, "failed") >= 3, 10, "three failed attempts")
        assert ref.is_alive() and crashes == []
        assert _writes(metrics) == 0
    finally:
        ref.stop()
