"""In-memory IPAM and netlink actors for CNIServerActor unit tests.

They answer the real messages with plausible values and record what they
hold, so tests can assert that nothing leaks after failures.
"""

from __future__ import annotations

import ipaddress
import threading
from typing import Any

from pyroute2_cni.actors.address import Address
from pyroute2_cni.actors.base import ActorHooks, BaseActor
from pyroute2_cni.messages.base import ErrorKind, Failure, Ok
from pyroute2_cni.messages.crd import AttachmentType
from pyroute2_cni.messages.ipam import (
    AddressAllocated,
    AddressesReleased,
    AddressLookupResult,
    AddressReleased,
    AllocateAddress,
    AllocationConfirmed,
    ConfirmAllocation,
    LookupAddress,
    ReleaseAddress,
    ReleaseAllExcept,
)
from pyroute2_cni.messages.netlink import (
    CheckPod,
    CniInterface,
    ListPlumbedPods,
    PlumbedPod,
    PlumbedPods,
    PlumbPod,
    PodCheckResult,
    PodPlumbed,
    UnplumbPod,
)
from pyroute2_cni.values.attachment import attachment_key, key_network


class Shared:
    """State both fakes expose to the test (guarded by a lock)."""

    def __init__(self, capacity: int = 8) -> None:
        self.lock = threading.Lock()
        self.capacity = capacity
        self.allocations: dict[str, str] = {}
        self.plumbed: dict[str, PlumbPod] = {}
        self.fail_plumb = False
        self.plumb_gate: threading.Event | None = None
        self.gc_calls = 0  # ReleaseAllExcept messages IPAM has answered


class FakeIpam(BaseActor):
    def __init__(self, hooks: ActorHooks, *, shared: Shared) -> None:
        super().__init__(hooks)
        self.shared = shared

    def on_start(self) -> None:
        self.set_ready(True)

    def handle(self, message: Any) -> Any:
        s = self.shared
        match message:
            case AllocateAddress(key=key, domain=domain):
                with s.lock:
                    if key not in s.allocations:
                        used = set(s.allocations.values())
                        net = ipaddress.IPv4Network(domain.cidr)
                        free = [str(h) for h in list(net.hosts())[1 : s.capacity + 1]]
                        free = [a for a in free if a not in used]
                        if not free:
                            return Failure(
                                reason=f"VRFDomain {domain.name} ({domain.cidr}) has no free "
                                "addresses",
                                kind=ErrorKind.PERMANENT,
                            )
                        s.allocations[key] = free[0]
                    gateway = str(next(ipaddress.IPv4Network(domain.cidr).hosts()))
                    return AddressAllocated(
                        key=key,
                        vrf=domain.vrf,
                        address=s.allocations[key],
                        prefixlen=domain.ipblocklen,
                        gateway=gateway,
                        block=domain.cidr,
                        attachment=domain.pod_attachment().type,
                    )
            case ReleaseAddress(key=key):
                with s.lock:
                    return AddressReleased(key=key, address=s.allocations.pop(key, None))
            case ReleaseAllExcept(network=network, keep=keep):
                with s.lock:
                    gone = tuple(
                        k for k in s.allocations if k not in keep and key_network(k) == network
                    )
                    for k in gone:
                        del s.allocations[k]
                    s.gc_calls += 1
                    return AddressesReleased(keys=gone)
            case LookupAddress(key=key):
                with s.lock:
                    address = s.allocations.get(key)
                if address is None:
                    return AddressLookupResult(allocation=None)
                return AddressLookupResult(
                    allocation=AddressAllocated(
                        key=key,
                        vrf=42,
                        address=address,
                        prefixlen=26,
                        gateway="",
                        block="",
                        attachment=AttachmentType.L3VNI,
                    )
                )
            case _:
                return self.unknown(message)


class FakeNetlink(BaseActor):
    def __init__(self, hooks: ActorHooks, *, shared: Shared) -> None:
        super().__init__(hooks)
        self.shared = shared

    def on_start(self) -> None:
        self.set_ready(True)

    def handle(self, message: Any) -> Any:
        s = self.shared
        match message:
            case PlumbPod() as plumb:
                if s.plumb_gate is not None:
                    s.plumb_gate.wait(timeout=30)
                if s.fail_plumb:
                    return Failure(reason=f"cannot open netns {plumb.netns}", details="ENOENT")
                key = attachment_key(plumb.network, plumb.container_id, plumb.ifname)
                with s.lock:
                    s.plumbed[key] = plumb
                return PodPlumbed(
                    host=CniInterface(name="p2c" + plumb.container_id[:8], mac="02:00:00:00:00:01"),
                    container=CniInterface(
                        name=plumb.ifname, mac="02:00:00:00:00:02", sandbox=plumb.netns, mtu=1450
                    ),
                    address=plumb.address,
                    prefixlen=plumb.prefixlen,
                    gateway=plumb.gateway,
                    mtu=1450,
                )
            case UnplumbPod(container_id=cid, ifname=ifname, network=network):
                with s.lock:
                    s.plumbed.pop(attachment_key(network, cid, ifname), None)
                return Ok()
            case CheckPod(container_id=cid, ifname=ifname, address=address, network=network):
                with s.lock:
                    held = s.plumbed.get(attachment_key(network, cid, ifname))
                if held is None:
                    return PodCheckResult(ok=False, differences=(f"{ifname} does not exist",))
                if held.address != address:
                    return PodCheckResult(
                        ok=False, differences=(f"address {held.address}, expected {address}",)
                    )
                return PodCheckResult(ok=True, differences=())
            case ListPlumbedPods():
                with s.lock:
                    pods = tuple(
                        PlumbedPod(
                            container_id=p.container_id,
                            ifname=p.ifname,
                            host_ifname="p2c" + p.container_id[:8],
                            vrf=p.vrf,
                            network=p.network,
                            address=p.address,
                        )
                        for p in s.plumbed.values()
                    )
                return PlumbedPods(pods=pods)
            case _:
                return self.unknown(message)


class IpamStub(Address):
    """Stands in for the IPAMActor: answers ConfirmAllocation from `held` (key -> address),
    by tell, as the real one does; None in `held` means "not loaded yet"."""

    def __init__(self) -> None:
        super().__init__("ipam")
        self.held: dict[str, str | None] = {}
        self.asked: list[str] = []

    def tell(self, message: Any) -> bool:
        assert isinstance(message, ConfirmAllocation)
        self.asked.append(message.key)
        if message.key in self.held and self.held[message.key] is None:
            held: bool | None = None
        else:
            held = self.held.get(message.key) == message.address
        message.reply_to.tell(
            AllocationConfirmed(key=message.key, address=message.address, held=held)
        )
        return True
