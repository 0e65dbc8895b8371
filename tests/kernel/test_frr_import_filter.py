"""What a VRF installs from the fabric and what it sends there, with real FRR and EVPN.

One node (frr.conf rendered by frr.model) and a border router outside the cluster (plain
FRR holding the same VRF and L3VNI, as a fabric's border leaf would) peer over a veth
underlay.  The border advertises two external networks and, with `default-originate`, a
default route into vrf-42; the node advertises its block gateway.  Read back with
``ip -j route`` from the kernel's VRF table (what pods would use), not with our code.

Steps, each one reload of the node's (or the border's) configuration:

1. No routing policy and ``acceptDefaultRoute: true`` (the CRD's value before this field
   existed): the node installs everything the border sends, the default route included.
2. ``acceptDefaultRoute: false``: the default route stays in BGP but leaves the kernel.
3. ``importPrefixes``: only the listed network (and the default route when asked).
4. The border moves to route target 65100:42.  The node's vrf-42 (L3VNI 42, route target
   FRR's automatic 65000:42, so not written) still imports: FRR 8.4 matches an automatic
   import route target on its value alone (``*:42``).  The border, configured, matches
   exactly and drops the node's block.  With ``routeTargets`` 65100:42 both ways on the
   node, both hold everything again; with the border on 65100:43 the node's configured
   import matches exactly and nothing is exchanged.

Throughout, the border's vrf-42 holds exactly the node's block: no underlay or host route
leaves the node.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import replace
from functools import partial
from pathlib import Path

import pytest

from pyroute2_cni.frr.control import parse_vrf_vnis
from pyroute2_cni.frr.model import FrrConfig, build_frr_config, render, render_vrf_bindings
from pyroute2_cni.messages.crd import (
    ImportPrefix,
    NodeInfo,
    VrfDomainSpec,
    VrfNodeConfigSpec,
)
from tests.harness.domains import SYSTEM_DOMAIN
from tests.harness.frr_instance import VTYSH, FrrInstance, frr_in_new_netns
from tests.harness.procs import HarnessError, ip, ip_batch, run, wait_until

pytestmark = pytest.mark.kernel

NODE_UL = "192.168.200.1"
BORDER_UL = "192.168.200.9"
BLOCK = "10.244.0.0/26"
EXTERNAL = ("198.51.100.0/24", "203.0.113.0/24")
EXTERNAL_ADDRESSES = ("198.51.100.1/24", "203.0.113.1/24")
DEFAULT = "default"
CONVERGE = 90.0  # seconds: BGP connect, EVPN import and the route-map delay (5 s) in UML

VRF_42 = replace(SYSTEM_DOMAIN, accept_default_route=True)

BORDER_CONFIG = f"""\
frr defaults traditional
log syslog informational
no ipv6 forwarding
service integrated-vtysh-config
!
vrf vrf-42
 vni 42
exit-vrf
!
router bgp 65000
 bgp router-id {BORDER_UL}
 no bgp default ipv4-unicast
 timers bgp 3 9
 neighbor {NODE_UL} remote-as internal
 neighbor {NODE_UL} timers connect 2
 !
 address-family l2vpn evpn
  neighbor {NODE_UL} activate
  advertise-all-vni
 exit-address-family
exit
!
router bgp 65000 vrf vrf-42
 bgp router-id {BORDER_UL}
 no bgp default ipv4-unicast
 !
 address-family ipv4 unicast
  redistribute connected
 exit-address-family
 !
 address-family l2vpn evpn
  advertise ipv4 unicast
  default-originate ipv4
{{targets}} exit-address-family
exit
!
end
"""


def _devices(ns: str, underlay: str, mac: str) -> None:
    """vrf-42 with its L3VNI bridge and VXLAN, created down (FRR learns the VNI first)."""
    ip_batch(
        [
            "link add vrf-42 type vrf table 42",
            "link add l3br-42 type bridge",
            f"link set l3br-42 address {mac} addrgenmode none master vrf-42",
            f"link add l3vx-42 type vxlan id 42 local {underlay} dstport 4789 nolearning",
            "link set l3vx-42 master l3br-42 addrgenmode none",
        ],
        ns,
    )


def _knows_l3vni(frr: FrrInstance) -> bool:
    return parse_vrf_vnis(frr.vtysh_json("show vrf vni json")).get("vrf-42") == 42


def _targets(value: str) -> str:
    return f"  route-target import {value}\n  route-target export {value}\n"


def _up(ns: str, *devices: str) -> None:
    ip_batch([f"link set {d} up" for d in devices], ns)


def _bgp_routes(ns: str) -> set[str]:
    """Destinations zebra installed from BGP in the kernel's vrf-42 table."""
    routes = json.loads(ip("-j", "route", "show", "table", "42", netns=ns) or "[]")
    return {r["dst"] for r in routes if r.get("protocol") == "bgp"}


def _wait_routes(ns: str, expected: set[str], what: str) -> None:
    def settled() -> bool:
        return _bgp_routes(ns) == expected

    try:
        wait_until(settled, CONVERGE, what, 1.0)
    except HarnessError as exc:
        raise AssertionError(f"{what}: {sorted(_bgp_routes(ns))} != {sorted(expected)}") from exc


