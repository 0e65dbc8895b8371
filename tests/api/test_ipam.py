"""IPAM against a real kube-apiserver: the allocation race, exhaustion, leak and node reclaim,
lost replies, and the race again with workers killed and the API server restarted.

Each test uses its own VRF, prefix, node names and namespace and deletes what it
created, so `pyroute2-cni ipam check` (cluster-wide) stays meaningful for the
next test.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from pyroute2_cni.ipam.blocks import Block, check_block_invariants
from pyroute2_cni.ipam.lease import LEASE_NAME
from pyroute2_cni.ipam.store import KubeBlockStore, StoreUnavailable
from pyroute2_cni.kube.client import make_api_client
from pyroute2_cni.messages.base import ErrorKind, Failure
from pyroute2_cni.messages.crd import Attachment, AttachmentType, VrfDomainSpec
from pyroute2_cni.messages.ipam import (
    AddressAllocated,
    AddressReleased,
    AllocateAddress,
    PodRef,
    Reconcile,
    ReconcileResult,
    ReleaseAddress,
)
from pyroute2_cni.runtime.config import IpamSection
from pyroute2_cni.runtime.metrics import Metrics
from tests.harness.api_fixtures import pending_pod, run_ipam_check
from tests.harness.apiserver import ApiServer
from tests.harness.ipam_worker import (
    RunningNode,
    allocate_until_exhausted,
    domain_to_json,
)
from tests.harness.waiting import wait_for

pytestmark = pytest.mark.api

REPO = Path(__file__).resolve().parents[2]
CRDS_DIR = REPO / "kubernetes" / "crds" / "0.1"
LEASE_NAMESPACE = "pyroute2-cni"


class KubeApi(Protocol):
    @property
    def kubeconfig(self) -> str: ...

    def api_client(self) -> client.ApiClient: ...


@dataclass
class Cluster:
    kubeconfig: str
    api: client.ApiClient

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)

    def kubectl(self, *args: str) -> subprocess.CompletedProcess[str]:
        binary = shutil.which("kubectl") or "/usr/bin/kubectl"
        return subprocess.run(
            [binary, f"--kubeconfig={self.kubeconfig}", *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def ipam_check(self) -> tuple[int, dict[str, Any]]:
        return run_ipam_check(self.kubeconfig)

    def blocks(self, vrf: int | None = None) -> list[Block]:
        store = KubeBlockStore(self.api, owns_client=False)
        return [b for b in store.list_blocks() if vrf is None or b.vrf == vrf]

    def create_node(self, name: str) -> None:
        self.core.create_node({"metadata": {"name": name}})

    def delete_node(self, name: str) -> None:
        try:
            self.core.delete_node(name)
        except ApiException as exc:
            if exc.status != 404:
                raise

    def ensure_namespace(self, name: str) -> None:
        try:
            self.core.create_namespace({"metadata": {"name": name}})
        except ApiException as exc:
            if exc.status != 409:
                raise

    def create_domain(self, domain: VrfDomainSpec) -> None:
        body = {
            "apiVersion": "cni.pyroute2.org/v1alpha1",
            "kind": "VRFDomain",
            "metadata": {"name": domain.name},
            "spec": {
                "vrf": domain.vrf,
                "table": domain.table,
                "prefix": domain.prefix,
                "prefixlen": domain.prefixlen,
                "ipblocklen": domain.ipblocklen,
                "attachments": [
                    {"type": a.type.value, "vni": a.vni, "port": a.port} for a in domain.attachments
                ],
            },
        }
        self.custom.create_cluster_custom_object("cni.pyroute2.org", "v1alpha1", "vrfdomains", body)

    def delete_domain(self, name: str) -> None:
        try:
            self.custom.delete_cluster_custom_object(
                "cni.pyroute2.org", "v1alpha1", "vrfdomains", name
            )
        except ApiException as exc:
            if exc.status != 404:
                raise

    def delete_blocks(self, vrf: int) -> None:
        for block in self.blocks(vrf):
            try:
                self.custom.delete_cluster_custom_object(
                    "ipam.pyroute2.org", "v1alpha1", "ipblocks", block.name
                )
            except ApiException as exc:
                if exc.status != 404:
                    raise

    def delete_lease(self) -> None:
        try:
            client.CoordinationV1Api(self.api).delete_namespaced_lease(LEASE_NAME, LEASE_NAMESPACE)
        except ApiException as exc:
            if exc.status != 404:
                raise


@pytest.fixture(scope="module")
def cluster(kube_api: KubeApi) -> Iterator[Cluster]:
    api = kube_api.api_client()
    c = Cluster(kubeconfig=kube_api.kubeconfig, api=api)
    # --validate=false: kubectl cannot check the CEL rules against a 1.20 server
    # (the server drops them); see tests/api/test_crds.py.
    applied = c.kubectl("apply", "--validate=false", "-k", str(CRDS_DIR))
    assert applied.returncode == 0, applied.stderr
    for crd in ("ipblocks.ipam.pyroute2.org", "vrfdomains.cni.pyroute2.org"):
        waited = c.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")
        assert waited.returncode == 0, waited.stderr
    c.ensure_namespace(LEASE_NAMESPACE)
    try:
        yield c
    finally:
        api.close()


def make_domain(name: str, vrf: int, prefix: str, prefixlen: int, ipblocklen: int) -> VrfDomainSpec:
    return VrfDomainSpec(
        name=name,
        vrf=vrf,
        table=vrf,
        prefix=prefix,
        prefixlen=prefixlen,
        ipblocklen=ipblocklen,
        attachments=(Attachment(type=AttachmentType.L3VNI, vni=vrf),),
    )


def assert_blocks_sound(blocks: list[Block]) -> None:
    seen: dict[tuple[int, str], str] = {}
    for block in blocks:
        assert check_block_invariants(block) == [], check_block_invariants(block)
        assert block.allocated == len(block.allocations)
        for address in block.allocations:
            key = (block.vrf, address)
            assert key not in seen, f"{address} held in {block.name} and {seen[key]}"
            seen[key] = block.name


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- the race ------------------------------------------------------------------------


RACE_NODES = [f"race-{i:02d}" for i in range(10)]
RACE = make_domain("ipam-race", 4201, "10.201.0.0", 16, 26)
ALLOCS_PER_NODE = 100
RELEASES_PER_NODE = 30


def test_race_ten_nodes_in_four_processes(cluster: Cluster) -> None:
    cluster.create_domain(RACE)
    for node in RACE_NODES:
        cluster.create_node(node)
    try:
        run_race(cluster)
    finally:
        cluster.delete_blocks(RACE.vrf)
        cluster.delete_domain(RACE.name)
        for node in RACE_NODES:
            cluster.delete_node(node)


def run_race(cluster: Cluster) -> None:
    groups = [RACE_NODES[0:3], RACE_NODES[3:6], RACE_NODES[6:8], RACE_NODES[8:10]]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [
                *(sys.executable, "-m", "tests.harness.ipam_worker"),
                *("--kubeconfig", cluster.kubeconfig, "--nodes", ",".join(group)),
                *("--domain", domain_to_json(RACE), "--seed", str(seed), "--callers", "3"),
                *("--allocs", str(ALLOCS_PER_NODE), "--releases", str(RELEASES_PER_NODE)),
            ],
            cwd=REPO,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed, group in enumerate(groups)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line.strip() == "ready", (line, proc.stderr.read() if proc.stderr else "")
        for proc in procs:  # everyone starts together
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        outputs = [proc.communicate(timeout=150) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err[-3000:]
    nodes: dict[str, Any] = {}
    elapsed = 0.0
    for out, _ in outputs:
        data = json.loads(out.strip().splitlines()[-1])
        nodes.update(data["nodes"])
        elapsed = max(elapsed, data["elapsed"])

    failures = [f for n in nodes.values() for f in n["failures"]]
    assert failures == []
    allocations = sum(n["allocations"] for n in nodes.values())
    releases = sum(len(n["released"]) for n in nodes.values())
    assert (allocations, releases) == (1000, 300)
    held = {k: a for n in nodes.values() for k, a in n["held"].items()}
    assert len(held) == 700
    assert len(set(held.values())) == 700, "an address is held by two attachments"

    blocks = cluster.blocks(RACE.vrf)
    assert_blocks_sound(blocks)
    recorded = {key: address for b in blocks for key, address in b.key_addresses()}
    assert recorded == held
    for block in blocks:
        assert block.node in RACE_NODES
        assert ipaddress.IPv4Network(block.cidr).subnet_of(ipaddress.IPv4Network(RACE.cidr))
        owners = {k.split("-")[0] + "-" + k.split("-")[1] for k, _ in block.key_addresses()}
        assert owners <= {block.node}

    writes = sum(sum(n["writes"].values()) for n in nodes.values())
    lists = sum(n["lists"] for n in nodes.values())
    lists_at_start = sum(n["lists_at_start"] for n in nodes.values())
    per_op = writes / (allocations + releases)
    print(
        f"\nrace: {allocations} allocations + {releases} releases in {elapsed:.2f} s "
        f"({allocations / elapsed:.0f} allocations/s), {writes:.0f} writes "
        f"({writes / allocations:.3f} per allocation, {per_op:.3f} per operation), "
        f"{lists - lists_at_start:.0f} LISTs after start, {len(blocks)} blocks"
    )
    assert lists - lists_at_start == 0  # no LIST on the allocation path
    assert lists_at_start == len(RACE_NODES)  # one LIST per node at start
    assert per_op <= 1.05

    rc, report = cluster.ipam_check()
    assert rc == 0, report
    assert report["clean"] is True and report["addresses"] >= 700


# -- exhaustion ----------------------------------------------------------------------


SMALL = make_domain("ipam-small", 4202, "10.202.0.0", 27, 29)
SMALL_NODES = ["small-a", "small-b", "small-c"]


def test_exhaustion_gives_a_clear_error_and_never_a_duplicate(cluster: Cluster) -> None:
    cluster.create_domain(SMALL)
    for node in SMALL_NODES:
        cluster.create_node(node)
    try:
        run_exhaustion(cluster)
    finally:
        cluster.delete_blocks(SMALL.vrf)
        cluster.delete_domain(SMALL.name)
        for node in SMALL_NODES:
            cluster.delete_node(node)


def run_exhaustion(cluster: Cluster) -> None:
    running = [RunningNode(node, cluster.kubeconfig) for node in SMALL_NODES]
    results: dict[str, dict[str, Any]] = {}

    def exhaust(node: RunningNode) -> None:
        results[node.node] = allocate_until_exhausted(node, SMALL)

    try:
        threads = [threading.Thread(target=exhaust, args=(r,)) for r in running]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        # Exhausted nodes stay exhausted.
        again = running[0].ask(AllocateAddress(key="late/eth0", pod=PodRef(), domain=SMALL))
    finally:
        for r in running:
            r.stop()
    assert set(results) == set(SMALL_NODES)
    held = {k: a for r in results.values() for k, a in r["held"].items()}
    # 4 blocks of /29, 5 pod addresses each: every block was filled by its owner.
    assert len(held) == 20 and len(set(held.values())) == 20
    reason = (
        "VRFDomain ipam-small (10.202.0.0/27) has no free addresses: "
        "all 4 /29 blocks are full or held by other nodes"
    )
    for result in [*results.values(), {"failure": again}]:
        failure = result["failure"]
        assert isinstance(failure, Failure)
        assert failure.kind is ErrorKind.PERMANENT and failure.reason == reason
    blocks = cluster.blocks(SMALL.vrf)
    assert len(blocks) == 4
    assert_blocks_sound(blocks)
    assert all(b.allocated == b.capacity == 6 for b in blocks)
    table = cluster.kubectl("get", "ipblocks.ipam.pyroute2.org")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["NAME", "CIDR", "NODE", "VRF", "ALLOCATED", "CAPACITY"]
    rows = [line.split() for line in lines[1:] if line.startswith("vrf-4202-")]
    assert sorted(r[1] for r in rows) == [f"10.202.0.{i}/29" for i in (0, 16, 24, 8)]
    assert all(r[3:] == ["4202", "6", "6"] for r in rows), rows

    rc, report = cluster.ipam_check()
    assert rc == 0, report


# -- leaks ---------------------------------------------------------------------------


LEAK = make_domain("ipam-leak", 4203, "10.203.0.0", 24, 28)
LEAK_NODE = "leak-node"
LEAK_NS = "ipam-leak"


def create_pod(cluster: Cluster, name: str) -> str:
    pod = cluster.core.create_namespaced_pod(LEAK_NS, pending_pod(name, LEAK_NS, LEAK_NODE))
    return str(pod.metadata.uid)


def test_leaked_address_is_reclaimed_only_after_grace(cluster: Cluster) -> None:
    cluster.delete_lease()
    cluster.create_domain(LEAK)
    cluster.create_node(LEAK_NODE)
    cluster.ensure_namespace(LEAK_NS)
    try:
        cluster.core.create_namespaced_service_account(LEAK_NS, {"metadata": {"name": "default"}})
    except ApiException as exc:
        if exc.status != 409:
            raise
    uids = {name: create_pod(cluster, name) for name in ("keep", "lost")}
    clock = FakeClock()
    grace = 60.0
    node = RunningNode(
        LEAK_NODE,
        cluster.kubeconfig,
        settings=IpamSection(leak_grace=grace, reconcile_interval=3600.0),
        clock=clock,
    )
    try:
        replies = {
            name: node.ask(
                AllocateAddress(
                    key=f"{name}/eth0",
                    pod=PodRef(namespace=LEAK_NS, name=name, uid=uid),
                    domain=LEAK,
                )
            )
            for name, uid in uids.items()
        }
        assert all(isinstance(r, AddressAllocated) for r in replies.values())
        cluster.core.delete_namespaced_pod("lost", LEAK_NS, grace_period_seconds=0)

        def lost_gone() -> bool:
            pods = cluster.core.list_namespaced_pod(LEAK_NS).items
            return all(p.metadata.name != "lost" for p in pods)

        wait_for(lost_gone, 30, "pod lost deleted")

        rc, report = cluster.ipam_check()
        assert rc == 1
        leaked = [p for p in report["problems"] if p["kind"] == "leaked"]
        assert [p["address"] for p in leaked] == [replies["lost"].address]

        def reconcile() -> ReconcileResult:
            result = node.ask(Reconcile())
            assert isinstance(result, ReconcileResult) and result.errors == (), result
            return result

        assert reconcile().reclaimed == ()  # first observation
        clock.now += grace / 2
        assert reconcile().reclaimed == ()  # second observation, inside the grace period
        clock.now += grace / 2 + 1
        assert reconcile().reclaimed == ("lost/eth0",)
        (block,) = cluster.blocks(LEAK.vrf)
        assert_blocks_sound([block])
        assert dict(block.key_addresses()) == {"keep/eth0": replies["keep"].address}
        rc, report = cluster.ipam_check()
        assert rc == 0, report
    finally:
        node.stop()
        cluster.core.delete_namespaced_pod("keep", LEAK_NS, grace_period_seconds=0)
        cluster.delete_blocks(LEAK.vrf)
        cluster.delete_domain(LEAK.name)
        cluster.delete_node(LEAK_NODE)
        cluster.delete_lease()


# -- blocks of deleted nodes ---------------------------------------------------------


RECLAIM = make_domain("ipam-reclaim", 4204, "10.204.0.0", 24, 28)


def test_deleted_nodes_blocks_are_reclaimed_by_the_lease_holder_only(cluster: Cluster) -> None:
    cluster.delete_lease()
    cluster.create_domain(RECLAIM)
    names = ["rc-a", "rc-b", "rc-c"]
    for name in names:
        cluster.create_node(name)
    clock = FakeClock()
    settings = IpamSection(reconcile_interval=3600.0)
    running = {n: RunningNode(n, cluster.kubeconfig, settings=settings, clock=clock) for n in names}

    def reconcile(name: str) -> ReconcileResult:
        result = running[name].ask(Reconcile())
        assert isinstance(result, ReconcileResult) and result.errors == (), result
        return result

    try:
        for i in range(3):
            reply = running["rc-c"].ask(
                AllocateAddress(key=f"c{i}/eth0", pod=PodRef(), domain=RECLAIM)
            )
            assert isinstance(reply, AddressAllocated)
        for name in ("rc-a", "rc-b"):
            reply = running[name].ask(
                AllocateAddress(key=f"{name}-x/eth0", pod=PodRef(), domain=RECLAIM)
            )
            assert isinstance(reply, AddressAllocated)
        running["rc-c"].stop()
        cluster.delete_node("rc-c")

        first = reconcile("rc-a")
        assert first.lease_held and first.foreign_blocks_reclaimed == ()
        for _ in range(2):
            other = reconcile("rc-b")
            assert not other.lease_held and other.foreign_blocks_reclaimed == ()
        assert {b.node for b in cluster.blocks(RECLAIM.vrf)} == set(names)
        rc, report = cluster.ipam_check()
        assert rc == 1 and [p["kind"] for p in report["problems"]] == ["missing-node"]

        second = reconcile("rc-a")
        (gone,) = second.foreign_blocks_reclaimed
        assert gone.startswith("vrf-4204-")
        blocks = cluster.blocks(RECLAIM.vrf)
        assert {b.node for b in blocks} == {"rc-a", "rc-b"}
        assert_blocks_sound(blocks)
        lease = client.CoordinationV1Api(cluster.api).read_namespaced_lease(
            LEASE_NAME, LEASE_NAMESPACE
        )
        assert lease.spec.holder_identity == "rc-a"
        rc, report = cluster.ipam_check()
        assert rc == 0, report
    finally:
        for r in running.values():
            r.stop()
        cluster.delete_blocks(RECLAIM.vrf)
        cluster.delete_domain(RECLAIM.name)
        for name in names:
            cluster.delete_node(name)
        cluster.delete_lease()


# -- lost replies --------------------------------------------------------------------


class LosingReplies(KubeBlockStore):
    """Writes of the ops in `lose` take effect on the real API server, then report
    StoreUnavailable: the reply lost when the API server restarts mid-request."""

    def __init__(self, kubeconfig: str, metrics: Metrics, lose: set[str]) -> None:
        super().__init__(make_api_client(kubeconfig), metrics)
        self._lose = lose

    def _answer(self, op: str, name: str) -> None:
        if op in self._lose:
            raise StoreUnavailable(f"test: the reply to {op} of IPBlock {name} was dropped")

    def create_block(self, block: Block) -> Block:
        created = super().create_block(block)
        self._answer("create", block.name)
        return created

    def replace_status(self, block: Block) -> Block:
        stored = super().replace_status(block)
        self._answer("status", block.name)
        return stored


LOST = make_domain("ipam-lost", 4205, "10.205.0.0", 24, 28)
LOST_NODE = "lost-a"


def test_writes_whose_reply_is_lost_are_reread_not_leaked(cluster: Cluster) -> None:
    cluster.create_domain(LOST)
    cluster.create_node(LOST_NODE)
    lose: set[str] = set()
    node = RunningNode(
        LOST_NODE,
        cluster.kubeconfig,
        store_factory=lambda kubeconfig, metrics: LosingReplies(kubeconfig, metrics, lose),
    )
    key = f"{LOST_NODE}-1/eth0"
    try:
        lose.add("create")
        reply = node.ask(AllocateAddress(key=key, pod=PodRef(), domain=LOST))
        assert isinstance(reply, Failure) and reply.kind is ErrorKind.TEMPORARY, reply
        (created,) = cluster.blocks(LOST.vrf)  # it exists, though the create "failed"
        assert created.node == LOST_NODE

        lose.clear()
        lose.add("status")
        reply = node.ask(AllocateAddress(key=key, pod=PodRef(), domain=LOST))
        assert isinstance(reply, Failure) and reply.kind is ErrorKind.TEMPORARY, reply
        (block,) = cluster.blocks(LOST.vrf)  # the created block was adopted, not a second one
        assert block.name == created.name
        committed = dict(block.key_addresses())[key]

        lose.clear()
        # The runtime's DEL for the failed ADD: the record the API holds is freed.
        assert node.ask(ReleaseAddress(key=key)) == AddressReleased(key=key, address=committed)
        (block,) = cluster.blocks(LOST.vrf)
        assert list(block.key_addresses()) == [] and block.allocated == 1  # the gateway only
        assert node.crashes == []
        rc, report = cluster.ipam_check()
        assert rc == 0, report
    finally:
        node.stop()
        cluster.delete_blocks(LOST.vrf)
        cluster.delete_domain(LOST.name)
        cluster.delete_node(LOST_NODE)


# -- workers killed with -9 and the API server restarted -------------------------------


CHAOS_NODES = [f"chaos-{i:02d}" for i in range(20)]
CHAOS = make_domain("ipam-chaos", 4206, "10.206.0.0", 16, 26)
CHAOS_GROUPS = [CHAOS_NODES[i : i + 4] for i in range(0, len(CHAOS_NODES), 4)]
CHAOS_ALLOCS = 100  # ADDs per node: 2,000 in all
CHAOS_RELEASES = 30
CHAOS_TIMEOUT = 150.0


class Ledger:
    """What every caller was told, from the workers' journals (read by several threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.state: dict[str, tuple[str, str, str | None]] = {}  # key -> (node, state, address)
        self.counts: Counter[str] = Counter()
        self.adds: Counter[str] = Counter()  # ADDs begun per node
        self.problems: list[str] = []

    def record(self, event: dict[str, Any]) -> None:
        with self._lock:
            kind, node, key = event["e"], event["node"], event.get("key", "")
            self.counts[kind] += 1
            previous = self.state.get(key, (node, "", None))[2]
            match kind:
                case "add":
                    self.adds[node] += 1
                    self.state[key] = (node, "adding", None)
                case "held":
                    self.state[key] = (node, "held", event["address"])
                case "add-failed":
                    self.state[key] = (node, "failed", None)
                case "del":
                    self.state[key] = (node, "deleting", previous)
                case "released":
                    self.state[key] = (node, "released", event["address"])
                case "del-gave-up":
                    self.problems.append(f"DEL of {key} never succeeded: {event['reason']}")
                case "caller-died":
                    self.problems.append(f"{node}: a caller stopped: {event['reason']}")
                case "done":
                    self.problems.extend(f"{node}: actor crashed: {c}" for c in event["crashes"])

    def count(self, kind: str) -> int:
        with self._lock:
            return self.counts[kind]

    def unfinished(self, nodes: list[str]) -> list[str]:
        """Keys of `nodes` whose ADD or DEL never got its answer to the caller."""
        with self._lock:
            return sorted(
                k
                for k, (n, st, _) in self.state.items()
                if n in nodes and st != "held" and st != "released"
            )

    def held(self) -> dict[str, str]:
        with self._lock:
            return {k: a for k, (_, st, a) in self.state.items() if st == "held" and a}


