"""Kubernetes Events the daemon reports on the objects concerned (EventActor)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordEvent:
    """One occurrence: ``kind``/``name`` of the object it concerns (a kind of
    :data:`pyroute2_cni.kube.events.API_VERSIONS`), Warning or Normal, a CamelCase
    ``reason`` and a sentence saying what is wrong and what to do."""

    kind: str
    name: str
    reason: str
    message: str
    warning: bool = True
