"""An in-memory BlockStore with the API server's rules that IPAM relies on.

- create answers BlockTaken (409) when the name exists; status is not stored on
  create (the CRD has a status subresource);
- a status write or delete whose resourceVersion is stale answers Conflict;
- every change bumps one global resourceVersion, like etcd's revision.

Several IPAMActors (one per node) may share one instance: it is thread-safe.
Writes and LISTs are counted like KubeBlockStore does (``writes``, ``lists`` and,
when given, the Metrics counters).  ``before_write`` lets a test change the world
between an actor's read and its write (to provoke a conflict); ``lose_replies``
makes writes of the named ops take effect and then raise StoreUnavailable, like a
reply lost when the API server restarts (the outcome the client cannot know).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import replace

from pyroute2_cni.ipam.blocks import Block, PodInfo, normalized
from pyroute2_cni.ipam.lease import LeaseRecord
from pyroute2_cni.ipam.store import (
    BlockGone,
    BlockTaken,
    Conflict,
    StoreError,
    StoreUnavailable,
)
from pyroute2_cni.messages.crd import VrfDomainSpec
from pyroute2_cni.runtime.metrics import Metrics


class FakeBlockStore:
    def __init__(self, metrics: Metrics | None = None) -> None:
        self._lock = threading.RLock()
        self._rv = 0
        self._metrics = metrics
        self.blocks: dict[str, Block] = {}
        self.leases: dict[tuple[str, str], LeaseRecord] = {}
        self.pods: dict[str, list[PodInfo]] = {}  # node -> pods scheduled there
        self.nodes: set[str] = set()
        self.domains: list[VrfDomainSpec] = []
        self.writes: Counter[str] = Counter()
        self.lists = 0
        self.gets = 0  # get_block calls (re-reads)
        self.lease_reads = 0
        self.pod_lists = 0
        self.node_lists = 0
        # What a pod watch shows per node (may lag `pods`); None: the store has no watch.
        self.pod_cache: dict[str, list[PodInfo]] | None = None
        self.unavailable = False  # every call raises StoreUnavailable while set
        # Writes of these ops ("create", "status", "delete") commit, then raise StoreUnavailable.
        self.lose_replies: set[str] = set()
        self.lost_replies: Counter[str] = Counter()
        # Called with the op name before each write, outside the lock.
        self.before_write: Callable[[str, str], None] | None = None
        self.closed = 0

    # -- helpers for tests -------------------------------------------------------------

    def next_rv(self) -> str:
        with self._lock:
            self._rv += 1
            return str(self._rv)

    def put(self, block: Block) -> Block:
        """Store `block` as if another client had written it (new resourceVersion)."""
        with self._lock:
            stored = replace(block, resource_version=self.next_rv())
            self.blocks[stored.name] = stored
            return stored

    def set_pods(self, node: str, pods: Iterable[PodInfo]) -> None:
        with self._lock:
            self.pods[node] = list(pods)

    def node_blocks(self, node: str) -> list[Block]:
        with self._lock:
            return sorted((b for b in self.blocks.values() if b.node == node), key=_order)

    # -- plumbing ----------------------------------------------------------------------

    def _check(self) -> None:
        if self.unavailable:
            raise StoreUnavailable("fake API server is unavailable")

    def _write(self, op: str, name: str) -> None:
        hook = self.before_write
        if hook is not None:
            hook(op, name)
        with self._lock:
            self._check()
            self.writes[op] += 1
        if self._metrics is not None:
            self._metrics.ipam_api_writes.labels(op).inc()

    def _answer(self, op: str, name: str) -> None:
        """Called after a write took effect: drop the reply when the test asks for it."""
        if op in self.lose_replies:
            self.lost_replies[op] += 1
            raise StoreUnavailable(
                f"fake API server: the reply to {op} of {name} was lost (the write took effect)"
            )

    def _list(self) -> None:
        with self._lock:
            self._check()
            self.lists += 1
        if self._metrics is not None:
            self._metrics.ipam_api_lists.inc()

    # -- BlockStore --------------------------------------------------------------------

    def list_node_blocks(self, node: str) -> list[Block]:
        self._list()
        return self.node_blocks(node)

    def list_blocks(self) -> list[Block]:
        self._list()
        with self._lock:
            return sorted(self.blocks.values(), key=_order)

    def get_block(self, name: str) -> Block | None:
        with self._lock:
            self._check()
            self.gets += 1
            return self.blocks.get(name)

    def create_block(self, block: Block) -> Block:
        self._write("create", block.name)
        with self._lock:
            if block.name in self.blocks:
                raise BlockTaken(block.name)
            stored = replace(block, allocated=0, allocations={}, resource_version=self.next_rv())
            self.blocks[block.name] = stored
        self._answer("create", block.name)
        return stored

    def replace_status(self, block: Block) -> Block:
        self._write("status", block.name)
        with self._lock:
            current = self.blocks.get(block.name)
            if current is None:
                raise BlockGone(block.name)
            if block.resource_version != current.resource_version:
                raise Conflict(f"{block.name}: {block.resource_version} is stale")
            stored = replace(
                current,
                allocated=len(block.allocations),
                allocations=block.allocations,
                resource_version=self.next_rv(),
            )
            self.blocks[block.name] = stored
        self._answer("status", block.name)
        return stored

    def delete_block(self, name: str, resource_version: str) -> bool:
        self._write("delete", name)
        with self._lock:
            current = self.blocks.get(name)
            if current is None:
                return False
            if resource_version != current.resource_version:
                raise Conflict(f"{name}: {resource_version} is stale")
            del self.blocks[name]
        self._answer("delete", name)
        return True

    def get_lease(self, namespace: str, name: str) -> LeaseRecord | None:
        with self._lock:
            self._check()
            self.lease_reads += 1
            return self.leases.get((namespace, name))

    def create_lease(self, lease: LeaseRecord) -> LeaseRecord:
        self._write("lease_create", lease.name)
        with self._lock:
            key = (lease.namespace, lease.name)
            if key in self.leases:
                raise Conflict(f"lease {lease.name} exists")
            stored = replace(lease, resource_version=self.next_rv())
            self.leases[key] = stored
            return stored

    def update_lease(self, lease: LeaseRecord) -> LeaseRecord:
        self._write("lease_update", lease.name)
        with self._lock:
            key = (lease.namespace, lease.name)
            current = self.leases.get(key)
            if current is None:
                raise StoreError(f"lease {lease.name} not found")
            if current.resource_version != lease.resource_version:
                raise Conflict(f"lease {lease.name} changed")
            stored = replace(lease, resource_version=self.next_rv())
            self.leases[key] = stored
            return stored

    def list_node_pods(self, node: str) -> list[PodInfo]:
        self._list()
        with self._lock:
            self.pod_lists += 1
            return list(self.pods.get(node, []))

    def cached_node_pods(self, node: str) -> list[PodInfo] | None:
        with self._lock:
            self._check()
            if self.pod_cache is None:
                return None
            return list(self.pod_cache.get(node, []))

    def list_pods(self) -> list[PodInfo]:
        self._list()
        with self._lock:
            return [pod for pods in self.pods.values() for pod in pods]

    def list_nodes(self) -> list[str]:
        self._list()
        with self._lock:
            self.node_lists += 1
            return sorted(self.nodes)

    def list_domains(self) -> list[VrfDomainSpec]:
        self._list()
        with self._lock:
            return list(self.domains)

    def close(self) -> None:
        self.closed += 1


def _order(block: Block) -> tuple[int, int]:
    return block.vrf, int(block.network.network_address)


def seeded_block(block: Block) -> Block:
    """`block` with its gateway recorded, as the actor would have written it."""
    return normalized(block)
