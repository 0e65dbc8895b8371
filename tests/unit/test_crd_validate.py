from __future__ import annotations

import itertools
from dataclasses import replace
from typing import Any

import pytest

from pyroute2_cni.frr.vrf_routing import any_as_imports
from pyroute2_cni.kube.crd_validate import (
    REASON_ACCEPTED,
    REASON_CONFLICT,
    REASON_DUPLICATE_ROUTE_TARGET,
    REASON_DUPLICATE_TABLE,
    REASON_DUPLICATE_VNI,
    REASON_DUPLICATE_VRF,
    REASON_INVALID,
    REASON_OVERLAP,
    REASON_PREFIX_CHANGE_REFUSED,
    BlockCut,
    DomainCandidate,
    LiveBlock,
    field_problems,
    validate_domains,
)
from pyroute2_cni.messages.crd import Attachment, AttachmentType, ImportPrefix, VrfDomainSpec
from tests.harness.domains import SYSTEM_DOMAIN

pytestmark = pytest.mark.unit

L2, L3 = AttachmentType.L2VNI, AttachmentType.L3VNI
SYSTEM_VRF = 42


def domain(
    name: str,
    *,
    vrf: int,
    table: int | None = None,
    prefix: str = "10.1.0.0",
    prefixlen: int = 16,
    ipblocklen: int = 26,
    attachments: tuple[Attachment, ...] | None = None,
) -> VrfDomainSpec:
    return VrfDomainSpec(
        name=name,
        vrf=vrf,
        table=table if table is not None else 10000 + vrf,
        prefix=prefix,
        prefixlen=prefixlen,
        ipblocklen=ipblocklen,
        attachments=attachments
        if attachments is not None
        else (Attachment(type=L3, vni=60000 + vrf, port=4789),),
    )


def cand(spec: VrfDomainSpec, created: str = "2024-01-01T00:00:00Z") -> DomainCandidate:
    return DomainCandidate(name=spec.name, created=created, spec=spec)


# The README's VRFDomain example and the default domain of its ConfigMap.
README_VRF_200 = VrfDomainSpec(
    name="vrf-200",
    vrf=200,
    table=10200,
    prefix="10.1.0.0",
    prefixlen=16,
    ipblocklen=26,
    attachments=(Attachment(type=L3, vni=60200, port=4789),),
)
README_DEFAULT = SYSTEM_DOMAIN
# The IPBlocks of the README's maintenance section: vrf 200 at 10.150.0.0/24-ish.
README_VRF_200_BLOCKS = VrfDomainSpec(
    name="vrf-200",
    vrf=200,
    table=10200,
    prefix="10.150.0.0",
    prefixlen=16,
    ipblocklen=26,
    attachments=(Attachment(type=L3, vni=60200, port=4789),),
)


@pytest.mark.parametrize("spec", [README_VRF_200, README_DEFAULT, README_VRF_200_BLOCKS])
def test_readme_examples_are_valid(spec: VrfDomainSpec) -> None:
    assert field_problems(spec) == []


def test_readme_example_and_default_domain_are_accepted_together() -> None:
    verdicts = validate_domains(
        [cand(README_DEFAULT), cand(README_VRF_200, "2024-01-02T00:00:00Z")], SYSTEM_VRF
    )
    assert all(v.accepted for v in verdicts.values()), verdicts
    assert verdicts["vrf-200"].reason == REASON_ACCEPTED


