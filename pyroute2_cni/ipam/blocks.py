"""IPAM block arithmetic and invariants: pure logic, no I/O.

A VRFDomain prefix (``prefix/prefixlen``) is cut into blocks of ``ipblocklen``.
A block belongs to one node and one VRF; its name encodes both
(``vrf-42-10-244-0-64-26``), so claiming a block is a create that either
succeeds or conflicts.

Invariants (checked by :func:`check_block_invariants`, which the tests call after
every state change, and by ``pyroute2-cni ipam check``):

- the name is ``vrf-<vrf>-<a>-<b>-<c>-<d>-<len>`` of the block's VRF and CIDR;
- the gateway is the first host address of the block and is recorded in the
  allocations with key ``"gateway"``;
- capacity is the number of usable host addresses, ``2**(32 - len) - 2``;
- ALLOCATED (``status.allocated``) counts every record, the gateway included,
  so ``ALLOCATED == CAPACITY`` means the block is full;
- every recorded address is a usable host address of the block, and an
  attachment key holds at most one address.

Keep in sync with: ``kubernetes/crds/0.1/ipblocks.ipam.pyroute2.org.yaml``
(field names) and ``pyroute2_cni/ipam/store.py`` (conversion to and from the API).
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from pyroute2_cni.messages.crd import AttachmentType, VrfDomainSpec

GATEWAY_KEY = "gateway"
MAX_BLOCKLEN = 30
NODE_LABEL = "ipam.pyroute2.org/node"
VRF_LABEL = "ipam.pyroute2.org/vrf"

_NAME_RE = re.compile(r"^vrf-(\d+)-(\d+)-(\d+)-(\d+)-(\d+)-(\d+)$")
_LABEL_VALUE_RE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


# -- values -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Allocation:
    """Who holds one address: the attachment key and the pod (empty when unknown)."""

    key: str
    namespace: str = ""
    pod: str = ""
    uid: str = ""
    since: str = ""  # RFC 3339

    @property
    def is_gateway(self) -> bool:
        return self.key == GATEWAY_KEY

    @property
    def pod_label(self) -> str:
        if self.namespace or self.pod:
            return f"{self.namespace}/{self.pod}"
        return self.uid or "unknown pod"


def _address_order(address: str) -> tuple[int, str]:
    try:
        return int(ipaddress.IPv4Address(address)), ""
    except ValueError:
        return -1, address  # malformed data from the API sorts first, check reports it


def _frozen(allocations: Mapping[str, Allocation]) -> Mapping[str, Allocation]:
    ordered = sorted(allocations.items(), key=lambda kv: _address_order(kv[0]))
    return MappingProxyType(dict(ordered))


@dataclass(frozen=True, slots=True, kw_only=True)
class Block:
    """One IPBlock as IPAM sees it (spec, status and resourceVersion)."""

    name: str
    cidr: str
    node: str
    vrf: int
    gateway: str
    capacity: int
    allocated: int = 0  # status.allocated as stored
    allocations: Mapping[str, Allocation] = field(default_factory=dict)
    resource_version: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "allocations", _frozen(self.allocations))

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.cidr)

    @property
    def gateway_recorded(self) -> bool:
        record = self.allocations.get(self.gateway)
        return record is not None and record.is_gateway

    @property
    def pod_count(self) -> int:
        """Records that are not the gateway."""
        return sum(1 for a in self.allocations.values() if not a.is_gateway)

    @property
    def free_count(self) -> int:
        """Addresses still assignable to pods (the gateway needs one if not yet recorded)."""
        return self.capacity - len(self.allocations) - (0 if self.gateway_recorded else 1)

    def key_addresses(self) -> Iterator[tuple[str, str]]:
        """(key, address) of every pod record."""
        for address, record in self.allocations.items():
            if not record.is_gateway:
                yield record.key, address


@dataclass(frozen=True, slots=True, kw_only=True)
class PodInfo:
    """A pod as leak detection needs it."""

    namespace: str
    name: str
    uid: str


# -- addresses and names ----------------------------------------------------------------


def ip_int(address: str) -> int:
    return int(ipaddress.IPv4Address(address))


def block_name(vrf: int, network: ipaddress.IPv4Network) -> str:
    """``vrf-42-10-244-0-64-26`` for VRF 42 and 10.244.0.64/26."""
    octets = str(network.network_address).replace(".", "-")
    return f"vrf-{vrf}-{octets}-{network.prefixlen}"


def parse_block_name(name: str) -> tuple[int, ipaddress.IPv4Network] | None:
    """The (vrf, network) a block name encodes, or None if it is not a block name."""
    match = _NAME_RE.match(name)
    if match is None:
        return None
    vrf, a, b, c, d, length = (int(g) for g in match.groups())
    if any(o > 255 for o in (a, b, c, d)) or length > 32:
        return None
    try:
        return vrf, ipaddress.IPv4Network(f"{a}.{b}.{c}.{d}/{length}")
    except ValueError:
        return None


def gateway_of(network: ipaddress.IPv4Network) -> str:
    """The first host address of the block."""
    return str(network.network_address + 1)


def capacity_of(network: ipaddress.IPv4Network) -> int:
    """Usable host addresses: all but the network and broadcast addresses."""
    return int(network.num_addresses) - 2


def usable_hosts(network: ipaddress.IPv4Network) -> Iterator[str]:
    first = int(network.network_address) + 1
    last = int(network.broadcast_address) - 1
    for value in range(first, last + 1):
        yield str(ipaddress.IPv4Address(value))


def node_label_value(node: str) -> str:
    """The ``ipam.pyroute2.org/node`` label value: the node name, hashed when too long."""
    if len(node) <= 63 and _LABEL_VALUE_RE.match(node):
        return node
    digest = hashlib.sha256(node.encode()).hexdigest()[:12]
    head = re.sub(r"[^-A-Za-z0-9_.]", "-", node)[:50].strip("-_.") or "node"
    return f"{head}-{digest}"


# -- domains ----------------------------------------------------------------------------


def domain_network(domain: VrfDomainSpec) -> ipaddress.IPv4Network:
    """The domain's prefix; ValueError when host bits are set or the address is bad."""
    return ipaddress.IPv4Network(f"{domain.prefix}/{domain.prefixlen}", strict=True)


