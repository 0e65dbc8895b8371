"""Pod plumbing: a pod's veth pair, its address and default route, and the record of it.

The NetlinkActor owns one :class:`PodPlumbing` and calls it with its backend; this module
does the kernel work of PlumbPod, UnplumbPod, CheckPod and ListPlumbedPods and keeps what
the actor needs to plumb a vanished pod again.  It imports no pyroute2: the kernel is
reached through the :class:`NetlinkBackend` passed in, and a pod namespace only through
``backend.open_netns`` (a session opened from the backend's own netns worker), so nothing
here calls ``setns``.

Invariants:

- The kernel is the record: a plumbed pod is a host veth named ``host_veth_name`` whose
  alias (``pod_alias``) names its attachment; ``pods`` is read back from the aliases.
- An attachment is network name + container id + ifname: an unplumb or check of another
  network never touches ours.
- A repeated plumb of the same attachment answers what the first one did; a pair of ours
  without an alias (a crash between create and label) is made again.
- Every change is "ensure present/absent": EEXIST, ENODEV and ENOENT count as done only
  where they mean that.

Keep in sync with: actors/netlink_actor.py (which sequences these calls),
pyroute2_cni/netlink/names.py and pods.py (names, aliases, ``pod_differences``),
tests/harness/fake_netlink.py.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable, Iterable
from contextlib import closing
from dataclasses import fields
from functools import partial
from typing import Any

from pyroute2_cni.messages.base import ErrorKind, Failure, Ok
from pyroute2_cni.messages.crd import VrfDomainSpec
from pyroute2_cni.messages.netlink import (
    CheckPod,
    CniInterface,
    PlumbedPod,
    PlumbedPods,
    PlumbPod,
    PodCheckResult,
    PodPlumbed,
    UnplumbPod,
)
from pyroute2_cni.netlink.backend import NetlinkBackend, NetnsSession
from pyroute2_cni.netlink.names import (
    bridge_name,
    host_veth_name,
    is_host_veth_name,
    pod_macs,
    valid_container_id,
    valid_ifname,
)
from pyroute2_cni.netlink.plan import LiveView
from pyroute2_cni.netlink.pods import (
    PodAlias,
    PodExpectation,
    PodSide,
    parse_pod_alias,
    pod_alias,
    pod_differences,
)
from pyroute2_cni.netlink.specs import (
    RTPROT_BOOT,
    TABLE_MAIN,
    AddrSpec,
    LinkChange,
    LinkState,
    RouteSpec,
    VethSpec,
)
from pyroute2_cni.values.attachment import AttachmentId


def pods_from(links: Iterable[LinkState]) -> dict[str, PodAlias]:
    """The plumbed pods the host veths' aliases record, by host veth name."""
    pods: dict[str, PodAlias] = {}
    for link in links:
        if link.kind != "veth" or not is_host_veth_name(link.name):
            continue
        record = parse_pod_alias(link.alias)
        if record is not None:
            pods[link.name] = record
    return pods


# What a PlumbPod asks for is what the host veth's alias records: the same fields.
_RECORDED = (
    "vrf",
    "attachment",
    "container_id",
    "ifname",
    "network",
    "netns",
    "address",
    "prefixlen",
    "gateway",
)


def _recorded(source: PlumbPod | PodAlias) -> dict[str, Any]:
    return {name: getattr(source, name) for name in _RECORDED}


def alias_record(msg: PlumbPod) -> PodAlias:
    """What the host veth's alias records of `msg`."""
    return PodAlias(**_recorded(msg))


def plumb_request(record: PodAlias) -> PlumbPod | None:
    """The PlumbPod that made a pod, as its alias recorded it; None if it lacks the
    address or the netns (then it cannot be plumbed again)."""
    if not (record.address and record.netns):
        return None
    return PlumbPod(**_recorded(record))


def _already(code: int, change: Callable[[], None]) -> bool:
    """Make `change`; True when the kernel answered `code`, the errno that means it is
    already so (any other error is raised)."""
    try:
        change()
    except OSError as exc:
        if exc.errno != code:
            raise
        return True
    return False


def plumb_problem(msg: PlumbPod, domain: VrfDomainSpec | None, node: str) -> Failure | None:
    """Why `msg` cannot be plumbed before anything is touched; `domain` is its VRF's
    domain on this node, None while that VRF is not set up."""
    if not valid_container_id(msg.container_id) or not valid_ifname(msg.ifname):
        return Failure(
            reason=f"invalid container id {msg.container_id!r} or ifname {msg.ifname!r}",
            kind=ErrorKind.INVALID,
        )
    if domain is None:
        return Failure(
            reason=f"VRF {msg.vrf} is not set up on node {node} yet",
            kind=ErrorKind.TEMPORARY,
        )
    if msg.attachment not in {a.type for a in domain.attachments}:
        return Failure(
            reason=f"VRFDomain {domain.name} has no {msg.attachment.value} attachment",
            kind=ErrorKind.INVALID,
        )
    return None


