"""A lab whose nodes are real Kubernetes nodes, with the product installed the README's way.

``KubeCluster`` takes a started ``Lab(LabOptions(real_nodes=True))`` (API server, underlay,
node network namespaces; no FRR, no daemons, no CRDs) and makes each lab node a node:

- its own mount namespace (``NodeMountNamespace``) where /opt/cni/bin, /etc/cni/net.d,
  /run/pyroute2-cni and the kubelet's /var/log/pods are the node's own directories (the
  pods' logs land in the lab's log dir, readable from the host);
- its own containerd in the node's network namespace, with the two images ``make images``
  built imported (no registry is reachable);
- its own kubelet (``make kube-node``); kube-scheduler and kube-controller-manager (with
  service account tokens, which the DaemonSet's in-cluster client needs) beside the API
  server.

``install()`` runs the README's three commands, with the lab overlay
(kubernetes/overlays/lab/) in place of the release directory.  The helpers below it are what
a user does next: Deployments spread over the nodes, ``kubectl exec`` pings, ``ipam check``
in a daemon container.

Measured under User-Mode Linux on 2 cores, 2 nodes: the image imports ~85-110 s (both nodes
at once), nodes registered ``NotReady`` ~22 s after the kubelets start, the DaemonSet's pods
Ready ~130 s after the install began.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes.client

from pyroute2_cni.ipam.store import block_from_object
from tests.harness.cri import Containerd, Tools, load_tools, seeded_root
from tests.harness.kube_node import (
    ControlPlaneComponent,
    Kubelet,
    NodeMountNamespace,
    release_image_archives,
)
from tests.harness.lab import REPO, Lab
from tests.harness.lifecycle import Service
from tests.harness.procs import HarnessError, wait_until

OVERLAY = REPO / "kubernetes" / "overlays" / "lab"
CRDS = REPO / "kubernetes" / "crds" / "0.1"
PLUGINS_DIR = Path("/usr/lib/cni")
DS_NAMESPACE = "pyroute2-cni"
DAEMONSET = "pyroute2-cni"
DS_SELECTOR = "app.kubernetes.io/component=node"
KUBECTL_TIMEOUT = 60.0
# The DaemonSet's pods: two ~145 MB images, the daemon's start and first FRR apply.
INSTALL_TIMEOUT = 420.0
READY_TIMEOUT = 120.0
POD_TIMEOUT = 120.0


@dataclass(frozen=True, slots=True)
class Workload:
    """A Deployment's Running pods: pod name -> (node, address)."""

    namespace: str
    name: str
    pods: dict[str, tuple[str, str]]

    def on(self, node: str) -> str:
        return next(pod for pod, (n, _) in self.pods.items() if n == node)

    @property
    def addresses(self) -> list[str]:
        return [address for _, address in self.pods.values()]


