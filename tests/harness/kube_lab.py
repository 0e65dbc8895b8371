"""``scripts/lab up --kubelets``: the lab as users run the product.

Every lab node is a real node (tests/harness/kube_cluster.py: its own containerd and
kubelet), the product is installed the README's way (the CRDs, their wait, the release
through kubernetes/overlays/lab/), the DaemonSet's pods bring every node ``Ready`` and a
Deployment ``web`` of busybox pods, placed by kube-scheduler, is plumbed by the kubelets'
own CNI calls.  The summary adds ``kubectl get nodes`` and ``kubectl -n pyroute2-cni get
pods -o wide`` to the usual tables, and its ping matrix is ``kubectl exec`` pings between
the Deployment's pods.

The process-only lab (``scripts/lab up``: daemons as processes, pods through the shim)
stays the faster mode and the one the scenarios run on.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from tests.harness.cri import load_tools
from tests.harness.kube_cluster import DS_NAMESPACE, KubeCluster, Workload
from tests.harness.lab import Lab
from tests.harness.procs import HarnessError

WORKLOAD = "web"
NAMESPACE = "default"


class KubeLab:
    """The kubelets, the install and the workload on a started real-nodes Lab."""

    def __init__(self, lab: Lab, per_node: int) -> None:
        self.lab = lab
        self.per_node = max(1, per_node)
        self.cluster = KubeCluster(lab, progress=lab.progress)
        self.workload: Workload | None = None

    def start(self) -> None:
        lab = self.lab
        self.cluster.start()
        lab._mark("kubelets")
        self.cluster.wait_ready("False", saying="NetworkPluginNotReady")
        lab.progress("every node registered NotReady (no CNI yet); installing as the README says")
        self.cluster.install()
        self.cluster.wait_ready("True")
        lab._mark("install")
        lab.progress("the DaemonSet's pods are Ready on every node and every node is Ready")
        self.workload = self.cluster.deploy(
            WORKLOAD, NAMESPACE, load_tools().busybox.name, self.per_node
        )
        lab._mark("pods")
        lab.progress(f"Deployment {WORKLOAD}: {len(self.workload.pods)} pods Running")

    def stop(self) -> None:
        self.cluster.stop()

    def ping_matrix(self) -> dict[tuple[str, str], bool]:
        """(from pod, to address) -> replied, by `kubectl exec` (one per pod, a few side by
        side)."""
        workload = self.workload
        if workload is None:
            raise HarnessError("the lab's workload is not running")
        with ThreadPoolExecutor(4) as pool:
            rows = pool.map(
                lambda pod: self.cluster.reachable(workload, pod, workload.addresses),
                workload.pods,
            )
            return {
                (pod, address): ok
                for pod, row in zip(workload.pods, rows, strict=True)
                for address, ok in row.items()
            }

    def summary(self) -> tuple[str, bool]:
        """The text `scripts/lab up --kubelets` prints, and whether the ping matrix is green."""
        cluster = self.cluster

        def kubectl(*args: str) -> str:
            proc = cluster.kubectl(*args, check=False)
            return proc.stdout + proc.stderr

        with ThreadPoolExecutor(4) as pool:
            matrix_f = pool.submit(self.ping_matrix)
            nodes_f = pool.submit(kubectl, "get", "nodes", "-o", "wide")
            ds_f = pool.submit(kubectl, "-n", DS_NAMESPACE, "get", "pods", "-o", "wide")
            blocks_f = pool.submit(kubectl, "get", "ipblocks.ipam.pyroute2.org")
            states_f = pool.submit(kubectl, "get", "vrfnodestates")
            ds_pods = cluster.daemonset_pods()
            bgp = {
                node: pool.submit(cluster.vtysh, pod, "show bgp l2vpn evpn summary")
                for node, (pod, _) in sorted(ds_pods.items())
            }
            matrix = matrix_f.result()
        workload = self.workload
        assert workload is not None
        out = [f"pyroute2-cni lab (real nodes): {len(self.lab.nodes)} nodes, "]
        out[0] += f"{len(workload.pods)} pods of Deployment {NAMESPACE}/{WORKLOAD}"
        out += ["", "kubectl get nodes -o wide:", *_indent(nodes_f.result())]
        out += ["", f"kubectl -n {DS_NAMESPACE} get pods -o wide:", *_indent(ds_f.result())]
        out += ["", "BGP sessions (kubectl -n pyroute2-cni exec POD -c pyroute2-frr -- vtysh):"]
        for node, future in bgp.items():
            out.append(f"  {node} ({ds_pods[node][0]}):")
            try:
                out += _indent(future.result(), "    ")
            except HarnessError as exc:
                out.append(f"    (vtysh failed: {exc})")
        out += ["", "kubectl get ipblocks.ipam.pyroute2.org:", *_indent(blocks_f.result())]
        out += ["", "kubectl get vrfnodestates:", *_indent(states_f.result())]
        ok = sum(matrix.values())
        out += ["", f"Ping matrix, system VRF (kubectl exec ping): {ok}/{len(matrix)} replied"]
        names = {address: pod for pod, (_, address) in workload.pods.items()}
        for pod, (node, address) in sorted(workload.pods.items()):
            row = " ".join("ok" if matrix[(pod, a)] else "--" for a in sorted(names))
            out.append(f"  {pod:32} {node:8} {address:15} {row}")
        out += ["", f"kubeconfig: {self.lab.kubeconfig}", f"logs: {self.lab.log_dir}"]
        return "\n".join(out), bool(matrix) and all(matrix.values())


def _indent(text: str, prefix: str = "  ") -> list[str]:
    return [f"{prefix}{line}".rstrip() for line in text.splitlines()]
