"""EventBook: occurrences aggregate into one Event per series, written at most once
per interval, with the body `kubectl describe` reads."""

from __future__ import annotations

import pytest

from pyroute2_cni.kube.events import MAX_SERIES, EventBook
from pyroute2_cni.messages.events import RecordEvent

pytestmark = pytest.mark.unit

EXHAUSTED = RecordEvent(
    kind="VRFDomain", name="vrf-42", reason="PoolExhausted", message="no free addresses"
)


def test_the_first_occurrence_creates_an_event_on_the_object() -> None:
    book = EventBook(node="n1", interval=60.0)
    write = book.record(EXHAUSTED, now=10.0, stamp="2026-12-06T03:00:00Z", uid="u-1")
    assert write is not None and write.create
    body = write.body
    assert body["metadata"]["namespace"] == "default"
    assert body["metadata"]["name"] == write.name and write.name.startswith("vrf-42.n1.")
    assert body["involvedObject"] == {
        "apiVersion": "cni.pyroute2.org/v1alpha1",
        "kind": "VRFDomain",
        "name": "vrf-42",
        "uid": "u-1",
    }
    assert (body["type"], body["reason"], body["count"]) == ("Warning", "PoolExhausted", 1)
    assert body["source"] == {"component": "pyroute2-cni", "host": "n1"}


def test_repeats_within_the_interval_are_counted_and_written_once_after_it() -> None:
    book = EventBook(node="n1", interval=60.0)
    first = book.record(EXHAUSTED, now=0.0, stamp="t0")
    assert first is not None
    assert [book.record(EXHAUSTED, now=float(t), stamp="t") for t in range(1, 59)] == [None] * 58
    later = book.record(EXHAUSTED, now=61.0, stamp="t61")
    assert later is not None and not later.create and later.name == first.name
    assert later.body == {"count": 60, "lastTimestamp": "t61"}


def test_another_reason_message_or_object_is_another_series() -> None:
    book = EventBook(node="n1", interval=60.0)
    names = set()
    for event in (
        EXHAUSTED,
        RecordEvent(kind="VRFDomain", name="vrf-42", reason="PoolExhausted", message="other"),
        RecordEvent(kind="VRFDomain", name="vrf-7", reason="PoolExhausted", message="x"),
        RecordEvent(kind="Node", name="n1", reason="FrrApplyFailed", message="x"),
    ):
        write = book.record(event, now=1.0, stamp="t")
        assert write is not None and write.create
        names.add(write.name)
    assert len(names) == 4


def test_an_expired_event_starts_over_and_the_series_are_bounded() -> None:
    book = EventBook(node="n1", interval=60.0)
    first = book.record(EXHAUSTED, now=0.0, stamp="t")
    assert first is not None
    book.forget(first.name)
    again = book.record(EXHAUSTED, now=1.0, stamp="t")
    assert again is not None and again.create and again.name != first.name
    for i in range(MAX_SERIES + 10):
        book.record(
            RecordEvent(kind="Node", name="n1", reason="R", message=str(i)), now=2.0, stamp="t"
        )
    assert len(book) == MAX_SERIES


def test_an_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="no events for kind 'Pod'"):
        EventBook(node="n1").record(
            RecordEvent(kind="Pod", name="p", reason="R", message="m"), now=0.0, stamp="t"
        )


HEALTHY = RecordEvent(
    kind="Node", name="n1", reason="NetworkHealthy", message="every problem is gone", warning=False
)


def _degraded(problem: str) -> RecordEvent:
    return RecordEvent(kind="Node", name="n1", reason="NetworkDegraded", message=problem)


def test_a_repeat_after_another_event_of_the_object_is_written_at_once() -> None:
    # Degraded, healthy, degraded otherwise, healthy again, all within one interval:
    # each state change reaches the API server, so the newest Event is the newest state.
    book = EventBook(node="n1", interval=60.0)
    stamps = []
    for now, event in enumerate((_degraded("a"), HEALTHY, _degraded("b"), HEALTHY)):
        write = book.record(event, now=float(now), stamp=f"t{now}")
        assert write is not None, event
        stamps.append(write.body["lastTimestamp"])
    assert stamps == ["t0", "t1", "t2", "t3"]
    # The same Event again with nothing in between is still held back.
    assert book.record(HEALTHY, now=4.0, stamp="t4") is None


def test_another_object_does_not_release_a_held_back_repeat() -> None:
    book = EventBook(node="n1", interval=60.0)
    assert book.record(EXHAUSTED, now=0.0, stamp="t0") is not None
    other = RecordEvent(kind="VRFDomain", name="vrf-7", reason="PoolExhausted", message="x")
    assert book.record(other, now=1.0, stamp="t1") is not None
    assert book.record(EXHAUSTED, now=2.0, stamp="t2") is None
