"""CNIServerActor's internal messages."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckInstall:
    """Self-scheduled tick: install the shim and conflist once the node is ready."""
