"""The FRR routing model and its rendering: golden files and properties.

Golden files live in tests/golden/frr/, one per scenario.  Regenerate them
explicitly and review the diff:

    PYROUTE2_CNI_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/unit/test_frr_render.py

tests/kernel/test_frr_golden.py feeds every golden file to the real FRR
parser (frr-reload.py --test).
"""

from __future__ import annotations

import ipaddress
import os
import random
import re
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyroute2_cni.frr.model import (
    FrrConfig,
    FrrModelError,
    ImportFilter,
    PeeringMode,
    build_frr_config,
    render,
    render_vrf_bindings,
)
from pyroute2_cni.frr.vrf_routing import PrefixEntry
from pyroute2_cni.messages.crd import (
    Attachment,
    AttachmentType,
    ImportPrefix,
    NodeInfo,
    NodeInterface,
    VrfDomainSpec,
    VrfNodeConfigSpec,
)

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
GOLDEN_DIR = REPO / "tests" / "golden" / "frr"
UPDATE = os.environ.get("PYROUTE2_CNI_UPDATE_GOLDEN") == "1"

# ------------------------------------------------------------------ fixtures


def l3(vni: int) -> Attachment:
    return Attachment(type=AttachmentType.L3VNI, vni=vni)


def l2(vni: int) -> Attachment:
    return Attachment(type=AttachmentType.L2VNI, vni=vni)


def domain(vrf: int, table: int, prefix: str, *attachments: Attachment) -> VrfDomainSpec:
    return VrfDomainSpec(
        name=f"vrf-{vrf}",
        vrf=vrf,
        table=table,
        prefix=prefix,
        prefixlen=16,
        ipblocklen=26,
        attachments=attachments,
    )


def node(index: int) -> NodeInfo:
    return NodeInfo(name=f"k8s0{index}", internal_ip=f"192.168.124.{index}")


# The default VRFDomain the daemon creates from server.ini ([default] vrf = 42).
VRF_42 = domain(42, 42, "10.244.0.0", l3(42))
VRF_200 = domain(200, 10200, "10.150.0.0", l3(60200), l2(50200))
VRF_300 = domain(300, 10300, "10.160.0.0", l2(50300))
THREE = (node(1), node(2), node(3))


@dataclass(frozen=True)
class Scenario:
    node: str
    domains: tuple[VrfDomainSpec, ...]
    nodes: tuple[NodeInfo, ...]
    node_configs: tuple[VrfNodeConfigSpec, ...] = ()
    asn: int = 65000

    def build(self) -> FrrConfig:
        return build_frr_config(
            node=self.node,
            asn=self.asn,
            domains=self.domains,
            node_configs=self.node_configs,
            nodes=self.nodes,
        )


def policy(
    base: VrfDomainSpec,
    *,
    imports: tuple[str, ...] = (),
    exports: tuple[str, ...] = (),
    prefixes: tuple[ImportPrefix, ...] = (),
    accept_default: bool = True,
) -> VrfDomainSpec:
    return replace(
        base,
        import_route_targets=imports,
        export_route_targets=exports,
        import_prefixes=prefixes,
        accept_default_route=accept_default,
    )


# A fabric whose VRFs use their own route targets (issue 21, item 3): vrf-200
# imports two values (one an IPv4-address RT) and exports one; vrf-42 adds the
# fabric's value to its own, which FRR derives itself (written last).
FABRIC_200 = policy(VRF_200, imports=("65100:200", "10.0.0.1:200"), exports=("65100:200",))
FABRIC_42 = policy(VRF_42, imports=("65100:42", "65000:42"))
# Bounded imports (item 4): vrf-200 accepts two external networks and no
# default route; vrf-42 accepts anything but the default route.
FILTERED_200 = policy(
    VRF_200,
    prefixes=(
        ImportPrefix(cidr="198.51.100.0/24"),
        ImportPrefix(cidr="192.0.2.0/24", le=28),
    ),
    accept_default=False,
)
FILTERED_42 = policy(VRF_42, accept_default=False)
# A stretched segment of the fabric (spec.attachments[].routeTargets): vrf-300's
# MAC-VRF imports the fabric's value and its own derived one (written last), and
# exports the fabric's.
FABRIC_300 = replace(
    VRF_300,
    attachments=(
        Attachment(
            type=AttachmentType.L2VNI,
            vni=50300,
            import_route_targets=("65100:300", "65000:50300"),
            export_route_targets=("65100:300",),
        ),
    ),
)


