"""Timeouts that agree (issue #15 item 3): server.ini keys, their consistency check,
and the bounds the code keeps: one vty ask, one FRR apply, one daemon ADD."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pykka
import pytest

from pyroute2_cni import cli
from pyroute2_cni.actors.address import Address
from pyroute2_cni.actors.base import ActorHooks
from pyroute2_cni.actors.cni_server_actor import CNIServerActor
from pyroute2_cni.cni.log import RequestTrace
from pyroute2_cni.cni.spec import CniError, parse_request
from pyroute2_cni.frr.control import FrrProcessControl
from pyroute2_cni.frr.vty import VtyClient, VtyError
from pyroute2_cni.messages.base import Ok
from pyroute2_cni.messages.crd import AttachmentType
from pyroute2_cni.messages.ipam import AddressAllocated, AllocateAddress, ReleaseAddress
from pyroute2_cni.runtime.config import (
    HUNG_MARGIN,
    CniSection,
    ConfigError,
    DaemonSection,
    FrrSection,
    Settings,
    SupervisorSection,
    check_timeouts,
    frr_apply_bound,
    parse_settings,
)
from pyroute2_cni.runtime.keyed_executor import KeyedExecutor
from pyroute2_cni.runtime.metrics import Metrics
from tests.harness.domains import README_SERVER_INI, SYSTEM_DOMAIN
from tests.harness.waiting import wait_for

pytestmark = pytest.mark.unit


# ------------------------------------------------------------------ settings


def test_defaults_agree_and_are_the_derived_values() -> None:
    defaults = Settings()
    check_timeouts(defaults)
    parsed = parse_settings(README_SERVER_INI, env={"NODE_NAME": "n"})
    # 2 x 120 (frr-reload.py) + 20 (vtysh) + 8 x 5 (vty asks) = 300, + 60.
    assert frr_apply_bound(parsed.frr) == 300.0
    assert parsed.supervisor.heartbeat_timeout == 300.0 + HUNG_MARGIN
    assert SupervisorSection().heartbeat_timeout == parsed.supervisor.heartbeat_timeout
    assert parsed.cni == CniSection() == CniSection(shim_timeout=30, add_timeout=25, ask_timeout=20)


def test_dependent_timeouts_follow_unless_set() -> None:
    slow_frr = parse_settings("[frr]\nreload_timeout = 300\n", env={"NODE_NAME": "n"})
    assert slow_frr.supervisor.heartbeat_timeout == 2 * 300 + 20 + 8 * 5 + HUNG_MARGIN
    short_shim = parse_settings("[cni]\nshim_timeout = 12\n", env={"NODE_NAME": "n"})
    assert short_shim.cni.add_timeout == 10.0
    explicit = parse_settings(
        "[supervisor]\nheartbeat_timeout = 400\n[cni]\nadd_timeout = 20\n", env={"NODE_NAME": "n"}
    )
    assert (explicit.supervisor.heartbeat_timeout, explicit.cni.add_timeout) == (400, 20)


@pytest.mark.parametrize(
    ("ini", "names"),
    [
        # The old default (180) and the lab's (300): not more than one FRR poll (300 s).
        (
            "[supervisor]\nheartbeat_timeout = 180\n",
            ["[supervisor] heartbeat_timeout = 180", "reload_timeout 120", "above 300"],
        ),
        (
            "[supervisor]\nheartbeat_timeout = 300\n",
            ["heartbeat_timeout = 300", "vty_timeout 5", "= 300 s"],
        ),
        (
            "[ipam]\nrequest_read_timeout = 500\n[cni]\nask_timeout = 600\n"
            "[frr]\nenabled = false\n[supervisor]\nheartbeat_timeout = 300\n",
            ["heartbeat_timeout = 300", "request_read_timeout 500", "IPAM API request"],
        ),
        (
            "[cni]\nadd_timeout = 30\n",
            ["[cni] add_timeout = 30", "shim_timeout = 30", "lower add_timeout"],
        ),
        (
            "[cni]\nshim_timeout = 10\nadd_timeout = 12\n",
            ["add_timeout = 12", "shim_timeout = 10", "conflist"],
        ),
        (
            "[ipam]\nrequest_read_timeout = 30\n",
            ["[cni] ask_timeout = 20", "request_read_timeout 30", "= 35 s", "raise ask_timeout"],
        ),
    ],
)
def test_combinations_that_cannot_hold_are_rejected(ini: str, names: list[str]) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_settings(ini, env={"NODE_NAME": "n"})
    message = str(caught.value)
    for name in names:
        assert name in message, message


def test_hung_limit_needs_no_frr_headroom_when_frr_is_off() -> None:
    parsed = parse_settings(
        "[frr]\nenabled = false\n[supervisor]\nheartbeat_timeout = 180\n", env={"NODE_NAME": "n"}
    )
    assert parsed.supervisor.heartbeat_timeout == 180


def test_config_check_command_rejects(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "server.ini"
    bad.write_text(README_SERVER_INI + "[supervisor]\nheartbeat_timeout = 180\n")
    assert cli.main(["config", "--check", str(bad)]) == 2
    assert "heartbeat_timeout = 180: must exceed" in capsys.readouterr().err
    good = tmp_path / "good.ini"
    good.write_text(README_SERVER_INI)
    assert cli.main(["config", "--check", str(good)]) == 0


# --------------------------------------------------------------- FRR bounds


def test_one_vty_ask_is_bounded_as_a_whole(tmp_path: Path) -> None:
    """connect + "enable" + the command share one timeout (a daemon slow at each)."""
    path = tmp_path / "bgpd.vty"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)
    done = threading.Event()

    def daemon() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(64)  # "enable\0"
            done.wait(0.35)  # the stimulus: slow to enable
            conn.sendall(b"\0\0\0\0")
            conn.recv(64)  # the command: never answered
            done.wait(5)

    thread = threading.Thread(target=daemon, daemon=True)
    thread.start()
    client = VtyClient(path, timeout=0.5)
    start = time.monotonic()
    try:
        with pytest.raises(VtyError, match="no answer"):
            client.ask("show bgp summary json")
        elapsed = time.monotonic() - start
    finally:
        done.set()
        client.close()
        thread.join(timeout=5)
        listener.close()
    print(f"vty ask gave up after {elapsed:.3f} s (vty_timeout 0.5 s)")
    assert elapsed < 0.5 + 0.15


def _hanging_tool(path: Path) -> str:
    path.write_text("#!/bin/sh\nexec sleep 30\n")
    path.chmod(0o755)
    return str(path)


def test_frr_apply_keeps_to_its_keys(tmp_path: Path) -> None:
    """A hanging vtysh and frr-reload.py cost vtysh_timeout + reload_timeout, no more."""
    frr = FrrSection(
        config_file=str(tmp_path / "frr.conf"),
        vtysh=_hanging_tool(tmp_path / "vtysh"),
        reload_command=_hanging_tool(tmp_path / "frr-reload.py"),
        vty_dir=str(tmp_path),
        reload_timeout=1.0,
        vtysh_timeout=0.3,
        vty_timeout=0.2,
    )
    control = FrrProcessControl(frr)
    start = time.monotonic()
    result = control.apply("frr defaults datacenter\n", "vrf vrf-42\n vni 42\nexit-vrf\n")
    elapsed = time.monotonic() - start
    control.close()
    print(f"apply gave up after {elapsed:.3f} s (bound {frr_apply_bound(frr):g} s)")
    assert not result.ok
    assert "did not finish in 1 s" in result.output
    assert 1.3 <= elapsed < 1.3 + 0.5
    assert elapsed < frr_apply_bound(frr)


# ---------------------------------------------------------- the ADD budget

DOMAIN = SYSTEM_DOMAIN


class _Peer(pykka.ThreadingActor):
    """IPAM answers at once; netlink answers nothing for `stall` seconds."""

    def __init__(self, stall: float, gate: threading.Event, seen: list[Any]) -> None:
        super().__init__()
        self.stall, self.gate, self.seen = stall, gate, seen

    def on_receive(self, message: Any) -> Any:
        self.seen.append(message)
        if isinstance(message, AllocateAddress):
            return AddressAllocated(
                key=message.key,
                vrf=42,
                address="10.244.0.2",
                prefixlen=26,
                gateway="10.244.0.1",
                block="10.244.0.0/26",
                attachment=AttachmentType.L3VNI,
            )
        self.gate.wait(self.stall)
        return Ok()


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()
    pykka.ActorRegistry.stop_all()


def test_add_is_answered_within_add_timeout_and_rolled_back_after(
    gate: threading.Event,
) -> None:
    settings = Settings(
        daemon=DaemonSection(node_name="n"),
        cni=CniSection(shim_timeout=2.0, add_timeout=0.6, ask_timeout=1.5),
    )
    ipam_seen: list[Any] = []
    netlink_seen: list[Any] = []
    ipam, netlink = Address("ipam"), Address("netlink")
    ipam.bind(_Peer.start(0, gate, ipam_seen))
    netlink.bind(_Peer.start(1.0, gate, netlink_seen))
    actor = CNIServerActor(
        ActorHooks(name="cni", generation=1, on_crash=lambda *a: None),
        settings=settings,
        ipam=ipam,
        netlink=netlink,
        readiness=lambda: None,  # type: ignore[arg-type, return-value]
        metrics=Metrics(),
    )
    actor._view = type(actor._view)(domains={DOMAIN.name: DOMAIN}, bindings={}, synced=True)
    actor._executor = KeyedExecutor(2, "test-cni")
    env = {
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": "c1",
        "CNI_NETNS": "/proc/self/ns/net",
        "CNI_IFNAME": "eth0",
        "CNI_ARGS": "K8S_POD_NAMESPACE=default;K8S_POD_NAME=p;K8S_POD_UID=u",
    }
    request = parse_request(
        env, b'{"cniVersion": "1.0.0", "name": "pyroute2-cni", "type": "pyroute2-cni"}'
    )
    start = time.monotonic()
    with pytest.raises(CniError):
        actor._add(request, RequestTrace(verb="ADD"))
    elapsed = time.monotonic() - start
    print(f"ADD answered after {elapsed:.3f} s (add_timeout 0.6, shim_timeout 2)")
    assert elapsed < 0.6 + 0.2 < settings.cni.shim_timeout
    # The rollback goes on after the answer and releases the address.
    wait_for(lambda: any(isinstance(m, ReleaseAddress) for m in ipam_seen), 10, "rollback release")
    actor._executor.shutdown(wait=True)
