"""Cross-field validation of VRFDomains that the 1.20 OpenAPI schema cannot express.

Pure: no I/O, no kubernetes, no clock.  Every node runs the same function on the
same objects and so reaches the same verdicts; that is what lets all nodes write
the same status conditions without fighting, and deploy the same VRFs.

Rules, per domain (reason ``InvalidSpec``):

- vrf 1..65535; table 1..4294967294 and not 253, 254 or 255 (the kernel's
  default, main and local tables);
- prefixlen 8..30; ipblocklen greater than prefixlen and at most 30;
- prefix an IPv4 network address aligned to prefixlen (host bits zero);
- one or two attachments, at most one of each type, VNIs 1..16777215 and not
  repeated inside the domain, ports 1..65535;
- the routing policy (``vrf_routing.policy_problems``): route targets ASN:NN
  or A.B.C.D:NN within their encodable range and not repeated in a list;
  import prefixes IPv4 networks (host bits zero), ``le`` from the prefix length
  to 32, not the bare default route (that is ``acceptDefaultRoute``), not
  repeated; routeTargets and importPrefixes only with an l3vni attachment, an
  attachment's own routeTargets only on the l2vni.

Rules across domains (each domain that breaks one is rejected, the other kept):

- a vrf id, a table id or a VNI is used by one domain only;
- prefixes may overlap only when both domains are tenant VRFs; the system VRF
  (the one whose id is ``[default] vrf``) reaches the host and so must not
  overlap any other domain;
- routes must not leak between domains through route targets
  (``DuplicateRouteTarget``): a route target one domain exports (its IP-VRF's,
  or its l2vni's, ``<AS>:<vni>`` unless listed) is not one another domain
  imports, when at least one of the two sides wrote it in a ``routeTargets``.  "Imports"
  is what FRR does: an automatic import route target takes any value with
  the same local part (vrf_routing.any_as_imports).  (Two derived
  values that collide, an l2vni equal to another domain's vrf id, are left to
  frr.model as before: that domain is left out of FRR.)  Importing the same
  value in two domains is allowed: it is how several VRFs reach one shared
  external VRF.

Re-cutting live blocks (reason ``PrefixChangeRefused``): vrf, prefix,
prefixlen and ipblocklen decide how the domain is cut into IPBlocks.  The CRD
makes them immutable with a CEL transition rule (Kubernetes 1.25+); where that
rule does not run, a domain whose spec differs from the cut its IPBlocks were
made from (``DomainCandidate.cut``: status.acceptedCut, else what this node
deployed) is refused while any IPBlock of the old vrf would fall outside the
new values.  It is not withdrawn: every node keeps deploying the old cut with
the other fields of the new spec (``Verdict.deployed``), so pods keep their
addresses and routes, until the blocks are gone or the change is reverted.

Invariants:

- Conflicts are resolved deterministically: domains are considered oldest
  first (creationTimestamp, then name), and a domain is compared only with the
  domains already accepted.  So an older valid domain always wins over a newer
  one, and a domain rejected for its own fields never blocks another.
- The verdict depends only on the inputs (no history): a node that starts
  later computes the same verdicts as the others.  The one remembered input,
  the cut, lives in the object's status for that reason.
- A refused re-cut is checked against the domains with the old cut, because
  that is what the nodes route.

Keep in sync with: the schema in kubernetes/crds/0.1/vrfdomains.cni.pyroute2.org.yaml
(its description lists these rules) and ``DefaultSection`` in runtime/config.py.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime

from pyroute2_cni.frr.vrf_routing import (
    DEFAULT_ASN,
    PolicyError,
    any_as_imports,
    has_l3vni,
    l2vni_route_targets,
    policy_problems,
    route_target_value,
    vrf_route_targets,
)
from pyroute2_cni.messages.crd import VrfDomainSpec

REASON_ACCEPTED = "Valid"
REASON_INVALID = "InvalidSpec"
REASON_DUPLICATE_VRF = "DuplicateVRF"
REASON_DUPLICATE_TABLE = "DuplicateTable"
REASON_DUPLICATE_VNI = "DuplicateVNI"
REASON_OVERLAP = "OverlappingPrefix"
REASON_DUPLICATE_ROUTE_TARGET = "DuplicateRouteTarget"
REASON_CONFLICT = "Conflict"  # more than one kind of conflict at once
REASON_PREFIX_CHANGE_REFUSED = "PrefixChangeRefused"

RESERVED_TABLES = frozenset({253, 254, 255})
MAX_TABLE = 2**32 - 2
MAX_VNI = 2**24 - 1


@dataclass(frozen=True, slots=True, kw_only=True)
class BlockCut:
    """The fields a domain's IPBlocks are cut from (status.acceptedCut)."""

    vrf: int
    prefix: str
    prefixlen: int
    ipblocklen: int

    @classmethod
    def of(cls, spec: VrfDomainSpec) -> BlockCut:
        return cls(
            vrf=spec.vrf, prefix=spec.prefix, prefixlen=spec.prefixlen, ipblocklen=spec.ipblocklen
        )

    def applied_to(self, spec: VrfDomainSpec) -> VrfDomainSpec:
        return replace(
            spec,
            vrf=self.vrf,
            prefix=self.prefix,
            prefixlen=self.prefixlen,
            ipblocklen=self.ipblocklen,
        )

    def describe(self) -> str:
        return f"vrf {self.vrf}, {self.prefix}/{self.prefixlen} with /{self.ipblocklen} blocks"