def test_both_attachment_types_are_valid() -> None:
    spec = domain(
        "vrf-7",
        vrf=7,
        attachments=(Attachment(type=L2, vni=700), Attachment(type=L3, vni=701)),
    )
    assert field_problems(spec) == []


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        (
            {"prefixlen": 24, "ipblocklen": 20},
            "spec.ipblocklen (20) must be greater than spec.prefixlen (24) and at most 30",
        ),
        (
            {"prefixlen": 24, "ipblocklen": 24},
            "spec.ipblocklen (24) must be greater than spec.prefixlen (24)",
        ),
        ({"ipblocklen": 31}, "spec.ipblocklen (31) must be greater than spec.prefixlen (16)"),
        (
            {"prefix": "10.1.2.0"},
            "spec.prefix (10.1.2.0) must be aligned to spec.prefixlen (16): "
            "the network address is 10.1.0.0",
        ),
        ({"prefix": "10.1.0"}, "spec.prefix ('10.1.0') must be an IPv4 address"),
        ({"prefixlen": 7}, "spec.prefixlen (7) must be from 8 to 30"),
        ({"vrf": 0}, "spec.vrf (0) must be from 1 to 65535"),
        ({"table": 254}, "spec.table (254) must not be a reserved kernel table"),
        ({"table": 0}, "spec.table (0) must be from 1 to 4294967294"),
    ],
)
def test_field_rules(changes: dict[str, object], expected: str) -> None:
    base = {
        "name": "d",
        "vrf": 5,
        "table": 105,
        "prefix": "10.1.0.0",
        "prefixlen": 16,
        "ipblocklen": 26,
        "attachments": (Attachment(type=L3, vni=500),),
    }
    spec = VrfDomainSpec(**{**base, **changes})  # type: ignore[arg-type]
    problems = field_problems(spec)
    assert any(expected in p for p in problems), problems
    verdict = validate_domains([cand(spec)], SYSTEM_VRF)["d"]
    assert not verdict.accepted
    assert verdict.reason == REASON_INVALID
    assert expected in verdict.message


def test_attachment_rules() -> None:
    two_l3 = domain(
        "a", vrf=5, attachments=(Attachment(type=L3, vni=1), Attachment(type=L3, vni=2))
    )
    assert any("only one attachment of each type" in p for p in field_problems(two_l3))
    same_vni = domain(
        "b", vrf=5, attachments=(Attachment(type=L2, vni=9), Attachment(type=L3, vni=9))
    )
    assert any("spec.attachments[1].vni (9) is used twice" in p for p in field_problems(same_vni))
    none = domain("c", vrf=5, attachments=())
    assert any("one or two entries" in p for p in field_problems(none))
    bad = domain("d", vrf=5, attachments=(Attachment(type=L3, vni=0, port=0),))
    problems = field_problems(bad)
    assert any("spec.attachments[0].vni (0)" in p for p in problems)
    assert any("spec.attachments[0].port (0)" in p for p in problems)


def test_every_problem_is_reported_at_once() -> None:
    spec = domain("x", vrf=5, prefix="10.1.2.0", prefixlen=16, ipblocklen=12)
    message = validate_domains([cand(spec)], SYSTEM_VRF)["x"].message
    assert "spec.ipblocklen (12)" in message
    assert "spec.prefix (10.1.2.0)" in message


def test_unreadable_object_is_rejected_with_its_error() -> None:
    verdict = validate_domains(
        [DomainCandidate(name="broken", spec=None, error="spec.vrf is missing")], SYSTEM_VRF
    )["broken"]
    assert (verdict.accepted, verdict.reason, verdict.message) == (
        False,
        REASON_INVALID,
        "spec.vrf is missing",
    )


def test_duplicate_vni_across_domains_older_wins() -> None:
    old = domain("old", vrf=10, attachments=(Attachment(type=L3, vni=777),))
    new = domain("new", vrf=11, prefix="10.2.0.0", attachments=(Attachment(type=L3, vni=777),))
    verdicts = validate_domains(
        [cand(new, "2024-01-02T00:00:00Z"), cand(old, "2024-01-01T00:00:00Z")], SYSTEM_VRF
    )
    assert verdicts["old"].accepted
    assert not verdicts["new"].accepted
    assert verdicts["new"].reason == REASON_DUPLICATE_VNI
    assert "spec.attachments[0].vni (777) is already used by VRFDomain old" in (
        verdicts["new"].message
    )


