"""`make bench-scale`: what pyroute2-cni costs the API server and each node (issue 20).

    .venv/bin/python -m tests.harness.scale_bench [--sizes 10,50,100] [--minutes 10]

One real etcd + kube-apiserver with the project's CRDs.  First a reference window with
nothing attached (what the API server does by itself), then hollow nodes
(tests.harness.hollow: the daemon's real actors, fake kernel and FRR) are added until
each size is reached; after every node is ready and a settle period has passed, a steady
window measures, from the API server's own /metrics:

* requests per node per minute by verb and resource (watches aside, reference
  subtracted), and the LISTs among them;
* watches per node (the API server's registered watchers);
* RSS and CPU of the hollow processes per node, and of one hollow daemon alone in
  its own process (the nearest thing to one real daemon's idle footprint).

At the largest size it then times cluster-wide events until every hollow node has
applied the FRR configuration that follows: a new VRFDomain, a Node joining, that Node
leaving.  Last, the rendered FRR configuration's size and build+render time with 100
peers in full mesh vs 2 route reflectors (tests.harness.render_scale).

Every table says whether the issue's goal holds.  Nothing here is a pass/fail test.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.harness.api_fixtures import install_crds, kubectl
from tests.harness.apiserver import ApiServer
from tests.harness.hollow import HollowNode
from tests.harness.kube_objects import register_node
from tests.harness.render_scale import render_table
from tests.harness.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
GOAL_REQUESTS = 1.0  # per node per minute, watches aside
GOAL_LISTS = 0.0
GOAL_RSS_MB = 80.0
# Long-running verbs: a watch is one request for its whole life.
LONG_RUNNING = {"WATCH", "CONNECT"}
# What the daemon reads or writes.  Requests for anything else (services, endpoints, flow
# control objects) are the API server's own controllers, whose periodic LISTs a reference
# window of a few minutes does not always catch: they are not attributed to the nodes.
DAEMON_RESOURCES = frozenset(
    {
        "pods",
        "nodes",
        "namespaces",
        "leases",
        "events",
        "ipblocks",
        "vrfdomains",
        "vrfdomainbindings",
        "vrfnodeconfigs",
        "vrfnodestates",
    }
)
NAMESPACE_MANIFEST = REPO / "kubernetes" / "releases" / "0.1.0" / "namespace.yaml"
PAGE = 4096


# -- API server metrics ------------------------------------------------------------------


@dataclass(frozen=True)
class ApiSample:
    at: float
    requests: Counter[tuple[str, str]]  # (verb, resource) -> total so far
    watchers: float


def parse_api_metrics(text: str, at: float) -> ApiSample:
    """apiserver_request_total by (verb, resource), resource requests only; the number of
    registered watchers (1.20 and later both)."""
    requests: Counter[tuple[str, str]] = Counter()
    watchers = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "apiserver_request_total":
                resource = sample.labels.get("resource", "")
                if not resource:
                    continue  # /metrics, /healthz: the bench's own probes
                verb = sample.labels.get("verb", "")
                requests[(verb, resource)] += int(sample.value)
            elif sample.name == "apiserver_registered_watchers":
                watchers += sample.value
    return ApiSample(at=at, requests=requests, watchers=watchers)


def rates(before: ApiSample, after: ApiSample) -> dict[tuple[str, str], float]:
    """Requests per minute by (verb, resource) between two samples, watches aside."""
    minutes = (after.at - before.at) / 60
    found = {}
    for key, total in after.requests.items():
        if key[0] in LONG_RUNNING:
            continue
        delta = total - before.requests.get(key, 0)
        if delta > 0:
            found[key] = delta / minutes
    return found


def per_node(
    window: dict[tuple[str, str], float], reference: dict[tuple[str, str], float], nodes: int
) -> dict[tuple[str, str], float]:
    """What the nodes add to the reference, per node (the daemon's resources only)."""
    keys = {k for k in set(window) | set(reference) if k[1] in DAEMON_RESOURCES}
    found = {k: (window.get(k, 0.0) - reference.get(k, 0.0)) / nodes for k in keys}
    return {k: v for k, v in found.items() if v > 0.001}


# -- processes ---------------------------------------------------------------------------


def _proc_stat(pid: int) -> tuple[float, float]:
    """(RSS in MB, CPU seconds so far) of one process."""
    rss = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return rss, (int(fields[11]) + int(fields[12])) / ticks


@dataclass
class Group:
    nodes: list[HollowNode]
    process: subprocess.Popen[bytes]
    events: Path

    @property
    def pid(self) -> int:
        return self.process.pid


@dataclass
class Fleet:
    """The hollow node processes, and their events (one JSON line each) read so far."""

    kubeconfig: str
    workdir: Path
    groups: list[Group] = field(default_factory=list)
    _offsets: dict[Path, int] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def nodes(self) -> list[HollowNode]:
        return [n for g in self.groups for n in g.nodes]

    def spawn(self, nodes: list[HollowNode]) -> Group:
        events = self.workdir / f"events-{len(self.groups)}.jsonl"
        events.touch()
        log = (self.workdir / f"group-{len(self.groups)}.log").open("wb")
        argv = [
            sys.executable,
            "-m",
            "tests.harness.hollow",
            "--kubeconfig",
            self.kubeconfig,
            "--workdir",
            str(self.workdir / "nodes"),
            "--events",
            str(events),
            "--nodes",
            ",".join(f"{n.name}={n.address}" for n in nodes),
        ]
        # The daemon logs at info: keep what a user would see, in a file.
        process = subprocess.Popen(argv, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        group = Group(nodes=nodes, process=process, events=events)
        self.groups.append(group)
        return group

    def read(self) -> list[dict[str, Any]]:
        new: list[dict[str, Any]] = []
        for group in self.groups:
            offset = self._offsets.get(group.events, 0)
            with group.events.open() as stream:
                stream.seek(offset)
                chunk = stream.read()
            # Only whole lines: a writer may be mid-line.
            whole = chunk[: chunk.rfind("\n") + 1]
            self._offsets[group.events] = offset + len(whole)
            new += [json.loads(line) for line in whole.splitlines() if line]
        self.events += new
        return new

    def check_alive(self) -> None:
        for index, group in enumerate(self.groups):
            if group.process.poll() is not None:
                log = (self.workdir / f"group-{index}.log").read_text()[-3000:]
                raise RuntimeError(f"hollow group {index} exited: {log}")

    def ready_nodes(self) -> set[str]:
        self.read()
        state: dict[str, bool] = {}
        for event in self.events:
            if event["event"] == "ready":
                state[event["node"]] = event["ready"]
        return {n for n, ready in state.items() if ready}

    def last_apply(self) -> dict[str, dict[str, Any]]:
        self.read()
        last: dict[str, dict[str, Any]] = {}
        for event in self.events:
            if event["event"] == "frr-apply":
                last[event["node"]] = event
        return last

    def usage(self) -> list[tuple[int, float, float]]:
        """(nodes, RSS MB, CPU seconds) per group."""
        return [(len(g.nodes), *_proc_stat(g.pid)) for g in self.groups]

    def stop(self) -> None:
        for group in self.groups:
            if group.process.poll() is None:
                group.process.send_signal(signal.SIGTERM)
        for group in self.groups:
            try:
                group.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                group.process.kill()
                group.process.wait()


def node_address(index: int) -> str:
    # 100.64.0.0/10 (shared address space): never routed here; hollow peers are never dialled.
    return f"100.64.{index // 250}.{index % 250 + 2}"


def create_node(api: ApiServer, node: HollowNode) -> None:
    import kubernetes.client

    client = api.api_client()
    try:
        core = kubernetes.client.CoreV1Api(client)
        register_node(core, node.name, node.address, "hollow node")
    finally:
        client.close()


def delete_node(api: ApiServer, name: str) -> None:
    import kubernetes.client

    client = api.api_client()
    try:
        kubernetes.client.CoreV1Api(client).delete_node(name)
    finally:
        client.close()


# -- the run -----------------------------------------------------------------------------


def sample(api: ApiServer) -> ApiSample:
    status, body = api.request("/metrics", timeout=30)
    if status != 200:
        raise RuntimeError(f"/metrics answered {status}")
    return parse_api_metrics(body.decode(), time.monotonic())


@dataclass
class Steady:
    nodes: int
    minutes: float
    per_node: dict[tuple[str, str], float]
    watches_per_node: float
    rss_per_node: float
    cpu_per_node: float  # percent of one core
    ready_seconds: float

    @property
    def requests(self) -> float:
        return sum(self.per_node.values())

    @property
    def lists(self) -> float:
        return sum(v for (verb, _r), v in self.per_node.items() if verb == "LIST")


def measure_window(
    api: ApiServer,
    fleet: Fleet,
    minutes: float,
    progress: Callable[[str], None],
) -> tuple[dict[tuple[str, str], float], float, list[tuple[int, float, float]], float]:
    """Rates by (verb, resource), watchers, per-group (nodes, RSS, CPU%), seconds."""
    before = sample(api)
    usage_before = fleet.usage()
    deadline = time.monotonic() + minutes * 60
    while time.monotonic() < deadline:
        fleet.check_alive()
        left = deadline - time.monotonic()
        progress(f"  steady window: {left / 60:.1f} min left")
        time.sleep(min(60.0, max(left, 0.0)))  # a fixed window, not a synchronisation
    after = sample(api)
    usage_after = fleet.usage()
    seconds = after.at - before.at
    usage = [
        (n, rss, 100 * (cpu1 - cpu0) / seconds)
        for (n, _r0, cpu0), (_n, rss, cpu1) in zip(usage_before, usage_after, strict=True)
    ]
    return rates(before, after), after.watchers, usage, seconds


def grow(
    api: ApiServer,
    fleet: Fleet,
    size: int,
    per_process: int,
    progress: Callable[[str], None],
) -> float:
    """Add hollow nodes until there are `size`; seconds until all are ready."""
    start = time.monotonic()
    have = len(fleet.nodes)
    new = [HollowNode(f"hollow-{i:03d}", node_address(i)) for i in range(have, size)]
    for node in new:
        create_node(api, node)
    # Node 0 alone in its process: the one-daemon footprint.
    batches: list[list[HollowNode]] = []
    rest = new
    if have == 0 and rest:
        batches.append(rest[:1])
        rest = rest[1:]
    while rest:
        batches.append(rest[:per_process])
        rest = rest[per_process:]
    for batch in batches:
        fleet.spawn(batch)
    names = {n.name for n in fleet.nodes}

    def all_ready() -> bool:
        fleet.check_alive()
        ready = fleet.ready_nodes()
        progress(f"  {len(ready & names)}/{len(names)} hollow nodes ready")
        return names <= ready

    wait_for(all_ready, 60 + 6 * size, f"{size} hollow nodes ready", interval=5)
    return time.monotonic() - start


def time_event(
    fleet: Fleet,
    what: str,
    act: Callable[[], None],
    done: Callable[[dict[str, Any]], bool],
    timeout: float,
) -> tuple[str, float, int]:
    """(what, seconds until every node's last apply satisfies done, bytes at the end)."""
    names = {n.name for n in fleet.nodes}
    wall = time.time()
    act()

    def everyone() -> bool:
        fleet.check_alive()
        last = fleet.last_apply()
        return all(n in last and last[n]["time"] >= wall and done(last[n]) for n in names)

    wait_for(everyone, timeout, what, interval=0.5)
    finished = max(fleet.last_apply()[n]["time"] for n in names)
    size = max(fleet.last_apply()[n]["bytes"] for n in names)
    return what, finished - wall, size


def apply_domain(api: ApiServer, name: str, vrf: int, prefix: str) -> None:
    manifest = {
        "apiVersion": "cni.pyroute2.org/v1alpha1",
        "kind": "VRFDomain",
        "metadata": {"name": name},
        "spec": {
            "vrf": vrf,
            "table": vrf,
            "prefix": prefix,
            "prefixlen": 16,
            "ipblocklen": 26,
            "attachments": [{"type": "l3vni", "vni": vrf}],
        },
    }
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(manifest, handle)
    try:
        kubectl(api.kubeconfig, "apply", "-f", handle.name)
    finally:
        os.unlink(handle.name)


def cluster_events(api: ApiServer, fleet: Fleet) -> list[tuple[str, float, int]]:
    n = len(fleet.nodes)
    joiner = HollowNode("joiner-000", node_address(n))
    timeout = 120 + 2 * n
    return [
        time_event(
            fleet,
            "a new VRFDomain (vrf-77)",
            lambda: apply_domain(api, "vrf-77", 77, "10.77.0.0"),
            lambda e: "vrf-77" in e["vrfs"],
            timeout,
        ),
        time_event(
            fleet,
            "a Node joins",
            lambda: create_node(api, joiner),
            lambda e: e["neighbors"] == n,
            timeout,
        ),
        time_event(
            fleet,
            "a Node leaves",
            lambda: delete_node(api, joiner.name),
            lambda e: e["neighbors"] == n - 1,
            timeout,
        ),
    ]


# -- output ------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "holds" if ok else "MISSED"


def steady_table(reference: dict[tuple[str, str], float], runs: Sequence[Steady]) -> str:
    lines = [
        "## 1. Steady state (hollow nodes, real API server)",
        "",
        f"reference (API server alone): {sum(reference.values()):.2f} requests/min",
        "",
        "| nodes | window min | req/node/min | LIST/node/min | watches/node"
        " | RSS MB/node | CPU %/node | all ready s |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for run in runs:
        lines.append(
            f"| {run.nodes} | {run.minutes:.1f} | {run.requests:.2f} | {run.lists:.2f}"
            f" | {run.watches_per_node:.1f} | {run.rss_per_node:.1f}"
            f" | {run.cpu_per_node:.2f} | {run.ready_seconds:.0f} |"
        )
    if runs:
        last = runs[-1]
        lines += ["", f"by verb and resource at {last.nodes} nodes (per node per minute):"]
        for (verb, resource), value in sorted(last.per_node.items(), key=lambda kv: -kv[1]):
            lines.append(f"  {verb:7s} {resource:22s} {value:.3f}")
        lines += [
            "",
            f"goal <= {GOAL_REQUESTS:g} request/node/min: {verdict(last.requests <= GOAL_REQUESTS)}"
            f" ({last.requests:.2f})",
            f"goal {GOAL_LISTS:g} LISTs after start: {verdict(last.lists <= GOAL_LISTS)}"
            f" ({last.lists:.2f}/node/min)",
        ]
    return "\n".join(lines)


def rss_line(alone_mb: float) -> str:
    return (
        f"one hollow daemon alone in its process: {alone_mb:.1f} MB RSS; goal <= "
        f"{GOAL_RSS_MB:g} MB per idle daemon: {verdict(alone_mb <= GOAL_RSS_MB)}"
    )


def events_table(nodes: int, events: Iterable[tuple[str, float, int]]) -> str:
    lines = [
        f"## 3. Cluster-wide events at {nodes} hollow nodes",
        "",
        "| event | until every node applied FRR, s | frr.conf bytes |",
        "| --- | ---: | ---: |",
    ]
    for what, seconds, size in events:
        lines.append(f"| {what} | {seconds:.1f} | {size} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,50,100", help="node counts, ascending")
    parser.add_argument(
        "--minutes", type=float, default=10.0, help="steady window at the largest size"
    )
    parser.add_argument(
        "--small-minutes", type=float, default=3.0, help="steady window at the other sizes"
    )
    parser.add_argument("--reference-minutes", type=float, default=2.0)
    parser.add_argument(
        "--settle", type=float, default=90.0, help="seconds after ready before a window"
    )
    parser.add_argument("--per-process", type=int, default=50)
    parser.add_argument("--skip-events", action="store_true")
    args = parser.parse_args(argv)
    sizes = sorted(int(s) for s in args.sizes.split(","))
    began = time.monotonic()

    def progress(text: str) -> None:
        print(f"[{time.monotonic() - began:6.0f} s] {text}", file=sys.stderr, flush=True)

    out: list[str] = []
    with tempfile.TemporaryDirectory(prefix="scale-bench-") as tmp, ApiServer() as api:
        install_crds(api.kubeconfig)
        # The release's namespace: where the daemons keep the IPAM reclaimer Lease.
        kubectl(api.kubeconfig, "apply", "-f", str(NAMESPACE_MANIFEST))
        progress(f"reference window, {args.reference_minutes:g} min")
        before = sample(api)
        time.sleep(args.reference_minutes * 60)  # a fixed window, not a synchronisation
        after = sample(api)
        reference = rates(before, after)
        # The API server's own watchers (its caches), which nodes do not add.
        own_watchers = after.watchers
        fleet = Fleet(kubeconfig=api.kubeconfig, workdir=Path(tmp))
        runs: list[Steady] = []
        alone = 0.0
        try:
            for size in sizes:
                progress(f"growing to {size} hollow nodes")
                ready = grow(api, fleet, size, args.per_process, progress)
                progress(f"all {size} ready after {ready:.0f} s; settling {args.settle:g} s")
                time.sleep(args.settle)  # let start-up traffic pass; not a synchronisation
                minutes = args.minutes if size == sizes[-1] else args.small_minutes
                window, watchers, usage, _seconds = measure_window(api, fleet, minutes, progress)
                nodes = len(fleet.nodes)
                alone = usage[0][1]
                runs.append(
                    Steady(
                        nodes=nodes,
                        minutes=minutes,
                        per_node=per_node(window, reference, nodes),
                        watches_per_node=(watchers - own_watchers) / nodes,
                        rss_per_node=sum(u[1] for u in usage) / nodes,
                        cpu_per_node=sum(u[2] for u in usage) / nodes,
                        ready_seconds=ready,
                    )
                )
                print(steady_table(reference, runs[-1:]), file=sys.stderr, flush=True)
            out += [steady_table(reference, runs), "", rss_line(alone), ""]
            if not args.skip_events:
                progress("cluster-wide events")
                out += [events_table(len(fleet.nodes), cluster_events(api, fleet)), ""]
        finally:
            fleet.stop()
    out.append(render_table())
    print("\n".join(out))
    progress("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
