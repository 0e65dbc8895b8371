"""The convergence bench's FRR column reads the daemons' own timing lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness.lab_bench import frr_seconds

pytestmark = pytest.mark.unit

BEFORE = (
    "2026-11-27 03:12:07,476 INFO pyroute2_cni.actor.frr: FRR reloaded: 2 peers (mesh), "
    "1 VRFs, 0 l2vnis (validated in 8.4 s, reloaded in 22.7 s)\n"
)
ROUND = (
    "2026-11-27 03:12:25,559 INFO pyroute2_cni.actor.netlink: create vrf vrf-501\n"
    "2026-11-27 03:12:59,055 INFO pyroute2_cni.actor.frr: FRR reloaded: 2 peers (mesh), "
    "2 VRFs, 0 l2vnis (validated in 8.1 s, reloaded in 20.3 s)\n"
    "2026-11-27 03:13:20,000 INFO pyroute2_cni.actor.frr: FRR reloaded: 2 peers (mesh), "
    "2 VRFs, 0 l2vnis (validated in 1.0 s, reloaded in 2.0 s)\n"
)


def test_only_reloads_after_the_round_began_count(tmp_path: Path) -> None:
    log = tmp_path / "lab-n1-daemon.log"
    log.write_text(BEFORE + ROUND)
    assert frr_seconds(log, len(BEFORE.encode())) == pytest.approx(8.1 + 20.3 + 1.0 + 2.0)
    assert frr_seconds(log, log.stat().st_size) == 0.0
