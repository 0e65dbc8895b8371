"""EventActor: writes the Kubernetes Events other actors report (RecordEvent).

Best effort by design: an Event that cannot be written is logged (once per
failing streak) and dropped; nothing waits for it.  The uid of the object
concerned is read once per object so `kubectl describe` shows the Event there.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from pyroute2_cni.actors.base import ActorHooks, BaseActor
from pyroute2_cni.kube.client import ApiException, core_v1, custom_objects, object_not_found
from pyroute2_cni.kube.events import EVENT_NAMESPACE, EventBook, EventWrite
from pyroute2_cni.kube.objects import utc_now
from pyroute2_cni.messages.events import RecordEvent
from pyroute2_cni.runtime.metrics import Metrics


class EventActor(BaseActor):
    def __init__(
        self,
        hooks: ActorHooks,
        *,
        node: str,
        api_factory: Callable[[], Any],
        metrics: Metrics,
        interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        request_timeout: float = 10.0,
    ) -> None:
        super().__init__(hooks)
        self._book = EventBook(node=node, interval=interval)
        self._api_factory = api_factory
        self._metrics = metrics
        self._clock = clock
        self._timeout = request_timeout
        self._core: Any = None
        self._custom: Any = None
        # uid by (kind, name), with when it was read: a failed read is retried after an
        # interval, not at every occurrence (a PoolExhausted can come with every ADD).
        self._uids: dict[tuple[str, str], tuple[str | None, float]] = {}
        self._interval = interval
        self._failing = False

    def on_start(self) -> None:
        api = self._api_factory()
        self._core = core_v1(api)
        self._custom = custom_objects(api)
        self.set_ready(True)

    def handle(self, message: Any) -> Any:
        match message:
            case RecordEvent():
                self._record(message)
                return None
            case _:
                return self.unknown(message)

    def _record(self, event: RecordEvent) -> None:
        write = self._book.record(
            event, now=self._clock(), stamp=utc_now(), uid=self._uid(event.kind, event.name)
        )
        if write is None:
            return
        try:
            self._write(write)
        except Exception as exc:  # the API's errors come in several types; events are a hint
            self._metrics.event_writes.labels("failed").inc()
            if not self._failing:
                self.log.warning("cannot write event %s %s: %s", event.reason, write.name, exc)
            self._failing = True
            return
        self._metrics.event_writes.labels("ok").inc()
        self._failing = False

    def _write(self, write: EventWrite) -> None:
        if write.create:
            self._core.create_namespaced_event(
                EVENT_NAMESPACE, write.body, _request_timeout=self._timeout
            )
            return
        try:
            self._core.patch_namespaced_event(
                write.name, EVENT_NAMESPACE, write.body, _request_timeout=self._timeout
            )
        except ApiException as exc:
            if not object_not_found(exc):
                raise
            # Expired (the API server keeps events an hour): the next occurrence
            # starts a new Event.
            self._book.forget(write.name)

    def _uid(self, kind: str, name: str) -> str | None:
        key = (kind, name)
        known = self._uids.get(key)
        now = self._clock()
        if known is not None and (known[0] is not None or now - known[1] < self._interval):
            return known[0]
        self._uids[key] = (None, now)
        try:
            if kind == "Node":
                obj = self._core.read_node(name, _request_timeout=self._timeout)
                uid = obj.metadata.uid
            else:
                group, version = "cni.pyroute2.org", "v1alpha1"
                plural = f"{kind.lower()}s"
                found = self._custom.get_cluster_custom_object(
                    group, version, plural, name, _request_timeout=self._timeout
                )
                uid = found.get("metadata", {}).get("uid")
        except Exception as exc:  # no uid: the Event still lists under its name
            self.log.debug("no uid for %s %s: %s", kind, name, exc)
            return None
        self._uids[key] = (str(uid) if uid else None, now)
        return self._uids[key][0]
