"""Where the lab keeps uml-run's work dir: never below a tmpfs the guest mounts."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness.lab import _uml_workdir

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