SCENARIOS: dict[str, Scenario] = {
    # One node, the default domain: no peers yet.
    "single-node-vrf42": Scenario(node="k8s01", domains=(VRF_42,), nodes=(node(1),)),
    # Three nodes, no VRFNodeConfig: full iBGP mesh on the InternalIPs.
    "mesh-3-nodes": Scenario(node="k8s01", domains=(VRF_42,), nodes=THREE),
    # The README's VRFNodeConfig: k8s02 peers only with its route reflector.
    "route-reflectors": Scenario(
        node="k8s02",
        domains=(VRF_42,),
        nodes=THREE,
        node_configs=(
            VrfNodeConfigSpec(
                name="k8s02-vrnc",
                node="k8s02",
                router_id="192.168.124.2",
                route_reflectors=("192.168.124.1",),
                interfaces=(NodeInterface(name="eth1", local="192.168.124.2"),),
            ),
        ),
    ),
    # A domain with both attachments next to the default one.
    "l2vni-l3vni": Scenario(node="k8s01", domains=(VRF_42, VRF_200), nodes=THREE),
    # vrf-200 was deleted; vrf-42 and the layer-2-only vrf-300 stay.
    "domain-removed": Scenario(node="k8s01", domains=(VRF_42, VRF_300), nodes=THREE),
    # k8s03 left the cluster: its session goes, nothing else changes.
    "node-removed": Scenario(node="k8s01", domains=(VRF_42, VRF_200), nodes=THREE[:2]),
    # Explicit route targets (spec.routeTargets).
    "route-targets": Scenario(node="k8s01", domains=(FABRIC_42, FABRIC_200), nodes=THREE),
    # Route targets of an l2vni's MAC-VRF, next to an l2vni with derived ones.
    "l2vni-route-targets": Scenario(
        node="k8s01", domains=(VRF_42, VRF_200, FABRIC_300), nodes=THREE
    ),
    # Import filters (spec.importPrefixes, spec.acceptDefaultRoute); the
    # layer-2-only vrf-300 has no IP-VRF to filter.
    "import-filter": Scenario(
        node="k8s01", domains=(FILTERED_42, FILTERED_200, VRF_300), nodes=THREE
    ),
}


# -------------------------------------------------------------- golden files


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_golden(name: str) -> None:
    path = GOLDEN_DIR / f"{name}.conf"
    text = render(SCENARIOS[name].build())
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"{path} missing: run with PYROUTE2_CNI_UPDATE_GOLDEN=1"
    assert text == path.read_text(), f"{path} differs: review, then regenerate"


def test_no_stale_golden_files() -> None:
    on_disk = {p.stem for p in GOLDEN_DIR.glob("*.conf")}
    assert on_disk == set(SCENARIOS)


def test_golden_has_no_host_specific_lines() -> None:
    for name in SCENARIOS:
        text = (GOLDEN_DIR / f"{name}.conf").read_text()
        assert not re.search(r"^hostname ", text, re.M), name
        assert not re.search(r"^ip forwarding", text, re.M), name
        assert "no ipv6 forwarding\n" in text
        assert text.endswith("end\n")


def test_hostname_is_rendered_when_known_and_checked() -> None:
    model = SCENARIOS["mesh-3-nodes"].build()
    assert "\nhostname " not in render(model)
    named = replace(model, hostname="worker-7.example")
    lines = render(named).splitlines()
    assert lines[1:3] == ["frr defaults traditional", "hostname worker-7.example"]
    built = build_frr_config(
        node="k8s01", asn=65000, domains=(VRF_42,), node_configs=(), nodes=THREE, hostname="h1"
    )
    assert built.hostname == "h1"
    for odd, rendered in (("my_host", "my_host"), ("two words", ""), ("x\nrouter bgp 1", "")):
        config = build_frr_config(
            node="k8s01",
            asn=65000,
            domains=(VRF_42,),
            node_configs=(),
            nodes=THREE,
            hostname=odd,
        )
        assert config.hostname == rendered  # nothing smuggled into frr.conf
        assert "router bgp 1\n" not in render(config)


