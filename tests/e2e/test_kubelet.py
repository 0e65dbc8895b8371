"""A real kubelet on a lab node (issue 16, item 2, on one node).

The kubelet built from the Kubernetes source (``make kube-node``) runs in the lab node's
network namespace on a private containerd whose CRI plugin executes our shim from the
node's CNI dirs, exactly as on a node where the DaemonSet installed them.  Here the
daemon runs as a lab process, not yet as the DaemonSet's pod.

- Before the daemon has installed its conflist the node registers ``Ready=False`` with
  the runtime's "network plugin not ready"; once the daemon runs it turns ``Ready`` (and
  our own ``Pyroute2CNIReady`` condition is True beside it).
- Pods the API assigns to the node get their addresses through kubelet -> containerd ->
  shim -> daemon: a pod answers another pod's ping, and deleting the pods frees their
  IPAM records (the runtime's CNI DEL).
"""

from __future__ import annotations

import ipaddress
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pyroute2_cni.ipam_store import block_from_object
from tests.harness.cri import Containerd, Tools, load_tools
from tests.harness.kube_node import Kubelet
from tests.harness.lab import REPO, Lab, LabOptions, wait_until
from tests.harness.reports import cni_condition

pytestmark = pytest.mark.e2e

NODE = "lab-n1"
STATE_DIR = REPO / "lab-state" / "e2e-kubelet"
PLUGINS_DIR = Path("/usr/lib/cni")
# Measured under UML: node registered ~15 s after the kubelet starts, Ready ~5 s after
# the conflist, a pod Running ~6 s after create; generous for a loaded CI machine.
REGISTER_TIMEOUT = 120.0
READY_TIMEOUT = 120.0
POD_TIMEOUT = 120.0
NAMESPACE = "default"


def _progress(line: str) -> None:
    print(line, file=sys.__stderr__, flush=True)


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    shutil.rmtree(STATE_DIR, ignore_errors=True)
    the_lab = Lab(LabOptions(state_dir=STATE_DIR, nodes=1, pods_per_node=0, progress=_progress))
    try:
        # No daemon yet: the node must come up without a CNI first.
        the_lab.start(daemons=False, pods=False)
        # The kubelet registers its Node itself, with its own status.
        the_lab.core().delete_node(NODE)
        yield the_lab
    finally:
        the_lab.stop()


@pytest.fixture(scope="module")
def tools() -> Tools:
    return load_tools()


@pytest.fixture(scope="module")
def kubelet(lab: Lab, tools: Tools) -> Iterator[Kubelet]:
    node = lab.nodes[NODE]
    for directory in (node.cni_bin_dir, node.cni_conf_dir):
        directory.mkdir(parents=True, exist_ok=True)
    # /opt/cni/bin of a node: the standard plugins the conflist chains, beside the shim
    # the daemon installs.
    for plugin in ("portmap", "loopback"):
        link = node.cni_bin_dir / plugin
        if not link.exists():
            link.symlink_to(PLUGINS_DIR / plugin)
    legacy = STATE_DIR / "iptables-legacy"  # portmap: UML has no nf_tables NAT
    legacy.mkdir(parents=True, exist_ok=True)
    for name in ("iptables", "ip6tables"):
        for suffix in ("", "-save", "-restore"):
            link = legacy / f"{name}{suffix}"
            if not link.exists():
                link.symlink_to(Path("/usr/sbin") / f"{name}-legacy{suffix}")
    containerd = Containerd(
        tools,
        cni_bin_dir=node.cni_bin_dir,
        cni_conf_dir=node.cni_conf_dir,
        netns=NODE,
        log_dir=lab.log_dir,
        env_path=[legacy],
    )
    with (
        containerd,
        Kubelet(
            node=NODE,
            node_ip=node.address,
            kubeconfig=lab.kubeconfig,
            runtime=containerd,
            log_dir=lab.log_dir,
        ) as running,
    ):
        yield running


def _ready(lab: Lab) -> tuple[str, str, str] | None:
    """(status, reason, message) of the Node's Ready condition, None before it registered."""
    import kubernetes.client

    try:
        node = lab.core().read_node_status(NODE)
    except kubernetes.client.ApiException as exc:
        if exc.status == 404:
            return None
        raise
    for c in node.status.conditions or []:
        if c.type == "Ready":
            return str(c.status), str(c.reason), str(c.message)
    return None


def _wait_ready(lab: Lab, kubelet: Kubelet, status: str, timeout: float) -> tuple[str, str, str]:
    def probe() -> tuple[str, str, str] | None:
        kubelet.check_alive()
        ready = _ready(lab)
        return ready if ready is not None and ready[0] == status else None

    return wait_until(probe, timeout, f"{NODE} Ready={status} (kubelet: {kubelet.log_file})")


