"""IPAM benchmark against a real etcd + kube-apiserver.

    python -m tests.harness.ipam_bench [--allocations N] [--callers 1,8]

Starts an :class:`~tests.harness.apiserver.ApiServer`, installs the CRDs, then for
each caller count runs one IPAMActor (one node, fresh VRFDomain /16 with /26
blocks) and makes N allocations from that many concurrent callers.  Prints
allocations per second and API writes and LISTs per allocation (LISTs counted
after the actor's start-up LIST, i.e. on the allocation path).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pyroute2_cni.messages.crd import Attachment, AttachmentType, VrfDomainSpec
from pyroute2_cni.messages.ipam import LookupAddress
from tests.harness.apiserver import ApiServer
from tests.harness.ipam_worker import RunningNode, drive_node

REPO = Path(__file__).resolve().parents[2]
CRDS_DIR = REPO / "kubernetes" / "crds" / "0.1"


@dataclass(frozen=True)
class BenchRow:
    callers: int
    allocations: int
    seconds: float
    writes: float
    lists: float
    failures: int

    @property
    def per_second(self) -> float:
        return self.allocations / self.seconds if self.seconds else 0.0

    @property
    def writes_per_allocation(self) -> float:
        return self.writes / self.allocations if self.allocations else 0.0

    @property
    def lists_per_allocation(self) -> float:
        return self.lists / self.allocations if self.allocations else 0.0


def install_crds(kubeconfig: str) -> None:
    kubectl = shutil.which("kubectl") or "/usr/bin/kubectl"
    for args in (
        # --validate=false: kubectl cannot check the CEL rules against a 1.20 server
        # (the server drops them); see tests/api/test_crds.py.
        ["apply", "--validate=false", "-k", str(CRDS_DIR)],
        ["wait", "--for=condition=Established", "crd/ipblocks.ipam.pyroute2.org", "--timeout=60s"],
    ):
        proc = subprocess.run(
            [kubectl, f"--kubeconfig={kubeconfig}", *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {proc.stderr}")


def run_one(kubeconfig: str, callers: int, allocations: int, vrf: int) -> BenchRow:
    domain = VrfDomainSpec(
        name=f"bench-{vrf}",
        vrf=vrf,
        table=vrf,
        prefix=f"10.{vrf % 200 + 20}.0.0",
        prefixlen=16,
        ipblocklen=26,
        attachments=(Attachment(type=AttachmentType.L3VNI, vni=vrf),),
    )
    node = RunningNode(f"bench-{callers}", kubeconfig)
    try:
        node.ask(LookupAddress(key="warm-up/none"))  # on_start (and its LIST) is done
        began = time.monotonic()
        result = drive_node(node, domain, allocations, 0, callers, seed=vrf)
        seconds = time.monotonic() - began
    finally:
        node.stop()
    return BenchRow(
        callers=callers,
        allocations=result.allocations,
        seconds=seconds,
        writes=sum(result.writes.values()),
        lists=result.lists - result.lists_at_start,
        failures=len(result.failures),
    )


def format_table(rows: Sequence[BenchRow]) -> str:
    lines = [
        f"{'callers':>7}  {'allocs':>6}  {'seconds':>7}  {'allocs/s':>8}  "
        f"{'writes/alloc':>12}  {'lists/alloc':>11}  {'failures':>8}"
    ]
    for r in rows:
        lines.append(
            f"{r.callers:>7}  {r.allocations:>6}  {r.seconds:>7.2f}  {r.per_second:>8.1f}  "
            f"{r.writes_per_allocation:>12.3f}  {r.lists_per_allocation:>11.3f}  {r.failures:>8}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.harness.ipam_bench")
    parser.add_argument("--allocations", type=int, default=600, help="per caller count")
    parser.add_argument("--callers", default="1,8", help="comma-separated caller counts")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    counts = [int(c) for c in args.callers.split(",") if c]
    with ApiServer() as api:
        install_crds(api.kubeconfig)
        rows = [
            run_one(api.kubeconfig, callers, args.allocations, vrf=4900 + i)
            for i, callers in enumerate(counts)
        ]
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "callers": r.callers,
                        "allocations": r.allocations,
                        "seconds": round(r.seconds, 3),
                        "allocations_per_second": round(r.per_second, 1),
                        "writes_per_allocation": round(r.writes_per_allocation, 4),
                        "lists_per_allocation": round(r.lists_per_allocation, 4),
                        "failures": r.failures,
                    }
                    for r in rows
                ],
                indent=2,
            )
        )
    else:
        print("IPAM allocations against a real kube-apiserver (one node, /26 blocks)")
        print(format_table(rows))
    return 1 if any(r.failures for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
