"""Soak: bgpd, then zebra, killed (-9) on one node N times under ping, in one lab boot.

Usage (inside the VRF kernel):

    PYROUTE2_CNI_UML_TIMEOUT=3000 scripts/run-in-vrf-kernel -- \\
        .venv/bin/python -m tests.harness.frr_kill_soak 10 [--budget SECONDS]

The fault of ``test_killed_frr_daemons_come_back_with_their_configuration``, repeated:
each run kills bgpd on lab-n1, waits until watchfrr restarted it and the sessions and
routes are back, then does the same with zebra, while a pod on lab-n2 pings a pod on
lab-n1 every 0.2 s.  Prints per kill the recovery time and the echoes lost, each as
its distance in echoes from the kill (so a loss at the kill and one during the
recovery tell apart), and a summary.  Exit status 0 when no run lost more than
:data:`MAX_LOST` echoes.  ``--monitor`` records ``ip -ts monitor`` of lab-n1 and lab-n2
in the state directory (``monitor-NODE.log``), to line a lost echo up with what the
kernel saw (each kill's wall-clock time is printed).
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from tests.harness.continuous_ping import ContinuousPing
from tests.harness.lab import REPO, Lab, LabOptions
from tests.harness.procs import IP, wait_until

# Issue #15 item 5: at most one echo lost across nodes per run (bgpd and zebra killed).
MAX_LOST = 1
RECOVERY_TIMEOUT = 90.0
STATE_BASE = REPO / "lab-state" / "frr-kill-soak"


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _kill_and_recover(lab: Lab, ping: ContinuousPing, node: str, daemon: str) -> str:
    frr = lab.nodes[node].frr
    began = time.monotonic()
    at = ping.latest()
    old = frr.kill(daemon)
    deadline = began + RECOVERY_TIMEOUT
    wait_until(
        lambda: frr.daemon_pid(daemon) not in (None, old),
        RECOVERY_TIMEOUT,
        f"{daemon} on {node} restarted after kill -9",
        0.5,
    )
    lab.wait_sessions(timeout=max(deadline - time.monotonic(), 1.0))
    lab.wait_converged(timeout=max(deadline - time.monotonic(), 1.0))
    took = time.monotonic() - began
    ping.wait_replies(10, timeout=60)
    killed = time.strftime("%H:%M:%S", time.localtime(time.time() - took))
    return f"{daemon} killed at echo {at} ({killed}), back in {took:.1f} s"


@contextlib.contextmanager
def _monitors(state: Path, nodes: Sequence[str]) -> Iterator[None]:
    procs = []
    for node in nodes:
        out = (state / f"monitor-{node}.log").open("w")
        argv = [IP, "-n", node, "-ts", "monitor", "route", "neigh", "link"]
        procs.append((subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT), out))
    try:
        yield
    finally:
        for proc, out in procs:
            proc.terminate()
            proc.wait(timeout=10)
            out.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=int, help="how many bgpd + zebra kills")
    parser.add_argument("--budget", type=float, default=float("inf"))
    parser.add_argument("--monitor", action="store_true", help="record ip monitor output")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error(f"runs must be at least 1, got {args.runs}")
    state = STATE_BASE / time.strftime("%Y%m%d-%H%M%S")
    began = time.monotonic()
    lab = Lab(LabOptions(state_dir=Path(state), nodes=3, pods_per_node=2, progress=_say))
    per_run: list[int] = []
    try:
        lab.start()
        src = next(p for p in lab.system_pods() if p.node == "lab-n2")
        dst = next(p for p in lab.system_pods() if p.node == "lab-n1")
        with contextlib.ExitStack() as stack:
            if args.monitor:
                stack.enter_context(_monitors(state, ("lab-n1", "lab-n2")))
            for run in range(1, args.runs + 1):
                if time.monotonic() - began > args.budget:
                    print(f"budget of {args.budget:.0f} s spent: stopping after {run - 1} runs")
                    break
                with ContinuousPing(src, dst.address) as ping:
                    ping.wait_replies(5, timeout=30)
                    lines = [_kill_and_recover(lab, ping, "lab-n1", d) for d in ("bgpd", "zebra")]
                    lost = ping.lost()
                per_run.append(len(lost))
                print(f"run {run:2d}: {'; '.join(lines)}; lost echoes {lost}", flush=True)
    finally:
        lab.stop()
    if not per_run:
        print("no run finished")
        return 1
    over = [n for n in per_run if n > MAX_LOST]
    print(
        f"SUMMARY runs={len(per_run)} over_{MAX_LOST}_lost={len(over)} lost_per_run={per_run}"
        f" ({time.monotonic() - began:.0f} s)",
        flush=True,
    )
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
