"""One daemon at 10 and at 250 pods (issue 20 item 6), part of `make bench-scale`.

    scripts/run-in-vrf-kernel -- .venv/bin/python -m tests.harness.dense_bench \\
        [--sizes 10,250] [--probes 20] [--passes 3]

A 1-node lab (tests/harness/lab.py: a real kube-apiserver, FRR, the daemon with its real
actors in lab-n1, real network namespaces; inside User-Mode Linux when the host has no
VRF), the system domain only.  Pods are network namespaces with Pod objects, plumbed by
the shim the daemon installed, executed the way the kubelet's runtime does
(tests.harness.cni_bench).  For each size N, in one run and on the same daemon:

1. fill: ADD pods until N are plumbed (8 at a time);
2. idle: wait for ``--passes`` of the NetlinkActor's periodic reconcile (its whole pass:
   VTEP, domains, orphans, every pod's veth; every RECONCILE_INTERVAL here) and take
   their median from the daemon's own log line ("reconcile: ... in X ms"; the daemon has
   no metric for it, so only that actor's logger runs at DEBUG, see RECONCILE_LOG); then
   the daemon's RSS (VmRSS of its process);
3. probes: ADD ``--probes`` more pods one at a time (N already there), then DEL them one
   at a time: p50/p99 of each.

Then the lab stops (the daemon, FRR, the node's namespace, the API server with the pods'
addresses) and the pods' namespaces go (their veth pairs with them).  Prints one table
with the ratios largest size / smallest and whether each metric is flat (at most 1.5x),
grows at most linearly (at most 1.25x the pods' ratio) or faster.  Under User-Mode
Linux absolute times mean little (a process start costs ~20 ms there): read the ratios;
RSS is not a timing and holds anywhere.  The numbers also go to
lab-state/bench/dense-bench.json.  Exit status 1 when a CNI call failed or an idle
window saw no reconcile pass (the table still prints).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import re
import shlex
import shutil
import statistics
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.harness.cni_bench import NODE, WORK, CniBench, Phase, kernel
from tests.harness.lab import DAEMON_ENV, REPO, VENV_BIN, Lab, LabOptions, log_since

STATE_DIR = REPO / "lab-state" / "bench" / "dense"
RESULT_FILE = REPO / "lab-state" / "bench" / "dense-bench.json"
# The NetlinkActor reconciles on this timer (the default is 30 s): often enough that an idle
# window of a few passes stays short, rarely enough that most probe calls miss a pass.
RECONCILE_INTERVAL = 10.0
FILL_CONCURRENCY = 8
# The daemon as the DaemonSet runs it, with only the NetlinkActor's logger at DEBUG: its
# reconcile line is the one place the daemon times a pass.  DEBUG for the whole daemon would
# also log every netlink message pyroute2 parses and slow the very pass being timed.
RECONCILE_LOG = (
    "import logging, sys; "
    "logging.getLogger('pyroute2_cni.actor.netlink').setLevel(logging.DEBUG); "
    "from pyroute2_cni.cli import main; sys.exit(main())"
)
RECONCILE_LINE = re.compile(r"pyroute2_cni\.actor\.netlink: reconcile: .* in ([0-9.]+) ms")


def _say(message: str) -> None:
    print(f"dense_bench: {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class Size:
    """What one daemon showed with ``pods`` plumbed."""

    pods: int
    rss_mib: float
    reconcile_ms: tuple[float, ...]
    fill_seconds: float
    add: Phase
    delete: Phase
    failures: int  # CNI calls that failed: filling, probes
    # Reconcile passes that ran while the probes did: a probe queued behind one waits.
    probe_reconciles: int

    @property
    def reconcile_p50_ms(self) -> float:
        return statistics.median(self.reconcile_ms) if self.reconcile_ms else math.nan

    def to_json(self) -> dict[str, Any]:
        return {
            "pods": self.pods,
            "rss_mib": round(self.rss_mib, 1),
            "reconcile_ms": [round(t, 1) for t in self.reconcile_ms],
            "fill_seconds": round(self.fill_seconds, 1),
            "add": self.add.to_json(),
            "del": self.delete.to_json(),
            "failed_calls": self.failures,
            "reconcile_passes_during_probes": self.probe_reconciles,
        }


def daemon_rss_mib(pid: int) -> float:
    """VmRSS of the process (`ip netns exec` execs the daemon: same pid)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS in /proc/{pid}/status")