def plumb_failure(msg: PlumbPod, exc: OSError) -> Failure:
    """The CNI failure for a kernel error of a plumb; other errors are raised again."""
    if exc.errno == errno.ENOENT:
        return Failure(
            reason=f"network namespace {msg.netns} does not exist", kind=ErrorKind.INVALID
        )
    if exc.errno == errno.EEXIST:
        return Failure(
            reason=f"{msg.ifname} already exists in {msg.netns}",
            kind=ErrorKind.INVALID,
            details=str(exc),
        )
    if exc.errno in (errno.ENETUNREACH, errno.EINVAL):
        return Failure(
            reason=f"cannot route via {msg.gateway} from {msg.address}/{msg.prefixlen}",
            kind=ErrorKind.INVALID,
            details=str(exc),
        )
    raise exc


def configure_pod(pod: NetnsSession, msg: PlumbPod, mac: str, mtu: int, *, fresh: bool) -> str:
    """Address, link up (gratuitous ARP), default route via the gateway, in the pod's
    namespace.  Returns the pod side's MAC."""
    address = AddrSpec(ifname=msg.ifname, address=msg.address, prefixlen=msg.prefixlen)
    default = RouteSpec(
        table=TABLE_MAIN,
        dst="0.0.0.0/0",
        gateway=msg.gateway,
        oif=msg.ifname,
        proto=RTPROT_BOOT,
    )
    if fresh:
        # The address before the link comes up: with arp_notify the kernel then sends
        # the gratuitous ARP for it (bridge FDB, EVPN MAC learning).
        pod.link_set(msg.ifname, LinkChange(arp_notify=True))
        pod.addr_add(address)
        pod.link_set(msg.ifname, LinkChange(up=True))
        if _already(errno.EEXIST, partial(pod.route_add, default)):
            pod.route_replace(default)
    else:
        link = pod.link_get(msg.ifname)
        if link is None or link.kind != "veth":
            raise OSError(errno.ENODEV, f"{msg.ifname} is not our veth in {msg.netns}")
        mac = link.mac
        pod.link_set(
            msg.ifname,
            LinkChange(up=True if not link.up else None, mtu=mtu if link.mtu != mtu else None),
        )
        have = {(a.address, a.prefixlen) for a in pod.addresses(link.index)}
        if (msg.address, msg.prefixlen) not in have:
            pod.addr_add(address)
        defaults = [r for r in pod.routes(TABLE_MAIN) if r.dst == "0.0.0.0/0" and r.metric == 0]
        if not any(r.gateway == msg.gateway and r.oif == link.index for r in defaults):
            pod.route_replace(default)
    return mac


