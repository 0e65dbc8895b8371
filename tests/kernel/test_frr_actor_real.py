"""FRRActor against a real FRR: a broken rendering never replaces the running config.

One FRR instance (pathspace) in its own namespace, under watchfrr as in the FRR
container; the actor drives it with the real frr-reload.py.  A test control
corrupts the rendered text on demand, so the real parser rejects it, or so that
it passes the parser and fails only while FRR applies it.  Daemons are killed
with SIGKILL and the configuration is changed by hand to show that FRR comes
back to what the actor applied.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pykka
import pytest

from pyroute2_cni.actors.base import ActorHooks
from pyroute2_cni.actors.frr_actor import FRRActor
from pyroute2_cni.frr.control import (
    CommandResult,
    FrrProcessControl,
    FrrState,
    parse_bgp_sessions,
    parse_bgp_uptimes,
    parse_l2vnis,
    parse_vrf_vnis,
    reload_differences,
)
from pyroute2_cni.messages.crd import (
    Attachment,
    AttachmentType,
    ChangeKind,
    ClusterObjectChanged,
    ClusterSnapshot,
    NodeInfo,
)
from pyroute2_cni.runtime.config import DaemonSection, FrrSection, Settings
from pyroute2_cni.runtime.metrics import Metrics
from tests.harness.domains import SYSTEM_DOMAIN
from tests.harness.frr_instance import VTYSH, FrrInstance, frr_in_new_netns
from tests.harness.waiting import wait_for

pytestmark = pytest.mark.kernel

DOMAIN = SYSTEM_DOMAIN
SECOND = replace(
    DOMAIN,
    name="vrf-43",
    vrf=43,
    table=43,
    prefix="10.43.0.0",
    attachments=(Attachment(type=AttachmentType.L3VNI, vni=4343),),
)


class CorruptingControl:
    """The real control; with `corrupt` set the rendered text gets a line FRR rejects."""

    def __init__(self, inner: FrrProcessControl) -> None:
        self.inner = inner
        self.corrupt = False

    def _text(self, text: str) -> str:
        return text.replace("end\n", "router bgp notanumber\nend\n") if self.corrupt else text

    def available(self) -> str | None:
        return self.inner.available()

    def validate(self, text: str) -> CommandResult:
        return self.inner.validate(self._text(text))

    def apply(self, text: str, vrf_bindings: str) -> CommandResult:
        return self.inner.apply(self._text(text), vrf_bindings)

    def restore(self, text: str | None) -> CommandResult:
        return self.inner.restore(text)

    def running_config(self) -> str | None:
        return self.inner.running_config()

    def state(self) -> FrrState:
        return self.inner.state()

    def close(self) -> None:
        self.inner.close()


@pytest.fixture
def frr() -> Iterator[FrrInstance]:
    with frr_in_new_netns("p2cni-frractor") as instance:
        yield instance


def running_config(frr: FrrInstance) -> str:
    return subprocess.run(
        [VTYSH, "-N", frr.name, "-c", "show running-config"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout


class CountingControl(FrrProcessControl):
    def __init__(self, settings: FrrSection) -> None:
        super().__init__(settings)
        self.calls = 0

    def _run(self, argv: list[str], timeout: float, stdout_only: bool = False) -> CommandResult:
        self.calls += 1
        return super()._run(argv, timeout, stdout_only)


def assert_state_without_vtysh(settings: FrrSection, frr: FrrInstance) -> None:
    """State comes from the daemons' vty sockets (no process) and says what vtysh says."""
    control = CountingControl(settings)
    state = control.state()
    control.close()
    assert control.calls == 0
    assert state.answered
    summary, vrf_vnis, evpn_vnis = (
        frr.vtysh_json(c)
        for c in ("show bgp l2vpn evpn summary json", "show vrf vni json", "show evpn vni json")
    )
    assert summary is not None and vrf_vnis is not None
    zebra_pid = frr.daemon_pid("zebra")
    assert zebra_pid is not None and state.zebra_uptime is not None
    # zebra's age from its vty socket, against its process's own start time.
    assert abs(state.zebra_uptime - _process_age(zebra_pid)) < 5.0, state.zebra_uptime
    assert state == FrrState(
        sessions=parse_bgp_sessions(summary),
        uptimes=parse_bgp_uptimes(summary),
        l3vnis=parse_vrf_vnis(vrf_vnis),
        l2vnis=parse_l2vnis(evpn_vnis),
        zebra_uptime=state.zebra_uptime,
    )


