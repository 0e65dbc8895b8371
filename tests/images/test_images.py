"""The images `make images` builds hold what the DaemonSet runs, checked without a kubelet.

Working containers of the two images (buildah, chroot isolation) run the DaemonSet's
commands, the CLI and FRR's tools; their mounted root filesystems are compared with the
repository: the installed package is this tree's, the shim is build/pyroute2-cni, the
FRR image's entrypoint and seed files are frr/'s, and FRR is the pinned version in both.
Then the pod's two containers run together, as the DaemonSet has them: the FRR image's
entrypoint starts watchfrr and the daemons in a private network namespace, and the daemon
image's FRR code applies configurations to them through the shared /etc/frr and /run/frr.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from pyroute2_cni.runtime.config import DaemonSection, FrrSection
from tests.harness.waiting import wait_for

pytestmark = pytest.mark.images

REPO = Path(__file__).resolve().parents[2]
VERSION: str = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
RELEASE = REPO / "kubernetes" / "releases" / VERSION
SHIM = REPO / "build" / "pyroute2-cni"
DAEMON_CONTAINER = "pyroute2-cni"
FRR_CONTAINER = "pyroute2-frr"
# The daemon image's size goal (uncompressed, as buildah counts it).
DAEMON_IMAGE_MAX_BYTES = 150_000_000
# The DaemonSet's containers are privileged; these are what FRR's daemons ask for.
FRR_CAPS = "CAP_NET_ADMIN,CAP_NET_RAW,CAP_SYS_ADMIN,CAP_NET_BIND_SERVICE"


def buildah(*args: str, timeout: float = 120.0) -> str:
    assert shutil.which("buildah"), "buildah is missing: `make test-images` installs it"
    proc = subprocess.run(
        ["buildah", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    assert proc.returncode == 0, f"buildah {' '.join(args)}: {proc.stderr.strip()}"
    return proc.stdout


def pinned_frr_version(containerfile: Path) -> str:
    match = re.search(r"^ARG FRR_VERSION=(\S+)$", containerfile.read_text(), re.MULTILINE)
    assert match, f"{containerfile}: no ARG FRR_VERSION=..."
    return match.group(1)


RUN_ATTEMPTS = 3
MEMFD_BUSY = "sealing memfd copy: Device or resource busy"


@dataclass(frozen=True)
class Working:
    """A buildah working container of an image, its root filesystem mounted."""

    image: str
    name: str
    root: Path

    def argv(self, *argv: str, options: Sequence[str] = (), netns: str = "") -> list[str]:
        """`buildah run` of argv, in the network namespace netns if given."""
        run = ["buildah", "run", "--isolation", "chroot", *options, self.name, "--", *argv]
        return ["ip", "netns", "exec", netns, *run] if netns else run

    def run(
        self, *argv: str, options: Sequence[str] = (), netns: str = "", timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        for _ in range(RUN_ATTEMPTS):
            proc = subprocess.run(
                self.argv(*argv, options=options, netns=netns),
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
            # buildah's chroot isolation copies its own binary into a sealed memfd first;
            # the kernel refuses the seal (EBUSY) now and then (seen once in CI, before the
            # command ran): a failure of the tool, not of the image, so try again.
            if proc.returncode == 0 or MEMFD_BUSY not in proc.stderr:
                return proc
        return proc

    def ok(self, *argv: str, options: Sequence[str] = (), netns: str = "") -> str:
        proc = self.run(*argv, options=options, netns=netns)
        assert proc.returncode == 0, f"{self.image}: {argv}: {proc.stdout}{proc.stderr}"
        return proc.stdout

    def file(self, path: str) -> Path:
        """A regular file of the image (symlinks there would resolve on this host)."""
        host = self.root / path.lstrip("/")
        assert not host.is_symlink(), f"{self.image}: {path} is a symlink"
        assert host.is_file(), f"{self.image}: no {path}"
        return host

    def config(self) -> dict[str, Any]:
        inspected = json.loads(buildah("inspect", "--type=image", self.image))
        config: dict[str, Any] = inspected["OCIv1"]["config"]
        return config


@pytest.fixture(scope="module")
def daemonset() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((RELEASE / "daemonset.yaml").read_text())
    return doc


def container_spec(daemonset: dict[str, Any], name: str) -> dict[str, Any]:
    found = [c for c in daemonset["spec"]["template"]["spec"]["containers"] if c["name"] == name]
    assert len(found) == 1, f"DaemonSet container {name}: found {len(found)}"
    spec: dict[str, Any] = found[0]
    return spec


def working(image: str) -> Iterator[Working]:
    buildah("inspect", "--type", "image", image)
    name = buildah("from", "--pull=never", "--quiet", image).strip()
    try:
        root = Path(buildah("mount", name).strip())
        yield Working(image=image, name=name, root=root)
    finally:
        # Unmounts too.
        buildah("rm", name)


@pytest.fixture(scope="module")
def daemon(daemonset: dict[str, Any]) -> Iterator[Working]:
    yield from working(container_spec(daemonset, DAEMON_CONTAINER)["image"])


@pytest.fixture(scope="module")
def frr(daemonset: dict[str, Any]) -> Iterator[Working]:
    yield from working(container_spec(daemonset, FRR_CONTAINER)["image"])


def test_images_carry_the_release_names(daemonset: dict[str, Any]) -> None:
    """kustomize sets the same names the DaemonSet names; both images exist under them."""
    kustomization = yaml.safe_load((RELEASE / "kustomization.yaml").read_text())
    released = {f"{i['newName']}:{i['newTag']}" for i in kustomization["images"]}
    named = {c["image"] for c in daemonset["spec"]["template"]["spec"]["containers"]}
    assert named == released
    for image in named:
        buildah("inspect", "--type", "image", image)


def test_daemonset_command_runs_in_the_daemon_image(
    daemon: Working, daemonset: dict[str, Any]
) -> None:
    spec = container_spec(daemonset, DAEMON_CONTAINER)
    command: list[str] = spec["command"]
    # The image's own default is the same command (`podman run IMAGE`).
    assert daemon.config()["Cmd"] == command
    out = daemon.ok(*command, *spec.get("args", []), "--help")
    assert f"usage: pyroute2-cni {command[-1]}" in out


def test_cli(daemon: Working) -> None:
    assert "usage: pyroute2-cni" in daemon.ok("pyroute2-cni", "--help")
    assert "usage: pyroute2-cni ipam check" in daemon.ok("pyroute2-cni", "ipam", "check", "--help")
    assert daemon.ok("pyroute2-cni", "version").strip() == f"pyroute2-cni {VERSION}"


def test_release_server_ini_is_valid_in_the_image(daemon: Working) -> None:
    configmap = yaml.safe_load((RELEASE / "configmap.yaml").read_text())
    (daemon.root / "tmp" / "server.ini").write_text(configmap["data"]["server.ini"])
    assert daemon.ok("pyroute2-cni", "config", "--check", "/tmp/server.ini").strip().endswith("ok")


def test_every_module_imports(daemon: Working) -> None:
    """All of pyroute2_cni (actors, supervisor, messages too) with the image's dependencies."""
    probe = (
        "import importlib, pkgutil, pyroute2_cni, pyroute2_cni.actors\n"
        "names = [m.name for m in pkgutil.walk_packages(pyroute2_cni.__path__, 'pyroute2_cni.')\n"
        "         if not m.name.endswith('__main__')]\n"
        "for name in names: importlib.import_module(name)\n"
        "print(len(names))\n"
    )
    assert int(daemon.ok("python3", "-c", probe)) > 30