def test_domain_removed_leaves_nothing_behind() -> None:
    with_200 = Scenario(node="k8s01", domains=(VRF_42, VRF_200, VRF_300), nodes=THREE)
    without = SCENARIOS["domain-removed"]
    assert "vrf-200" in render(with_200.build())
    text = render(without.build())
    assert "vrf-200" not in text and "60200" not in text and "50200" not in text
    assert text == render(replace(with_200, domains=(VRF_42, VRF_300)).build())


def test_node_removed_drops_only_its_session() -> None:
    before = render(SCENARIOS["l2vni-l3vni"].build()).splitlines()
    after = render(SCENARIOS["node-removed"].build()).splitlines()
    assert sorted(set(before) - set(after)) == [
        " neighbor 192.168.124.3 description k8s03",
        " neighbor 192.168.124.3 peer-group fabric",
    ]
    assert set(after) <= set(before)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_vrf_bindings_are_the_vrf_blocks_of_the_full_config(name: str) -> None:
    config = SCENARIOS[name].build()
    bindings = render_vrf_bindings(config)
    blocks = re.findall(r"^vrf \S+\n vni \d+\nexit-vrf\n!\n", render(config), re.M)
    assert bindings == "".join(blocks)
    assert len(blocks) == len(config.vrfs)


# ------------------------------------------------------------- model details


def test_single_node_model() -> None:
    config = SCENARIOS["single-node-vrf42"].build()
    assert config.router_id == "192.168.124.1"
    assert config.update_source == "192.168.124.1"
    assert config.mode is PeeringMode.MESH
    assert config.neighbors == ()
    (vrf,) = config.vrfs
    assert (vrf.name, vrf.table, vrf.l3vni) == ("vrf-42", 42, 42)
    assert vrf.rd == "192.168.124.1:42"
    assert vrf.import_targets == vrf.export_targets == ("65000:42",)
    # FRR derives 65000:42 for L3VNI 42 by itself and would hide the line.
    assert vrf.written_imports == vrf.written_exports == ()
    assert config.rejected == ()


def test_l2vni_and_l3vni_model() -> None:
    config = SCENARIOS["l2vni-l3vni"].build()
    vrf200 = next(v for v in config.vrfs if v.vrf == 200)
    assert (vrf200.l3vni, vrf200.rd, vrf200.import_targets, vrf200.export_targets) == (
        60200,
        "192.168.124.1:200",
        ("65000:200",),
        ("65000:200",),
    )
    assert vrf200.written_imports == vrf200.written_exports == ("65000:200",)
    (l2vni,) = config.l2vnis
    assert (l2vni.vni, l2vni.vrf, l2vni.rd, l2vni.import_targets, l2vni.export_targets) == (
        50200,
        200,
        "192.168.124.1:200",
        ("65000:50200",),
        ("65000:50200",),
    )
    assert l2vni.written_imports == l2vni.written_exports == ()


def test_router_id_and_underlay_from_node_config() -> None:
    config = build_frr_config(
        node="k8s01",
        asn=65000,
        domains=(VRF_42,),
        node_configs=(
            VrfNodeConfigSpec(
                name="a",
                node="k8s01",
                router_id="10.0.0.1",
                interfaces=(NodeInterface(name="eth1", local="172.16.0.1"),),
            ),
            VrfNodeConfigSpec(
                name="b",
                node="k8s02",
                interfaces=(NodeInterface(name="eth1", local="172.16.0.2"),),
            ),
        ),
        nodes=THREE,
    )
    assert config.router_id == "10.0.0.1"
    assert config.update_source == "172.16.0.1"
    assert [(n.address, n.description) for n in config.neighbors] == [
        ("172.16.0.2", "k8s02"),
        ("192.168.124.3", "k8s03"),
    ]
    assert config.vrfs[0].rd == "10.0.0.1:42"


def test_mesh_skips_nodes_that_use_route_reflectors() -> None:
    config = build_frr_config(
        node="k8s01",
        asn=65000,
        domains=(),
        node_configs=(
            VrfNodeConfigSpec(name="k8s03", node="k8s03", route_reflectors=("192.168.124.9",)),
        ),
        nodes=THREE,
    )
    assert [n.address for n in config.neighbors] == ["192.168.124.2"]
    assert config.vteps == ("192.168.124.2", "192.168.124.3")


