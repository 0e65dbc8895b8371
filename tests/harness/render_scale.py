"""The FRR configuration one node renders as the cluster grows: full mesh vs route reflectors.

    .venv/bin/python -m tests.harness.render_scale

Builds this node's model (frr_model.build_frr_config) and renders it, as FRRActor does on
every change, for clusters of 10, 30 and 100 nodes with the release's system domain plus
ten tenant VRFs; reports the text's size, its neighbour lines and build+render p50/p99.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence

from pyroute2_cni.frr.model import build_frr_config, render
from pyroute2_cni.messages.crd import (
    Attachment,
    AttachmentType,
    NodeInfo,
    VrfDomainSpec,
    VrfNodeConfigSpec,
)
from tests.harness.domains import SYSTEM_DOMAIN

REFLECTORS = ("100.127.0.1", "100.127.0.2")
ROUNDS = 200


def tenants(count: int = 10) -> tuple[VrfDomainSpec, ...]:
    return tuple(
        VrfDomainSpec(
            name=f"vrf-{100 + i}",
            vrf=100 + i,
            table=100 + i,
            prefix=f"10.{100 + i}.0.0",
            prefixlen=16,
            ipblocklen=26,
            attachments=(Attachment(type=AttachmentType.L3VNI, vni=1000 + i),),
        )
        for i in range(count)
    )


def cluster(size: int) -> tuple[NodeInfo, ...]:
    return tuple(
        NodeInfo(name=f"node-{i:03d}", internal_ip=f"100.64.{i // 250}.{i % 250 + 2}")
        for i in range(size)
    )


def percentile(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def measure(size: int, reflectors: bool) -> tuple[int, int, float, float]:
    """(bytes, neighbour lines, p50 ms, p99 ms) of node 0's build+render."""
    nodes = cluster(size)
    configs = (
        tuple(
            VrfNodeConfigSpec(name=n.name, node=n.name, route_reflectors=REFLECTORS) for n in nodes
        )
        if reflectors
        else ()
    )
    domains = (SYSTEM_DOMAIN, *tenants())
    times: list[float] = []
    text = ""
    for _ in range(ROUNDS):
        start = time.perf_counter()
        text = render(
            build_frr_config(
                node=nodes[0].name,
                asn=65000,
                domains=domains,
                node_configs=configs,
                nodes=nodes,
                hostname=nodes[0].name,
            )
        )
        times.append((time.perf_counter() - start) * 1000)
    neighbors = sum(1 for line in text.splitlines() if " peer-group " in line)
    return len(text), neighbors, statistics.median(times), percentile(times, 0.99)


def render_table(sizes: Sequence[int] = (10, 30, 100)) -> str:
    lines = [
        "## 3b. One node's FRR configuration: full mesh vs 2 route reflectors"
        " (11 VRFs, build+render)",
        "",
        "| nodes | peering | bytes | neighbours | p50 ms | p99 ms |",
        "| ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for size in sizes:
        for reflectors in (False, True):
            size_bytes, neighbors, p50, p99 = measure(size, reflectors)
            how = "2 reflectors" if reflectors else "full mesh"
            lines.append(f"| {size} | {how} | {size_bytes} | {neighbors} | {p50:.2f} | {p99:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(render_table())
