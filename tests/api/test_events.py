"""Kubernetes Events (issue 19, item 3) written by the real EventActor to the real
kube-apiserver: one Event per series whose count grows, on the object's uid (so
`kubectl describe` shows it), at most one write per interval, and a fresh Event once the
API server has expired the old one."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest
from kubernetes.client import ApiClient, Configuration, CoreV1Api

from pyroute2_cni.actors.base import ActorHooks
from pyroute2_cni.actors.event_actor import EventActor
from pyroute2_cni.messages.base import Ping, Pong
from pyroute2_cni.messages.events import RecordEvent
from pyroute2_cni.runtime.metrics import Metrics
from tests.harness.apiserver import ApiServer
from tests.harness.waiting import wait_for

pytestmark = pytest.mark.api


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def node_name(k8s_client: ApiClient) -> Iterator[str]:
    core = CoreV1Api(k8s_client)
    name = f"ev-{uuid.uuid4().hex[:8]}"
    core.create_node({"metadata": {"name": name}})
    try:
        yield name
    finally:
        core.delete_node(name)


def _events(core: CoreV1Api, name: str) -> list[Any]:
    found = core.list_namespaced_event(
        "default", field_selector=f"involvedObject.name={name}"
    ).items
    return sorted(found, key=lambda e: e.metadata.creation_timestamp)


def _writes(metrics: Metrics, result: str) -> float:
    value = metrics.registry.get_sample_value("pyroute2_cni_event_writes_total", {"result": result})
    return value or 0.0


def test_occurrences_aggregate_into_one_event_on_the_node(
    kube_api: ApiServer, k8s_client: ApiClient, node_name: str
) -> None:
    core = CoreV1Api(k8s_client)
    clock, metrics = Clock(), Metrics()
    ref = EventActor.start(
        ActorHooks(name="events", generation=1, on_crash=lambda *_args: None),
        node=node_name,
        api_factory=kube_api.api_client,
        metrics=metrics,
        interval=60.0,
        clock=clock,
    )
    failed = RecordEvent(
        kind="Node",
        name=node_name,
        reason="FrrApplyFailed",
        message=f"FRR apply on {node_name}: ReloadFailed: frr-reload.py exited 1",
    )

    def record(count: int = 1) -> None:
        for _ in range(count):
            clock.now += 1
            ref.tell(failed)
        ref.ask(Ping(seq=1), timeout=10)  # everything told before is handled

    try:
        record(5)
        (event,) = _events(core, node_name)
        uid = core.read_node(node_name).metadata.uid
        assert event.involved_object.uid == uid and event.involved_object.kind == "Node"
        assert (event.type, event.reason, event.count) == ("Warning", "FrrApplyFailed", 1)
        assert event.source.component == "pyroute2-cni" and event.source.host == node_name
        assert _writes(metrics, "ok") == 1, "4 repeats within the interval cost no write"
        # The README's listing finds it.
        listed = core.list_event_for_all_namespaces(field_selector="source=pyroute2-cni").items
        assert event.metadata.name in {e.metadata.name for e in listed}

        clock.now += 60
        record()
        (event,) = _events(core, node_name)
        assert event.count == 6 and _writes(metrics, "ok") == 2

        # The API server expired it: the next write finds it gone, the one after
        # starts a new Event.
        core.delete_namespaced_event(event.metadata.name, "default")
        clock.now += 60
        record()
        assert _events(core, node_name) == [] and _writes(metrics, "failed") == 0
        record()
        (fresh,) = _events(core, node_name)
        assert fresh.metadata.name != event.metadata.name and fresh.count == 1
    finally:
        ref.stop(block=True, timeout=10)


def test_an_unwritable_event_is_counted_not_fatal(node_name: str) -> None:
    """An API server that cannot be reached: the event is dropped and counted, the
    actor carries on (events are a hint, never a reason to crash)."""
    metrics = Metrics()

    def unreachable() -> ApiClient:
        config = Configuration()
        config.host = f"http://127.0.0.1:{_closed_port()}"
        config.retries = 0
        return ApiClient(config)

    ref = EventActor.start(
        ActorHooks(name="events", generation=1, on_crash=lambda *_args: None),
        node=node_name,
        api_factory=unreachable,
        metrics=metrics,
        request_timeout=2.0,
    )
    try:
        for n in (1, 2):
            ref.tell(RecordEvent(kind="Node", name=node_name, reason=f"R{n}", message="m"))
            wait_for(partial(_reached, metrics, "failed", n), 20, f"failed write {n}")
        assert isinstance(ref.ask(Ping(seq=1), timeout=10), Pong)
    finally:
        ref.stop(block=True, timeout=10)


def _reached(metrics: Metrics, result: str, count: int) -> bool:
    return _writes(metrics, result) == count


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
