"""On SIGTERM the daemon waits (bounded) for zebra to exit before its actors stop."""

from __future__ import annotations

import socket
import tempfile
import threading
from collections.abc import Iterator

import pytest

from pyroute2_cni.daemon.run import run_daemon
from pyroute2_cni.daemon.wiring import shutdown_linger
from pyroute2_cni.frr.control import wait_zebra_gone, zebra_socket
from pyroute2_cni.runtime.config import DaemonSection, FrrSection, Settings
from pyroute2_cni.runtime.metrics import Metrics
from pyroute2_cni.supervisor import ActorSpec
from tests.harness.recording import FakeClock
from tests.harness.toy_actors import Journal, toy_spec
from tests.harness.waiting import free_tcp_port, wait_for

pytestmark = pytest.mark.unit


@pytest.fixture
def frr() -> Iterator[FrrSection]:
    # Short: a unix socket's path must fit in 108 bytes, and pytest's tmp_path may not.
    with tempfile.TemporaryDirectory(dir="/tmp") as vty_dir:
        yield FrrSection(vty_dir=vty_dir, pathspace="node")


@pytest.fixture
def zebra(frr: FrrSection) -> Iterator[socket.socket]:
    """A listening zebra.vty, as a running zebra has."""
    path = zebra_socket(frr)
    path.parent.mkdir(parents=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    # Room for every probe of a wait (50 at most) without accepting any.
    listener.listen(128)
    yield listener
    listener.close()


def test_no_zebra_socket_is_zebra_gone(frr: FrrSection) -> None:
    clock = FakeClock()
    began = clock.now
    assert wait_zebra_gone(frr, 5.0, clock=clock, sleep=clock.advance) is True
    assert clock.now == began


def test_a_zebra_that_stays_is_waited_for_no_longer_than_the_bound(
    frr: FrrSection, zebra: socket.socket
) -> None:
    clock = FakeClock()
    began = clock.now
    assert wait_zebra_gone(frr, 5.0, clock=clock, sleep=clock.advance) is False
    assert 5.0 <= clock.now - began < 5.2


def test_zebra_exiting_ends_the_wait(frr: FrrSection, zebra: socket.socket) -> None:
    clock = FakeClock()
    began = clock.now

    def sleep(seconds: float) -> None:
        clock.advance(seconds)
        if clock.now - began >= 0.95:
            zebra.close()  # zebra exits; its socket file refuses from now on

    assert wait_zebra_gone(frr, 5.0, clock=clock, sleep=sleep) is True
    assert 0.95 <= clock.now - began < 1.2


def test_no_linger_without_frr_or_the_hold() -> None:
    assert shutdown_linger(Settings(frr=FrrSection(enabled=False))) is None
    assert shutdown_linger(Settings(frr=FrrSection(evpn_hold=0))) is None
    assert shutdown_linger(Settings()) is not None


def test_the_linger_runs_on_stop_while_the_actors_still_run() -> None:
    journal = Journal()
    spec = toy_spec("alpha", journal=journal)
    stop = threading.Event()
    during: list[bool] = []

    def build(settings: Settings, metrics: Metrics, readiness: object) -> list[ActorSpec]:
        return [spec]

    def linger() -> bool:
        during.append(
            journal.has("alpha", 1, "started") and not journal.has("alpha", 1, "released")
        )
        return True

    settings = Settings(
        daemon=DaemonSection(
            node_name="toy", metrics_address="127.0.0.1", metrics_port=free_tcp_port()
        )
    )
    result: list[int] = []
    daemon = threading.Thread(
        target=lambda: result.append(
            run_daemon(settings, build, stop=stop, install_signals=False, linger=linger)
        ),
        daemon=True,
    )
    daemon.start()
    wait_for(lambda: journal.has("alpha", 1, "started"), 10, "alpha started")
    stop.set()  # what SIGTERM does
    daemon.join(timeout=10)
    assert result == [0]
    assert during == [True], "the linger ran once, before alpha was released"
    assert journal.has("alpha", 1, "released")
