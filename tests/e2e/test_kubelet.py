"""Real nodes in a 2-node lab (issue 16, item 2): kubelets, scheduler, controller-manager.

The kubelet built from the Kubernetes source (``make kube-node``) runs in each lab node's
network namespace on a private containerd whose CRI plugin executes our shim from the
node's CNI dirs, exactly as on a node where the DaemonSet installed them;
kube-scheduler and kube-controller-manager run beside the API server.  The daemon still
runs as a lab process here, not yet as the DaemonSet's pod.

- Before the daemons have installed their conflists every node registers ``Ready=False``
  with the runtime's "network plugin not ready"; once the daemons run they turn ``Ready``
  (and our own ``Pyroute2CNIReady`` condition is True beside it).
- A Deployment's pods, spread over both nodes by the scheduler, get their addresses
  through kubelet -> containerd -> shim -> daemon and answer pings from pods on either
  node (across nodes through EVPN); scaling it to zero frees their IPAM records (the
  runtime's CNI DEL).
"""

from __future__ import annotations

import ipaddress
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes.client
import pytest

from pyroute2_cni.ipam_store import block_from_object
from tests.harness.cri import Containerd, load_tools
from tests.harness.kube_node import ControlPlaneComponent, Kubelet
from tests.harness.lab import REPO, Lab, LabError, LabOptions, wait_until
from tests.harness.reports import cni_condition

pytestmark = pytest.mark.e2e

NODES = ("lab-n1", "lab-n2")
STATE_DIR = REPO / "lab-state" / "e2e-kubelet"
PLUGINS_DIR = Path("/usr/lib/cni")
# Measured under UML: node registered ~15 s after the kubelet starts, Ready ~5 s after
# the conflist, a pod Running ~6 s after create; generous for a loaded CI machine.
REGISTER_TIMEOUT = 120.0
READY_TIMEOUT = 120.0
POD_TIMEOUT = 120.0
NAMESPACE = "default"
DEPLOYMENT = "web"


def _progress(line: str) -> None:
    print(line, file=sys.__stderr__, flush=True)


@dataclass(frozen=True, slots=True)
class Cluster:
    lab: Lab
    kubelets: dict[str, Kubelet]
    components: tuple[ControlPlaneComponent, ...]

    def check_alive(self) -> None:
        for kubelet in self.kubelets.values():
            kubelet.check_alive()
        for component in self.components:
            component.check_alive()

    @property
    def logs(self) -> str:
        return str(self.lab.log_dir)


def _cni_bin_dir(lab: Lab, name: str) -> None:
    """/opt/cni/bin of a node: the standard plugins the conflist chains, beside the shim
    the daemon installs (none yet)."""
    node = lab.nodes[name]
    for directory in (node.cni_bin_dir, node.cni_conf_dir):
        directory.mkdir(parents=True, exist_ok=True)
    for plugin in ("portmap", "loopback"):
        link = node.cni_bin_dir / plugin
        if not link.exists():
            link.symlink_to(PLUGINS_DIR / plugin)


def _iptables_legacy() -> Path:
    """A PATH directory for portmap: UML has no nf_tables NAT."""
    legacy = STATE_DIR / "iptables-legacy"
    legacy.mkdir(parents=True, exist_ok=True)
    for name in ("iptables", "ip6tables"):
        for suffix in ("", "-save", "-restore"):
            link = legacy / f"{name}{suffix}"
            if not link.exists():
                link.symlink_to(Path("/usr/sbin") / f"{name}-legacy{suffix}")
    return legacy


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    shutil.rmtree(STATE_DIR, ignore_errors=True)
    tools = load_tools()
    lab = Lab(
        LabOptions(state_dir=STATE_DIR, nodes=len(NODES), pods_per_node=0, progress=_progress)
    )
    with ExitStack() as stack:
        stack.callback(lab.stop)
        # No daemons yet: the nodes must come up without a CNI first.
        lab.start(daemons=False, pods=False)
        legacy = _iptables_legacy()
        kubelets: dict[str, Kubelet] = {}
        for name in NODES:
            # The kubelet registers its Node itself, with its own status.
            lab.core().delete_node(name)
            _cni_bin_dir(lab, name)
            node = lab.nodes[name]
            containerd = stack.enter_context(
                Containerd(
                    tools,
                    cni_bin_dir=node.cni_bin_dir,
                    cni_conf_dir=node.cni_conf_dir,
                    netns=name,
                    log_dir=lab.log_dir,
                    env_path=[legacy],
                )
            )
            kubelets[name] = stack.enter_context(
                Kubelet(
                    node=name,
                    node_ip=node.address,
                    kubeconfig=lab.kubeconfig,
                    runtime=containerd,
                    log_dir=lab.log_dir,
                )
            )
        components = tuple(
            stack.enter_context(
                ControlPlaneComponent(command, kubeconfig=lab.kubeconfig, log_dir=lab.log_dir)
            )
            for command in ("kube-scheduler", "kube-controller-manager")
        )
        _progress(f"test_kubelet: {len(kubelets)} kubelets, scheduler, controller-manager up")
        yield Cluster(lab=lab, kubelets=kubelets, components=components)


