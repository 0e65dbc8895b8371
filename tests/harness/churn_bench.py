"""Pod churn at cluster scale (issue 20 item 2), part of `make bench-scale`.

    .venv/bin/python -m tests.harness.churn_bench [--nodes 100] [--pods 5000]

A real etcd + kube-apiserver with the CRDs and one Node object per node.  Worker processes
each run the real IPAMActor of their share of the nodes (tests.harness.ipam_worker's
RunningNode: KubeBlockStore, the daemon's settings); on the parent's word every node
allocates its pods at once (4 concurrent callers per node, as a kubelet's parallel
sandbox starts), then, on the next word, releases them all.  Reported: the time to
create and to delete every pod, allocation and release p50/p99, API writes per
allocation, IPBlocks claimed vs needed, duplicate addresses (must be 0) and
`pyroute2-cni ipam check` after each phase (must be clean).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from pyroute2_cni.messages import ipam as msg
from pyroute2_cni.messages.crd import Attachment, AttachmentType, VrfDomainSpec
from tests.harness.api_fixtures import install_crds, kubectl, run_ipam_check
from tests.harness.apiserver import ApiServer
from tests.harness.domains import SYSTEM_DOMAIN
from tests.harness.hollow import HollowNode
from tests.harness.ipam_worker import RunningNode, domain_from_json, domain_to_json
from tests.harness.scale_bench import apply_domain, create_node, node_address

REPO = Path(__file__).resolve().parents[2]
# The system domain's shape in a VRF and prefix of its own.
DOMAIN = replace(
    SYSTEM_DOMAIN,
    name="vrf-churn",
    vrf=4300,
    table=4300,
    prefix="10.96.0.0",
    attachments=(Attachment(type=AttachmentType.L3VNI, vni=4300),),
)
CALLERS = 4


# -- the worker (one process, several nodes) ----------------------------------------------


def _phase(
    running: list[RunningNode], keys: dict[str, list[str]], allocate: bool, domain: VrfDomainSpec
) -> dict[str, Any]:
    """Every node's keys at once, CALLERS threads per node; latencies in ms."""
    latencies: list[float] = []
    addresses: dict[str, str] = {}
    failures: list[str] = []
    lock = threading.Lock()

    def caller(node: RunningNode, mine: list[str]) -> None:
        for key in mine:
            start = time.perf_counter()
            if allocate:
                reply = node.ask(msg.AllocateAddress(key=key, pod=msg.PodRef(), domain=domain))
                ok = isinstance(reply, msg.AddressAllocated)
            else:
                reply = node.ask(msg.ReleaseAddress(key=key))
                ok = isinstance(reply, msg.AddressReleased) and reply.address is not None
            took = (time.perf_counter() - start) * 1000
            with lock:
                latencies.append(took)
                if not ok:
                    failures.append(f"{node.node} {key}: {reply!r}")
                elif allocate:
                    addresses[key] = reply.address

    threads = [
        threading.Thread(target=caller, args=(node, keys[node.node][i::CALLERS]))
        for node in running
        for i in range(CALLERS)
    ]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {
        "seconds": time.monotonic() - began,
        "latencies": latencies,
        "addresses": addresses,
        "failures": failures,
    }


def worker(kubeconfig: str, nodes: list[str], pods: dict[str, int], domain: VrfDomainSpec) -> int:
    running = [RunningNode(name, kubeconfig) for name in nodes]
    keys = {n: [f"{n}-{i}/eth0" for i in range(pods[n])] for n in nodes}
    try:
        for node in running:
            node.ask(msg.LookupAddress(key="warm-up/none"))
        for allocate in (True, False):
            print(json.dumps({"ready": True}), flush=True)
            sys.stdin.readline()
            result = _phase(running, keys, allocate, domain)
            result["writes"] = sum(sum(n.writes().values()) for n in running)
            print(json.dumps(result), flush=True)
    finally:
        for node in running:
            node.stop()
    return 0


# -- the parent -----------------------------------------------------------------------------