def test_installed_package_is_this_tree(daemon: Working) -> None:
    """Every module and template in the image equals the repository's: no stale image."""
    (site,) = (daemon.root / "opt" / "pyroute2-cni" / "lib").glob("python3*/site-packages")
    installed = site / "pyroute2_cni"
    source = REPO / "pyroute2_cni"

    def files(top: Path) -> set[str]:
        # rglob does not enter the symlinked actors/, supervisor/, messages/: walk them.
        found: set[str] = set()
        for sub in [top, *(d for d in top.iterdir() if d.is_dir() and d.name != "__pycache__")]:
            for path in sub.rglob("*"):
                if path.suffix in {".py", ".j2"} and "__pycache__" not in path.parts:
                    found.add(str(path.relative_to(top)))
        return found

    stale = f"{daemon.image} was built from another tree: `make images` rebuilds it"
    expected = files(source)
    assert files(installed) == expected, stale
    for rel in sorted(expected):
        assert (installed / rel).read_bytes() == (source / rel).read_bytes(), f"{rel}: {stale}"


def test_shim_is_the_built_one(daemon: Working) -> None:
    shim = daemon.file(DaemonSection().shim_source)
    assert shim.read_bytes() == SHIM.read_bytes(), "not build/pyroute2-cni: run `make images`"
    assert shim.stat().st_mode & 0o777 == 0o755


