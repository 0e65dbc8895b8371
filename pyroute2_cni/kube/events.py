"""Kubernetes Events for what an operator must see on the object itself
(`kubectl describe vrfdomain vrf-42`, `kubectl describe node n1`): a VRFDomain
rejected, an FRR apply that failed on a node, an exhausted pool.

Occurrences are aggregated as client-go's recorder does: the same (object, type,
reason, message) is one Event whose ``count`` grows.  The API server is written
at most once per ``interval`` per series; occurrences in between are counted
and go with the next write (a series that stops mid-interval keeps its last
written count: events are a hint, the condition and the metrics are the
record).  Pure logic: the writes are the EventActor's.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from pyroute2_cni.messages.events import RecordEvent

# Cluster-scoped objects: their events live in "default", as kubectl looks for them.
EVENT_NAMESPACE = "default"
COMPONENT = "pyroute2-cni"
API_VERSIONS = {
    "Node": "v1",
    "VRFDomain": "cni.pyroute2.org/v1alpha1",
    "VRFNodeConfig": "cni.pyroute2.org/v1alpha1",
    "VRFDomainBinding": "cni.pyroute2.org/v1alpha1",
}
# Series remembered at once; the oldest is forgotten first (its next occurrence
# starts a new Event).
MAX_SERIES = 256
MESSAGE_LIMIT = 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class EventWrite:
    """Create the Event ``name`` (``create``), or patch its count and last time."""

    create: bool
    name: str
    body: dict[str, Any]


@dataclass(slots=True)
class _Series:
    name: str
    first: str
    count: int  # occurrences so far
    written: int  # count the API server has
    written_at: float
    written_seq: int = 0  # the book's write number of its last write


class EventBook:
    def __init__(self, *, node: str, interval: float = 60.0) -> None:
        self._node = node
        self._interval = interval
        self._series: OrderedDict[tuple[str, ...], _Series] = OrderedDict()
        self._made = 0
        self._writes = 0
        # The write number of each object's last written Event, by (kind, name).
        self._last_write: OrderedDict[tuple[str, str], int] = OrderedDict()

    def record(
        self, event: RecordEvent, *, now: float, stamp: str, uid: str | None = None
    ) -> EventWrite | None:
        """The write this occurrence calls for, or None (counted, written later)."""
        if event.kind not in API_VERSIONS:
            raise ValueError(f"no events for kind {event.kind!r}: one of {sorted(API_VERSIONS)}")
        key = (event.kind, event.name, _type(event), event.reason, event.message)
        series = self._series.get(key)
        if series is None:
            self._made += 1
            series = _Series(
                name=f"{event.name}.{self._node}.{int(now * 1000):x}{self._made:x}",
                first=stamp,
                count=1,
                written=0,
                written_at=float("-inf"),
            )
            self._series[key] = series
            while len(self._series) > MAX_SERIES:
                self._series.popitem(last=False)
        else:
            series.count += 1
            self._series.move_to_end(key)
            superseded = self._last_write.get((event.kind, event.name), 0) > series.written_seq
            if now - series.written_at < self._interval and not superseded:
                return None
        create = series.written == 0
        self._writes += 1
        series.written, series.written_at, series.written_seq = series.count, now, self._writes
        self._last_write[(event.kind, event.name)] = self._writes
        self._last_write.move_to_end((event.kind, event.name))
        while len(self._last_write) > MAX_SERIES:
            self._last_write.popitem(last=False)
        if create:
            body = self._body(event, series, stamp, uid)
            return EventWrite(create=True, name=series.name, body=body)
        patch = {"count": series.count, "lastTimestamp": stamp}
        return EventWrite(create=False, name=series.name, body=patch)

    def __len__(self) -> int:
        return len(self._series)

    def forget(self, name: str) -> None:
        """The Event ``name`` is gone from the API server (expired): start over."""
        for key, series in list(self._series.items()):
            if series.name == name:
                del self._series[key]

    def _body(
        self, event: RecordEvent, series: _Series, stamp: str, uid: str | None
    ) -> dict[str, Any]:
        involved: dict[str, Any] = {
            "apiVersion": API_VERSIONS[event.kind],
            "kind": event.kind,
            "name": event.name,
        }
        if uid:
            involved["uid"] = uid
        message = event.message
        if len(message) > MESSAGE_LIMIT:
            message = message[: MESSAGE_LIMIT - 1] + "…"
        return {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": series.name, "namespace": EVENT_NAMESPACE},
            "involvedObject": involved,
            "type": _type(event),
            "reason": event.reason,
            "message": message,
            "count": series.count,
            "firstTimestamp": series.first,
            "lastTimestamp": stamp,
            "source": {"component": COMPONENT, "host": self._node},
            "reportingComponent": COMPONENT,
            "reportingInstance": self._node,
        }


def _type(event: RecordEvent) -> str:
    return "Warning" if event.warning else "Normal"
