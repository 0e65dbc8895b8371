"""The scale bench's arithmetic and its hollow FRR (issue 20)."""

from __future__ import annotations

from collections import Counter

import pytest

from tests.harness.hollow import HollowFrr, parse_nodes
from tests.harness.scale_bench import ApiSample, parse_api_metrics, per_node, rates

pytestmark = pytest.mark.unit

METRICS = """\
# HELP apiserver_request_total Counter of apiserver requests.
# TYPE apiserver_request_total counter
apiserver_request_total{code="200",resource="pods",verb="LIST"} 7
apiserver_request_total{code="200",resource="pods",verb="WATCH"} 3
apiserver_request_total{code="200",resource="leases",verb="GET"} 5
apiserver_request_total{code="404",resource="leases",verb="GET"} 2
apiserver_request_total{code="200",resource="",verb="GET"} 99
# HELP apiserver_registered_watchers Number of currently registered watchers.
# TYPE apiserver_registered_watchers gauge
apiserver_registered_watchers{group="",kind="Pod",version="v1"} 4
apiserver_registered_watchers{group="",kind="Node",version="v1"} 6
"""


def test_metrics_are_summed_by_verb_and_resource_without_non_resource_requests() -> None:
    parsed = parse_api_metrics(METRICS, at=10.0)
    assert parsed.requests == Counter(
        {("LIST", "pods"): 7, ("WATCH", "pods"): 3, ("GET", "leases"): 7}
    )
    assert parsed.watchers == 10


def test_rates_are_per_minute_and_leave_watches_aside() -> None:
    before = ApiSample(at=0.0, requests=Counter({("GET", "leases"): 10}), watchers=0)
    after = ApiSample(
        at=120.0,
        requests=Counter({("GET", "leases"): 30, ("WATCH", "pods"): 50, ("LIST", "pods"): 4}),
        watchers=0,
    )
    assert rates(before, after) == {("GET", "leases"): 10.0, ("LIST", "pods"): 2.0}


def test_per_node_subtracts_the_reference_and_drops_what_nodes_do_not_add() -> None:
    window = {("GET", "leases"): 21.0, ("GET", "namespaces"): 1.0, ("LIST", "services"): 3.0}
    reference = {("GET", "namespaces"): 1.0, ("GET", "pods"): 0.5}
    # services: the API server's own controllers, never the daemon's.
    assert per_node(window, reference, nodes=10) == {("GET", "leases"): 2.1}


CONFIG = """\
router bgp 65000
 neighbor node-peers peer-group
 neighbor 100.64.0.3 peer-group node-peers
 neighbor 100.64.0.4 peer-group node-peers
"""
BINDINGS = "vrf vrf-42\n vni 42\nexit-vrf\n!\nvrf vrf-77\n vni 77\nexit-vrf\n"


def test_hollow_frr_reports_configured_neighbours_established_since_their_first_apply() -> None:
    now = [100.0]
    events: list[dict[str, object]] = []
    frr = HollowFrr("n1", events.append, clock=lambda: now[0])
    assert frr.apply(CONFIG, BINDINGS).ok
    now[0] = 160.0
    frr.apply(CONFIG.replace(" neighbor 100.64.0.4 peer-group node-peers\n", ""), BINDINGS)
    now[0] = 200.0
    state = frr.state()
    assert state.sessions == {"100.64.0.3": "Established"}
    assert state.uptimes == {"100.64.0.3": 100.0}  # up since the first apply, not reset
    assert state.l3vnis == {"vrf-42": 42, "vrf-77": 77}
    assert [e["neighbors"] for e in events] == [2, 1]
    assert events[-1]["vrfs"] == ["vrf-42", "vrf-77"]
    assert frr.running_config() == CONFIG.replace(
        " neighbor 100.64.0.4 peer-group node-peers\n", ""
    )


def test_node_lists_parse() -> None:
    nodes = parse_nodes("a=100.64.0.2,b=100.64.0.3,")
    assert [(n.name, n.address, n.gateway) for n in nodes] == [
        ("a", "100.64.0.2", "100.64.0.1"),
        ("b", "100.64.0.3", "100.64.0.1"),
    ]
