"""What a healthy lab costs the API server in status writes (issue 19 item 1).

Usage (inside the VRF kernel):

    scripts/run-in-vrf-kernel -- .venv/bin/python -m tests.harness.steady_writes [MINUTES]

Starts the 3-node lab, waits until every node's VRFNodeState and Pyroute2CNIReady say
healthy, then counts over MINUTES (default 10) each daemon's writes of its VRFNodeState
and of its Node condition (the daemons' own counters) and the resourceVersion changes of
each VRFNodeState, and prints them per node and per hour.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.harness.lab import REPO, Lab, LabOptions
from tests.harness.procs import wait_until
from tests.harness.reports import STATE_TIMEOUT, all_healthy

STATE_BASE = REPO / "lab-state" / "steady-writes"
COUNTERS = (
    "pyroute2_cni_node_state_writes_total",
    "pyroute2_cni_node_condition_writes_total",
    "pyroute2_cni_event_writes_total",
)


def _counts(lab: Lab) -> dict[tuple[str, str], float]:
    return {(n, c): lab.metric(n, c) for n in lab.nodes for c in COUNTERS}


def _states(lab: Lab) -> dict[str, dict[str, Any]]:
    custom = lab.custom()
    return {
        n: custom.get_cluster_custom_object("cni.pyroute2.org", "v1alpha1", "vrfnodestates", n)
        for n in lab.nodes
    }


def changed_paths(old: Any, new: Any, at: str = "") -> list[str]:
    """The dotted paths where two JSON values differ (what a status write changed)."""
    if isinstance(old, dict) and isinstance(new, dict):
        found: list[str] = []
        for key in sorted(set(old) | set(new)):
            found += changed_paths(old.get(key), new.get(key), f"{at}.{key}" if at else key)
        return found
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        found = []
        for index, (a, b) in enumerate(zip(old, new, strict=True)):
            found += changed_paths(a, b, f"{at}[{index}]")
        return found
    return [] if old == new else [at or "."]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("minutes", type=float, nargs="?", default=10.0)
    args = parser.parse_args(argv)
    state = STATE_BASE / time.strftime("%Y%m%d-%H%M%S")

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    lab = Lab(LabOptions(state_dir=Path(state), nodes=3, pods_per_node=2, progress=say))
    try:
        lab.start()
        wait_until(lambda: all_healthy(lab), STATE_TIMEOUT, "every node healthy", 0.5)
        before, states, began = _counts(lab), _states(lab), time.monotonic()
        changes = dict.fromkeys(lab.nodes, 0)
        what: list[str] = []
        deadline = began + args.minutes * 60
        while time.monotonic() < deadline:  # bounded: MINUTES
            time.sleep(5)  # sampling the resourceVersion, not synchronisation
            now = _states(lab)
            for node in lab.nodes:
                old, new = states[node], now[node]
                if old["metadata"]["resourceVersion"] != new["metadata"]["resourceVersion"]:
                    changes[node] += 1
                    paths = changed_paths(old.get("status"), new.get("status"))
                    minute = (time.monotonic() - began) / 60
                    what.append(f"  {minute:5.1f} min {node}: {', '.join(paths) or 'metadata'}")
            states = now
        after, hours = _counts(lab), (time.monotonic() - began) / 3600
        print(f"steady state over {args.minutes:g} min, 3 nodes, 2 pods each:")
        print(f"{'node':<8} {'counter':<42} {'count':>6} {'per hour':>9}")
        for node in lab.nodes:
            for counter in COUNTERS:
                delta = after[(node, counter)] - before[(node, counter)]
                print(f"{node:<8} {counter:<42} {delta:>6.0f} {delta / hours:>9.1f}")
            print(f"{node:<8} {'VRFNodeState resourceVersion changes':<42} {changes[node]:>6}")
        print("what each VRFNodeState change changed:")
        print("\n".join(what) or "  nothing")
        return 0
    finally:
        lab.stop()


if __name__ == "__main__":
    sys.exit(main())