def _process_age(pid: int) -> float:
    """Seconds since ``pid`` started (/proc/PID/stat field 22, in clock ticks)."""
    started = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return uptime - started / os.sysconf("SC_CLK_TCK")


def test_invalid_rendering_keeps_the_running_config_and_recovers(frr: FrrInstance) -> None:
    settings = Settings(
        daemon=DaemonSection(node_name="n1"),
        frr=FrrSection(
            config_file=str(Path(frr.conf_dir) / "frr.conf"),
            pathspace=frr.name,
            debounce=0.1,
            poll_interval=1.0,
        ),
    )
    control = CorruptingControl(FrrProcessControl(settings.frr))
    metrics = Metrics()

    def reloads(result: str) -> float:
        value = metrics.registry.get_sample_value(
            "pyroute2_cni_frr_reloads_total", {"result": result}
        )
        return value or 0.0

    actor: pykka.ActorRef[Any] = FRRActor.start(
        ActorHooks(name="frr", generation=1, on_crash=lambda *a: None),
        settings=settings,
        control_factory=lambda: control,
        netlink=None,
        watcher=None,
        metrics=metrics,
    )
    try:
        nodes = (NodeInfo(name="n1", internal_ip="192.0.2.1"),)
        actor.tell(
            ClusterSnapshot(
                domains=(DOMAIN,), bindings=(), node_configs=(), nodes=nodes, namespaces=()
            )
        )
        wait_for(lambda: reloads("ok") == 1, 120, "first reload")
        first = running_config(frr)
        assert "vrf vrf-42" in first and "vni 42" in first
        assert_state_without_vtysh(settings.frr, frr)

        control.corrupt = True
        actor.tell(ClusterObjectChanged(kind=ChangeKind.ADDED, obj=SECOND))
        wait_for(lambda: reloads("invalid") >= 1, 120, "the real parser rejects it")
        during = running_config(frr)
        assert "vrf vrf-43" not in during and "notanumber" not in during
        assert "vni 42" in during

        control.corrupt = False  # the input is fixed; the backoff retry applies it
        wait_for(lambda: reloads("ok") == 2, 120, "recovered")
        after = running_config(frr)
        assert "vrf vrf-43" in after and "vni 4343" in after
    finally:
        actor.stop()


class ApplyTimeFailure(CorruptingControl):
    """With `corrupt` set, a second VRF claims an L3VNI the new domain already has:
    FRR's parser takes it (frr-reload.py --test passes), zebra refuses it while the
    reload applies it, after the reload has applied the rest of the change."""

    def _text(self, text: str) -> str:
        if not self.corrupt:
            return text
        return text.replace(
            "router bgp 65000\n", "vrf vrf-dup\n vni 4343\nexit-vrf\n!\nrouter bgp 65000\n", 1
        )


def _settings(frr: FrrInstance) -> Settings:
    return Settings(
        daemon=DaemonSection(node_name="n1"),
        frr=FrrSection(
            config_file=str(frr.config_file),
            pathspace=frr.name,
            debounce=0.1,
            poll_interval=1.0,
        ),
    )


def _counter(metrics: Metrics, name: str, labels: dict[str, str] | None = None) -> float:
    return metrics.registry.get_sample_value(name, labels or {}) or 0.0


def _start(settings: Settings, control: Any, metrics: Metrics) -> pykka.ActorRef[Any]:
    actor: pykka.ActorRef[Any] = FRRActor.start(
        ActorHooks(name="frr", generation=1, on_crash=lambda *a: None),
        settings=settings,
        control_factory=lambda: control,
        netlink=None,
        watcher=None,
        metrics=metrics,
    )
    nodes = (NodeInfo(name="n1", internal_ip="192.0.2.1"),)
    actor.tell(
        ClusterSnapshot(domains=(DOMAIN,), bindings=(), node_configs=(), nodes=nodes, namespaces=())
    )
    return actor


