"""WatchControl: the test hook that cuts a pump's streams and steers its next watch.

It implements ``kube.pump.WatchHook``; the unit and api tiers pass it to CRDWatcherActor.
"""

from __future__ import annotations

import threading

from pyroute2_cni.kube.objects import Resource
from pyroute2_cni.kube.transport import RawStream


class WatchControl:
    """Test hook: cut open streams and choose where the next watch of a resource starts.

    ``hold`` cuts the resource's stream and keeps its pump from reconnecting until
    ``release``, which may pass the resourceVersion the next watch starts from
    (an old one forces a 410).  Production code passes no control.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._held: set[Resource] = set()
        self._waiting: set[Resource] = set()
        self._override: dict[Resource, str] = {}
        self._streams: dict[Resource, list[RawStream]] = {}
        self._watches: dict[Resource, int] = {}

    # called by the test
    def cut(self, resource: Resource) -> None:
        """Close the open stream(s) of `resource`, as a dropped connection would."""
        with self._cond:
            streams = list(self._streams.get(resource, ()))
        for stream in streams:
            stream.close()

    def hold(self, resource: Resource) -> None:
        with self._cond:
            self._held.add(resource)
        self.cut(resource)

    def release(self, resource: Resource, resource_version: str | None = None) -> None:
        with self._cond:
            self._held.discard(resource)
            if resource_version is not None:
                self._override[resource] = resource_version
            self._cond.notify_all()

    def waiting(self, resource: Resource) -> bool:
        """True while the pump of `resource` is held before its next watch."""
        with self._cond:
            return resource in self._waiting

    def watches(self, resource: Resource) -> int:
        """How many watch requests the pump(s) of `resource` opened."""
        with self._cond:
            return self._watches.get(resource, 0)

    # called by the pump
    def before_watch(self, resource: Resource, resource_version: str, stop: threading.Event) -> str:
        with self._cond:
            self._waiting.add(resource)
            try:
                while resource in self._held and not stop.is_set():
                    self._cond.wait(0.05)
            finally:
                self._waiting.discard(resource)
            return self._override.pop(resource, resource_version)

    def opened(self, resource: Resource, stream: RawStream) -> None:
        with self._cond:
            self._streams.setdefault(resource, []).append(stream)
            self._watches[resource] = self._watches.get(resource, 0) + 1

    def closed(self, resource: Resource, stream: RawStream) -> None:
        with self._cond:
            streams = self._streams.get(resource, [])
            if stream in streams:
                streams.remove(stream)
