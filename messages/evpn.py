"""EVPN hold: kernel events and BGP session reports for the RouteKeeperActor."""

from __future__ import annotations

from dataclasses import dataclass

from pyroute2_cni.values.evpn_hold import BgpView, EvpnEntry


@dataclass(frozen=True, slots=True, kw_only=True)
class EvpnChanged:
    """The kernel added or deleted an entry towards a remote VTEP."""

    added: bool
    entry: EvpnEntry


@dataclass(frozen=True, slots=True, kw_only=True)
class EvpnChanges:
    """Changes the monitor read together (a burst), in order: (added, entry) each."""

    changes: tuple[tuple[bool, EvpnEntry], ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class EvpnResync:
    """Notifications were lost: read the kernel's entries again.  With ``error`` the
    monitor itself failed, and the actor fails too, to be restarted."""

    error: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class BgpSessionsSeen:
    """FRRActor's latest view of the BGP sessions."""

    view: BgpView


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckHeld:
    """Self-scheduled: decide about the entries held for absent peers."""