def _apply(frr: FrrInstance, tmp_path: Path, text: str, bindings: str = "") -> None:
    """As the FRRActor applies a config: the VRF bindings first (vtysh -f), then reload."""
    if bindings:
        path = tmp_path / f"{frr.name}-bindings.conf"
        path.write_text(bindings)
        run([VTYSH, "-N", frr.name, "-f", str(path)])
    path = tmp_path / f"{frr.name}.conf"
    path.write_text(text)
    result = frr.reload("--reload", path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Configuration failed" not in result.stdout + result.stderr


def _node_model(domain: VrfDomainSpec) -> FrrConfig:
    model = build_frr_config(
        node="k8s01",
        asn=65000,
        domains=(domain,),
        node_configs=(
            VrfNodeConfigSpec(
                name="k8s01",
                node="k8s01",
                router_id=NODE_UL,
                route_reflectors=(BORDER_UL,),
            ),
        ),
        nodes=(NodeInfo(name="k8s01", internal_ip=NODE_UL),),
        hostname=os.uname().nodename,
    )
    assert model.rejected == ()
    return model


def _node_config(domain: VrfDomainSpec) -> str:
    return render(_node_model(domain))


@pytest.fixture(scope="module")
def fabric(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FrrInstance, FrrInstance]]:
    suffix = os.getpid()
    with (
        frr_in_new_netns(f"p2cni-node-{suffix}") as node,
        frr_in_new_netns(f"p2cni-border-{suffix}") as border,
    ):
        ip("link", "add", "ul0", "type", "veth", "peer", "name", "ul0", "netns", border.name,
           netns=node.name)  # fmt: skip
        ip_batch([f"addr add {NODE_UL}/24 dev ul0", "link set ul0 up"], node.name)
        ip_batch([f"addr add {BORDER_UL}/24 dev ul0", "link set ul0 up"], border.name)
        _devices(node.name, NODE_UL, "02:00:00:00:01:01")
        ip("addr", "add", "10.244.0.1/26", "dev", "l3br-42", netns=node.name)  # the gateway
        _devices(border.name, BORDER_UL, "02:00:00:00:09:09")
        ip_batch(
            [
                "link add ext0 type dummy",
                "link set ext0 master vrf-42",
                *(f"addr add {a} dev ext0" for a in EXTERNAL_ADDRESSES),
            ],
            border.name,
        )
        tmp = tmp_path_factory.mktemp("fabric")
        model = _node_model(VRF_42)
        _apply(node, tmp, render(model), render_vrf_bindings(model))
        _apply(border, tmp, BORDER_CONFIG.format(targets=""), "vrf vrf-42\n vni 42\nexit-vrf\n")
        for frr in (node, border):
            wait_until(partial(_knows_l3vni, frr), 60, f"{frr.name}: vrf-42's L3VNI", 0.5)
        _up(node.name, "vrf-42", "l3br-42", "l3vx-42")
        _up(border.name, "vrf-42", "l3br-42", "l3vx-42", "ext0")
        yield node, border


def test_policy_bounds_what_the_node_installs_and_only_its_block_leaves(
    fabric: tuple[FrrInstance, FrrInstance], tmp_path: Path
) -> None:
    node, border = fabric
    everything = {DEFAULT, *EXTERNAL}

    # 1. Today's behaviour: the border's default route reaches the VRF table.
    _wait_routes(node.name, everything, "node installs all the border sends")
    _wait_routes(border.name, {BLOCK}, "the border holds the node's block, nothing else")

    # 2. No default route unless asked; it is still in BGP (table-map filters zebra only).
    _apply(node, tmp_path, _node_config(replace(VRF_42, accept_default_route=False)))
    _wait_routes(node.name, set(EXTERNAL), "acceptDefaultRoute false")
    bgp = node.vtysh_json("show bgp vrf vrf-42 ipv4 unicast json") or {}
    assert "0.0.0.0/0" in bgp.get("routes", {}), bgp

    # 3. Only the listed prefix, with and without the default route.
    listed = replace(VRF_42, import_prefixes=(ImportPrefix(cidr="203.0.113.0/24"),))
    _apply(node, tmp_path, _node_config(replace(listed, accept_default_route=False)))
    _wait_routes(node.name, {"203.0.113.0/24"}, "importPrefixes")
    _apply(node, tmp_path, _node_config(listed))
    _wait_routes(node.name, {DEFAULT, "203.0.113.0/24"}, "importPrefixes + acceptDefaultRoute")

    # 4. A fabric with other route targets.
    _apply(node, tmp_path, _node_config(VRF_42))
    _apply(border, tmp_path, BORDER_CONFIG.format(targets=_targets("65100:42")))
    _wait_routes(border.name, set(), "border on 65100:42 drops the node's 65000:42")
    _wait_routes(node.name, everything, "automatic 65000:42 on the node takes 65100:42")
    joined = replace(VRF_42, import_route_targets=("65100:42",), export_route_targets=("65100:42",))
    _apply(node, tmp_path, _node_config(joined))
    _wait_routes(border.name, {BLOCK}, "the border imports the node's block again")
    _wait_routes(node.name, everything, "routeTargets 65100:42 on the node")
    _apply(border, tmp_path, BORDER_CONFIG.format(targets=_targets("65100:43")))
    _wait_routes(node.name, set(), "configured 65100:42 on the node ignores 65100:43")
    _wait_routes(border.name, set(), "the border on 65100:43 ignores 65100:42")
