"""NetlinkActor: the node fabric (VRFs, bridges, VXLANs, rules) and pod plumbing.

Inputs: EnsureVrfDomain / RemoveVrfDomain / BringUpVrfDomain (commands), VniKnown (FRR),
NodeBlocksChanged (IPAM), ClusterSnapshot / ClusterObjectChanged (CRD watcher: the
desired domains and this node's VRFNodeConfig), PlumbPod / UnplumbPod / CheckPod /
ListPlumbedPods (CNI server) and Reconcile (its own timer).

How it works: every domain change recomputes the desired state with the pure
``netlink.desired`` and ``netlink.plan`` from a fresh kernel dump and executes the
difference through a :class:`NetlinkBackend`.  Pod work is
``netlink.plumbing.PodPlumbing``'s, called with the
backend; the actor keeps the messages (IPAM's confirmation before a re-plumb).  Every
change is "ensure present/absent": the errno that means "already so" (EEXIST, ENODEV,
ESRCH, ENOENT, EADDRNOTAVAIL) is success, nothing else is.

Invariants:

- The kernel is the record.  Plumbed pods are found again from the alias on their host
  veth; domains from device names.  A restarted actor neither duplicates nor forgets.
- An attachment is network name + container id + ifname: an UnplumbPod or CheckPod of
  another network never touches ours.
- A pod whose pair vanished is plumbed again only after IPAM confirms its attachment
  still holds the address (ConfirmAllocation, answered by tell): IPAM may have reclaimed
  it meanwhile, and then two pods would share it.
- Nothing is deleted before it is known to be unwanted: devices of domains that are not
  desired go only after a ClusterSnapshot (the complete desired set) or a
  RemoveVrfDomain; gateway addresses are pruned only after the first NodeBlocksChanged.
- Devices are created down and come up when FRR knows their VNI (VniKnown) or on
  BringUpVrfDomain; devices found up at start stay up.
- Pod operations never fork and never call setns in this thread: the backend enters a pod
  namespace from a dedicated short-lived thread.

Keep in sync with: pyroute2_cni/netlink/names.py and desired.py (names, routing design),
pyroute2_cni/netlink/backend.py (the protocol), pyroute2_cni/netlink/plumbing.py (pod
plumbing) and pods.py (the alias), tests/harness/fake_netlink.py.
"""

from __future__ import annotations

import errno
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import suppress
from typing import Any

import pykka

from pyroute2_cni.actors.address import Address
from pyroute2_cni.actors.base import ActorHooks, BaseActor
from pyroute2_cni.messages.base import ErrorKind, Failure, Ok
from pyroute2_cni.messages.crd import (
    ChangeKind,
    ClusterObjectChanged,
    ClusterSnapshot,
    NamespaceChanged,
    VrfDomainSpec,
    VrfNodeConfigSpec,
)
from pyroute2_cni.messages.frr import VniKnown
from pyroute2_cni.messages.ipam import (
    AllocationConfirmed,
    BlockInfo,
    ConfirmAllocation,
    NodeBlocksChanged,
)
from pyroute2_cni.messages.netlink import (
    BringUpVrfDomain,
    CheckPod,
    DomainState,
    EnsureVrfDomain,
    ListPlumbedPods,
    PlumbedPods,
    PlumbPod,
    PodCheckResult,
    PodPlumbed,
    Reconcile,
    ReconcileResult,
    RemoveVrfDomain,
    UnplumbPod,
    Vtep,
)
from pyroute2_cni.netlink.backend import NetlinkBackend
from pyroute2_cni.netlink.desired import (
    NODE_RULES,
    DomainDesired,
    DomainIntent,
    desired_domain,
    domain_conflicts,
)
from pyroute2_cni.netlink.names import (
    bridge_name,
    host_veth_name,
    is_fabric_name,
    pod_mtu,
    vrf_name,
    vxlan_name,
)
from pyroute2_cni.netlink.plan import (
    Action,
    AddAddress,
    AddRoute,
    AddRule,
    ChangeLink,
    CreateLink,
    DeleteAddress,
    DeleteLink,
    DeleteRoute,
    DeleteRule,
    LiveView,
    owned_by_domain,
    plan_addresses,
    plan_links,
    plan_orphan_routes,
    plan_orphans,
    plan_routes,
    plan_rules,
)
from pyroute2_cni.netlink.plumbing import PodPlumbing
from pyroute2_cni.netlink.specs import (
    NODE_SYSCTLS,
    OUR_PROTO,
    TABLE_MAIN,
    LinkState,
    RuleSpec,
    SysctlSpec,
)
from pyroute2_cni.netlink.vtep import choose_vtep
from pyroute2_cni.runtime.config import Settings
from pyroute2_cni.runtime.metrics import Metrics
from pyroute2_cni.values.attachment import attachment_key, parse_key

