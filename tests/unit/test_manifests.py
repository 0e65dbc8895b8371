"""The install manifests render and keep the README's promises.

`kubectl kustomize` renders kubernetes/crds/0.1/ and kubernetes/releases/0.1.0/
exactly as `kubectl apply -k` would; the tests read the rendered objects.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness.domains import README_SERVER_INI

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
CRDS_DIR = REPO / "kubernetes" / "crds" / "0.1"
RELEASE_DIR = REPO / "kubernetes" / "releases" / "0.1.0"

NAMESPACE = "pyroute2-cni"
DAEMON_IMAGE = "ghcr.io/svinota/pyroute2-cni:0.1.0"
FRR_IMAGE = "ghcr.io/svinota/pyroute2-cni-frr:0.1.0"
PORT = 24800


Obj = dict[str, Any]


def kubectl() -> str:
    path = shutil.which("kubectl") or "/usr/bin/kubectl"
    assert Path(path).is_file(), "kubectl (with built-in kustomize) is required"
    return path


def render(directory: Path, *extra: str) -> list[Obj]:
    proc = subprocess.run(
        [kubectl(), "kustomize", *extra, str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


@pytest.fixture(scope="module")
def crds() -> dict[str, Obj]:
    objs = render(CRDS_DIR)
    assert all(o["kind"] == "CustomResourceDefinition" for o in objs)
    return {o["metadata"]["name"]: o for o in objs}


@pytest.fixture(scope="module")
def release() -> list[Obj]:
    return render(RELEASE_DIR)


def find(objs: list[Obj], kind: str, name: str) -> Obj:
    found = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: found {len(found)}"
    return found[0]


@pytest.fixture(scope="module")
def daemonset(release: list[Obj]) -> Obj:
    return find(release, "DaemonSet", "pyroute2-cni")


def pod_spec(ds: Obj) -> Obj:
    spec: Obj = ds["spec"]["template"]["spec"]
    return spec


def container(ds: Obj, name: str) -> Obj:
    found: list[Obj] = [c for c in pod_spec(ds)["containers"] if c["name"] == name]
    assert len(found) == 1, name
    return found[0]


def version(crd: Obj) -> Obj:
    versions = crd["spec"]["versions"]
    assert [v["name"] for v in versions] == ["v1alpha1"]
    v: Obj = versions[0]
    return v


def schema(crd: Obj) -> Obj:
    s: Obj = version(crd)["schema"]["openAPIV3Schema"]
    return s


def columns(crd: Obj) -> list[tuple[str, str]]:
    return [(c["name"].upper(), c["jsonPath"]) for c in version(crd)["additionalPrinterColumns"]]


# --- CRDs --------------------------------------------------------------------

CRD_NAMES = {
    "vrfdomains.cni.pyroute2.org": ("cni.pyroute2.org", "VRFDomain", "vrfdomains"),
    "vrfdomainbindings.cni.pyroute2.org": (
        "cni.pyroute2.org",
        "VRFDomainBinding",
        "vrfdomainbindings",
    ),
    "vrfnodeconfigs.cni.pyroute2.org": ("cni.pyroute2.org", "VRFNodeConfig", "vrfnodeconfigs"),
    "vrfnodestates.cni.pyroute2.org": ("cni.pyroute2.org", "VRFNodeState", "vrfnodestates"),
    "ipblocks.ipam.pyroute2.org": ("ipam.pyroute2.org", "IPBlock", "ipblocks"),
}


def test_crds_render_all_five(crds: dict[str, Obj]) -> None:
    assert set(crds) == set(CRD_NAMES)


@pytest.mark.parametrize("name", sorted(CRD_NAMES))
def test_crd_shape(crds: dict[str, Obj], name: str) -> None:
    crd = crds[name]
    group, kind, plural = CRD_NAMES[name]
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    spec = crd["spec"]
    assert spec["group"] == group
    assert spec["scope"] == "Cluster"
    assert spec["names"]["kind"] == kind
    assert spec["names"]["plural"] == plural
    assert spec["names"]["shortNames"]
    v = version(crd)
    assert v["served"] is True
    assert v["storage"] is True
    assert v["subresources"] == {"status": {}}
    assert v["additionalPrinterColumns"]
    root = schema(crd)
    assert root["type"] == "object"
    assert "spec" in root["required"]
    assert root["properties"]["spec"]["required"]
    assert root["properties"]["status"]["type"] == "object"


def walk(node: Any) -> Iterator[Obj]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


@pytest.mark.parametrize("name", sorted(CRD_NAMES))
def test_crd_schema_is_closed_and_1_20_compatible(crds: dict[str, Obj], name: str) -> None:
    root = schema(crds[name])
    for node in walk(root):
        # Kubernetes 1.20 drops CEL rules (tests/api/test_crds.py), so the only
        # ones allowed are the immutability rules whose fallback is the daemon's
        # PrefixChangeRefused check; nothing else may rely on CEL.
        for rule in node.get("x-kubernetes-validations", ()):
            assert rule["rule"] == "self == oldSelf", rule
        assert node.get("x-kubernetes-preserve-unknown-fields") is not True
    cel_fields = {
        field
        for field, prop in root["properties"]["spec"].get("properties", {}).items()
        if "x-kubernetes-validations" in prop
    }
    expected = {"vrf", "prefix", "prefixlen", "ipblocklen"}
    assert cel_fields == (expected if name == "vrfdomains.cni.pyroute2.org" else set())
    for prop in walk(root["properties"]["spec"]):
        # Every string that is not an enum is bounded.
        if prop.get("type") == "string" and "enum" not in prop:
            assert "maxLength" in prop, prop
        if prop.get("type") == "integer":
            assert "minimum" in prop and "maximum" in prop, prop


def test_ipblock_printer_columns_match_readme(crds: dict[str, Obj]) -> None:
    # README: NAME CIDR NODE VRF ALLOCATED CAPACITY (NAME is implicit, no AGE).
    assert columns(crds["ipblocks.ipam.pyroute2.org"]) == [
        ("CIDR", ".spec.cidr"),
        ("NODE", ".spec.node"),
        ("VRF", ".spec.vrf"),
        ("ALLOCATED", ".status.allocated"),
        ("CAPACITY", ".spec.capacity"),
    ]


def test_vrfdomain_columns(crds: dict[str, Obj]) -> None:
    cols = dict(columns(crds["vrfdomains.cni.pyroute2.org"]))
    assert cols["VRF"] == ".spec.vrf"
    assert cols["TABLE"] == ".spec.table"
    assert cols["PREFIX"] == ".spec.prefix"
    assert cols["PREFIXLEN"] == ".spec.prefixlen"
    assert cols["BLOCKLEN"] == ".spec.ipblocklen"
    assert cols["READY"] == '.status.conditions[?(@.type=="Ready")].status'


def test_vrfdomain_schema(crds: dict[str, Obj]) -> None:
    spec = schema(crds["vrfdomains.cni.pyroute2.org"])["properties"]["spec"]
    assert set(spec["required"]) == {
        "vrf",
        "table",
        "prefix",
        "prefixlen",
        "ipblocklen",
        "attachments",
    }
    attachments = spec["properties"]["attachments"]
    assert (attachments["minItems"], attachments["maxItems"]) == (1, 2)
    item = attachments["items"]["properties"]
    assert item["type"]["enum"] == ["l2vni", "l3vni"]
    assert (item["vni"]["minimum"], item["vni"]["maximum"]) == (1, 16777215)
    assert (item["port"]["minimum"], item["port"]["maximum"]) == (1, 65535)
    assert item["port"]["default"] == 4789
    table = spec["properties"]["table"]
    assert table["not"]["enum"] == [253, 254, 255]


def test_ipblock_schema(crds: dict[str, Obj]) -> None:
    props = schema(crds["ipblocks.ipam.pyroute2.org"])["properties"]
    assert set(props["spec"]["properties"]) == {"cidr", "node", "vrf", "gateway", "capacity"}
    allocation = props["status"]["properties"]["allocations"]["additionalProperties"]
    assert set(allocation["properties"]) == {"key", "namespace", "pod", "uid", "since"}
    assert allocation["properties"]["since"]["format"] == "date-time"


# --- release -----------------------------------------------------------------


def test_release_objects(release: list[Obj]) -> None:
    kinds = sorted((o["kind"], o["metadata"]["name"]) for o in release)
    assert kinds == [
        ("ClusterRole", "pyroute2-cni"),
        ("ClusterRoleBinding", "pyroute2-cni"),
        ("ConfigMap", "server-config"),
        ("DaemonSet", "pyroute2-cni"),
        ("Namespace", NAMESPACE),
        ("Role", "pyroute2-cni"),
        ("RoleBinding", "pyroute2-cni"),
        ("ServiceAccount", "pyroute2-cni"),
    ]
    cluster_scoped = {"Namespace", "ClusterRole", "ClusterRoleBinding"}
    for obj in release:
        if obj["kind"] not in cluster_scoped:
            assert obj["metadata"]["namespace"] == NAMESPACE, obj["kind"]
    # The release installs no CRDs: they come first, from crds/0.1/.
    assert all(o["kind"] != "CustomResourceDefinition" for o in release)


def test_namespace_allows_privileged_pods(release: list[Obj]) -> None:
    labels = find(release, "Namespace", NAMESPACE)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "privileged"


def test_configmap_is_the_readme_one(release: list[Obj]) -> None:
    cm = find(release, "ConfigMap", "server-config")
    assert cm["metadata"]["namespace"] == NAMESPACE
    assert cm["data"] == {"server.ini": README_SERVER_INI}


def test_daemonset_pod(daemonset: Obj) -> None:
    spec = pod_spec(daemonset)
    assert spec["hostNetwork"] is True
    assert spec["hostPID"] is True
    assert spec["priorityClassName"] == "system-node-critical"
    assert spec["tolerations"] == [{"operator": "Exists"}]
    assert spec["serviceAccountName"] == "pyroute2-cni"
    assert [c["name"] for c in spec["containers"]] == ["pyroute2-cni", "pyroute2-frr"]
    for c in spec["containers"]:
        assert c["securityContext"]["privileged"] is True
        assert c["resources"]["requests"]["cpu"]
        assert c["resources"]["requests"]["memory"]
    strategy = daemonset["spec"]["updateStrategy"]
    assert strategy == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}}
    selector = daemonset["spec"]["selector"]["matchLabels"]
    labels = daemonset["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= labels.items()


def test_daemon_container(daemonset: Obj) -> None:
    c = container(daemonset, "pyroute2-cni")
    assert c["image"] == DAEMON_IMAGE
    assert c["command"] == ["pyroute2-cni", "daemon"]
    env = {e["name"]: e for e in c["env"]}
    assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert c["ports"] == [
        {"name": "metrics", "containerPort": PORT, "hostPort": PORT, "protocol": "TCP"}
    ]
    assert c["livenessProbe"]["httpGet"] == {"path": "/livez", "port": PORT}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": PORT}
    assert c["startupProbe"]["httpGet"]["port"] == PORT


def test_frr_container(daemonset: Obj) -> None:
    c = container(daemonset, "pyroute2-frr")
    assert c["image"] == FRR_IMAGE
    # The image's entrypoint starts FRR; nothing overrides it.
    assert "command" not in c and "args" not in c


def mounts(daemonset: Obj, name: str) -> dict[str, Obj]:
    return {m["mountPath"]: m for m in container(daemonset, name)["volumeMounts"]}


def volumes(daemonset: Obj) -> dict[str, Obj]:
    return {v["name"]: v for v in pod_spec(daemonset)["volumes"]}


def test_daemon_mounts(daemonset: Obj) -> None:
    vols = volumes(daemonset)
    daemon = mounts(daemonset, "pyroute2-cni")

    def host_path(mount_path: str) -> str:
        path: str = vols[daemon[mount_path]["name"]]["hostPath"]["path"]
        return path

    for path in ("/opt/cni/bin", "/etc/cni/net.d", "/var/run/netns", "/run/pyroute2-cni"):
        assert host_path(path) == path
    assert host_path("/lib/modules") == "/lib/modules"
    assert daemon["/lib/modules"]["readOnly"] is True
    assert daemon["/var/run/netns"]["mountPropagation"] == "HostToContainer"
    config = daemon["/etc/pyroute2-cni"]
    assert vols[config["name"]]["configMap"]["name"] == "server-config"
    assert "subPath" not in config  # ConfigMap updates reach the file


def test_frr_dirs_shared(daemonset: Obj) -> None:
    daemon = mounts(daemonset, "pyroute2-cni")
    frr = mounts(daemonset, "pyroute2-frr")
    for path in ("/etc/frr", "/var/run/frr"):
        assert daemon[path]["name"] == frr[path]["name"]
        assert not daemon[path].get("readOnly")
        assert not frr[path].get("readOnly")


def test_images_can_be_overridden(tmp_path: Path) -> None:
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [os.path.relpath(RELEASE_DIR, overlay)],
                "images": [
                    {"name": "ghcr.io/svinota/pyroute2-cni", "newName": "reg.local/cni"},
                    {"name": "ghcr.io/svinota/pyroute2-cni-frr", "newTag": "dev"},
                ],
            }
        )
    )
    ds = find(render(overlay), "DaemonSet", "pyroute2-cni")
    assert container(ds, "pyroute2-cni")["image"] == "reg.local/cni:0.1.0"
    assert container(ds, "pyroute2-frr")["image"] == "ghcr.io/svinota/pyroute2-cni-frr:dev"


# --- RBAC --------------------------------------------------------------------


def rules(release: list[Obj], kind: str) -> list[Obj]:
    found: list[Obj] = find(release, kind, "pyroute2-cni")["rules"]
    return found


def allows(rule_list: list[Obj], group: str, resource: str, verb: str) -> bool:
    return any(
        group in r["apiGroups"] and resource in r["resources"] and verb in r["verbs"]
        for r in rule_list
    )


def test_rbac_has_no_wildcards(release: list[Obj]) -> None:
    for kind in ("ClusterRole", "Role"):
        for rule in rules(release, kind):
            for key in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[key], (kind, rule)
            assert "resourceNames" not in rule or rule["resourceNames"]
            assert "nonResourceURLs" not in rule


GRANTED = [
    ("", "nodes", "get list watch"),
    ("", "nodes/status", "get patch"),
    ("", "namespaces", "get list watch"),
    ("", "pods", "get list watch"),
    ("cni.pyroute2.org", "vrfdomains", "get list watch create"),
    ("cni.pyroute2.org", "vrfdomainbindings", "get list watch"),
    ("cni.pyroute2.org", "vrfnodeconfigs", "get list watch"),
    ("cni.pyroute2.org", "vrfdomains/status", "update patch"),
    ("cni.pyroute2.org", "vrfnodeconfigs/status", "update patch"),
    ("cni.pyroute2.org", "vrfnodestates", "get create"),
    ("cni.pyroute2.org", "vrfnodestates/status", "patch"),
    ("ipam.pyroute2.org", "ipblocks", "get list watch create update patch delete"),
    ("ipam.pyroute2.org", "ipblocks/status", "get list watch create update patch delete"),
    ("", "events", "create patch"),
    ("events.k8s.io", "events", "create patch"),
]

DENIED = [
    ("", "secrets", "get"),
    ("", "nodes", "update"),
    ("", "nodes", "patch"),
    ("", "nodes/status", "update"),
    ("", "pods", "delete"),
    ("cni.pyroute2.org", "vrfdomains", "delete"),
    ("cni.pyroute2.org", "vrfdomains", "update"),
    ("cni.pyroute2.org", "vrfdomainbindings", "create"),
    ("cni.pyroute2.org", "vrfnodeconfigs", "update"),
    ("cni.pyroute2.org", "vrfnodestates", "update"),
    ("cni.pyroute2.org", "vrfnodestates", "delete"),
    ("cni.pyroute2.org", "vrfnodestates/status", "update"),
    ("ipam.pyroute2.org", "ipblocks", "deletecollection"),
    ("coordination.k8s.io", "leases", "get"),  # only in the namespaced Role
]


@pytest.mark.parametrize(("group", "resource", "verbs"), GRANTED)
def test_cluster_role_grants(release: list[Obj], group: str, resource: str, verbs: str) -> None:
    for verb in verbs.split():
        assert allows(rules(release, "ClusterRole"), group, resource, verb), verb


@pytest.mark.parametrize(("group", "resource", "verb"), DENIED)
def test_cluster_role_denies(release: list[Obj], group: str, resource: str, verb: str) -> None:
    assert not allows(rules(release, "ClusterRole"), group, resource, verb)


def test_lease_role(release: list[Obj]) -> None:
    role = rules(release, "Role")
    for verb in ("get", "create", "update"):
        assert allows(role, "coordination.k8s.io", "leases", verb)
    assert not allows(role, "coordination.k8s.io", "leases", "delete")


@pytest.mark.parametrize("kind", ["ClusterRoleBinding", "RoleBinding"])
def test_bindings(release: list[Obj], kind: str) -> None:
    binding = find(release, kind, "pyroute2-cni")
    assert binding["roleRef"]["name"] == "pyroute2-cni"
    assert binding["roleRef"]["kind"] == kind.replace("Binding", "")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "pyroute2-cni", "namespace": NAMESPACE}
    ]


def test_vrfdomain_cut_fields_are_immutable_on_cel_servers(crds: dict[str, Obj]) -> None:
    # Issue #14 item 5: changing them would re-cut live IPBlocks.  Kubernetes 1.25+
    # refuses the change; the rule's message says what to do instead.
    spec = schema(crds["vrfdomains.cni.pyroute2.org"])["properties"]["spec"]["properties"]
    for field in ("vrf", "prefix", "prefixlen", "ipblocklen"):
        rules = spec[field].get("x-kubernetes-validations")
        assert rules == [
            {
                "rule": "self == oldSelf",
                "message": f"spec.{field} is immutable: existing IPBlocks were cut from it; "
                "create a new VRFDomain, or drain the pods and delete this domain's "
                "IPBlocks and then the VRFDomain",
            }
        ], field
        assert "Immutable" in spec[field]["description"], field
    for field in ("table", "attachments"):
        assert "x-kubernetes-validations" not in spec[field], field
