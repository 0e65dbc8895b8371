"""Convergence benchmark on the lab: VRFDomain created -> its routes in every node's VRF table.

    python -m tests.harness.lab_bench [--nodes 3] [--rounds 3] [--json PATH]

Runs inside a kernel with VRF; on a host without it, it runs itself again inside one
User-Mode Linux guest (scripts/run-in-vrf-kernel).  It starts a lab without pods
(tests/harness/lab.py), then per round creates a new VRFDomain (l3vni) bound to a new
namespace and, as a kubelet would, starts one pod per node in that namespace right away
(CNI ADD through the shim, retried until the daemon knows the domain).  Measured from the
create, per round:

- ``vrf``: the VRF device exists on every node (the watch reached the NetlinkActor);
- ``pods``: every node's ADD succeeded (the domain is usable; blocks are claimed);
- ``routes``: every node's VRF table has a BGP route to every other node's block
  (FRR reloaded everywhere, EVPN type-5 routes exchanged) -- the convergence time;
- ``ping``: every pod of the domain answers every other one;
- ``frr``: of that, the slowest node's time inside frr-reload.py (validate + reload), from
  the daemons' own log lines -- the part of a convergence that is FRR's tooling.

Timings taken inside UML only compare with timings of the same boot, so the report also
measures a reference in the same boot -- one ``frr-reload.py --test`` of a node's running
configuration, the operation that dominates a convergence -- and gives each median as a
multiple of it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from tests.harness.frr_instance import FRR_BIN, VTYSH
from tests.harness.lab import REPO, Lab, LabOptions, log_since
from tests.harness.procs import IP, HarnessError, run, wait_until

STATE_DIR = REPO / "lab-state" / "bench"
PHASES = ("vrf", "pods", "routes", "ping")
COLUMNS = (*PHASES, "frr")
FRR_TIMES = re.compile(r"FRR reloaded: .*\(validated in ([\d.]+) s, reloaded in ([\d.]+) s\)")
ROUND_TIMEOUT = 300.0


@dataclass(frozen=True, slots=True, kw_only=True)
class RoundResult:
    round: int
    vrf: int
    seconds: dict[str, float]  # phase -> seconds after the VRFDomain create; "frr": see above


@dataclass(frozen=True, slots=True, kw_only=True)
class Reference:
    frr_reload_test: float
    vtysh_call: float


def measure_reference(lab: Lab, samples: int = 3) -> Reference:
    node = next(iter(lab.nodes.values()))
    reload_times, vtysh_times = [], []
    for _ in range(samples):
        began = time.monotonic()
        run(
            [
                str(FRR_BIN / "frr-reload.py"),
                "--test",
                "--stdout",
                "-N",
                node.name,
                str(node.frr.config_file),
            ],
            check=False,
            timeout=120,
        )
        reload_times.append(time.monotonic() - began)
        began = time.monotonic()
        run([VTYSH, "-N", node.name, "-c", "show version"], check=False)
        vtysh_times.append(time.monotonic() - began)
    return Reference(
        frr_reload_test=statistics.median(reload_times),
        vtysh_call=statistics.median(vtysh_times),
    )


def one_round(lab: Lab, index: int) -> RoundResult:
    vrf, table, vni = 500 + index, 10500 + index, 60500 + index
    namespace = f"bench{index}"
    name = f"vrf-{vrf}"
    lab.ensure_namespace(namespace)
    domain = lab.domain_object(name, vrf, table, f"10.{100 + index}.0.0", vni, "l3vni")
    marks: dict[str, float] = {}
    logs = {node: lab.log_dir / f"{node}-daemon.log" for node in lab.nodes}
    offsets = {node: path.stat().st_size for node, path in logs.items()}
    began = time.monotonic()
    lab.apply_object(domain)
    lab.apply_object(lab.binding_object(f"{namespace}-{name}", namespace, name))

    vrf_seen: dict[str, float] = {}
    stop = threading.Event()

    def watch_vrf() -> None:
        while not stop.is_set() and len(vrf_seen) < len(lab.nodes):
            for node in lab.nodes:
                if node not in vrf_seen:
                    probe = run([IP, "-n", node, "link", "show", f"vrf-{vrf}"], check=False)
                    if probe.returncode == 0:
                        vrf_seen[node] = time.monotonic() - began
            stop.wait(0.1)

    watcher = threading.Thread(target=watch_vrf, name="bench-vrf", daemon=True)
    watcher.start()
    try:
        pods = lab.add_pods([(n, namespace, f"b{index}-n{lab.nodes[n].index}") for n in lab.nodes])
        marks["pods"] = time.monotonic() - began

        def routed() -> bool:
            blocks = {b["spec"]["node"] for b in lab.ipblocks() if int(b["spec"]["vrf"]) == vrf}
            return blocks == set(lab.nodes) and not lab.missing_routes(vrf, table)

        wait_until(routed, ROUND_TIMEOUT, f"routes of {name} on every node", 0.2)
        marks["routes"] = time.monotonic() - began
        matrix, _ = lab.wait_matrix(pods, timeout=ROUND_TIMEOUT)
        if not all(matrix.values()):
            raise HarnessError(f"{name}: pods do not reach each other: {matrix}")
        marks["ping"] = time.monotonic() - began
        wait_until(lambda: len(vrf_seen) == len(lab.nodes), 30, f"vrf-{vrf} on every node")
    finally:
        stop.set()
        watcher.join()
    marks["vrf"] = max(vrf_seen.values())
    marks["frr"] = max(frr_seconds(path, offsets[node]) for node, path in logs.items())
    return RoundResult(round=index, vrf=vrf, seconds={c: marks[c] for c in COLUMNS})


def frr_seconds(log: Path, offset: int) -> float:
    """Seconds the daemon spent in frr-reload.py since ``offset`` of its log."""
    return sum(float(a) + float(b) for a, b in FRR_TIMES.findall(log_since(log, offset)))


def report(results: Sequence[RoundResult], ref: Reference, nodes: int, lab_up: float) -> str:
    lines = [
        f"lab_bench: {nodes} nodes, {len(results)} rounds; lab up in {lab_up:.1f} s",
        f"reference (same boot): frr-reload.py --test {ref.frr_reload_test:.2f} s, "
        f"vtysh -c {ref.vtysh_call:.2f} s",
        "seconds after the VRFDomain create:",
        "  round  " + "  ".join(f"{c:>7}" for c in COLUMNS),
    ]
    for r in results:
        lines.append(f"  {r.round:>5}  " + "  ".join(f"{r.seconds[c]:7.1f}" for c in COLUMNS))
    medians = {c: statistics.median(r.seconds[c] for r in results) for c in COLUMNS}
    lines.append("  median " + "  ".join(f"{medians[c]:7.1f}" for c in COLUMNS))
    lines.append(
        "  x frr-reload --test "
        + "  ".join(f"{medians[c] / ref.frr_reload_test:7.1f}" for c in COLUMNS)
    )
    lines.append(
        f"convergence (routes on every node): median {medians['routes']:.1f} s, "
        f"of which frr-reload.py on the slowest node {medians['frr']:.1f} s"
    )
    return "\n".join(lines)


def bench(nodes: int, rounds: int, json_path: Path | None) -> int:
    lab = Lab(LabOptions(state_dir=STATE_DIR, nodes=nodes, pods_per_node=0))
    with lab:
        lab_up = lab.elapsed()
        ref = measure_reference(lab)
        results = [one_round(lab, i) for i in range(1, rounds + 1)]
        text = report(results, ref, nodes, lab_up)
    print(text, flush=True)
    if json_path is not None:
        json_path.write_text(
            json.dumps(
                {
                    "nodes": nodes,
                    "lab_up_seconds": lab_up,
                    "reference": asdict(ref),
                    "rounds": [asdict(r) for r in results],
                },
                indent=2,
            )
            + "\n"
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.harness.lab_bench", description=__doc__)
    parser.add_argument("--nodes", type=int, default=int(os.environ.get("LAB_NODES", "3")))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the results here (host path)")
    args = parser.parse_args(argv)
    has_vrf = run([str(REPO / "scripts" / "kernel-has-vrf")], check=False).returncode == 0
    if not has_vrf and "UML_WORKDIR" not in os.environ:
        python = REPO / ".venv" / "bin" / "python"
        argv_in = [str(python), "-m", "tests.harness.lab_bench", *(argv or sys.argv[1:])]
        wrapper = REPO / "scripts" / "run-in-vrf-kernel"
        os.environ.setdefault("PYROUTE2_CNI_UML_MEM", "3000M")
        os.chdir(REPO)
        os.execv(str(wrapper), [str(wrapper), "--", *argv_in])
    try:
        return bench(args.nodes, args.rounds, args.json.resolve() if args.json else None)
    except HarnessError as exc:
        print(f"lab_bench: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