def reconcile_times(log: Path, offset: int) -> list[float]:
    """The NetlinkActor's reconcile passes (ms) logged after byte ``offset``."""
    return [float(t) for t in RECONCILE_LINE.findall(log_since(log, offset))]


class DenseBench:
    def __init__(self, lab: Lab, sizes: Sequence[int], probes: int, passes: int) -> None:
        self.lab = lab
        self.sizes = sorted(sizes)
        self.passes = passes
        self.bench = CniBench(lab, self.sizes[-1] + probes)
        self.plugin = self.bench.ours()
        self.filled = 0
        self.tag = uuid.uuid4().hex[:8]

    @property
    def log(self) -> Path:
        return self.lab.nodes[NODE].log_file

    def _phase(self, verb: str, concurrency: int, first: int, last: int, tag: str) -> Phase:
        call = functools.partial(self.bench.exec_plugin, self.plugin, verb, tag)
        return self.bench.run_phase(
            self.plugin.name, verb, concurrency, call, self.bench.pods[first:last]
        )

    def idle(self) -> tuple[list[float], float]:
        """Reconcile passes seen while nothing else happens (bounded), then the RSS."""
        offset = self.log.stat().st_size
        deadline = time.monotonic() + RECONCILE_INTERVAL * (self.passes + 1) + 30
        times: list[float] = []
        while time.monotonic() < deadline:
            times = reconcile_times(self.log, offset)
            if len(times) >= self.passes:
                break
            time.sleep(0.5)
        daemon = self.lab.nodes[NODE].daemon
        assert daemon is not None
        return times, daemon_rss_mib(daemon.pid)

    def size(self, pods: int) -> Size:
        began = time.monotonic()
        fill = self._phase("ADD", FILL_CONCURRENCY, self.filled, pods, self.tag)
        self.filled = pods
        fill_seconds = time.monotonic() - began
        reconcile, rss = self.idle()
        _say(f"{pods} pods: RSS {rss:.1f} MiB, reconcile passes {reconcile} ms")
        probe_tag = uuid.uuid4().hex[:8]
        end = len(self.bench.pods)
        offset = self.log.stat().st_size
        add = self._phase("ADD", 1, self.sizes[-1], end, probe_tag)
        delete = self._phase("DEL", 1, self.sizes[-1], end, probe_tag)
        self.bench.check_allocated(expected=pods)
        return Size(
            pods=pods,
            rss_mib=rss,
            reconcile_ms=tuple(reconcile),
            fill_seconds=fill_seconds,
            add=add,
            delete=delete,
            failures=sum(len(p.failures) for p in (fill, add, delete)),
            probe_reconciles=len(reconcile_times(self.log, offset)),
        )


def _ratio(big: float, small: float) -> float:
    return big / small if small > 0 and not math.isnan(big) else math.nan


def _verdict(ratio: float, pods_ratio: float) -> str:
    if math.isnan(ratio):
        return "not measured"
    if ratio <= 1.5:
        return "flat"
    if ratio <= pods_ratio * 1.25:
        return "grows, at most linearly"
    return "grows FASTER than linearly"


def _mean_ms(phase: Phase) -> str:
    return f"{phase.daemon.mean_ms:.0f}" if phase.daemon is not None else "-"