class JournaledWorker:
    """One ``ipam_worker --journal`` process; a thread feeds its lines to the ledger."""

    def __init__(
        self, cluster: Cluster, nodes: list[str], seed: int, ledger: Ledger, log: Path, *extra: str
    ) -> None:
        self.nodes = nodes
        self.ready = threading.Event()
        self.finished = False
        self._ledger = ledger
        self._log: IO[str] = log.open("w")
        self.proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "tests.harness.ipam_worker", "--journal"),
                *("--kubeconfig", cluster.kubeconfig, "--nodes", ",".join(nodes)),
                *("--domain", domain_to_json(CHAOS), "--seed", str(seed), "--callers", "3"),
                *("--allocs", str(CHAOS_ALLOCS), "--releases", str(CHAOS_RELEASES)),
                *extra,
            ],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,  # a file: a full stderr pipe would stall the worker
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.strip() == "ready":
                self.ready.set()
            elif line.startswith("{"):
                self._ledger.record(json.loads(line))

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def kill(self) -> None:
        """SIGKILL, then wait until every line it wrote is in the ledger."""
        self.proc.send_signal(signal.SIGKILL)
        self.finish(30)

    def finish(self, timeout: float) -> int:
        """Wait for the exit (killed after `timeout`), read the rest, close the pipes."""
        self.finished = True
        try:
            code = self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._reader.join(timeout=30)
            for pipe in (self.proc.stdin, self.proc.stdout):
                if pipe is not None:
                    pipe.close()
            self._log.close()
        return code


