"""IPAMActor's commands, replies and events."""

from __future__ import annotations

from dataclasses import dataclass

from pyroute2_cni.messages.crd import AttachmentType, VrfDomainSpec


@dataclass(frozen=True, slots=True, kw_only=True)
class PodRef:
    namespace: str = ""
    name: str = ""
    uid: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class AllocateAddress:
    """Allocate one address for attachment `key` ("<containerid>/<ifname>") in `domain`.

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
    """CNI GC: release every attachment of this node not in `keep`."""

    keep: frozenset[str]


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