def test_route_reflectors_dedup_sort_and_skip_self() -> None:
    config = build_frr_config(
        node="k8s02",
        asn=65000,
        domains=(),
        node_configs=(
            VrfNodeConfigSpec(
                name="x",
                node="k8s02",
                route_reflectors=("10.0.0.10", "10.0.0.9", "10.0.0.10", "192.168.124.2"),
            ),
        ),
        nodes=THREE,
    )
    assert config.mode is PeeringMode.ROUTE_REFLECTORS
    assert [n.address for n in config.neighbors] == ["10.0.0.9", "10.0.0.10"]
    assert {n.description for n in config.neighbors} == {"route-reflector"}
    # The other nodes' VTEPs are known whatever the peering (the EVPN hold needs them).
    assert config.vteps == ("192.168.124.1", "192.168.124.3")


def test_explicit_route_target_and_four_byte_asn() -> None:
    config = build_frr_config(
        node="k8s01",
        asn=4200000000,
        domains=(VRF_42, policy(VRF_200, imports=("64512:7",), exports=("64512:7",))),
        node_configs=(),
        nodes=THREE,
    )
    by_vrf = {v.vrf: v for v in config.vrfs}
    assert by_vrf[42].import_targets == ("4200000000:42",)
    # 4-byte AS: FRR derives 59904:42 (the AS's low 16 bits), not this value.
    assert by_vrf[42].written_imports == ("4200000000:42",)
    assert by_vrf[200].import_targets == by_vrf[200].export_targets == ("64512:7",)
    text = render(config)
    assert "router bgp 4200000000 vrf vrf-200" in text
    assert "route-target import 64512:7" in text
    assert "route-target export 64512:7" in text
    # l2vni 50200 fits the 16-bit local part of a 4-byte-AS route target.
    assert config.l2vnis[0].import_targets == ("4200000000:50200",)
    assert config.l2vnis[0].written_exports == ("4200000000:50200",)


def test_route_target_equal_to_frr_auto_value_of_four_byte_asn_is_not_written() -> None:
    # 4200000000 & 0xffff == 59904: FRR derives 59904:42 for L3VNI 42 by itself.
    config = build_frr_config(
        node="k8s01",
        asn=4200000000,
        domains=(policy(VRF_42, imports=("59904:42",)),),
        node_configs=(),
        nodes=THREE,
    )
    (vrf,) = config.vrfs
    assert vrf.import_targets == ("59904:42",)
    assert vrf.written_imports == ()
    assert vrf.written_exports == ("4200000000:42",)


def test_route_targets_model() -> None:
    config = SCENARIOS["route-targets"].build()
    by_vrf = {v.vrf: v for v in config.vrfs}
    assert by_vrf[200].import_targets == ("10.0.0.1:200", "65100:200")
    assert by_vrf[200].export_targets == ("65100:200",)
    assert by_vrf[200].written_imports == ("10.0.0.1:200", "65100:200")
    # The value FRR derives (65000:42 for L3VNI 42) goes last in a longer list,
    # and alone (export, derived) is not written.
    assert by_vrf[42].import_targets == ("65000:42", "65100:42")
    assert by_vrf[42].written_imports == ("65100:42", "65000:42")
    assert by_vrf[42].written_exports == ()
    # The l2vni of vrf-200 keeps its own route target.
    assert config.l2vnis[0].import_targets == config.l2vnis[0].export_targets == ("65000:50200",)


def test_l2vni_route_targets_model() -> None:
    config = SCENARIOS["l2vni-route-targets"].build()
    by_vni = {v.vni: v for v in config.l2vnis}
    fabric = by_vni[50300]
    assert fabric.import_targets == ("65000:50300", "65100:300")
    assert fabric.export_targets == ("65100:300",)
    # FRR's own value goes last in a longer list; the other l2vni writes nothing.
    assert fabric.written_imports == ("65100:300", "65000:50300")
    assert fabric.written_exports == ("65100:300",)
    assert by_vni[50200].written_imports == by_vni[50200].written_exports == ()
    text = render(config)
    stanza = text.split("  vni 50300\n", 1)[1].split("  exit-vni\n", 1)[0]
    assert stanza.splitlines() == [
        "   rd 192.168.124.1:300",
        "   route-target import 65100:300",
        "   route-target import 65000:50300",
        "   route-target export 65100:300",
    ]


