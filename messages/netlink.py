"""NetlinkActor's commands and replies."""

from __future__ import annotations

from dataclasses import dataclass

from pyroute2_cni.messages.crd import AttachmentType, VrfDomainSpec
from pyroute2_cni.values.attachment import DEFAULT_NETWORK


@dataclass(frozen=True, slots=True, kw_only=True)
class Vtep:
    """The underlay endpoint VXLAN devices use."""

    interface: str
    local: str
    mtu: int


@dataclass(frozen=True, slots=True, kw_only=True)
class EnsureVrfDomain:
    """Create (down) or correct the VRF, bridges and VXLANs of one domain."""

    domain: VrfDomainSpec
    # The domain whose prefix the host reaches (kubelet probes); tenant VRFs are isolated.
    system: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class BringUpVrfDomain:
    """FRR knows the domain's VNIs now: bring its devices up."""

    vrf: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RemoveVrfDomain:
    vrf: int


@dataclass(frozen=True, slots=True, kw_only=True)
class DomainState:
    vrf: int
    devices: tuple[str, ...]
    up: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class PlumbPod:
    container_id: str
    ifname: str
    network: str = DEFAULT_NETWORK  # with container_id and ifname: the attachment
    netns: str  # path of the pod's network namespace
    vrf: int
    attachment: AttachmentType
    address: str
    prefixlen: int
    gateway: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CniInterface:
    name: str
    mac: str
    sandbox: str = ""  # empty for the host side
    mtu: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class PodPlumbed:
    host: CniInterface
    container: CniInterface
    address: str
    prefixlen: int
    gateway: str
    mtu: int


@dataclass(frozen=True, slots=True, kw_only=True)
class UnplumbPod:
    """Remove a pod's interface; succeeds when the netns or the link is already gone, and
    leaves an interface of another network's attachment alone."""

    container_id: str
    ifname: str
    netns: str
    network: str = DEFAULT_NETWORK


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckPod:
    container_id: str
    ifname: str
    netns: str
    network: str = DEFAULT_NETWORK
    address: str
    prefixlen: int
    gateway: str
    mtu: int


@dataclass(frozen=True, slots=True, kw_only=True)
class PodCheckResult:
    ok: bool
    differences: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class PlumbedPod:
    container_id: str
    ifname: str
    host_ifname: str
    vrf: int
    network: str = DEFAULT_NETWORK
    address: str = ""  # as the alias records it ("" for pods plumbed by old versions)


@dataclass(frozen=True, slots=True, kw_only=True)
class ListPlumbedPods:
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class PlumbedPods:
    pods: tuple[PlumbedPod, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Reconcile:
    """Repair drift: every domain's devices, addresses, routes and rules, node sysctls and
    the host side of every plumbed pod are put back as they should be.

    The actor sends it to itself every [netlink] reconcile_interval (scheduled=True re-arms
    the timer); tests and operators send it unscheduled.
    """

    scheduled: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class ReconcileResult:
    repairs: tuple[str, ...]  # what was put back, one line each (also metrics.netlink_repairs)
    errors: tuple[str, ...] = ()  # steps that failed this round (tried again next round)