@dataclass(frozen=True, slots=True, kw_only=True)
class LiveBlock:
    """One existing IPBlock, as far as re-cut checks need it."""

    name: str
    cidr: str
    vrf: int
    pods: int  # pod addresses allocated in it (the gateway not counted)


@dataclass(frozen=True, slots=True, kw_only=True)
class DomainCandidate:
    """One VRFDomain as read from the API, before validation."""

    name: str
    # metadata.creationTimestamp (RFC 3339); empty or unparsable sorts last.
    created: str = ""
    # None when the object could not be read into a spec; `error` says why.
    spec: VrfDomainSpec | None
    error: str = ""
    # The cut existing IPBlocks were made from; None when unknown (never accepted).
    cut: BlockCut | None = None
    # The IPBlocks of cut.vrf, needed only when the spec's cut differs from `cut`;
    # None when they could not be listed (`blocks_error` says why).
    blocks: tuple[LiveBlock, ...] | None = ()
    blocks_error: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Verdict:
    name: str
    # The Accepted condition: False for a refused re-cut, which is still deployed.
    accepted: bool
    reason: str
    message: str
    # What every node deploys: the spec, the spec with the old cut (re-cut
    # refused), or None (rejected).
    deployed: VrfDomainSpec | None = None

    @property
    def cut(self) -> BlockCut | None:
        return BlockCut.of(self.deployed) if self.deployed is not None else None


def _parse_time(text: str) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def _order_key(candidate: DomainCandidate) -> tuple[int, float, str]:
    created = _parse_time(candidate.created)
    if created is None:
        return (1, 0.0, candidate.name)
    return (0, created.timestamp(), candidate.name)


def field_problems(spec: VrfDomainSpec) -> list[str]:
    """Everything wrong with one domain on its own; empty when it is valid."""
    problems: list[str] = []
    if not 1 <= spec.vrf <= 65535:
        problems.append(f"spec.vrf ({spec.vrf}) must be from 1 to 65535")
    if not 1 <= spec.table <= MAX_TABLE:
        problems.append(f"spec.table ({spec.table}) must be from 1 to {MAX_TABLE}")
    elif spec.table in RESERVED_TABLES:
        problems.append(
            f"spec.table ({spec.table}) must not be a reserved kernel table (253, 254, 255)"
        )
    prefixlen_ok = 8 <= spec.prefixlen <= 30
    if not prefixlen_ok:
        problems.append(f"spec.prefixlen ({spec.prefixlen}) must be from 8 to 30")
    if not spec.prefixlen < spec.ipblocklen <= 30:
        problems.append(
            f"spec.ipblocklen ({spec.ipblocklen}) must be greater than "
            f"spec.prefixlen ({spec.prefixlen}) and at most 30"
        )
    try:
        address = ipaddress.IPv4Address(spec.prefix)
    except ValueError:
        problems.append(f"spec.prefix ({spec.prefix!r}) must be an IPv4 address")
    else:
        if prefixlen_ok:
            network = ipaddress.IPv4Network(f"{address}/{spec.prefixlen}", strict=False)
            if network.network_address != address:
                problems.append(
                    f"spec.prefix ({spec.prefix}) must be aligned to spec.prefixlen "
                    f"({spec.prefixlen}): the network address is {network.network_address}"
                )
    if not 1 <= len(spec.attachments) <= 2:
        problems.append(
            f"spec.attachments must hold one or two entries, not {len(spec.attachments)}"
        )
    seen_types: set[str] = set()
    seen_vnis: set[int] = set()
    for index, attachment in enumerate(spec.attachments):
        where = f"spec.attachments[{index}]"
        kind = attachment.type.value
        if kind in seen_types:
            problems.append(f"{where}.type ({kind}): only one attachment of each type is allowed")
        seen_types.add(kind)
        if not 1 <= attachment.vni <= MAX_VNI:
            problems.append(f"{where}.vni ({attachment.vni}) must be from 1 to {MAX_VNI}")
        elif attachment.vni in seen_vnis:
            problems.append(f"{where}.vni ({attachment.vni}) is used twice in this VRFDomain")
        seen_vnis.add(attachment.vni)
        if not 1 <= attachment.port <= 65535:
            problems.append(f"{where}.port ({attachment.port}) must be from 1 to 65535")
    problems.extend(policy_problems(spec))
    return problems


