"""The wheel and the editable install map actors/, supervisor/, messages/ under pyroute2_cni."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]

PROBE = """
import importlib.util, json, sys
import pyroute2_cni.actors.base, pyroute2_cni.supervisor, pyroute2_cni.messages.crd
print(json.dumps({
    "pkg": pyroute2_cni.actors.base.__file__,
    "top_supervisor": importlib.util.find_spec("supervisor") is not None,
    "top_messages": importlib.util.find_spec("messages") is not None,
    "top_actors": importlib.util.find_spec("actors") is not None,
}))
"""


def probe(cwd: Path, pythonpath: str | None) -> dict[str, object]:
    import json
    import os

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    out = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    result: dict[str, object] = json.loads(out.stdout)
    return result


def test_wheel_installs_subpackages_only(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(REPO),
        ],
        check=True,
        timeout=180,
        capture_output=True,
    )
    (wheel,) = (tmp_path / "dist").glob("pyroute2_cni-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"pyroute2_cni", "pyroute2_cni-0.1.0.dist-info"}
    for module in ("actors/base.py", "supervisor/supervisor.py", "messages/crd.py", "py.typed"):
        assert f"pyroute2_cni/{module}" in names
    target = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(target)
    result = probe(tmp_path, str(target))
    assert str(result["pkg"]).startswith(str(target))
    assert result == {**result, "top_supervisor": False, "top_messages": False, "top_actors": False}


def test_editable_install_maps_the_top_level_folders(tmp_path: Path) -> None:
    # `make venv` installs the project editable; run from elsewhere so the
    # repository root is not on sys.path.
    result = probe(tmp_path, None)
    assert Path(str(result["pkg"])).resolve() == (REPO / "actors" / "base.py").resolve()
    assert result == {**result, "top_supervisor": False, "top_messages": False, "top_actors": False}
