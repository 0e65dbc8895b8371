"""`pyroute2-cni daemon`: wire the actors, the supervisor and the health server."""

from __future__ import annotations

import faulthandler
import logging
import signal
import threading
from collections.abc import Callable, Sequence
from types import FrameType

from pyroute2_cni.runtime.config import Settings
from pyroute2_cni.runtime.health import HealthReport, HealthServer
from pyroute2_cni.runtime.metrics import Metrics
from pyroute2_cni.supervisor import ActorSpec, Supervisor

log = logging.getLogger(__name__)

SpecBuilder = Callable[[Settings, Metrics, Callable[[], HealthReport]], Sequence[ActorSpec]]


def run_daemon(
    settings: Settings,
    build_specs: SpecBuilder,
    *,
    stop: threading.Event | None = None,
    install_signals: bool = True,
    linger: Callable[[], object] | None = None,
) -> int:
    """Run until SIGTERM/SIGINT (exit 0) or an escalation (exit 1).  On SIGTERM/SIGINT,
    ``linger`` runs before the actors stop (they keep working meanwhile)."""
    stop = stop if stop is not None else threading.Event()
    metrics = Metrics()
    # Actors see readiness through this late-bound callable (the supervisor
    # is built from the specs, so it cannot exist before them).
    holder: list[Supervisor] = []

    def readiness() -> HealthReport:
        return holder[0].report()

    supervisor = Supervisor(build_specs(settings, metrics, readiness), settings.supervisor, metrics)
    holder.append(supervisor)
    if install_signals:

        def on_signal(signum: int, frame: FrameType | None) -> None:
            log.info("received %s; stopping", signal.Signals(signum).name)
            stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        # `kill -USR1` dumps every thread's stack: the first tool for a hung actor.
        faulthandler.register(signal.SIGUSR1, all_threads=True)
    health = HealthServer(
        settings.daemon.metrics_address, settings.daemon.metrics_port, supervisor.report, metrics
    )
    health.start()
    log.info(
        "pyroute2-cni daemon on node %s; health and metrics on %s:%d",
        settings.daemon.node_name,
        settings.daemon.metrics_address,
        health.port,
    )
    try:
        supervisor.start()
        return supervisor.run(stop, linger)
    finally:
        supervisor.stop()
        health.stop()