FABRIC_KINDS = ("vrf", "bridge", "vxlan")

# The errno that means "already so" for each change.
_ALREADY: dict[type[Any], int] = {
    CreateLink: errno.EEXIST,
    DeleteLink: errno.ENODEV,
    AddAddress: errno.EEXIST,
    DeleteAddress: errno.EADDRNOTAVAIL,
    AddRoute: errno.EEXIST,
    DeleteRoute: errno.ESRCH,
    AddRule: errno.EEXIST,
    DeleteRule: errno.ENOENT,
}


class DomainConflict(Exception):
    """The domain's devices would collide with another domain's."""


class NetlinkActor(BaseActor):
    actor_name = "netlink"

    def __init__(
        self,
        hooks: ActorHooks,
        *,
        node: str,
        settings: Settings,
        backend_factory: Callable[[], NetlinkBackend],
        metrics: Metrics,
        ipam: Address | None = None,
    ) -> None:
        super().__init__(hooks)
        self._node = node
        # Confirms a pod's address before it is plumbed again; without it (tests of the
        # fabric alone) nothing is plumbed again.
        self._ipam = ipam
        self._settings = settings
        self._backend_factory = backend_factory
        self._metrics = metrics
        self._backend: NetlinkBackend | None = None
        self._intents: dict[int, DomainIntent] = {}
        self._blocks: tuple[BlockInfo, ...] = ()
        self._blocks_known = False
        self._desired_known = False
        self._brought_up: set[int] = set()
        self._known_vnis: set[int] = set()
        self._up_at_start: frozenset[str] = frozenset()
        self._node_configs: dict[str, VrfNodeConfigSpec] = {}
        self._vtep: Vtep | None = None
        # The plumbed pods (read back from the kernel) and what each asked for.
        self._plumbing = PodPlumbing(node, self.log)
        self._timer: threading.Timer | None = None
        self._timer_lock = threading.Lock()
        self._repairs: list[str] | None = None  # collecting during a Reconcile

    # -- lifecycle -------------------------------------------------------------------------
    def on_start(self) -> None:
        self._backend = self._backend_factory()
        self._inventory()
        self._schedule()
        self.set_ready(True, f"{len(self._plumbing.pods)} pods found in the kernel")

    def release(self) -> None:
        with self._timer_lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        if self._backend is not None:
            self._backend.close()
            self._backend = None

    def _schedule(self) -> None:
        with self._timer_lock:
            if self.stopping.is_set():
                return
            timer = threading.Timer(self._settings.netlink.reconcile_interval, self._tick)
            timer.daemon = True
            timer.name = f"{self.hooks.name}-reconcile-timer"
            self._timer = timer
            timer.start()

    def _tick(self) -> None:
        if self.stopping.is_set():
            return
        with suppress(pykka.ActorDeadError):
            self.actor_ref.tell(Reconcile(scheduled=True))

    @property
    def backend(self) -> NetlinkBackend:
        if self._backend is None:
            raise RuntimeError("the netlink backend is not open (actor not started)")
        return self._backend

    # -- dispatch --------------------------------------------------------------------------
    def handle(self, message: Any) -> Any:
        match message:
            case EnsureVrfDomain():
                return self._guard(message, lambda: self._on_ensure(message))
            case BringUpVrfDomain():
                return self._guard(message, lambda: self._on_bring_up(message))
            case VniKnown():
                return self._guard(message, lambda: self._on_vni_known(message))
            case RemoveVrfDomain():
                return self._guard(message, lambda: self._on_remove(message))
            case NodeBlocksChanged():
                return self._guard(message, lambda: self._on_blocks(message))
            case PlumbPod():
                return self._guard(message, lambda: self._on_plumb(message))
            case UnplumbPod():
                return self._guard(message, lambda: self._on_unplumb(message))
            case CheckPod():
                return self._guard(message, lambda: self._on_check(message))
            case ListPlumbedPods():
                return self._guard(message, self._on_list)
            case ClusterSnapshot():
                return self._guard(message, lambda: self._on_snapshot(message))
            case ClusterObjectChanged():
                return self._guard(message, lambda: self._on_object(message))
            case NamespaceChanged():
                return None  # published to every watcher subscriber; not ours
            case Reconcile():
                return self._on_reconcile(message)
            case AllocationConfirmed():
                return self._guard(message, lambda: self._on_confirmed(message))
            case _:
                return self.unknown(message)

    def _guard(self, message: Any, fn: Callable[[], Any]) -> Any:
        """Kernel errors become a typed Failure (and a log line); bugs still crash."""
        try:
            return fn()
        except DomainConflict as exc:
            self.log.error("%s: %s", type(message).__name__, exc)
            return Failure(reason=str(exc), kind=ErrorKind.INVALID)
        except OSError as exc:
            self.log.error("%s failed: %s", type(message).__name__, exc)
            return Failure(
                reason=f"{type(message).__name__} failed: {exc}",
                kind=ErrorKind.TEMPORARY,
                details=errno.errorcode.get(exc.errno or 0, ""),
            )

    # -- inventory -------------------------------------------------------------------------
    def _fabric_links(self) -> list[LinkState]:
        # Filtered by kind in the kernel: a node's hundreds of pod veths are not decoded.
        backend = self.backend
        return [link for kind in FABRIC_KINDS for link in backend.links(kind)]

    def _inventory(self) -> None:
        self._plumbing.read(self.backend)
        self._plumbing.remember()
        self._up_at_start = frozenset(
            link.name for link in self._fabric_links() if link.up and is_fabric_name(link.name)
        )
        self._refresh_vtep()
        self.log.info(
            "inventory: %d plumbed pods, fabric devices up: %s; vtep %s",
            len(self._plumbing.pods),
            ", ".join(sorted(self._up_at_start)) or "none",
            self._vtep,
        )

    # -- VTEP and MTU ----------------------------------------------------------------------
    def _refresh_vtep(self) -> bool:
        backend = self.backend
        main_routes = backend.routes(TABLE_MAIN)
        # Only the candidates are read: configured names and default route interfaces.
        wanted: list[str | int] = [self._settings.netlink.vtep_interface]
        for config in self._node_configs.values():
            if config.node == self._node:
                wanted.extend(iface.name for iface in config.interfaces)
        wanted.extend(r.oif for r in main_routes if r.dst == "0.0.0.0/0" and r.oif)
        candidates = [link for key in wanted if key and (link := backend.link_get(key))]
        vtep = choose_vtep(
            node=self._node,
            node_configs=self._node_configs.values(),
            configured_interface=self._settings.netlink.vtep_interface,
            links=candidates,
            addresses=backend.addresses(),
            main_routes=main_routes,
        )
        changed = vtep != self._vtep
        if changed:
            self.log.info("VTEP %s (was %s)", vtep, self._vtep)
        self._vtep = vtep
        return changed

    def _mtu(self) -> int:
        return pod_mtu(self._settings.daemon.mtu, self._vtep.mtu if self._vtep else None)

    # -- domains ---------------------------------------------------------------------------
    def _known_vnis_for(self, intent: DomainIntent) -> frozenset[int]:
        known = set(self._known_vnis)
        for attachment in intent.domain.attachments:
            names = {
                bridge_name(attachment.type, intent.domain.vrf),
                vxlan_name(attachment.type, attachment.vni),
            }
            if names & self._up_at_start:
                known.add(attachment.vni)
        return frozenset(known)

    def _desired(self, intent: DomainIntent) -> DomainDesired:
        return desired_domain(
            intent,
            node=self._node,
            vtep=self._vtep,
            mtu=self._mtu(),
            blocks=self._blocks,
            brought_up=frozenset(self._brought_up),
            known_vnis=self._known_vnis_for(intent),
        )

    def _view(self, tables: Iterable[int]) -> LiveView:
        backend = self.backend
        routes = [route for table in sorted(set(tables)) for route in backend.routes(table)]
        return LiveView.build(self._fabric_links(), backend.addresses(), routes, backend.rules())

    def _apply_domain(self, vrf: int, view: LiveView | None = None) -> DomainState:
        """Bring one domain's devices, addresses and routes to the desired state.

        `view` may be shared by several domains: their objects are disjoint.  Without it,
        the node's sysctls and rules are ensured too (with it, the caller does that once).
        """
        intent = self._intents[vrf]
        conflict = domain_conflicts(self._intents.values()).get(vrf)
        if conflict:
            raise DomainConflict(f"VRFDomain {intent.domain.name} (vrf {vrf}): {conflict}")
        desired = self._desired(intent)
        alone = view is None
        if view is None:
            view = self._view([desired.table])
        self._execute(
            [
                *plan_links(desired, view),
                *plan_addresses(desired, view, prune=self._blocks_known),
                *plan_routes(desired, view),
            ]
        )
        if alone:
            self._ensure_node(desired.sysctls)
        vrf_link = next(link for link in desired.links if link.kind == "vrf")
        return DomainState(vrf=vrf, devices=tuple(sorted(desired.names)), up=vrf_link.up)

    def _ensure_node(self, extra_sysctls: Sequence[SysctlSpec] = ()) -> None:
        """Node sysctls and rules (after the domain's devices: the first VRF loads the
        vrf module, which brings net/vrf/strict_mode and the l3mdev rule)."""
        self._ensure_sysctls([*NODE_SYSCTLS, *extra_sysctls])
        wanted = list(NODE_RULES)
        conflicts = domain_conflicts(self._intents.values())
        for intent in self._intents.values():
            if intent.domain.vrf not in conflicts:
                wanted.extend(self._desired(intent).rules)
        tables = frozenset(i.domain.table for i in self._intents.values())
        view = LiveView.build((), (), (), self.backend.rules())
        self._execute(
            plan_rules(wanted, view, prune_tables=None if self._desired_known else tables)
        )

    def _ensure_sysctls(self, specs: Iterable[SysctlSpec]) -> None:
        backend = self.backend
        for spec in specs:
            current = backend.sysctl_get(spec.key)
            if current is None:
                if not spec.optional:
                    self.log.warning("sysctl %s does not exist", spec.key)
                continue
            if current == spec.value:
                continue
            try:
                backend.sysctl_set(spec.key, spec.value)
            except OSError as exc:
                # strict_mode cannot be turned on while foreign VRFs share a table.
                if spec.optional and exc.errno == errno.EBUSY:
                    self.log.error("cannot set %s=%s: %s", spec.key, spec.value, exc)
                    continue
                raise
            self._done("sysctl", f"sysctl {spec.key}={spec.value} (was {current})")

    def _execute(self, actions: Iterable[Action]) -> None:
        backend = self.backend
        for action in actions:
            try:
                match action:
                    case CreateLink(spec=spec):
                        backend.link_create(spec)
                    case DeleteLink(name=name):
                        backend.link_delete(name)
                    case ChangeLink(name=name, change=change):
                        backend.link_set(name, change)
                    case AddAddress(spec=spec):
                        backend.addr_add(spec)
                    case DeleteAddress(spec=spec):
                        backend.addr_delete(spec)
                    case AddRoute(spec=spec):
                        backend.route_add(spec)
                    case DeleteRoute(spec=spec):
                        backend.route_delete(spec)
                    case AddRule(spec=spec):
                        backend.rule_add(spec)
                    case DeleteRule(spec=spec):
                        backend.rule_delete(spec)
            except OSError as exc:
                if exc.errno != _ALREADY.get(type(action)):
                    raise
                self.log.debug("%s: already so (%s)", action.describe(), exc)
                continue
            self._done(action.kind, action.describe())

    def _done(self, kind: str, what: str) -> None:
        if self._repairs is not None:
            self._metrics.netlink_repairs.labels(kind).inc()
            self._repairs.append(what)
            self.log.warning("repaired: %s", what)
        else:
            self.log.info("%s", what)

    def _remove_domain(self, vrf: int, table: int | None) -> None:
        intent = self._intents.pop(vrf, None)
        self._brought_up.discard(vrf)
        if intent is not None:
            table = intent.domain.table
        links_view = self._view(())
        if table is None:
            live_vrf = links_view.by_name.get(vrf_name(vrf))
            table = live_vrf.table if live_vrf is not None and live_vrf.kind == "vrf" else None
        doomed = [
            link
            for link in links_view.links
            if is_fabric_name(link.name) and owned_by_domain(link, vrf, links_view)
        ]
        doomed.sort(key=lambda link: {"vxlan": 0, "bridge": 1}.get(link.kind, 2))
        actions: list[Action] = [
            DeleteLink(name=link.name, reason="domain removed") for link in doomed
        ]
        if table is not None:
            view = self._view([table])
            actions.extend(plan_orphan_routes(frozenset({table}), view))
            actions.extend(
                DeleteRule(
                    spec=RuleSpec(
                        priority=rule.priority, table=rule.table, dst=rule.dst, proto=rule.proto
                    )
                )
                for rule in view.rules
                if rule.plain() and rule.table == table and rule.proto == OUR_PROTO
            )
        self._execute(actions)

    def _remove_orphans(self) -> None:
        """After the desired set is complete: fabric devices of no desired domain go."""
        if not self._desired_known:
            return
        conflicts = domain_conflicts(self._intents.values())
        view = self._view(())
        wanted: set[str] = set()
        for intent in self._intents.values():
            if intent.domain.vrf not in conflicts:
                wanted |= self._desired(intent).names
            else:
                # Leave whatever a conflicting domain has; it is reported, not deleted.
                wanted |= {
                    link.name
                    for link in view.links
                    if owned_by_domain(link, intent.domain.vrf, view)
                }
        actions, tables = plan_orphans(frozenset(wanted), view)
        if tables:
            actions.extend(plan_orphan_routes(tables, self._view(tables)))
        self._execute(actions)

    def _apply_all(self) -> list[str]:
        """Every domain from one kernel dump, then the node's sysctls and rules once."""
        if not self._intents:
            return []
        errors: list[str] = []
        view = self._view(intent.domain.table for intent in self._intents.values())
        sysctls: list[SysctlSpec] = []
        for vrf in sorted(self._intents):
            try:
                self._apply_domain(vrf, view)
            except (OSError, DomainConflict) as exc:
                self.log.error("vrf %d: %s", vrf, exc)
                errors.append(f"vrf {vrf}: {exc}")
                continue
            sysctls.extend(self._desired(self._intents[vrf]).sysctls)
        try:
            self._ensure_node(sysctls)
        except OSError as exc:
            self.log.error("node sysctls and rules: %s", exc)
            errors.append(f"node: {exc}")
        return errors

    # -- domain handlers -------------------------------------------------------------------
    def _on_ensure(self, msg: EnsureVrfDomain) -> DomainState:
        self._replace_intent(DomainIntent(domain=msg.domain, system=msg.system))
        return self._apply_domain(msg.domain.vrf)

    def _replace_intent(self, intent: DomainIntent) -> None:
        """A renamed or renumbered domain: the old VRF of the same object goes."""
        for vrf, other in list(self._intents.items()):
            if other.domain.name == intent.domain.name and vrf != intent.domain.vrf:
                self._remove_domain(vrf, other.domain.table)
        old = self._intents.get(intent.domain.vrf)
        if old is not None and old.domain.table != intent.domain.table:
            # The table is fixed at creation: routes of the old table go (the VRF device is
            # recreated by the plan; the system rule follows the intent).
            table = old.domain.table
            self._execute(plan_orphan_routes(frozenset({table}), self._view([table])))
        self._intents[intent.domain.vrf] = intent

    def _on_bring_up(self, msg: BringUpVrfDomain) -> DomainState | Failure:
        self._brought_up.add(msg.vrf)
        if msg.vrf not in self._intents:
            return Failure(
                reason=f"vrf {msg.vrf} is not a known domain; it comes up once ensured",
                kind=ErrorKind.TEMPORARY,
            )
        return self._apply_domain(msg.vrf)

    def _on_vni_known(self, msg: VniKnown) -> Ok:
        self._known_vnis.add(msg.vni)
        if msg.vrf in self._intents:
            self._apply_domain(msg.vrf)
        return Ok()

    def _on_remove(self, msg: RemoveVrfDomain) -> Ok:
        self._remove_domain(msg.vrf, None)
        return Ok()

    def _on_blocks(self, msg: NodeBlocksChanged) -> Ok:
        self._blocks = msg.blocks
        self._blocks_known = True
        errors = self._apply_all()
        if errors:
            raise OSError(errno.EIO, "; ".join(errors))
        return Ok()

    def _system(self, domain: VrfDomainSpec) -> bool:
        return domain.vrf == self._settings.default.vrf

    def _on_snapshot(self, msg: ClusterSnapshot) -> Ok:
        self._node_configs = {c.name: c for c in msg.node_configs}
        wanted = {d.vrf: DomainIntent(domain=d, system=self._system(d)) for d in msg.domains}
        for vrf in sorted(set(self._intents) - set(wanted)):
            self._remove_domain(vrf, self._intents[vrf].domain.table)
        for intent in wanted.values():
            self._replace_intent(intent)
        self._desired_known = True
        self._refresh_vtep()
        errors = self._apply_all()
        self._remove_orphans()
        if errors:
            raise OSError(errno.EIO, "; ".join(errors))
        return Ok()

    def _on_object(self, msg: ClusterObjectChanged) -> Ok:
        obj = msg.obj
        if isinstance(obj, VrfDomainSpec):
            if msg.kind is ChangeKind.DELETED:
                current = self._intents.get(obj.vrf)
                if current is not None and current.domain.name == obj.name:
                    self._remove_domain(obj.vrf, current.domain.table)
                    self._ensure_node()
                return Ok()
            self._replace_intent(DomainIntent(domain=obj, system=self._system(obj)))
            self._apply_domain(obj.vrf)
            return Ok()
        if isinstance(obj, VrfNodeConfigSpec):
            if msg.kind is ChangeKind.DELETED:
                self._node_configs.pop(obj.name, None)
            else:
                self._node_configs[obj.name] = obj
            if obj.node == self._node and self._refresh_vtep():
                errors = self._apply_all()
                if errors:
                    raise OSError(errno.EIO, "; ".join(errors))
        return Ok()

    # -- reconcile ---------------------------------------------------------------------
    def _on_reconcile(self, msg: Reconcile) -> ReconcileResult:
        started = time.monotonic()
        self._repairs = []
        errors: list[str] = []
        try:
            try:
                self._refresh_vtep()
            except OSError as exc:
                errors.append(f"vtep: {exc}")
            errors.extend(self._apply_all())
            for step in (self._remove_orphans, self._reconcile_pods):
                try:
                    step()
                except OSError as exc:
                    errors.append(f"{step.__name__}: {exc}")
            repairs = tuple(self._repairs)
        finally:
            self._repairs = None
            if msg.scheduled:
                self._schedule()
        took = time.monotonic() - started
        self._metrics.netlink_reconcile_duration.observe(took)
        self.log.debug(
            "reconcile: %d repairs, %d errors in %.1f ms", len(repairs), len(errors), took * 1e3
        )
        return ReconcileResult(repairs=repairs, errors=tuple(errors))

    def _reconcile_pods(self) -> None:
        for msg in self._plumbing.reconcile(self.backend, lambda what: self._done("pod", what)):
            self._confirm_then_replumb(msg)

    def _confirm_then_replumb(self, msg: PlumbPod) -> None:
        host = host_veth_name(msg.container_id, msg.ifname)
        key = attachment_key(msg.network, msg.container_id, msg.ifname)
        if self._ipam is None:
            self.log.warning("%s: pair gone; no IPAM to confirm %s with, not plumbed", key, host)
            return
        self._plumbing.awaiting[host] = msg
        if not self._ipam.tell(
            ConfirmAllocation(key=key, address=msg.address, reply_to=self.actor_ref)
        ):
            del self._plumbing.awaiting[host]
            self._plumbing.retry_later(msg)  # IPAM restarting

    def _on_confirmed(self, reply: AllocationConfirmed) -> Ok:
        parsed = parse_key(reply.key)
        if parsed is None:
            return Ok()
        msg = self._plumbing.confirmed(parsed, reply.address)
        if msg is None:
            return Ok()  # unplumbed or plumbed afresh meanwhile: nothing to put back
        if reply.held is None:
            self._plumbing.retry_later(msg)  # IPAM has not read its blocks yet
        elif not reply.held:
            self.log.warning(
                "%s: not plumbed again: IPAM no longer holds %s for it (reclaimed); "
                "its runtime will DEL or GC it",
                reply.key,
                reply.address,
            )
        else:
            self._replumb(msg)
        return Ok()

    def _replumb(self, msg: PlumbPod) -> None:
        """The pod's pair is gone (deleted by hand: the pod end goes with it) while its
        namespace is still there: plumb it again, same names, MACs and address."""
        what = f"{msg.container_id[:12]}/{msg.ifname} {msg.address}/{msg.prefixlen}"
        try:
            self.backend.open_netns(msg.netns).close()
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return  # the sandbox went without a DEL; GC and IPAM reclaim the rest
            raise
        try:
            result = self._on_plumb(msg)
        except OSError:
            self._plumbing.retry_later(msg)
            raise
        if isinstance(result, Failure):
            self.log.warning("could not plumb %s again: %s", what, result.reason)
            if result.kind is ErrorKind.TEMPORARY:  # e.g. its VRF is being rebuilt
                self._plumbing.retry_later(msg)
            return
        # Counted here: the confirmation arrives outside the Reconcile that asked for it.
        repair = f"plumbed {what} again on {result.host.name}"
        self._metrics.netlink_repairs.labels("pod").inc()
        if self._repairs is not None:
            self._repairs.append(repair)
        self.log.warning("repaired: %s", repair)

    # -- pods --------------------------------------------------------------------------
    def _on_plumb(self, msg: PlumbPod) -> PodPlumbed | Failure:
        intent = self._intents.get(msg.vrf)
        domain = intent.domain if intent is not None else None
        return self._plumbing.plumb(self.backend, msg, domain, self._mtu())

    def _on_unplumb(self, msg: UnplumbPod) -> Ok | Failure:
        return self._plumbing.unplumb(self.backend, msg)

    def _on_check(self, msg: CheckPod) -> PodCheckResult:
        return self._plumbing.check(self.backend, msg)

    def _on_list(self) -> PlumbedPods:
        return self._plumbing.listed(self.backend)
