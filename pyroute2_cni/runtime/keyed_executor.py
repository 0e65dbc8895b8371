"""Run jobs concurrently, except that jobs sharing a key run one at a time, in order.

The CNI runtime may call ADD for many pods at once but never in parallel for
one attachment; DEL after ADD must still see the ADD finished.  A slow job
never blocks jobs of other keys.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

Job = Callable[[], None]


class KeyedExecutor:
    def __init__(self, max_workers: int, name: str) -> None:
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=name)
        self._lock = threading.Lock()
        # key -> jobs waiting behind the one running; a key is present while a job runs.
        self._pending: dict[str, deque[Job]] = {}

    def submit(self, key: str, job: Job) -> None:
        with self._lock:
            queue = self._pending.get(key)
            if queue is not None:
                queue.append(job)
                return
            self._pending[key] = deque()
        self._pool.submit(self._run, key, job)

    def _run(self, key: str, job: Job) -> None:
        while True:
            try:
                job()
            finally:
                with self._lock:
                    queue = self._pending[key]
                    if queue:
                        job = queue.popleft()
                    else:
                        del self._pending[key]
                        return

    def busy_keys(self) -> int:
        with self._lock:
            return len(self._pending)

    def shutdown(self, wait: bool) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=True)