def _ready(lab: Lab, name: str) -> tuple[str, str, str] | None:
    """(status, reason, message) of the Node's Ready condition, None before it registered."""
    try:
        node = lab.core().read_node_status(name)
    except kubernetes.client.ApiException as exc:
        if exc.status == 404:
            return None
        raise
    for c in node.status.conditions or []:
        if c.type == "Ready":
            return str(c.status), str(c.reason), str(c.message)
    return None


def _wait_ready(
    cluster: Cluster, status: str, timeout: float, saying: str = ""
) -> dict[str, tuple[str, str, str]]:
    """Until every node's Ready is `status` (with `saying` in its message)."""

    def probe() -> dict[str, tuple[str, str, str]] | None:
        cluster.check_alive()
        ready = {name: _ready(cluster.lab, name) for name in NODES}
        if all(r is not None and r[0] == status and saying in r[2] for r in ready.values()):
            return {name: r for name, r in ready.items() if r is not None}
        return None

    what = f"{', '.join(NODES)} Ready={status} {saying} (logs: {cluster.logs})"
    return wait_until(probe, timeout, what)


def test_nodes_are_not_ready_without_the_cni_and_ready_once_the_daemons_run(
    cluster: Cluster,
) -> None:
    lab = cluster.lab
    began = time.monotonic()
    # The first status can still say "PLEG is not healthy ... network state unknown":
    # the runtime's network condition comes with a later sync.
    before = _wait_ready(cluster, "False", REGISTER_TIMEOUT, saying="NetworkPluginNotReady")
    registered = time.monotonic() - began
    for name, (_, reason, message) in before.items():
        assert reason == "KubeletNotReady", (name, reason, message)
        assert "NetworkPluginNotReady" in message, (name, message)
        assert not any(lab.nodes[name].cni_conf_dir.iterdir())  # nothing installed yet
    began = time.monotonic()
    lab.start_daemons()
    _wait_ready(cluster, "True", READY_TIMEOUT)
    ready_after = time.monotonic() - began
    _progress(
        f"test_kubelet: nodes registered NotReady within {registered:.1f} s "
        f"({before[NODES[0]][2]!r}); Ready {ready_after:.1f} s after the daemons started"
    )
    for name in NODES:
        assert (lab.nodes[name].cni_conf_dir / "10-pyroute2-cni.conflist").is_file()
        assert (lab.nodes[name].cni_bin_dir / "pyroute2-cni").is_file()
        wait_until(
            lambda n=name: cni_condition(lab, n)[0] == "True",  # type: ignore[misc]
            READY_TIMEOUT,
            f"{name} Pyroute2CNIReady=True",
        )


def _container(image: str, command: list[str]) -> dict[str, Any]:
    return {"name": "main", "image": image, "imagePullPolicy": "Never", "command": command}


def _pod_spec(containers: list[dict[str, Any]], restart: str) -> dict[str, Any]:
    return {
        "automountServiceAccountToken": False,
        "dnsPolicy": "Default",
        "restartPolicy": restart,
        "terminationGracePeriodSeconds": 1,
        "containers": containers,
    }


def _deployment(image: str, replicas: int) -> dict[str, Any]:
    labels = {"app": DEPLOYMENT}
    spec = _pod_spec([_container(image, ["sleep", "3600"])], "Always")
    # One pod per node: the scheduler, not the test, places them.
    spec["topologySpreadConstraints"] = [
        {
            "maxSkew": 1,
            "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": {"matchLabels": labels},
        }
    ]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": DEPLOYMENT, "namespace": NAMESPACE},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": spec},
        },
    }


