"""A plumbed pod as the kernel records it (the host veth's alias) and as CHECK compares it.

Pure: no I/O.  The alias is the only record of a plumbed pod: a restarted NetlinkActor reads
every host veth's alias back with :func:`parse_pod_alias`, so aliases written by earlier
versions must keep parsing (keep in sync with ``actors/netlink_actor.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

from pyroute2_cni.messages.crd import AttachmentType
from pyroute2_cni.netlink.specs import AddrState, LinkState
from pyroute2_cni.values.attachment import DEFAULT_NETWORK


@dataclass(frozen=True, slots=True, kw_only=True)
class PodAlias:
    """What the host veth's alias records, so a restarted daemon can take inventory."""

    vrf: int
    attachment: AttachmentType
    container_id: str
    ifname: str
    netns: str = ""
    # What the pod was given, so that any later instance can plumb it again ("" in
    # aliases written before these fields existed).
    address: str = ""
    prefixlen: int = 0
    gateway: str = ""
    # Aliases of the default network carry no net= (as before the field existed).
    network: str = DEFAULT_NETWORK


MAX_ALIAS = 255
ALIAS_PREFIX = "pyroute2-cni/v1"


def pod_alias(record: PodAlias) -> str:
    head = (
        f"{ALIAS_PREFIX} vrf={record.vrf} att={record.attachment.value}"
        f" cid={record.container_id} if={record.ifname}"
    )
    if record.network != DEFAULT_NETWORK:
        head += f" net={record.network}"
    if record.address:
        head += f" ip={record.address}/{record.prefixlen} gw={record.gateway}"
    full = f"{head} ns={record.netns}"
    # The netns path is informational: drop it rather than exceed IFALIASZ - 1.
    return full if len(full.encode()) <= MAX_ALIAS else f"{head} ns="


def parse_pod_alias(alias: str) -> PodAlias | None:
    if not alias.startswith(ALIAS_PREFIX + " "):
        return None
    head, sep, netns = alias.partition(" ns=")
    if not sep:
        return None
    fields_: dict[str, str] = {}
    for word in head.split()[1:]:
        key, eq, value = word.partition("=")
        if not eq:
            return None
        fields_[key] = value
    try:
        address, _, prefixlen = fields_.get("ip", "").partition("/")
        return PodAlias(
            vrf=int(fields_["vrf"]),
            attachment=AttachmentType(fields_["att"]),
            container_id=fields_["cid"],
            ifname=fields_["if"],
            netns=netns,
            address=address,
            prefixlen=int(prefixlen) if address else 0,
            gateway=fields_.get("gw", "") if address else "",
            network=fields_.get("net", DEFAULT_NETWORK),
        )
    except (KeyError, ValueError):
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class PodExpectation:
    ifname: str
    address: str
    prefixlen: int
    gateway: str
    mtu: int  # 0: not checked (prevResult without mtu)
    bridge: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PodSide:
    """The pod end as read inside the pod's namespace."""

    link: LinkState | None
    addresses: tuple[AddrState, ...]
    default_gateways: tuple[str, ...]


def pod_differences(
    expected: PodExpectation,
    host: LinkState | None,
    host_master: str,
    pod: PodSide | None,
) -> tuple[str, ...]:
    diffs: list[str] = []
    if host is None:
        diffs.append("host veth is missing")
    else:
        if host_master != expected.bridge:
            diffs.append(f"host veth master is {host_master or 'none'}, want {expected.bridge}")
        if not host.up:
            diffs.append("host veth is down")
        if expected.mtu and host.mtu != expected.mtu:
            diffs.append(f"host veth mtu is {host.mtu}, want {expected.mtu}")
    if pod is None:
        diffs.append("pod network namespace is gone")
        return tuple(diffs)
    if pod.link is None:
        diffs.append(f"{expected.ifname} is missing in the pod")
        return tuple(diffs)
    if not pod.link.up:
        diffs.append(f"{expected.ifname} is down")
    if expected.mtu and pod.link.mtu != expected.mtu:
        diffs.append(f"{expected.ifname} mtu is {pod.link.mtu}, want {expected.mtu}")
    have = {(a.address, a.prefixlen) for a in pod.addresses if a.index == pod.link.index}
    if (expected.address, expected.prefixlen) not in have:
        listed = ", ".join(f"{a}/{p}" for a, p in sorted(have)) or "none"
        diffs.append(
            f"{expected.ifname} lacks {expected.address}/{expected.prefixlen} (has {listed})"
        )
    if expected.gateway not in pod.default_gateways:
        listed = ", ".join(pod.default_gateways) or "none"
        diffs.append(f"default route is not via {expected.gateway} (via {listed})")
    return tuple(diffs)
