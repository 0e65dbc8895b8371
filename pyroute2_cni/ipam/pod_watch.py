"""This node's pods, kept by one list and a watch instead of a LIST every IPAM round.

The IPAM actor's leak check asks every round which pods exist on the node.  Listing them
each time was a LIST per node per minute, half of what an idle node cost the API server
(make bench-scale).  NodePodWatch lists the node's pods once (fieldSelector
spec.nodeName), then follows a watch from that list's resourceVersion in a thread of its
own, relisting only when the server says the version expired (410).

The cache may lag the API server (a watch being re-established), so it only finds
candidates: the IPAM actor confirms a leak with a real LIST before it releases anything.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from pyroute2_cni.ipam.blocks import PodInfo
from pyroute2_cni.kube.objects import Json, object_resource_version
from pyroute2_cni.kube.transport import (
    ApiError,
    Expired,
    KubernetesApi,
    RawStream,
    StreamQuiet,
    WatchTimings,
    watch_error,
)

log = logging.getLogger(__name__)


def pod_info(obj: Mapping[str, Any]) -> PodInfo:
    meta = obj.get("metadata") or {}

    def text(key: str) -> str:
        value = meta.get(key)
        return value if isinstance(value, str) else ""

    return PodInfo(namespace=text("namespace"), name=text("name"), uid=text("uid"))


class NodePodWatch:
    """List + watch of the pods bound to one node; ``pods()`` is None until listed."""

    def __init__(
        self,
        api_client: Any,
        node: str,
        timings: WatchTimings | None = None,
        on_list: Callable[[], None] | None = None,
    ) -> None:
        self.node = node
        self._timings = timings or WatchTimings()
        # Not closed here: the client is the store's.
        self._api = KubernetesApi(api_client, self._timings)
        self._call = self._api.pods_on(node)
        self._on_list = on_list
        self._lock = threading.Lock()
        self._pods: dict[tuple[str, str], PodInfo] | None = None
        self._stream: RawStream | None = None
        self._stop = threading.Event()
        self.lists = 0
        self.watches = 0
        self._thread = threading.Thread(target=self._run, name=f"pods-{node}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float | None = None) -> bool:
        """End the thread (closing an open watch wakes it); True when it ended."""
        self._stop.set()
        with self._lock:
            stream = self._stream
        if stream is not None:
            stream.close()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(self._timings.stop_timeout if timeout is None else timeout)
        return not self._thread.is_alive()

    def pods(self) -> list[PodInfo] | None:
        with self._lock:
            return None if self._pods is None else list(self._pods.values())

    # -- the thread --------------------------------------------------------------------

    def _run(self) -> None:
        resource_version: str | None = None
        failures = 0
        while not self._stop.is_set():
            try:
                if resource_version is None:
                    resource_version = self._list()
                resource_version = self._watch(resource_version)
                failures = 0
            except Expired as exc:
                log.info("pods of %s: %s; relisting", self.node, exc)
                resource_version = None
            except StreamQuiet:
                log.info("pods of %s: watch quiet; reconnecting", self.node)
            except ApiError as exc:
                failures += 1
                delay = self._timings.backoff(failures)
                log.warning(
                    "pods of %s: %s failed (%s); retrying in %.1f s",
                    self.node,
                    "list" if resource_version is None else "watch",
                    exc,
                    delay,
                )
                self._stop.wait(delay)
            except Exception:
                # The cache is only a hint (leaks are confirmed by a LIST); a bug here must
                # not take the IPAM actor down, but it must not serve stale pods either.
                log.exception("pods of %s: watch failed; back to LISTs", self.node)
                with self._lock:
                    self._pods = None
                return

    def _list(self) -> str:
        self.lists += 1
        if self._on_list is not None:
            self._on_list()
        items, resource_version = self._api.list_from(self._call)
        pods = {(p.namespace, p.name): p for p in map(pod_info, items)}
        with self._lock:
            self._pods = pods
        return resource_version

    def _watch(self, resource_version: str) -> str:
        stream = self._api.watch_from(self._call, resource_version, self._timings.watch_seconds())
        with self._lock:
            if self._stop.is_set():
                stream.close()
                return resource_version
            self._stream = stream
        self.watches += 1
        try:
            for event in stream:
                resource_version = self._handle(event, resource_version)
        finally:
            with self._lock:
                self._stream = None
            stream.close()
        return resource_version

    def _handle(self, event: Json, resource_version: str) -> str:
        etype = event.get("type")
        obj = event.get("object")
        if etype == "ERROR":
            raise watch_error(obj)
        if not isinstance(obj, Mapping):
            return resource_version
        if etype in ("ADDED", "MODIFIED", "DELETED"):
            pod = pod_info(obj)
            key = (pod.namespace, pod.name)
            with self._lock:
                if self._pods is not None:
                    if etype == "DELETED":
                        # A pod recreated under the name stays (another UID).
                        if self._pods.get(key, pod).uid == pod.uid:
                            self._pods.pop(key, None)
                    else:
                        self._pods[key] = pod
        return object_resource_version(obj) or resource_version
