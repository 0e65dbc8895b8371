"""The reclaimer: who holds the Lease, and when the holder looks for deleted Nodes' blocks.

One node at a time deletes the IPBlocks of Nodes that are gone: the one holding the Lease
``pyroute2-cni-ipam-reclaimer``.  This module decides; the IPAMActor reads and writes the
Lease and the blocks through its store and tells these objects what it read.  Pure: no
I/O, the clock is passed in (seconds, monotonic, the node's own).

Invariants:

- Another holder's Lease is taken over only after this node has seen it unchanged (holder
  and resourceVersion) for a whole lease duration on its own clock: no clock-skew
  assumptions, the Lease's renewTime is never compared with ours.
- While another node holds it, it is read once per lease duration, not every round.
- A block is deleted only when its Node was missing in two consecutive looks of the same
  holder; losing the Lease forgets what was seen.

Keep in sync with: actors/ipam_actor.py (``_hold_lease``, ``_reclaim_foreign_blocks``),
pyroute2_cni/ipam/store.py (which reads and writes the ``LeaseRecord``).
"""

from __future__ import annotations

from collections.abc import Iterable, Set
from dataclasses import dataclass, replace

from pyroute2_cni.ipam.blocks import Block
from pyroute2_cni.runtime.config import IpamSection

LEASE_NAME = "pyroute2-cni-ipam-reclaimer"
DEFAULT_LEASE_NAMESPACE = "pyroute2-cni"

# The holder looks for IPBlocks of deleted Nodes when the watcher reports a Node deleted,
# and at least this often (seconds) in case such news was missed: two cluster-wide LISTs
# per round on one node were what kept the cluster from 0 LISTs.
FOREIGN_SCAN_INTERVAL = 3600.0


@dataclass(frozen=True, slots=True, kw_only=True)
class LeaseRecord:
    """A coordination.k8s.io/v1 Lease as the reclaimer election needs it."""

    namespace: str
    name: str
    holder: str
    duration_seconds: int
    transitions: int = 0
    resource_version: str = ""


def lease_duration(settings: IpamSection) -> int:
    """Seconds without renewal after which another node takes the reclaimer Lease over.

    The holder renews once per reconcile round, so three rounds of silence.
    """
    return max(15, int(3 * settings.reconcile_interval + 0.999))


class LeaseElection:
    """Whether this node may hold the reclaimer Lease, from what it read and when.

    Per round: ``should_read``; if so, read the Lease and pass it to ``claim``, which
    returns the Lease to write (create it when none was read, else update it) or None;
    after a successful write, ``held``.  A write that conflicts is simply not held.
    """

    def __init__(self, *, node: str, namespace: str, duration: int) -> None:
        self.node = node
        self.namespace = namespace
        self.duration = duration
        self.seen: tuple[str, str] | None = None  # (holder, resourceVersion) last read
        self.seen_at = 0.0  # when `seen` last changed, on our clock
        self.read_at: float | None = None

    def should_read(self, now: float) -> bool:
        """False while another node holds it and we read it less than a duration ago:
        a takeover comes within two durations instead of one, and the nodes that do not
        hold it cost the API server a third of the reads (make bench-scale)."""
        holder = self.seen[0] if self.seen else ""
        recent = self.read_at is not None and now - self.read_at < self.duration
        return not (holder and holder != self.node and recent)

    def claim(self, lease: LeaseRecord | None, now: float) -> LeaseRecord | None:
        """The Lease to write to hold it, given the one just read; None: another holds it."""
        self.read_at = now
        if lease is None:
            return LeaseRecord(
                namespace=self.namespace,
                name=LEASE_NAME,
                holder=self.node,
                duration_seconds=self.duration,
            )
        seen = (lease.holder, lease.resource_version)
        if seen != self.seen:
            self.seen = seen
            self.seen_at = now
        mine = lease.holder == self.node
        expired = now - self.seen_at >= max(lease.duration_seconds, 1)
        if not (mine or not lease.holder or expired):
            return None
        return replace(
            lease,
            holder=self.node,
            duration_seconds=self.duration,
            transitions=lease.transitions + (0 if mine else 1),
        )

    def held(self, written: LeaseRecord, now: float) -> None:
        """The write of `claim`'s Lease succeeded; `written` is what the API returned."""
        self.seen = (written.holder, written.resource_version)
        self.seen_at = now


class ForeignScan:
    """The holder's look for IPBlocks of Nodes that are gone: when, and which to delete.

    The holder lists Nodes and IPBlocks only when a Node may be gone: at its first round
    as holder, after a Node deletion or a snapshot from the watcher (``expect_changes``),
    while a candidate waits for its second look, and at least every
    ``FOREIGN_SCAN_INTERVAL``.
    """

    def __init__(self, node: str, interval: float = FOREIGN_SCAN_INTERVAL) -> None:
        self.node = node
        self.interval = interval
        self.due = True
        self.scanned_at: float | None = None
        self.missing: dict[str, int] = {}  # block name -> consecutive looks its Node missed

    def expect_changes(self) -> None:
        """Nodes may have gone while we were not told: look at the next round."""
        self.due = True

    def lease_lost(self) -> None:
        """Not the holder (any more): the first round as holder looks afresh."""
        self.missing.clear()
        self.due = True

    def wanted(self, now: float) -> bool:
        stale = self.scanned_at is None or now - self.scanned_at >= self.interval
        return self.due or bool(self.missing) or stale

    def observe(self, blocks: Iterable[Block], nodes: Set[str], now: float) -> list[Block]:
        """What one look (a LIST of Nodes and of IPBlocks) shows: the blocks to delete
        now, their Node missing twice in a row.  Call ``deleted`` for each one gone."""
        self.due = False
        self.scanned_at = now
        seen: dict[str, int] = {}
        ripe: list[Block] = []
        for block in blocks:
            if block.node in nodes or block.node == self.node:
                continue
            count = self.missing.get(block.name, 0) + 1
            seen[block.name] = count  # looked at again next round unless deleted
            if count >= 2:
                ripe.append(block)
        self.missing = seen
        return ripe

    def deleted(self, name: str) -> None:
        """The block is gone (deleted by us or before us): nothing to look at again."""
        self.missing.pop(name, None)
