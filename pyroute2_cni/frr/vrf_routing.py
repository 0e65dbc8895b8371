"""A VRFDomain's routing policy: route targets and what it imports from the fabric.

Pure: no I/O, no kubernetes, no FRR.  kube.crd_validate (the ``Accepted`` condition)
and frr.model (``frr.conf``) both read a domain's policy through this module, so
what the API reports and what FRR runs cannot disagree.

Route targets (``spec.routeTargets``)
    ``import`` and ``export`` are independent lists.  A list that is absent (or
    empty) keeps the derived value ``<AS>:<vrf>``; there is no "both" shorthand:
    a domain that joins a fabric VRF with route target X both ways lists X in
    both.  A value is ``ASN:NN`` (ASN 1..4294967295; NN up to 4294967295 with a
    2-byte ASN, up to 65535 with a 4-byte one) or ``A.B.C.D:NN`` (NN up to
    65535): the three encodings of RFC 4360/5668 that FRR accepts.

Route targets of an l2vni (``spec.attachments[].routeTargets``)
    The MAC-VRF's, with the same form and rules; an absent list keeps the
    derived ``<AS>:<vni>``.  Only on an l2vni attachment: an l3vni's route
    targets are the IP-VRF's ``spec.routeTargets``.

Import filter (``spec.importPrefixes``, ``spec.acceptDefaultRoute``)
    A route that the import route targets bring into the VRF is installed only
    when it is (a) inside the domain's own pod network (``prefix/prefixlen``,
    any length: the other nodes' blocks and host routes), or (b) covered by an
    ``importPrefixes`` entry (exact, or up to ``le``), or no ``importPrefixes``
    are given at all; and (c) it is not 0.0.0.0/0 unless ``acceptDefaultRoute``
    is true.  The default route is excluded by default because in the system
    VRF it would shadow the fall-through to the host's tables (see
    netlink.desired), and in a tenant VRF it replaces the ``unreachable default``
    that keeps tenant traffic inside the cluster.

Invariants:

- Values are normalised (``65000:007`` is ``65000:7``) and sorted, so equal
  policies compare equal whatever order the user wrote.
- :func:`policy_problems` is empty exactly when :func:`vrf_route_targets` and
  :func:`import_filter_entries` can be computed without error.

Keep in sync with: the VRFDomain CRD schema (kubernetes/crds/0.1/), README
("Joining an existing fabric") and templates/frr.conf.j2.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from pyroute2_cni.messages.crd import AttachmentType, ImportPrefix, VrfDomainSpec

DEFAULT_ASN = 65000  # [daemon] asn in server.ini when not set
MAX_U16 = (1 << 16) - 1
MAX_U32 = (1 << 32) - 1
DEFAULT_ROUTE = "0.0.0.0/0"

_RT_ASN = re.compile(r"^(\d{1,10}):(\d{1,10})$")
_RT_IP = re.compile(r"^(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}):(\d{1,10})$")


class PolicyError(ValueError):
    """A route target or import prefix that cannot be used; the text says which and why."""


def parse_route_target(text: str) -> str:
    """``text`` normalised, or :class:`PolicyError`."""
    value = text.strip()
    match = _RT_ASN.match(value)
    if match:
        asn, local = int(match.group(1)), int(match.group(2))
        if not 1 <= asn <= MAX_U32:
            raise PolicyError(f"{text!r}: the AS number must be from 1 to {MAX_U32}")
        limit = MAX_U32 if asn <= MAX_U16 else MAX_U16
        if local > limit:
            kind = "2-byte" if asn <= MAX_U16 else "4-byte"
            raise PolicyError(f"{text!r}: with a {kind} AS number the value must be <= {limit}")
        return f"{asn}:{local}"
    match = _RT_IP.match(value)
    if match:
        try:
            address = ipaddress.IPv4Address(match.group(1))
        except ValueError:
            raise PolicyError(f"{text!r}: {match.group(1)} is not an IPv4 address") from None
        local = int(match.group(2))
        if local > MAX_U16:
            raise PolicyError(f"{text!r}: with an IPv4 address the value must be <= {MAX_U16}")
        return f"{address}:{local}"
    raise PolicyError(f"{text!r} is not ASN:NN or A.B.C.D:NN")


def derived_route_target(asn: int, local: int) -> str | None:
    """``<asn>:<local>``, or None when the value cannot be encoded."""
    limit = MAX_U32 if asn <= MAX_U16 else MAX_U16
    return f"{asn}:{local}" if 0 <= local <= limit else None


def frr_auto_route_target(asn: int, vni: int) -> str:
    """The route target FRR derives for a VNI by itself: the low 16 bits of the AS
    (bgpd's form_auto_rt), whatever the AS size."""
    return f"{asn & MAX_U16}:{vni}"


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteTargets:
    """A VRF's effective route targets, normalised and sorted."""

    imports: tuple[str, ...]
    exports: tuple[str, ...]
    explicit: frozenset[str]  # the values that come from spec.routeTargets

    @property
    def all(self) -> frozenset[str]:
        return frozenset(self.imports) | frozenset(self.exports)


def _parse_list(values: tuple[str, ...], where: str) -> tuple[str, ...]:
    parsed: list[str] = []
    for index, text in enumerate(values):
        try:
            parsed.append(parse_route_target(text))
        except PolicyError as exc:
            raise PolicyError(f"{where}[{index}] {exc}") from None
    duplicates = sorted({v for v in parsed if parsed.count(v) > 1})
    if duplicates:
        raise PolicyError(f"{where} lists {', '.join(duplicates)} more than once")
    return tuple(sorted(parsed))


def vrf_route_targets(asn: int, domain: VrfDomainSpec) -> RouteTargets:
    """The IP-VRF's route targets: the explicit lists, else ``<asn>:<vrf>``."""
    derived = derived_route_target(asn, domain.vrf)
    if derived is None:  # vrf <= 65535 fits every AS; checked by the callers
        raise PolicyError(f"vrf {domain.vrf} does not fit a route target of AS {asn}")
    imports = _parse_list(domain.import_route_targets, "spec.routeTargets.import")
    exports = _parse_list(domain.export_route_targets, "spec.routeTargets.export")
    return RouteTargets(
        imports=imports or (derived,),
        exports=exports or (derived,),
        explicit=frozenset(imports) | frozenset(exports),
    )


def any_as_imports(asn: int, domain: VrfDomainSpec) -> frozenset[int]:
    """The VNIs whose import route target stays FRR's automatic one (nothing written).

    FRR 8.4 matches an automatic import route target on its value alone: any
    route target ``<anything>:<vni>`` (AS, 4-byte AS or IPv4 form) is imported
    (bgpd masks the global administrator, for eBGP fabrics that derive their
    own).  A configured one is matched exactly.  That is the case of an IP-VRF
    whose import list is just ``<AS & 0xffff>:<l3vni>`` (the derived value of
    a domain with vrf == l3vni, e.g. the default vrf-42) and of a 2-byte-AS
    l2vni.
    """
    found: set[int] = set()
    for attachment in domain.attachments:
        auto = frr_auto_route_target(asn, attachment.vni)
        if attachment.type is AttachmentType.L3VNI:
            if vrf_route_targets(asn, domain).imports == (auto,):
                found.add(attachment.vni)
            continue
        try:
            targets = l2vni_route_targets(asn, domain)
        except PolicyError:  # not encodable: the domain is left out of FRR
            continue
        if targets is not None and targets.imports == (auto,):
            found.add(attachment.vni)
    return frozenset(found)


def route_target_value(target: str) -> int:
    """The local administrator (the part after the last colon) of a normalised value."""
    return int(target.rsplit(":", 1)[1])


def l2vni_route_targets(asn: int, domain: VrfDomainSpec) -> RouteTargets | None:
    """The MAC-VRF's route targets: the l2vni attachment's explicit lists, else
    ``<asn>:<l2vni>``; None without an l2vni.  :class:`PolicyError` when a direction
    needs the derived value and a 4-byte AS cannot encode it."""
    for index, attachment in enumerate(domain.attachments):
        if attachment.type is not AttachmentType.L2VNI:
            continue
        where = f"spec.attachments[{index}].routeTargets"
        imports = _parse_list(attachment.import_route_targets, f"{where}.import")
        exports = _parse_list(attachment.export_route_targets, f"{where}.export")
        derived = derived_route_target(asn, attachment.vni)
        if derived is None and not (imports and exports):
            raise PolicyError(
                f"l2vni {attachment.vni} does not fit a route target of 4-byte AS {asn} "
                f"(max {MAX_U16}): list {where} import and export"
            )
        return RouteTargets(
            imports=imports or (str(derived),),
            exports=exports or (str(derived),),
            explicit=frozenset(imports) | frozenset(exports),
        )
    return None


@dataclass(frozen=True, slots=True, kw_only=True, order=True)
class PrefixEntry:
    """One line of the VRF's import prefix-list."""

    seq: int
    permit: bool
    prefix: str
    le: int | None = None

    @property
    def action(self) -> str:
        return "permit" if self.permit else "deny"


def _parse_prefix(entry: ImportPrefix, where: str) -> ImportPrefix:
    try:
        network = ipaddress.IPv4Network(entry.cidr.strip())
    except ipaddress.NetmaskValueError:
        raise PolicyError(f"{where}.cidr ({entry.cidr!r}) has an invalid prefix length") from None
    except ValueError:
        try:
            loose = ipaddress.IPv4Network(entry.cidr.strip(), strict=False)
        except ValueError:
            raise PolicyError(f"{where}.cidr ({entry.cidr!r}) is not an IPv4 CIDR") from None
        raise PolicyError(
            f"{where}.cidr ({entry.cidr}) has host bits set: the network is {loose}"
        ) from None
    if entry.le is not None and not network.prefixlen <= entry.le <= 32:
        raise PolicyError(
            f"{where}.le ({entry.le}) must be from the prefix length ({network.prefixlen}) to 32"
        )
    if network.prefixlen == 0 and entry.le is None:
        raise PolicyError(
            f"{where}.cidr is the default route: set spec.acceptDefaultRoute to true instead"
        )
    return ImportPrefix(cidr=str(network), le=entry.le)


def _prefix_key(entry: ImportPrefix) -> tuple[int, int, int]:
    network = ipaddress.IPv4Network(entry.cidr)
    return (int(network.network_address), network.prefixlen, -1 if entry.le is None else entry.le)


def parse_import_prefixes(domain: VrfDomainSpec) -> tuple[ImportPrefix, ...]:
    """``spec.importPrefixes`` normalised and sorted, or :class:`PolicyError`."""
    parsed = [
        _parse_prefix(entry, f"spec.importPrefixes[{index}]")
        for index, entry in enumerate(domain.import_prefixes)
    ]
    duplicates = sorted({p for p in parsed if parsed.count(p) > 1}, key=_prefix_key)
    if duplicates:
        shown = ", ".join(p.cidr + (f" le {p.le}" if p.le is not None else "") for p in duplicates)
        raise PolicyError(f"spec.importPrefixes lists {shown} more than once")
    return tuple(sorted(parsed, key=_prefix_key))


def import_filter_entries(domain: VrfDomainSpec) -> tuple[PrefixEntry, ...]:
    """The prefix-list of the import filter; empty when everything is accepted.

    Order matters (first match wins): the default route first, then the
    domain's own pod network, then the user's prefixes; a user prefix equal to
    an earlier line is left out (FRR silently drops a duplicate, which
    frr-reload.py would then see as a difference forever).
    """
    prefixes = parse_import_prefixes(domain)
    if domain.accept_default_route and not prefixes:
        return ()
    lines: list[tuple[bool, str, int | None]] = [(domain.accept_default_route, DEFAULT_ROUTE, None)]
    if prefixes:
        own = ipaddress.IPv4Network(domain.cidr, strict=False)
        lines.append((True, str(own), 32))
        lines.extend((True, p.cidr, p.le) for p in prefixes)
    else:
        lines.append((True, DEFAULT_ROUTE, 32))
    entries: list[PrefixEntry] = []
    seen: set[tuple[str, int | None]] = set()
    for permit, prefix, le in lines:
        if (prefix, le) in seen:
            continue
        seen.add((prefix, le))
        entries.append(PrefixEntry(seq=5 * (len(entries) + 1), permit=permit, prefix=prefix, le=le))
    return tuple(entries)


def has_l3vni(domain: VrfDomainSpec) -> bool:
    return any(a.type is AttachmentType.L3VNI for a in domain.attachments)


def policy_problems(domain: VrfDomainSpec) -> list[str]:
    """Everything wrong with the domain's routing policy on its own; empty when valid."""
    problems: list[str] = []
    for step in (
        lambda: vrf_route_targets(1, domain),  # the AS does not change what is valid
        lambda: l2vni_route_targets(1, domain),  # (AS 1 encodes every VNI)
        lambda: parse_import_prefixes(domain),
    ):
        try:
            step()
        except PolicyError as exc:
            problems.append(str(exc))
    for index, attachment in enumerate(domain.attachments):
        if attachment.type is AttachmentType.L3VNI and (
            attachment.import_route_targets or attachment.export_route_targets
        ):
            problems.append(
                f"spec.attachments[{index}].routeTargets applies to an l2vni attachment; "
                "the route targets of the l3vni's IP-VRF are spec.routeTargets"
            )
    if not has_l3vni(domain):
        if domain.import_route_targets or domain.export_route_targets:
            problems.append(
                "spec.routeTargets applies to the IP-VRF of an l3vni attachment; "
                "this VRFDomain has none"
            )
        if domain.import_prefixes:
            problems.append(
                "spec.importPrefixes applies to the IP-VRF of an l3vni attachment; "
                "this VRFDomain has none"
            )
    return problems
