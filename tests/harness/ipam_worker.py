"""Drive IPAMActors against a real API server, from one process or several.

Used by the ``api`` tests (the multi-process race) and by ``tests/harness/ipam_bench.py``.

Command line (one worker process hosting a few nodes)::

    python -m tests.harness.ipam_worker --kubeconfig K --nodes n0,n1 \\
        --domain '{"name": ..., "vrf": ..., ...}' --allocs 100 --releases 30 --callers 3

prints ``ready`` once its actors have started, waits for one line on stdin (the
start signal, so every process begins together), runs, and prints one JSON
object: per node the addresses still held, the releases, failures, API writes
and LISTs.

With ``--journal`` (the fault-injection test) callers behave like a container
runtime instead: a failed ADD is followed by its DEL, and a DEL is repeated until
it succeeds; every step is printed as one JSON line the moment it happens, so the
parent knows what each caller was told even when the process is killed with -9.
``--recover k1,k2`` DELs those keys first (the sandboxes a killed process left
half done), ``--quota '{"node": n}'`` overrides ``--allocs`` per node.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TextIO

import pykka

from pyroute2_cni.actors.address import Address
from pyroute2_cni.actors.base import ActorHooks
from pyroute2_cni.actors.ipam_actor import IPAMActor
from pyroute2_cni.ipam.store import BlockStore, KubeBlockStore
from pyroute2_cni.messages.base import Failure
from pyroute2_cni.messages.crd import Attachment, AttachmentType, VrfDomainSpec
from pyroute2_cni.messages.ipam import (
    AddressAllocated,
    AddressReleased,
    AllocateAddress,
    LookupAddress,
    PodRef,
    ReleaseAddress,
)
from pyroute2_cni.runtime.config import IpamSection
from pyroute2_cni.runtime.metrics import Metrics

ASK_TIMEOUT = 60.0
# --journal: how long a caller repeats a DEL (the runtime retries until it succeeds).
DEL_DEADLINE = 90.0
DEL_BACKOFF = (0.1, 1.0)  # first and longest pause between DEL attempts
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
        self,
        node: str,
        kubeconfig: str,
        settings: IpamSection = QUIET,
        clock: Any = None,
        store_factory: Callable[[str, Metrics], BlockStore] | None = None,
    ) -> None:
        self.node = node
        self.metrics = Metrics()
        make_store = store_factory or KubeBlockStore.from_kubeconfig
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
            store_factory=lambda: make_store(kubeconfig, self.metrics),
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


class Journal:
    """One JSON object per line on `out`, flushed at once (the process may be killed next)."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._lock = threading.Lock()

    def event(self, **fields: Any) -> None:
        line = json.dumps(fields)
        with self._lock:
            self._out.write(line + "\n")
            self._out.flush()


def delete_until_done(running: RunningNode, key: str, journal: Journal) -> None:
    """The runtime's DEL: repeated until IPAM answers AddressReleased, or give up (journaled)."""
    journal.event(e="del", node=running.node, key=key)
    deadline = time.monotonic() + DEL_DEADLINE
    pause = DEL_BACKOFF[0]
    while True:
        reply = running.ask(ReleaseAddress(key=key))
        if isinstance(reply, AddressReleased):
            journal.event(e="released", node=running.node, key=key, address=reply.address)
            return
        if running.crashes or time.monotonic() + pause > deadline:  # a crashed actor stays so
            journal.event(e="del-gave-up", node=running.node, key=key, reason=repr(reply))
            return
        time.sleep(pause)  # a retry pause, not synchronisation
        pause = min(pause * 2, DEL_BACKOFF[1])


def churn_node(
    running: RunningNode,
    domain: VrfDomainSpec,
    allocs: int,
    releases: int,
    callers: int,
    seed: int,
    key_prefix: str,
    journal: Journal,
) -> None:
    """Like drive_node, but a runtime's way: a failed ADD is DELeted, DELs are repeated."""

    def caller(index: int) -> None:
        try:
            calls(index)
        except Exception as exc:  # an ask that raised: the actor is gone; say so and stop
            journal.event(e="caller-died", node=running.node, reason=repr(exc))

    def calls(index: int) -> None:
        rng = random.Random(f"{seed}/{running.node}/{index}/{key_prefix}")
        my_allocs = allocs // callers + (1 if index < allocs % callers else 0)
        my_releases = releases // callers + (1 if index < releases % callers else 0)
        held: list[str] = []
        done_releases = 0
        for i in range(my_allocs):
            key = f"{key_prefix}{running.node}-{index}-{i}/eth0"
            journal.event(e="add", node=running.node, key=key)
            reply = running.ask(AllocateAddress(key=key, pod=PodRef(), domain=domain))
            if isinstance(reply, AddressAllocated):
                journal.event(e="held", node=running.node, key=key, address=reply.address)
                held.append(key)
            else:
                journal.event(e="add-failed", node=running.node, key=key, reason=repr(reply))
                delete_until_done(running, key, journal)
            due = (i + 1) * my_releases // max(my_allocs, 1)
            while done_releases < due and held:
                delete_until_done(running, held.pop(rng.randrange(len(held))), journal)
                done_releases += 1

    threads = [
        threading.Thread(target=caller, args=(i,), name=f"caller-{running.node}-{i}")
        for i in range(callers)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    journal.event(e="done", node=running.node, crashes=running.crashes)


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
    parser.add_argument("--journal", action="store_true", help="runtime-like callers, JSON lines")
    parser.add_argument("--key-prefix", default="", help="prefix of every attachment key")
    parser.add_argument("--quota", default="{}", help="allocations per node (JSON), else --allocs")
    parser.add_argument("--recover", default="", help="comma-separated keys to DEL first")
    args = parser.parse_args(argv)
    domain = domain_from_json(args.domain)
    names = [n for n in args.nodes.split(",") if n]
    running = [RunningNode(name, args.kubeconfig) for name in names]
    try:
        for node in running:  # on_start has run once the first message is answered
            node.ask(LookupAddress(key="warm-up/none"))
        print("ready", flush=True)
        sys.stdin.readline()
        results: dict[str, NodeResult] = {}
        began = time.monotonic()
        if args.journal:
            run_journaled(running, domain, args)
            return 0

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


def run_journaled(running: list[RunningNode], domain: VrfDomainSpec, args: Any) -> None:
    journal = Journal(sys.stdout)
    by_name = {node.node: node for node in running}
    quota: dict[str, int] = json.loads(args.quota)
    recover = [k for k in args.recover.split(",") if k]
    # The half-done sandboxes first, each DELeted on the node whose key it is.
    for key in recover:  # keys are [prefix]<node>-<caller>-<n>/eth0
        node = next(n for name, n in by_name.items() if f"{name}-" in key)
        delete_until_done(node, key, journal)
    threads = [
        threading.Thread(
            target=churn_node,
            args=(
                node,
                domain,
                quota.get(node.node, args.allocs),
                args.releases * quota.get(node.node, args.allocs) // max(args.allocs, 1),
                args.callers,
                args.seed,
                args.key_prefix,
                journal,
            ),
        )
        for node in running
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


if __name__ == "__main__":
    sys.exit(main())
