"""Block arithmetic, transitions, invariants and the `ipam check` report (pure logic)."""

from __future__ import annotations

import ipaddress
import json
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyroute2_cni.ipam.blocks import (
    GATEWAY_KEY,
    Allocation,
    Block,
    PodInfo,
    block_count,
    block_name,
    candidate_networks,
    capacity_of,
    check_block_invariants,
    check_cluster,
    domain_problem,
    exhausted_reason,
    gateway_of,
    needs_repair,
    new_block,
    node_label_value,
    normalized,
    parse_block_name,
    pick_free,
    pod_prefixlen,
    start_offset,
    with_allocation,
    without_addresses,
)
from pyroute2_cni.messages.crd import Attachment, AttachmentType, VrfDomainSpec
from tests.harness.waiting import free_tcp_port

pytestmark = pytest.mark.unit

L3 = Attachment(type=AttachmentType.L3VNI, vni=100)
L2 = Attachment(type=AttachmentType.L2VNI, vni=200)


def domain(
    prefix: str = "10.244.0.0",
    prefixlen: int = 16,
    ipblocklen: int = 26,
    vrf: int = 42,
    attachments: tuple[Attachment, ...] = (L3,),
    name: str = "",
) -> VrfDomainSpec:
    return VrfDomainSpec(
        name=name or f"vrf-{vrf}",
        vrf=vrf,
        table=vrf,
        prefix=prefix,
        prefixlen=prefixlen,
        ipblocklen=ipblocklen,
        attachments=attachments,
    )


@st.composite
def networks(draw: st.DrawFn, min_len: int = 8, max_len: int = 30) -> ipaddress.IPv4Network:
    length = draw(st.integers(min_len, max_len))
    address = draw(st.integers(0, 2**32 - 1))
    return ipaddress.IPv4Network((address, length), strict=False)


@st.composite
def domains(draw: st.DrawFn) -> VrfDomainSpec:
    prefixlen = draw(st.integers(8, 29))
    ipblocklen = draw(st.integers(prefixlen, min(30, prefixlen + 12)))
    net = ipaddress.IPv4Network((draw(st.integers(0, 2**32 - 1)), prefixlen), strict=False)
    return domain(
        prefix=str(net.network_address),
        prefixlen=prefixlen,
        ipblocklen=ipblocklen,
        vrf=draw(st.integers(1, 65535)),
    )


# -- names and arithmetic --------------------------------------------------------------


def test_readme_names_and_capacity() -> None:
    net = ipaddress.IPv4Network("10.244.0.64/26")
    assert block_name(42, net) == "vrf-42-10-244-0-64-26"
    assert block_name(200, ipaddress.IPv4Network("10.150.0.0/26")) == "vrf-200-10-150-0-0-26"
    assert gateway_of(net) == "10.244.0.65"
    assert capacity_of(net) == 62
    block = new_block(42, net, "k8s02")
    assert (block.name, block.cidr, block.gateway, block.capacity) == (
        "vrf-42-10-244-0-64-26",
        "10.244.0.64/26",
        "10.244.0.65",
        62,
    )


@given(vrf=st.integers(1, 65535), net=networks())
def test_block_name_round_trips(vrf: int, net: ipaddress.IPv4Network) -> None:
    assert parse_block_name(block_name(vrf, net)) == (vrf, net)


@pytest.mark.parametrize(
    "name", ["vrf-42-10-244-0-64", "vrf-x-10-244-0-64-26", "vrf-1-300-0-0-0-8", "vrf-1-10-0-0-1-24"]
)
def test_parse_rejects_non_block_names(name: str) -> None:
    assert parse_block_name(name) is None


@given(net=networks(max_len=30))
def test_gateway_is_first_host_and_capacity_counts_usable_hosts(
    net: ipaddress.IPv4Network,
) -> None:
    hosts = net.hosts()
    assert gateway_of(net) == str(next(iter(hosts)))
    assert capacity_of(net) == 2 ** (32 - net.prefixlen) - 2
    if net.prefixlen >= 20:
        assert capacity_of(net) == len(list(net.hosts()))


