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


def test_the_cni_bench_reads_the_daemons_own_latency_per_phase() -> None:
    from prometheus_client import generate_latest

    from pyroute2_cni.runtime.metrics import Metrics
    from tests.harness.cni_bench import daemon_time

    metrics = Metrics()
    metrics.request_duration.labels("ADD").observe(0.030)
    metrics.request_duration.labels("DEL").observe(5.0)
    before = daemon_time(generate_latest(metrics.registry).decode(), "ADD")
    for seconds in (0.040, 0.060, 0.300):
        metrics.request_duration.labels("ADD").observe(seconds)
    phase = daemon_time(generate_latest(metrics.registry).decode(), "ADD") - before
    assert phase.count == 3
    assert phase.mean_ms == pytest.approx(400 / 3)
    assert phase.share_within(0.1) == pytest.approx(2 / 3)


def test_the_frr_apply_bench_reads_the_actor_s_reload_line_and_reports_ratios() -> None:
    import logging

    from tests.harness.frr_apply_bench import ReloadLog, report

    log = ReloadLog()
    line = (
        "FRR reloaded: 2 peers (mesh), 3 VRFs, 0 l2vnis (validated in 0.12 s, reloaded in 0.40 s)"
    )
    log.emit(logging.LogRecord("pyroute2_cni.actor.frr", logging.INFO, "", 0, line, (), None))
    log.emit(logging.LogRecord("x", logging.INFO, "", 0, "ready", (), None))
    assert log.splits == [(0.12, 0.40)]
    series = {"total": [1.5, 1.7], "validate": [0.1, 0.2], "reload": [0.4, 0.5]}
    lines: list[str] = []
    report(
        {
            "rounds": 2,
            "reference_test": [0.25, 0.25],
            "domain": series,
            "peer": series,
            "state_vty_sockets": [0.0002, 0.0004],
            "state_vtysh": [0.04, 0.05],
        },
        lines.append,
    )
    assert lines[-1] == (
        "state read (2 each): vty sockets p50 0.20 ms p99 0.40 ms; "
        "one vtysh with the same commands p50 40.00 ms p99 50.00 ms (200x)"
    )
    domain = next(x for x in lines if x.startswith("domain: change -> applied"))
    assert domain.split()[-3:] == ["1.50", "1.70", "6.0x"]


def test_the_cni_bench_reports_the_daemon_without_a_plugin_process() -> None:
    from dataclasses import replace

    from tests.harness.cni_bench import DIRECT, OURS, REFERENCE, DaemonTime, Phase, render

    def phase(plugin: str, verb: str, seconds: float) -> Phase:
        return Phase(plugin, verb, 8, latencies=[seconds] * 10, wall=seconds * 10 / 8)

    phases = [
        phase(plugin, verb, seconds)
        for plugin, seconds in ((OURS, 0.2), (REFERENCE, 0.8), (DIRECT, 0.05))
        for verb in ("ADD", "DEL")
    ]
    shim = {
        "binary_bytes": 58512,
        "n": 10,
        "shim": {"p50_ms": 1.5, "p99_ms": 2.0},
        "bin_true": {"p50_ms": 1.1},
        "overhead_p50_ms": 0.4,
    }
    one = DaemonTime(count=10, total=1.0, buckets=((0.1, 10.0),))
    phases[0].daemon = one
    phases[0].parts = {"ipam": replace(one, total=0.6), "netlink": replace(one, total=0.3)}
    text = render(phases, shim, 10, "Linux test")
    assert (
        "inside the daemon, ADD c=8 (through the shim): mean 100.0 ms "
        "(ipam 60.0 ms, netlink 30.0 ms), 100% within 100 ms"
    ) in text
    assert "ADD/s sustained at concurrency 8: pyroute2-cni 40.0, bridge+host-local 10.0" in text
    direct = [line for line in text.splitlines() if line.startswith("without a plugin process")]
    assert len(direct) == 2
    assert direct[0].endswith("ADD c=8: p50 50.0 ms, p99 50.0 ms, 160.0/s")


def test_the_dense_bench_reads_the_netlink_reconcile_line_and_judges_growth(
    tmp_path: Path,
) -> None:
    from tests.harness.cni_bench import OURS, Phase
    from tests.harness.dense_bench import Size, reconcile_times, render

    line = "2026-12-07 16:00:00,000 {} pyroute2_cni.actor.{}: reconcile: 0 repairs, in {} ms\n"
    before = line.format("DEBUG", "netlink", "9.0")
    after = line.format("INFO", "frr", "1.0") + line.format("DEBUG", "netlink", "12.5")
    log = tmp_path / "lab-n1-daemon.log"
    log.write_text(before + after)
    assert reconcile_times(log, len(before.encode())) == [12.5]

    def size(pods: int, rss: float, reconcile: float) -> Size:
        return Size(
            pods=pods,
            rss_mib=rss,
            reconcile_ms=(reconcile,),
            fill_seconds=1.0,
            add=Phase(OURS, "ADD", 1, latencies=[0.1] * 20),
            delete=Phase(OURS, "DEL", 1, latencies=[0.1] * 20),
            failures=0,
            probe_reconciles=0,
        )

    text = render([size(10, 100.0, 10.0), size(250, 124.0, 400.0)], "Linux test", 10)
    rows = {line.split("|")[0].strip(): line.split("|")[-1].strip() for line in text.splitlines()}
    assert rows["daemon RSS idle, MiB"] == "flat"
    assert rows["NetlinkActor reconcile pass, ms"] == "grows FASTER than linearly"
    assert rows["ADD p99, ms"] == "flat"
    assert "RSS per added pod: 102 KiB (100.0 MiB at 10 pods)" in text
