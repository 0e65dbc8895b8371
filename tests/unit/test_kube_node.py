"""The kubelet harness's /proc/cpuinfo patch (cAdvisor needs a clock speed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness import kube_node
from tests.harness.kube_node import (
    CPU_MHZ_LINE,
    ControlPlaneComponent,
    KubeletError,
    cpuinfo_with_mhz,
    release_image_archives,
)

pytestmark = pytest.mark.unit

# What the User-Mode Linux guest shows: two processors, no "cpu MHz".
UML_CPUINFO = """processor\t: 0
vendor_id\t: User Mode Linux
model name\t: UML
mode\t\t: skas
host\t\t: Linux

processor\t: 1
vendor_id\t: User Mode Linux
model name\t: UML
mode\t\t: skas
host\t\t: Linux

"""


def test_every_processor_block_gets_a_clock_speed() -> None:
    patched = cpuinfo_with_mhz(UML_CPUINFO)
    blocks = patched.strip().split("\n\n")
    assert len(blocks) == 2
    assert all(block.splitlines()[-1] == CPU_MHZ_LINE for block in blocks)
    assert patched.count("processor\t:") == 2


def test_a_block_with_a_clock_speed_is_left_alone() -> None:
    text = "processor\t: 0\ncpu MHz\t\t: 3100.000\n"
    assert cpuinfo_with_mhz(text) == text


def test_the_controller_manager_signs_service_account_tokens_only_with_a_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The DaemonSet's in-cluster client needs a token; the token controller needs a key."""
    monkeypatch.setattr(kube_node, "RUN_BASE", tmp_path / "run")  # work dirs, no root needed
    kubeconfig = tmp_path / "kubeconfig"
    plain = ControlPlaneComponent("kube-controller-manager", kubeconfig=kubeconfig)
    signing = ControlPlaneComponent(
        "kube-controller-manager",
        kubeconfig=kubeconfig,
        service_account_key=tmp_path / "sa.key",
        root_ca=tmp_path / "ca.crt",
    )
    try:

        def controllers(c: ControlPlaneComponent) -> list[str]:
            (flag,) = [a for a in c.argv(Path("kcm")) if a.startswith("--controllers=")]
            return flag.removeprefix("--controllers=").split(",")

        assert "serviceaccount-token" not in controllers(plain)
        assert "serviceaccount-token" in controllers(signing)
        argv = signing.argv(Path("kcm"))
        assert f"--service-account-private-key-file={tmp_path / 'sa.key'}" in argv
        assert f"--root-ca-file={tmp_path / 'ca.crt'}" in argv
        assert not any(a.startswith("--service-account-private") for a in plain.argv(Path("k")))
    finally:
        plain.stop()
        signing.stop()


def test_missing_release_images_name_the_command_that_builds_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYROUTE2_CNI_CACHE", str(tmp_path))
    with pytest.raises(KubeletError, match="make images"):
        release_image_archives()
    images = tmp_path / "images"
    images.mkdir()
    for name in ("pyroute2-cni-0.1.0-aaaa.oci.tar", "pyroute2-cni-frr-0.1.0-bbbb.oci.tar"):
        (images / name).write_bytes(b"")
    # The daemon's glob must not take the FRR image's archive.
    assert [p.name for p in release_image_archives()] == [
        "pyroute2-cni-0.1.0-aaaa.oci.tar",
        "pyroute2-cni-frr-0.1.0-bbbb.oci.tar",
    ]