def test_l2vni_beyond_a_four_byte_as_needs_both_lists() -> None:
    # 4200000000:70000 cannot be encoded: the l2vni needs explicit values both ways.
    big = replace(VRF_300, attachments=(Attachment(type=AttachmentType.L2VNI, vni=70000),))
    config = build_frr_config(
        node="k8s01", asn=4200000000, domains=(big,), node_configs=(), nodes=THREE
    )
    assert config.l2vnis == ()
    (rejection,) = config.rejected
    assert "l2vni 70000 does not fit a route target of 4-byte AS 4200000000" in rejection.reason
    listed = replace(
        big,
        attachments=(
            Attachment(
                type=AttachmentType.L2VNI,
                vni=70000,
                import_route_targets=("64512:700",),
                export_route_targets=("64512:700",),
            ),
        ),
    )
    config = build_frr_config(
        node="k8s01", asn=4200000000, domains=(listed,), node_configs=(), nodes=THREE
    )
    assert config.rejected == ()
    assert config.l2vnis[0].written_imports == config.l2vnis[0].written_exports == ("64512:700",)


def test_explicit_l2vni_route_target_of_a_vrf_is_rejected() -> None:
    clash = replace(
        VRF_300,
        attachments=(
            Attachment(type=AttachmentType.L2VNI, vni=50300, export_route_targets=("65000:200",)),
        ),
    )
    config = build_frr_config(
        node="k8s01", asn=65000, domains=(VRF_200, clash), node_configs=(), nodes=THREE
    )
    assert [r.name for r in config.rejected] == ["vrf-300"]
    assert "65000:200 is a route target of vrf-200" in config.rejected[0].reason


def test_route_targets_are_normalised_and_order_free() -> None:
    one = policy(VRF_200, imports=("65100:0200", " 10.0.0.1:7"), exports=("65100:200",))
    two = policy(VRF_200, imports=("10.0.0.1:7", "65100:200"), exports=("65100:200",))
    first = build_frr_config(node="k8s01", asn=65000, domains=(one,), node_configs=(), nodes=THREE)
    second = build_frr_config(node="k8s01", asn=65000, domains=(two,), node_configs=(), nodes=THREE)
    assert render(first) == render(second)
    assert first.vrfs[0].import_targets == ("10.0.0.1:7", "65100:200")


def test_absent_policy_adds_only_the_default_route_filter() -> None:
    """No routing policy fields: the derived route targets, and a filter that drops
    only a default route from the fabric (acceptDefaultRoute defaults to false).
    With acceptDefaultRoute true the configuration is the one rendered before the
    fields existed: the default adds the filter lines and changes nothing else."""
    scenario = SCENARIOS["l2vni-l3vni"]
    text = render(scenario.build())
    assert " table-map vrf-200-import\n" in text and " table-map vrf-42-import\n" in text
    assert "ip prefix-list vrf-42-import seq 5 deny 0.0.0.0/0\n" in text
    assert "ip prefix-list vrf-42-import seq 10 permit 0.0.0.0/0 le 32\n" in text
    assert text.count("route-target import 65000:200\n") == 1
    accepting = replace(
        scenario, domains=tuple(replace(d, accept_default_route=True) for d in scenario.domains)
    )
    before = render(accepting.build())
    assert "table-map" not in before and "prefix-list" not in before
    filters = r"^(?:ip prefix-list .*\n)+!\nroute-map .*\n match .*\nexit\n!\n"
    assert len(re.findall(filters, text, re.M)) == 2
    stripped = re.sub(r"^  table-map .*\n", "", re.sub(filters, "", text, flags=re.M), flags=re.M)
    assert stripped == before


def test_import_filter_model() -> None:
    config = SCENARIOS["import-filter"].build()
    by_vrf = {v.vrf: v for v in config.vrfs}
    assert by_vrf[42].import_filter == ImportFilter(
        name="vrf-42-import",
        entries=(
            PrefixEntry(seq=5, permit=False, prefix="0.0.0.0/0"),
            PrefixEntry(seq=10, permit=True, prefix="0.0.0.0/0", le=32),
        ),
    )
    assert by_vrf[200].import_filter == ImportFilter(
        name="vrf-200-import",
        entries=(
            PrefixEntry(seq=5, permit=False, prefix="0.0.0.0/0"),
            # The domain's own pod network: the other nodes' blocks.
            PrefixEntry(seq=10, permit=True, prefix="10.150.0.0/16", le=32),
            PrefixEntry(seq=15, permit=True, prefix="192.0.2.0/24", le=28),
            PrefixEntry(seq=20, permit=True, prefix="198.51.100.0/24"),
        ),
    )
    text = render(config)
    assert " table-map vrf-200-import\n" in text and " table-map vrf-42-import\n" in text
    # Defined before the BGP instance that names it.
    assert text.index("route-map vrf-200-import permit 10") < text.index("router bgp 65000\n")


