"""Issue #15 item 1: one live instance per actor.

A replaced instance is fenced: it answers every further message with a
Failure and changes nothing; its successor starts only after it released
what it held, or the daemon exits when a hung instance could still act.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import pykka
import pytest

from pyroute2_cni.actors.address import Address
from pyroute2_cni.actors.base import ActorHooks
from pyroute2_cni.daemon.run import run_daemon
from pyroute2_cni.messages.base import ErrorKind, Failure, Ok
from pyroute2_cni.runtime.config import DaemonSection, Settings, SupervisorSection
from pyroute2_cni.runtime.metrics import Metrics
from pyroute2_cni.supervisor import ActorSpec, Supervisor
from tests.harness.toy_actors import Apply, Crash, Hang, Journal, WhoAreYou, toy_spec
from tests.harness.waiting import free_tcp_port, wait_for

pytestmark = pytest.mark.unit

FAST = SupervisorSection(
    heartbeat_interval=0.05,
    heartbeat_timeout=0.5,
    backoff_initial=0.05,
    backoff_max=0.2,
    stop_timeout=2.0,
)
QUEUED = 20


class Running:
    """A supervisor running its loop in a thread, stopped at teardown."""

    def __init__(self, specs: list[ActorSpec], settings: SupervisorSection) -> None:
        self.metrics = Metrics()
        self.supervisor = Supervisor(specs, settings, self.metrics)
        self.stop = threading.Event()
        self.rc: int | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.supervisor.start()
        self.thread.start()

    def _run(self) -> None:
        self.rc = self.supervisor.run(self.stop)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    """Holds a toy in Hang; always opened at teardown so no actor thread lingers."""
    event = threading.Event()
    yield event
    event.set()


def generation(address: Address) -> int:
    try:
        return int(address.ask(WhoAreYou(), timeout=0.2).generation)
    except Exception:
        return 0


def queue_changes(ref: pykka.ActorRef[Any]) -> list[pykka.Future[Any]]:
    """Queue QUEUED changes (every other one an ask); the futures of the asks."""
    futures: list[pykka.Future[Any]] = []
    for seq in range(QUEUED):
        if seq % 2:
            futures.append(ref.ask(Apply(seq=seq), block=False))
        else:
            ref.tell(Apply(seq=seq))
    return futures


def test_crash_in_ask_handler_fences_the_queued_messages(gate: threading.Event) -> None:
    journal = Journal()
    spec = toy_spec("alpha", journal=journal, exclusive=True)
    run = Running([spec], FAST)
    try:
        ref = spec.address.ref
        assert ref is not None
        ref.tell(Hang(release=gate))
        crash = ref.ask(Crash(), block=False)
        futures = queue_changes(ref)
        gate.set()
        with pytest.raises(RuntimeError, match="boom"):
            crash.get(timeout=5)
        wait_for(lambda: generation(spec.address) == 2, 5.0, "alpha generation 2")
        # Every queued ask got a typed answer: the fenced instance refused it.
        replies = [f.get(timeout=5) for f in futures]
        assert journal.applied_by("alpha", 1) == []
        assert all(isinstance(r, Failure) and r.kind is ErrorKind.TEMPORARY for r in replies), (
            replies
        )
        assert "generation 1 was replaced" in replies[0].reason
        assert journal.max_live("alpha") == 1
        # The successor does the work.
        assert spec.address.ask(Apply(seq=99), timeout=2) == Ok()
        assert journal.applied_by("alpha", 2) == [99]
    finally:
        run.close()


def test_successor_starts_only_after_the_old_instance_released() -> None:
    journal = Journal()
    # The old instance takes 0.3 s to release, six times the restart backoff.
    spec = toy_spec("alpha", journal=journal, release_hold=0.3, exclusive=True)
    run = Running([spec], FAST)
    try:
        with pytest.raises(Exception, match="boom"):
            spec.address.ask(Crash(), timeout=2)
        wait_for(lambda: journal.has("alpha", 2, "started"), 5.0, "alpha generation 2 started")
        events = journal.events()
        assert events.index(("alpha", 1, "released")) < events.index(("alpha", 2, "started")), (
            events
        )
        assert journal.max_live("alpha") == 1
    finally:
        run.close()


def test_hung_instance_is_fenced_and_applies_nothing_after_replacement(
    gate: threading.Event,
) -> None:
    journal = Journal()
    # Not exclusive: a hung toy may be abandoned, so its successor starts.
    spec = toy_spec("alpha", journal=journal, exclusive=False)
    settings = SupervisorSection(
        heartbeat_interval=0.05, heartbeat_timeout=0.2, backoff_initial=0.01, stop_timeout=0.2
    )
    run = Running([spec], settings)
    try:
        ref = spec.address.ref
        assert ref is not None
        ref.tell(Hang(release=gate))
        futures = queue_changes(ref)
        wait_for(lambda: generation(spec.address) == 2, 5.0, "hung alpha replaced")
        gate.set()
        replies = [f.get(timeout=5) for f in futures]
        wait_for(lambda: journal.has("alpha", 1, "released"), 5.0, "old alpha released")
        assert journal.applied_by("alpha", 1) == []
        assert all(isinstance(r, Failure) for r in replies), replies
    finally:
        run.close()


def test_hung_instance_that_could_still_act_makes_the_daemon_exit(
    gate: threading.Event, caplog: pytest.LogCaptureFixture
) -> None:
    journal = Journal()
    base = toy_spec("alpha", journal=journal, exclusive=True)

    def start_and_hang(hooks: ActorHooks) -> pykka.ActorRef[Any]:
        ref = base.start(hooks)
        ref.tell(Hang(release=gate))
        return ref

    def build(settings: Settings, metrics: Metrics, readiness: object) -> list[ActorSpec]:
        return [ActorSpec(name="alpha", start=start_and_hang, address=base.address)]

    settings = Settings(
        daemon=DaemonSection(
            node_name="toy", metrics_address="127.0.0.1", metrics_port=free_tcp_port()
        ),
        supervisor=SupervisorSection(
            heartbeat_interval=0.05, heartbeat_timeout=0.2, backoff_initial=0.01, stop_timeout=0.2
        ),
    )
    caplog.set_level(logging.CRITICAL, logger="pyroute2_cni.supervisor.supervisor")
    result: list[int] = []
    daemon = threading.Thread(
        target=lambda: result.append(run_daemon(settings, build, install_signals=False)),
        daemon=True,
    )
    daemon.start()
    daemon.join(timeout=10)
    assert not daemon.is_alive(), "the daemon kept running beside a hung alpha"
    assert result == [1]
    assert journal.has("alpha", 1, "started")
    assert not journal.has("alpha", 2, "started")
    critical = [r.getMessage() for r in caplog.records if r.levelno == logging.CRITICAL]
    assert any(
        "alpha generation 1 did not stop within 0.2 s" in line and "could still act" in line
        for line in critical
    ), critical
