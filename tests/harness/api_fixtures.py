"""pytest fixtures for the ``api`` tier: one real etcd + kube-apiserver per session.

Registered from the root ``conftest.py`` with
``pytest_plugins = ["tests.harness.api_fixtures", ...]``.

The first start needs the cached kube-apiserver binary; when it is missing the fixture runs
``scripts/build-kube-apiserver.sh`` (several minutes), so build it beforehand in CI.
``PYROUTE2_CNI_API_START_TIMEOUT`` (seconds, default 120) bounds the wait for /readyz.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.harness.apiserver import ApiServer
from tests.harness.waiting import wait_for

if TYPE_CHECKING:
    import kubernetes.client


@pytest.fixture(scope="session")
def kube_api() -> Iterator[ApiServer]:
    """The session's etcd + kube-apiserver, stopped at the end of the session."""
    with ApiServer() as server:
        yield server


@pytest.fixture
def k8s_client(kube_api: ApiServer) -> Iterator[kubernetes.client.ApiClient]:
    """A fresh ``kubernetes.client.ApiClient`` for ``kube_api``, closed after the test."""
    client = kube_api.api_client()
    try:
        yield client
    finally:
        client.close()


REPO = Path(__file__).resolve().parents[2]
CRDS_DIR = REPO / "kubernetes" / "crds" / "0.1"
CRDS = (
    "vrfdomains.cni.pyroute2.org",
    "vrfdomainbindings.cni.pyroute2.org",
    "vrfnodeconfigs.cni.pyroute2.org",
    "vrfnodestates.cni.pyroute2.org",
    "ipblocks.ipam.pyroute2.org",
)


def kubectl(kubeconfig: str, *args: str) -> str:
    binary = shutil.which("kubectl") or "/usr/bin/kubectl"
    proc = subprocess.run(
        [binary, f"--kubeconfig={kubeconfig}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, f"kubectl {' '.join(args)}: {proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="session")
def pyroute2_crds(kube_api: ApiServer) -> ApiServer:
    """``kube_api`` with the project's CRDs installed (``kubectl apply -k``, as users do)."""
    # The CRD files come from another part of the project; wait for them, never write them.
    wait_for(
        lambda: all((CRDS_DIR / f"{name}.yaml").exists() for name in CRDS),
        300,
        f"the CRD manifests in {CRDS_DIR}",
        interval=1,
    )
    install_crds(kube_api.kubeconfig)
    return kube_api


def install_crds(kubeconfig: str) -> None:
    """The project's CRDs as users install them (``kubectl apply -k``), Established."""
    # --validate=false: kubectl cannot check the CEL rules against a 1.20 server
    # (the server drops them); see tests/api/test_crds.py.
    kubectl(kubeconfig, "apply", "--validate=false", "-k", str(CRDS_DIR))
    kubectl(
        kubeconfig,
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        *(f"crd/{name}" for name in CRDS),
    )


def run_ipam_check(kubeconfig: str, timeout: float = 120) -> tuple[int, dict[str, Any]]:
    """`pyroute2-cni ipam check --json` as a user runs it: its exit status and report."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pyroute2_cni",
            "ipam",
            "check",
            "--json",
            "--kubeconfig",
            kubeconfig,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        check=False,
    )
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def pending_pod(name: str, namespace: str, node: str) -> dict[str, Any]:
    """A Pod bound to `node` that no kubelet will run: Pending is all the API needs."""
    return {
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "nodeName": node,
            "automountServiceAccountToken": False,
            "containers": [{"name": "c", "image": "registry.invalid/pause:1"}],
        },
    }