@pytest.mark.parametrize(
    ("prefixes", "accept", "expected"),
    [
        ((), True, None),
        (
            (),
            False,
            [(False, "0.0.0.0/0", None), (True, "0.0.0.0/0", 32)],
        ),
        (
            (ImportPrefix(cidr="192.0.2.0/24"),),
            True,
            [(True, "0.0.0.0/0", None), (True, "10.150.0.0/16", 32), (True, "192.0.2.0/24", None)],
        ),
        # A user prefix equal to the own pod network line is written once.
        (
            (ImportPrefix(cidr="10.150.0.0/16", le=32), ImportPrefix(cidr="0.0.0.0/0", le=32)),
            False,
            [(False, "0.0.0.0/0", None), (True, "10.150.0.0/16", 32), (True, "0.0.0.0/0", 32)],
        ),
    ],
)
def test_import_filter_entries(
    prefixes: tuple[ImportPrefix, ...],
    accept: bool,
    expected: list[tuple[bool, str, int | None]] | None,
) -> None:
    spec = policy(VRF_200, prefixes=prefixes, accept_default=accept)
    config = build_frr_config(
        node="k8s01", asn=65000, domains=(spec,), node_configs=(), nodes=THREE
    )
    found = config.vrfs[0].import_filter
    if expected is None:
        assert found is None
    else:
        assert found is not None
        assert [(e.permit, e.prefix, e.le) for e in found.entries] == expected
        assert [e.seq for e in found.entries] == [5 * (i + 1) for i in range(len(expected))]


def test_invalid_policy_is_rejected_not_fatal() -> None:
    bad = policy(VRF_200, imports=("65000:70000:1",))
    config = build_frr_config(
        node="k8s01", asn=65000, domains=(VRF_42, bad), node_configs=(), nodes=THREE
    )
    assert [v.vrf for v in config.vrfs] == [42]
    (rejection,) = config.rejected
    assert rejection.name == "vrf-200" and "is not ASN:NN or A.B.C.D:NN" in rejection.reason


def test_l2vni_route_target_among_a_vrf_import_list_is_rejected() -> None:
    importer = policy(VRF_42, imports=("65000:42", "65000:50300"))
    config = build_frr_config(
        node="k8s01", asn=65000, domains=(importer, VRF_300), node_configs=(), nodes=THREE
    )
    assert [v.vrf for v in config.vrfs] == [42]
    (rejection,) = config.rejected
    assert rejection.name == "vrf-300" and "65000:50300 is a route target of vrf-42" in (
        rejection.reason
    )


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (domain(7, 7, "10.7.0.0"), "no attachments"),
        (domain(8, 8, "10.8.0.0", l3(8), l3(9)), "more than one l3vni"),
        (domain(70000, 1, "10.9.0.0", l3(10)), "vrf 70000"),
        (domain(11, 11, "10.11.0.0", l3(1 << 24)), "vni 16777216"),
        (domain(12, 12, "10.12.0.0", l3(12), l2(12)), "both 12"),
    ],
)
def test_invalid_domains_are_rejected_not_fatal(bad: VrfDomainSpec, reason: str) -> None:
    config = build_frr_config(
        node="k8s01", asn=65000, domains=(VRF_42, bad), node_configs=(), nodes=THREE
    )
    assert [v.vrf for v in config.vrfs] == [42]
    (rejection,) = config.rejected
    assert rejection.kind == "VRFDomain" and rejection.name == bad.name
    assert reason in rejection.reason


def test_conflicting_domains_are_all_rejected() -> None:
    twin = replace(domain(43, 43, "10.43.0.0", l3(60200)), name="twin")
    same_vrf = replace(domain(42, 99, "10.99.0.0", l3(99)), name="same-vrf")
    config = build_frr_config(
        node="k8s01",
        asn=65000,
        domains=(VRF_42, VRF_200, twin, same_vrf),
        node_configs=(),
        nodes=THREE,
    )
    assert config.vrfs == () and config.l2vnis == ()
    assert [r.name for r in config.rejected] == ["same-vrf", "twin", "vrf-200", "vrf-42"]


