"""The CRDs and the release against a real kube-apiserver.

Installs kubernetes/crds/0.1/ and kubernetes/releases/0.1.0/ the way the README
does (`kubectl apply -k`, `kubectl wait`), then checks that the README's
examples are accepted, that malformed objects are refused with 422, that the
status subresource works, that `kubectl get ipblocks.ipam.pyroute2.org` prints
the README's columns, and that the daemon's ServiceAccount gets exactly the
access it needs.

Objects that only need validating are created with server-side dry run, so the
module leaves no objects behind on the shared API server apart from the CRDs
and the release, which are idempotent to re-apply.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest
from kubernetes.client import ApiClient, AppsV1Api, CoreV1Api, CustomObjectsApi
from kubernetes.client.rest import ApiException

pytestmark = pytest.mark.api

REPO = Path(__file__).resolve().parents[2]
CRDS_DIR = REPO / "kubernetes" / "crds" / "0.1"
RELEASE_DIR = REPO / "kubernetes" / "releases" / "0.1.0"
CRDS = [
    "vrfdomains.cni.pyroute2.org",
    "vrfdomainbindings.cni.pyroute2.org",
    "vrfnodeconfigs.cni.pyroute2.org",
    "vrfnodestates.cni.pyroute2.org",
    "ipblocks.ipam.pyroute2.org",
]
SERVICE_ACCOUNT = "system:serviceaccount:pyroute2-cni:pyroute2-cni"
CNI = ("cni.pyroute2.org", "v1alpha1")
IPAM = ("ipam.pyroute2.org", "v1alpha1")

Obj = dict[str, Any]


class KubeApi(Protocol):
    """What this module uses of the harness's `kube_api` fixture."""

    @property
    def kubeconfig(self) -> str: ...

    def api_client(self) -> ApiClient: ...


