"""Drive IPAMActors against a real API server, from one process or several.

Used by the ``api`` tests (the multi-process race) and by ``tests/harness/ipam_bench.py``.

Command line (one worker process hosting a few nodes)::

    python -m tests.harness.ipam_worker --kubeconfig K --nodes n0,n1 \\
        --domain '{"name": ..., "vrf": ..., ...}' --allocs 100 --releases 30 --callers 3

prints ``ready`` once its actors have started, waits for one line on stdin (the
start signal, so every process begins together), runs, and prints one JSON
object: per node the addresses still held, the releases, failures, API writes
and LISTs.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import pykka

from pyroute2_cni.actors.address import Address
from pyroute2_cni.actors.base import ActorHooks
from pyroute2_cni.actors.ipam_actor import IPAMActor
from pyroute2_cni.config import IpamSection
from pyroute2_cni.ipam_store import KubeBlockStore
from pyroute2_cni.messages.base import Failure
from pyroute2_cni.messages.crd import Attachment, AttachmentType, VrfDomainSpec
from pyroute2_cni.messages.ipam import (
    AddressAllocated,
    AddressReleased,
    AllocateAddress,
    PodRef,
    ReleaseAddress,
)
from pyroute2_cni.metrics import Metrics

ASK_TIMEOUT = 60.0
# Housekeeping stays out of the measured runs.
QUIET = IpamSection(reconcile_interval=86400.0)


def domain_to_json(domain: VrfDomainSpec) -> str:
    return json.dumps(
        {
            "name": domain.name,
            "vrf": domain.vrf,
            "table": domain.table,
            "prefix": domain.prefix,
            "prefixlen": domain.prefixlen,
            "ipblocklen": domain.ipblocklen,
            "attachments": [
                {"type": a.type.value, "vni": a.vni, "port": a.port} for a in domain.attachments
            ],
        }
    )


def domain_from_json(text: str) -> VrfDomainSpec:
    data = json.loads(text)
    return VrfDomainSpec(
        name=data["name"],
        vrf=data["vrf"],
        table=data["table"],
        prefix=data["prefix"],
        prefixlen=data["prefixlen"],
        ipblocklen=data["ipblocklen"],
        attachments=tuple(
            Attachment(type=AttachmentType(a["type"]), vni=a["vni"], port=a["port"])
            for a in data["attachments"]
        ),
    )


@dataclass
class NodeResult:
    node: str
    held: dict[str, str] = field(default_factory=dict)
    released: list[list[str]] = field(default_factory=list)  # [key, address]
    failures: list[str] = field(default_factory=list)
    allocations: int = 0
    writes: dict[str, float] = field(default_factory=dict)
    lists: float = 0.0
    lists_at_start: float = 0.0


class RunningNode:
    """One IPAMActor on its own KubeBlockStore and Metrics."""

    def __init__(
        self, node: str, kubeconfig: str, settings: IpamSection = QUIET, clock: Any = None
    ) -> None:
        self.node = node
        self.metrics = Metrics()
        self.crashes: list[str] = []
        hooks = ActorHooks(
            name=f"ipam-{node}",
            generation=1,
            on_crash=lambda name, gen, exc: self.crashes.append(repr(exc)),
        )
        self.ref: pykka.ActorRef[Any] = IPAMActor.start(
            hooks,
            node=node,
            settings=settings,
            store_factory=lambda: KubeBlockStore.from_kubeconfig(kubeconfig, self.metrics),
            metrics=self.metrics,
            netlink=None,
            clock=clock or time.monotonic,
        )
        self.address = Address(f"ipam-{node}")
        self.address.bind(self.ref)

    def ask(self, message: Any) -> Any:
        return self.address.ask(message, timeout=ASK_TIMEOUT)

    def writes(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for metric in self.metrics.ipam_api_writes.collect():
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    out[sample.labels["op"]] = sample.value
        return out

    def lists(self) -> float:
        return self.metrics.registry.get_sample_value("pyroute2_cni_ipam_api_lists_total") or 0.0

    def stop(self) -> None:
        if self.ref.is_alive():
            self.ref.stop(timeout=30)


def drive_node(
    running: RunningNode,
    domain: VrfDomainSpec,
    allocs: int,
    releases: int,
    callers: int,
    seed: int,
    key_prefix: str = "",
) -> NodeResult:
    """`callers` threads make `allocs` allocations with `releases` releases interleaved."""
    result = NodeResult(node=running.node, lists_at_start=running.lists())
    lock = threading.Lock()

    def caller(index: int) -> None:
        rng = random.Random(f"{seed}/{running.node}/{index}")
        my_allocs = allocs // callers + (1 if index < allocs % callers else 0)
        my_releases = releases // callers + (1 if index < releases % callers else 0)
        held: list[str] = []
        done_releases = 0
        for i in range(my_allocs):
            key = f"{key_prefix}{running.node}-{index}-{i}/eth0"
            reply = running.ask(AllocateAddress(key=key, pod=PodRef(), domain=domain))
            with lock:
                if isinstance(reply, AddressAllocated):
                    result.held[key] = reply.address
                    result.allocations += 1
                    held.append(key)
                else:
                    result.failures.append(f"allocate {key}: {reply!r}")
            due = (i + 1) * my_releases // max(my_allocs, 1)
            while done_releases < due and held:
                victim = held.pop(rng.randrange(len(held)))
                released = running.ask(ReleaseAddress(key=victim))
                done_releases += 1
                with lock:
                    if isinstance(released, AddressReleased) and released.address:
                        result.released.append([victim, released.address])
                        del result.held[victim]
                    else:
                        result.failures.append(f"release {victim}: {released!r}")

    threads = [
        threading.Thread(target=caller, args=(i,), name=f"caller-{running.node}-{i}")
        for i in range(callers)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result.writes = running.writes()
    result.lists = running.lists()
    result.failures.extend(f"actor crashed: {c}" for c in running.crashes)
    return result


def allocate_until_exhausted(running: RunningNode, domain: VrfDomainSpec) -> dict[str, Any]:
    """Allocate until the first Failure; returns what was held and the failure."""
    held: dict[str, str] = {}
    for i in range(10_000):
        key = f"{running.node}-x{i}/eth0"
        reply = running.ask(AllocateAddress(key=key, pod=PodRef(), domain=domain))
        if isinstance(reply, Failure):
            return {"held": held, "failure": reply}
        held[key] = reply.address
    raise AssertionError("never exhausted")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.harness.ipam_worker")
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--nodes", required=True, help="comma-separated node names")
    parser.add_argument("--domain", required=True, help="VRFDomain as JSON")
    parser.add_argument("--allocs", type=int, required=True, help="allocations per node")
    parser.add_argument("--releases", type=int, default=0, help="releases per node")
    parser.add_argument("--callers", type=int, default=2, help="concurrent callers per node")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    domain = domain_from_json(args.domain)
    names = [n for n in args.nodes.split(",") if n]
    running = [RunningNode(name, args.kubeconfig) for name in names]
    try:
        for node in running:  # on_start has run once the first message is answered
            node.ask(ReleaseAddress(key="warm-up/none"))
        print("ready", flush=True)
        sys.stdin.readline()
        results: dict[str, NodeResult] = {}
        began = time.monotonic()

        def run(node: RunningNode) -> None:
            results[node.node] = drive_node(
                node, domain, args.allocs, args.releases, args.callers, args.seed
            )

        threads = [threading.Thread(target=run, args=(node,)) for node in running]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - began
    finally:
        for node in running:
            node.stop()
    out = {"elapsed": elapsed, "nodes": {name: asdict(r) for name, r in results.items()}}
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
