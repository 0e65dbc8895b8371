"""Names, MACs and MTU of the data plane devices, derived from their identity.

Pure: no I/O.  Invariants (keep in sync with ``netlink.pods`` and ``actors/netlink_actor.py``):

- Every interface name is at most 15 characters: ``vrf-<vrf>`` (vrf ≤ 65535),
  ``l3br-<vrf>``/``l2br-<vrf>``, ``l3vx-<vni>``/``l2vx-<vni>`` (vni ≤ 16777215) and pod host
  veths ``p2c`` + 12 hex digits of sha256(container id, ifname).
- MACs are derived, never random, so that recreating a device restores the same address:
  locally administered unicast (first octet ``x2``/``x6``/``xA``/``xE``).  The l3 bridge
  MAC is the EVPN router MAC and differs per node; the l2 bridge MAC is the distributed
  anycast gateway MAC and is the same on every node (pods keep one gateway MAC).
"""

from __future__ import annotations

import hashlib
import re

from pyroute2_cni.messages.crd import AttachmentType

IFNAMSIZ = 15
VXLAN_OVERHEAD = 50
DEFAULT_UNDERLAY_MTU = 1500
HOST_VETH_PREFIX = "p2c"

_VRF_RE = re.compile(r"^vrf-(\d+)$")
_BRIDGE_RE = re.compile(r"^(l[23])br-(\d+)$")
_VXLAN_RE = re.compile(r"^(l[23])vx-(\d+)$")
_HOST_VETH_RE = re.compile(r"^p2c[0-9a-f]{12}$")
# CNI spec: container id alphanumerics, hyphen, underscore, period.
_CONTAINER_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")

# Also the order in which a domain's attachments get their devices (l2 first).
KIND_PREFIX = {AttachmentType.L3VNI: "l3", AttachmentType.L2VNI: "l2"}


# -- names ------------------------------------------------------------------------


def vrf_name(vrf: int) -> str:
    return f"vrf-{vrf}"


def bridge_name(kind: AttachmentType, vrf: int) -> str:
    return f"{KIND_PREFIX[kind]}br-{vrf}"


def vxlan_name(kind: AttachmentType, vni: int) -> str:
    return f"{KIND_PREFIX[kind]}vx-{vni}"


def host_veth_name(container_id: str, ifname: str) -> str:
    digest = hashlib.sha256(f"{container_id}/{ifname}".encode()).hexdigest()
    return HOST_VETH_PREFIX + digest[:12]


def is_host_veth_name(name: str) -> bool:
    return bool(_HOST_VETH_RE.match(name))


def is_fabric_name(name: str) -> bool:
    """True for names this daemon gives to VRFs, bridges and VXLANs."""
    return bool(_VRF_RE.match(name) or _BRIDGE_RE.match(name) or _VXLAN_RE.match(name))


def fabric_vrf_of(name: str) -> int | None:
    """The VRF id a VRF or bridge name encodes (None for VXLANs and foreign names)."""
    for pattern, group in ((_VRF_RE, 1), (_BRIDGE_RE, 2)):
        m = pattern.match(name)
        if m:
            return int(m.group(group))
    return None


def vxlan_vni_of(name: str) -> int | None:
    m = _VXLAN_RE.match(name)
    return int(m.group(2)) if m else None


def valid_ifname(name: str) -> bool:
    """Linux (and CNI) rules for an interface name."""
    return (
        0 < len(name.encode()) <= IFNAMSIZ
        and name not in (".", "..")
        and not any(c in name for c in "/:")
        and not any(c.isspace() for c in name)
    )


def valid_container_id(container_id: str) -> bool:
    return 0 < len(container_id) <= 128 and bool(_CONTAINER_ID_RE.match(container_id))


# -- MACs and MTU -----------------------------------------------------------------


def stable_mac(*parts: str) -> str:
    """A locally administered unicast MAC derived from `parts`."""
    digest = bytearray(hashlib.sha256("\0".join(parts).encode()).digest()[:6])
    digest[0] = (digest[0] & 0xFC) | 0x02
    return ":".join(f"{b:02x}" for b in digest)


def vrf_mac(node: str, vrf: int) -> str:
    return stable_mac("vrf", node, str(vrf))


def bridge_mac(node: str, kind: AttachmentType, vrf: int, vni: int) -> str:
    if kind is AttachmentType.L2VNI:
        # Distributed anycast gateway: the same on every node.
        return stable_mac("l2gw", str(vrf), str(vni))
    # EVPN router MAC: per node.
    return stable_mac("l3br", node, str(vrf), str(vni))


def vxlan_mac(node: str, vni: int) -> str:
    return stable_mac("vxlan", node, str(vni))


def pod_macs(node: str, container_id: str, ifname: str) -> tuple[str, str]:
    """(host side, pod side) MACs of a pod's veth pair."""
    return (
        stable_mac("pod-host", node, container_id, ifname),
        stable_mac("pod", node, container_id, ifname),
    )


def pod_mtu(configured: int, underlay: int | None) -> int:
    """MTU of every data plane device: the configured value, else underlay - 50."""
    if configured:
        return configured
    base = underlay if underlay else DEFAULT_UNDERLAY_MTU
    return base - VXLAN_OVERHEAD


def normalize_mac(mac: str) -> str:
    return mac.lower()
