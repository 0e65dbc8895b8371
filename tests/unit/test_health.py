from __future__ import annotations

import logging
import socket
import struct
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pyroute2_cni.runtime.config import SupervisorSection
from pyroute2_cni.runtime.health import HealthReport, HealthServer
from pyroute2_cni.runtime.metrics import Metrics
from pyroute2_cni.supervisor import Supervisor
from tests.harness.toy_actors import BecomeReady, Crash, toy_spec
from tests.harness.waiting import wait_for

pytestmark = pytest.mark.unit


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture
def stack() -> Iterator[tuple[int, dict[str, object], Metrics]]:
    metrics = Metrics()
    specs = [toy_spec("alpha", ready_on_start=False), toy_spec("beta", ready_on_start=False)]
    sup = Supervisor(specs, SupervisorSection(heartbeat_interval=0.05), metrics)
    server = HealthServer("127.0.0.1", 0, sup.report, metrics)
    server.start()
    sup.start()
    stop = threading.Event()
    thread = threading.Thread(target=sup.run, args=(stop,), daemon=True)
    thread.start()
    yield server.port, {s.name: s.address for s in specs}, metrics
    stop.set()
    thread.join(timeout=5)
    server.stop()


def test_readyz_waits_for_every_actor(stack) -> None:  # type: ignore[no-untyped-def]
    port, addresses, _ = stack
    code, body = get(port, "/readyz")
    assert code == 503
    assert "alpha: not ready" in body and "beta: not ready" in body
    assert get(port, "/livez")[0] == 200

    addresses["alpha"].ask(BecomeReady(), timeout=2)
    wait_for(lambda: "alpha: ready" in get(port, "/readyz")[1], 2, "alpha ready in /readyz")
    code, body = get(port, "/readyz")
    assert code == 503 and "beta: not ready" in body

    addresses["beta"].ask(BecomeReady(), timeout=2)
    wait_for(lambda: get(port, "/readyz")[0] == 200, 2, "/readyz 200")
    assert get(port, "/livez")[0] == 200


def test_metrics_parse_and_count_restarts(stack) -> None:  # type: ignore[no-untyped-def]
    port, addresses, metrics = stack
    addresses["alpha"].tell(Crash())
    wait_for(
        lambda: metrics.registry.get_sample_value(
            "pyroute2_cni_actor_restarts_total", {"actor": "alpha"}
        ),
        3,
        "restart counted",
    )
    code, body = get(port, "/metrics")
    assert code == 200
    families = {f.name: f for f in text_string_to_metric_families(body)}
    restarts = families["pyroute2_cni_actor_restarts"]
    samples = {s.labels["actor"]: s.value for s in restarts.samples if s.name.endswith("_total")}
    assert samples["alpha"] == 1.0
    assert "pyroute2_cni_actor_ready" in families
    assert "process_resident_memory_bytes" in families


def test_unknown_path_is_404(stack) -> None:  # type: ignore[no-untyped-def]
    port, _, _ = stack
    assert get(port, "/nope")[0] == 404


def test_a_probe_that_hung_up_before_the_answer_costs_no_traceback(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    """A kubelet probe that timed out closes its socket while /livez is computed: the
    write fails, and the server says so at debug level instead of a traceback."""
    hung_up = threading.Event()

    def report() -> HealthReport:
        hung_up.wait(5)  # answer only after the client is gone
        return HealthReport(live=True, ready=True, lines=("alpha: ready",) * 20000)

    server = HealthServer("127.0.0.1", 0, report, Metrics())
    server.start()
    caplog.set_level(logging.DEBUG, logger="pyroute2_cni.runtime.health")
    try:
        client = socket.create_connection(("127.0.0.1", server.port), timeout=2)
        client.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
        # Close with a reset, as a client that gave up does with SO_LINGER 0.
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()
        hung_up.set()
        wait_for(
            lambda: any("went away" in r.getMessage() for r in caplog.records),
            5,
            "the server noticing the client went away",
        )
        assert get(server.port, "/livez")[0] == 200  # and it goes on serving
    finally:
        server.stop()
    assert "Traceback" not in capsys.readouterr().err
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
