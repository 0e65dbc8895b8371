"""The IPAM planner: which block serves a request, which names to claim, what to give back.

The IPAMActor serves a batch of AllocateAddress/ReleaseAddress in rounds; a
:class:`BatchRound` plans one round on a working copy (the blocks each op changes, the
attachment index) without writing anything: the actor writes each changed block once and
replies from the plan.  Beside it: the order in which block names are claimed
(:class:`ClaimOrder`), and the housekeeping decisions, leaked addresses
(:class:`LeakWatch`) and empty blocks to return (:class:`EmptyBlocks`).

Pure: no I/O; the clock and the timestamps are passed in.  A claim is the one step that
needs the API: the round calls the actor's ``claim`` back.

Invariants (with those of ``blocks``):

- An attachment holds at most one address: an allocation for a key already held answers
  what it holds; an op for a key another op of the round moved to another block waits for
  the next round (``DEFER``).
- A key that may sit in a suspect block (a write of unknown outcome) is not answered for:
  neither "holds X" nor "holds nothing" (:func:`unsettled_for`).
- A new block is claimed only when no block of this node in the domain has room, and in a
  round at most once per VRF fails (the failure answers the rest of the round).
- An address is reclaimed only after two looks and the grace period; a block is returned
  only when empty in two consecutive rounds, and the last block of a domain stays.

Keep in sync with: actors/ipam_actor.py (the I/O around these decisions),
pyroute2_cni/ipam/blocks.py (block arithmetic), messages/ipam.py.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Callable, Collection, Container, Iterable, Iterator, Mapping, Set
from dataclasses import dataclass

from pyroute2_cni.ipam.blocks import (
    Allocation,
    Block,
    PodIndex,
    block_count,
    block_in_domain,
    block_name,
    candidate_networks,
    normalized,
    pick_free,
    pod_prefixlen,
    start_offset,
    with_allocation,
    without_addresses,
)
from pyroute2_cni.messages.base import ErrorKind, Failure
from pyroute2_cni.messages.crd import VrfDomainSpec
from pyroute2_cni.messages.ipam import (
    AddressAllocated,
    AddressReleased,
    AllocateAddress,
    ReleaseAddress,
)

# Block names known to be held by other nodes that one claim may try again.
REPROBE_LIMIT = 8


class Deferred:
    """Planning marker: run this op in the next round (its key changed in another block)."""


DEFER = Deferred()

Held = tuple[str, str]  # (block name, address) an attachment key holds
Planned = tuple[str | None, AddressAllocated | AddressReleased | Failure | Deferred]


def unknown_failure(name: str, key: str) -> Failure:
    return Failure(
        reason=f"IPBlock {name} may hold attachment {key}, but the outcome of its last "
        "write is unknown and it could not be re-read: retry once the API server answers",
        kind=ErrorKind.TEMPORARY,
    )


def unsettled_for(key: str, held: Held | None, suspect: Set[str]) -> Failure | None:
    """A failure when `key` cannot be answered for while blocks are suspect.

    A key held in a settled block is answered from it.  A key not in the cache may sit in
    a suspect block (a write that committed without a reply), so it waits for the
    re-read.  With nothing suspect, a key not in the cache is not held: only the node's
    IPAMActor writes its blocks, every write it made either succeeded (cached),
    conflicted (re-read) or was marked suspect, and any other change is caught by the
    resourceVersion precondition of the next write.  So an ordinary DEL miss costs no API
    request (within SETTLE_WINDOW of a load or an unknown outcome, the actor has re-read
    the node's blocks first).
    """
    if held is not None:
        return unknown_failure(held[0], key) if held[0] in suspect else None
    if suspect:
        return unknown_failure(", ".join(sorted(suspect)), key)
    return None


def allocated_reply(
    key: str, block: Block, address: str, domain: VrfDomainSpec
) -> AddressAllocated:
    return AddressAllocated(
        key=key,
        vrf=block.vrf,
        address=address,
        prefixlen=pod_prefixlen(domain),
        gateway=block.gateway,
        block=block.cidr,
        attachment=domain.pod_attachment().type,
    )


# Block names known to be held by other nodes -> when that was learned (the clock's time).
Taken = Mapping[str, float]


@dataclass(frozen=True, slots=True)
class ClaimOrder:
    """The order in which `node` tries to claim a new block of a domain.

    Walks from a node-dependent offset and skips names already known to be taken, so
    nodes rarely collide and never LIST the cluster's blocks.  When every name is known
    to be taken, up to ``REPROBE_LIMIT`` of the names learned longest ago (at least
    `reprobe_after` seconds ago) follow (other nodes return empty blocks), so a request
    in an exhausted domain costs a bounded number of API calls.
    """

    node: str
    reprobe_after: float

    def candidates(
        self, domain: VrfDomainSpec, blocks: Mapping[str, Block], taken: Taken, now: float
    ) -> Iterator[ipaddress.IPv4Network]:
        """The networks to try, in order.  Lazy: `blocks` and `taken` are read as the walk
        reaches each name (a claim changes them for the name it tried)."""
        count = block_count(domain)
        # Blocks of another length (the domain's ipblocklen changed) must not be overlapped.
        odd = [
            b.network
            for b in blocks.values()
            if b.vrf == domain.vrf and b.network.prefixlen != domain.ipblocklen
        ]
        start = start_offset(self.node, domain.vrf, count)
        known: list[tuple[float, str, ipaddress.IPv4Network]] = []
        for network in candidate_networks(domain, start):
            name = block_name(domain.vrf, network)
            if name in blocks or any(network.overlaps(other) for other in odd):
                continue
            learned = taken.get(name)
            if learned is not None:
                known.append((learned, name, network))
                continue
            yield network
        stale = [k for k in known if now - k[0] >= self.reprobe_after]
        for _, _, network in sorted(stale, key=lambda k: k[0])[:REPROBE_LIMIT]:
            yield network


class BatchRound:
    """One round of a batch, planned on a working copy of the node's blocks.

    ``work``: the blocks the round changed (each written once); ``index``: attachment key
    -> (block, address) as the round leaves it; ``touched``: the block each key changed
    in.  `blocks` and `suspect` are the actor's, read live: a claim adds to them.
    """

    def __init__(
        self,
        blocks: Mapping[str, Block],
        index: Mapping[str, Held],
        suspect: Set[str],
    ) -> None:
        self._blocks = blocks
        self._suspect = suspect
        self.work: dict[str, Block] = {}
        self.index: dict[str, Held] = dict(index)
        self.touched: dict[str, str] = {}
        self.failed_vrfs: dict[int, Failure] = {}

    def current(self, name: str) -> Block:
        block = self.work.get(name)
        return block if block is not None else self._blocks[name]

    def block_with_room(self, domain: VrfDomainSpec) -> Block | None:
        """This node's lowest block of the domain with a free address."""
        best: Block | None = None
        for name in self._blocks:
            block = self.current(name)
            if block.free_count <= 0 or not block_in_domain(block, domain):
                continue
            if best is None or block.network < best.network:
                best = block
        return best

    def allocate(
        self,
        op: AllocateAddress,
        *,
        since: Callable[[], str],
        claim: Callable[[VrfDomainSpec], Block | Failure],
    ) -> Planned:
        """The block to write (None: nothing to write) and the reply once it is written.

        `claim` creates a new block with room for the domain (or says why not); `since`
        is the timestamp of a new allocation.
        """
        domain = op.domain
        held = self.index.get(op.key)
        unsettled = unsettled_for(op.key, held, self._suspect)
        if unsettled is not None:
            return None, unsettled
        if held is not None:
            held_name, held_address = held
            held_block = self.current(held_name)
            if held_block.vrf != domain.vrf:
                return None, Failure(
                    reason=f"attachment {op.key} already holds {held_address} "
                    f"in VRF {held_block.vrf}",
                    kind=ErrorKind.INVALID,
                )
            reply = allocated_reply(op.key, held_block, held_address, domain)
            return (held_name if held_name in self.work else None), reply
        block = self.block_with_room(domain)
        if block is None:
            if domain.vrf in self.failed_vrfs:
                return None, self.failed_vrfs[domain.vrf]
            claimed = claim(domain)
            if isinstance(claimed, Failure):
                self.failed_vrfs[domain.vrf] = claimed
                return None, claimed
            block = claimed
        if op.key in self.touched and self.touched[op.key] != block.name:
            return None, DEFER
        address = pick_free(block)
        if address is None:  # block_with_room and claims only return blocks with room
            raise AssertionError(f"{block.name} has no free address")
        record = Allocation(
            key=op.key,
            namespace=op.pod.namespace,
            pod=op.pod.name,
            uid=op.pod.uid,
            since=since(),
        )
        updated = with_allocation(block, address, record, since=record.since)
        self.work[updated.name] = updated
        self.index[op.key] = (updated.name, address)
        self.touched[op.key] = updated.name
        return updated.name, allocated_reply(op.key, updated, address, domain)

    def release(self, op: ReleaseAddress, *, since: Callable[[], str]) -> Planned:
        held = self.index.get(op.key)
        unsettled = unsettled_for(op.key, held, self._suspect)
        if unsettled is not None:
            return None, unsettled
        if held is None:
            return None, AddressReleased(key=op.key, address=None)
        name, address = held
        if op.key in self.touched and self.touched[op.key] != name:
            return None, DEFER
        block = normalized(self.current(name), since())
        self.work[name] = without_addresses(block, [address])
        del self.index[op.key]
        self.touched[op.key] = name
        return name, AddressReleased(key=op.key, address=address)


@dataclass(slots=True)
class _Missing:
    """An allocation whose pod was not found: when first seen and how often since."""

    first: float
    count: int = 1


Mark = tuple[str, str, str]  # (block name, address, attachment key)


class LeakWatch:
    """Allocations whose pod is gone: leaked once seen missing twice, `grace` apart."""

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self.missing: dict[Mark, _Missing] = {}

    def observe(self, blocks: Iterable[Block], pods: PodIndex, now: float) -> dict[str, Allocation]:
        """One look at the node's pods: the leaked allocations, by attachment key."""
        observed: dict[Mark, _Missing] = {}
        leaked: dict[str, Allocation] = {}
        for block in blocks:
            for address, record in block.allocations.items():
                if pods.holder_exists(record) is not False:
                    continue
                mark = (block.name, address, record.key)
                seen = self.missing.get(mark)
                if seen is None:
                    seen = _Missing(first=now)
                else:
                    seen.count += 1
                observed[mark] = seen
                if seen.count >= 2 and now - seen.first >= self.grace:
                    leaked[record.key] = record
        self.missing = observed
        return leaked

    def unconfirmed(self, leaked: Collection[str], confirmed: Container[str]) -> None:
        """Leaks a LIST did not confirm (the watch had not shown their pod yet) start
        counting again."""
        self.missing = {
            m: s for m, s in self.missing.items() if m[2] in confirmed or m[2] not in leaked
        }

    def released(self, keys: Container[str]) -> None:
        self.missing = {m: s for m, s in self.missing.items() if m[2] not in keys}


class EmptyBlocks:
    """Blocks empty in two consecutive rounds go back, keeping one block per VRF."""

    def __init__(self) -> None:
        self.seen: dict[str, int] = {}  # block name -> consecutive rounds found empty

    def forget(self, name: str) -> None:
        self.seen.pop(name, None)

    def ripe(self, blocks: Mapping[str, Block], domain_vrfs: Container[int] | None) -> list[Block]:
        """One round: the blocks to return now (each VRF's by network).  `domain_vrfs`:
        the VRFs of the known domains (None until known): a gone domain keeps no block."""
        by_vrf: dict[int, list[Block]] = defaultdict(list)
        for block in blocks.values():
            by_vrf[block.vrf].append(block)
        self.seen = {n: c for n, c in self.seen.items() if n in blocks}
        returned: list[Block] = []
        for vrf, group in by_vrf.items():
            domain_gone = domain_vrfs is not None and vrf not in domain_vrfs
            for block in group:
                if block.pod_count == 0:
                    self.seen[block.name] = self.seen.get(block.name, 0) + 1
                else:
                    self.seen.pop(block.name, None)
            ripe = [b for b in group if self.seen.get(b.name, 0) >= 2]
            if not ripe:
                continue
            if all(b.pod_count == 0 for b in group) and not domain_gone:
                # Keep one: preferably one not ripe yet (most recently used), else the lowest.
                unripe = [b for b in group if b not in ripe]
                keep = min(unripe or ripe, key=lambda b: b.network)
                ripe = [b for b in ripe if b.name != keep.name]
            returned.extend(sorted(ripe, key=lambda b: b.network))
        return returned
