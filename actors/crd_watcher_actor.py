"""CRDWatcherActor: the cluster state every other actor builds on.

It owns five watch pumps (pyroute2_cni.kube.pump), keeps the last known
VRFDomains, VRFDomainBindings, VRFNodeConfigs, Nodes and Namespaces, validates
the VRFDomains (pyroute2_cni.kube.crd_validate) and tells every subscriber:

- one :class:`ClusterSnapshot` after the initial lists of all five resources,
  and another after any relist (a watch that expired with 410);
- a :class:`ClusterObjectChanged` / :class:`NamespaceChanged` for every change
  in between.  Only ACCEPTED VRFDomains are published: a domain that becomes
  rejected is published as DELETED, one that becomes accepted as ADDED.  A
  change that leaves the typed value unchanged (a status write, a Node
  heartbeat) is not published.

It also writes the Accepted and Ready conditions and status.acceptedCut of every
VRFDomain (only when they differ from what the object says, conditional on its
resourceVersion; a 409 means another node wrote first and the next event
re-evaluates), and
creates the default VRFDomain ``vrf-<vrf>`` from ``[default]`` when none exists
after the initial list (a fixed name, so when every node starts at once one
create wins and the others' 409 AlreadyExists counts as success).

Invariants:

- Readiness means the initial lists of all five resources arrived.
- Subscribers see events only after they got a snapshot; a restarted
  subscriber asks for one with :class:`SendSnapshot`.
- State is rebuilt from the API in on_start, never carried over from a dead
  instance.
- A VRFDomain whose vrf/prefix/prefixlen/ipblocklen differ from the cut its
  IPBlocks were made from (status.acceptedCut, else what this instance
  published) is checked against the IPBlocks, listed then and every
  ``recut_recheck`` seconds while the change is refused: subscribers go on
  seeing the old cut (PrefixChangeRefused, see crd_validate) until no block is
  left outside the new one.  This is the fallback for API servers that do not
  run the CRD's CEL immutability rules (before 1.25).

Not done here yet: FRRActor's FrrApplyReported is accepted and logged, but not
written to this node's VRFNodeConfig status (accepted/ready, FrrApplied).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import pykka

from pyroute2_cni.actors.address import Address
from pyroute2_cni.actors.base import ActorHooks, BaseActor
from pyroute2_cni.ipam.store import BlockStore, KubeBlockStore, StoreError
from pyroute2_cni.kube.crd_validate import (
    REASON_PREFIX_CHANGE_REFUSED,
    BlockCut,
    DomainCandidate,
    LiveBlock,
    Verdict,
    validate_domains,
)
from pyroute2_cni.kube.crd_writer import (
    CONDITION_ACCEPTED,
    DesiredCondition,
    DomainWriter,
    desired_conditions,
    merged_conditions,
)
from pyroute2_cni.kube.objects import (
    DEFAULT_VXLAN_PORT,
    Condition,
    DomainObject,
    Resource,
    WatchedObject,
    utc_now,
)
from pyroute2_cni.kube.pump import (
    PumpFailed,
    PumpMessage,
    ResourceChanged,
    ResourceListed,
    WatchHook,
    WatchPumps,
)
from pyroute2_cni.kube.transport import ApiError, KubeApi, KubernetesApi, WatchTimings
from pyroute2_cni.messages.base import Ok, Recipient
from pyroute2_cni.messages.crd import (
    Attachment,
    AttachmentType,
    ChangeKind,
    ClusterObjectChanged,
    ClusterSnapshot,
    NamespaceChanged,
    NodeInfo,
    SendSnapshot,
    VrfDomainBindingSpec,
    VrfDomainSpec,
    VrfNodeConfigSpec,
)
from pyroute2_cni.messages.events import RecordEvent
from pyroute2_cni.messages.frr import FrrApplyReported
from pyroute2_cni.runtime.config import Settings


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryWrites:
    """Timer tick: retry the default VRFDomain creation and failed status writes."""


def _same_domain(a: VrfDomainSpec, b: VrfDomainSpec) -> bool:
    return replace(a, resource_version="") == replace(b, resource_version="")


def default_domain(settings: Settings) -> VrfDomainSpec:
    """The VRFDomain created when none exists: ``vrf-<vrf>`` from [default]."""
    d = settings.default
    return VrfDomainSpec(
        name=f"vrf-{d.vrf}",
        vrf=d.vrf,
        table=d.table_id,
        prefix=d.prefix,
        prefixlen=d.prefixlen,
        ipblocklen=d.ipblocklen,
        attachments=(
            Attachment(
                type=AttachmentType(d.system_vrf_type), vni=d.vni_id, port=DEFAULT_VXLAN_PORT
            ),
        ),
    )


def live_blocks(store: BlockStore) -> tuple[LiveBlock, ...]:
    """Every IPBlock of the cluster (one LIST) as re-cut checks need it; raises StoreError."""
    return tuple(
        LiveBlock(name=b.name, cidr=b.cidr, vrf=b.vrf, pods=b.pod_count)
        for b in store.list_blocks()
    )


class CRDWatcherActor(BaseActor):
    actor_name = "crd-watcher"

    def __init__(
        self,
        hooks: ActorHooks,
        *,
        settings: Settings,
        api_factory: Callable[[], Any],
        subscribers: Sequence[Address],
        timings: WatchTimings | None = None,
        edge_factory: Callable[[], KubeApi] | None = None,
        control: WatchHook | None = None,
        block_lister: Callable[[], Iterable[LiveBlock]] | None = None,
        events: Address | None = None,
    ) -> None:
        """`api_factory` returns a kubernetes ApiClient; each pump and the writer get one.

        `edge_factory` replaces the whole API edge (unit tests pass a fake);
        `control` is the test hook that cuts streams (tests/harness/watch_control.py).
        `block_lister` lists the IPBlocks (raises StoreError); by default an
        IPBlock store on `api_factory`, or no blocks at all when `edge_factory`
        is given without it.
        """
        super().__init__(hooks)
        self._settings = settings
        self._events = events
        self._subscribers = tuple(subscribers)
        self._timings = timings if timings is not None else WatchTimings()
        if edge_factory is None:
            timings_ = self._timings

            def edge_factory() -> KubeApi:
                return KubernetesApi(api_factory(), timings_)

        self._edge_factory = edge_factory
        self._control = control
        self._api_factory = api_factory
        self._block_lister = block_lister
        self._block_store: KubeBlockStore | None = None
        self._own_block_store = block_lister is None and edge_factory is None
        self._writer: DomainWriter | None = None
        self._pumps: WatchPumps | None = None
        self._timer: threading.Timer | None = None
        self._timer_lock = threading.Lock()
        # Cluster state, rebuilt from the API by every new instance.
        self._listed: set[Resource] = set()
        self._synced = False
        self._domains: dict[str, DomainObject] = {}
        self._objects: dict[Resource, dict[str, WatchedObject]] = {
            resource: {} for resource in Resource if resource is not Resource.VRF_DOMAIN
        }
        self._accepted: dict[str, VrfDomainSpec] = {}
        self._verdicts: dict[str, Verdict] = {}
        self._snapshot_requests: list[Recipient] = []
        self._default_pending = False
        # name -> resourceVersion at which a write failed permanently (not retried
        # until the object changes).
        self._write_failed: dict[str, str] = {}
        self._retry_failures = 0
        # name -> ((generation, conditions), monotonic time) of this instance's
        # last status write.
        self._last_write: dict[str, tuple[tuple[int, tuple[DesiredCondition, ...]], float]] = {}
        self._frr_report: FrrApplyReported | None = None
        # Names whose change of cut is refused: re-checked on a timer.
        self._recut_refused: set[str] = set()

    # -- lifecycle -----------------------------------------------------------------------
    def on_start(self) -> None:
        self.set_ready(False, "listing " + ", ".join(r.value for r in Resource))
        self._writer = DomainWriter(self._edge_factory())
        if self._own_block_store:
            self._block_store = KubeBlockStore(self._api_factory())
        ref = self.actor_ref
        log = self.log

        def sink(message: PumpMessage) -> None:
            try:
                ref.tell(message)
            except pykka.ActorDeadError:
                log.debug("actor stopped; dropped %s", type(message).__name__)

        self._pumps = WatchPumps(
            self._edge_factory,
            sink,
            timings=self._timings,
            control=self._control,
            name=self.hooks.name,
        )
        self._pumps.start()

    def release(self) -> None:
        with self._timer_lock:
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        if self._pumps is not None and not self._pumps.stop():
            self.log.warning("watch pumps did not stop within %gs", self._timings.stop_timeout)
        if self._writer is not None:
            self._writer.api.close()
        if self._block_store is not None:
            self._block_store.close()

    # -- dispatch ------------------------------------------------------------------------
    def handle(self, message: Any) -> Any:
        match message:
            case ResourceListed():
                self._on_listed(message)
                return None
            case ResourceChanged():
                self._on_changed(message)
                return None
            case PumpFailed(resource=resource, error=error):
                raise RuntimeError(f"the {resource.value} watch pump failed: {error}")
            case SendSnapshot(to=to):
                if self._synced:
                    to.tell(self._snapshot())
                else:
                    self._snapshot_requests.append(to)
                return Ok()
            case FrrApplyReported():
                self._on_frr_report(message)
                return None
            case RetryWrites():
                with self._timer_lock:
                    self._timer = None
                if self._recut_refused:
                    # Re-list the IPBlocks: drained ones let the change through.
                    self._recompute_domains()
                else:
                    self._reconcile_writes()
                return None
            case _:
                return self.unknown(message)

    def _on_frr_report(self, report: FrrApplyReported) -> None:
        # A change of outcome is logged and written to this node's VRFNodeConfig
        # status (condition FrrApplied), when the node has one.
        previous, self._frr_report = self._frr_report, report
        changed = previous is None or (previous.ok, previous.reason) != (report.ok, report.reason)
        if changed:
            self._write_frr_condition(report)
        if self._events is not None and previous is not None and previous.ok != report.ok:
            # On the Node: `kubectl describe node` is where one looks first.
            self._events.tell(
                RecordEvent(
                    kind="Node",
                    name=report.node,
                    reason="FrrApplyFailed" if not report.ok else "FrrApplied",
                    message=f"FRR apply on {report.node}: {report.reason}: {report.message}",
                    warning=not report.ok,
                )
            )
        if previous is None or previous.ok != report.ok:
            level = self.log.info if report.ok else self.log.warning
            level(
                "FRR apply on %s: %s (%s) %s",
                report.node,
                "ok" if report.ok else "failed",
                report.reason,
                report.message,
            )

    def _write_frr_condition(self, report: FrrApplyReported) -> None:
        if self._writer is None:
            return
        config = next(
            (
                o
                for o in self._objects[Resource.VRF_NODE_CONFIG].values()
                if isinstance(o, VrfNodeConfigSpec) and o.node == report.node
            ),
            None,
        )
        if config is None:
            return
        condition = Condition(
            type="FrrApplied",
            status="True" if report.ok else "False",
            reason=report.reason,
            message=report.message or report.reason,
            last_transition_time=utc_now(),
        )
        try:
            self._writer.write_node_config_status(
                config.name, accepted=True, ready=report.ok, conditions=[condition]
            )
        except ApiError as exc:
            self.log.warning("cannot write the status of VRFNodeConfig %s: %s", config.name, exc)

    # -- state ---------------------------------------------------------------------------
    def _on_listed(self, message: ResourceListed) -> None:
        resource = message.resource
        if resource is Resource.VRF_DOMAIN:
            self._domains = {o.name: o for o in message.objects if isinstance(o, DomainObject)}
            self._recompute_domains()
        else:
            old = self._objects[resource]
            new = {o.name: o for o in message.objects}
            self._objects[resource] = new
            if self._synced:
                for name in sorted(old.keys() | new.keys()):
                    self._publish_change(resource, name, old.get(name), new.get(name))
        self._listed.add(resource)
        if not self._synced:
            missing = [r.value for r in Resource if r not in self._listed]
            if missing:
                self.set_ready(False, "listing " + ", ".join(missing))
            else:
                self._on_synced()
        elif message.relist:
            self.log.info("relisted %s; publishing a fresh snapshot", resource.value)
            self._publish(self._snapshot())

    def _on_synced(self) -> None:
        self._synced = True
        self.set_ready(True, "watching " + ", ".join(r.value for r in Resource))
        snapshot = self._snapshot()
        self._publish(snapshot)
        for requester in self._snapshot_requests:
            requester.tell(snapshot)
        self._snapshot_requests.clear()
        if not self._domains:
            self._default_pending = True
        self._reconcile_writes()

    def _on_changed(self, message: ResourceChanged) -> None:
        resource, name = message.resource, message.name
        # An unreadable object (obj None) counts as absent.
        new = None if message.kind is ChangeKind.DELETED else message.obj
        if resource is Resource.VRF_DOMAIN:
            if isinstance(new, DomainObject):
                self._domains[name] = new
            else:
                self._domains.pop(name, None)
            self._recompute_domains()
            return
        store = self._objects[resource]
        old = store.get(name)
        if new is None:
            store.pop(name, None)
        else:
            store[name] = new
        if self._synced:
            self._publish_change(resource, name, old, new)

    def _list_blocks(self) -> tuple[tuple[LiveBlock, ...] | None, str]:
        """Every IPBlock, or (None, why) when they cannot be listed."""
        if self._block_lister is not None:
            try:
                return tuple(self._block_lister()), ""
            except StoreError as exc:
                return None, str(exc)
        if self._block_store is None:
            return (), ""
        try:
            return live_blocks(self._block_store), ""
        except StoreError as exc:
            return None, str(exc)

    def _candidates(self) -> list[DomainCandidate]:
        candidates: list[DomainCandidate] = []
        listed: tuple[LiveBlock, ...] | None = ()
        error = ""
        fetched = False
        for o in self._domains.values():
            # The status is what every node sees; this instance's own memory
            # covers the time before the first status write.
            deployed = self._accepted.get(o.name)
            cut = o.accepted_cut or (BlockCut.of(deployed) if deployed is not None else None)
            blocks: tuple[LiveBlock, ...] | None = ()
            if o.spec is not None and cut is not None and cut != BlockCut.of(o.spec):
                if not fetched:
                    listed, error = self._list_blocks()
                    fetched = True
                blocks = None if listed is None else tuple(b for b in listed if b.vrf == cut.vrf)
            candidates.append(
                DomainCandidate(
                    name=o.name,
                    created=o.created,
                    spec=o.spec,
                    error=o.error,
                    cut=cut,
                    blocks=blocks,
                    blocks_error=error,
                )
            )
        return candidates

    def _recompute_domains(self) -> None:
        earlier = self._verdicts
        self._verdicts = validate_domains(
            self._candidates(), self._settings.default.vrf, asn=self._settings.daemon.asn
        )
        accepted: dict[str, VrfDomainSpec] = {}
        refused: set[str] = set()
        for name, verdict in self._verdicts.items():
            if verdict.deployed is not None:
                accepted[name] = verdict.deployed
            if verdict.reason == REASON_PREFIX_CHANGE_REFUSED:
                refused.add(name)
                last = earlier.get(name)
                if last is None or last.message != verdict.message:
                    self.log.warning("VRFDomain %s: %s", name, verdict.message)
        self._recut_refused = refused
        old, self._accepted = self._accepted, accepted
        if not self._synced:
            return
        for name in sorted(old.keys() | accepted.keys()):
            before, after = old.get(name), accepted.get(name)
            if before is None and after is not None:
                self._publish(ClusterObjectChanged(kind=ChangeKind.ADDED, obj=after))
            elif before is not None and after is None:
                rejection = self._verdicts.get(name)
                if rejection is not None:
                    self.log.warning("VRFDomain %s rejected: %s", name, rejection.message)
                self._publish(ClusterObjectChanged(kind=ChangeKind.DELETED, obj=before))
            elif before is not None and after is not None and not _same_domain(before, after):
                self._publish(ClusterObjectChanged(kind=ChangeKind.MODIFIED, obj=after))
        self._reconcile_writes()

    def _publish_change(
        self,
        resource: Resource,
        name: str,
        old: WatchedObject | None,
        new: WatchedObject | None,
    ) -> None:
        if old == new:
            return
        if resource is Resource.NAMESPACE:
            if old is None:
                self._publish(NamespaceChanged(kind=ChangeKind.ADDED, name=name))
            elif new is None:
                self._publish(NamespaceChanged(kind=ChangeKind.DELETED, name=name))
            return
        if old is None:
            kind = ChangeKind.ADDED
        elif new is None:
            kind = ChangeKind.DELETED
        else:
            kind = ChangeKind.MODIFIED
        obj = new if new is not None else old
        if isinstance(obj, VrfDomainBindingSpec | VrfNodeConfigSpec | NodeInfo):
            self._publish(ClusterObjectChanged(kind=kind, obj=obj))

    def _snapshot(self) -> ClusterSnapshot:
        def typed(resource: Resource, cls: type[Any]) -> tuple[Any, ...]:
            store = self._objects[resource]
            return tuple(store[n] for n in sorted(store) if isinstance(store[n], cls))

        return ClusterSnapshot(
            domains=tuple(self._accepted[n] for n in sorted(self._accepted)),
            bindings=typed(Resource.VRF_DOMAIN_BINDING, VrfDomainBindingSpec),
            node_configs=typed(Resource.VRF_NODE_CONFIG, VrfNodeConfigSpec),
            nodes=typed(Resource.NODE, NodeInfo),
            namespaces=tuple(sorted(self._objects[Resource.NAMESPACE])),
        )

    def _publish(self, message: Any) -> None:
        for subscriber in self._subscribers:
            subscriber.tell(message)

    # -- writes --------------------------------------------------------------------------
    def _reconcile_writes(self) -> None:
        """Create the default domain if due and bring every status up to date."""
        if not self._synced or self._writer is None:
            return
        created = self._ensure_default()
        written, wake_in = self._write_statuses()
        delays = [] if wake_in is None else [wake_in]
        if self._recut_refused:
            delays.append(self._timings.recut_recheck)
        if created and written:
            self._retry_failures = 0
        else:
            self._retry_failures += 1
            delays.append(self._timings.backoff(self._retry_failures))
        if delays:
            self._schedule_retry(min(delays))

    def _ensure_default(self) -> bool:
        """False when the create should be retried later."""
        if not self._default_pending or self._writer is None:
            return True
        if self._domains:
            self._default_pending = False
            return True
        spec = default_domain(self._settings)
        try:
            self._writer.create_domain(spec)
        except ApiError as exc:
            if exc.status == 409:
                self.log.info("VRFDomain %s was created by another node", spec.name)
                self._default_pending = False
                return True
            level = self.log.warning if exc.temporary else self.log.error
            level("cannot create the default VRFDomain %s: %s", spec.name, exc)
            return False
        self._default_pending = False
        self.log.info(
            "no VRFDomain existed; created %s (%s, table %d)", spec.name, spec.cidr, spec.table
        )
        return True

    def _write_statuses(self) -> tuple[bool, float | None]:
        """Write every status that differs from what the object says.

        Returns (False when a write failed in a way worth retrying, seconds until
        a damped rewrite is due or None).
        """
        if self._writer is None:
            return True, None
        complete = True
        wake_in: float | None = None
        now = utc_now()
        interval = self._timings.status_min_interval
        for name in list(self._last_write):
            if name not in self._domains:
                del self._last_write[name]
        for name in sorted(self._domains):
            domain = self._domains[name]
            verdict = self._verdicts.get(name)
            if verdict is None or self._write_failed.get(name) == domain.resource_version:
                continue
            wanted = desired_conditions(verdict)
            conditions = merged_conditions(domain, wanted, now)
            # A rejected domain keeps its recorded cut: its IPBlocks still exist.
            cut = verdict.cut or domain.accepted_cut
            if conditions is None:
                if domain.accepted_cut == cut:
                    continue
                conditions = domain.conditions
            last = self._last_write.get(name)
            if last is not None and last[0] == (domain.generation, wanted):
                # We wrote exactly this already and someone wrote it over: a node
                # that disagrees (e.g. another version during an upgrade).
                # Rewrite at most once per interval instead of ping-ponging.
                due = last[1] + interval - time.monotonic()
                if due > 0:
                    wake_in = due if wake_in is None else min(wake_in, due)
                    continue
            try:
                updated = self._writer.write_conditions(domain, conditions, cut)
            except ApiError as exc:
                if exc.status in (404, 409):
                    # Deleted or changed meanwhile: its next event re-evaluates it.
                    self.log.debug("status of VRFDomain %s not written: %s", name, exc)
                elif exc.temporary:
                    self.log.warning("cannot write status of VRFDomain %s: %s", name, exc)
                    complete = False
                else:
                    self.log.error("cannot write status of VRFDomain %s: %s", name, exc)
                    self._write_failed[name] = domain.resource_version
                continue
            self._write_failed.pop(name, None)
            self._last_write[name] = ((domain.generation, wanted), time.monotonic())
            self._accepted_event(domain, verdict)
            self.log.info(
                "VRFDomain %s: Accepted=%s (%s)",
                name,
                "True" if verdict.accepted else "False",
                verdict.reason,
            )
            if updated.name == name:
                self._domains[name] = updated
        return complete, wake_in

    def _accepted_event(self, domain: DomainObject, verdict: Verdict) -> None:
        """An Event on the VRFDomain when its Accepted condition changes to False, or
        back to True (written by the node whose status write made the change)."""
        if self._events is None:
            return
        have = next((c for c in domain.conditions if c.type == CONDITION_ACCEPTED), None)
        before = None if have is None else (have.status == "True", have.reason, have.message)
        if before == (verdict.accepted, verdict.reason, verdict.message):
            return
        if verdict.accepted and (before is None or before[0]):
            return  # accepted from the start: nothing to tell
        self._events.tell(
            RecordEvent(
                kind="VRFDomain",
                name=domain.name,
                reason="Accepted" if verdict.accepted else verdict.reason,
                message=verdict.message,
                warning=not verdict.accepted,
            )
        )

    def _schedule_retry(self, delay: float) -> None:
        ref = self.actor_ref
        with self._timer_lock:
            if self._timer is not None or self.stopping.is_set():
                return

            def fire() -> None:
                with contextlib.suppress(pykka.ActorDeadError):
                    ref.tell(RetryWrites())

            self._timer = threading.Timer(delay, fire)
            self._timer.daemon = True
            self._timer.start()