def domain_problem(domain: VrfDomainSpec) -> str | None:
    """Why `domain` cannot be used for IPAM, or None when it can."""
    try:
        domain_network(domain)
    except ValueError:
        return (
            f"VRFDomain {domain.name}: prefix {domain.prefix}/{domain.prefixlen} "
            "is not a network address"
        )
    if not domain.prefixlen <= domain.ipblocklen <= MAX_BLOCKLEN:
        return (
            f"VRFDomain {domain.name}: ipblocklen {domain.ipblocklen} must be between "
            f"prefixlen ({domain.prefixlen}) and {MAX_BLOCKLEN}"
        )
    if not domain.attachments:
        return f"VRFDomain {domain.name} has no attachments"
    return None


def block_count(domain: VrfDomainSpec) -> int:
    return int(2 ** (domain.ipblocklen - domain.prefixlen))


def start_offset(node: str, vrf: int, count: int) -> int:
    """Where `node` starts walking a domain's blocks: spreads nodes apart, deterministic."""
    digest = hashlib.sha256(f"{node}\0{vrf}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % count


def candidate_networks(domain: VrfDomainSpec, start: int = 0) -> Iterator[ipaddress.IPv4Network]:
    """Every block of the domain once, beginning with index `start` and wrapping around."""
    prefix = domain_network(domain)
    count = block_count(domain)
    size = 2 ** (32 - domain.ipblocklen)
    base = int(prefix.network_address)
    for i in range(count):
        index = (start + i) % count
        yield ipaddress.IPv4Network((base + index * size, domain.ipblocklen))


def block_in_domain(block: Block, domain: VrfDomainSpec) -> bool:
    """True when the block can serve the domain: same VRF and inside its prefix."""
    if block.vrf != domain.vrf:
        return False
    try:
        return block.network.subnet_of(domain_network(domain))
    except ValueError:
        return False


def exhausted_reason(domain: VrfDomainSpec) -> str:
    return (
        f"VRFDomain {domain.name} ({domain.cidr}) has no free addresses: all "
        f"{block_count(domain)} /{domain.ipblocklen} blocks are full or held by other nodes"
    )


def pod_prefixlen(domain: VrfDomainSpec) -> int:
    """Prefix length of the pod interface.

    l3vni: the block (node-specific sub-range, routed); l2vni: the whole domain
    prefix (one stretched subnet).
    """
    attachment = domain.pod_attachment()
    if attachment.type is AttachmentType.L2VNI:
        return domain.prefixlen
    return domain.ipblocklen


# -- block transitions (each returns a new Block) ---------------------------------------


def new_block(vrf: int, network: ipaddress.IPv4Network, node: str) -> Block:
    """A block as created: spec only, no status yet."""
    return Block(
        name=block_name(vrf, network),
        cidr=str(network),
        node=node,
        vrf=vrf,
        gateway=gateway_of(network),
        capacity=capacity_of(network),
    )


def _replace_allocations(block: Block, allocations: Mapping[str, Allocation]) -> Block:
    return Block(
        name=block.name,
        cidr=block.cidr,
        node=block.node,
        vrf=block.vrf,
        gateway=block.gateway,
        capacity=block.capacity,
        allocated=len(allocations),
        allocations=allocations,
        resource_version=block.resource_version,
    )


def normalized(block: Block, since: str = "") -> Block:
    """The block with its gateway recorded and ALLOCATED equal to the record count."""
    allocations = dict(block.allocations)
    if not block.gateway_recorded:
        allocations[block.gateway] = Allocation(key=GATEWAY_KEY, since=since)
    return _replace_allocations(block, allocations)


def needs_repair(block: Block) -> bool:
    return not block.gateway_recorded or block.allocated != len(block.allocations)


def pick_free(block: Block) -> str | None:
    """The lowest usable address that is neither recorded nor the gateway."""
    if block.free_count <= 0:
        return None
    for address in usable_hosts(block.network):
        if address != block.gateway and address not in block.allocations:
            return address
    return None


def with_allocation(block: Block, address: str, record: Allocation, since: str = "") -> Block:
    """Record `address` for `record`; ValueError if it is taken, reserved or outside the block."""
    if record.is_gateway:
        raise ValueError("the gateway key is reserved")
    if address == block.gateway or address in block.allocations:
        raise ValueError(f"{address} is already allocated in {block.name}")
    host = ipaddress.IPv4Address(address)
    network = block.network
    if host not in network or host in (network.network_address, network.broadcast_address):
        raise ValueError(f"{address} is not a usable address of {block.cidr}")
    base = normalized(block, since)
    allocations = dict(base.allocations)
    allocations[address] = record
    return _replace_allocations(base, allocations)


def without_addresses(block: Block, addresses: Iterable[str]) -> Block:
    """Drop the records of `addresses` (the gateway record always stays)."""
    allocations = dict(block.allocations)
    for address in addresses:
        record = allocations.get(address)
        if record is not None and not record.is_gateway:
            del allocations[address]
    return _replace_allocations(block, allocations)


# -- invariants -------------------------------------------------------------------------


def check_block_invariants(block: Block) -> list[str]:
    """Every broken invariant of one block, as readable sentences (empty when sound)."""
    problems: list[str] = []
    try:
        network = ipaddress.IPv4Network(block.cidr, strict=True)
    except ValueError:
        return [f"{block.name}: CIDR {block.cidr!r} is not an IPv4 network"]
    if network.prefixlen > MAX_BLOCKLEN:
        problems.append(f"{block.name}: /{network.prefixlen} is longer than /{MAX_BLOCKLEN}")
        return problems
    expected_name = block_name(block.vrf, network)
    if block.name != expected_name:
        problems.append(f"{block.name}: name does not match VRF and CIDR ({expected_name})")
    if block.gateway != gateway_of(network):
        problems.append(
            f"{block.name}: gateway {block.gateway} is not the first host {gateway_of(network)}"
        )
    if block.capacity != capacity_of(network):
        problems.append(f"{block.name}: capacity {block.capacity} should be {capacity_of(network)}")
    if block.allocated != len(block.allocations):
        problems.append(
            f"{block.name}: ALLOCATED {block.allocated} but {len(block.allocations)} records"
        )
    if len(block.allocations) > capacity_of(network):
        problems.append(f"{block.name}: {len(block.allocations)} records exceed the capacity")
    gateway_record = block.allocations.get(block.gateway)
    if gateway_record is None:
        problems.append(f"{block.name}: gateway {block.gateway} is not recorded")
    elif not gateway_record.is_gateway:
        problems.append(
            f"{block.name}: gateway {block.gateway} is held by attachment {gateway_record.key}"
        )
    keys: dict[str, str] = {}
    for address, record in block.allocations.items():
        try:
            host = ipaddress.IPv4Address(address)
        except ValueError:
            problems.append(f"{block.name}: {address!r} is not an IPv4 address")
            continue
        if host not in network or host in (network.network_address, network.broadcast_address):
            problems.append(f"{block.name}: {address} is not a usable address of {block.cidr}")
        if record.is_gateway and address != block.gateway:
            problems.append(f"{block.name}: {address} is recorded as a second gateway")
        if record.is_gateway:
            continue
        if record.key in keys:
            problems.append(
                f"{block.name}: attachment {record.key} holds {keys[record.key]} and {address}"
            )
        keys[record.key] = address
    return problems


# -- leak detection ---------------------------------------------------------------------


class PodIndex:
    """Which pods exist, by UID and by namespace/name."""

    def __init__(self, pods: Iterable[PodInfo]) -> None:
        self.uids: set[str] = set()
        self.names: set[tuple[str, str]] = set()
        for pod in pods:
            if pod.uid:
                self.uids.add(pod.uid)
            self.names.add((pod.namespace, pod.name))

    def holder_exists(self, record: Allocation) -> bool | None:
        """Whether the record's pod exists; None when the record names no pod (cannot tell).

        A UID wins over the name: a pod recreated under the same name is another pod.
        """
        if record.is_gateway:
            return None
        if record.uid:
            return record.uid in self.uids
        if record.namespace and record.pod:
            return (record.namespace, record.pod) in self.names
        return None


# -- `ipam check` ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Problem:
    kind: str
    block: str
    message: str
    address: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckReport:
    blocks: int
    addresses: int
    problems: tuple[Problem, ...]

    @property
    def clean(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        counts: dict[str, int] = defaultdict(int)
        for problem in self.problems:
            counts[problem.kind] += 1
        return {
            "clean": self.clean,
            "blocks": self.blocks,
            "addresses": self.addresses,
            "counts": dict(sorted(counts.items())),
            "problems": [
                {
                    "kind": p.kind,
                    "block": p.block,
                    "address": p.address,
                    "message": p.message,
                }
                for p in self.problems
            ],
        }

    def to_text(self) -> str:
        head = f"IPAM check: {self.blocks} blocks, {self.addresses} addresses"
        if self.clean:
            return f"{head}: no problems found"
        lines = [f"{head}, {len(self.problems)} problem(s):"]
        width = max(len(p.kind) for p in self.problems)
        for problem in self.problems:
            lines.append(f"  {problem.kind:<{width}}  {problem.message}")
        return "\n".join(lines)


# Problem kinds, in report order.
LEAKED = "leaked"
DUPLICATE = "duplicate"
DUPLICATE_KEY = "duplicate-key"
MISSING_NODE = "missing-node"
ALLOCATED_MISMATCH = "allocated-mismatch"
OUTSIDE_DOMAIN = "outside-domain"
NO_DOMAIN = "no-domain"
OVERLAP = "overlap"
INVALID = "invalid-block"
# `ipam check --node`: the node's kernel against its records.
UNRECORDED = "unrecorded"
NOT_PLUMBED = "not-plumbed"
_ORDER = (
    LEAKED,
    DUPLICATE,
    DUPLICATE_KEY,
    MISSING_NODE,
    ALLOCATED_MISMATCH,
    OUTSIDE_DOMAIN,
    NO_DOMAIN,
    OVERLAP,
    INVALID,
    UNRECORDED,
    NOT_PLUMBED,
)


def check_cluster(
    blocks: Iterable[Block],
    domains: Iterable[VrfDomainSpec],
    nodes: Iterable[str],
    pods: Iterable[PodInfo],
) -> CheckReport:
    """The `ipam check` report for the whole cluster, from plain data."""
    blocks = sorted(blocks, key=lambda b: (b.vrf, _sort_key(b.cidr), b.name))
    node_set = set(nodes)
    pod_index = PodIndex(pods)
    domains_by_vrf: dict[int, list[VrfDomainSpec]] = defaultdict(list)
    for domain in domains:
        domains_by_vrf[domain.vrf].append(domain)
    problems: list[Problem] = []
    holders: dict[tuple[int, str], list[str]] = defaultdict(list)
    keys: dict[tuple[int, str], list[tuple[str, str]]] = defaultdict(list)
    addresses = 0

    for block in blocks:
        if block.node not in node_set:
            problems.append(
                Problem(
                    kind=MISSING_NODE,
                    block=block.name,
                    message=f"{block.name} ({block.cidr}) belongs to node {block.node}, "
                    "which does not exist",
                )
            )
        if block.allocated != len(block.allocations):
            problems.append(
                Problem(
                    kind=ALLOCATED_MISMATCH,
                    block=block.name,
                    message=f"{block.name}: ALLOCATED is {block.allocated} but the block "
                    f"has {len(block.allocations)} records",
                )
            )
        for text in check_block_invariants(block):
            if "ALLOCATED" in text:
                continue  # reported above with its own kind
            problems.append(Problem(kind=INVALID, block=block.name, message=text))
        _check_domain(block, domains_by_vrf.get(block.vrf, []), problems)
        for address, record in block.allocations.items():
            holders[(block.vrf, address)].append(block.name)
            if record.is_gateway:
                continue
            addresses += 1
            keys[(block.vrf, record.key)].append((block.name, address))
            if pod_index.holder_exists(record) is False:
                uid = f" (uid {record.uid})" if record.uid else ""
                problems.append(
                    Problem(
                        kind=LEAKED,
                        block=block.name,
                        address=address,
                        message=f"{address} in {block.name} is held by {record.pod_label}{uid}, "
                        "which no longer exists",
                    )
                )

    by_address = sorted(holders.items(), key=lambda kv: (kv[0][0], _address_order(kv[0][1])))
    for (vrf, address), names in by_address:
        if len(names) > 1:
            problems.append(
                Problem(
                    kind=DUPLICATE,
                    block=names[0],
                    address=address,
                    message=f"{address} is allocated {len(names)} times in VRF {vrf}: "
                    + ", ".join(names),
                )
            )
    for (vrf, key), held in sorted(keys.items()):
        if len(held) > 1:
            problems.append(
                Problem(
                    kind=DUPLICATE_KEY,
                    block=held[0][0],
                    address=held[0][1],
                    message=f"attachment {key} holds {len(held)} addresses in VRF {vrf}: "
                    + ", ".join(f"{a} ({b})" for b, a in held),
                )
            )
    problems.extend(_overlaps(blocks))
    rank = {kind: i for i, kind in enumerate(_ORDER)}
    problems.sort(key=lambda p: (rank.get(p.kind, len(rank)), p.block, _sort_key(p.address)))
    return CheckReport(blocks=len(blocks), addresses=addresses, problems=tuple(problems))


def _sort_key(text: str) -> int:
    try:
        return int(ipaddress.IPv4Network(text, strict=False).network_address)
    except ValueError:
        return -1


def _check_domain(block: Block, domains: list[VrfDomainSpec], problems: list[Problem]) -> None:
    if not domains:
        problems.append(
            Problem(
                kind=NO_DOMAIN,
                block=block.name,
                message=f"{block.name} ({block.cidr}): no VRFDomain has VRF {block.vrf}",
            )
        )
        return
    for domain in domains:
        try:
            inside = block.network.subnet_of(domain_network(domain))
        except ValueError:
            inside = False
        if inside:
            return
    prefixes = ", ".join(f"{d.name} {d.cidr}" for d in domains)
    problems.append(
        Problem(
            kind=OUTSIDE_DOMAIN,
            block=block.name,
            message=f"{block.name} ({block.cidr}) is outside the prefix of VRF {block.vrf} "
            f"({prefixes})",
        )
    )


def _overlaps(blocks: list[Block]) -> list[Problem]:
    """Blocks of the same VRF whose ranges intersect (sweep over sorted ranges)."""
    found: list[Problem] = []
    by_vrf: dict[int, list[tuple[int, int, Block]]] = defaultdict(list)
    for block in blocks:
        try:
            network = block.network
        except ValueError:
            continue
        first = int(network.network_address)
        by_vrf[block.vrf].append((first, int(network.broadcast_address), block))
    for ranges in by_vrf.values():
        ranges.sort(key=lambda r: (r[0], -r[1]))
        open_ranges: list[tuple[int, int, Block]] = []
        for first, last, block in ranges:
            open_ranges = [r for r in open_ranges if r[1] >= first]
            for _, _, other in open_ranges:
                found.append(
                    Problem(
                        kind=OVERLAP,
                        block=other.name,
                        message=f"{other.name} ({other.cidr}) overlaps {block.name} "
                        f"({block.cidr}) in VRF {block.vrf}",
                    )
                )
            open_ranges.append((first, last, block))
    return found


@dataclass(frozen=True, slots=True, kw_only=True)
class PlumbedAddress:
    """A pod interface on a node, as its host veth's alias records it."""

    key: str  # attachment key (pyroute2_cni/values/attachment.py)
    address: str  # "" when plumbed by a version that did not record it
    host_ifname: str


def check_node(
    node: str, blocks: Iterable[Block], plumbed: Iterable[PlumbedAddress]
) -> CheckReport:
    """What `ipam check` cannot see from the API alone: a pod interface on `node` whose address
    no record of the node holds for its attachment (two pods may share it), and a record of
    the node whose attachment has no interface there (an address held for nothing).  An
    ADD or DEL in progress shows for a moment; a problem that stays is real."""
    own = [b for b in blocks if b.node == node]
    held: dict[str, tuple[str, str]] = {}  # key -> (address, block)
    holder: dict[str, str] = {}  # address -> key
    for block in own:
        for key, address in block.key_addresses():
            held[key] = (address, block.name)
            holder[address] = key
    problems: list[Problem] = []
    seen: set[str] = set()
    for pod in sorted(plumbed, key=lambda p: p.key):
        seen.add(pod.key)
        record = held.get(pod.key)
        if record is None:
            problems.append(
                Problem(
                    kind=UNRECORDED,
                    block="",
                    address=pod.address,
                    message=f"{pod.host_ifname} plumbs attachment {pod.key} "
                    f"({pod.address or 'address not recorded'}) but no IPBlock of node {node} "
                    "holds an address for it",
                )
            )
        elif pod.address and record[0] != pod.address:
            other = holder.get(pod.address)
            problems.append(
                Problem(
                    kind=UNRECORDED,
                    block=record[1],
                    address=pod.address,
                    message=f"{pod.host_ifname} plumbs {pod.address} for attachment {pod.key}, "
                    f"whose record holds {record[0]}"
                    + (f"; {pod.address} is held by {other}" if other else ""),
                )
            )
    for key, (address, block_name) in sorted(held.items()):
        if key not in seen:
            problems.append(
                Problem(
                    kind=NOT_PLUMBED,
                    block=block_name,
                    address=address,
                    message=f"{block_name}: {address} is held by attachment {key}, which has no "
                    f"interface on node {node}",
                )
            )
    rank = {kind: i for i, kind in enumerate(_ORDER)}
    problems.sort(key=lambda p: (rank[p.kind], p.block, p.address))
    return CheckReport(blocks=len(own), addresses=len(held), problems=tuple(problems))