def _network(spec: VrfDomainSpec) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(f"{spec.prefix}/{spec.prefixlen}", strict=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Exchange:
    """The route targets a valid domain exchanges with the fabric (both attachments)."""

    imports: frozenset[str]
    any_as: frozenset[int]  # values FRR imports whatever their AS (vrf_routing.any_as_imports)
    exports: frozenset[str]
    explicit: frozenset[str]  # written in spec.routeTargets

    @classmethod
    def of(cls, asn: int, spec: VrfDomainSpec) -> _Exchange:
        imports: set[str] = set()
        exports: set[str] = set()
        explicit: frozenset[str] = frozenset()
        if has_l3vni(spec):
            targets = vrf_route_targets(asn, spec)  # valid: field_problems ran first
            imports.update(targets.imports)
            exports.update(targets.exports)
            explicit = targets.explicit
        try:
            l2 = l2vni_route_targets(asn, spec)
        except PolicyError:  # a 4-byte AS that cannot encode the l2vni: left out of FRR
            l2 = None
        if l2 is not None:
            imports.update(l2.imports)
            exports.update(l2.exports)
            explicit |= l2.explicit
        return cls(
            imports=frozenset(imports),
            any_as=any_as_imports(asn, spec),
            exports=frozenset(exports),
            explicit=explicit,
        )

    def takes(self, target: str) -> bool:
        return target in self.imports or route_target_value(target) in self.any_as


def _leaks(asn: int, spec: VrfDomainSpec, winner: VrfDomainSpec) -> list[str]:
    """Route targets through which routes would pass between the two domains."""
    mine, theirs = _Exchange.of(asn, spec), _Exchange.of(asn, winner)
    shared = {t for t in mine.exports if theirs.takes(t)}
    shared |= {t for t in theirs.exports if mine.takes(t)}
    return sorted(shared & (mine.explicit | theirs.explicit))


def _conflicts(
    spec: VrfDomainSpec, winner: VrfDomainSpec, system_vrf: int, asn: int
) -> list[tuple[str, str]]:
    """(reason, message) for every way `spec` collides with the accepted `winner`."""
    found: list[tuple[str, str]] = []
    other = f"VRFDomain {winner.name}"
    if spec.vrf == winner.vrf:
        found.append((REASON_DUPLICATE_VRF, f"spec.vrf ({spec.vrf}) is already used by {other}"))
    if spec.table == winner.table:
        found.append(
            (REASON_DUPLICATE_TABLE, f"spec.table ({spec.table}) is already used by {other}")
        )
    theirs = {a.vni for a in winner.attachments}
    for index, attachment in enumerate(spec.attachments):
        if attachment.vni in theirs:
            found.append(
                (
                    REASON_DUPLICATE_VNI,
                    f"spec.attachments[{index}].vni ({attachment.vni}) is already used by {other}",
                )
            )
    if (spec.vrf == system_vrf or winner.vrf == system_vrf) and _network(spec).overlaps(
        _network(winner)
    ):
        system = spec.name if spec.vrf == system_vrf else winner.name
        found.append(
            (
                REASON_OVERLAP,
                f"spec.prefix/prefixlen ({spec.cidr}) overlaps {winner.cidr} of {other}; "
                f"only tenant VRFs may overlap and {system} is the system VRF "
                f"(vrf {system_vrf})",
            )
        )
    leaked = _leaks(asn, spec, winner)
    if leaked:
        found.append(
            (
                REASON_DUPLICATE_ROUTE_TARGET,
                f"route targets {', '.join(leaked)} would carry routes between this domain "
                f"and {other} (one exports what the other imports)",
            )
        )
    return found


def _stranded(spec: VrfDomainSpec, blocks: Iterable[LiveBlock], old_vrf: int) -> list[LiveBlock]:
    """The blocks of `old_vrf` that the cut of `spec` would not contain."""
    network = _network(spec)
    out: list[LiveBlock] = []
    for block in blocks:
        if block.vrf != old_vrf:
            continue
        try:
            cidr = ipaddress.IPv4Network(block.cidr)
        except ValueError:
            out.append(block)
            continue
        if (
            block.vrf != spec.vrf
            or cidr.prefixlen != spec.ipblocklen
            or not cidr.subnet_of(network)
        ):
            out.append(block)
    return out


def _changes(old: BlockCut, new: VrfDomainSpec) -> str:
    parts: list[str] = []
    if old.vrf != new.vrf:
        parts.append(f"spec.vrf {old.vrf} -> {new.vrf}")
    if (old.prefix, old.prefixlen) != (new.prefix, new.prefixlen):
        parts.append(f"spec.prefix/prefixlen {old.prefix}/{old.prefixlen} -> {new.cidr}")
    if old.ipblocklen != new.ipblocklen:
        parts.append(f"spec.ipblocklen {old.ipblocklen} -> {new.ipblocklen}")
    return ", ".join(parts)


def _recut_refusal(candidate: DomainCandidate, spec: VrfDomainSpec) -> str | None:
    """Why the change of cut is refused, or None when nothing live is re-cut."""
    old = candidate.cut
    if old is None or old == BlockCut.of(spec):
        return None
    change = _changes(old, spec)
    keep = (
        f"the change is not applied: every node keeps deploying {old.describe()}, "
        "and pods keep their addresses"
    )
    todo = (
        "To apply it, revert the change, or drain the pods of this VRFDomain and delete "
        f"its IPBlocks (ipam.pyroute2.org/vrf={old.vrf}); the new values take effect "
        "once no IPBlock is left outside them."
    )
    if candidate.blocks is None:
        return (
            f"{change}, and the IPBlocks cut from the old values cannot be checked: cannot "
            f"list IPBlocks ({candidate.blocks_error or 'unknown error'}); {keep} (retried). "
            + todo
        )
    stranded = _stranded(spec, candidate.blocks, old.vrf)
    if not stranded:
        return None
    names = sorted(b.name for b in stranded)
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    pods = sum(b.pods for b in stranded)
    return (
        f"{change}, but {len(stranded)} IPBlocks ({pods} pod addresses) cut from the old "
        f"values would fall outside the new ones ({shown}); {keep}. " + todo
    )


def validate_domains(
    candidates: Iterable[DomainCandidate], system_vrf: int, *, asn: int = DEFAULT_ASN
) -> dict[str, Verdict]:
    """One verdict per candidate name; see the module docstring for the rules.

    `asn` is the cluster's AS number (derived route targets embed it).
    """
    verdicts: dict[str, Verdict] = {}
    accepted: list[VrfDomainSpec] = []
    for candidate in sorted(candidates, key=_order_key):
        name = candidate.name
        spec = candidate.spec
        if spec is None:
            verdicts[name] = Verdict(
                name=name,
                accepted=False,
                reason=REASON_INVALID,
                message=candidate.error or "the object cannot be read as a VRFDomain",
            )
            continue
        problems = field_problems(spec)
        if problems:
            verdicts[name] = Verdict(
                name=name, accepted=False, reason=REASON_INVALID, message="; ".join(problems)
            )
            continue
        refusal = _recut_refusal(candidate, spec)
        if refusal is not None and candidate.cut is not None:
            # What the nodes route is the old cut: validate and deploy that.
            spec = candidate.cut.applied_to(spec)
        found: list[tuple[str, str]] = []
        for winner in accepted:
            found.extend(_conflicts(spec, winner, system_vrf, asn))
        if found:
            reasons = {reason for reason, _ in found}
            reason = reasons.pop() if len(reasons) == 1 else REASON_CONFLICT
            message = "; ".join(text for _, text in found)
            message += " (the older VRFDomain wins; delete or change one of them)"
            verdicts[name] = Verdict(name=name, accepted=False, reason=reason, message=message)
            continue
        accepted.append(spec)
        if refusal is not None:
            verdicts[name] = Verdict(
                name=name,
                accepted=False,
                reason=REASON_PREFIX_CHANGE_REFUSED,
                message=refusal,
                deployed=spec,
            )
            continue
        verdicts[name] = Verdict(
            name=name,
            accepted=True,
            reason=REASON_ACCEPTED,
            message="the spec is valid and does not conflict with another VRFDomain",
            deployed=spec,
        )
    return verdicts
