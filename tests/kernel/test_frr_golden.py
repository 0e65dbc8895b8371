"""Every golden frr.conf must pass the real FRR parser (frr-reload.py --test).

One FRR instance (zebra, bgpd, staticd; the lab's FrrInstance) runs in a fresh
network namespace with its own pathspace (-N): config in /etc/frr/<name>,
sockets and pid files in /run/frr/<name>.  No VRF devices are needed: FRR parses and holds VRF
configuration for VRFs the kernel does not have yet.

Inside User-Mode Linux each frr-reload.py call costs about 2 s, so this module
starts FRR once and runs one call per golden file, one for the broken file and
three for the reload round trip.
"""

from __future__ import annotations

import os
import pwd
import re
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from pyroute2_cni.frr.model import render, render_vrf_bindings
from tests.harness.frr_instance import FRR_BIN, FRR_DAEMONS, VTYSH, FrrInstance, frr_in_new_netns
from tests.harness.procs import IP
from tests.unit.test_frr_render import SCENARIOS

pytestmark = pytest.mark.kernel

REPO = Path(__file__).resolve().parents[2]
GOLDEN_DIR = REPO / "tests" / "golden" / "frr"
GOLDEN_FILES = sorted(GOLDEN_DIR.glob("*.conf"))
CALL_TIMEOUT = 120.0  # one vtysh call (UML is slow)


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    tools = (*(FRR_BIN / d for d in FRR_DAEMONS), FRR_BIN / "frr-reload.py", Path(VTYSH), Path(IP))
    for path in tools:
        if not path.exists():
            return f"{path} not installed (frr, frr-pythontools)"
    try:
        pwd.getpwnam("frr")
    except KeyError:
        return "no user frr"
    return None


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=CALL_TIMEOUT, check=True)


@pytest.fixture(scope="module")
def frr() -> Iterator[FrrInstance]:
    reason = _missing()
    if reason:
        pytest.fail(reason)
    with frr_in_new_netns(f"p2cni-golden-{os.getpid()}") as instance:
        yield instance


def _differences(output: str, *, keep_hostname: bool = False) -> list[str]:
    """The lines frr-reload.py --test would change, minus the host's hostname.

    FRR always shows `hostname <uname>`; golden files have no hostname line
    (they do not depend on the host), so `no hostname ...` is expected there.
    """
    lines = []
    section = False
    for line in output.splitlines():
        if line in ("Lines To Delete", "Lines To Add"):
            section = True
            continue
        if not section or not line.strip() or set(line) == {"="}:
            continue
        if line.startswith(("no hostname ", "hostname ")) and not keep_hostname:
            continue
        lines.append(line)
    return lines


def test_golden_files_exist() -> None:
    assert len(GOLDEN_FILES) >= 6, f"golden files missing in {GOLDEN_DIR}"


@pytest.mark.parametrize("golden", GOLDEN_FILES, ids=[p.stem for p in GOLDEN_FILES])
def test_golden_file_parses(frr: FrrInstance, golden: Path) -> None:
    result = frr.reload("--test", golden)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "vtysh failed" not in result.stderr
    assert "router bgp 65000" in result.stdout  # the diff against the base config


def test_broken_config_fails(frr: FrrInstance, tmp_path: Path) -> None:
    text = (GOLDEN_DIR / "l2vni-l3vni.conf").read_text()
    broken = tmp_path / "broken.conf"
    broken.write_text(text.replace("router bgp 65000\n", "router bgp notanumber\n", 1))
    result = frr.reload("--test", broken)
    assert result.returncode != 0
    assert "Unknown command: router bgp notanumber" in result.stderr


def test_reload_adds_a_domain_and_peers_then_nothing_left_to_change(
    frr: FrrInstance, tmp_path: Path
) -> None:
    """single-node-vrf42 -> l2vni-l3vni: new peers and a new VRF in one reload.

    The VRF bindings go in first (vtysh -f), as frr.model's docstring tells the
    FRRActor: without them frr-reload.py 8.4 parses the new `vrf vrf-200` block
    inside `router bgp`.  Afterwards FRR runs exactly the rendered file.
    """
    first = frr.reload("--reload", GOLDEN_DIR / "single-node-vrf42.conf")
    assert first.returncode == 0, first.stdout + first.stderr
    _reload_to_golden(frr, tmp_path, "l2vni-l3vni")


def _reload_to_golden(frr: FrrInstance, tmp_path: Path, name: str) -> None:
    """Bindings first (vtysh -f), then one reload to the golden file; afterwards
    frr-reload.py --test finds nothing left to change."""
    golden = GOLDEN_DIR / f"{name}.conf"
    bindings = tmp_path / f"{name}-bindings.conf"
    bindings.write_text(
        "".join(re.findall(r"^vrf \S+\n vni \d+\nexit-vrf\n", golden.read_text(), re.M))
    )
    _run(VTYSH, "-N", frr.name, "-f", str(bindings))
    applied = frr.reload("--reload", golden)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "Configuration failed" not in applied.stdout + applied.stderr
    again = frr.reload("--test", golden)
    assert again.returncode == 0, again.stdout + again.stderr
    assert _differences(again.stdout) == [], name


def test_rendered_with_the_host_name_nothing_is_left_to_change(
    frr: FrrInstance, tmp_path: Path
) -> None:
    """The daemon renders `hostname <uname>` (FRR shows it whatever the file says):
    after one reload, frr-reload.py finds no difference at all, so later reloads
    spend no vtysh call on the host name."""
    model = replace(SCENARIOS["l2vni-l3vni"].build(), hostname=os.uname().nodename)
    rendered = tmp_path / "frr.conf"
    rendered.write_text(render(model))
    bindings = tmp_path / "bindings.conf"
    bindings.write_text(render_vrf_bindings(model))
    _run(VTYSH, "-N", frr.name, "-f", str(bindings))
    applied = frr.reload("--reload", rendered)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    again = frr.reload("--test", rendered)
    assert again.returncode == 0, again.stdout + again.stderr
    assert _differences(again.stdout, keep_hostname=True) == []


@pytest.mark.parametrize("name", ["route-targets", "import-filter", "l2vni-route-targets"])
def test_routing_policy_round_trip(frr: FrrInstance, tmp_path: Path, name: str) -> None:
    """A domain gains its routing policy (route targets, import filter, an l2vni's route
    targets) and loses it
    again: each step is one reload after which frr-reload.py finds nothing left to
    change, so FRR runs exactly the rendered lines (a route target or prefix-list
    entry FRR hid or dropped would show up here as a difference)."""
    for step in ("l2vni-l3vni", name, "l2vni-l3vni"):
        _reload_to_golden(frr, tmp_path, step)