@settings(max_examples=200)
@given(d=domains(), start=st.integers(0, 2**20))
def test_candidates_tile_the_domain_exactly_once(d: VrfDomainSpec, start: int) -> None:
    count = block_count(d)
    prefix = ipaddress.IPv4Network(d.cidr)
    seen = list(candidate_networks(d, start % count))
    assert len(seen) == count == len(set(seen))
    assert all(n.prefixlen == d.ipblocklen and n.subnet_of(prefix) for n in seen)
    assert sum(n.num_addresses for n in seen) == prefix.num_addresses
    first = int(prefix.network_address) + (start % count) * 2 ** (32 - d.ipblocklen)
    assert int(seen[0].network_address) == first


@given(node=st.text(min_size=1, max_size=80), vrf=st.integers(1, 65535), count=st.integers(1, 4096))
def test_start_offset_is_deterministic_and_in_range(node: str, vrf: int, count: int) -> None:
    offset = start_offset(node, vrf, count)
    assert 0 <= offset < count
    assert offset == start_offset(node, vrf, count)


def test_start_offsets_spread_nodes() -> None:
    offsets = {start_offset(f"node-{i:02d}", 42, 1024) for i in range(10)}
    assert len(offsets) == 10


def test_pod_prefixlen_follows_the_pod_attachment() -> None:
    assert pod_prefixlen(domain(attachments=(L3,))) == 26
    assert pod_prefixlen(domain(attachments=(L2,))) == 16
    assert pod_prefixlen(domain(attachments=(L3, L2))) == 16  # l2vni preferred


def test_exhaustion_reason_names_domain_and_prefix() -> None:
    d = domain(prefix="10.1.0.0", prefixlen=16, ipblocklen=26, vrf=200, name="vrf-200")
    assert exhausted_reason(d) == (
        "VRFDomain vrf-200 (10.1.0.0/16) has no free addresses: "
        "all 1024 /26 blocks are full or held by other nodes"
    )


def test_domain_problems() -> None:
    assert domain_problem(domain()) is None
    assert "not a network address" in str(domain_problem(domain(prefix="10.244.0.1")))
    assert "ipblocklen 31" in str(domain_problem(domain(ipblocklen=31)))
    assert "ipblocklen 12" in str(domain_problem(domain(ipblocklen=12)))
    assert "no attachments" in str(domain_problem(domain(attachments=())))


def test_node_label_value() -> None:
    assert node_label_value("k8s02") == "k8s02"
    long = "n" * 70 + ".example.com"
    value = node_label_value(long)
    assert len(value) <= 63 and value != node_label_value(long + "x")
    assert value == node_label_value(long)


# -- transitions ---------------------------------------------------------------------


def test_allocation_order_is_lowest_free_after_the_gateway() -> None:
    block = new_block(42, ipaddress.IPv4Network("10.244.0.0/29"), "n1")
    assert block.free_count == 5  # 6 hosts, one is the gateway
    assert pick_free(block) == "10.244.0.2"
    got = []
    for i in range(5):
        address = pick_free(block)
        assert address is not None
        block = with_allocation(block, address, Allocation(key=f"c{i}/eth0"))
        got.append(address)
        assert check_block_invariants(block) == []
    assert got == [f"10.244.0.{i}" for i in range(2, 7)]
    assert pick_free(block) is None and block.free_count == 0
    assert block.allocated == block.capacity == 6  # full: ALLOCATED counts the gateway
    block = without_addresses(block, ["10.244.0.4"])
    assert pick_free(block) == "10.244.0.4"
    assert block.allocated == 5


def test_with_allocation_refuses_taken_reserved_and_foreign_addresses() -> None:
    block = normalized(new_block(42, ipaddress.IPv4Network("10.244.0.0/29"), "n1"))
    block = with_allocation(block, "10.244.0.2", Allocation(key="a/eth0"))
    for address in ("10.244.0.2", "10.244.0.1", "10.244.0.0", "10.244.0.7", "10.244.0.9"):
        with pytest.raises(ValueError):
            with_allocation(block, address, Allocation(key="b/eth0"))
    with pytest.raises(ValueError):
        with_allocation(block, "10.244.0.3", Allocation(key=GATEWAY_KEY))


