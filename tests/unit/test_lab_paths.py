"""Where the lab keeps uml-run's work dir: never below a tmpfs the guest mounts."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness.lab_cli import _uml_workdir

pytestmark = pytest.mark.unit


def test_a_checkout_outside_the_guest_tmpfs_keeps_it_in_the_state_dir() -> None:
    state = Path("/work/main/lab-state")
    assert _uml_workdir(state) == state / "uml"


def test_a_clone_in_tmp_gets_one_in_the_cache_per_state_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    first = _uml_workdir(Path("/tmp/clone-a/lab-state"))
    second = _uml_workdir(Path("/tmp/clone-b/lab-state"))
    assert first.parent == tmp_path / "pyroute2-cni" / "uml"
    assert first != second
    assert first == _uml_workdir(Path("/tmp/clone-a/lab-state")), "stable: lab down finds it"


def test_the_lab_knows_the_same_guest_tmpfs_mounts_as_uml_run() -> None:
    # scripts/uml-run is a script, not a module: read its tuple as Python source.
    import ast

    from tests.harness.lab import REPO
    from tests.harness.lab_cli import GUEST_TMPFS

    tree = ast.parse((REPO / "scripts" / "uml-run").read_text())
    values = [
        node.value
        for node in tree.body
        if isinstance(node, ast.AnnAssign)
        and isinstance(node.target, ast.Name)
        and node.target.id == "GUEST_TMPFS"
    ]
    assert len(values) == 1 and values[0] is not None, "GUEST_TMPFS: ... = (...) in uml-run"
    assert ast.literal_eval(values[0]) == GUEST_TMPFS
