"""List+watch pumps: one thread per resource, handing on typed values.

One :class:`ResourcePump` thread per resource (VRFDomain, VRFDomainBinding,
VRFNodeConfig, Node, Namespace) lists, then watches from the list's
resourceVersion, and turns every object into a typed value (``kube.objects``)
before handing it to its sink (CRDWatcherActor's ``tell``).  The API calls are
``kube.transport``'s.

Invariants (keep in sync with tests/unit/test_crd_watcher.py):

- The pump remembers the resourceVersion of the last event (or bookmark) it
  handed on.  A stream that ends (server timeout), breaks (connection reset)
  or goes quiet (no byte within ``quiet_timeout``) is resumed from it: no
  relist, no event lost, none repeated.
- Only "410 Gone / Expired" (an ERROR event or an HTTP error) relists.  A
  relist hands on the complete object set as :class:`ResourceListed`
  (``relist=True``); the receiver compares it with what it had and synthesises
  DELETED for objects that vanished, so no deletion is lost either.
- Unknown event types are ignored; an object that cannot be read is handed on
  as unreadable (``obj=None``; for a VRFDomain, a :class:`DomainObject` whose
  ``spec`` is None and ``error`` says why), never dropped silently.
- Errors back off exponentially, bounded by ``backoff_max``; the pump stops
  within one socket shutdown when asked (:meth:`ResourcePump.stop` shuts the
  open stream's socket down, waking the blocked read).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from pyroute2_cni.kube.objects import (
    Json,
    Malformed,
    Resource,
    WatchedObject,
    convert,
    object_name,
    object_resource_version,
)
from pyroute2_cni.kube.transport import (
    ApiError,
    Expired,
    KubeApi,
    RawStream,
    StreamQuiet,
    WatchTimings,
    watch_error,
)
from pyroute2_cni.messages.crd import ChangeKind


@dataclass(frozen=True, slots=True, kw_only=True)
class ResourceListed:
    """Every object of `resource` after a list; `relist` after a 410 (not the first list)."""

    resource: Resource
    objects: tuple[WatchedObject, ...]
    relist: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class ResourceChanged:
    """One watch event.  `obj` is None when the object is present but unreadable."""

    resource: Resource
    kind: ChangeKind
    name: str
    obj: WatchedObject | None


@dataclass(frozen=True, slots=True, kw_only=True)
class PumpFailed:
    """A pump thread died of an unexpected exception (a bug): the owner should crash."""

    resource: Resource
    error: str


PumpMessage = ResourceListed | ResourceChanged | PumpFailed


class WatchHook(Protocol):
    """Where a test steers a pump: called before each watch and as its stream opens and
    closes (``tests/harness/watch_control.py``).  The daemon passes none."""

    def before_watch(self, resource: Resource, resource_version: str, stop: threading.Event) -> str:
        """The resourceVersion to watch from; may block until `stop` is set."""
        ...

    def opened(self, resource: Resource, stream: RawStream) -> None: ...

    def closed(self, resource: Resource, stream: RawStream) -> None: ...


class ResourcePump:
    """List, then watch one resource in a thread of its own; see the module docstring."""

    def __init__(
        self,
        resource: Resource,
        api: KubeApi,
        sink: Callable[[PumpMessage], None],
        *,
        timings: WatchTimings,
        control: WatchHook | None = None,
        name: str = "crd-watcher",
    ) -> None:
        self.resource = resource
        self._api = api
        self._sink = sink
        self._timings = timings
        self._control = control
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._stream: RawStream | None = None
        self._log = logging.getLogger(f"{__name__}.{name}.{resource.value}")
        self._thread = threading.Thread(
            target=self._run, name=f"{name}-{resource.value}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to end and wake it (non-blocking; see join)."""
        self._stop.set()
        with self._lock:
            stream = self._stream
        if stream is not None:
            stream.close()

    def join(self, timeout: float) -> bool:
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        try:
            self._loop()
        except Exception as exc:
            self._log.exception("watch pump failed")
            self._sink(PumpFailed(resource=self.resource, error=repr(exc)))
        finally:
            self._api.close()

    def _loop(self) -> None:
        resource_version: str | None = None
        listed = False
        failures = 0
        while not self._stop.is_set():
            try:
                if resource_version is None:
                    objects, resource_version = self._list()
                    if self._stop.is_set():
                        return
                    self._sink(
                        ResourceListed(resource=self.resource, objects=objects, relist=listed)
                    )
                    listed = True
                started = time.monotonic()
                resource_version, events = self._watch(resource_version)
                if events or time.monotonic() - started >= self._timings.backoff_initial:
                    failures = 0
                    continue
                # A stream that ends at once with nothing in it: do not spin.
                failures += 1
                self._stop.wait(self._timings.backoff(failures))
            except Expired as exc:
                self._log.info("resourceVersion %s expired (%s); relisting", resource_version, exc)
                resource_version = None
                failures += 1
                if failures > 1:
                    self._stop.wait(self._timings.backoff(failures - 1))
            except StreamQuiet:
                self._log.info("watch quiet for %gs; reconnecting", self._timings.quiet_timeout)
            except ApiError as exc:
                failures += 1
                delay = self._timings.backoff(failures)
                self._log.warning(
                    "%s failed (%s); retrying in %.1f s",
                    "list" if resource_version is None else "watch",
                    exc,
                    delay,
                )
                self._stop.wait(delay)

    def _list(self) -> tuple[tuple[WatchedObject, ...], str]:
        raw, resource_version = self._api.list(self.resource)
        objects: list[WatchedObject] = []
        for obj in raw:
            try:
                objects.append(convert(self.resource, obj))
            except Malformed as exc:
                self._log.warning("ignoring unreadable %s: %s", object_name(obj) or "object", exc)
        self._log.debug("listed %d at resourceVersion %s", len(objects), resource_version)
        return tuple(objects), resource_version

    def _watch(self, resource_version: str) -> tuple[str, int]:
        """Watch until the stream ends; return the last resourceVersion seen and the event count."""
        if self._control is not None:
            resource_version = self._control.before_watch(
                self.resource, resource_version, self._stop
            )
        if self._stop.is_set():
            return resource_version, 0
        stream = self._api.watch(self.resource, resource_version, self._timings.watch_seconds())
        with self._lock:
            self._stream = stream
        if self._control is not None:
            self._control.opened(self.resource, stream)
        events = 0
        try:
            if self._stop.is_set():
                return resource_version, 0
            for event in stream:
                if self._stop.is_set():
                    break
                events += 1
                resource_version = self._handle(event, resource_version)
        finally:
            with self._lock:
                self._stream = None
            if self._control is not None:
                self._control.closed(self.resource, stream)
            stream.close()
        return resource_version, events

    def _handle(self, event: Json, resource_version: str) -> str:
        etype = event.get("type")
        obj = event.get("object")
        if etype == "ERROR":
            raise watch_error(obj)
        if not isinstance(obj, Mapping):
            return resource_version
        new_version = object_resource_version(obj) or resource_version
        if etype == "BOOKMARK":
            return new_version
        if etype not in ("ADDED", "MODIFIED", "DELETED"):
            self._log.debug("ignoring watch event of unknown type %r", etype)
            return resource_version
        kind = ChangeKind[etype]
        name = object_name(obj)
        typed: WatchedObject | None
        try:
            typed = convert(self.resource, obj)
        except Malformed as exc:
            self._log.warning("%s %s is unreadable: %s", etype.lower(), name or "object", exc)
            typed = None
        if name:
            self._sink(ResourceChanged(resource=self.resource, kind=kind, name=name, obj=typed))
        return new_version


class WatchPumps:
    """The five pumps of one CRDWatcherActor instance."""

    def __init__(
        self,
        api_factory: Callable[[], KubeApi],
        sink: Callable[[PumpMessage], None],
        *,
        timings: WatchTimings,
        control: WatchHook | None = None,
        resources: Sequence[Resource] = tuple(Resource),
        name: str = "crd-watcher",
    ) -> None:
        self._timings = timings
        self.pumps = [
            ResourcePump(resource, api_factory(), sink, timings=timings, control=control, name=name)
            for resource in resources
        ]

    def start(self) -> None:
        for pump in self.pumps:
            pump.start()

    def stop(self) -> bool:
        """Stop every pump; True when all threads ended within stop_timeout."""
        for pump in self.pumps:
            pump.stop()
        deadline = time.monotonic() + self._timings.stop_timeout
        return all(pump.join(max(0.0, deadline - time.monotonic())) for pump in self.pumps)