def test_release_never_drops_the_gateway() -> None:
    block = normalized(new_block(42, ipaddress.IPv4Network("10.244.0.0/29"), "n1"))
    assert without_addresses(block, ["10.244.0.1"]).gateway_recorded


@settings(max_examples=150)
@given(
    length=st.integers(24, 30),
    steps=st.lists(st.tuples(st.booleans(), st.integers(0, 300)), max_size=120),
)
def test_random_allocate_release_keeps_invariants(
    length: int, steps: list[tuple[bool, int]]
) -> None:
    """Model check: a dict of key -> address against the block after every step."""
    block = new_block(7, ipaddress.IPv4Network((0x0A000000, length)), "n1")
    model: dict[str, str] = {}
    serial = 0
    for allocate, pick in steps:
        if allocate:
            address = pick_free(block)
            if address is None:
                assert len(model) == block.capacity - 1
                continue
            used = set(model.values())
            hosts = [str(h) for h in block.network.hosts()][1:]
            assert address == min((h for h in hosts if h not in used), key=ipaddress.IPv4Address)
            serial += 1
            key = f"c{serial}/eth0"
            block = with_allocation(block, address, Allocation(key=key))
            model[key] = address
        elif model:
            key = sorted(model)[pick % len(model)]
            block = without_addresses(block, [model.pop(key)])
        assert check_block_invariants(block) == [] or not block.gateway_recorded
        assert dict(block.key_addresses()) == model
        assert len(set(model.values())) == len(model)
        assert block.allocated == len(block.allocations)


# -- invariants ----------------------------------------------------------------------


def sound_block() -> Block:
    block = normalized(new_block(42, ipaddress.IPv4Network("10.244.0.64/26"), "n1"))
    return with_allocation(block, "10.244.0.66", Allocation(key="a/eth0"))


def test_invariants_hold_for_a_sound_block() -> None:
    assert check_block_invariants(sound_block()) == []
    assert not needs_repair(sound_block())


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"name": "vrf-42-10-244-0-0-26"}, "name does not match"),
        ({"gateway": "10.244.0.70"}, "is not the first host"),
        ({"capacity": 64}, "capacity 64 should be 62"),
        ({"allocated": 7}, "ALLOCATED 7 but 2 records"),
    ],
)
def test_invariants_catch_spec_and_count_errors(change: dict[str, object], expected: str) -> None:
    broken = replace(sound_block(), **change)  # type: ignore[arg-type]
    assert any(expected in p for p in check_block_invariants(broken))


def test_invariants_catch_bad_records() -> None:
    base = sound_block()
    records = dict(base.allocations)
    records["10.244.0.127"] = Allocation(key="b/eth0")  # broadcast
    records["10.244.1.5"] = Allocation(key="c/eth0")  # outside
    records["10.244.0.67"] = Allocation(key="a/eth0")  # same key twice
    records["10.244.0.68"] = Allocation(key=GATEWAY_KEY)  # second gateway
    broken = replace(base, allocations=records, allocated=len(records))
    text = "\n".join(check_block_invariants(broken))
    assert "10.244.0.127 is not a usable address" in text
    assert "10.244.1.5 is not a usable address" in text
    assert "attachment a/eth0 holds 10.244.0.66 and 10.244.0.67" in text
    assert "10.244.0.68 is recorded as a second gateway" in text
    missing = replace(base, allocations={"10.244.0.66": Allocation(key="a/eth0")}, allocated=1)
    assert any("gateway 10.244.0.65 is not recorded" in p for p in check_block_invariants(missing))
    assert needs_repair(missing)
    stolen = replace(base, allocations={"10.244.0.65": Allocation(key="x/eth0")}, allocated=1)
    assert any("held by attachment x/eth0" in p for p in check_block_invariants(stolen))


# -- ipam check ----------------------------------------------------------------------


def cluster_block(node: str, cidr: str, records: dict[str, Allocation]) -> Block:
    block = normalized(new_block(42, ipaddress.IPv4Network(cidr), node))
    for address, record in records.items():
        block = with_allocation(block, address, record)
    return block


