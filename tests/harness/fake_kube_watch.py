"""An in-memory API server behind pyroute2_cni.kube.transport.KubeApi, for unit tests.

:class:`FakeCluster` keeps objects per resource with one global resourceVersion
counter (as etcd does), an event log that watches replay from a
resourceVersion, and knobs a real server does not offer on demand: compaction
(watches from older versions get 410), injected raw events (bookmarks, unknown
types, ERROR), broken or quiet streams and failing calls.  Each
:meth:`FakeCluster.api` call returns a new client view, the way each pump gets
its own ApiClient.

:class:`Recorder` is a Pykka actor that keeps every message it receives, to
stand in for a subscriber.
"""

from __future__ import annotations

import copy
import threading
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pykka

from pyroute2_cni.actors.address import Address
from pyroute2_cni.kube.objects import CRD_GROUP, CRD_VERSION, Json, Resource
from pyroute2_cni.kube.transport import ApiError, Expired, StreamQuiet

KINDS = {
    Resource.VRF_DOMAIN: "VRFDomain",
    Resource.VRF_DOMAIN_BINDING: "VRFDomainBinding",
    Resource.VRF_NODE_CONFIG: "VRFNodeConfig",
    Resource.NODE: "Node",
    Resource.NAMESPACE: "Namespace",
}

EPOCH = datetime(2024, 1, 1, tzinfo=UTC)


@dataclass
class _Entry:
    rv: int
    event: dict[str, Any]


class FakeStream:
    def __init__(self, cluster: FakeCluster, resource: Resource, start: int) -> None:
        self._cluster = cluster
        self.resource = resource
        self.start = start
        self.closed = False
        self.broken: Exception | None = None
        # The log position of the next event to hand on.
        self.position = 0

    def __iter__(self) -> Iterator[Json]:
        cluster = self._cluster
        position = 0
        with cluster.cond:
            log = cluster.log[self.resource]
            # Skip what happened at or before the start version.
            while position < len(log) and log[position].rv <= self.start:
                position += 1
        while True:
            with cluster.cond:
                while (
                    not self.closed
                    and self.broken is None
                    and position >= len(cluster.log[self.resource])
                ):
                    self.position = position
                    cluster.cond.wait()
                if self.closed:
                    return
                if self.broken is not None:
                    error, self.broken = self.broken, None
                    self.closed = True
                    raise error
                event = copy.deepcopy(cluster.log[self.resource][position].event)
                position += 1
            yield event

    def close(self) -> None:
        with self._cluster.cond:
            self.closed = True
            self._cluster.cond.notify_all()


