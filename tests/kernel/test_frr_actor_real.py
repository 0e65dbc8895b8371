"""FRRActor against a real FRR: a broken rendering never replaces the running config.

One FRR instance (pathspace) in its own namespace; the actor drives it with the
real frr-reload.py.  A test control corrupts the rendered text on demand, so
the real parser rejects it.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pykka
import pytest

from pyroute2_cni.actors.base import ActorHooks
from pyroute2_cni.actors.frr_actor import FRRActor
from pyroute2_cni.config import DaemonSection, FrrSection, Settings
from pyroute2_cni.frr_control import (
    CommandResult,
    FrrProcessControl,
    FrrState,
    parse_bgp_sessions,
    parse_bgp_uptimes,
    parse_l2vnis,
    parse_vrf_vnis,
)
from pyroute2_cni.messages.crd import (
    Attachment,
    AttachmentType,
    ChangeKind,
    ClusterObjectChanged,
    ClusterSnapshot,
    NodeInfo,
    VrfDomainSpec,
)
from pyroute2_cni.metrics import Metrics
from tests.harness.lab import VTYSH, FrrInstance, frr_in_new_netns
from tests.harness.waiting import wait_for

pytestmark = pytest.mark.kernel

DOMAIN = VrfDomainSpec(
    name="vrf-42",
    vrf=42,
    table=42,
    prefix="10.244.0.0",
    prefixlen=16,
    ipblocklen=26,
    attachments=(Attachment(type=AttachmentType.L3VNI, vni=42),),
)
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

    def _run(self, argv: list[str], timeout: float) -> CommandResult:
        self.calls += 1
        return super()._run(argv, timeout)


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
    assert state == FrrState(
        sessions=parse_bgp_sessions(summary),
        uptimes=parse_bgp_uptimes(summary),
        l3vnis=parse_vrf_vnis(vrf_vnis),
        l2vnis=parse_l2vnis(evpn_vnis),
    )


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
