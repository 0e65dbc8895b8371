"""FRRActor's events."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class VniKnown:
    """zebra has the VNI (and, for an l3vni, its VRF mapping): devices may come up."""

    vrf: int
    vni: int
