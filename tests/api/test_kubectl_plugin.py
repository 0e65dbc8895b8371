"""`kubectl pyroute2 status` and `why` (issue 19, item 5) against a real kube-apiserver
holding the objects a broken cluster would: a node whose daemon is not ready, one with no
daemon at all, a rejected VRFDomain, an exhausted pool, a namespace bound to a missing
VRFDomain, and the daemon's Warning events."""

from __future__ import annotations

import contextlib
import io
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes.client import ApiClient, CoreV1Api, CustomObjectsApi

from pyroute2_cni.kube.node_condition import CONDITION_TYPE
from pyroute2_cni.kubectl_plugin import main
from tests.harness.apiserver import ApiServer

pytestmark = pytest.mark.api


class World:
    """Objects created for one test (unique names), deleted afterwards."""

    def __init__(self, api: ApiClient) -> None:
        self.core, self.custom = CoreV1Api(api), CustomObjectsApi(api)
        self.tag = uuid.uuid4().hex[:6]
        self.undo: list[Any] = []

    def name(self, base: str) -> str:
        return f"{base}-{self.tag}"

    def node(self, base: str, condition: dict[str, str] | None) -> str:
        name = self.name(base)
        self.core.create_node({"metadata": {"name": name}})
        self.undo.append(lambda: self.core.delete_node(name))
        if condition is not None:
            cond = {"type": CONDITION_TYPE, **condition}
            self.core.patch_node_status(name, {"status": {"conditions": [cond]}})
        return name

    def custom_object(self, group: str, plural: str, kind: str, name: str, spec: Any) -> None:
        body = {"apiVersion": f"{group}/v1alpha1", "kind": kind, "metadata": {"name": name}}
        self.custom.create_cluster_custom_object(group, "v1alpha1", plural, {**body, "spec": spec})
        self.undo.append(
            lambda: self.custom.delete_cluster_custom_object(group, "v1alpha1", plural, name)
        )

    def status(self, group: str, plural: str, name: str, status: Any) -> None:
        self.custom.patch_cluster_custom_object_status(
            group, "v1alpha1", plural, name, {"status": status}
        )

    def domain(self, base: str, vrf: int, prefix: str, accepted: tuple[str, str, str]) -> str:
        name = self.name(base)
        spec = {
            "vrf": vrf,
            "table": vrf,
            "prefix": prefix,
            "prefixlen": 28,
            "ipblocklen": 29,
            "attachments": [{"type": "l3vni", "vni": vrf, "port": 4789}],
        }
        self.custom_object("cni.pyroute2.org", "vrfdomains", "VRFDomain", name, spec)
        status, reason, message = accepted
        cond = {"type": "Accepted", "status": status, "reason": reason, "message": message}
        cond["lastTransitionTime"] = "2026-12-06T03:00:00Z"
        self.status("cni.pyroute2.org", "vrfdomains", name, {"conditions": [cond]})
        return name

    def block(self, vrf: int, cidr: str, node: str, allocated: int) -> None:
        name = self.name(f"b{vrf}-{cidr.replace('.', '-').replace('/', '-')}")
        spec = {"vrf": vrf, "cidr": cidr, "node": node, "capacity": 6}
        self.custom_object("ipam.pyroute2.org", "ipblocks", "IPBlock", name, spec)
        self.status("ipam.pyroute2.org", "ipblocks", name, {"allocated": allocated})

    def state(self, node: str, vrf: int, **changes: Any) -> None:
        """The node's VRFNodeState as a daemon writes it: healthy unless `changes` say."""
        status: dict[str, Any] = {
            "ready": True,
            "problems": [],
            "version": "0.1.0",
            "frr": {"managed": True, "applied": True, "reason": "Applied", "message": "ok"},
            "bgp": {"answered": True, "summary": "2/2", "sessions": []},
            "vnis": {
                "summary": "1/1",
                "items": [{"vni": vrf, "vrf": vrf, "kind": "l3vni", "known": True}],
            },
            "pods": 2,
            "vrfs": [{"vrf": vrf, "blocks": 1, "addresses": 2, "free": 4, "exhausted": False}],
            "evpnHeld": 0,
        }
        status.update(changes)
        self.custom_object(
            "cni.pyroute2.org", "vrfnodestates", "VRFNodeState", node, {"nodeRef": {"name": node}}
        )
        self.status("cni.pyroute2.org", "vrfnodestates", node, status)

    def namespace(self, base: str) -> str:
        name = self.name(base)
        self.core.create_namespace({"metadata": {"name": name}})
        self.undo.append(lambda: self.core.delete_namespace(name))
        # No controller-manager here to make it; pod admission wants it.
        self.core.create_namespaced_service_account(name, {"metadata": {"name": "default"}})
        return name

    def pod(self, namespace: str, node: str, ip: str | None) -> str:
        name = self.name("pod")
        container = {"name": "c", "image": "busybox"}
        spec = {"nodeName": node, "containers": [container], "automountServiceAccountToken": False}
        body = {"metadata": {"name": name}, "spec": spec}
        self.core.create_namespaced_pod(namespace, body)
        if ip:
            status = {"podIP": ip, "podIPs": [{"ip": ip}]}
            self.core.patch_namespaced_pod_status(name, namespace, {"status": status})
        return name

    def event(
        self,
        kind: str,
        name: str,
        reason: str,
        message: str,
        warning: bool = True,
        at: str = "2026-12-06T03:00:00Z",
    ) -> None:
        api_version = "v1" if kind == "Node" else "cni.pyroute2.org/v1alpha1"
        self.core.create_namespaced_event(
            "default",
            {
                "metadata": {"name": f"{name}.{uuid.uuid4().hex[:8]}"},
                "involvedObject": {"kind": kind, "name": name, "apiVersion": api_version},
                "type": "Warning" if warning else "Normal",
                "reason": reason,
                "message": message,
                "count": 3,
                "lastTimestamp": at,
                "source": {"component": "pyroute2-cni", "host": "n1"},
            },
        )

    def cleanup(self) -> None:
        for undo in reversed(self.undo):
            with contextlib.suppress(Exception):  # already gone: nothing to undo
                undo()