def percentile(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else 0.0


def count_blocks(api: ApiServer) -> int:
    out = kubectl(api.kubeconfig, "get", "ipblocks", "-o", "json")
    items = json.loads(out).get("items") or []
    return sum(1 for b in items if (b.get("spec") or {}).get("vrf") == DOMAIN.vrf)


def run_phase(workers: list[subprocess.Popen[str]]) -> list[dict[str, Any]]:
    for proc in workers:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError("a churn worker exited before it was ready")
    for proc in workers:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    results = []
    for proc in workers:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError("a churn worker exited mid-phase")
        results.append(json.loads(line))
    return results


def churn(api: ApiServer, nodes: int, pods: int, per_process: int) -> str:
    names = [f"churn-{i:03d}" for i in range(nodes)]
    for i, name in enumerate(names):
        create_node(api, HollowNode(name, node_address(200 + i)))
    share = {n: pods // nodes + (1 if i < pods % nodes else 0) for i, n in enumerate(names)}
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.harness.churn_bench",
                "--worker",
                "--kubeconfig",
                api.kubeconfig,
                "--worker-nodes",
                json.dumps({n: share[n] for n in names[i : i + per_process]}),
            ],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(0, nodes, per_process)
    ]
    try:
        created = run_phase(workers)
        rc_created, report_created = run_ipam_check(api.kubeconfig, timeout=600)
        blocks = count_blocks(api)
        deleted = run_phase(workers)
        rc_deleted, report_deleted = run_ipam_check(api.kubeconfig, timeout=600)
    finally:
        for proc in workers:
            if proc.stdin is not None:
                proc.stdin.close()
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
    addresses = [a for r in created for a in r["addresses"].values()]
    duplicates = sum(c - 1 for c in Counter(addresses).values() if c > 1)
    allocated = len(addresses)
    writes = sum(r["writes"] for r in created)
    usable = 2 ** (32 - DOMAIN.ipblocklen) - 1  # a block's gateway takes one address
    needed = sum(math.ceil(n / usable) for n in share.values())
    failures = [f for r in created + deleted for f in r["failures"]]

    def row(what: str, results: list[dict[str, Any]]) -> str:
        lat = [x for r in results for x in r["latencies"]]
        seconds = max(r["seconds"] for r in results)
        return (
            f"| {what} | {len(lat)} | {seconds:.1f} | {len(lat) / seconds:.0f}"
            f" | {statistics.median(lat):.1f} | {percentile(lat, 0.99):.1f} |"
        )

    def verdict(ok: bool) -> str:
        return "holds" if ok else "MISSED"

    created_seconds = max(r["seconds"] for r in created)
    return "\n".join(
        [
            f"## 2. Pod churn: {pods} pods on {nodes} nodes (real IPAMActors, real API server)",
            "",
            "| phase | calls | seconds | per second | p50 ms | p99 ms |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
            row("allocate", created),
            row("release", deleted),
            "",
            f"API writes per allocation: {writes / max(allocated, 1):.2f}"
            f"; IPBlocks claimed {blocks}, needed {needed}",
            f"all created within 2 minutes: {verdict(created_seconds <= 120)}"
            f" ({created_seconds:.0f} s)",
            f"duplicate addresses: {duplicates} ({verdict(duplicates == 0)})"
            f"; failed calls: {len(failures)} {failures[:3]}",
            f"ipam check after create: rc {rc_created} clean {report_created.get('clean')}"
            f"; after delete: rc {rc_deleted} clean {report_deleted.get('clean')}"
            f" ({verdict(rc_created == 0 and rc_deleted == 0)})",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--pods", type=int, default=5000)
    parser.add_argument("--per-process", type=int, default=25)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--kubeconfig", help=argparse.SUPPRESS)
    parser.add_argument("--worker-nodes", help=argparse.SUPPRESS)
    parser.add_argument("--domain", default=domain_to_json(DOMAIN), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        share = json.loads(args.worker_nodes)
        return worker(args.kubeconfig, list(share), share, domain_from_json(args.domain))
    with ApiServer() as api:
        install_crds(api.kubeconfig)
        apply_domain(api, DOMAIN.name, DOMAIN.vrf, DOMAIN.prefix)
        print(churn(api, args.nodes, args.pods, args.per_process))
    return 0


if __name__ == "__main__":
    sys.exit(main())
