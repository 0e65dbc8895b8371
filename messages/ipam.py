"""IPAMActor's commands, replies and events."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pyroute2_cni.messages.crd import AttachmentType, VrfDomainSpec


@dataclass(frozen=True, slots=True, kw_only=True)
class PodRef:
    namespace: str = ""
    name: str = ""
    uid: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class AllocateAddress:
    """Allocate one address for attachment `key` (pyroute2_cni/values/attachment.py) in `domain`.

    Idempotent: a key that already holds an address in the domain gets it back.
    """

    key: str
    pod: PodRef
    domain: VrfDomainSpec


@dataclass(frozen=True, slots=True, kw_only=True)
class AddressAllocated:
    key: str
    vrf: int
    address: str
    # Prefix length of the pod interface: ipblocklen for l3vni, the domain's
    # prefixlen for l2vni (one stretched subnet).
    prefixlen: int
    gateway: str
    block: str  # CIDR of the IPBlock the address came from
    attachment: AttachmentType


@dataclass(frozen=True, slots=True, kw_only=True)
class ReleaseAddress:
    """Release whatever `key` holds; releasing an unknown key succeeds."""

    key: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AddressReleased:
    key: str
    address: str | None  # None when the key held nothing


@dataclass(frozen=True, slots=True, kw_only=True)
class ReleaseAllExcept:
    """CNI GC: release every attachment of `network` on this node whose key is not in
    `keep`; other networks' attachments are not touched (pyroute2_cni/values/attachment.py)."""

    network: str
    keep: frozenset[str]


@dataclass(frozen=True, slots=True, kw_only=True)
class ConfirmAllocation:
    """Does `key` still hold `address`?  Asked (by tell) before a pod is plumbed again from
    what its veth alias recorded; the answer goes to `reply_to` as AllocationConfirmed."""

    key: str
    address: str
    reply_to: Any  # an Address; typed loosely so messages import nothing of the actors


@dataclass(frozen=True, slots=True, kw_only=True)
class AllocationConfirmed:
    key: str
    address: str
    # True: plumb it again; False: IPAM holds another address or none for key (reclaimed
    # meanwhile), so plumbing it would share an address; None: IPAM has not read this
    # node's blocks yet, ask again later.
    held: bool | None


@dataclass(frozen=True, slots=True, kw_only=True)
class AddressesReleased:
    keys: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class LookupAddress:
    key: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AddressLookupResult:
    allocation: AddressAllocated | None


@dataclass(frozen=True, slots=True, kw_only=True)
class BlockInfo:
    vrf: int
    cidr: str
    gateway: str


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeBlocksChanged:
    """Every block this node holds now (a full set, not a delta); sent to the NetlinkActor."""

    blocks: tuple[BlockInfo, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Reconcile:
    """Periodic IPAM housekeeping (IPAMActor schedules it for itself; tests send it).

    Reclaims leaked addresses, returns empty blocks and, on the node holding the
    reclaimer Lease, reclaims the blocks of deleted nodes.
    """


@dataclass(frozen=True, slots=True, kw_only=True)
class ReconcileResult:
    loaded: bool  # False when the node's blocks could not be read yet
    reclaimed: tuple[str, ...] = ()  # attachment keys whose leaked addresses were released
    returned_blocks: tuple[str, ...] = ()  # this node's empty blocks given back
    lease_held: bool = False
    foreign_blocks_reclaimed: tuple[str, ...] = ()  # blocks of deleted nodes
    errors: tuple[str, ...] = ()  # steps that failed this round (retried next round)


@dataclass(frozen=True, slots=True, kw_only=True)
class RepublishBlocks:
    """Send NodeBlocksChanged again even if unchanged (a restarted NetlinkActor needs it)."""
