"""The kernel tier's environment works: VRF, VXLAN + bridge, NAT, FRR in a namespace.

These tests prove the machine (or the User-Mode Linux guest started by
scripts/run-in-vrf-kernel) can run the project's kernel tests; they use pyroute2 to build
devices and iproute2 (`ip -j -d`) to read them back.
"""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

import pytest
from pyroute2 import IPRoute

from tests.harness.frr_instance import FRR_BIN, VTYSH, FrrInstance
from tests.harness.netns import ip_json

pytestmark = pytest.mark.kernel

NFT = "/usr/sbin/nft"
IPTABLES_LEGACY = "/usr/sbin/iptables-legacy"
CMD_TIMEOUT = 60.0


def _link(netns: str, ifname: str) -> dict[str, Any]:
    links = ip_json(["link", "show", "dev", ifname], netns)
    assert len(links) == 1, links
    link: dict[str, Any] = links[0]
    return link


def _run(
    argv: list[str], netns: str | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    if netns is not None:
        argv = ["/usr/bin/ip", "netns", "exec", netns, *argv]
    return subprocess.run(
        argv, input=stdin, capture_output=True, text=True, timeout=CMD_TIMEOUT, check=False
    )


def test_vrf_with_table(netns: str) -> None:
    with IPRoute(netns=netns) as ipr:
        ipr.link("add", ifname="vrf-42", kind="vrf", vrf_table=42)
        (idx,) = ipr.link_lookup(ifname="vrf-42")
        ipr.link("set", index=idx, state="up")

    link = _link(netns, "vrf-42")
    assert link["linkinfo"]["info_kind"] == "vrf"
    assert link["linkinfo"]["info_data"]["table"] == 42
    assert "UP" in link["flags"]


def test_vxlan_nolearning_on_bridge_in_vrf(netns: str) -> None:
    with IPRoute(netns=netns) as ipr:
        ipr.link("add", ifname="vrf-42", kind="vrf", vrf_table=42)
        ipr.link("add", ifname="l3br-42", kind="bridge")
        ipr.link(
            "add",
            ifname="vxlan-42",
            kind="vxlan",
            vxlan_id=42,
            vxlan_local="192.0.2.1",
            vxlan_port=4789,
            vxlan_learning=0,
        )
        (vrf,) = ipr.link_lookup(ifname="vrf-42")
        (br,) = ipr.link_lookup(ifname="l3br-42")
        (vx,) = ipr.link_lookup(ifname="vxlan-42")
        ipr.link("set", index=br, master=vrf)
        ipr.link("set", index=vx, master=br)

    vxlan = _link(netns, "vxlan-42")
    data = vxlan["linkinfo"]["info_data"]
    assert vxlan["linkinfo"]["info_kind"] == "vxlan"
    assert data["id"] == 42
    assert data["local"] == "192.0.2.1"
    assert data["port"] == 4789
    assert data["learning"] is False
    assert vxlan["master"] == "l3br-42"
    assert vxlan["linkinfo"]["info_slave_kind"] == "bridge"

    bridge = _link(netns, "l3br-42")
    assert bridge["linkinfo"]["info_kind"] == "bridge"
    assert bridge["master"] == "vrf-42"


def _nat_setup(backend: str, netns: str) -> subprocess.CompletedProcess[str]:
    if backend == "nft":
        ruleset = (
            "table ip pcni_nat {\n"
            "  chain postrouting {\n"
            "    type nat hook postrouting priority srcnat; policy accept;\n"
            "    ip saddr 10.42.0.0/16 ip daddr != 10.42.0.0/16 masquerade\n"
            "  }\n"
            "}\n"
        )
        return _run([NFT, "-f", "-"], netns, stdin=ruleset)
    rule = ["-s", "10.42.0.0/16", "!", "-d", "10.42.0.0/16", "-j", "MASQUERADE"]
    return _run([IPTABLES_LEGACY, "-w", "-t", "nat", "-A", "POSTROUTING", *rule], netns)


def _nat_readback(backend: str, netns: str) -> str:
    if backend == "nft":
        proc = _run([NFT, "list", "table", "ip", "pcni_nat"], netns)
    else:
        proc = _run([IPTABLES_LEGACY, "-w", "-t", "nat", "-S", "POSTROUTING"], netns)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


# nft is not parametrized: Debian's UML kernel lacks the ip/inet nftables families
# (NF_TABLES_IPV4, NFT_NAT); iptables-legacy NAT works there and on hosts.
@pytest.mark.parametrize("backend", ["iptables-legacy"])
def test_nat_table(netns: str, backend: str) -> None:
    binary = NFT if backend == "nft" else IPTABLES_LEGACY
    if not os.access(binary, os.X_OK):
        pytest.fail(f"{binary} is not installed: run scripts/install-deps.sh")
    proc = _nat_setup(backend, netns)
    assert proc.returncode == 0, proc.stderr
    out = _nat_readback(backend, netns)
    assert "10.42.0.0/16" in out
    assert "masquerade" in out.lower()


def test_some_nat_backend_works(netns: str) -> None:
    """Whatever the kernel, one way to masquerade pod traffic must exist."""
    for backend in ("nft", "iptables-legacy"):
        binary = NFT if backend == "nft" else IPTABLES_LEGACY
        if os.access(binary, os.X_OK) and _nat_setup(backend, netns).returncode == 0:
            assert "masquerade" in _nat_readback(backend, netns).lower()
            return
    pytest.fail("neither nft nor iptables-legacy can create a NAT table in this kernel")


def test_frr_zebra_bgpd_in_namespace(netns: str) -> None:
    if not (FRR_BIN / "zebra").exists():
        pytest.fail("FRR is not installed: run scripts/install-deps.sh")
    frr = FrrInstance(netns)
    try:
        frr.start()
        assert (frr.run_dir / "zebra.vty").exists()
        assert (frr.run_dir / "bgpd.vty").exists()
        version = _run([VTYSH, "-N", netns, "-c", "show version"])
        assert version.returncode == 0, version.stderr
        assert "FRRouting" in version.stdout

        conf = _run(
            [
                VTYSH, "-N", netns,
                "-c", "configure terminal",
                "-c", "router bgp 65000",
                "-c", "bgp router-id 192.0.2.1",
                "-c", "end",
                "-c", "show running-config",
            ]
        )  # fmt: skip
        assert conf.returncode == 0, conf.stderr
        assert "router bgp 65000" in conf.stdout
        assert "bgp router-id 192.0.2.1" in conf.stdout  # bgpd's part of the config

        bgp = _run([VTYSH, "-N", netns, "-c", "show bgp ipv4 unicast json"])
        assert bgp.returncode == 0, bgp.stderr
        assert json.loads(bgp.stdout)["routerId"] == "192.0.2.1"
    finally:
        frr.remove()
    assert not frr.run_dir.exists()