def test_same_creation_time_falls_back_to_name() -> None:
    a = domain("aaa", vrf=10)
    b = domain(
        "bbb", vrf=10, table=999, prefix="10.2.0.0", attachments=(Attachment(type=L3, vni=5),)
    )
    verdicts = validate_domains([cand(b), cand(a)], SYSTEM_VRF)
    assert verdicts["aaa"].accepted
    assert verdicts["bbb"].reason == REASON_DUPLICATE_VRF


def test_missing_timestamp_sorts_last() -> None:
    a = domain("zzz", vrf=10)
    b = domain("aaa", vrf=11, table=a.table, prefix="10.2.0.0")
    verdicts = validate_domains([cand(a), DomainCandidate(name="aaa", spec=b)], SYSTEM_VRF)
    assert verdicts["zzz"].accepted
    assert verdicts["aaa"].reason == REASON_DUPLICATE_TABLE


def test_tenant_prefixes_may_overlap() -> None:
    a = domain("t1", vrf=100, prefix="10.50.0.0")
    b = domain("t2", vrf=101, prefix="10.50.0.0")
    verdicts = validate_domains([cand(a), cand(b, "2024-01-02T00:00:00Z")], SYSTEM_VRF)
    assert verdicts["t1"].accepted and verdicts["t2"].accepted


@pytest.mark.parametrize("system_is_older", [True, False])
def test_system_vrf_must_not_overlap(system_is_older: bool) -> None:
    system = domain("sys", vrf=SYSTEM_VRF, prefix="10.244.0.0", prefixlen=16)
    tenant = domain("ten", vrf=300, prefix="10.244.128.0", prefixlen=17)
    times = ("2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z")
    sys_time, ten_time = times if system_is_older else times[::-1]
    verdicts = validate_domains([cand(system, sys_time), cand(tenant, ten_time)], SYSTEM_VRF)
    loser = "ten" if system_is_older else "sys"
    winner = "sys" if system_is_older else "ten"
    assert verdicts[winner].accepted
    assert verdicts[loser].reason == REASON_OVERLAP
    assert "only tenant VRFs may overlap and sys is the system VRF" in verdicts[loser].message


def test_several_kinds_of_conflict_are_named_together() -> None:
    a = domain("a", vrf=10)
    b = domain("b", vrf=10, table=a.table, attachments=a.attachments)
    verdict = validate_domains([cand(a), cand(b, "2024-01-02T00:00:00Z")], SYSTEM_VRF)["b"]
    assert verdict.reason == REASON_CONFLICT
    for text in ("spec.vrf (10)", "spec.table (10010)", "spec.attachments[0].vni (60010)"):
        assert text in verdict.message


def test_invalid_domain_does_not_block_a_valid_one() -> None:
    invalid = domain("bad", vrf=10, ipblocklen=8)
    valid = domain("good", vrf=10)
    verdicts = validate_domains(
        [cand(invalid, "2024-01-01T00:00:00Z"), cand(valid, "2024-01-02T00:00:00Z")], SYSTEM_VRF
    )
    assert verdicts["bad"].reason == REASON_INVALID
    assert verdicts["good"].accepted


def test_verdicts_do_not_depend_on_input_order() -> None:
    specs = [
        cand(domain("a", vrf=10), "2024-01-01T00:00:00Z"),
        cand(
            domain("b", vrf=11, attachments=(Attachment(type=L3, vni=60010),)),
            "2024-01-02T00:00:00Z",
        ),
        cand(domain("c", vrf=SYSTEM_VRF, prefix="10.1.0.0"), "2024-01-03T00:00:00Z"),
        cand(domain("d", vrf=12, prefix="10.9.0.0"), "2024-01-01T00:00:00Z"),
    ]
    results = {
        tuple(sorted(validate_domains(order, SYSTEM_VRF).items()))
        for order in itertools.permutations(specs)
    }
    assert len(results) == 1
    verdicts = dict(next(iter(results)))
    assert [n for n, v in sorted(verdicts.items()) if v.accepted] == ["a", "d"]