def test_the_node_is_not_ready_without_the_cni_and_ready_once_the_daemon_runs(
    lab: Lab, kubelet: Kubelet
) -> None:
    began = time.monotonic()
    _, reason, message = _wait_ready(lab, kubelet, "False", REGISTER_TIMEOUT)
    registered = time.monotonic() - began
    assert reason == "KubeletNotReady", (reason, message)
    assert "network plugin not ready" in message.lower() or "NetworkPluginNotReady" in message, (
        message
    )
    assert not any(lab.nodes[NODE].cni_conf_dir.iterdir())  # nothing installed yet
    began = time.monotonic()
    lab.start_daemons()
    _wait_ready(lab, kubelet, "True", READY_TIMEOUT)
    ready_after = time.monotonic() - began
    _progress(
        f"test_kubelet: {NODE} registered NotReady in {registered:.1f} s ({message!r}); "
        f"Ready {ready_after:.1f} s after the daemon started"
    )
    assert (lab.nodes[NODE].cni_conf_dir / "10-pyroute2-cni.conflist").is_file()
    assert (lab.nodes[NODE].cni_bin_dir / "pyroute2-cni").is_file()
    wait_until(
        lambda: cni_condition(lab, NODE)[0] == "True",
        READY_TIMEOUT,
        f"{NODE} Pyroute2CNIReady=True",
    )


def _pod(name: str, image: str, command: list[str], restart: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"app": "kubelet-e2e"}},
        "spec": {
            "nodeName": NODE,
            "automountServiceAccountToken": False,
            "dnsPolicy": "Default",
            "restartPolicy": restart,
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "main",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "command": command,
                }
            ],
        },
    }


def _phase(lab: Lab, name: str) -> tuple[str, str]:
    pod = lab.core().read_namespaced_pod_status(name, NAMESPACE)
    return str(pod.status.phase), str(pod.status.pod_ip or "")


def _records(lab: Lab) -> dict[str, str]:
    """IPAM records of the node: attachment key -> pod name."""
    out: dict[str, str] = {}
    for obj in lab.ipblocks():
        block = block_from_object(obj)
        if block.node != NODE:
            continue
        for address, record in block.allocations.items():
            if not record.is_gateway:
                out[record.key] = record.pod or address
    return out


def test_pods_through_the_kubelet_get_addresses_reach_each_other_and_are_freed(
    lab: Lab, kubelet: Kubelet, tools: Tools
) -> None:
    _wait_ready(lab, kubelet, "True", READY_TIMEOUT)  # the test above started the daemon
    core = lab.core()
    image = tools.busybox.name
    core.create_namespaced_pod(NAMESPACE, _pod("target", image, ["sleep", "3600"], "Always"))
    began = time.monotonic()

    def running(name: str) -> str | None:
        kubelet.check_alive()
        phase, address = _phase(lab, name)
        return address if phase == "Running" and address else None

    target = wait_until(lambda: running("target"), POD_TIMEOUT, "pod target Running")
    took = time.monotonic() - began
    blocks = [ipaddress.ip_network(block_from_object(b).cidr) for b in lab.ipblocks()]
    assert any(ipaddress.ip_address(target) in net for net in blocks), (target, blocks)
    assert "target" in _records(lab).values(), _records(lab)

    # The data plane: a second pod pings the first and exits 0 only if it answered.
    core.create_namespaced_pod(
        NAMESPACE, _pod("pinger", image, ["ping", "-c", "3", "-W", "2", target], "Never")
    )

    def finished() -> str | None:
        kubelet.check_alive()
        phase, _ = _phase(lab, "pinger")
        return phase if phase in ("Succeeded", "Failed") else None

    phase = wait_until(finished, POD_TIMEOUT, "pod pinger finished")
    assert phase == "Succeeded", f"pinger could not reach {target} (kubelet: {kubelet.log_file})"
    _progress(f"test_kubelet: pod target Running at {target} {took:.1f} s after create; ping ok")

    # Deleting the pods: the kubelet stops the sandboxes, containerd runs CNI DEL.
    for name in ("target", "pinger"):
        core.delete_namespaced_pod(name, NAMESPACE)

    def gone() -> bool:
        kubelet.check_alive()
        left = [p.metadata.name for p in core.list_namespaced_pod(NAMESPACE).items]
        return not {"target", "pinger"} & set(left)

    wait_until(gone, POD_TIMEOUT, "pods target and pinger deleted by the kubelet")
    wait_until(
        lambda: not {"target", "pinger"} & set(_records(lab).values()),
        POD_TIMEOUT,
        "the pods' IPAM records freed (CNI DEL)",
    )