@pytest.fixture
def world(pyroute2_crds: ApiServer) -> Iterator[World]:
    api = pyroute2_crds.api_client()
    w = World(api)
    try:
        yield w
    finally:
        w.cleanup()
        api.close()


def run(kube_api: ApiServer, *argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main([*argv, "--kubeconfig", kube_api.kubeconfig], out=out)
    return code, out.getvalue()


def test_status_says_which_node_and_which_domain_is_wrong(
    pyroute2_crds: ApiServer, world: World
) -> None:
    ready = world.node("ok", {"status": "True", "reason": "DaemonReady", "message": "fine"})
    broken = world.node(
        "frr",
        {"status": "False", "reason": "DaemonNotReady", "message": "frr: not ready (Failed)"},
    )
    bare = world.node("bare", None)
    degraded = world.node(
        "deg",
        {"status": "True", "reason": "Degraded", "message": "serves CNI requests, but: BGP"},
    )
    world.state(ready, 3101)
    world.state(
        degraded,
        3101,
        ready=False,
        problems=["BGP sessions not Established: 10.0.0.3 Active"],
        bgp={"answered": True, "summary": "1/2", "sessions": []},
    )
    good = world.domain("good", 3101, "10.201.0.0", ("True", "Valid", "valid"))
    bad = world.domain("bad", 3102, "10.202.0.0", ("False", "InvalidSpec", "spec.vrf (0)"))
    world.block(3101, "10.201.0.0/29", ready, 6)
    world.block(3101, "10.201.0.8/29", broken, 2)
    world.event("VRFDomain", good, "PoolExhausted", "no free addresses for node x")
    # Ended by a later Normal event of the same node: history, not a warning.
    world.event("VRFDomain", good, "VniMissing", "zebra lacks VNI 3101", at="2026-12-06T02:00:00Z")
    world.event("VRFDomain", good, "VniKnown", "knows it again", warning=False)
    code, text = run(pyroute2_crds, "status")
    assert code == 1, text
    rows = {line.split()[0]: line for line in text.splitlines() if line.strip()}
    assert rows[ready].split()[1:8] == ["True", "Applied", "2/2", "1/1", "2", "2/6", "DaemonReady"]
    assert rows[degraded].split()[1:8] == ["True", "Applied", "1/2", "1/1", "2", "2/6", "Degraded"]
    assert "False" in rows[broken] and "frr: not ready (Failed)" in rows[broken]
    assert "NoDaemon" in rows[bare] and "DaemonSet" in rows[bare]
    assert rows[good].split()[3:6] == ["True", "2/2", "8/12"], rows[good]
    assert "InvalidSpec" in rows[bad] and "False" in rows[bad]
    assert f"VRFDomain/{good}  PoolExhausted (x3): no free addresses" in text
    assert "VniMissing" not in text
    code, text = run(pyroute2_crds, "status", "-o", "json")
    report = json.loads(text)
    assert code == 1
    nodes = {n["name"]: n for n in report["nodes"]}
    assert (nodes[ready]["ready"], nodes[broken]["ready"], nodes[bare]["ready"]) == (
        True,
        False,
        None,
    )
    assert (nodes[ready]["healthy"], nodes[degraded]["healthy"]) == (True, False)
    assert nodes[degraded]["problems"] == ["BGP sessions not Established: 10.0.0.3 Active"]
    domains = {d["name"]: d for d in report["vrfDomains"]}
    assert domains[good]["allocated"] == 8 and domains[bad]["reason"] == "InvalidSpec"


def test_ipam_check_through_the_plugin(
    pyroute2_crds: ApiServer, world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    node = world.node("ic", {"status": "True", "reason": "DaemonReady", "message": "fine"})
    world.domain("ic", 3301, "10.205.0.0", ("True", "Valid", "valid"))
    # ALLOCATED says 2, but the block records no address: ipam check must say so.
    world.block(3301, "10.205.0.0/29", node, 2)
    code = main(["ipam", "check", "-o", "json", "--kubeconfig", pyroute2_crds.kubeconfig])
    report = json.loads(capsys.readouterr().out)
    assert code == 1, report
    assert world.name("b3301-10-205-0-0-29") in json.dumps(report)


def test_why_follows_the_chain_to_the_broken_link(pyroute2_crds: ApiServer, world: World) -> None:
    node = world.node("n", {"status": "True", "reason": "DaemonReady", "message": "fine"})
    full = world.domain("full", 3201, "10.203.0.0", ("True", "Valid", "valid"))
    world.block(3201, "10.203.0.0/29", node, 6)
    world.block(3201, "10.203.0.8/29", "elsewhere", 6)
    bound = world.namespace("bound")
    world.custom_object(
        "cni.pyroute2.org",
        "vrfdomainbindings",
        "VRFDomainBinding",
        world.name("bind"),
        {"namespaceRef": {"name": bound}, "vrfDomainRef": {"name": full}},
    )
    pod = world.pod(bound, node, None)
    world.state(
        node,
        3201,
        vnis={"summary": "0/1", "items": [{"vni": 3201, "vrf": 3201, "kind": "l3vni"}]},
        lastError={
            "source": "cni",
            "message": f"CNI ADD {bound}/{pod}: no free address in VRFDomain {full}",
            "time": "2026-12-06T03:00:00Z",
        },
    )
    code, text = run(pyroute2_crds, "why", pod, "-n", bound)
    assert code == 1, text
    lines = text.splitlines()
    assert lines[0].startswith("BAD ") and "no address yet" in lines[0]
    assert any(ln.startswith("ok ") and f"to VRFDomain {full}" in ln for ln in lines), text
    assert any(ln.startswith("ok ") and f"VRFDomain {full} (vrf 3201" in ln for ln in lines)
    pool = next(ln for ln in lines if "pool of VRFDomain" in ln)
    assert pool.startswith("BAD ") and "2 of 2 blocks claimed" in pool
    assert "0 free addresses" in pool and "larger prefix" in pool
    assert f"BAD node {node}: zebra does not know VNI 3201 of vrf 3201" in text
    assert f"BAD node {node}: last error for this pod (2026-12-06T03:00:00Z): CNI ADD" in text
    assert f"ok  node {node}: FRR Applied" in text
    assert f"ok  node {node}: BGP sessions Established 2/2" in text

    # A namespace bound to a VRFDomain that does not exist.
    lost = world.namespace("lost")
    world.custom_object(
        "cni.pyroute2.org",
        "vrfdomainbindings",
        "VRFDomainBinding",
        world.name("lostbind"),
        {"namespaceRef": {"name": lost}, "vrfDomainRef": {"name": "nowhere"}},
    )
    pod = world.pod(lost, node, "10.203.0.3")
    code, text = run(pyroute2_crds, "why", pod, "-n", lost)
    assert code == 1
    assert "BAD VRFDomain nowhere does not exist: create it or fix the binding" in text
    assert f"ok  node {node}: the pyroute2-cni daemon serves CNI requests" in text


def test_why_for_a_healthy_pod_exits_0_and_a_missing_pod_is_named(
    pyroute2_crds: ApiServer, world: World
) -> None:
    node = world.node("h", {"status": "True", "reason": "DaemonReady", "message": "fine"})
    # An unbound namespace joins the default domain: server.ini [default] vrf, 42 without
    # the daemon's ConfigMap.
    world.domain("default", 42, "10.204.0.0", ("True", "Valid", "valid"))
    world.block(42, "10.204.0.0/29", node, 2)
    world.state(node, 42)
    namespace = world.namespace("plain")
    pod = world.pod(namespace, node, "10.204.0.3")
    code, text = run(pyroute2_crds, "why", pod, "-n", namespace)
    assert code == 0, text
    assert all(line.startswith("ok ") for line in text.splitlines()), text
    assert "has no VRFDomainBinding: its pods join the default domain (vrf 42)" in text
    code, text = run(pyroute2_crds, "why", "nope", "-n", namespace)
    assert (code, text.strip()) == (1, f"pod {namespace}/nope does not exist")
