"""Every Prometheus metric the daemon exports, on one registry owned by main.

Labels stay low-cardinality (actor, verb, result, state, vrf).  Gauges are set
from actor state as it changes, never computed by API calls at scrape time.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

# CNI requests are tens of milliseconds; a slow ADD (block claim) a few seconds.
REQUEST_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        self.actor_restarts = Counter(
            "pyroute2_cni_actor_restarts",
            "Actor instances replaced by the supervisor after a crash or a missed heartbeat",
            ["actor"],
            registry=r,
        )
        self.actor_ready = Gauge(
            "pyroute2_cni_actor_ready", "1 when the actor reports ready", ["actor"], registry=r
        )
        self.evpn_held = Gauge(
            "pyroute2_cni_evpn_held_entries",
            "Kernel entries of absent BGP peers kept while their FRR restarts",
            registry=r,
        )
        self.evpn_released = Counter(
            "pyroute2_cni_evpn_released",
            "Held EVPN entries removed, by reason",
            ["reason"],
            registry=r,
        )
        self.requests = Counter(
            "pyroute2_cni_requests",
            "CNI requests served, by verb and result (ok or the CNI error code)",
            ["verb", "result"],
            registry=r,
        )
        self.request_duration = Histogram(
            "pyroute2_cni_request_duration_seconds",
            "CNI request latency inside the daemon, by verb",
            ["verb"],
            buckets=REQUEST_BUCKETS,
            registry=r,
        )
        # Where an ADD's time goes: the address (API server writes) or the interfaces (kernel).
        self.add_phase_duration = Histogram(
            "pyroute2_cni_add_phase_seconds",
            "Time of each ADD phase inside the daemon: ipam (address) or netlink (interfaces)",
            ["phase"],
            buckets=REQUEST_BUCKETS,
            registry=r,
        )
        # A pass reads every link, address, route and neighbour it owns: its time grows with
        # the pods and VRFs on the node (the sizing guide's reconcile line comes from here).
        self.netlink_reconcile_duration = Histogram(
            "pyroute2_cni_netlink_reconcile_seconds",
            "Time of one NetlinkActor reconcile pass (kernel state checked and repaired)",
            buckets=REQUEST_BUCKETS,
            registry=r,
        )
        self.ipam_blocks = Gauge(
            "pyroute2_cni_ipam_blocks", "IP blocks held by this node", ["vrf"], registry=r
        )
        self.ipam_addresses = Gauge(
            "pyroute2_cni_ipam_addresses",
            "Addresses allocated to pods in this node's blocks",
            ["vrf"],
            registry=r,
        )
        # A pool's use is sum(pyroute2_cni_ipam_blocks) over the nodes (each block has one
        # owner) against this: no node needs to LIST the cluster's blocks to know it.
        self.ipam_domain_blocks = Gauge(
            "pyroute2_cni_ipam_domain_blocks",
            "Blocks a VRFDomain's range holds (its pool, in blocks of its ipblocklen)",
            ["vrf"],
            registry=r,
        )
        self.ipam_free_addresses = Gauge(
            "pyroute2_cni_ipam_free_addresses",
            "Free pod addresses in this node's blocks",
            ["vrf"],
            registry=r,
        )
        self.ipam_exhausted = Counter(
            "pyroute2_cni_ipam_exhausted",
            "Allocations refused because every block of the VRFDomain is full or held by "
            "other nodes",
            ["vrf"],
            registry=r,
        )
        self.ipam_api_writes = Counter(
            "pyroute2_cni_ipam_api_writes", "Kubernetes API writes made by IPAM", ["op"], registry=r
        )
        self.ipam_api_lists = Counter(
            "pyroute2_cni_ipam_api_lists", "Kubernetes API LIST calls made by IPAM", registry=r
        )
        self.frr_reloads = Counter(
            "pyroute2_cni_frr_reloads",
            "FRR configuration reloads, by result (ok, unchanged, invalid, failed)",
            ["result"],
            registry=r,
        )
        self.frr_restores = Counter(
            "pyroute2_cni_frr_restores",
            "Last good FRR configurations put back after a failed reload, by result "
            "(verified: frr-reload.py --test finds no difference; failed)",
            ["result"],
            registry=r,
        )
        self.frr_drift = Counter(
            "pyroute2_cni_frr_drift",
            "Times FRR ran something other than the configuration applied last (a daemon "
            "restarted without it, a change by hand) and it was applied again",
            registry=r,
        )
        self.bgp_established_seconds = Gauge(
            "pyroute2_cni_bgp_established_seconds",
            "Seconds since the latest of this node's Established BGP sessions came up; "
            "0 while none is Established or bgpd does not answer (peers read it when "
            "route reflectors hide a restart from them)",
            registry=r,
        )
        self.frr_zebra_uptime_seconds = Gauge(
            "pyroute2_cni_frr_zebra_uptime_seconds",
            "Seconds since this node's zebra started; 0 while it does not answer (peers "
            "read it: routes withdrawn while zebra restarts come back without a session "
            "going down)",
            registry=r,
        )
        self.bgp_sessions = Gauge(
            "pyroute2_cni_bgp_sessions",
            "BGP sessions of this node, by state",
            ["state"],
            registry=r,
        )
        self.evpn_vnis_expected = Gauge(
            "pyroute2_cni_evpn_vnis_expected",
            "VNIs (l3vni and l2vni) this node's FRR configuration declares",
            registry=r,
        )
        self.evpn_vnis_known = Gauge(
            "pyroute2_cni_evpn_vnis_known",
            "Of those, the VNIs zebra knows with the expected VRF (0 while zebra does not "
            "answer); the VXLAN devices of the others stay down",
            registry=r,
        )
        self.node_condition_writes = Counter(
            "pyroute2_cni_node_condition_writes",
            "Writes of the Node's Pyroute2CNIReady condition (only on a change), by result",
            ["result"],
            registry=r,
        )
        self.node_state_writes = Counter(
            "pyroute2_cni_node_state_writes",
            "Writes of this node's VRFNodeState status (only on a change, at most one per "
            "[daemon] node_state_min_interval), by result",
            ["result"],
            registry=r,
        )
        self.vrfdomains_known = Gauge(
            "pyroute2_cni_vrfdomains_known",
            "VRFDomains this node's CNI server knows (what ADDs pick VRFs from)",
            registry=r,
        )
        self.bindings_known = Gauge(
            "pyroute2_cni_bindings_known",
            "Namespaces bound by a VRFDomainBinding that this node's CNI server knows",
            registry=r,
        )
        self.event_writes = Counter(
            "pyroute2_cni_event_writes",
            "Kubernetes Event writes (creates and count updates, at most one per series per "
            "interval), by result",
            ["result"],
            registry=r,
        )
        self.netlink_repairs = Counter(
            "pyroute2_cni_netlink_repairs",
            "Kernel objects recreated or corrected by reconcile",
            ["kind"],
            registry=r,
        )