def test_l2vni_route_target_clashing_with_a_vrf_is_rejected() -> None:
    clash = domain(301, 301, "10.31.0.0", l2(200))  # 65000:200 is vrf-200's RT
    config = build_frr_config(
        node="k8s01", asn=65000, domains=(VRF_200, clash), node_configs=(), nodes=THREE
    )
    assert [v.vrf for v in config.vrfs] == [200]
    assert [r.name for r in config.rejected] == ["vrf-301"]


def test_bad_peer_address_is_rejected_not_fatal() -> None:
    config = build_frr_config(
        node="k8s01",
        asn=65000,
        domains=(),
        node_configs=(),
        nodes=(*THREE, NodeInfo(name="k8s09", internal_ip="not-an-ip")),
    )
    assert [n.address for n in config.neighbors] == ["192.168.124.2", "192.168.124.3"]
    assert [(r.kind, r.name) for r in config.rejected] == [("Node", "k8s09")]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"node": "ghost"}, "no IPv4 router id"),
        ({"nodes": (NodeInfo(name="k8s01", internal_ip="fd00::1"),)}, "no IPv4 router id"),
        ({"asn": 0}, "AS number"),
        (
            {
                "node_configs": (
                    VrfNodeConfigSpec(name="x", node="k8s01", route_reflectors=("rr1",)),
                )
            },
            "route reflector",
        ),
    ],
)
def test_own_identity_errors_raise(kwargs: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {
        "node": "k8s01",
        "asn": 65000,
        "domains": (VRF_42,),
        "node_configs": (),
        "nodes": THREE,
    }
    arguments.update(kwargs)
    with pytest.raises(FrrModelError, match=message):
        build_frr_config(**arguments)  # type: ignore[arg-type]


def test_ipv6_underlay_peers() -> None:
    config = build_frr_config(
        node="a",
        asn=65000,
        domains=(),
        node_configs=(VrfNodeConfigSpec(name="a", node="a", router_id="10.0.0.1"),),
        nodes=(
            NodeInfo(name="a", internal_ip="fd00::1"),
            NodeInfo(name="b", internal_ip="fd00::0002"),
            NodeInfo(name="c", internal_ip="10.0.0.3"),
        ),
    )
    assert config.update_source == "fd00::1"
    assert [n.address for n in config.neighbors] == ["10.0.0.3", "fd00::2"]


# ------------------------------------------------------------ the FRR image


def test_daemons_file_enables_exactly_zebra_bgpd_staticd() -> None:
    enabled: set[str] = set()
    disabled: set[str] = set()
    for line in (REPO / "frr" / "daemons").read_text().splitlines():
        match = re.fullmatch(r"(\w+)=(yes|no)", line.strip())
        if match and not match.group(1).endswith("_enable"):
            (enabled if match.group(2) == "yes" else disabled).add(match.group(1))
    assert enabled == {"zebra", "bgpd", "staticd"}
    assert {"ospfd", "isisd", "pimd", "bfdd"} <= disabled


# ---------------------------------------------------------------- properties

octet = st.integers(min_value=1, max_value=254)
ipv4 = st.builds(lambda a, b: f"10.{a}.{b}.1", octet, octet)
names = st.sampled_from([f"n{i}" for i in range(8)])


@st.composite
def clusters(draw: st.DrawFn) -> Scenario:
    """A cluster with random nodes, VRFNodeConfigs and domains (some invalid)."""
    node_names = draw(st.lists(names, min_size=1, max_size=8, unique=True))
    nodes = tuple(NodeInfo(name=n, internal_ip=draw(ipv4)) for n in node_names)
    configs = []
    for name in node_names:
        if draw(st.booleans()):
            configs.append(
                VrfNodeConfigSpec(
                    name=f"{name}-cfg",
                    node=name,
                    router_id=draw(st.one_of(st.just(""), ipv4)),
                    route_reflectors=tuple(draw(st.lists(ipv4, max_size=3))),
                    interfaces=tuple(
                        NodeInterface(name="eth1", local=a)
                        for a in draw(st.lists(ipv4, max_size=1))
                    ),
                )
            )
    domains = []
    for vrf in draw(st.lists(st.integers(1, 400), max_size=5, unique=True)):
        attachments = []
        if draw(st.booleans()):
            attachments.append(l3(draw(st.integers(1, 600))))
        if draw(st.booleans()):
            attachments.append(l2(draw(st.integers(1, 600))))
        domains.append(domain(vrf, vrf + 1000, "10.1.0.0", *attachments))
    return Scenario(
        node=draw(st.sampled_from(node_names)),
        domains=tuple(domains),
        nodes=nodes,
        node_configs=tuple(configs),
    )


def expected_peers(scenario: Scenario) -> set[str]:
    """The documented rule, written independently of the implementation."""

    def config_of(name: str) -> VrfNodeConfigSpec | None:
        found = sorted((c for c in scenario.node_configs if c.node == name), key=lambda c: c.name)
        return found[0] if found else None

    def underlay(info: NodeInfo) -> str:
        config = config_of(info.name)
        if config and config.interfaces and config.interfaces[0].local:
            return config.interfaces[0].local
        return info.internal_ip

    me = next(n for n in scenario.nodes if n.name == scenario.node)
    own = underlay(me)
    mine = config_of(scenario.node)
    if mine and mine.route_reflectors:
        peers = set(mine.route_reflectors)
    else:
        peers = set()
        for other in scenario.nodes:
            theirs = config_of(other.name)
            if other.name != scenario.node and not (theirs and theirs.route_reflectors):
                peers.add(underlay(other))
    return peers - {own}


def permuted(scenario: Scenario, rnd: random.Random) -> Scenario:
    return replace(
        scenario,
        domains=tuple(rnd.sample(scenario.domains, len(scenario.domains))),
        nodes=tuple(rnd.sample(scenario.nodes, len(scenario.nodes))),
        node_configs=tuple(rnd.sample(scenario.node_configs, len(scenario.node_configs))),
    )


@settings(max_examples=150, deadline=None)
@given(scenario=clusters(), rnd=st.randoms(use_true_random=False))
def test_render_is_invariant_under_input_permutation(
    scenario: Scenario, rnd: random.Random
) -> None:
    shuffled = permuted(scenario, rnd)
    first, second = scenario.build(), shuffled.build()
    assert first == second
    assert render(first) == render(second)


@settings(max_examples=150, deadline=None)
@given(scenario=clusters())
def test_peer_set_follows_the_rule(scenario: Scenario) -> None:
    config = scenario.build()
    assert config.peer_addresses == expected_peers(scenario)
    addresses = [n.address for n in config.neighbors]
    assert addresses == sorted(addresses, key=lambda a: int(ipaddress.ip_address(a)))
    text = render(config)
    rendered = set(re.findall(r"^ neighbor (\S+) peer-group fabric$", text, re.M))
    assert rendered == config.peer_addresses


@settings(max_examples=100, deadline=None)
@given(scenario=clusters(), data=st.data())
def test_nodes_joining_and_leaving(scenario: Scenario, data: st.DataObject) -> None:
    """Each membership change gives exactly the rule's peers; stale ones vanish."""
    others = [n for n in scenario.nodes if n.name != scenario.node]
    me = next(n for n in scenario.nodes if n.name == scenario.node)
    for _ in range(3):
        present = data.draw(st.lists(st.sampled_from(others), unique=True)) if others else []
        step = replace(scenario, nodes=(me, *present))
        config = step.build()
        assert config.peer_addresses == expected_peers(step)
        text = render(config)
        gone = {n.name for n in others} - {n.name for n in present}
        for name in gone:
            assert f"description {name}\n" not in text


@settings(max_examples=100, deadline=None)
@given(scenario=clusters())
def test_vnis_and_vrfs_are_unique_and_sorted(scenario: Scenario) -> None:
    config = scenario.build()
    vnis = [v.l3vni for v in config.vrfs] + [v.vni for v in config.l2vnis]
    assert len(vnis) == len(set(vnis))
    assert [v.vrf for v in config.vrfs] == sorted({v.vrf for v in config.vrfs})
    assert [v.vni for v in config.l2vnis] == sorted({v.vni for v in config.l2vnis})
    kept = {v.vrf for v in config.vrfs} | {v.vrf for v in config.l2vnis}
    rejected = {r.name for r in config.rejected if r.kind == "VRFDomain"}
    assert {f"vrf-{vrf}" for vrf in kept}.isdisjoint(rejected)
    assert {d.name for d in scenario.domains} == {f"vrf-{v}" for v in kept} | rejected