class KubeCluster(Service):
    """Kubelets, containerds and the control plane on a started real-nodes Lab; a context
    manager that stops them (not the lab)."""

    def __init__(self, lab: Lab, progress: Callable[[str], None] | None = None) -> None:
        if not lab.options.real_nodes or lab.api is None:
            raise HarnessError("KubeCluster needs a started Lab(LabOptions(real_nodes=True))")
        self.lab = lab
        self.nodes = tuple(lab.nodes)
        self._progress = progress or lab.progress
        self.kubelets: dict[str, Kubelet] = {}
        self.runtimes: dict[str, Containerd] = {}
        self.components: tuple[ControlPlaneComponent, ...] = ()
        self._stack = ExitStack()

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        lab, stack = self.lab, self._stack
        assert lab.api is not None
        tools = load_tools()
        archives = release_image_archives()
        legacy = self._iptables_legacy()
        # The image imports (gunzip, digests, unpack) are CPU work, and a User-Mode Linux
        # guest has one CPU: import once, then copy the unpacked root to every node.
        began = time.monotonic()
        with seeded_root(tools, archives, log_dir=lab.log_dir) as seed:
            self._progress(f"release images unpacked once in {time.monotonic() - began:.1f} s")
            mounts: dict[str, NodeMountNamespace] = {}
            for name in self.nodes:
                node = lab.nodes[name]
                self._cni_bin_dir(name)
                mounts[name] = stack.enter_context(
                    NodeMountNamespace(
                        name,
                        {
                            Path("/opt/cni/bin"): node.cni_bin_dir,
                            Path("/etc/cni/net.d"): node.cni_conf_dir,
                            Path("/run/pyroute2-cni"): node.run_dir / "state",
                            # The kubelet's container logs, readable from the host after a run.
                            Path("/var/log/pods"): lab.log_dir / f"{name}-pods",
                            Path("/var/log/containers"): node.run_dir / "containers",
                        },
                    )
                )
                self.runtimes[name] = self._runtime(tools, name, mounts[name], seed, legacy)
                stack.callback(self.runtimes[name].stop)
            began = time.monotonic()
            with ThreadPoolExecutor(len(self.nodes)) as pool:
                list(pool.map(Containerd.start, self.runtimes.values()))
        # Every node has its copy: the seed is gone here, freeing its memory.
        self._progress(
            f"{len(self.nodes)} containerds with the release images up in "
            f"{time.monotonic() - began:.1f} s"
        )
        for name in self.nodes:
            self.kubelets[name] = stack.enter_context(
                Kubelet(
                    node=name,
                    node_ip=lab.nodes[name].address,
                    kubeconfig=lab.kubeconfig,
                    runtime=self.runtimes[name],
                    mountns=mounts[name],
                    log_dir=lab.log_dir,
                )
            )
        self.components = (
            stack.enter_context(
                ControlPlaneComponent(
                    "kube-scheduler", kubeconfig=lab.kubeconfig, log_dir=lab.log_dir
                )
            ),
            stack.enter_context(
                ControlPlaneComponent(
                    "kube-controller-manager",
                    kubeconfig=lab.kubeconfig,
                    service_account_key=lab.api.service_account_key,
                    root_ca=Path(lab.api.ca_file),
                    log_dir=lab.log_dir,
                )
            ),
        )
        self._progress(f"{len(self.kubelets)} kubelets, kube-scheduler, controller-manager up")

    def stop(self) -> None:
        self._stack.close()

    def _runtime(
        self,
        tools: Tools,
        name: str,
        mounts: NodeMountNamespace,
        seed: Path,
        legacy: Path,
    ) -> Containerd:
        node = self.lab.nodes[name]
        return Containerd(
            tools,
            cni_bin_dir=node.cni_bin_dir,
            cni_conf_dir=node.cni_conf_dir,
            netns=name,
            mountns=mounts.nsenter(),
            seed=seed,
            log_dir=self.lab.log_dir,
            env_path=[legacy],
        )

    def _cni_bin_dir(self, name: str) -> None:
        """/opt/cni/bin of a node: the standard plugins the conflist chains, beside the
        shim the daemon installs (none yet)."""
        node = self.lab.nodes[name]
        for directory in (node.cni_bin_dir, node.cni_conf_dir):
            directory.mkdir(parents=True, exist_ok=True)
        for plugin in ("portmap", "loopback"):
            link = node.cni_bin_dir / plugin
            if not link.exists():
                link.symlink_to(PLUGINS_DIR / plugin)

    def _iptables_legacy(self) -> Path:
        """A PATH directory for portmap: UML has no nf_tables NAT."""
        legacy = self.lab.state_dir / "iptables-legacy"
        legacy.mkdir(parents=True, exist_ok=True)
        for name in ("iptables", "ip6tables"):
            for suffix in ("", "-save", "-restore"):
                link = legacy / f"{name}{suffix}"
                if not link.exists():
                    link.symlink_to(Path("/usr/sbin") / f"{name}-legacy{suffix}")
        return legacy

    def check_alive(self) -> None:
        for kubelet in self.kubelets.values():
            kubelet.check_alive()
        for component in self.components:
            component.check_alive()

    # -- nodes and the install -------------------------------------------------------------

    def ready(self, name: str) -> tuple[str, str, str] | None:
        """(status, reason, message) of the Node's Ready condition, None before it registered."""
        try:
            node = self.lab.core().read_node_status(name)
        except kubernetes.client.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        for c in node.status.conditions or []:
            if c.type == "Ready":
                return str(c.status), str(c.reason), str(c.message)
        return None

    def wait_ready(
        self, status: str = "True", timeout: float = READY_TIMEOUT, saying: str = ""
    ) -> dict[str, tuple[str, str, str]]:
        """Until every node's Ready is `status` (with `saying` in its message)."""

        def probe() -> dict[str, tuple[str, str, str]] | None:
            self.check_alive()
            ready = {name: self.ready(name) for name in self.nodes}
            if all(r is not None and r[0] == status and saying in r[2] for r in ready.values()):
                return {name: r for name, r in ready.items() if r is not None}
            return None

        what = f"{', '.join(self.nodes)} Ready={status} {saying} (logs: {self.lab.log_dir})"
        return wait_until(probe, timeout, what)

    def install(self) -> None:
        """The README's install, the lab overlay in place of the release directory, until
        the DaemonSet's pods are Ready on every node.

        --validate=false on the CRDs only: kubectl 1.32 checks the CRDs' CEL rules
        (x-kubernetes-validations) against the schema of this 1.20 API server, which has no
        such field (tests/api/test_crds.py); against 1.31+ the README's command is exact.
        """
        self.kubectl("apply", "--validate=false", "-k", str(CRDS))
        self.kubectl("wait", "--for=condition=Established", "crd/ipblocks.ipam.pyroute2.org")
        self.kubectl("apply", "-k", str(OVERLAY))

        def started() -> bool:
            self.check_alive()
            pods = self.daemonset_pods()
            return set(pods) == set(self.nodes) and all(r for _, r in pods.values())

        try:
            wait_until(started, INSTALL_TIMEOUT, "the DaemonSet's pods Ready on every node")
        except HarnessError as exc:
            raise HarnessError(f"{exc}\n{self.describe_daemonset()}") from None

    def daemonset_pods(self) -> dict[str, tuple[str, bool]]:
        """The DaemonSet's pods: node -> (pod name, every container ready)."""
        pods = self.lab.core().list_namespaced_pod(DS_NAMESPACE, label_selector=DS_SELECTOR)
        out: dict[str, tuple[str, bool]] = {}
        for p in pods.items:
            statuses = p.status.container_statuses or []
            ready = len(statuses) == 2 and all(c.ready for c in statuses)
            out[str(p.spec.node_name)] = (str(p.metadata.name), ready)
        return out

    def daemonset_uids(self) -> dict[str, str]:
        """node -> uid of its DaemonSet pod (a rollout changes every one)."""
        pods = self.lab.core().list_namespaced_pod(DS_NAMESPACE, label_selector=DS_SELECTOR)
        return {str(p.spec.node_name): str(p.metadata.uid) for p in pods.items}

    def container_state(self, node: str, container: str) -> tuple[str, int, bool]:
        """(container id, restart count, ready) of a DaemonSet container on `node`."""
        pods = self.lab.core().list_namespaced_pod(DS_NAMESPACE, label_selector=DS_SELECTOR)
        for p in pods.items:
            if p.spec.node_name != node:
                continue
            for c in p.status.container_statuses or []:
                if c.name == container:
                    cid = str(c.container_id or "").removeprefix("containerd://")
                    return cid, int(c.restart_count), bool(c.ready)
        raise HarnessError(f"no {container} container on {node}:\n{self.describe_daemonset()}")

    def task_pid(self, node: str, container_id: str) -> int:
        """The PID of a container's process, from its node's containerd."""
        for line in self.runtimes[node].ctr("tasks", "ls").splitlines()[1:]:
            fields = line.split()
            if fields and fields[0] == container_id:
                return int(fields[1])
        raise HarnessError(f"no task {container_id} on {node}'s containerd")

    def describe_daemonset(self) -> str:
        core = self.lab.core()
        lines = []
        for p in core.list_namespaced_pod(DS_NAMESPACE).items:
            states = [
                f"{c.name} ready={c.ready} restarts={c.restart_count} {c.state}"
                for c in p.status.container_statuses or []
            ]
            lines.append(f"pod {p.metadata.name} on {p.spec.node_name}: {p.status.phase} {states}")
        lines += [
            f"event {e.involved_object.kind}/{e.involved_object.name}: {e.reason}: {e.message}"
            for e in core.list_namespaced_event(DS_NAMESPACE).items[-20:]
        ]
        return "\n".join(lines)

    # -- what a user does next --------------------------------------------------------------

    def kubectl(
        self, *args: str, check: bool = True, timeout: float = KUBECTL_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            ["kubectl", "--kubeconfig", str(self.lab.kubeconfig), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        if check and proc.returncode != 0:
            raise HarnessError(f"kubectl {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
        return proc

    def vtysh(self, pod: str, command: str) -> str:
        """The README's `kubectl -n pyroute2-cni exec ... -c pyroute2-frr -- vtysh`, one
        command (-c instead of -ti: no terminal here)."""
        argv = ["-n", DS_NAMESPACE, "exec", pod, "-c", "pyroute2-frr", "--", "vtysh"]
        return self.kubectl(*argv, "-c", command).stdout

    def ipam_check(self) -> str:
        """`pyroute2-cni ipam check` in a daemon container (its in-cluster credentials);
        HarnessError with the report unless it is clean."""
        argv = ["-n", DS_NAMESPACE, "exec", f"daemonsets/{DAEMONSET}", "-c", DAEMONSET, "--"]
        proc = self.kubectl(*argv, "pyroute2-cni", "ipam", "check", check=False)
        if proc.returncode != 0:
            raise HarnessError(f"pyroute2-cni ipam check: {proc.stdout}{proc.stderr}")
        return proc.stdout

    def deploy(self, name: str, namespace: str, image: str, per_node: int = 1) -> Workload:
        """A Deployment of `per_node` pods per node (spread by the scheduler), once every
        pod is Running with an address."""
        apps = kubernetes.client.AppsV1Api(self.lab.client())
        replicas = per_node * len(self.nodes)
        apps.create_namespaced_deployment(namespace, deployment(name, namespace, image, replicas))

        def running() -> dict[str, tuple[str, str]] | None:
            self.check_alive()
            pods = self.lab.core().list_namespaced_pod(namespace, label_selector=f"app={name}")
            out = {
                p.metadata.name: (str(p.spec.node_name), str(p.status.pod_ip))
                for p in pods.items
                if p.status.phase == "Running"
                and p.status.pod_ip
                and not p.metadata.deletion_timestamp
            }
            return out if len(out) == len(pods.items) == replicas else None

        try:
            pods = wait_until(running, POD_TIMEOUT, f"{namespace}/{name}'s pods Running")
        except HarnessError as exc:
            raise HarnessError(f"{exc}\n{self.describe(namespace)}") from None
        return Workload(namespace=namespace, name=name, pods=pods)

    def remove(self, workload: Workload) -> None:
        """Delete the Deployment; until its pods are gone and their records freed."""
        apps = kubernetes.client.AppsV1Api(self.lab.client())
        apps.delete_namespaced_deployment(
            workload.name, workload.namespace, propagation_policy="Foreground"
        )

        def freed() -> bool:
            self.check_alive()
            left = self.lab.core().list_namespaced_pod(
                workload.namespace, label_selector=f"app={workload.name}"
            )
            return not left.items and not set(workload.pods) & set(self.records().values())

        wait_until(freed, POD_TIMEOUT, f"{workload.name}'s pods gone and their records freed")

    def reachable(self, workload: Workload, pod: str, targets: list[str]) -> dict[str, bool]:
        """`kubectl exec POD -- ping` of every target (2 echoes each, one answer is enough),
        in one exec: target -> answered."""
        script = "".join(
            f"if ping -c 2 -W 2 {t} >/dev/null 2>&1; then echo '{t} yes'; else echo '{t} no'; fi\n"
            for t in targets
        )
        argv = ["-n", workload.namespace, "exec", pod, "--", "sh", "-c", script]
        proc = self.kubectl(*argv, check=False)
        answers = dict(line.split() for line in proc.stdout.splitlines() if line.strip())
        if proc.returncode != 0 or set(answers) != set(targets):
            raise HarnessError(f"kubectl exec {pod} ping: {proc.stdout}{proc.stderr}".strip())
        return {t: answers[t] == "yes" for t in targets}

    def records(self) -> dict[str, str]:
        """IPAM records: attachment key -> pod name."""
        out: dict[str, str] = {}
        for obj in self.lab.ipblocks():
            block = block_from_object(obj)
            for address, record in block.allocations.items():
                if not record.is_gateway:
                    out[record.key] = record.pod or address
        return out

    def describe(self, namespace: str) -> str:
        """The pods, the nodes' taints and the namespace's events, for a failure message."""
        core = self.lab.core()
        lines = [
            f"pod {p.metadata.name}: {p.status.phase} on {p.spec.node_name} ip={p.status.pod_ip}"
            for p in core.list_namespaced_pod(namespace).items
        ]
        lines += [f"node {n.metadata.name}: taints {n.spec.taints}" for n in core.list_node().items]
        lines += [
            f"event {e.involved_object.name}: {e.reason}: {e.message}"
            for e in core.list_namespaced_event(namespace).items[-20:]
        ]
        return "\n".join(lines)


def pod_spec(image: str, command: list[str], restart: str = "Always") -> dict[str, Any]:
    return {
        "automountServiceAccountToken": False,
        "dnsPolicy": "Default",
        "restartPolicy": restart,
        "terminationGracePeriodSeconds": 1,
        "containers": [
            {"name": "main", "image": image, "imagePullPolicy": "Never", "command": command}
        ],
    }


def deployment(name: str, namespace: str, image: str, replicas: int) -> dict[str, Any]:
    """busybox sleeping, one pod per node: the scheduler, not the caller, places them."""
    labels = {"app": name}
    spec = pod_spec(image, ["sleep", "3600"])
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
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": spec},
        },
    }
