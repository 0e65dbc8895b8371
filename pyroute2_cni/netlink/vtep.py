"""The VXLAN underlay endpoint (VTEP) of this node, chosen from what the kernel reports.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pyroute2_cni.messages.crd import VrfNodeConfigSpec
from pyroute2_cni.messages.netlink import Vtep
from pyroute2_cni.netlink.specs import AddrState, LinkState, RouteState


def primary_ipv4(index: int, addresses: Iterable[AddrState]) -> str:
    for addr in addresses:
        if addr.index == index and not addr.secondary:
            return addr.address
    return ""


def choose_vtep(
    *,
    node: str,
    node_configs: Iterable[VrfNodeConfigSpec],
    configured_interface: str,
    links: Sequence[LinkState],
    addresses: Sequence[AddrState],
    main_routes: Sequence[RouteState],
) -> Vtep | None:
    """The VXLAN underlay endpoint.

    Order: this node's VRFNodeConfig interfaces (first one), then [netlink]
    vtep_interface, then the interface of the default route in the main table.
    """
    by_name = {link.name: link for link in links}
    by_index = {link.index: link for link in links}
    for config in node_configs:
        if config.node != node or not config.interfaces:
            continue
        iface = config.interfaces[0]
        link = by_name.get(iface.name)
        local = iface.local or (primary_ipv4(link.index, addresses) if link else "")
        if local:
            return Vtep(interface=iface.name, local=local, mtu=link.mtu if link else 0)
    if configured_interface:
        link = by_name.get(configured_interface)
        if link is None:
            return None
        local = primary_ipv4(link.index, addresses)
        return Vtep(interface=link.name, local=local, mtu=link.mtu) if local else None
    defaults = sorted(
        (r for r in main_routes if r.dst == "0.0.0.0/0" and r.type == "unicast" and r.oif),
        key=lambda r: r.metric,
    )
    for route in defaults:
        link = by_index.get(route.oif)
        if link is None:
            continue
        local = primary_ipv4(link.index, addresses)
        if local:
            return Vtep(interface=link.name, local=local, mtu=link.mtu)
    return None