# -- re-cutting live blocks (issue #14 item 5) --------------------------------------------
OLD_CUT = BlockCut(vrf=200, prefix="10.1.0.0", prefixlen=16, ipblocklen=26)
LIVE = (
    LiveBlock(name="vrf-200-10-1-0-0-26", cidr="10.1.0.0/26", vrf=200, pods=3),
    LiveBlock(name="vrf-200-10-1-0-64-26", cidr="10.1.0.64/26", vrf=200, pods=0),
)


def recut(
    spec: VrfDomainSpec,
    blocks: tuple[LiveBlock, ...] | None = LIVE,
    blocks_error: str = "",
) -> DomainCandidate:
    return DomainCandidate(
        name=spec.name,
        created="2024-01-01T00:00:00Z",
        spec=spec,
        cut=OLD_CUT,
        blocks=blocks,
        blocks_error=blocks_error,
    )


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ({"prefix": "10.2.0.0"}, "spec.prefix/prefixlen 10.1.0.0/16 -> 10.2.0.0/16"),
        ({"ipblocklen": 27}, "spec.ipblocklen 26 -> 27"),
        ({"prefixlen": 17, "prefix": "10.1.128.0"}, "10.1.0.0/16 -> 10.1.128.0/17"),
        ({"vrf": 201}, "spec.vrf 200 -> 201"),
    ],
    ids=["prefix", "ipblocklen", "narrower", "vrf"],
)
def test_a_change_that_strands_live_blocks_is_refused(change: dict[str, object], said: str) -> None:
    new = replace(domain("vrf-200", vrf=200, table=10200), **change)  # type: ignore[arg-type]
    verdict = validate_domains([recut(new)], SYSTEM_VRF)["vrf-200"]
    assert not verdict.accepted
    assert verdict.reason == REASON_PREFIX_CHANGE_REFUSED
    assert said in verdict.message
    # Says what happens to the blocks and what to do.
    assert "2 IPBlocks (3 pod addresses)" in verdict.message
    assert "vrf-200-10-1-0-0-26" in verdict.message
    assert "keeps deploying vrf 200, 10.1.0.0/16 with /26 blocks" in verdict.message
    assert "revert the change, or drain the pods" in verdict.message
    # Every node goes on with the old cut and the new values of the other fields.
    assert verdict.deployed == replace(new, vrf=200, prefix="10.1.0.0", prefixlen=16, ipblocklen=26)
    assert verdict.cut == OLD_CUT


def test_a_change_the_live_blocks_fit_is_accepted() -> None:
    wider = domain("vrf-200", vrf=200, table=10200, prefix="10.0.0.0", prefixlen=15)
    verdict = validate_domains([recut(wider)], SYSTEM_VRF)["vrf-200"]
    assert verdict.accepted and verdict.reason == REASON_ACCEPTED
    assert verdict.deployed == wider
    assert verdict.cut == BlockCut(vrf=200, prefix="10.0.0.0", prefixlen=15, ipblocklen=26)


def test_a_change_without_blocks_is_accepted() -> None:
    moved = domain("vrf-200", vrf=200, table=10200, prefix="10.2.0.0")
    verdict = validate_domains([recut(moved, blocks=())], SYSTEM_VRF)["vrf-200"]
    assert verdict.accepted and verdict.deployed == moved


def test_blocks_that_cannot_be_listed_keep_the_old_cut() -> None:
    moved = domain("vrf-200", vrf=200, table=10200, prefix="10.2.0.0")
    verdict = validate_domains(
        [recut(moved, blocks=None, blocks_error="503 ServiceUnavailable")], SYSTEM_VRF
    )["vrf-200"]
    assert verdict.reason == REASON_PREFIX_CHANGE_REFUSED
    assert "cannot list IPBlocks (503 ServiceUnavailable)" in verdict.message
    assert verdict.deployed is not None and verdict.deployed.prefix == "10.1.0.0"


