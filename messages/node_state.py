"""What actors tell the NodeStateActor about this node, for its VRFNodeState.

Each message replaces the previous one of its kind (they are facts, not deltas), so a
dropped message is made good by the next one.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class FrrApplySeen:
    """The result of the last FRR apply (FRRActor)."""

    applied: bool
    reason: str
    message: str
    at: str  # RFC 3339, when the result came
    config_hash: str  # of the configuration FRR runs ("" while none was applied)


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionSeen:
    peer: str
    state: str
    uptime: float  # seconds in this state as bgpd tells it (0 when not Established)


@dataclass(frozen=True, slots=True, kw_only=True)
class VniSeen:
    vrf: int
    vni: int
    kind: str  # "l3vni" or "l2vni"


@dataclass(frozen=True, slots=True, kw_only=True)
class FrrStateSeen:
    """One poll of FRR (FRRActor): sessions, and the VNIs zebra knows of those expected."""

    answered: bool
    sessions: tuple[SessionSeen, ...]
    expected: tuple[VniSeen, ...]
    known: tuple[VniSeen, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class VrfUse:
    vrf: int
    domain: str  # "" when the VRFDomain is gone but blocks remain
    blocks: int
    addresses: int
    free: int
    exhausted: bool  # an ADD found no free address, and none has been freed since


@dataclass(frozen=True, slots=True, kw_only=True)
class IpamUseSeen:
    """This node's blocks and addresses per VRF (IPAMActor)."""

    vrfs: tuple[VrfUse, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class EvpnHeldSeen:
    """Kernel EVPN entries of absent peers held (RouteKeeperActor)."""

    held: int


@dataclass(frozen=True, slots=True, kw_only=True)
class CniFailureSeen:
    """A CNI request that failed (CNIServerActor): the node's last error."""

    verb: str
    pod: str  # namespace/name, "" when the runtime did not say
    message: str
    at: str


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeProblems:
    """What is wrong on this node (NodeStateActor to NodeConditionActor): the condition
    stays True while ADDs are served, with these in its message (reason Degraded)."""

    problems: tuple[str, ...]