def render(sizes: Sequence[Size], where: str, interval: float) -> str:
    small, big = sizes[0], sizes[-1]
    pods_ratio = big.pods / small.pods
    rows: list[tuple[str, float, float]] = [
        ("daemon RSS idle, MiB", small.rss_mib, big.rss_mib),
        ("NetlinkActor reconcile pass, ms", small.reconcile_p50_ms, big.reconcile_p50_ms),
        ("ADD p50, ms", small.add.p50_ms, big.add.p50_ms),
        ("ADD p99, ms", small.add.p99_ms, big.add.p99_ms),
        ("DEL p50, ms", small.delete.p50_ms, big.delete.p50_ms),
        ("DEL p99, ms", small.delete.p99_ms, big.delete.p99_ms),
    ]
    width = 33
    lines = [
        f"Dense node: one daemon at {small.pods} and {big.pods} pods, {where}",
        f"ADD/DEL: {len(big.add.latencies) + len(big.add.failures)} pods added one at a time "
        "with N already there, then deleted, through the shim; reconcile: median of the "
        f"daemon's idle passes (every {interval:g} s)",
        "",
        f"{'':<{width}} | {f'{small.pods} pods':>9} | {f'{big.pods} pods':>9} | "
        f"{'ratio':>7} | pods x{pods_ratio:g}",
        "-" * (width + 50),
    ]
    for label, a, b in rows:
        ratio = _ratio(b, a)
        verdict = _verdict(ratio, pods_ratio)
        lines.append(f"{label:<{width}} | {a:9.1f} | {b:9.1f} | {ratio:6.2f}x | {verdict}")
    for s in sizes:
        inside = ", ".join(f"{name} {part.mean_ms:.0f}" for name, part in s.add.parts.items())
        lines.append(
            f"{s.pods} pods: filled in {s.fill_seconds:.1f} s; idle reconcile passes (ms) "
            f"{', '.join(f'{t:.0f}' for t in s.reconcile_ms) or 'none seen'}; "
            f"{s.probe_reconciles} passes ran during the probes; inside the daemon "
            f"(its histograms) ADD mean {_mean_ms(s.add)} ms ({inside or '-'}), "
            f"DEL mean {_mean_ms(s.delete)} ms"
        )
    per_pod = (big.rss_mib - small.rss_mib) * 1024 / (big.pods - small.pods)
    lines.append(
        f"RSS per added pod: {per_pod:.0f} KiB ({small.rss_mib:.1f} MiB at {small.pods} pods)"
    )
    if len(sizes) > 2:
        for s in sizes[1:-1]:
            share = (s.pods - small.pods) / (big.pods - small.pods)
            for label, a, b, m in (
                ("RSS", small.rss_mib, big.rss_mib, s.rss_mib),
                ("reconcile", small.reconcile_p50_ms, big.reconcile_p50_ms, s.reconcile_p50_ms),
            ):
                lines.append(
                    f"{label} at {s.pods} pods: {m:.1f}, the straight line through "
                    f"{small.pods} and {big.pods} says {a + share * (b - a):.1f}"
                )
    lines.append(f"failed CNI calls: {sum(s.failures for s in sizes)}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.harness.dense_bench")
    parser.add_argument("--sizes", default="10,250", help="pods on the node (default 10,250)")
    parser.add_argument(
        "--probes", type=int, default=20, help="pods added and deleted one at a time per size"
    )
    parser.add_argument(
        "--passes", type=int, default=3, help="reconcile passes to wait for per size"
    )
    args = parser.parse_args(argv)
    sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    if len(sizes) < 2 or sizes[0] < 1 or args.probes < 1 or args.passes < 1:
        parser.error("two sizes or more, each at least 1; --probes and --passes at least 1")

    began = time.monotonic()
    shutil.rmtree(STATE_DIR, ignore_errors=True)
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    os.environ[DAEMON_ENV] = shlex.join([str(VENV_BIN / "python"), "-c", RECONCILE_LOG])
    results: list[Size] = []
    lab = Lab(
        LabOptions(
            state_dir=STATE_DIR,
            nodes=1,
            pods_per_node=0,
            server_ini={"netlink": {"reconcile_interval": str(RECONCILE_INTERVAL)}},
            progress=_say,
        )
    )
    bench: DenseBench | None = None
    try:
        lab.start()
        bench = DenseBench(lab, sizes, args.probes, args.passes)
        bench.bench.make_pods()
        _say(f"lab up and {len(bench.bench.pods)} pods made in {time.monotonic() - began:.1f} s")
        for pods in sizes:
            results.append(bench.size(pods))
    finally:
        # The daemon first (nothing re-plumbs), then the pods' namespaces: their veth
        # pairs go with them; the pods' addresses go with the lab's API server.
        lab.stop()
        if bench is not None:
            bench.bench.remove_netns()
            bench.bench.close()
        shutil.rmtree(WORK, ignore_errors=True)
    text = render(results, kernel(), RECONCILE_INTERVAL)
    print(text, flush=True)
    RESULT_FILE.parent.mkdir(parents=True, exist_ok=True)
    RESULT_FILE.write_text(
        json.dumps(
            {
                "kernel": kernel(),
                "reconcile_interval": RECONCILE_INTERVAL,
                "sizes": [s.to_json() for s in results],
                "seconds": round(time.monotonic() - began, 1),
            },
            indent=2,
        )
        + "\n"
    )
    _say(f"done in {time.monotonic() - began:.1f} s; numbers in {RESULT_FILE}")
    failed = any(s.failures or not s.reconcile_ms for s in results)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