def test_reload_failing_midway_leaves_exactly_the_last_good_config(frr: FrrInstance) -> None:
    settings = _settings(frr)
    control = ApplyTimeFailure(FrrProcessControl(settings.frr))
    metrics = Metrics()
    reloads = "pyroute2_cni_frr_reloads_total"
    actor = _start(settings, control, metrics)
    try:
        wait_for(lambda: _counter(metrics, reloads, {"result": "ok"}) == 1, 120, "first reload")
        good_running = running_config(frr)
        good_file = frr.config_file.read_text()

        control.corrupt = True
        actor.tell(ClusterObjectChanged(kind=ChangeKind.ADDED, obj=SECOND))
        wait_for(lambda: _counter(metrics, reloads, {"result": "failed"}) >= 1, 120, "failed")
        # The restore runs in the next handler: wait for FRR to run the last good config.
        last = ""

        def back() -> bool:
            nonlocal last
            last = running_config(frr)
            return last == good_running

        try:
            wait_for(back, 60, "FRR running the last good configuration again", 0.5)
        except AssertionError:
            raise AssertionError(f"FRR runs a mix after the failed reload:\n{last}") from None
        restores = "pyroute2_cni_frr_restores_total"
        verified = {"result": "verified"}
        wait_for(lambda: _counter(metrics, restores, verified) >= 1, 60, "the restore checked")
        check = frr.reload("--test", frr.config_file)
        assert check.returncode == 0 and reload_differences(check.stdout) == [], check.stdout
        assert frr.config_file.read_text() == good_file, "frr.conf is the last good one"

        control.corrupt = False  # the input is fixed; the backoff retry applies it
        wait_for(lambda: _counter(metrics, reloads, {"result": "ok"}) == 2, 120, "recovered")
        after = running_config(frr)
        assert "vrf vrf-43" in after and "vni 4343" in after and "vrf-dup" not in after
    finally:
        actor.stop()


# Bound for FRR to run the applied configuration again: watchfrr notices a dead
# daemon within its 5 s poll and restarts it; the actor's drift check needs two
# 1 s polls, then one reload (seconds under User-Mode Linux).
RECOVERY_TIMEOUT = 60.0


def _restarted(
    frr: FrrInstance, daemon: str, old: int, complete: Callable[[], bool]
) -> Callable[[], bool]:
    return lambda: frr.daemon_pid(daemon) not in (None, old) and complete()


def test_changed_by_hand_or_killed_frr_comes_back_to_the_applied_config(
    frr: FrrInstance,
) -> None:
    settings = _settings(frr)
    metrics = Metrics()
    ok = {"result": "ok"}
    actor = _start(settings, FrrProcessControl(settings.frr), metrics)
    times: dict[str, float] = {}
    try:
        wait_for(
            lambda: _counter(metrics, "pyroute2_cni_frr_reloads_total", ok) == 1, 120, "reload"
        )
        wanted = ("router bgp 65000\n", "router bgp 65000 vrf vrf-42\n", "vrf vrf-42\n vni 42\n")

        def complete() -> bool:
            text = running_config(frr)
            return all(line in text for line in wanted)

        assert complete()
        began = time.monotonic()
        frr.vtysh("configure", "no router bgp 65000 vrf vrf-42")
        assert "router bgp 65000 vrf vrf-42" not in running_config(frr)
        wait_for(
            complete, RECOVERY_TIMEOUT, "the VRF's BGP instance back after a change by hand", 0.5
        )
        times["by hand"] = time.monotonic() - began
        assert _counter(metrics, "pyroute2_cni_frr_drift_total") == 1

        reader = FrrProcessControl(settings.frr)
        for daemon in ("bgpd", "zebra"):
            began = time.monotonic()
            zebra_age = reader.state().zebra_uptime
            assert zebra_age is not None and zebra_age > 0, "zebra's age from its vty socket"
            old = frr.kill(daemon)
            wait_for(
                _restarted(frr, daemon, old, complete),
                RECOVERY_TIMEOUT,
                f"{daemon} restarted with its configuration after kill -9",
                0.5,
            )
            times[daemon] = time.monotonic() - began
            zebra_now = reader.state().zebra_uptime
            assert zebra_now is not None
            if daemon == "zebra":  # what peers read to hold this node's routes meanwhile
                assert 0 < zebra_now <= time.monotonic() - began + 1, (zebra_age, zebra_now)
            else:
                assert zebra_now > zebra_age, "zebra ran on while bgpd restarted"
        reader.close()
        print(f"configuration back after: {times}")
    finally:
        actor.stop()