class PodPlumbing:
    """This node's plumbed pods and the kernel work on them; the backend is passed in.

    ``pods``: what the host veths' aliases say, by host veth.  ``plumbed``: what each pod
    asked for (an earlier instance's pods from their aliases), so a pair deleted by hand
    (its alias goes with it) can be plumbed again.  ``awaiting``: pods to plumb again once
    IPAM confirms their address.
    """

    def __init__(self, node: str, log: logging.Logger) -> None:
        self.node = node
        self.log = log
        self.pods: dict[str, PodAlias] = {}
        self.plumbed: dict[str, PlumbPod] = {}
        self.awaiting: dict[str, PlumbPod] = {}

    def read(self, backend: NetlinkBackend) -> list[LinkState]:
        """Read the pods back from the kernel; returns the veths it read."""
        links = list(backend.links("veth"))
        self.pods = pods_from(links)
        return links

    def remember(self) -> None:
        """Pods plumbed by an earlier instance: what their aliases say they were given."""
        for host, record in self.pods.items():
            if host in self.plumbed:
                continue
            request = plumb_request(record)
            if request is not None:
                self.plumbed[host] = request

    def retry_later(self, msg: PlumbPod) -> None:
        """Count `msg` as plumbed: the next reconcile round finds its pair gone again."""
        self.plumbed[host_veth_name(msg.container_id, msg.ifname)] = msg

    def confirmed(self, attachment: AttachmentId, address: str) -> PlumbPod | None:
        """The pod awaiting IPAM's confirmation of `address` for `attachment`, no longer
        awaiting; None when it was unplumbed or plumbed afresh meanwhile."""
        host = host_veth_name(attachment.container_id, attachment.ifname)
        msg = self.awaiting.get(host)
        if msg is None or msg.address != address:
            return None
        del self.awaiting[host]
        return msg

    def forget(self, host: str) -> None:
        self.pods.pop(host, None)
        self.plumbed.pop(host, None)

    def delete_host_veth(self, backend: NetlinkBackend, host: str) -> None:
        _already(errno.ENODEV, partial(backend.link_delete, host))
        self.forget(host)

    def plumb(
        self, backend: NetlinkBackend, msg: PlumbPod, domain: VrfDomainSpec | None, mtu: int
    ) -> PodPlumbed | Failure:
        """Plumb `msg` (or answer a repeated ADD) with `domain` its VRF's domain and `mtu`
        the pod MTU; kernel errors a CNI client can act on become a Failure."""
        problem = plumb_problem(msg, domain, self.node)
        if problem is not None:
            return problem
        bridge = bridge_name(msg.attachment, msg.vrf)
        host = host_veth_name(msg.container_id, msg.ifname)
        host_mac, pod_mac = pod_macs(self.node, msg.container_id, msg.ifname)
        self.awaiting.pop(host, None)  # this ADD supersedes a pending re-plumb
        record = alias_record(msg)
        live = backend.link_get(host)
        if live is not None and not live.alias:
            # Our name (a hash of this attachment) without the alias: a pair half made
            # when the daemon died between creating it and labelling it.  Start over.
            self.delete_host_veth(backend, host)
            live = None
        if live is not None:
            owner = parse_pod_alias(live.alias)
            if owner is None or (owner.container_id, owner.ifname) != (
                msg.container_id,
                msg.ifname,
            ):
                return Failure(
                    reason=f"host interface {host} exists and is not this attachment's",
                    kind=ErrorKind.CONFLICT,
                    details=live.alias,
                )
            if owner.network != msg.network:
                return Failure(
                    reason=f"{msg.container_id}/{msg.ifname} is attached to network "
                    f"{owner.network}, not {msg.network}",
                    kind=ErrorKind.CONFLICT,
                    details="one interface name per container: use another CNI_IFNAME "
                    "for the second network",
                )
            if owner.netns != msg.netns and owner.netns:
                # Same attachment, another sandbox path: the old pair cannot be reused.
                self.delete_host_veth(backend, host)
                live = None
            else:
                # A repeated ADD answers what the first one did.
                host_mac, mtu = live.mac, live.mtu or mtu
        created = live is None
        if created:
            try:
                backend.veth_create(
                    VethSpec(
                        host_name=host,
                        host_mac=host_mac,
                        peer_name=msg.ifname,
                        peer_mac=pod_mac,
                        netns=msg.netns,
                        mtu=mtu,
                        master=bridge,
                        alias=pod_alias(record),
                    )
                )
            except OSError as exc:
                return plumb_failure(msg, exc)
        else:
            assert live is not None
            change = LinkChange(
                master=bridge if not _has_master(backend, live, bridge) else None,
                up=True if not live.up else None,
                alias=pod_alias(record) if live.alias != pod_alias(record) else None,
            )
            backend.link_set(host, change)
        try:
            with closing(backend.open_netns(msg.netns)) as pod:
                pod_mac = configure_pod(pod, msg, pod_mac, mtu, fresh=created)
        except OSError as exc:
            if created:
                self.delete_host_veth(backend, host)
            if exc.errno == errno.ENODEV and not created:
                # The pod end is not in this namespace: recreate the pair once.
                self.delete_host_veth(backend, host)
                return self.plumb(backend, msg, domain, mtu)
            return plumb_failure(msg, exc)
        self.pods[host] = record
        self.plumbed[host] = msg
        self.log.info(
            "plumbed %s/%s: %s %s/%d via %s on %s",
            msg.container_id[:12],
            msg.ifname,
            host,
            msg.address,
            msg.prefixlen,
            msg.gateway,
            bridge,
        )
        return PodPlumbed(
            host=CniInterface(name=host, mac=host_mac),
            container=CniInterface(name=msg.ifname, mac=pod_mac, sandbox=msg.netns, mtu=mtu),
            address=msg.address,
            prefixlen=msg.prefixlen,
            gateway=msg.gateway,
            mtu=mtu,
        )

    def unplumb(self, backend: NetlinkBackend, msg: UnplumbPod) -> Ok | Failure:
        host = host_veth_name(msg.container_id, msg.ifname)
        live = backend.link_get(host)
        owner = parse_pod_alias(live.alias) if live is not None else None
        if owner is not None and owner.network != msg.network:
            # Another network's attachment with the same container id and ifname: not
            # this DEL's (nothing of msg.network is here), so it stays.
            self.log.info(
                "DEL of %s/%s for network %s: %s belongs to network %s; left alone",
                msg.container_id[:12],
                msg.ifname,
                msg.network,
                host,
                owner.network,
            )
            return Ok()
        self.awaiting.pop(host, None)
        if live is None:
            self.forget(host)
            return Ok()
        if live.alias and (
            owner is None or (owner.container_id, owner.ifname) != (msg.container_id, msg.ifname)
        ):
            # An empty alias is our own half-made pair (see plumb): removed below.
            return Failure(
                reason=f"host interface {host} is not this attachment's; left alone",
                kind=ErrorKind.CONFLICT,
                details=live.alias,
            )
        self.delete_host_veth(backend, host)
        self.log.info("unplumbed %s/%s (%s)", msg.container_id[:12], msg.ifname, host)
        return Ok()

    def check(self, backend: NetlinkBackend, msg: CheckPod) -> PodCheckResult:
        """The differences between `msg` (the CNI prevResult) and the kernel."""
        host = host_veth_name(msg.container_id, msg.ifname)
        live = backend.link_get(host)
        record = parse_pod_alias(live.alias) if live is not None else self.pods.get(host)
        if record is not None and record.network != msg.network:
            return PodCheckResult(
                ok=False,
                differences=(f"{host} is attached to network {record.network}, not {msg.network}",),
            )
        bridge = bridge_name(record.attachment, record.vrf) if record else "(unknown)"
        master = ""
        if live is not None and live.master:
            bridge_link = backend.link_get(bridge) if record else None
            if bridge_link is not None and bridge_link.index == live.master:
                master = bridge
            else:
                other = backend.link_get(live.master)
                master = other.name if other is not None else f"#{live.master}"
        pod_side: PodSide | None
        try:
            with closing(backend.open_netns(msg.netns)) as pod:
                link = pod.link_get(msg.ifname)
                pod_side = PodSide(
                    link=link,
                    addresses=pod.addresses(link.index) if link else (),
                    default_gateways=tuple(
                        r.gateway
                        for r in pod.routes(TABLE_MAIN)
                        if r.dst == "0.0.0.0/0" and (link is None or r.oif == link.index)
                    ),
                )
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise
            pod_side = None
        # What the prevResult said: CheckPod's fields of PodExpectation's names.
        said = {f.name: getattr(msg, f.name) for f in fields(PodExpectation) if f.name != "bridge"}
        expected = PodExpectation(**said, bridge=bridge)
        diffs = pod_differences(expected, live, master, pod_side)
        return PodCheckResult(ok=not diffs, differences=diffs)

    def listed(self, backend: NetlinkBackend) -> PlumbedPods:
        """The pods the kernel holds, read afresh."""
        self.read(backend)
        return PlumbedPods(
            pods=tuple(
                PlumbedPod(
                    container_id=record.container_id,
                    ifname=record.ifname,
                    host_ifname=name,
                    vrf=record.vrf,
                    network=record.network,
                    address=record.address,
                )
                for name, record in sorted(self.pods.items())
            )
        )

    def reconcile(self, backend: NetlinkBackend, done: Callable[[str], None]) -> list[PlumbPod]:
        """Put pod veths back on their bridge and up (`done` is told each repair); returns
        the pods plumbed here whose pair is gone, no longer counted as plumbed."""
        links = self.read(backend)
        view = LiveView.build([*links, *backend.links("bridge")], (), (), ())
        self.remember()
        missing = sorted(set(self.plumbed) - set(self.pods))
        for name, record in sorted(self.pods.items()):
            link = view.by_name[name]
            bridge = bridge_name(record.attachment, record.vrf)
            if bridge not in view.by_name:
                continue  # the domain is gone or not there yet
            change = LinkChange(
                master=bridge if view.master_name(link) != bridge else None,
                up=True if not link.up else None,
            )
            if change.empty():
                continue
            if _already(errno.ENODEV, partial(backend.link_set, name, change)):
                continue  # the pod went meanwhile
            done(f"set {name} ({record.container_id}/{record.ifname}) {change.describe()}")
        return [self.plumbed.pop(host) for host in missing]


def _has_master(backend: NetlinkBackend, link: LinkState, bridge: str) -> bool:
    master = backend.link_get(bridge)
    return master is not None and master.index == link.master
