"""IPAMActor: this node's IPBlocks; allocates and releases pod addresses.

State is this node's blocks, read once by label in ``on_start`` and cached.  The
API server is the lock: a block is claimed by creating it (409 means another
node holds that name: try the next candidate) and every status write is
conditional on the block's resourceVersion (409 means re-read and retry,
bounded by ``settings.write_retries``).  The cache changes only from what a
successful write or a re-read returned.

A write whose outcome is unknown (StoreUnavailable: timeout, connection error,
5xx; e.g. it committed but the API server restarted before replying) makes its
block *suspect* (for a create: the name).  Before any later operation, lookup or
reconcile round, suspect blocks are re-read; until a re-read succeeds nothing that
may depend on them is answered (TEMPORARY failure), so a runtime's DEL for an ADD
that "failed" never hears "nothing held" while the API holds the address.  A 409
is a known outcome (Conflict: re-read and retry; BlockTaken: the name is held).

A write the API server has accepted can still commit after the writer stopped
waiting: after its client's timeout, or after the writing process (or the actor
instance before a restart) died.  The next write of that block notices (its
resourceVersion precondition fails), but a DEL whose key is not cached needs no
write and would be answered "nothing held" from a cache that is behind.  So for
``SETTLE_WINDOW`` seconds after the load and after every write of unknown outcome,
a DEL miss re-reads this node's blocks (one LIST per batch) before it is answered.

Allocations and releases that queue up while a write is in flight are served
together: the actor takes the consecutive AllocateAddress/ReleaseAddress
messages at the head of its inbox (up to ``max_batch``), applies them in order
to a working copy, and writes each changed block once.  No LIST happens on the
allocation path.

Housekeeping runs from a self-scheduled :class:`Reconcile` (every
``settings.reconcile_interval`` seconds, timer cancelled in ``release``):

- an address whose pod is gone is released only after ``settings.leak_grace``
  seconds and a second observation (pods of this node, one LIST per round);
- a block empty in two consecutive rounds is deleted (resourceVersion
  precondition), keeping one block per VRF;
- the node holding the Lease ``pyroute2-cni-ipam-reclaimer`` deletes the blocks of
  Nodes that are missing in two consecutive rounds.

The decisions are the library's and pure: ``ipam.planner`` plans each batch round, the
order of claims, leaks and empty blocks; ``ipam.lease`` decides the Lease election and when
the holder looks for deleted Nodes.  The actor does the reads and writes around them.

Invariants: see ``pyroute2_cni/ipam/blocks.py``, ``planner.py`` and ``lease.py``.  Keep in
sync with: ``messages/ipam.py`` (the protocol) and ``pyroute2_cni/ipam/store.py``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import queue
import threading
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import pykka

from pyroute2_cni.actors.address import Address
from pyroute2_cni.actors.base import ActorHooks, BaseActor
from pyroute2_cni.ipam.blocks import (
    GATEWAY_KEY,
    Allocation,
    Block,
    PodIndex,
    block_count,
    block_name,
    check_block_invariants,
    domain_problem,
    exhausted_reason,
    needs_repair,
    new_block,
    normalized,
)
from pyroute2_cni.ipam.lease import (
    DEFAULT_LEASE_NAMESPACE,
    LEASE_NAME,
    ForeignScan,
    LeaseElection,
    lease_duration,
)
from pyroute2_cni.ipam.planner import (
    DEFER,
    BatchRound,
    ClaimOrder,
    EmptyBlocks,
    LeakWatch,
    allocated_reply,
    unsettled_for,
)
from pyroute2_cni.ipam.store import (
    BlockGone,
    BlockStore,
    BlockTaken,
    Conflict,
    StoreError,
    StoreUnavailable,
    rfc3339,
)
from pyroute2_cni.messages.base import ErrorKind, Failure
from pyroute2_cni.messages.crd import (
    ChangeKind,
    ClusterObjectChanged,
    ClusterSnapshot,
    NamespaceChanged,
    NodeInfo,
    VrfDomainSpec,
)
from pyroute2_cni.messages.events import RecordEvent
from pyroute2_cni.messages.ipam import (
    AddressAllocated,
    AddressesReleased,
    AddressLookupResult,
    AddressReleased,
    AllocateAddress,
    AllocationConfirmed,
    BlockInfo,
    ConfirmAllocation,
    LookupAddress,
    NodeBlocksChanged,
    Reconcile,
    ReconcileResult,
    ReleaseAddress,
    ReleaseAllExcept,
    RepublishBlocks,
)
from pyroute2_cni.messages.node_state import IpamUseSeen, VrfUse
from pyroute2_cni.runtime.config import IpamSection
from pyroute2_cni.runtime.metrics import Metrics
from pyroute2_cni.values.attachment import key_network

DEFAULT_MAX_BATCH = 64
# Retry delays for the initial read of this node's blocks when the API is down:
# server.ini [ipam] load_retry_initial, load_retry_max.

# The API server's default --request-timeout: a write it accepted is committed or
# abandoned by then, so the cache cannot fall behind later than this.
SETTLE_WINDOW = 60.0

Op = AllocateAddress | ReleaseAddress


def _valid_cidr(block: Block) -> bool:
    try:
        block.network  # noqa: B018 - validates the CIDR
    except ValueError:
        return False
    return True


class IPAMActor(BaseActor):
    actor_name = "ipam"

    def __init__(
        self,
        hooks: ActorHooks,
        *,
        node: str,
        settings: IpamSection,
        store_factory: Callable[[], BlockStore],
        metrics: Metrics,
        netlink: Address | None,
        clock: Callable[[], float],
        lease_namespace: str = DEFAULT_LEASE_NAMESPACE,
        max_batch: int = DEFAULT_MAX_BATCH,
        events: Address | None = None,
        state: Address | None = None,
    ) -> None:
        super().__init__(hooks)
        self._node = node
        self._events = events
        self._state = state
        # VRFs whose last allocation found no free address, until one is free again.
        self._exhausted: set[int] = set()
        self._use_told: IpamUseSeen | None = None
        self._settings = settings
        self._store_factory = store_factory
        self._metrics = metrics
        self._netlink = netlink
        self._clock = clock
        self._lease = LeaseElection(
            node=node, namespace=lease_namespace, duration=lease_duration(settings)
        )
        self._foreign = ForeignScan(node)
        # Names known taken are tried again one reconcile interval after they were learned.
        self._claim_order = ClaimOrder(node, settings.reconcile_interval)
        self._max_batch = max(1, max_batch)
        self._store: BlockStore | None = None
        self._loaded = False
        self._load_failures = 0
        self._blocks: dict[str, Block] = {}
        self._index: dict[str, tuple[str, str]] = {}  # attachment key -> (block, address)
        self._domains: dict[int, VrfDomainSpec] = {}  # by VRF, from requests and the watcher
        self._taken: dict[str, float] = {}  # block names held by other nodes -> when learned
        # Blocks (or names of creates) whose last write had an unknown outcome, or whose
        # cached copy is known to be stale: re-read before anything is answered from them.
        self._suspect: set[str] = set()
        # Until then a DEL miss re-reads this node's blocks (see SETTLE_WINDOW).
        self._settle_until = 0.0
        self._empty = EmptyBlocks()
        self._leaks = LeakWatch(settings.leak_grace)
        self._gauge_vrfs: set[int] = set()
        self._domain_gauge_vrfs: set[int] = set()
        self._domains_synced = False
        self._published: tuple[BlockInfo, ...] | None = None
        self._timer: threading.Timer | None = None
        self._timer_lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------------

    def on_start(self) -> None:
        self._store = self._store_factory()
        self._load()
        self._schedule(self._next_delay())

    def release(self) -> None:
        with self._timer_lock:
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        store, self._store = self._store, None
        if store is not None:
            store.close()

    @property
    def store(self) -> BlockStore:
        if self._store is None:
            raise RuntimeError("IPAMActor used before on_start or after release")
        return self._store

    def _next_delay(self) -> float:
        if self._loaded:
            return self._settings.reconcile_interval
        delay = self._settings.load_retry_initial * 2.0 ** max(0, self._load_failures - 1)
        return min(delay, self._settings.load_retry_max, self._settings.reconcile_interval)

    def _schedule(self, delay: float) -> None:
        with self._timer_lock:
            if self.stopping.is_set():
                return
            if self._timer is not None:
                self._timer.cancel()
            timer = threading.Timer(delay, self._tick)
            timer.name = f"{self.hooks.name}-reconcile-timer"
            timer.daemon = True
            self._timer = timer
            timer.start()

    def _tick(self) -> None:
        if self.stopping.is_set():
            return
        with contextlib.suppress(pykka.ActorDeadError):
            self.actor_ref.tell(Reconcile())

    def _load(self) -> None:
        """Read this node's blocks (one LIST), repair incomplete ones, publish them."""
        try:
            blocks = self.store.list_node_blocks(self._node)
        except StoreError as exc:
            self._load_failures += 1
            self.set_ready(False, f"cannot read this node's IPBlocks: {exc}")
            self.log.warning(
                "node %s: cannot read IPBlocks (attempt %d): %s",
                self._node,
                self._load_failures,
                exc,
            )
            return
        self._blocks.clear()
        self._index.clear()
        self._suspect.clear()
        for block in blocks:
            if not _valid_cidr(block):
                self.log.error(
                    "node %s: ignoring IPBlock %s with bad CIDR %r",
                    self._node,
                    block.name,
                    block.cidr,
                )
                continue
            self._set_cached(block)
        for block in list(self._blocks.values()):
            if needs_repair(block):
                self._repair(block)
        for block in self._blocks.values():
            for problem in check_block_invariants(block):
                self.log.warning("node %s: %s", self._node, problem)
        self._loaded = True
        self._load_failures = 0
        self._unsettle()
        self._update_gauges()
        self._publish()
        self.set_ready(True, f"{len(self._blocks)} IPBlocks")
        self.log.info(
            "node %s: loaded %d IPBlocks holding %d addresses",
            self._node,
            len(self._blocks),
            len(self._index),
        )

    def _repair(self, block: Block) -> None:
        """Record a missing gateway and correct ALLOCATED (a crash between create and write)."""
        try:
            stored = self.store.replace_status(normalized(block, self._since()))
        except Conflict:
            self._refresh_or_suspect(block.name)
            return
        except StoreError as exc:
            if isinstance(exc, StoreUnavailable):
                self._suspect.add(block.name)
                self._unsettle()
            self.log.warning("node %s: cannot repair IPBlock %s: %s", self._node, block.name, exc)
            return
        self._set_cached(stored)

    # -- dispatch ----------------------------------------------------------------------

    def handle(self, message: Any) -> Any:
        match message:
            case AllocateAddress() | ReleaseAddress():
                return self._serve_batch(message)
            case ReleaseAllExcept(network=network, keep=keep):
                return self._release_all_except(network, keep)
            case ConfirmAllocation():
                self._confirm(message)
                return None
            case LookupAddress(key=key):
                return self._lookup(key)
            case Reconcile():
                result = self._reconcile()
                self._use_told = None  # told again: a restarted NodeStateActor learns it
                self._update_gauges()
                return result
            case RepublishBlocks():
                self._published = None
                self._publish()
                return None
            case ClusterSnapshot(domains=domains):
                # A snapshot replaces the view: domains gone while we were not told vanish.
                self._domains = {domain.vrf: domain for domain in domains}
                self._domains_synced = True
                self._foreign.expect_changes()  # Nodes may have gone while we were not told
                self._update_domain_gauges()
                return None
            case ClusterObjectChanged(kind=kind, obj=obj):
                if isinstance(obj, NodeInfo) and kind is ChangeKind.DELETED:
                    self._foreign.expect_changes()
                if isinstance(obj, VrfDomainSpec):
                    if kind is ChangeKind.DELETED:
                        self._domains.pop(obj.vrf, None)
                    else:
                        self._domains[obj.vrf] = obj
                    self._update_domain_gauges()
                return None
            case NamespaceChanged():
                return None  # the watcher tells every subscriber; IPAM needs no namespaces
            case _:
                return self.unknown(message)

    # -- batching ----------------------------------------------------------------------

    def _take_queued_ops(self, limit: int) -> list[Any]:
        """Envelopes of the AllocateAddress/ReleaseAddress messages at the head of the inbox.

        Only this thread consumes the inbox and senders only append, so the head
        we peek at is the envelope get_nowait() returns.  Stops at the first other
        message, so order is kept.
        """
        inbox = self.actor_inbox
        if not isinstance(inbox, queue.Queue):
            return []
        taken: list[Any] = []
        while len(taken) < limit:
            with inbox.mutex:
                head = inbox.queue[0] if inbox.queue else None
            if not isinstance(getattr(head, "message", None), AllocateAddress | ReleaseAddress):
                break
            taken.append(inbox.get_nowait())
        return taken

    def _serve_batch(self, first: Op) -> Any:
        extra = self._take_queued_ops(self._max_batch - 1)
        ops: list[Op] = [first, *(envelope.message for envelope in extra)]
        try:
            replies = self._run_ops(ops)
        except BaseException:
            for envelope in extra:
                if envelope.reply_to is not None:
                    envelope.reply_to.set_exception()
            raise
        for envelope, reply in zip(extra, replies[1:], strict=True):
            if envelope.reply_to is not None:
                envelope.reply_to.set(reply)
        return replies[0]

    # -- allocation and release --------------------------------------------------------

    def _since(self) -> str:
        return rfc3339(datetime.now(UTC))

    def _invalid(self, op: Op) -> Failure | None:
        if isinstance(op, ReleaseAddress):
            return None
        if not op.key or op.key == GATEWAY_KEY:
            return Failure(reason=f"invalid attachment key {op.key!r}", kind=ErrorKind.INVALID)
        problem = domain_problem(op.domain)
        if problem is not None:
            return Failure(reason=problem, kind=ErrorKind.INVALID)
        return None

    def _run_ops(self, ops: Sequence[Op]) -> list[Any]:
        """Apply allocations and releases in order; one conditional write per changed block."""
        replies: list[Any] = [None] * len(ops)
        attempts = [0] * len(ops)
        pending: list[int] = []
        for i, op in enumerate(ops):
            failure = self._invalid(op)
            if failure is not None:
                replies[i] = failure
            else:
                pending.append(i)
        if pending and not self._loaded:
            for i in pending:
                replies[i] = Failure(
                    reason="IPAM has not read this node's IPBlocks yet (API unreachable?)",
                    kind=ErrorKind.TEMPORARY,
                )
            pending = []
        misses = [i for i in pending if self._release_miss(ops[i])]
        if misses:
            self._settle_suspects()  # while blocks stay suspect, misses wait anyway
        if misses and not self._suspect and self._clock() < self._settle_until:
            failure = self._reread_node_blocks()
            if failure is not None:
                for i in misses:
                    replies[i] = failure
                pending = [i for i in pending if i not in misses]
        while pending:
            # Writes of the previous round may have left blocks suspect.
            self._settle_suspects()
            plan = BatchRound(self._blocks, self._index, self._suspect)
            groups: dict[str, list[tuple[int, Any]]] = defaultdict(list)
            deferred: list[int] = []
            for i in pending:
                op = ops[i]
                if isinstance(op, AllocateAddress):
                    target, reply = plan.allocate(op, since=self._since, claim=self._claim)
                else:
                    target, reply = plan.release(op, since=self._since)
                if reply is DEFER:
                    deferred.append(i)
                elif target is None:
                    replies[i] = reply
                else:
                    groups[target].append((i, reply))
            retry: list[int] = []
            for name, items in groups.items():
                outcome = self._write(plan.work[name])
                if outcome is None:
                    for i, reply in items:
                        replies[i] = reply
                    continue
                for i, _ in items:
                    attempts[i] += 1
                    if isinstance(outcome, Failure):
                        replies[i] = outcome
                    elif attempts[i] > self._settings.write_retries:
                        replies[i] = Failure(
                            reason=f"IPBlock {name} kept changing: gave up after "
                            f"{attempts[i]} conflicting writes",
                            kind=ErrorKind.CONFLICT,
                        )
                    else:
                        retry.append(i)
            pending = sorted(retry + deferred)
        learned = False
        for op, reply in zip(ops, replies, strict=True):
            # The domain a request names is learned only once the allocation stands.
            if isinstance(op, AllocateAddress) and isinstance(reply, AddressAllocated):
                learned |= self._domains.get(op.domain.vrf) != op.domain
                self._domains[op.domain.vrf] = op.domain
        if learned:
            self._update_domain_gauges()  # not on every allocation: domains rarely change
        if self._loaded:
            self._after_change()
        return replies

    def _release_miss(self, op: Op) -> bool:
        return isinstance(op, ReleaseAddress) and op.key not in self._index

    def _unsettle(self) -> None:
        """Writes may still commit unseen for a while (see SETTLE_WINDOW)."""
        self._settle_until = max(self._settle_until, self._clock() + SETTLE_WINDOW)

    def _reread_node_blocks(self) -> Failure | None:
        """Bring the cache up to what the API holds for this node (one LIST)."""
        try:
            listed = self.store.list_node_blocks(self._node)
        except StoreError as exc:
            return Failure(
                reason="a write of this node's IPBlocks may still commit (a restart or a "
                f"lost reply moments ago) and re-reading them failed: {exc}; retry the DEL",
                kind=ErrorKind.TEMPORARY,
            )
        fresh = {block.name: block for block in listed if _valid_cidr(block)}
        for name in [n for n in self._blocks if n not in fresh]:
            self._drop_cached(name)
        for name, block in fresh.items():
            cached = self._blocks.get(name)
            if cached is None or cached.resource_version != block.resource_version:
                if cached is None:
                    self.log.info("node %s: adopted IPBlock %s (%s)", self._node, name, block.cidr)
                self._set_cached(block)
            self._suspect.discard(name)
        self._after_change()
        return None

    def _write(self, block: Block) -> Failure | Conflict | None:
        """Write one block's status: None on success, Conflict to retry, or a Failure."""
        try:
            stored = self.store.replace_status(block)
        except Conflict as exc:
            self.log.info("node %s: %s; re-reading", self._node, exc)
            try:
                self._refresh(block.name)
            except StoreError as err:
                self._suspect.add(block.name)  # the cached copy is known to be stale
                return self._store_failure(f"cannot re-read IPBlock {block.name}", err)
            return exc
        except BlockGone:
            self.log.warning("node %s: IPBlock %s disappeared", self._node, block.name)
            self._drop_cached(block.name)
            return Conflict(block.name)
        except StoreError as exc:
            if isinstance(exc, StoreUnavailable):
                # It may have committed: the cache must not answer for this block until
                # a re-read says what the API holds, nor DEL misses for a while.
                self._suspect.add(block.name)
                self._unsettle()
                self.log.warning(
                    "node %s: IPBlock %s: outcome of the status write unknown: %s",
                    self._node,
                    block.name,
                    exc,
                )
            return self._store_failure(f"cannot update IPBlock {block.name}", exc)
        self._set_cached(stored)
        return None

    @staticmethod
    def _store_failure(what: str, exc: StoreError) -> Failure:
        kind = ErrorKind.TEMPORARY if isinstance(exc, StoreUnavailable) else ErrorKind.PERMANENT
        return Failure(reason=f"{what}: {exc}", kind=kind)

    def _refresh(self, name: str) -> None:
        """Re-read one block into the cache (adopting it when it is ours but not cached)."""
        fresh = self.store.get_block(name)
        self._suspect.discard(name)
        if fresh is None or fresh.node != self._node:
            if fresh is not None and name in self._blocks:
                self.log.error(
                    "node %s: IPBlock %s now belongs to %s; forgetting it",
                    self._node,
                    name,
                    fresh.node,
                )
            elif fresh is not None:  # a create of ours that did not commit; theirs did
                self._taken[name] = self._clock()
            self._drop_cached(name)
        else:
            if name not in self._blocks:
                self.log.info("node %s: adopted IPBlock %s (%s)", self._node, name, fresh.cidr)
            self._set_cached(fresh)

    def _refresh_or_suspect(self, name: str) -> None:
        try:
            self._refresh(name)
        except StoreError as exc:
            self._suspect.add(name)
            self.log.warning("node %s: cannot re-read IPBlock %s: %s", self._node, name, exc)

    def _settle_suspects(self) -> None:
        """Re-read the suspect blocks; stop at the first failure (the API is still away).

        A GET per suspect block rather than a LIST of the node's blocks: suspects
        are the few blocks of one failed batch, and a GET is what tells us exactly
        what the API holds for each of them.
        """
        if not self._suspect:
            return
        changed = False
        for name in sorted(self._suspect):
            try:
                self._refresh(name)
            except StoreError as exc:
                self.log.info("node %s: IPBlock %s still not re-read: %s", self._node, name, exc)
                break
            changed = True
        if changed:
            self._after_change()

    def _claim(self, domain: VrfDomainSpec) -> Block | Failure:
        """Create the next free block of the domain (planner.ClaimOrder's order);
        409 means taken: try the next name."""
        try:
            return self._claim_next(domain)
        except StoreError as exc:
            return self._store_failure(f"cannot claim an IPBlock in {domain.name}", exc)

    def _claim_next(self, domain: VrfDomainSpec) -> Block | Failure:
        now = self._clock()
        for network in self._claim_order.candidates(domain, self._blocks, self._taken, now):
            claimed = self._try_create(domain, network, now)
            if claimed is not None:
                return claimed
        self.log.warning("node %s: %s", self._node, exhausted_reason(domain))
        self._metrics.ipam_exhausted.labels(str(domain.vrf)).inc()
        self._exhausted.add(domain.vrf)
        self._update_gauges()
        if self._events is not None:
            self._events.tell(
                RecordEvent(
                    kind="VRFDomain",
                    name=domain.name,
                    reason="PoolExhausted",
                    message=(
                        f"node {self._node}: {exhausted_reason(domain)}; delete pods that are"
                        " done, or bind the namespace to a VRFDomain with a larger prefix"
                    ),
                )
            )
        return Failure(reason=exhausted_reason(domain), kind=ErrorKind.PERMANENT)

    def _try_create(
        self, domain: VrfDomainSpec, network: ipaddress.IPv4Network, now: float
    ) -> Block | None:
        """Claim one block: the block, or None when it is taken (remembered) or full."""
        name = block_name(domain.vrf, network)
        try:
            created = self.store.create_block(new_block(domain.vrf, network, self._node))
        except StoreUnavailable:
            # It may exist now, ours and uncached: re-read before the next operation so
            # it is adopted (used, published, returned when empty) rather than leaked.
            self._suspect.add(name)
            self._unsettle()
            raise
        except BlockTaken:
            existing = self.store.get_block(name)
            if existing is None:
                return None  # deleted meanwhile; a later claim may try it again
            if existing.node == self._node:
                # Ours already (an earlier create whose answer was lost): adopt it.
                self._taken.pop(name, None)
                self._set_cached(existing)
                return existing if normalized(existing).free_count > 0 else None
            self._taken[name] = now
            return None
        self._taken.pop(name, None)
        self.log.info(
            "node %s: claimed IPBlock %s (%s) for VRFDomain %s",
            self._node,
            created.name,
            created.cidr,
            domain.name,
        )
        self._set_cached(created)
        return created

    # -- cache -------------------------------------------------------------------------

    def _set_cached(self, block: Block) -> None:
        self._unindex(block.name)
        self._blocks[block.name] = block
        for key, address in block.key_addresses():
            other = self._index.get(key)
            if other is not None and other[0] != block.name:
                self.log.error(
                    "node %s: attachment %s holds %s in %s and %s in %s",
                    self._node,
                    key,
                    other[1],
                    other[0],
                    address,
                    block.name,
                )
            self._index[key] = (block.name, address)

    def _unindex(self, name: str) -> None:
        old = self._blocks.get(name)
        if old is None:
            return
        for key, address in old.key_addresses():
            if self._index.get(key) == (name, address):
                del self._index[key]

    def _drop_cached(self, name: str) -> None:
        self._unindex(name)
        self._blocks.pop(name, None)
        self._empty.forget(name)

    def _after_change(self) -> None:
        self._update_gauges()
        self._publish()

    def _update_gauges(self) -> None:
        blocks: Counter[int] = Counter()
        addresses: Counter[int] = Counter()
        free: Counter[int] = Counter()
        for block in self._blocks.values():
            blocks[block.vrf] += 1
            addresses[block.vrf] += block.pod_count
            free[block.vrf] += block.free_count
        for vrf in self._gauge_vrfs | set(blocks):
            self._metrics.ipam_blocks.labels(str(vrf)).set(blocks[vrf])
            self._metrics.ipam_addresses.labels(str(vrf)).set(addresses[vrf])
            self._metrics.ipam_free_addresses.labels(str(vrf)).set(free[vrf])
        self._gauge_vrfs |= set(blocks)
        self._exhausted = {v for v in self._exhausted if not free[v] and v in self._domains}
        self._tell_use(blocks, addresses, free)

    def _tell_use(self, blocks: Counter[int], addresses: Counter[int], free: Counter[int]) -> None:
        if self._state is None:
            return
        use = IpamUseSeen(
            vrfs=tuple(
                VrfUse(
                    vrf=vrf,
                    domain=domain.name if (domain := self._domains.get(vrf)) else "",
                    blocks=blocks[vrf],
                    addresses=addresses[vrf],
                    free=free[vrf],
                    exhausted=vrf in self._exhausted,
                )
                for vrf in sorted(set(blocks) | self._exhausted)
            )
        )
        if use != self._use_told:
            self._use_told = use
            self._state.tell(use)

    def _update_domain_gauges(self) -> None:
        """Each domain's pool size, so alerts can sum the nodes' blocks against it."""
        for vrf in self._domain_gauge_vrfs - set(self._domains):
            self._metrics.ipam_domain_blocks.remove(str(vrf))
        for vrf, domain in self._domains.items():
            self._metrics.ipam_domain_blocks.labels(str(vrf)).set(block_count(domain))
        self._domain_gauge_vrfs = set(self._domains)
        self._update_gauges()  # a deleted domain's pool is no longer exhausted

    def _publish(self) -> None:
        infos = tuple(
            BlockInfo(vrf=b.vrf, cidr=b.cidr, gateway=b.gateway)
            for b in sorted(self._blocks.values(), key=lambda b: (b.vrf, b.network))
        )
        if infos == self._published:
            return
        self._published = infos
        if self._netlink is not None:
            self._netlink.tell(NodeBlocksChanged(blocks=infos))

    # -- other commands ----------------------------------------------------------------

    def _lookup(self, key: str) -> AddressLookupResult | Failure:
        self._settle_suspects()
        held = self._index.get(key)
        unsettled = unsettled_for(key, held, self._suspect)
        if unsettled is not None:
            return unsettled
        if held is None:
            return AddressLookupResult(allocation=None)
        name, address = held
        block = self._blocks[name]
        domain = self._domains.get(block.vrf)
        if domain is None:
            return Failure(
                reason=f"{key} holds {address} in VRF {block.vrf}, whose VRFDomain "
                "is not known yet",
                kind=ErrorKind.TEMPORARY,
            )
        return AddressLookupResult(allocation=allocated_reply(key, block, address, domain))

    def _confirm(self, msg: ConfirmAllocation) -> None:
        held = self._index.get(msg.key)
        msg.reply_to.tell(
            AllocationConfirmed(
                key=msg.key,
                address=msg.address,
                held=(held is not None and held[1] == msg.address) if self._loaded else None,
            )
        )

    def _release_all_except(
        self, network: str, keep: frozenset[str]
    ) -> AddressesReleased | Failure:
        # Only GC's own network: another network's GC must not touch ours (CNI spec: an
        # attachment is network name + container id + ifname).
        keys = sorted(k for k in self._index if k not in keep and key_network(k) == network)
        released: list[str] = []
        failures: list[tuple[str, Failure]] = []
        for start in range(0, len(keys), self._max_batch):
            chunk = keys[start : start + self._max_batch]
            replies = self._run_ops([ReleaseAddress(key=k) for k in chunk])
            for key, reply in zip(chunk, replies, strict=True):
                if isinstance(reply, Failure):
                    failures.append((key, reply))
                else:
                    released.append(key)
        if released:
            self.log.info("node %s: GC released %d attachments", self._node, len(released))
        if failures:
            first = failures[0][1]
            return Failure(
                reason=f"GC could not release {len(failures)} of {len(keys)} attachments: "
                + first.reason,
                kind=first.kind,
                details=", ".join(k for k, _ in failures),
            )
        return AddressesReleased(keys=tuple(released))

    # -- housekeeping ------------------------------------------------------------------

    def _reconcile(self) -> ReconcileResult:
        try:
            if not self._loaded:
                self._load()
                if not self._loaded:
                    return ReconcileResult(loaded=False, errors=(self._ready_detail,))
            self._settle_suspects()
            errors: list[str] = [
                f"IPBlock {name}: outcome of the last write unknown, not re-read yet"
                for name in sorted(self._suspect)
            ]
            reclaimed = self._reclaim_leaks(errors)
            returned = self._return_empty_blocks(errors)
            lease_held, foreign = self._reclaim_foreign_blocks(errors)
            if returned:
                self._after_change()
            return ReconcileResult(
                loaded=True,
                reclaimed=tuple(reclaimed),
                returned_blocks=tuple(returned),
                lease_held=lease_held,
                foreign_blocks_reclaimed=tuple(foreign),
                errors=tuple(errors),
            )
        finally:
            self._schedule(self._next_delay())

    def _reclaim_leaks(self, errors: list[str]) -> list[str]:
        """Release addresses whose pod is gone: after the grace period and a second look."""
        # The node's pods as a watch keeps them (no LIST), else a LIST; a leak the cache
        # finds is confirmed by a LIST before anything is released.
        try:
            cached = self.store.cached_node_pods(self._node)
            pods = PodIndex(cached if cached is not None else self.store.list_node_pods(self._node))
        except StoreError as exc:
            errors.append(f"cannot list pods: {exc}")
            return []
        leaked = self._leaks.observe(self._blocks.values(), pods, self._clock())
        if leaked and cached is not None:
            leaked = self._confirm_leaks(leaked, errors)
        if not leaked:
            return []
        keys = sorted(leaked)
        replies = self._run_ops([ReleaseAddress(key=k) for k in keys])
        reclaimed: list[str] = []
        for key, reply in zip(keys, replies, strict=True):
            record = leaked[key]
            if isinstance(reply, AddressReleased) and reply.address is not None:
                reclaimed.append(key)
                self.log.warning(
                    "node %s: reclaimed leaked %s of attachment %s (pod %s uid %s gone)",
                    self._node,
                    reply.address,
                    key,
                    record.pod_label,
                    record.uid or "-",
                )
            elif isinstance(reply, Failure):
                errors.append(f"cannot reclaim {key}: {reply.reason}")
        self._leaks.released(reclaimed)
        return reclaimed

    def _confirm_leaks(
        self, leaked: dict[str, Allocation], errors: list[str]
    ) -> dict[str, Allocation]:
        """The leaks a LIST of the node's pods confirms; the others start counting again
        (the watch had not shown their pod yet)."""
        try:
            pods = PodIndex(self.store.list_node_pods(self._node))
        except StoreError as exc:
            errors.append(f"cannot list pods: {exc}")
            return {}
        confirmed = {k: r for k, r in leaked.items() if pods.holder_exists(r) is False}
        if len(confirmed) < len(leaked):
            self._leaks.unconfirmed(leaked, confirmed)
        return confirmed

    def _return_empty_blocks(self, errors: list[str]) -> list[str]:
        """Delete blocks empty in two consecutive rounds, keeping one block per VRF."""
        returned: list[str] = []
        # The last block of a VRF stays for the next pod, unless its domain is gone.
        known = self._domains if self._domains_synced else None
        for block in self._empty.ripe(self._blocks, known):
            if block.name in self._suspect:
                continue  # its content is not known; the precondition would tell anyway
            try:
                self.store.delete_block(block.name, block.resource_version)
            except Conflict:
                try:
                    self._refresh(block.name)
                except StoreError as exc:
                    self._suspect.add(block.name)
                    errors.append(f"cannot re-read IPBlock {block.name}: {exc}")
                continue
            except StoreError as exc:
                if isinstance(exc, StoreUnavailable):
                    self._suspect.add(block.name)  # it may be gone: re-read next time
                errors.append(f"cannot return IPBlock {block.name}: {exc}")
                continue
            self.log.info(
                "node %s: returned empty IPBlock %s (%s)", self._node, block.name, block.cidr
            )
            self._drop_cached(block.name)
            returned.append(block.name)
        return returned

    def _hold_lease(self) -> bool:
        """Acquire or renew the reclaimer Lease; True while this node holds it."""
        now = self._clock()
        if not self._lease.should_read(now):
            return False
        lease = self.store.get_lease(self._lease.namespace, LEASE_NAME)
        wanted = self._lease.claim(lease, now)
        if wanted is None:
            return False
        try:
            if lease is None:
                written = self.store.create_lease(wanted)
            else:
                written = self.store.update_lease(wanted)
        except Conflict:
            return False
        if lease is None:
            self.log.info("node %s: acquired the IPAM reclaimer Lease", self._node)
        elif lease.holder != self._node:
            self.log.warning(
                "node %s: took over the IPAM reclaimer Lease from %s",
                self._node,
                lease.holder or "nobody",
            )
        self._lease.held(written, now)
        return True

    def _reclaim_foreign_blocks(self, errors: list[str]) -> tuple[bool, list[str]]:
        """On the Lease holder: delete blocks of Nodes missing in two consecutive rounds."""
        try:
            held = self._hold_lease()
        except StoreError as exc:
            errors.append(f"cannot read or renew the reclaimer Lease: {exc}")
            held = False
        if not held:
            self._foreign.lease_lost()
            return False, []
        now = self._clock()
        if not self._foreign.wanted(now):
            return True, []
        try:
            nodes = set(self.store.list_nodes())
            blocks = self.store.list_blocks()
        except StoreError as exc:
            errors.append(f"cannot list nodes or IPBlocks: {exc}")
            return True, []
        reclaimed: list[str] = []
        for block in self._foreign.observe(blocks, nodes, now):
            try:
                deleted = self.store.delete_block(block.name, block.resource_version)
            except Conflict:
                continue  # changed under us: look again next round
            except StoreError as exc:
                errors.append(f"cannot reclaim IPBlock {block.name}: {exc}")
                continue
            self._foreign.deleted(block.name)
            if deleted:
                self.log.warning(
                    "node %s: reclaimed IPBlock %s (%s) of deleted node %s (%d addresses)",
                    self._node,
                    block.name,
                    block.cidr,
                    block.node,
                    block.pod_count,
                )
                reclaimed.append(block.name)
        return True, reclaimed