def test_frr_tools_in_the_daemon_image(daemon: Working) -> None:
    frr = FrrSection()
    for tool in (frr.vtysh, frr.reload_command):
        daemon.ok("test", "-x", tool)
    assert f"(version {pinned_frr_version(REPO / 'Containerfile').split('-')[0]})" in daemon.ok(
        frr.vtysh, "-h"
    )
    # frr-reload.py's whole pipeline without daemons: --input stands for `show running`.
    golden = REPO / "tests" / "golden" / "frr"
    for name in ("l2vni-l3vni.conf", "mesh-3-nodes.conf"):
        (daemon.root / "tmp" / name).write_bytes((golden / name).read_bytes())
    # l2vni-l3vni.conf has vrf-200, mesh-3-nodes.conf does not.
    out = daemon.ok(
        frr.reload_command, "--test", "--input", "/tmp/l2vni-l3vni.conf", "/tmp/mesh-3-nodes.conf"
    )
    assert "Lines To Delete" in out and "no router bgp 65000 vrf vrf-200" in out
    out = daemon.ok(
        frr.reload_command, "--test", "--input", "/tmp/mesh-3-nodes.conf", "/tmp/l2vni-l3vni.conf"
    )
    assert "Lines To Add" in out and "\nrouter bgp 65000 vrf vrf-200\n" in out


def test_frr_version_is_pinned_in_both_images(daemon: Working, frr: Working) -> None:
    pinned = pinned_frr_version(REPO / "Containerfile")
    assert pinned_frr_version(REPO / "frr" / "Containerfile") == pinned
    for image in (daemon, frr):
        versions = image.ok("dpkg-query", "-W", "-f=${Version}\\n", "frr", "frr-pythontools")
        assert versions.split() == [pinned, pinned], image.image


def test_frr_image_runs_watchfrr_and_the_daemons(frr: Working, daemonset: dict[str, Any]) -> None:
    spec = container_spec(daemonset, FRR_CONTAINER)
    # No command in the DaemonSet: the image's entrypoint runs.
    assert "command" not in spec and "args" not in spec
    (entrypoint,) = frr.config()["Entrypoint"]
    assert frr.file(entrypoint).read_bytes() == (REPO / "frr" / "entrypoint.sh").read_bytes()
    frr.ok("test", "-x", entrypoint)
    frr.ok("bash", "-n", entrypoint)
    for name in ("daemons", "vtysh.conf", "frr.conf"):
        seeded = frr.file(f"/usr/share/pyroute2-cni/frr/{name}")
        assert seeded.read_bytes() == (REPO / "frr" / name).read_bytes()
    # What the entrypoint runs: watchfrr, frrcommon.sh, busybox syslogd, and every daemon
    # frr/daemons turns on.
    enabled = re.findall(r"^([a-z0-9]+)=yes$", (REPO / "frr" / "daemons").read_text(), re.MULTILINE)
    assert {"zebra", "bgpd"} <= set(enabled)
    for daemon_name in ("watchfrr", *enabled):
        frr.ok("test", "-x", f"/usr/lib/frr/{daemon_name}")
    frr.ok("test", "-r", "/usr/lib/frr/frrcommon.sh")
    frr.ok("busybox", "syslogd", "--help")
    upstream = pinned_frr_version(REPO / "frr" / "Containerfile").split("-")[0]
    assert f"zebra version {upstream}" in frr.ok("/usr/lib/frr/zebra", "--version")
    assert f"bgpd version {upstream}" in frr.ok("/usr/lib/frr/bgpd", "--version")


