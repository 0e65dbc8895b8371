"""Keeps CNI GC from releasing what an ADD is working on.

GC names no container, so it runs beside in-flight ADDs; the runtime computed its list of
valid attachments before those ADDs returned, so an attachment being added is missing from
it.  Every ADD, DEL and CHECK holds its attachment open while it runs; GC runs alone (no
attachment opens or closes meanwhile) and keeps every open one.  An ADD that opens after GC
ran allocates after GC's release, so GC cannot take its address either.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager


class AttachmentGate:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: Counter[str] = Counter()

    @contextmanager
    def working(self, key: str) -> Iterator[None]:
        """Hold `key` open for the duration of one ADD, DEL or CHECK (waits while GC runs)."""
        with self._lock:
            self._open[key] += 1
        try:
            yield
        finally:
            with self._lock:
                self._open[key] -= 1
                if self._open[key] <= 0:
                    del self._open[key]

    @contextmanager
    def exclusive(self) -> Iterator[frozenset[str]]:
        """Run GC alone; yields the keys open right now, which GC must keep."""
        with self._lock:
            yield frozenset(self._open)

    def open_keys(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._open)
