"""One log line per CNI request: what was asked, for which pod, what came of it, where the
time went.  The same fields go to text (key=value) and JSON logs (``[logging] format``)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from pyroute2_cni.cni.spec import Request

# Verbs a runtime calls every few seconds: their successes are logged at DEBUG only.
ROUTINE_VERBS = frozenset({"STATUS", "VERSION"})


@dataclass(slots=True)
class RequestTrace:
    """Filled in while one request is served (one worker thread owns it)."""

    verb: str
    started: float = field(default_factory=time.monotonic)
    network: str = ""
    container_id: str = ""
    ifname: str = ""
    pod: str = ""
    vrf: int | None = None
    address: str = ""
    result: str = ""
    error: str = ""
    phases: dict[str, float] = field(default_factory=dict)  # name -> seconds

    def identify(self, request: Request) -> None:
        self.verb = request.command
        self.network = request.network
        self.container_id = request.container_id
        self.ifname = request.ifname
        if request.pod_name:
            self.pod = f"{request.pod_namespace}/{request.pod_name}"

    def fields(self) -> dict[str, Any]:
        """The line's fields, empty ones left out; durations in milliseconds."""
        out: dict[str, Any] = {"verb": self.verb}
        for name in ("network", "pod", "container_id", "ifname"):
            value = getattr(self, name)
            if value:
                out[name] = value
        if self.vrf is not None:
            out["vrf"] = self.vrf
        if self.address:
            out["address"] = self.address
        out["result"] = self.result
        if self.error:
            out["error"] = self.error
        out["duration_ms"] = round((time.monotonic() - self.started) * 1000, 1)
        for phase, seconds in self.phases.items():
            out[f"{phase}_ms"] = round(seconds * 1000, 1)
        return out


def render_text(fields: dict[str, Any]) -> str:
    """``CNI ADD key=value ...``; values with spaces quoted, so the line splits back."""
    parts = [f"CNI {fields['verb']}"]
    for key, value in fields.items():
        if key == "verb":
            continue
        text = str(value)
        if not text or any(c in text for c in ' "='):
            text = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
        parts.append(f"{key}={text}")
    return " ".join(parts)