def netns_pids(netns: str) -> list[int]:
    out = subprocess.run(
        ["ip", "netns", "pids", netns], capture_output=True, text=True, timeout=30, check=True
    )
    return [int(pid) for pid in out.stdout.split()]


@pytest.fixture
def netns() -> Iterator[str]:
    """A private network namespace: FRR's zebra there cannot touch this host's routes."""
    name = f"p2c-images-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=30)
    try:
        yield name
    finally:
        # Everything in it is this test's: nothing may outlive it.
        for pid in netns_pids(name):
            os.kill(pid, signal.SIGKILL)
        subprocess.run(["ip", "netns", "del", name], check=False, timeout=30)


# The daemon's own FRR edge (FRRActor's), run in the daemon image.
APPLY_PROBE = """
import json, sys
from pathlib import Path
from pyroute2_cni.runtime.config import FrrSection
from pyroute2_cni.frr.control import FrrProcessControl
control = FrrProcessControl(FrrSection())
result = {"available": control.available(), "applied": []}
for name in sys.argv[1:]:
    applied = control.apply(Path(name).read_text(), "")
    result["applied"].append({"ok": applied.ok, "output": applied.output[-2000:]})
result["running"] = control.running_config()
result["answered"] = control.state().answered
control.close()
print(json.dumps(result))
"""


def test_daemon_image_drives_the_frr_image(
    daemon: Working, frr: Working, netns: str, tmp_path: Path
) -> None:
    """The pod's two containers together: the daemon applies configurations to FRR."""
    etc, run = tmp_path / "etc", tmp_path / "run"
    etc.mkdir()
    run.mkdir()
    # /var/run/frr in the DaemonSet; /var/run is a symlink to /run in both images.
    shared = ["-v", f"{etc}:/etc/frr", "-v", f"{run}:/run/frr"]
    (entrypoint,) = frr.config()["Entrypoint"]
    log_path = tmp_path / "frr.log"
    with log_path.open("w") as log:
        pod = subprocess.Popen(
            frr.argv(entrypoint, options=["--cap-add", FRR_CAPS, *shared], netns=netns),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(
            lambda: (
                pod.poll() is not None
                or all((run / f"{d}.vty").is_socket() for d in ("zebra", "bgpd", "staticd"))
            ),
            timeout=60,
            what="the vty sockets of zebra, bgpd and staticd",
        )
        assert pod.poll() is None, log_path.read_text()

        golden = REPO / "tests" / "golden" / "frr"
        for name in ("mesh-3-nodes.conf", "l2vni-l3vni.conf"):
            (daemon.root / "tmp" / name).write_bytes((golden / name).read_bytes())
        out = daemon.ok(
            "python3",
            "-c",
            APPLY_PROBE,
            "/tmp/mesh-3-nodes.conf",
            "/tmp/l2vni-l3vni.conf",
            options=shared,
            netns=netns,
        )
        result = json.loads(out)
        assert result["available"] is None
        assert [a["ok"] for a in result["applied"]] == [True, True], result["applied"]
        assert "router bgp 65000 vrf vrf-200" in result["running"]
        assert result["answered"]
        assert (etc / "frr.conf").read_bytes() == (golden / "l2vni-l3vni.conf").read_bytes()

        # The kubelet's stop: SIGTERM to the entrypoint, which stops FRR and exits 0.
        (entrypoint_pid,) = [
            pid
            for pid in netns_pids(netns)
            if Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:2]
            == [b"/bin/bash", entrypoint.encode()]
        ]
        os.kill(entrypoint_pid, signal.SIGTERM)
        assert pod.wait(timeout=60) == 0, log_path.read_text()
        assert "pyroute2-frr: stopped" in log_path.read_text()
    finally:
        if pod.poll() is None:
            pod.kill()
            pod.wait(timeout=30)


def test_daemon_image_size(daemon: Working) -> None:
    """The layer tars add up to the goal (uncompressed, what `buildah images` shows)."""
    out = buildah("inspect", "--type=image", "--format={{.Manifest}}", daemon.image)
    manifest = json.loads(out)
    size = sum(layer["size"] for layer in manifest["layers"])
    assert size <= DAEMON_IMAGE_MAX_BYTES, f"{daemon.image}: {size / 1e6:.1f} MB"
