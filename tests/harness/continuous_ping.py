"""A continuous ping from a pod, counting the echoes that went missing (restarts, rollouts)."""

from __future__ import annotations

import re
import signal
import subprocess
import threading
import time
from typing import Protocol

from tests.harness.lifecycle import Service
from tests.harness.procs import HarnessError, in_netns

PING = "/usr/bin/ping"


class PingSource(Protocol):
    """Where the ping runs: a pod's network namespace and its name for messages."""

    @property
    def netns(self) -> str: ...

    @property
    def label(self) -> str: ...


class ContinuousPing(Service):
    """``ping -i INTERVAL`` from a pod until stopped, counting replies that went missing.

    A reply is missing when its sequence number is absent below the last one that came
    back, so the packet in flight when the ping stops does not count as lost.
    """

    SEQ = re.compile(r"icmp_seq=(\d+)")

    def __init__(self, src: PingSource, address: str, interval: float = 0.2) -> None:
        self.src = src
        self.address = address
        self.interval = interval
        self._seqs: set[int] = set()
        self._cond = threading.Condition()
        self._proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None
        self.started = 0.0  # wall clock of the first echo request

    def start(self) -> None:
        self.started = time.time()
        argv = [PING, "-n", "-i", f"{self.interval:g}", "-W", "1", self.address]
        self._proc = subprocess.Popen(
            in_netns(self.src.netns, argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, name="ping-reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            m = self.SEQ.search(line)
            if m and "bytes from" in line:
                with self._cond:
                    self._seqs.add(int(m.group(1)))
                    self._cond.notify_all()

    def replies(self) -> int:
        with self._cond:
            return len(self._seqs)

    def wait_replies(self, count: int, timeout: float) -> None:
        """Until ``count`` more replies than now came back (HarnessError after ``timeout``)."""
        with self._cond:
            target = len(self._seqs) + count
            if not self._cond.wait_for(lambda: len(self._seqs) >= target, timeout):
                raise HarnessError(
                    f"ping {self.src.label} -> {self.address}: fewer than {count} replies "
                    f"in {timeout:.0f} s"
                )

    def latest(self) -> int:
        """The highest sequence number answered so far (0 before the first reply)."""
        with self._cond:
            return max(self._seqs, default=0)

    def lost(self) -> list[int]:
        """Sequence numbers missing below the last reply."""
        with self._cond:
            if not self._seqs:
                return []
            return sorted(set(range(1, max(self._seqs) + 1)) - self._seqs)

    def when(self, seq: int) -> str:
        """The wall-clock time echo ``seq`` was sent (to read next to the daemons' logs)."""
        sent = self.started + (seq - 1) * self.interval
        return time.strftime("%H:%M:%S", time.localtime(sent)) + f".{int(sent * 10) % 10}"

    def stop(self) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._reader is not None:
            self._reader.join(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
        self._proc = None