def test_the_old_cut_is_what_conflicts_are_checked_against() -> None:
    # The refused domain still holds 10.1.0.0/16 on every node, so the system VRF
    # may not take it even though the spec now says 10.2.0.0.
    moved = domain("vrf-200", vrf=200, table=10200, prefix="10.2.0.0")
    system = domain("vrf-42", vrf=SYSTEM_VRF, prefix="10.1.0.0")
    verdicts = validate_domains(
        [recut(moved), cand(system, created="2030-01-01T00:00:00Z")], SYSTEM_VRF
    )
    assert verdicts["vrf-200"].reason == REASON_PREFIX_CHANGE_REFUSED
    assert verdicts["vrf-42"].reason == REASON_OVERLAP


# -- routing policy (spec.routeTargets, importPrefixes, acceptDefaultRoute) ------------------


def with_policy(
    spec: VrfDomainSpec,
    *,
    imports: tuple[str, ...] = (),
    exports: tuple[str, ...] = (),
    prefixes: tuple[ImportPrefix, ...] = (),
) -> VrfDomainSpec:
    return replace(
        spec, import_route_targets=imports, export_route_targets=exports, import_prefixes=prefixes
    )


def test_valid_routing_policy() -> None:
    spec = with_policy(
        README_VRF_200,
        imports=("65100:200", "10.0.0.1:200", "4200000000:65535", "65000:4294967295"),
        exports=("65100:200",),
        prefixes=(
            ImportPrefix(cidr="192.0.2.0/24", le=24),
            ImportPrefix(cidr="0.0.0.0/0", le=32),
            ImportPrefix(cidr="203.0.113.7/32"),
        ),
    )
    assert field_problems(spec) == []


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ({"imports": ("0:1",)}, "'0:1': the AS number must be from 1 to 4294967295"),
        ({"imports": ("4294967296:1",)}, "the AS number must be from 1 to 4294967295"),
        ({"exports": ("65536:65536",)}, "with a 4-byte AS number the value must be <= 65535"),
        ({"exports": ("65000:4294967296",)}, "2-byte AS number the value must be <= 4294967295"),
        ({"imports": ("10.0.0.1:65536",)}, "with an IPv4 address the value must be <= 65535"),
        ({"imports": ("10.0.0.256:1",)}, "10.0.0.256 is not an IPv4 address"),
        ({"imports": ("65000",)}, "spec.routeTargets.import[0] '65000' is not ASN:NN"),
        ({"imports": ("65000:1", "65000:01")}, "spec.routeTargets.import lists 65000:1 more"),
        (
            {"prefixes": (ImportPrefix(cidr="192.0.2.1/24"),)},
            "spec.importPrefixes[0].cidr (192.0.2.1/24) has host bits set: the network is "
            "192.0.2.0/24",
        ),
        ({"prefixes": (ImportPrefix(cidr="192.0.2.0/33"),)}, "has an invalid prefix length"),
        ({"prefixes": (ImportPrefix(cidr="fd00::/8"),)}, "is not an IPv4 CIDR"),
        (
            {"prefixes": (ImportPrefix(cidr="192.0.2.0/24", le=23),)},
            "spec.importPrefixes[0].le (23) must be from the prefix length (24) to 32",
        ),
        ({"prefixes": (ImportPrefix(cidr="192.0.2.0/24", le=33),)}, "le (33) must be"),
        (
            {"prefixes": (ImportPrefix(cidr="0.0.0.0/0"),)},
            "is the default route: set spec.acceptDefaultRoute to true instead",
        ),
        (
            {"prefixes": (ImportPrefix(cidr="192.0.2.0/24"), ImportPrefix(cidr="192.0.2.0/24"))},
            "spec.importPrefixes lists 192.0.2.0/24 more than once",
        ),
    ],
)
def test_invalid_routing_policy(policy: dict[str, Any], message: str) -> None:
    problems = field_problems(with_policy(README_VRF_200, **policy))
    assert len(problems) == 1, problems
    assert message in problems[0]
    verdict = validate_domains([cand(with_policy(README_VRF_200, **policy))], SYSTEM_VRF)
    assert (verdict["vrf-200"].accepted, verdict["vrf-200"].reason) == (False, REASON_INVALID)


