"""The CNI shim against a fake daemon: build helper, fake ROUTER, latency bench.

``python -m tests.harness.shim_bench [N]`` prints the round-trip latency of
executing the shim against an immediately answering pyzmq ROUTER, next to
executing ``/bin/true`` as the cost of a bare fork+exec.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import zmq

from pyroute2_cni.cni.shim_protocol import encode_reply, split_envelope

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "shim" / "build.sh"

# A handler gets the request frames after the envelope and returns the reply
# frames (without envelope), or None to never answer.
Handler = Callable[[list[bytes]], list[bytes] | None]


def build_shim(out: Path) -> Path:
    """Build the shim with shim/build.sh into `out`; returns `out`."""
    subprocess.run(["sh", str(BUILD_SCRIPT), str(out)], check=True, timeout=300)
    return out


def answer_ok(frames: list[bytes]) -> list[bytes]:
    """Reply 0 and an empty JSON object to every request."""
    return encode_reply(0, b"{}")


class FakeShimDaemon:
    """A pyzmq ROUTER on `endpoint`, served by a thread until the context exits.

    Every request body is appended to `requests` before the handler runs.
    The ROUTER is bound before ``__enter__`` returns, so the shim can be
    started right away.  The thread waits on the socket and on a wake-up
    pipe, so stopping it needs no polling interval.
    """

    def __init__(
        self, endpoint: str, handler: Handler = answer_ok, sockopts: dict[int, int] | None = None
    ) -> None:
        self.endpoint = endpoint
        self.handler = handler
        self.sockopts = dict(sockopts or {})
        self.requests: list[list[bytes]] = []
        self._ctx = zmq.Context()
        self._sock: zmq.Socket[bytes] | None = None
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._serve, name="fake-shim-daemon", daemon=True)
        self._error: BaseException | None = None

    def __enter__(self) -> FakeShimDaemon:
        sock: zmq.Socket[bytes] = self._ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        for option, value in self.sockopts.items():
            sock.setsockopt(option, value)
        sock.bind(self.endpoint)
        self._sock = sock
        # The socket migrates to the thread; Thread.start is a full barrier.
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        os.write(self._wake_w, b"x")
        self._thread.join(timeout=10)
        alive = self._thread.is_alive()
        os.close(self._wake_r)
        os.close(self._wake_w)
        if not alive:
            self._ctx.term()
        if alive:
            raise RuntimeError("fake shim daemon thread did not stop")
        if self._error is not None and exc is None:
            raise RuntimeError("fake shim daemon failed") from self._error

    def _serve(self) -> None:
        sock = self._sock
        assert sock is not None
        try:
            poller = zmq.Poller()
            poller.register(sock, zmq.POLLIN)
            poller.register(self._wake_r, zmq.POLLIN)
            while True:
                events = dict(poller.poll())
                if self._wake_r in events:
                    return
                if sock in events:
                    envelope, body = split_envelope(sock.recv_multipart())
                    self.requests.append(body)
                    reply = self.handler(body)
                    if reply is not None:
                        sock.send_multipart(envelope + reply)
        except BaseException as exc:  # reported by __exit__
            self._error = exc
        finally:
            sock.close(linger=0)


def run_shim(
    binary: Path,
    env: dict[str, str],
    stdin: bytes = b"",
    timeout: float = 60.0,
) -> subprocess.CompletedProcess[bytes]:
    """Execute the shim with exactly `env` (nothing inherited)."""
    return subprocess.run(
        [str(binary)], input=stdin, env=env, capture_output=True, timeout=timeout, check=False
    )


def _percentile(sorted_values: Sequence[float], p: float) -> float:
    index = max(0, min(len(sorted_values) - 1, math.ceil(p * len(sorted_values)) - 1))
    return sorted_values[index]


def _stats(samples: list[float]) -> dict[str, float]:
    values = sorted(samples)
    return {
        "p50_ms": round(_percentile(values, 0.50) * 1000, 3),
        "p99_ms": round(_percentile(values, 0.99) * 1000, 3),
        "max_ms": round(values[-1] * 1000, 3),
    }


def _time_exec(argv: list[str], env: dict[str, str], stdin: bytes, n: int) -> list[float]:
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        proc = subprocess.run(argv, input=stdin, env=env, capture_output=True, check=False)
        samples.append(time.perf_counter() - start)
        if proc.returncode != 0:
            raise RuntimeError(f"{argv[0]} exited {proc.returncode}: {proc.stdout!r}")
    return samples


def measure_shim_overhead(n: int, binary: Path | None = None) -> dict[str, Any]:
    """Latency of n shim round trips (ADD against an answering ROUTER) vs. /bin/true.

    Builds the shim into a temporary directory unless `binary` is given.
    """
    if n < 1:
        raise ValueError("n must be at least 1")
    with tempfile.TemporaryDirectory(prefix="shim-bench-", dir="/tmp") as tmp:
        shim = binary if binary is not None else build_shim(Path(tmp) / "pyroute2-cni")
        endpoint = f"ipc://{tmp}/cni.sock"
        env = {
            "CNI_COMMAND": "ADD",
            "CNI_CONTAINERID": "bench",
            "CNI_NETNS": "/var/run/netns/bench",
            "CNI_IFNAME": "eth0",
            "CNI_PATH": "/opt/cni/bin",
            "PYROUTE2_CNI_SOCKET": endpoint,
        }
        stdin = json.dumps({"cniVersion": "1.1.0", "name": "bench", "type": "pyroute2-cni"})
        with FakeShimDaemon(endpoint) as daemon:
            _time_exec([str(shim)], env, stdin.encode(), min(n, 5))  # warm caches
            shim_samples = _time_exec([str(shim)], env, stdin.encode(), n)
            served = len(daemon.requests)
        true_samples = _time_exec(["/bin/true"], env, stdin.encode(), n)
        shim_stats = _stats(shim_samples)
        true_stats = _stats(true_samples)
        return {
            "n": n,
            "requests_served": served,
            "binary_bytes": shim.stat().st_size,
            "shim": shim_stats,
            "bin_true": true_stats,
            "overhead_p50_ms": round(shim_stats["p50_ms"] - true_stats["p50_ms"], 3),
        }


def main(argv: Sequence[str]) -> int:
    n = int(argv[1]) if len(argv) > 1 else 200
    print(json.dumps(measure_shim_overhead(n), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