class FakeCluster:
    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.rv = 100
        self.objects: dict[Resource, dict[str, dict[str, Any]]] = {r: {} for r in Resource}
        self.log: dict[Resource, list[_Entry]] = {r: [] for r in Resource}
        # A watch from a version below this gets 410.
        self.oldest: dict[Resource, int] = dict.fromkeys(Resource, 0)
        self.calls: Counter[tuple[str, Resource]] = Counter()
        # replace_status calls (failed ones too) by object name.
        self.status_writes: Counter[str] = Counter()
        self.watch_versions: dict[Resource, list[str]] = {r: [] for r in Resource}
        self.streams: list[FakeStream] = []
        self._failures: dict[str, list[Exception]] = {}
        self._created = 0
        self.expire_as_http = False
        # Cleared by hold_lists(): list calls wait until release_lists().
        self._lists_open = threading.Event()
        self._lists_open.set()

    # -- building objects ----------------------------------------------------------------
    def _bump(self) -> int:
        self.rv += 1
        return self.rv

    def _record(self, resource: Resource, etype: str, obj: dict[str, Any]) -> None:
        rv = int(obj["metadata"]["resourceVersion"])
        self.log[resource].append(_Entry(rv, {"type": etype, "object": copy.deepcopy(obj)}))
        self.cond.notify_all()

    def _new_object(self, resource: Resource, name: str) -> dict[str, Any]:
        self._created += 1
        created = (EPOCH + timedelta(seconds=self._created)).strftime("%Y-%m-%dT%H:%M:%SZ")
        api_version = f"{CRD_GROUP}/{CRD_VERSION}" if resource.custom else "v1"
        return {
            "apiVersion": api_version,
            "kind": KINDS[resource],
            "metadata": {
                "name": name,
                "uid": f"uid-{self._created}",
                "creationTimestamp": created,
                "generation": 0,
            },
        }

    def put(
        self,
        resource: Resource,
        name: str,
        *,
        spec: Mapping[str, Any] | None = None,
        status: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Create or update `name` (spec changes bump generation); returns a copy."""
        with self.cond:
            existing = self.objects[resource].get(name)
            obj = copy.deepcopy(existing) if existing else self._new_object(resource, name)
            if spec is not None and obj.get("spec") != spec:
                obj["spec"] = copy.deepcopy(dict(spec))
                obj["metadata"]["generation"] += 1
            if status is not None:
                obj["status"] = copy.deepcopy(dict(status))
            obj["metadata"]["resourceVersion"] = str(self._bump())
            self.objects[resource][name] = obj
            self._record(resource, "MODIFIED" if existing else "ADDED", obj)
            return copy.deepcopy(obj)

    def delete(self, resource: Resource, name: str) -> None:
        with self.cond:
            obj = self.objects[resource].pop(name)
            obj["metadata"]["resourceVersion"] = str(self._bump())
            self._record(resource, "DELETED", obj)

    def get(self, resource: Resource, name: str) -> dict[str, Any] | None:
        with self.cond:
            obj = self.objects[resource].get(name)
            return copy.deepcopy(obj) if obj is not None else None

    def names(self, resource: Resource) -> set[str]:
        with self.cond:
            return set(self.objects[resource])

    # -- knobs -----------------------------------------------------------------------------
    def inject(
        self, resource: Resource, event: Mapping[str, Any], *, at: int | None = None
    ) -> None:
        """Append a raw event (bookmark, unknown type, ERROR) to the resource's stream."""
        with self.cond:
            rv = self.rv if at is None else at
            self.log[resource].append(_Entry(rv, copy.deepcopy(dict(event))))
            self.cond.notify_all()

    def bookmark(self, resource: Resource) -> str:
        with self.cond:
            rv = str(self._bump())
            self.log[resource].append(
                _Entry(
                    int(rv),
                    {
                        "type": "BOOKMARK",
                        "object": {"kind": KINDS[resource], "metadata": {"resourceVersion": rv}},
                    },
                )
            )
            self.cond.notify_all()
            return rv

    def compact(self, resource: Resource) -> None:
        """Forget the history: a watch from any version older than the current one gets 410."""
        with self.cond:
            self.oldest[resource] = self.rv

    def fail_next(self, method: str, error: Exception, times: int = 1) -> None:
        """The next `times` calls of `method` (list, watch, create, replace_status) raise."""
        with self.cond:
            self._failures.setdefault(method, []).extend([error] * times)

    def break_streams(self, resource: Resource, error: Exception | None = None) -> int:
        """Open streams of `resource` fail (a reset connection by default)."""
        with self.cond:
            count = 0
            for stream in self.streams:
                if stream.resource is resource and not stream.closed:
                    stream.broken = error or ApiError(0, "StreamBroken", "connection reset")
                    count += 1
            self.cond.notify_all()
            return count

    def go_quiet(self, resource: Resource) -> int:
        return self.break_streams(resource, StreamQuiet("no byte within the quiet timeout"))

    def drained(self, resource: Resource) -> bool:
        """Every open stream of `resource` handed on the whole log and waits for more."""
        with self.cond:
            streams = [s for s in self.streams if s.resource is resource and not s.closed]
            end = len(self.log[resource])
            return bool(streams) and all(s.position >= end for s in streams)

    def open_streams(self, resource: Resource) -> int:
        with self.cond:
            return sum(1 for s in self.streams if s.resource is resource and not s.closed)

    def hold_lists(self) -> None:
        self._lists_open.clear()

    def release_lists(self) -> None:
        self._lists_open.set()

    def _maybe_fail(self, method: str) -> None:
        pending = self._failures.get(method)
        if pending:
            raise pending.pop(0)

    def api(self) -> FakeKubeApi:
        return FakeKubeApi(self)


class FakeKubeApi:
    """One client view of a FakeCluster (implements kube.transport.KubeApi)."""

    def __init__(self, cluster: FakeCluster) -> None:
        self.cluster = cluster
        self.closed = False

    def list(self, resource: Resource) -> tuple[list[Json], str]:
        c = self.cluster
        c._lists_open.wait(timeout=30)
        with c.cond:
            c.calls["list", resource] += 1
            c._maybe_fail("list")
            items: list[Json] = [copy.deepcopy(o) for _, o in sorted(c.objects[resource].items())]
            return items, str(c.rv)

    def watch(self, resource: Resource, resource_version: str, timeout_seconds: int) -> FakeStream:
        c = self.cluster
        with c.cond:
            c.calls["watch", resource] += 1
            c.watch_versions[resource].append(resource_version)
            c._maybe_fail("watch")
            start = int(resource_version)
            stream: FakeStream
            if start < c.oldest[resource]:
                message = f"too old resource version: {start} ({c.oldest[resource]})"
                if c.expire_as_http:
                    raise Expired(message)
                # What a caching API server does: an ERROR event in a 200 stream.
                stream = _OneShotError(
                    c,
                    resource,
                    {
                        "type": "ERROR",
                        "object": {
                            "kind": "Status",
                            "status": "Failure",
                            "reason": "Expired",
                            "code": 410,
                            "message": message,
                        },
                    },
                )
            else:
                stream = FakeStream(c, resource, start)
            c.streams.append(stream)
            return stream

    def create(self, resource: Resource, body: Json) -> Json:
        c = self.cluster
        with c.cond:
            c.calls["create", resource] += 1
            c._maybe_fail("create")
            name = body["metadata"]["name"]
            if name in c.objects[resource]:
                raise ApiError(409, "AlreadyExists", f'{resource.value} "{name}" already exists')
        return c.put(resource, name, spec=body.get("spec") or {})

    def replace_status(self, resource: Resource, name: str, body: Json) -> Json:
        c = self.cluster
        with c.cond:
            c.calls["replace_status", resource] += 1
            c.status_writes[name] += 1
            c._maybe_fail("replace_status")
            obj = c.objects[resource].get(name)
            if obj is None:
                raise ApiError(404, "NotFound", f'{resource.value} "{name}" not found')
            wanted = body["metadata"].get("resourceVersion")
            if wanted and wanted != obj["metadata"]["resourceVersion"]:
                raise ApiError(409, "Conflict", "the object has been modified")
            return c.put(resource, name, status=body.get("status") or {})

    def close(self) -> None:
        self.closed = True


class _OneShotError(FakeStream):
    """A stream that yields one ERROR event and ends (as the server closes it)."""

    def __init__(self, cluster: FakeCluster, resource: Resource, event: dict[str, Any]) -> None:
        super().__init__(cluster, resource, 0)
        self._event = event

    def __iter__(self) -> Iterator[Json]:
        if not self.closed:
            yield copy.deepcopy(self._event)
        self.closed = True


# -- a subscriber that records ----------------------------------------------------------------


class MessageLog:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[Any] = []

    def append(self, message: Any) -> None:
        with self._lock:
            self._items.append(message)

    def all(self) -> list[Any]:
        with self._lock:
            return list(self._items)

    def of(self, cls: type[Any]) -> list[Any]:
        return [m for m in self.all() if isinstance(m, cls)]

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


class Recorder(pykka.ThreadingActor):
    use_daemon_thread = True

    def __init__(self, log: MessageLog) -> None:
        super().__init__()
        self._log = log

    def on_receive(self, message: Any) -> Any:
        self._log.append(message)
        return None


def recorder(name: str = "subscriber") -> tuple[Address, MessageLog, pykka.ActorRef[Any]]:
    log = MessageLog()
    ref = Recorder.start(log)
    address = Address(name)
    address.bind(ref)
    return address, log, ref