def test_routing_policy_needs_an_l3vni() -> None:
    l2_only = domain("l2", vrf=300, attachments=(Attachment(type=L2, vni=50300, port=4789),))
    spec = with_policy(l2_only, exports=("65100:1",), prefixes=(ImportPrefix(cidr="10.0.0.0/8"),))
    problems = field_problems(spec)
    assert [p.split(" applies")[0] for p in problems] == [
        "spec.routeTargets",
        "spec.importPrefixes",
    ]
    # acceptDefaultRoute has nothing to act on but is not an error.
    assert field_problems(replace(l2_only, accept_default_route=False)) == []


def test_export_into_another_domains_import_is_a_leak() -> None:
    older = domain("a", vrf=201, prefix="10.1.0.0")
    # b exports a's derived route target: a would install b's routes.
    newer = with_policy(domain("b", vrf=202, prefix="10.2.0.0"), exports=("65000:201",))
    verdicts = validate_domains([cand(older), cand(newer, "2024-01-02T00:00:00Z")], SYSTEM_VRF)
    assert verdicts["a"].accepted
    assert (verdicts["b"].accepted, verdicts["b"].reason) == (False, REASON_DUPLICATE_ROUTE_TARGET)
    assert "route targets 65000:201 would carry routes" in verdicts["b"].message
    # The AS is the cluster's: with another one the derived values differ.
    other_as = validate_domains(
        [cand(older), cand(newer, "2024-01-02T00:00:00Z")], SYSTEM_VRF, asn=65001
    )
    assert other_as["b"].accepted


def test_import_of_another_domains_export_and_of_an_l2vni_are_leaks() -> None:
    older = with_policy(domain("a", vrf=201, prefix="10.1.0.0"), exports=("65100:7",))
    importer = with_policy(domain("b", vrf=202, prefix="10.2.0.0"), imports=("65100:7",))
    l2 = domain("c", vrf=300, prefix="10.3.0.0", attachments=(Attachment(type=L2, vni=50300),))
    importer_of_l2 = with_policy(domain("d", vrf=203, prefix="10.4.0.0"), imports=("65000:50300",))
    verdicts = validate_domains(
        [
            cand(older),
            cand(l2),
            cand(importer, "2024-01-02T00:00:00Z"),
            cand(importer_of_l2, "2024-01-02T00:00:00Z"),
        ],
        SYSTEM_VRF,
    )
    assert verdicts["a"].accepted and verdicts["c"].accepted
    assert verdicts["b"].reason == REASON_DUPLICATE_ROUTE_TARGET
    assert verdicts["d"].reason == REASON_DUPLICATE_ROUTE_TARGET
    assert "65000:50300" in verdicts["d"].message


def test_shared_imports_and_derived_values_are_not_leaks() -> None:
    # Two tenants import one shared external VRF's route target: allowed.
    a = with_policy(domain("a", vrf=201, prefix="10.1.0.0"), imports=("65000:201", "65100:999"))
    b = with_policy(domain("b", vrf=202, prefix="10.2.0.0"), imports=("65000:202", "65100:999"))
    # An l2vni equal to another domain's vrf id (derived values only) is left to
    # frr.model as before this check existed.
    d = domain("d", vrf=204, prefix="10.4.0.0")
    c = domain("c", vrf=300, prefix="10.3.0.0", attachments=(Attachment(type=L2, vni=204),))
    verdicts = validate_domains(
        [
            cand(a),
            cand(b, "2024-01-02T00:00:00Z"),
            cand(d, "2024-01-02T00:00:00Z"),
            cand(c, "2024-01-03T00:00:00Z"),
        ],
        SYSTEM_VRF,
    )
    assert all(v.accepted for v in verdicts.values()), verdicts