def test_no_duplicate_and_no_lost_address_when_workers_die_and_the_api_restarts(
    cluster: Cluster, kube_api: ApiServer, tmp_path: Path
) -> None:
    cluster.create_domain(CHAOS)
    for node in CHAOS_NODES:
        cluster.create_node(node)
    try:
        run_chaos(cluster, kube_api, tmp_path)
    finally:
        cluster.delete_blocks(CHAOS.vrf)
        cluster.delete_domain(CHAOS.name)
        for node in CHAOS_NODES:
            cluster.delete_node(node)


def run_chaos(cluster: Cluster, kube_api: ApiServer, tmp_path: Path) -> None:
    ledger = Ledger()
    target = CHAOS_ALLOCS * len(CHAOS_NODES)
    workers = [
        JournaledWorker(cluster, group, seed, ledger, tmp_path / f"worker-{seed}.log")
        for seed, group in enumerate(CHAOS_GROUPS)
    ]
    replacements: list[JournaledWorker] = []

    def replace(index: int) -> None:
        """Kill worker `index` with -9 and start its nodes again in a new process."""
        dead = workers[index]
        dead.kill()
        quota = {n: CHAOS_ALLOCS - ledger.adds[n] for n in dead.nodes}
        new = JournaledWorker(
            cluster,
            dead.nodes,
            100 + index,
            ledger,
            tmp_path / f"worker-{index}-again.log",
            *("--key-prefix", f"again-{index}-", "--quota", json.dumps(quota)),
            *("--recover", ",".join(ledger.unfinished(dead.nodes))),
        )
        replacements.append(new)
        wait_for(new.ready.is_set, 60, f"replacement of worker {index} ready")
        new.go()

    began = time.monotonic()
    try:
        for worker in workers:
            wait_for(worker.ready.is_set, 60, f"worker {worker.nodes} ready")
        for worker in workers:
            worker.go()
        wait_for(lambda: ledger.count("held") >= target // 5, 60, "a fifth of the ADDs")
        replace(1)
        wait_for(lambda: ledger.count("held") >= 2 * target // 5, 60, "two fifths of the ADDs")
        failed_before_restart = ledger.count("add-failed")
        downtime = kube_api.restart_apiserver()
        wait_for(lambda: ledger.count("held") >= 3 * target // 5, 90, "three fifths of the ADDs")
        replace(3)
        codes = [w.finish(CHAOS_TIMEOUT) for w in workers if not w.finished]
        codes += [w.finish(CHAOS_TIMEOUT) for w in replacements]
    finally:
        for worker in workers + replacements:
            if not worker.finished:  # a failure above: leave nothing running
                worker.proc.kill()
                worker.finish(30)
    elapsed = time.monotonic() - began
    logs = "".join(p.read_text()[-2000:] for p in sorted(tmp_path.glob("worker-*.log")))
    assert codes == [0] * len(codes), logs

    assert ledger.problems == []
    assert ledger.unfinished(CHAOS_NODES) == []  # every ADD and DEL got its answer
    assert ledger.count("add-failed") > failed_before_restart  # the restart was felt
    held = ledger.held()
    duplicates = len(held) - len(set(held.values()))
    blocks = cluster.blocks(CHAOS.vrf)
    assert_blocks_sound(blocks)
    recorded = {key: address for b in blocks for key, address in b.key_addresses()}
    lost = {k: a for k, a in held.items() if recorded.get(k) != a}
    stray = {k: a for k, a in recorded.items() if k not in held}
    print(
        f"\nchaos: {ledger.count('add')} ADDs ({ledger.count('held')} allocated, "
        f"{ledger.count('add-failed')} failed and DELeted), {ledger.count('released')} DELs "
        f"answered, 20 nodes in 5 processes, 2 killed with -9, API server down "
        f"{downtime:.1f} s, {elapsed:.1f} s in all; {len(held)} held at the end, "
        f"{duplicates} duplicates, {len(lost)} lost, {len(stray)} stray records"
    )
    assert duplicates == 0
    assert lost == {}, "acknowledged allocations missing from the API"
    assert stray == {}, "records the API holds for attachments nobody holds"
    rc, report = cluster.ipam_check()
    assert rc == 0, report
    assert report["clean"] is True