@dataclass(frozen=True)
class Kubectl:
    kubeconfig: str
    cache_dir: Path

    def __call__(
        self, *args: str, stdin: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        binary = shutil.which("kubectl") or "/usr/bin/kubectl"
        return subprocess.run(
            [binary, f"--kubeconfig={self.kubeconfig}", f"--cache-dir={self.cache_dir}", *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def ok(self, *args: str, stdin: str | None = None, timeout: float = 60) -> str:
        proc = self(*args, stdin=stdin, timeout=timeout)
        assert proc.returncode == 0, f"kubectl {' '.join(args)}: {proc.stderr}"
        return proc.stdout


@pytest.fixture(scope="module")
def kubectl(kube_api: KubeApi, tmp_path_factory: pytest.TempPathFactory) -> Kubectl:
    return Kubectl(kube_api.kubeconfig, tmp_path_factory.mktemp("kubectl-cache"))


# First Kubernetes minor version that enforces x-kubernetes-validations (CEL).
CEL_MINOR = 25


def server_minor(kubectl: Kubectl) -> int:
    version = json.loads(kubectl.ok("version", "-o", "json"))["serverVersion"]
    return int(str(version["minor"]).rstrip("+"))


# The VRFDomain CRD carries CEL transition rules (x-kubernetes-validations),
# which Kubernetes 1.25+ enforces.  Older API servers accept the CRD and drop
# the field, but kubectl's client-side schema check (what `--validate=strict`
# falls back to on them) refuses it as an unknown field: the README tells users
# of such servers to add --validate=false, and so does the harness.
def apply_crds_args(kubectl: Kubectl) -> list[str]:
    old = server_minor(kubectl) < CEL_MINOR
    return ["apply", *(["--validate=false"] if old else []), "-k", str(CRDS_DIR)]


@pytest.fixture(scope="module")
def crds(kubectl: Kubectl) -> Kubectl:
    """The CRDs, installed as the README does and Established."""
    kubectl.ok(*apply_crds_args(kubectl))
    kubectl.ok(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        *(f"crd/{name}" for name in CRDS),
    )
    return kubectl


@pytest.fixture(scope="module")
def api(kube_api: KubeApi) -> Iterator[ApiClient]:
    api_client = kube_api.api_client()
    yield api_client
    api_client.close()


@pytest.fixture(scope="module")
def custom(crds: Kubectl, api: ApiClient) -> CustomObjectsApi:
    return CustomObjectsApi(api)


# --- install -------------------------------------------------------------------------


def test_readme_wait_command(crds: Kubectl) -> None:
    proc = crds(
        "wait", "--for=condition=Established", "crd/ipblocks.ipam.pyroute2.org", "--timeout=60s"
    )
    assert proc.returncode == 0, proc.stderr
    assert "condition met" in proc.stdout


def test_crds_are_structural(crds: Kubectl) -> None:
    for name in CRDS:
        crd = json.loads(crds.ok("get", f"crd/{name}", "-o", "json"))
        conditions = {c["type"]: c for c in crd["status"]["conditions"]}
        assert conditions["Established"]["status"] == "True"
        assert conditions["NamesAccepted"]["status"] == "True"
        # A non-structural schema shows up as a NonStructuralSchema condition.
        assert "NonStructuralSchema" not in conditions, conditions


def test_release_applies(crds: Kubectl, api: ApiClient) -> None:
    crds.ok("apply", "-k", str(RELEASE_DIR))
    apps = AppsV1Api(api)
    ds = apps.read_namespaced_daemon_set("pyroute2-cni", "pyroute2-cni")
    assert [c.name for c in ds.spec.template.spec.containers] == ["pyroute2-cni", "pyroute2-frr"]
    core = CoreV1Api(api)
    cm = core.read_namespaced_config_map("server-config", "pyroute2-cni")
    assert set(cm.data) == {"server.ini"}
    # Re-applying is a no-op, as `kubectl apply -k` is run again on upgrade.
    out = crds.ok("apply", "-k", str(RELEASE_DIR))
    assert all(line.endswith("unchanged") for line in out.splitlines()), out


@pytest.fixture(scope="module")
def release(crds: Kubectl) -> Kubectl:
    crds.ok("apply", "-k", str(RELEASE_DIR))
    return crds


CAN = [
    ("list", "nodes", ""),
    ("watch", "namespaces", ""),
    ("list", "pods", ""),
    ("watch", "vrfdomains.cni.pyroute2.org", ""),
    ("create", "vrfdomains.cni.pyroute2.org", ""),
    ("list", "vrfdomainbindings.cni.pyroute2.org", ""),
    ("watch", "vrfnodeconfigs.cni.pyroute2.org", ""),
    ("patch", "vrfdomains.cni.pyroute2.org/status", ""),
    ("update", "vrfnodeconfigs.cni.pyroute2.org/status", ""),
    ("update", "ipblocks.ipam.pyroute2.org", ""),
    ("get", "vrfnodestates.cni.pyroute2.org", ""),
    ("create", "vrfnodestates.cni.pyroute2.org", ""),
    ("patch", "vrfnodestates.cni.pyroute2.org/status", ""),
    ("create", "ipblocks.ipam.pyroute2.org", ""),
    ("delete", "ipblocks.ipam.pyroute2.org", ""),
    ("update", "ipblocks.ipam.pyroute2.org/status", ""),
    ("create", "events", "default"),
    ("patch", "events.events.k8s.io", "default"),
    ("update", "leases.coordination.k8s.io", "pyroute2-cni"),
    ("create", "leases.coordination.k8s.io", "pyroute2-cni"),
]

CANNOT = [
    ("get", "secrets", "pyroute2-cni"),
    ("list", "secrets", ""),
    ("delete", "pods", "default"),
    ("update", "nodes", ""),
    ("delete", "vrfdomains.cni.pyroute2.org", ""),
    ("update", "vrfdomains.cni.pyroute2.org", ""),
    ("update", "vrfdomainbindings.cni.pyroute2.org/status", ""),
    ("get", "vrfnodeconfigs.cni.pyroute2.org/status", ""),
    ("create", "vrfnodeconfigs.cni.pyroute2.org", ""),
    ("delete", "vrfnodestates.cni.pyroute2.org", ""),
    ("patch", "vrfnodestates.cni.pyroute2.org", ""),
    ("update", "leases.coordination.k8s.io", "kube-system"),
    ("delete", "leases.coordination.k8s.io", "pyroute2-cni"),
    ("create", "customresourcedefinitions.apiextensions.k8s.io", ""),
]


def can_i(kubectl: Kubectl, verb: str, resource: str, namespace: str) -> bool:
    """`kubectl auth can-i` as the daemon's ServiceAccount; "x/status" is a subresource."""
    resource, _, subresource = resource.partition("/")
    args = ["auth", "can-i", verb, resource, f"--as={SERVICE_ACCOUNT}"]
    args += ["-n", namespace] if namespace else ["--all-namespaces"]
    if subresource:
        args.append(f"--subresource={subresource}")
    proc = kubectl(*args)
    answer = proc.stdout.strip()
    assert answer in ("yes", "no"), proc.stderr
    return answer == "yes"


@pytest.mark.parametrize(("verb", "resource", "namespace"), CAN)
def test_service_account_can(release: Kubectl, verb: str, resource: str, namespace: str) -> None:
    assert can_i(release, verb, resource, namespace)


@pytest.mark.parametrize(("verb", "resource", "namespace"), CANNOT)
def test_service_account_cannot(release: Kubectl, verb: str, resource: str, namespace: str) -> None:
    assert not can_i(release, verb, resource, namespace)


# --- the README's examples -----------------------------------------------------------

README_VRFNODECONFIG = """\
apiVersion: cni.pyroute2.org/v1alpha1
kind: VRFNodeConfig
metadata:
  name: k8s02-vrnc
spec:
  nodeRef:
    name: k8s02
  routerId: 192.168.124.2
  routeReflectors:
    - 192.168.124.1
  interfaces:
    - name: eth1
      local: 192.168.124.2
"""

README_VRFDOMAIN = """\
apiVersion: cni.pyroute2.org/v1alpha1
kind: VRFDomain
metadata:
  name: vrf-200
spec:
  vrf: 200
  table: 10200
  prefix: 10.1.0.0
  prefixlen: 16
  ipblocklen: 26
  attachments:
    - type: l3vni
      vni: 60200
      port: 4789
"""

README_VRFDOMAINBINDING = """\
apiVersion: cni.pyroute2.org/v1alpha1
kind: VRFDomainBinding
metadata:
  name: test02-vrf-200
spec:
  namespaceRef:
    name: test02
  vrfDomainRef:
    name: vrf-200
"""

README_EXAMPLES = {
    "VRFNodeConfig": README_VRFNODECONFIG,
    "VRFDomain": README_VRFDOMAIN,
    "VRFDomainBinding": README_VRFDOMAINBINDING,
}


@pytest.mark.parametrize("kind", sorted(README_EXAMPLES))
def test_readme_example_accepted_by_kubectl(crds: Kubectl, kind: str) -> None:
    out = crds.ok("apply", "--dry-run=server", "-o", "json", "-f", "-", stdin=README_EXAMPLES[kind])
    assert json.loads(out)["kind"] == kind


VRFDOMAIN: Obj = {
    "apiVersion": "cni.pyroute2.org/v1alpha1",
    "kind": "VRFDomain",
    "metadata": {"name": "vrf-200"},
    "spec": {
        "vrf": 200,
        "table": 10200,
        "prefix": "10.1.0.0",
        "prefixlen": 16,
        "ipblocklen": 26,
        "attachments": [{"type": "l3vni", "vni": 60200, "port": 4789}],
    },
}
VRFNODECONFIG: Obj = {
    "apiVersion": "cni.pyroute2.org/v1alpha1",
    "kind": "VRFNodeConfig",
    "metadata": {"name": "k8s02-vrnc"},
    "spec": {
        "nodeRef": {"name": "k8s02"},
        "routerId": "192.168.124.2",
        "routeReflectors": ["192.168.124.1"],
        "interfaces": [{"name": "eth1", "local": "192.168.124.2"}],
    },
}
VRFDOMAINBINDING: Obj = {
    "apiVersion": "cni.pyroute2.org/v1alpha1",
    "kind": "VRFDomainBinding",
    "metadata": {"name": "test02-vrf-200"},
    "spec": {"namespaceRef": {"name": "test02"}, "vrfDomainRef": {"name": "vrf-200"}},
}
IPBLOCK: Obj = {
    "apiVersion": "ipam.pyroute2.org/v1alpha1",
    "kind": "IPBlock",
    "metadata": {"name": "vrf-200-10-150-0-0-26"},
    "spec": {
        "cidr": "10.150.0.0/26",
        "node": "k8s03",
        "vrf": 200,
        "gateway": "10.150.0.1",
        "capacity": 62,
    },
}

PLURALS = {
    "VRFDomain": (CNI, "vrfdomains"),
    "VRFNodeConfig": (CNI, "vrfnodeconfigs"),
    "VRFDomainBinding": (CNI, "vrfdomainbindings"),
    "IPBlock": (IPAM, "ipblocks"),
}


def create(api: CustomObjectsApi, body: Obj, dry_run: bool = True) -> Obj:
    (group, version), plural = PLURALS[body["kind"]]
    kwargs = {"dry_run": "All"} if dry_run else {}
    created: Obj = api.create_cluster_custom_object(group, version, plural, body, **kwargs)
    return created


@pytest.mark.parametrize(
    "body", [VRFDOMAIN, VRFNODECONFIG, VRFDOMAINBINDING, IPBLOCK], ids=lambda b: b["kind"]
)
def test_valid_objects_accepted(custom: CustomObjectsApi, body: Obj) -> None:
    created = create(custom, body)
    assert created["spec"] == body["spec"]


# A VRFDomain that joins an external fabric: its route targets and what it imports.
VRFDOMAIN_FABRIC: Obj = copy.deepcopy(VRFDOMAIN)
VRFDOMAIN_FABRIC["spec"].update(
    {
        "routeTargets": {
            "import": ["65100:200", "10.0.0.1:200", "4200000000:65535", "65000:4294967295"],
            "export": ["65100:200"],
        },
        "importPrefixes": [
            {"cidr": "192.0.2.0/24", "le": 28},
            {"cidr": "198.51.100.0/24"},
            {"cidr": "0.0.0.0/0", "le": 32},
        ],
        "acceptDefaultRoute": True,
    }
)


# Its l2vni's MAC-VRF joins a fabric segment: spec.attachments[].routeTargets.
VRFDOMAIN_FABRIC_L2: Obj = copy.deepcopy(VRFDOMAIN)
VRFDOMAIN_FABRIC_L2["spec"]["attachments"] = [
    {
        "type": "l2vni",
        "vni": 50200,
        "port": 4789,
        "routeTargets": {"import": ["65100:50200", "10.0.0.1:7"], "export": ["65100:50200"]},
    },
    {"type": "l3vni", "vni": 60200, "port": 4789},
]


def test_l2vni_route_targets_accepted(custom: CustomObjectsApi) -> None:
    created = create(custom, VRFDOMAIN_FABRIC_L2)
    assert created["spec"] == VRFDOMAIN_FABRIC_L2["spec"]


def test_routing_policy_fields_accepted(custom: CustomObjectsApi) -> None:
    created = create(custom, VRFDOMAIN_FABRIC)
    assert created["spec"] == VRFDOMAIN_FABRIC["spec"]
    # Each field is optional on its own.
    for key in ("routeTargets", "importPrefixes", "acceptDefaultRoute"):
        body = copy.deepcopy(VRFDOMAIN)
        body["spec"][key] = VRFDOMAIN_FABRIC["spec"][key]
        assert create(custom, body)["spec"] == body["spec"]
    body = copy.deepcopy(VRFDOMAIN)
    body["spec"]["routeTargets"] = {"export": ["65100:200"]}
    assert create(custom, body)["spec"] == body["spec"]


def test_attachment_port_defaults_to_4789(custom: CustomObjectsApi) -> None:
    body = copy.deepcopy(VRFDOMAIN)
    body["spec"]["attachments"] = [{"type": "l2vni", "vni": 100}, {"type": "l3vni", "vni": 200}]
    created = create(custom, body)
    assert [a["port"] for a in created["spec"]["attachments"]] == [4789, 4789]


def test_interface_local_is_optional(custom: CustomObjectsApi) -> None:
    body = copy.deepcopy(VRFNODECONFIG)
    body["spec"] = {"nodeRef": {"name": "k8s02"}, "interfaces": [{"name": "bond0.100"}]}
    assert create(custom, body)["spec"] == body["spec"]


# --- malformed objects ---------------------------------------------------------------

DELETE = object()


def bad(base: Obj, path: str, value: Any) -> Obj:
    """A copy of `base` with the dotted `path` set to `value` (DELETE removes it)."""
    body = copy.deepcopy(base)
    *parents, leaf = path.split(".")
    node: Any = body
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if value is DELETE:
        del node[leaf]
    elif isinstance(node, list):
        node[int(leaf)] = value
    else:
        node[leaf] = value
    return body


def attachment(kind: str, vni: int) -> Obj:
    return {"type": kind, "vni": vni, "port": 4789}


BAD_OBJECTS: list[tuple[str, Obj]] = [
    # VRFDomain
    ("vrfdomain-no-spec", bad(VRFDOMAIN, "spec", DELETE)),
    ("vrf-wrong-type", bad(VRFDOMAIN, "spec.vrf", "200")),
    ("vrf-0", bad(VRFDOMAIN, "spec.vrf", 0)),
    ("vrf-65536", bad(VRFDOMAIN, "spec.vrf", 65536)),
    ("vrf-missing", bad(VRFDOMAIN, "spec.vrf", DELETE)),
    ("table-missing", bad(VRFDOMAIN, "spec.table", DELETE)),
    ("table-0", bad(VRFDOMAIN, "spec.table", 0)),
    ("table-main-254", bad(VRFDOMAIN, "spec.table", 254)),
    ("table-local-255", bad(VRFDOMAIN, "spec.table", 255)),
    ("table-2**32-1", bad(VRFDOMAIN, "spec.table", 2**32 - 1)),
    ("prefix-missing", bad(VRFDOMAIN, "spec.prefix", DELETE)),
    ("prefix-octet-256", bad(VRFDOMAIN, "spec.prefix", "10.1.0.256")),
    ("prefix-three-octets", bad(VRFDOMAIN, "spec.prefix", "10.1.0")),
    ("prefix-with-length", bad(VRFDOMAIN, "spec.prefix", "10.1.0.0/16")),
    ("prefix-ipv6", bad(VRFDOMAIN, "spec.prefix", "fd00::")),
    ("prefix-hostname", bad(VRFDOMAIN, "spec.prefix", "example.com")),
    ("prefixlen-33", bad(VRFDOMAIN, "spec.prefixlen", 33)),
    ("prefixlen-7", bad(VRFDOMAIN, "spec.prefixlen", 7)),
    ("prefixlen-string", bad(VRFDOMAIN, "spec.prefixlen", "16")),
    ("ipblocklen-31", bad(VRFDOMAIN, "spec.ipblocklen", 31)),
    ("ipblocklen-missing", bad(VRFDOMAIN, "spec.ipblocklen", DELETE)),
    ("attachments-missing", bad(VRFDOMAIN, "spec.attachments", DELETE)),
    ("attachments-empty", bad(VRFDOMAIN, "spec.attachments", [])),
    (
        "attachments-three",
        bad(
            VRFDOMAIN,
            "spec.attachments",
            [attachment("l2vni", 1), attachment("l3vni", 2), attachment("l2vni", 3)],
        ),
    ),
    (
        "attachments-same-type-twice",
        bad(VRFDOMAIN, "spec.attachments", [attachment("l3vni", 1), attachment("l3vni", 2)]),
    ),
    ("attachments-not-a-list", bad(VRFDOMAIN, "spec.attachments", attachment("l3vni", 1))),
    ("attachment-type-unknown", bad(VRFDOMAIN, "spec.attachments.0.type", "l4vni")),
    ("attachment-type-missing", bad(VRFDOMAIN, "spec.attachments.0.type", DELETE)),
    ("vni-0", bad(VRFDOMAIN, "spec.attachments.0.vni", 0)),
    ("vni-16777216", bad(VRFDOMAIN, "spec.attachments.0.vni", 16777216)),
    ("vni-missing", bad(VRFDOMAIN, "spec.attachments.0.vni", DELETE)),
    ("port-0", bad(VRFDOMAIN, "spec.attachments.0.port", 0)),
    ("port-65536", bad(VRFDOMAIN, "spec.attachments.0.port", 65536)),
    ("port-string", bad(VRFDOMAIN, "spec.attachments.0.port", "4789")),
    # VRFDomain routing policy: what the schema itself refuses (ranges that
    # depend on the other half of a value are the daemon's: Accepted=False).
    ("rt-asn-0", bad(VRFDOMAIN_FABRIC, "spec.routeTargets.import.0", "0:1")),
    ("rt-no-colon", bad(VRFDOMAIN_FABRIC, "spec.routeTargets.import.0", "65000")),
    ("rt-two-colons", bad(VRFDOMAIN_FABRIC, "spec.routeTargets.import.0", "65000:1:2")),
    ("rt-leading-zero", bad(VRFDOMAIN_FABRIC, "spec.routeTargets.import.0", "065000:1")),
    ("rt-11-digit-asn", bad(VRFDOMAIN_FABRIC, "spec.routeTargets.import.0", "12345678901:1")),
    ("rt-11-digit-value", bad(VRFDOMAIN_FABRIC, "spec.routeTargets.export.0", "1:12345678901")),
    ("rt-octet-256", bad(VRFDOMAIN_FABRIC, "spec.routeTargets.import.0", "10.0.0.256:1")),
    ("rt-three-octets", bad(VRFDOMAIN_FABRIC, "spec.routeTargets.import.0", "10.0.0:1")),
    ("rt-ipv6", bad(VRFDOMAIN_FABRIC, "spec.routeTargets.import.0", "fd00::1:1")),
    ("rt-words", bad(VRFDOMAIN_FABRIC, "spec.routeTargets.export.0", "target:1")),
    ("rt-number", bad(VRFDOMAIN_FABRIC, "spec.routeTargets.export.0", 65100)),
    ("rt-import-empty", bad(VRFDOMAIN_FABRIC, "spec.routeTargets.import", [])),
    ("rt-export-not-a-list", bad(VRFDOMAIN_FABRIC, "spec.routeTargets.export", "65100:200")),
    (
        "rt-import-17",
        bad(VRFDOMAIN_FABRIC, "spec.routeTargets.import", [f"65100:{i}" for i in range(17)]),
    ),
    (
        "rt-import-duplicate",
        bad(VRFDOMAIN_FABRIC, "spec.routeTargets.import", ["65100:1", "65100:1"]),
    ),
    ("rt-not-an-object", bad(VRFDOMAIN_FABRIC, "spec.routeTargets", ["65100:200"])),
    ("import-cidr-no-length", bad(VRFDOMAIN_FABRIC, "spec.importPrefixes.0.cidr", "192.0.2.0")),
    ("import-cidr-length-33", bad(VRFDOMAIN_FABRIC, "spec.importPrefixes.0.cidr", "10.0.0.0/33")),
    ("import-cidr-octet-300", bad(VRFDOMAIN_FABRIC, "spec.importPrefixes.0.cidr", "10.0.300.0/24")),
    ("import-cidr-ipv6", bad(VRFDOMAIN_FABRIC, "spec.importPrefixes.0.cidr", "fd00::/8")),
    ("import-cidr-missing", bad(VRFDOMAIN_FABRIC, "spec.importPrefixes.0.cidr", DELETE)),
    ("import-le-33", bad(VRFDOMAIN_FABRIC, "spec.importPrefixes.0.le", 33)),
    ("import-le-negative", bad(VRFDOMAIN_FABRIC, "spec.importPrefixes.0.le", -1)),
    ("import-le-string", bad(VRFDOMAIN_FABRIC, "spec.importPrefixes.0.le", "28")),
    (
        "import-cidr-twice",
        bad(
            VRFDOMAIN_FABRIC,
            "spec.importPrefixes",
            [{"cidr": "192.0.2.0/24"}, {"cidr": "192.0.2.0/24", "le": 32}],
        ),
    ),
    (
        "import-prefixes-65",
        bad(
            VRFDOMAIN_FABRIC,
            "spec.importPrefixes",
            [{"cidr": f"10.{i}.0.0/16"} for i in range(65)],
        ),
    ),
    ("import-prefixes-not-a-list", bad(VRFDOMAIN_FABRIC, "spec.importPrefixes", "10.0.0.0/8")),
    ("accept-default-string", bad(VRFDOMAIN_FABRIC, "spec.acceptDefaultRoute", "true")),
    (
        "l2-rt-no-colon",
        bad(VRFDOMAIN_FABRIC_L2, "spec.attachments.0.routeTargets.import.0", "65100"),
    ),
    ("l2-rt-export-empty", bad(VRFDOMAIN_FABRIC_L2, "spec.attachments.0.routeTargets.export", [])),
    (
        "l2-rt-not-an-object",
        bad(VRFDOMAIN_FABRIC_L2, "spec.attachments.0.routeTargets", ["65100:50200"]),
    ),
    # VRFNodeConfig
    ("nodeconfig-no-nodeRef", bad(VRFNODECONFIG, "spec.nodeRef", DELETE)),
    ("nodeRef-no-name", bad(VRFNODECONFIG, "spec.nodeRef.name", DELETE)),
    ("nodeRef-name-uppercase", bad(VRFNODECONFIG, "spec.nodeRef.name", "K8S02")),
    ("routerId-three-octets", bad(VRFNODECONFIG, "spec.routerId", "192.168.124")),
    ("routerId-octet-300", bad(VRFNODECONFIG, "spec.routerId", "300.168.124.2")),
    ("routerId-number", bad(VRFNODECONFIG, "spec.routerId", 3232267266)),
    ("routeReflector-bad-ip", bad(VRFNODECONFIG, "spec.routeReflectors.0", "192.168.124.1.5")),
    (
        "routeReflectors-duplicate",
        bad(VRFNODECONFIG, "spec.routeReflectors", ["192.168.124.1", "192.168.124.1"]),
    ),
    ("interface-name-16-chars", bad(VRFNODECONFIG, "spec.interfaces.0.name", "eth0123456789abc")),
    ("interface-name-empty", bad(VRFNODECONFIG, "spec.interfaces.0.name", "")),
    ("interface-name-slash", bad(VRFNODECONFIG, "spec.interfaces.0.name", "eth/1")),
    ("interface-name-space", bad(VRFNODECONFIG, "spec.interfaces.0.name", "eth 1")),
    ("interface-name-colon", bad(VRFNODECONFIG, "spec.interfaces.0.name", "eth1:0")),
    ("interface-name-dot", bad(VRFNODECONFIG, "spec.interfaces.0.name", ".")),
    ("interface-name-missing", bad(VRFNODECONFIG, "spec.interfaces.0.name", DELETE)),
    ("interface-local-bad", bad(VRFNODECONFIG, "spec.interfaces.0.local", "192.168.124.256")),
    (
        "interfaces-duplicate-name",
        bad(VRFNODECONFIG, "spec.interfaces", [{"name": "eth1"}, {"name": "eth1"}]),
    ),
    # VRFDomainBinding
    ("binding-no-vrfDomainRef", bad(VRFDOMAINBINDING, "spec.vrfDomainRef", DELETE)),
    ("binding-no-namespaceRef", bad(VRFDOMAINBINDING, "spec.namespaceRef", DELETE)),
    ("binding-namespace-not-dns", bad(VRFDOMAINBINDING, "spec.namespaceRef.name", "Test_02")),
    ("binding-namespace-64-chars", bad(VRFDOMAINBINDING, "spec.namespaceRef.name", "a" * 64)),
    ("binding-namespaceRef-string", bad(VRFDOMAINBINDING, "spec.namespaceRef", "test02")),
    ("binding-vrfdomain-empty", bad(VRFDOMAINBINDING, "spec.vrfDomainRef.name", "")),
    # IPBlock
    ("ipblock-cidr-no-length", bad(IPBLOCK, "spec.cidr", "10.150.0.0")),
    ("ipblock-cidr-length-33", bad(IPBLOCK, "spec.cidr", "10.150.0.0/33")),
    ("ipblock-cidr-octet-300", bad(IPBLOCK, "spec.cidr", "10.150.0.300/26")),
    ("ipblock-cidr-missing", bad(IPBLOCK, "spec.cidr", DELETE)),
    ("ipblock-gateway-bad", bad(IPBLOCK, "spec.gateway", "10.150.0")),
    ("ipblock-capacity-0", bad(IPBLOCK, "spec.capacity", 0)),
    ("ipblock-capacity-negative", bad(IPBLOCK, "spec.capacity", -1)),
    ("ipblock-vrf-string", bad(IPBLOCK, "spec.vrf", "200")),
    ("ipblock-node-missing", bad(IPBLOCK, "spec.node", DELETE)),
    ("ipblock-node-uppercase", bad(IPBLOCK, "spec.node", "K8S03")),
]


@pytest.mark.parametrize(("case", "body"), BAD_OBJECTS, ids=[c for c, _ in BAD_OBJECTS])
def test_bad_object_rejected(custom: CustomObjectsApi, case: str, body: Obj) -> None:
    with pytest.raises(ApiException) as info:
        create(custom, body)
    assert info.value.status == 422, f"{case}: {info.value.status} {info.value.body}"


# --- status subresource and `kubectl get` --------------------------------------------


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture
def cleanup(custom: CustomObjectsApi) -> Iterator[Callable[[Obj], None]]:
    created: list[Obj] = []
    yield created.append
    for obj in created:
        (group, version), plural = PLURALS[obj["kind"]]
        try:
            custom.delete_cluster_custom_object(group, version, plural, obj["metadata"]["name"])
        except ApiException as err:
            if err.status != 404:
                raise


def ipblock(name: str, cidr: str, node: str, vrf: int, capacity: int) -> Obj:
    first, _, _ = cidr.partition("/")
    a, b, c, d = (int(x) for x in first.split("."))
    return {
        "apiVersion": "ipam.pyroute2.org/v1alpha1",
        "kind": "IPBlock",
        "metadata": {"name": name, "labels": {"pyroute2.org/test": "crds"}},
        "spec": {
            "cidr": cidr,
            "node": node,
            "vrf": vrf,
            "gateway": f"{a}.{b}.{c}.{d + 1}",
            "capacity": capacity,
        },
    }


def allocations(count: int, base: str) -> Obj:
    prefix, _, last = base.rpartition(".")
    out: Obj = {f"{prefix}.{int(last) + 1}": {"key": "gateway"}}
    for i in range(1, count):
        out[f"{prefix}.{int(last) + 1 + i}"] = {
            "key": f"{i:064x}/eth0",
            "namespace": "default",
            "pod": f"pod-{i}",
            "uid": str(uuid.UUID(int=i)),
            "since": "2025-01-01T00:00:00Z",
        }
    return out


def test_kubectl_get_ipblocks_prints_readme_columns(
    custom: CustomObjectsApi,
    crds: Kubectl,
    unique: str,
    cleanup: Callable[[Obj], None],
) -> None:
    node_a, node_b = f"crd-{unique}-a", f"crd-{unique}-b"
    blocks = [
        ipblock(f"vrf-4000-10-253-0-0-26-{unique}", "10.253.0.0/26", node_a, 4000, 62),
        ipblock(f"vrf-4000-10-253-0-64-26-{unique}", "10.253.0.64/26", node_b, 4000, 62),
    ]
    allocated = [3, 41]
    for block, count in zip(blocks, allocated, strict=True):
        # status in a create is ignored: it is a subresource.
        block["status"] = {"allocated": 999}
        created = create(custom, block, dry_run=False)
        cleanup(created)
        assert "status" not in created
        created["status"] = {
            "allocated": count,
            "allocations": allocations(count, block["spec"]["cidr"].partition("/")[0]),
        }
        updated = custom.replace_cluster_custom_object_status(
            *IPAM, "ipblocks", created["metadata"]["name"], created
        )
        assert updated["status"]["allocated"] == count
        assert len(updated["status"]["allocations"]) == count

    out = crds.ok("get", "ipblocks.ipam.pyroute2.org")
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "CIDR", "NODE", "VRF", "ALLOCATED", "CAPACITY"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    for block, count in zip(blocks, allocated, strict=True):
        name = block["metadata"]["name"]
        assert rows[name] == [
            name,
            block["spec"]["cidr"],
            block["spec"]["node"],
            "4000",
            str(count),
            "62",
        ]
    # Columns line up like the README's table.
    starts = [lines[0].index(h) for h in ("CIDR", "NODE", "VRF", "ALLOCATED", "CAPACITY")]
    mine = [
        line for line in lines[1:] if line.split()[0] in {b["metadata"]["name"] for b in blocks}
    ]
    for line in mine:
        assert all(line[s - 1] == " " and line[s] != " " for s in starts), line


BAD_STATUS: list[tuple[str, Obj]] = [
    ("allocated-negative", {"allocated": -1}),
    ("allocated-string", {"allocated": "3"}),
    ("allocation-without-key", {"allocations": {"10.253.1.2": {"pod": "p"}}}),
    ("allocation-not-an-object", {"allocations": {"10.253.1.2": "gateway"}}),
    (
        "allocation-since-not-a-date",
        {"allocations": {"10.253.1.2": {"key": "gateway", "since": "yesterday"}}},
    ),
]


@pytest.mark.parametrize(("case", "status"), BAD_STATUS, ids=[c for c, _ in BAD_STATUS])
def test_bad_ipblock_status_rejected(
    custom: CustomObjectsApi,
    unique: str,
    cleanup: Callable[[Obj], None],
    case: str,
    status: Obj,
) -> None:
    block = ipblock(f"vrf-4001-10-253-1-0-26-{unique}", "10.253.1.0/26", "node-x", 4001, 62)
    created = create(custom, block, dry_run=False)
    cleanup(created)
    created["status"] = status
    with pytest.raises(ApiException) as info:
        custom.replace_cluster_custom_object_status(
            *IPAM, "ipblocks", created["metadata"]["name"], created
        )
    assert info.value.status == 422, f"{case}: {info.value.body}"


def condition(status: str, reason: str = "Deployed") -> Obj:
    return {
        "type": "Ready",
        "status": status,
        "reason": reason,
        "message": "deployed on all nodes",
        "lastTransitionTime": "2025-01-01T00:00:00Z",
        "observedGeneration": 1,
    }


def test_vrfdomain_ready_column(
    custom: CustomObjectsApi,
    crds: Kubectl,
    unique: str,
    cleanup: Callable[[Obj], None],
) -> None:
    body = copy.deepcopy(VRFDOMAIN)
    body["metadata"]["name"] = f"vrf-crd-{unique}"
    created = create(custom, body, dry_run=False)
    cleanup(created)
    assert created["metadata"]["generation"] == 1
    created["status"] = {"observedGeneration": 1, "conditions": [condition("True")]}
    updated = custom.replace_cluster_custom_object_status(
        *CNI, "vrfdomains", created["metadata"]["name"], created
    )
    # A status write does not bump the generation.
    assert updated["metadata"]["generation"] == 1
    lines = crds.ok("get", "vrfdomains.cni.pyroute2.org", body["metadata"]["name"]).splitlines()
    assert lines[0].split() == [
        "NAME",
        "VRF",
        "TABLE",
        "PREFIX",
        "PREFIXLEN",
        "BLOCKLEN",
        "READY",
        "AGE",
    ]
    assert lines[1].split()[:7] == [
        body["metadata"]["name"],
        "200",
        "10200",
        "10.1.0.0",
        "16",
        "26",
        "True",
    ]


@pytest.mark.parametrize(
    "bad_condition",
    [
        condition("Yes"),
        condition("True", reason=""),
        condition("True", reason="not a reason"),
        {k: v for k, v in condition("True").items() if k != "lastTransitionTime"},
    ],
    ids=["status-yes", "reason-empty", "reason-spaces", "no-transition-time"],
)
def test_bad_condition_rejected(
    custom: CustomObjectsApi,
    unique: str,
    cleanup: Callable[[Obj], None],
    bad_condition: Obj,
) -> None:
    body = copy.deepcopy(VRFDOMAIN)
    body["metadata"]["name"] = f"vrf-crd-{unique}"
    created = create(custom, body, dry_run=False)
    cleanup(created)
    created["status"] = {"conditions": [bad_condition]}
    with pytest.raises(ApiException) as info:
        custom.replace_cluster_custom_object_status(
            *CNI, "vrfdomains", created["metadata"]["name"], created
        )
    assert info.value.status == 422, info.value.body


def test_vrfnodeconfig_status(
    custom: CustomObjectsApi,
    crds: Kubectl,
    unique: str,
    cleanup: Callable[[Obj], None],
) -> None:
    body = copy.deepcopy(VRFNODECONFIG)
    body["metadata"]["name"] = f"vrnc-crd-{unique}"
    created = create(custom, body, dry_run=False)
    cleanup(created)
    created["status"] = {"accepted": True, "ready": False, "conditions": [condition("False")]}
    custom.replace_cluster_custom_object_status(
        *CNI, "vrfnodeconfigs", created["metadata"]["name"], created
    )
    lines = crds.ok("get", "vrfnodeconfigs.cni.pyroute2.org", body["metadata"]["name"])
    header, row = lines.splitlines()
    assert header.split() == ["NAME", "NODE", "ROUTER-ID", "ACCEPTED", "READY", "AGE"]
    assert row.split()[:5] == [body["metadata"]["name"], "k8s02", "192.168.124.2", "true", "false"]


@pytest.mark.parametrize("resource", ["vrfd", "vrfdb", "vrfnc", "ipb", "pyroute2-cni"])
def test_short_names_and_category(crds: Kubectl, resource: str) -> None:
    """Short names and the `pyroute2-cni` category resolve through discovery."""
    crds.ok("get", resource)


# --- re-cutting blocks: the block-cutting fields are immutable (issue #14 item 5) ---

CUT_FIELDS = {"vrf": 201, "prefix": "10.2.0.0", "prefixlen": 15, "ipblocklen": 27}


def test_plain_apply_on_a_pre_cel_server_is_refused_by_kubectl(crds: Kubectl) -> None:
    # Why the README and the harness add --validate=false below 1.25; a server that knows
    # the CEL rules takes the plain apply.
    proc = crds("apply", "--dry-run=server", "-k", str(CRDS_DIR))
    if server_minor(crds) >= CEL_MINOR:
        assert proc.returncode == 0, proc.stderr
        return
    assert proc.returncode != 0
    assert 'unknown field "x-kubernetes-validations"' in proc.stderr


def _spec_schema(crds: Kubectl) -> Obj:
    crd = json.loads(crds.ok("get", "crd/vrfdomains.cni.pyroute2.org", "-o", "json"))
    schema: Obj = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


@pytest.mark.parametrize("field", sorted(CUT_FIELDS))
def test_changing_a_cut_field(
    custom: CustomObjectsApi,
    crds: Kubectl,
    unique: str,
    cleanup: Callable[[Obj], None],
    field: str,
) -> None:
    body = copy.deepcopy(VRFDOMAIN)
    body["metadata"]["name"] = f"vrf-cut-{unique}"
    created = create(custom, body, dry_run=False)
    cleanup(created)
    rules = _spec_schema(crds)["properties"]["spec"]["properties"][field].get(
        "x-kubernetes-validations"
    )
    changed = copy.deepcopy(created)
    changed["spec"][field] = CUT_FIELDS[field]
    if server_minor(crds) >= CEL_MINOR:
        # The primary guard: the API server refuses the change.
        assert rules and rules[0]["rule"] == "self == oldSelf"
        with pytest.raises(ApiException) as caught:
            custom.replace_cluster_custom_object(
                *CNI, "vrfdomains", body["metadata"]["name"], changed
            )
        assert caught.value.status == 422
        assert f"spec.{field} is immutable" in str(caught.value.body)
    else:
        # 1.20 installed the CRD and pruned the rule: the change goes through and
        # only the daemon's PrefixChangeRefused guard stands (tests/unit/test_crd_watcher.py).
        assert rules is None
        updated = custom.replace_cluster_custom_object(
            *CNI, "vrfdomains", body["metadata"]["name"], changed
        )
        assert updated["spec"][field] == CUT_FIELDS[field]


def test_accepted_cut_status_is_kept(
    custom: CustomObjectsApi, unique: str, cleanup: Callable[[Obj], None]
) -> None:
    # The daemon records the values IPBlocks were cut from; a pruned field would
    # make it forget them after a restart.
    body = copy.deepcopy(VRFDOMAIN)
    body["metadata"]["name"] = f"vrf-cut-{unique}"
    created = create(custom, body, dry_run=False)
    cleanup(created)
    cut = {"vrf": 200, "prefix": "10.1.0.0", "prefixlen": 16, "ipblocklen": 26}
    created["status"] = {"observedGeneration": 1, "acceptedCut": cut}
    updated = custom.replace_cluster_custom_object_status(
        *CNI, "vrfdomains", body["metadata"]["name"], created
    )
    assert updated["status"]["acceptedCut"] == cut