def test_automatic_import_route_target_takes_any_as() -> None:
    """vrf-42 with L3VNI 42 imports with FRR's automatic route target, which FRR 8.4
    matches on the value alone: an export of 65100:42 elsewhere reaches it."""
    assert any_as_imports(65000, README_DEFAULT) == frozenset({42})
    assert any_as_imports(65000, README_VRF_200) == frozenset()  # 65000:200 is written
    assert any_as_imports(65000, with_policy(README_DEFAULT, imports=("65100:1",))) == set()
    l2 = domain("l2", vrf=300, attachments=(Attachment(type=L2, vni=50300),))
    assert any_as_imports(65000, l2) == frozenset({50300})
    assert any_as_imports(4200000000, l2) == frozenset()  # 4200000000:50300 is written
    exporter = with_policy(domain("b", vrf=202, prefix="10.2.0.0"), exports=("10.9.9.9:42",))
    verdicts = validate_domains(
        [cand(README_DEFAULT), cand(exporter, "2024-01-02T00:00:00Z")], SYSTEM_VRF
    )
    assert verdicts["b"].reason == REASON_DUPLICATE_ROUTE_TARGET
    assert "10.9.9.9:42" in verdicts["b"].message
    strict = with_policy(domain("c", vrf=203, prefix="10.3.0.0"), exports=("65100:200",))
    verdicts = validate_domains(
        [cand(README_VRF_200), cand(strict, "2024-01-02T00:00:00Z")], SYSTEM_VRF
    )
    assert verdicts["c"].accepted


# -- route targets of an l2vni (spec.attachments[].routeTargets) ------------------------


def l2_attachment(vni: int, imports: tuple[str, ...] = (), exports: tuple[str, ...] = ()) -> Any:
    return Attachment(type=L2, vni=vni, import_route_targets=imports, export_route_targets=exports)


def test_l2vni_route_targets_are_checked_like_the_vrfs() -> None:
    good = domain(
        "l2",
        vrf=300,
        attachments=(l2_attachment(50300, ("65100:300", "10.0.0.1:300"), ("65100:300",)),),
    )
    assert field_problems(good) == []
    bad = domain(
        "l2", vrf=300, attachments=(l2_attachment(50300, ("65000",), ("65000:1", "65000:01")),)
    )
    problems = field_problems(bad)
    assert len(problems) == 1, problems  # the first bad list stops that step
    assert "spec.attachments[0].routeTargets.import[0] '65000' is not ASN:NN" in problems[0]
    verdict = validate_domains([cand(bad)], SYSTEM_VRF)["l2"]
    assert (verdict.accepted, verdict.reason) == (False, REASON_INVALID)


def test_attachment_route_targets_only_on_the_l2vni() -> None:
    l3_with_rts = Attachment(type=L3, vni=60300, export_route_targets=("65100:1",))
    problems = field_problems(domain("l3", vrf=301, attachments=(l3_with_rts,)))
    assert problems == [
        "spec.attachments[0].routeTargets applies to an l2vni attachment; the route targets "
        "of the l3vni's IP-VRF are spec.routeTargets"
    ]


def test_explicit_l2vni_route_targets_leak_like_the_vrfs() -> None:
    # The older MAC-VRF imports a fabric segment's value; a newer one exporting it
    # would join the two layer-2 domains.
    older = domain(
        "a", vrf=301, prefix="10.1.0.0", attachments=(l2_attachment(50301, ("65100:7",)),)
    )
    newer = domain(
        "b", vrf=302, prefix="10.2.0.0", attachments=(l2_attachment(50302, (), ("65100:7",)),)
    )
    verdicts = validate_domains([cand(older), cand(newer, "2024-01-02T00:00:00Z")], SYSTEM_VRF)
    assert verdicts["a"].accepted
    assert (verdicts["b"].accepted, verdicts["b"].reason) == (False, REASON_DUPLICATE_ROUTE_TARGET)
    assert "65100:7" in verdicts["b"].message
    # Explicit imports are matched exactly: no any-AS import for that VNI.
    assert any_as_imports(65000, older) == frozenset()
    assert any_as_imports(65000, domain("c", vrf=303, attachments=(l2_attachment(50303),))) == {
        50303
    }
