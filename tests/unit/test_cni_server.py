"""CNIServerActor driven through the real static shim, with in-memory IPAM and netlink."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pykka
import pytest

from pyroute2_cni.actors.address import Address
from pyroute2_cni.actors.base import ActorHooks
from pyroute2_cni.actors.cni_server_actor import CNIServerActor
from pyroute2_cni.messages.crd import (
    ClusterSnapshot,
    VrfDomainBindingSpec,
)
from pyroute2_cni.runtime.config import DaemonSection, Settings, SupervisorSection
from pyroute2_cni.runtime.health import HealthReport
from pyroute2_cni.runtime.metrics import Metrics
from pyroute2_cni.supervisor import ActorSpec, Supervisor
from tests.harness.domains import SYSTEM_DOMAIN
from tests.harness.fake_peers import FakeIpam, FakeNetlink, Shared
from tests.harness.waiting import wait_for

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
# ADD and CHECK open CNI_NETNS (it must be a network namespace): this process's
# own is one every test can use without root; the fake netlink never enters it.
POD_NETNS = "/proc/self/ns/net"

SYSTEM = SYSTEM_DOMAIN


@pytest.fixture(scope="module")
def shim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shim") / "pyroute2-cni"
    subprocess.run([str(REPO / "shim" / "build.sh"), str(out)], check=True, timeout=120)
    return out


@dataclass
class Node:
    socket: str
    shared: Shared
    cni: Address
    metrics: Metrics
    ready: threading.Event
    bin_dir: Path
    conf_dir: Path


@pytest.fixture
def node(tmp_path: Path, shim: Path) -> Iterator[Node]:
    socket = f"ipc://{tmp_path}/run/cni.sock"
    settings = Settings(
        daemon=DaemonSection(
            node_name="node-a",
            socket=socket,
            cni_bin_dir=str(tmp_path / "bin"),
            cni_conf_dir=str(tmp_path / "net.d"),
            shim_source=str(shim),
        ),
        supervisor=SupervisorSection(heartbeat_interval=0.05),
    )
    shared = Shared(capacity=4)
    metrics = Metrics()
    ready = threading.Event()
    ready.set()
    addresses = {n: Address(n) for n in ("ipam", "netlink", "cni")}
    holder: dict[str, Supervisor] = {}

    def readiness() -> HealthReport:
        report = holder["sup"].report()
        if not ready.is_set():
            return HealthReport(live=True, ready=False, lines=("frr: not ready (test)",))
        return report

    def start_cni(hooks: ActorHooks) -> pykka.ActorRef[Any]:
        return CNIServerActor.start(
            hooks,
            settings=settings,
            ipam=addresses["ipam"],
            netlink=addresses["netlink"],
            readiness=readiness,
            metrics=metrics,
        )

    specs = [
        ActorSpec(
            name="ipam",
            start=lambda h: FakeIpam.start(h, shared=shared),
            address=addresses["ipam"],
        ),
        ActorSpec(
            name="netlink",
            start=lambda h: FakeNetlink.start(h, shared=shared),
            address=addresses["netlink"],
        ),
        ActorSpec(
            name="cni", start=start_cni, address=addresses["cni"], depends_on=("ipam", "netlink")
        ),
    ]
    sup = Supervisor(specs, settings.supervisor, metrics)
    holder["sup"] = sup
    sup.start()
    stop = threading.Event()
    thread = threading.Thread(target=sup.run, args=(stop,), daemon=True)
    thread.start()
    addresses["cni"].tell(
        ClusterSnapshot(
            domains=(SYSTEM, replace(SYSTEM, name="vrf-7", vrf=7, prefix="10.7.0.0")),
            bindings=(
                VrfDomainBindingSpec(name="b-ghost", namespace="ghost", domain="vrf-999"),
                VrfDomainBindingSpec(name="b-seven", namespace="seven", domain="vrf-7"),
            ),
            node_configs=(),
            nodes=(),
            namespaces=("default", "ghost", "seven"),
        )
    )
    wait_for(lambda: sup.report().ready, 10, "node ready")
    yield Node(
        socket, shared, addresses["cni"], metrics, ready, tmp_path / "bin", tmp_path / "net.d"
    )
    stop.set()
    thread.join(timeout=5)


def conf(version: str = "1.1.0", **extra: object) -> dict[str, Any]:
    return {"cniVersion": version, "name": "pyroute2-cni", "type": "pyroute2-cni", **extra}


def call(
    shim: Path,
    node: Node,
    command: str,
    config: dict[str, Any] | bytes,
    container: str | None = "c0ffee",
    netns: str = POD_NETNS,
    namespace: str = "default",
) -> tuple[int, dict[str, Any] | None]:
    env = {
        "CNI_COMMAND": command,
        "CNI_IFNAME": "eth0",
        "CNI_NETNS": netns,
        "CNI_PATH": "/opt/cni/bin",
        "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME=p;K8S_POD_UID=u1",
        "PYROUTE2_CNI_SOCKET": node.socket,
        "PATH": os.environ.get("PATH", ""),
    }
    if container is not None:
        env["CNI_CONTAINERID"] = container
    stdin = config if isinstance(config, bytes) else json.dumps(config).encode()
    proc = subprocess.run([str(shim)], input=stdin, env=env, capture_output=True, timeout=30)
    out = proc.stdout.strip()
    return proc.returncode, (json.loads(out) if out else None)


@pytest.mark.parametrize("version", ["0.3.1", "0.4.0", "1.0.0", "1.1.0"])
def test_add_renders_the_requested_version(shim: Path, node: Node, version: str) -> None:
    rc, result = call(shim, node, "ADD", conf(version, dns={"nameservers": ["10.96.0.10"]}))
    assert rc == 0, result
    assert result is not None
    assert result["cniVersion"] == version
    host, container = result["interfaces"]
    assert "sandbox" not in host and container["sandbox"] == POD_NETNS
    assert container["name"] == "eth0"
    assert ("mtu" in container) == (version == "1.1.0")
    (ip,) = result["ips"]
    assert ip["address"] == "10.244.0.2/26" and ip["gateway"] == "10.244.0.1"
    assert ip["interface"] == 1
    assert ("version" in ip) == version.startswith("0.")
    assert result["routes"] == [{"dst": "0.0.0.0/0", "gw": "10.244.0.1"}]
    assert result["dns"] == {"nameservers": ["10.96.0.10"]}


def test_del_is_idempotent_and_releases(shim: Path, node: Node) -> None:
    assert call(shim, node, "ADD", conf())[0] == 0
    assert node.shared.allocations == {"c0ffee/eth0": "10.244.0.2"}
    assert call(shim, node, "DEL", conf(), netns="")[0] == 0
    assert call(shim, node, "DEL", conf(), netns="")[0] == 0
    assert node.shared.allocations == {} and node.shared.plumbed == {}


def test_check_compares_prev_result(shim: Path, node: Node) -> None:
    rc, result = call(shim, node, "ADD", conf())
    assert rc == 0 and result is not None
    assert call(shim, node, "CHECK", conf(prevResult=result)) == (0, None)
    result["ips"][0]["address"] = "10.244.0.9/26"
    rc, error = call(shim, node, "CHECK", conf(prevResult=result))
    assert rc != 0 and error is not None
    assert error["code"] == 100 and "prevResult says 10.244.0.9" in error["msg"]


def test_status_is_50_when_the_node_cannot_serve_add(shim: Path, node: Node) -> None:
    assert call(shim, node, "STATUS", conf(), container=None) == (0, None)
    node.ready.clear()
    rc, error = call(shim, node, "STATUS", conf(), container=None)
    assert rc != 0 and error is not None
    assert error["code"] == 50
    assert "frr: not ready" in error["details"]


def test_gc_releases_attachments_not_listed(shim: Path, node: Node) -> None:
    for cid in ("aaa", "bbb", "ccc"):
        assert call(shim, node, "ADD", conf(), container=cid)[0] == 0
    valid = [{"containerID": "bbb", "ifname": "eth0"}]
    gc = {**conf(), "cni.dev/valid-attachments": valid}
    assert call(shim, node, "GC", gc, container=None)[0] == 0
    assert set(node.shared.allocations) == {"bbb/eth0"}
    assert set(node.shared.plumbed) == {"bbb/eth0"}


BAD = [
    ("malformed json", b'{"cniVersion": "1.1.0", ', {}, 6, "not valid JSON"),
    ("missing container id", None, {"container": None}, 4, "CNI_CONTAINERID is missing"),
    ("unknown version", conf("9.9.9"), {}, 1, "cniVersion 9.9.9 is not supported"),
    ("wrong type", {**conf(), "type": "bridge"}, {}, 7, "type is 'bridge'"),
    (
        "binding to a missing domain",
        None,
        {"namespace": "ghost"},
        11,
        "bound to VRFDomain vrf-999 by VRFDomainBinding b-ghost",
    ),
]


@pytest.mark.parametrize(("case", "config", "kw", "code", "text"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_gets_its_spec_code(
    shim: Path, node: Node, case: str, config: Any, kw: dict[str, Any], code: int, text: str
) -> None:
    rc, error = call(shim, node, "ADD", conf() if config is None else config, **kw)
    assert rc != 0 and error is not None
    assert error["code"] == code
    assert text in error["msg"] + error["details"]
    assert node.shared.allocations == {} and node.shared.plumbed == {}


def test_exhausted_pool_names_the_domain(shim: Path, node: Node) -> None:
    for i in range(4):
        assert call(shim, node, "ADD", conf(), container=f"pod{i}")[0] == 0
    rc, error = call(shim, node, "ADD", conf(), container="pod-too-many")
    assert rc != 0 and error is not None
    assert error["code"] == 11 and "VRFDomain vrf-42 (10.244.0.0/16)" in error["msg"]
    assert "pod-too-many/eth0" not in node.shared.allocations


def test_failed_plumb_rolls_back(shim: Path, node: Node) -> None:
    node.shared.fail_plumb = True
    rc, error = call(shim, node, "ADD", conf())
    assert rc != 0 and error is not None
    assert "cannot open netns" in error["msg"]
    assert node.shared.allocations == {} and node.shared.plumbed == {}


def test_binding_picks_the_vrf(shim: Path, node: Node) -> None:
    rc, result = call(shim, node, "ADD", conf(), namespace="seven")
    assert rc == 0 and result is not None
    assert result["ips"][0]["address"].startswith("10.7.")


def test_slow_add_does_not_block_status(shim: Path, node: Node) -> None:
    gate = threading.Event()
    node.shared.plumb_gate = gate
    slow = threading.Thread(target=call, args=(shim, node, "ADD", conf()), daemon=True)
    slow.start()
    try:
        wait_for(lambda: node.shared.allocations, 10, "slow ADD allocated")
        started = time.monotonic()
        assert call(shim, node, "STATUS", conf(), container=None) == (0, None)
        assert time.monotonic() - started < 2
    finally:
        gate.set()
        slow.join(timeout=30)


def test_installs_shim_and_conflist_when_ready(node: Node, shim: Path) -> None:
    conflist = node.conf_dir / "10-pyroute2-cni.conflist"
    wait_for(conflist.exists, 5, "conflist written")
    data = json.loads(conflist.read_text())
    assert [p["type"] for p in data["plugins"]] == ["pyroute2-cni", "portmap"]
    assert data["plugins"][0]["socket"] == node.socket
    installed = node.bin_dir / "pyroute2-cni"
    assert installed.read_bytes() == shim.read_bytes()
    assert os.access(installed, os.X_OK)


def test_requests_are_counted(shim: Path, node: Node) -> None:
    call(shim, node, "ADD", conf())
    call(shim, node, "ADD", conf("9.9.9"))
    get = node.metrics.registry.get_sample_value
    assert get("pyroute2_cni_requests_total", {"verb": "ADD", "result": "ok"}) == 1
    assert get("pyroute2_cni_requests_total", {"verb": "ADD", "result": "1"}) == 1
    assert get("pyroute2_cni_request_duration_seconds_count", {"verb": "ADD"}) == 2
    # Only the good ADD got as far as its two phases; each took part of its time.
    total = get("pyroute2_cni_request_duration_seconds_sum", {"verb": "ADD"}) or 0.0
    for phase in ("ipam", "netlink"):
        assert get("pyroute2_cni_add_phase_seconds_count", {"phase": phase}) == 1
        assert 0 < (get("pyroute2_cni_add_phase_seconds_sum", {"phase": phase}) or 0) < total


def test_add_into_a_plain_file_names_cni_netns(shim: Path, node: Node, tmp_path: Path) -> None:
    # Issue #14 item 5: refused before IPAM or netlink is touched, with code 4.
    plain = tmp_path / "not-a-netns"
    plain.write_text("")
    rc, error = call(shim, node, "ADD", conf(), netns=str(plain))
    assert rc != 0 and error is not None
    assert error["code"] == 4
    assert f"CNI_NETNS {str(plain)!r} is not a network namespace" in error["msg"]
    assert node.shared.allocations == {} and node.shared.plumbed == {}
    # DEL of the same attachment still succeeds (nothing to undo).
    assert call(shim, node, "DEL", conf(), netns=str(plain))[0] == 0