def _running(cluster: Cluster) -> dict[str, tuple[str, str]] | None:
    """The Deployment's pods once all are Running: name -> (node, address)."""
    cluster.check_alive()
    pods = cluster.lab.core().list_namespaced_pod(NAMESPACE, label_selector=f"app={DEPLOYMENT}")
    out = {
        p.metadata.name: (str(p.spec.node_name), str(p.status.pod_ip))
        for p in pods.items
        if p.status.phase == "Running" and p.status.pod_ip and not p.metadata.deletion_timestamp
    }
    return out if len(out) == len(NODES) and len(pods.items) == len(NODES) else None


def _describe(lab: Lab) -> str:
    """The pods, the nodes' taints and the namespace's events, for a failure message."""
    core = lab.core()
    lines = [
        f"pod {p.metadata.name}: {p.status.phase} on {p.spec.node_name} ip={p.status.pod_ip}"
        for p in core.list_namespaced_pod(NAMESPACE).items
    ]
    lines += [f"node {n.metadata.name}: taints {n.spec.taints}" for n in core.list_node().items]
    lines += [
        f"event {e.involved_object.name}: {e.reason}: {e.message}"
        for e in core.list_namespaced_event(NAMESPACE).items[-20:]
    ]
    return "\n".join(lines)


def _records(lab: Lab) -> dict[str, str]:
    """IPAM records of the lab's nodes: attachment key -> pod name."""
    out: dict[str, str] = {}
    for obj in lab.ipblocks():
        block = block_from_object(obj)
        for address, record in block.allocations.items():
            if not record.is_gateway:
                out[record.key] = record.pod or address
    return out


def _ping_from(cluster: Cluster, node: str, targets: list[str], image: str) -> str:
    """A pod on `node` that pings every target and exits; its final phase."""
    core = cluster.lab.core()
    name = f"ping-from-{node}"
    script = " && ".join(f"ping -c 3 -W 2 {t}" for t in targets)
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {**_pod_spec([_container(image, ["sh", "-c", script])], "Never"), "nodeName": node},
    }
    core.create_namespaced_pod(NAMESPACE, body)

    def finished() -> str | None:
        cluster.check_alive()
        phase = str(core.read_namespaced_pod_status(name, NAMESPACE).status.phase)
        return phase if phase in ("Succeeded", "Failed") else None

    phase = wait_until(finished, POD_TIMEOUT, f"pod {name} finished")
    core.delete_namespaced_pod(name, NAMESPACE)
    return phase


def test_a_deployment_spread_by_the_scheduler_gets_addresses_and_reaches_across_nodes(
    cluster: Cluster,
) -> None:
    lab = cluster.lab
    _wait_ready(cluster, "True", READY_TIMEOUT)  # the test above started the daemons
    image = load_tools().busybox.name
    apps_api = kubernetes.client.AppsV1Api(lab.client())
    apps_api.create_namespaced_deployment(NAMESPACE, _deployment(image, len(NODES)))
    began = time.monotonic()
    try:
        pods = wait_until(lambda: _running(cluster), POD_TIMEOUT, f"{DEPLOYMENT}'s pods Running")
    except LabError as exc:
        raise AssertionError(f"{exc}\n{_describe(lab)}") from None
    took = time.monotonic() - began
    assert sorted(node for node, _ in pods.values()) == sorted(NODES), pods
    blocks = [
        (b.node, ipaddress.ip_network(b.cidr)) for b in map(block_from_object, lab.ipblocks())
    ]
    for node, address in pods.values():
        ip = ipaddress.ip_address(address)
        assert any(n == node and ip in net for n, net in blocks), (node, address, blocks)
    held = set(_records(lab).values())
    assert set(pods) <= held, (pods, held)
    _progress(f"test_kubelet: {DEPLOYMENT}'s {len(pods)} pods Running {took:.1f} s after create")

    # The data plane: from each node, a pod pings both (one on its node, one across).
    targets = [address for _, address in pods.values()]
    for node in NODES:
        assert _ping_from(cluster, node, targets, image) == "Succeeded", (
            f"a pod on {node} could not reach {targets} (logs: {cluster.logs})"
        )

    # Scaling to zero: the kubelets stop the sandboxes and containerd runs CNI DEL.
    apps_api.patch_namespaced_deployment_scale(DEPLOYMENT, NAMESPACE, {"spec": {"replicas": 0}})

    def freed() -> bool:
        cluster.check_alive()
        left = lab.core().list_namespaced_pod(NAMESPACE).items
        return not left and not set(pods) & set(_records(lab).values())

    wait_until(freed, POD_TIMEOUT, "the pods gone and their IPAM records freed (CNI DEL)")
    apps_api.delete_namespaced_deployment(DEPLOYMENT, NAMESPACE)