def pod_record(key: str, name: str, uid: str = "") -> Allocation:
    return Allocation(key=key, namespace="default", pod=name, uid=uid)


def test_check_clean_cluster() -> None:
    blocks = [
        cluster_block("n1", "10.244.0.0/26", {"10.244.0.2": pod_record("a/eth0", "web", "u1")}),
        cluster_block("n2", "10.244.0.64/26", {"10.244.0.66": pod_record("b/eth0", "db")}),
    ]
    pods = [
        PodInfo(namespace="default", name="web", uid="u1"),
        PodInfo(namespace="default", name="db", uid="u2"),
    ]
    report = check_cluster(blocks, [domain()], ["n1", "n2"], pods)
    assert report.clean, report.to_text()
    assert (report.blocks, report.addresses) == (2, 2)
    assert report.to_text() == "IPAM check: 2 blocks, 2 addresses: no problems found"
    assert report.to_json()["clean"] is True


def test_check_reports_every_kind_of_problem() -> None:
    a = normalized(new_block(42, ipaddress.IPv4Network("10.244.0.0/26"), "n1"))
    a = with_allocation(a, "10.244.0.2", pod_record("a/eth0", "web", "old-uid"))  # leaked: uid
    a = with_allocation(a, "10.244.0.3", pod_record("b/eth0", "gone"))  # leaked: name
    a = with_allocation(a, "10.244.0.4", Allocation(key="c/eth0"))  # no pod: cannot tell
    a = replace(a, allocated=9)  # mismatch
    b = normalized(new_block(42, ipaddress.IPv4Network("10.244.0.0/25"), "ghost"))  # overlap
    b = with_allocation(b, "10.244.0.2", Allocation(key="d/eth0"))  # duplicate address
    b = with_allocation(b, "10.244.0.5", Allocation(key="a/eth0"))  # duplicate key
    c = normalized(new_block(42, ipaddress.IPv4Network("10.9.0.0/26"), "n1"))  # outside
    d = normalized(new_block(77, ipaddress.IPv4Network("10.9.0.0/26"), "n1"))  # no domain
    report = check_cluster(
        [a, b, c, d],
        [domain()],
        ["n1"],
        [PodInfo(namespace="default", name="web", uid="new-uid")],
    )
    kinds = [p.kind for p in report.problems]
    assert kinds == [
        "leaked",
        "leaked",
        "duplicate",  # the shared gateway 10.244.0.1
        "duplicate",
        "duplicate-key",
        "missing-node",
        "allocated-mismatch",
        "outside-domain",
        "no-domain",
        "overlap",
    ], report.to_text()
    text = report.to_text()
    assert "10.244.0.2 in vrf-42-10-244-0-0-26 is held by default/web (uid old-uid)" in text
    assert "10.244.0.2 is allocated 2 times in VRF 42" in text
    assert "vrf-42-10-244-0-0-25 (10.244.0.0/25) belongs to node ghost" in text
    assert "ALLOCATED is 9 but the block has 4 records" in text
    data = report.to_json()
    assert data["clean"] is False and data["counts"]["leaked"] == 2


def test_check_reports_invalid_blocks() -> None:
    bad = replace(sound_block(), gateway="10.244.0.70")
    report = check_cluster([bad], [domain()], ["n1"], [])
    assert {p.kind for p in report.problems} == {"invalid-block"}
    assert "is not the first host 10.244.0.65" in report.to_text()


# -- the CLI without a cluster --------------------------------------------------------


def test_ipam_check_exits_2_when_it_cannot_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pyroute2_cni.cli import main

    assert main(["ipam", "check", "--kubeconfig", str(tmp_path / "missing")]) == 2
    assert "cannot configure the API client" in capsys.readouterr().err
    port = free_tcp_port()  # nothing listens there
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": f"https://127.0.0.1:{port}"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(config))
    assert main(["ipam", "check", "--kubeconfig", str(path), "--json"]) == 2
    assert "list IPBlocks" in capsys.readouterr().err
