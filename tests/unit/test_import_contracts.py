"""The import contracts in .importlinter still catch the imports they exist to forbid.

`make lint` proves the tree keeps the contracts; this proves the contracts can fail: each case
copies the package (symlinked actors/, messages/, supervisor/ included) to a temporary
directory, adds one wrong import, and runs lint-imports with the repository's .importlinter
on the copy.  A contract deleted, misspelt or loosened so that the wrong import passes fails
here.  The unchanged copy must pass, so a failure below is the injected import, not a
configuration that cannot run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")

# (file in the copy, line appended to it, contract expected to break, line of the report).
CASES = {
    "kubernetes in a netlink module": (
        "netlink/backend.py",
        "import kubernetes",
        "Only the Kubernetes modules import kubernetes",
        "pyroute2_cni.netlink.backend -> kubernetes",
    ),
    "pyroute2 outside the netlink modules": (
        "ipam/blocks.py",
        "import pyroute2",
        "Only the netlink modules import pyroute2",
        "pyroute2_cni.ipam.blocks -> pyroute2",
    ),
    "pyroute2 in a pure netlink module": (
        "netlink/plan.py",
        "import pyroute2",
        "Only the netlink modules import pyroute2",
        "pyroute2_cni.netlink.plan -> pyroute2",
    ),
    "kubernetes in the watch pump": (
        "kube/pump.py",
        "import kubernetes",
        "Only the Kubernetes modules import kubernetes",
        "pyroute2_cni.kube.pump -> kubernetes",
    ),
    "zmq outside the CNI server": (
        "runtime/config.py",
        "def _late() -> None:\n    import zmq",
        "Only the CNI server (the shim's peer) imports zmq",
        "pyroute2_cni.runtime.config -> zmq",
    ),
    "the library imports an actor": (
        "frr/model.py",
        "import pyroute2_cni.actors.frr_actor",
        "Layers:",
        "pyroute2_cni.frr.model -> pyroute2_cni.actors.frr_actor",
    ),
    "the library imports the supervisor": (
        "runtime/health.py",
        "from pyroute2_cni.supervisor import Supervisor",
        "Layers:",
        "pyroute2_cni.runtime is not allowed to import pyroute2_cni.supervisor",
    ),
    "a message imports library logic": (
        "messages/frr.py",
        "from pyroute2_cni.runtime import config",
        "Layers:",
        "pyroute2_cni.messages.frr -> pyroute2_cni.runtime.config",
    ),
    "a domain imports an independent sibling": (
        "netlink/desired.py",
        "from pyroute2_cni.cni import spec",
        "Layers:",
        "pyroute2_cni.netlink.desired -> pyroute2_cni.cni.spec",
    ),
    "the runtime imports a domain": (
        "runtime/metrics.py",
        "from pyroute2_cni.kube import client",
        "Layers:",
        "pyroute2_cni.runtime.metrics -> pyroute2_cni.kube.client",
    ),
    "IPAM planning reaches the API": (
        "ipam/planner.py",
        "from pyroute2_cni.ipam import store",
        "IPAM's block arithmetic, planner and reclaimer election do no I/O",
        "pyroute2_cni.ipam.planner -> pyroute2_cni.ipam.store",
    ),
    "a module placed in no layer": (
        "newmod.py",
        "VALUE = 1",
        "Layers:",
        "pyroute2_cni.newmod",
    ),
    "actors imported by its top-level name": (
        "netlink/evpn_kernel.py",
        "import actors.route_keeper_actor",
        "actors, messages and supervisor are imported as pyroute2_cni.<name> only",
        "pyroute2_cni.netlink.evpn_kernel -> actors",
    ),
}


def copy_tree(dest: Path) -> Path:
    """The package as lint-imports would see it installed; the symlinked folders become copies."""
    shutil.copytree(
        REPO / "pyroute2_cni",
        dest / "pyroute2_cni",
        ignore=shutil.ignore_patterns("__pycache__", "templates"),
    )
    shutil.copy(REPO / ".importlinter", dest / ".importlinter")
    return dest


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    # The copy first on sys.path, ahead of the editable install of the repository; wide
    # enough that no report line is wrapped.
    env = dict(os.environ, PYTHONPATH=str(root), COLUMNS="400")
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo", ".importlinter"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_unchanged_copy_keeps_every_contract(tmp_path: Path) -> None:
    result = lint_imports(copy_tree(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken." in result.stdout, result.stdout


@pytest.mark.parametrize("case", sorted(CASES))
def test_wrong_import_breaks_its_contract(tmp_path: Path, case: str) -> None:
    path, line, contract, report = CASES[case]
    root = copy_tree(tmp_path)
    target = root / "pyroute2_cni" / path
    text = target.read_text() if target.exists() else ""
    target.write_text(f"{text}\n{line}\n")

    result = lint_imports(root)

    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "1 broken." in output, output
    broken = [row for row in output.splitlines() if row.endswith(" BROKEN")]
    assert len(broken) == 1 and broken[0].startswith(contract), output
    assert report in output, output
