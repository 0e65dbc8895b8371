"""The Kubernetes adapter for IPAM: IPBlocks, the reclaimer Lease, pods, nodes, VRFDomains.

The only IPAM module that imports ``kubernetes``.  Everything crossing this
boundary is a typed value (:class:`~pyroute2_cni.ipam.blocks.Block`,
:class:`~pyroute2_cni.ipam.lease.LeaseRecord`, :class:`~pyroute2_cni.ipam.blocks.PodInfo`,
:class:`~pyroute2_cni.messages.crd.VrfDomainSpec`); API failures become one of
four exceptions:

- :class:`BlockTaken`: a create answered 409 (someone holds that block name);
- :class:`Conflict`: a conditional write or delete lost a race on resourceVersion (409);
- :class:`StoreUnavailable`: the API could not be reached, answered 429/5xx, or the reply
  was cut off (retry later).  For a write the outcome is unknown: it may have committed;
- :class:`StoreError`: anything else (403, 422, ...; retrying will not help).

Every write and every LIST is counted in ``Metrics.ipam_api_writes{op}`` and
``Metrics.ipam_api_lists``.  Responses are read as raw JSON (no model
deserialisation): the allocation path is latency-bound.

Keep in sync with: ``kubernetes/crds/0.1/ipblocks.ipam.pyroute2.org.yaml`` and the
RBAC in ``kubernetes/releases/0.1.0/rbac.yaml`` (ipblocks, ipblocks/status, leases,
pods, nodes, vrfdomains).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

import urllib3
from kubernetes import client

from pyroute2_cni.ipam.blocks import (
    NODE_LABEL,
    VRF_LABEL,
    Allocation,
    Block,
    PodInfo,
    node_label_value,
)
from pyroute2_cni.ipam.lease import LeaseRecord
from pyroute2_cni.ipam.pod_watch import NodePodWatch
from pyroute2_cni.kube.client import make_api_client, object_not_found
from pyroute2_cni.messages.crd import Attachment, AttachmentType, VrfDomainSpec
from pyroute2_cni.runtime.metrics import Metrics

log = logging.getLogger(__name__)

IPAM_GROUP = "ipam.pyroute2.org"
IPAM_VERSION = "v1alpha1"
IPBLOCKS = "ipblocks"
CNI_GROUP = "cni.pyroute2.org"
CNI_VERSION = "v1alpha1"
VRFDOMAINS = "vrfdomains"
MANAGED_BY = "app.kubernetes.io/managed-by"

# (connect, read) seconds for every request: a call never blocks the actor for long.
# The daemon passes server.ini [ipam] request_connect_timeout, request_read_timeout.
REQUEST_TIMEOUT = (5.0, 15.0)
LIST_PAGE = 500

T = TypeVar("T")


class StoreError(Exception):
    """The API refused the request; retrying the same request will not help."""


class StoreUnavailable(StoreError):
    """The API could not be reached or is overloaded (connection error, timeout, 429, 5xx)."""


class Conflict(StoreError):
    """A conditional write or delete lost a race: the object changed (409)."""


class BlockTaken(StoreError):
    """Creating a block answered 409: that block name is already held."""


class BlockGone(StoreError):
    """The block to update does not exist any more (404)."""


def rfc3339(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc3339_micro(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# -- the interface the actor and `ipam check` use --------------------------------------


class BlockStore(Protocol):
    def list_node_blocks(self, node: str) -> list[Block]:
        """This node's blocks, by label (one LIST)."""

    def list_blocks(self) -> list[Block]:
        """Every block of the cluster (a cluster-wide LIST; never on the allocation path)."""

    def get_block(self, name: str) -> Block | None:
        """Re-read one block; None when it does not exist."""

    def create_block(self, block: Block) -> Block:
        """Create the block (spec only); raises BlockTaken on 409."""

    def replace_status(self, block: Block) -> Block:
        """Write the block's status if its resourceVersion is current; Conflict / BlockGone."""

    def delete_block(self, name: str, resource_version: str) -> bool:
        """Delete if unchanged since `resource_version`; False if already gone; Conflict."""

    def get_lease(self, namespace: str, name: str) -> LeaseRecord | None: ...

    def create_lease(self, lease: LeaseRecord) -> LeaseRecord:
        """Create the Lease; raises Conflict when it already exists."""

    def update_lease(self, lease: LeaseRecord) -> LeaseRecord:
        """Replace the Lease if its resourceVersion is current; raises Conflict."""

    def list_node_pods(self, node: str) -> list[PodInfo]:
        """Pods scheduled to `node` (field selector spec.nodeName)."""

    def cached_node_pods(self, node: str) -> list[PodInfo] | None:
        """Pods of `node` as a watch last saw them (may lag); None when there is no such
        cache yet.  The first call may start the watch."""

    def list_pods(self) -> list[PodInfo]:
        """Every pod of the cluster."""

    def list_nodes(self) -> list[str]:
        """Names of the cluster's Nodes."""

    def list_domains(self) -> list[VrfDomainSpec]:
        """Every VRFDomain."""

    def close(self) -> None: ...


# -- conversion -------------------------------------------------------------------------


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _int(value: Any, default: int = 0) -> int:
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    try:
        return int(str(value))
    except ValueError:
        return default


def block_from_object(obj: dict[str, Any]) -> Block:
    """An IPBlock object (JSON) as a Block; missing fields become empty values."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    raw = status.get("allocations") or {}
    allocations: dict[str, Allocation] = {}
    if isinstance(raw, dict):
        for address, record in raw.items():
            if not isinstance(record, dict):
                continue
            allocations[str(address)] = Allocation(
                key=_text(record.get("key")),
                namespace=_text(record.get("namespace")),
                pod=_text(record.get("pod")),
                uid=_text(record.get("uid")),
                since=_text(record.get("since")),
            )
    return Block(
        name=_text(meta.get("name")),
        cidr=_text(spec.get("cidr")),
        node=_text(spec.get("node")),
        vrf=_int(spec.get("vrf")),
        gateway=_text(spec.get("gateway")),
        capacity=_int(spec.get("capacity")),
        allocated=_int(status.get("allocated")),
        allocations=allocations,
        resource_version=_text(meta.get("resourceVersion")),
    )


def _record_json(record: Allocation) -> dict[str, str]:
    out = {"key": record.key}
    for name in ("namespace", "pod", "uid", "since"):
        value = getattr(record, name)
        if value:
            out[name] = value
    return out


def block_to_object(block: Block, *, with_status: bool) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "name": block.name,
        "labels": {
            NODE_LABEL: node_label_value(block.node),
            VRF_LABEL: str(block.vrf),
            MANAGED_BY: "pyroute2-cni",
        },
    }
    if block.resource_version:
        metadata["resourceVersion"] = block.resource_version
    obj: dict[str, Any] = {
        "apiVersion": f"{IPAM_GROUP}/{IPAM_VERSION}",
        "kind": "IPBlock",
        "metadata": metadata,
        "spec": {
            "cidr": block.cidr,
            "node": block.node,
            "vrf": block.vrf,
            "gateway": block.gateway,
            "capacity": block.capacity,
        },
    }
    if with_status:
        obj["status"] = {
            "allocated": len(block.allocations),
            "allocations": {a: _record_json(r) for a, r in block.allocations.items()},
        }
    return obj


def domain_from_object(obj: dict[str, Any]) -> VrfDomainSpec | None:
    """A VRFDomain object as a VrfDomainSpec; None when it lacks what IPAM needs."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    attachments: list[Attachment] = []
    for item in spec.get("attachments") or []:
        if not isinstance(item, dict):
            continue
        try:
            kind = AttachmentType(item.get("type"))
        except ValueError:
            continue
        attachments.append(
            Attachment(type=kind, vni=_int(item.get("vni")), port=_int(item.get("port"), 4789))
        )
    name = _text(meta.get("name"))
    prefix = _text(spec.get("prefix"))
    if not name or not prefix:
        return None
    return VrfDomainSpec(
        name=name,
        vrf=_int(spec.get("vrf")),
        table=_int(spec.get("table")),
        prefix=prefix,
        prefixlen=_int(spec.get("prefixlen")),
        ipblocklen=_int(spec.get("ipblocklen")),
        attachments=tuple(attachments),
        resource_version=_text(meta.get("resourceVersion")),
    )


def _pod_from_object(obj: dict[str, Any]) -> PodInfo:
    meta = obj.get("metadata") or {}
    return PodInfo(
        namespace=_text(meta.get("namespace")),
        name=_text(meta.get("name")),
        uid=_text(meta.get("uid")),
    )


def _lease_from_object(obj: dict[str, Any]) -> LeaseRecord:
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    return LeaseRecord(
        namespace=_text(meta.get("namespace")),
        name=_text(meta.get("name")),
        holder=_text(spec.get("holderIdentity")),
        duration_seconds=_int(spec.get("leaseDurationSeconds")),
        transitions=_int(spec.get("leaseTransitions")),
        resource_version=_text(meta.get("resourceVersion")),
    )


# -- the Kubernetes implementation ------------------------------------------------------


def _status_of(exc: client.ApiException) -> int:
    return int(exc.status or 0)


def _describe(exc: client.ApiException) -> str:
    message = ""
    body = exc.body
    if body:
        try:
            message = str(json.loads(body).get("message", ""))
        except (ValueError, AttributeError):
            message = str(body)[:200]
    return f"HTTP {exc.status} {exc.reason or ''}: {message}".strip()


class KubeBlockStore:
    """:class:`BlockStore` on a ``kubernetes.client.ApiClient`` (not thread-safe: one per actor)."""

    def __init__(
        self,
        api_client: client.ApiClient,
        metrics: Metrics | None = None,
        *,
        owns_client: bool = True,
        request_timeout: tuple[float, float] = REQUEST_TIMEOUT,
    ) -> None:
        self._client = api_client
        self._request_timeout = request_timeout
        self._owns_client = owns_client
        self._metrics = metrics
        self._custom = client.CustomObjectsApi(api_client)
        self._core = client.CoreV1Api(api_client)
        self._coordination = client.CoordinationV1Api(api_client)
        self._pod_watch: NodePodWatch | None = None

    @classmethod
    def from_kubeconfig(cls, kubeconfig: str, metrics: Metrics | None = None) -> KubeBlockStore:
        """A store on `kubeconfig`, or the in-cluster service account when it is empty."""
        return cls(make_api_client(kubeconfig), metrics)

    def close(self) -> None:
        if self._pod_watch is not None:
            self._pod_watch.stop()
        if self._owns_client:
            self._client.close()

    # -- plumbing ----------------------------------------------------------------------

    def _write(self, op: str) -> None:
        if self._metrics is not None:
            self._metrics.ipam_api_writes.labels(op).inc()

    def _listed(self) -> None:
        if self._metrics is not None:
            self._metrics.ipam_api_lists.inc()

    def _call(self, what: str, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run one request; JSON body back, or a typed exception.

        409 and a 404 naming the object are re-raised as ApiException for the caller
        to map; a 404 from a path the server does not serve (yet) is StoreUnavailable.
        """
        try:
            response = func(
                *args, _preload_content=False, _request_timeout=self._request_timeout, **kwargs
            )
        except client.ApiException as exc:
            status = _status_of(exc)
            if status == 409 or object_not_found(exc):
                raise
            if status == 404:
                # Not "gone": a starting API server (or one without our CRDs) serves no
                # IPBlocks yet.  Taking it for a deletion drops cached records.
                raise StoreUnavailable(
                    f"{what}: the API server does not serve this resource (starting, or "
                    f"the CRDs are not installed): {_describe(exc)}"
                ) from None
            if status == 0 or status == 429 or status >= 500:
                raise StoreUnavailable(f"{what}: {_describe(exc)}") from None
            raise StoreError(f"{what}: {_describe(exc)}") from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise StoreUnavailable(f"{what}: {exc}") from None
        # The body is read here, after the status: a connection cut now (an API server
        # restart) leaves a write that may have committed, so it is StoreUnavailable too.
        try:
            data = response.data
            return json.loads(data) if data else {}
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise StoreUnavailable(f"{what}: reply cut off: {exc}") from None
        except ValueError as exc:
            raise StoreUnavailable(f"{what}: reply is not JSON: {exc}") from None

    def _pages(
        self, what: str, func: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> Iterator[dict[str, Any]]:
        """Every item of a paginated LIST (each page counts as one LIST)."""
        token: str | None = None
        while True:
            self._listed()
            extra = {"_continue": token} if token else {}
            try:
                body = self._call(what, func, *args, limit=LIST_PAGE, **extra, **kwargs)
            except client.ApiException as exc:
                raise StoreError(f"{what}: {_describe(exc)}") from None
            yield from body.get("items") or []
            token = (body.get("metadata") or {}).get("continue") or None
            if not token:
                return

    # -- blocks -------------------------------------------------------------------------

    def list_node_blocks(self, node: str) -> list[Block]:
        selector = f"{NODE_LABEL}={node_label_value(node)}"
        items = self._pages(
            f"list IPBlocks of {node}",
            self._custom.list_cluster_custom_object,
            IPAM_GROUP,
            IPAM_VERSION,
            IPBLOCKS,
            label_selector=selector,
        )
        # The label may be a hash of a long name: spec.node is the truth.
        return [b for b in map(block_from_object, items) if b.node == node]

    def list_blocks(self) -> list[Block]:
        items = self._pages(
            "list IPBlocks",
            self._custom.list_cluster_custom_object,
            IPAM_GROUP,
            IPAM_VERSION,
            IPBLOCKS,
        )
        return [block_from_object(item) for item in items]

    def get_block(self, name: str) -> Block | None:
        try:
            body = self._call(
                f"get IPBlock {name}",
                self._custom.get_cluster_custom_object,
                IPAM_GROUP,
                IPAM_VERSION,
                IPBLOCKS,
                name,
            )
        except client.ApiException as exc:
            if _status_of(exc) == 404:
                return None
            raise StoreError(f"get IPBlock {name}: {_describe(exc)}") from None
        return block_from_object(body)

    def create_block(self, block: Block) -> Block:
        self._write("create")
        try:
            body = self._call(
                f"create IPBlock {block.name}",
                self._custom.create_cluster_custom_object,
                IPAM_GROUP,
                IPAM_VERSION,
                IPBLOCKS,
                block_to_object(block, with_status=False),
            )
        except client.ApiException as exc:
            if _status_of(exc) == 409:
                raise BlockTaken(block.name) from None
            raise StoreError(f"create IPBlock {block.name}: {_describe(exc)}") from None
        return block_from_object(body)

    def replace_status(self, block: Block) -> Block:
        self._write("status")
        if not block.resource_version:
            raise StoreError(f"replace status of IPBlock {block.name}: no resourceVersion")
        try:
            body = self._call(
                f"update IPBlock {block.name} status",
                self._custom.replace_cluster_custom_object_status,
                IPAM_GROUP,
                IPAM_VERSION,
                IPBLOCKS,
                block.name,
                block_to_object(block, with_status=True),
            )
        except client.ApiException as exc:
            if _status_of(exc) == 409:
                raise Conflict(
                    f"IPBlock {block.name} changed since {block.resource_version}"
                ) from None
            raise BlockGone(block.name) from None
        return block_from_object(body)

    def delete_block(self, name: str, resource_version: str) -> bool:
        self._write("delete")
        options = client.V1DeleteOptions(
            preconditions=client.V1Preconditions(resource_version=resource_version)
        )
        try:
            self._call(
                f"delete IPBlock {name}",
                self._custom.delete_cluster_custom_object,
                IPAM_GROUP,
                IPAM_VERSION,
                IPBLOCKS,
                name,
                body=options,
            )
        except client.ApiException as exc:
            if _status_of(exc) == 404:
                return False
            raise Conflict(f"IPBlock {name} changed since {resource_version}") from None
        return True

    # -- the Lease ---------------------------------------------------------------------

    def get_lease(self, namespace: str, name: str) -> LeaseRecord | None:
        try:
            body = self._call(
                f"get Lease {namespace}/{name}",
                self._coordination.read_namespaced_lease,
                name,
                namespace,
            )
        except client.ApiException as exc:
            if _status_of(exc) == 404:
                return None
            raise StoreError(f"get Lease {namespace}/{name}: {_describe(exc)}") from None
        return _lease_from_object(body)

    def _lease_body(self, lease: LeaseRecord) -> dict[str, Any]:
        now = rfc3339_micro(datetime.now(UTC))
        metadata: dict[str, Any] = {"name": lease.name, "namespace": lease.namespace}
        if lease.resource_version:
            metadata["resourceVersion"] = lease.resource_version
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": metadata,
            "spec": {
                "holderIdentity": lease.holder,
                "leaseDurationSeconds": lease.duration_seconds,
                "leaseTransitions": lease.transitions,
                "acquireTime": now,
                "renewTime": now,
            },
        }

    def create_lease(self, lease: LeaseRecord) -> LeaseRecord:
        self._write("lease_create")
        what = f"create Lease {lease.namespace}/{lease.name}"
        try:
            body = self._call(
                what,
                self._coordination.create_namespaced_lease,
                lease.namespace,
                self._lease_body(lease),
            )
        except client.ApiException as exc:
            if _status_of(exc) == 409:
                raise Conflict(f"Lease {lease.namespace}/{lease.name} exists") from None
            raise StoreError(f"{what}: {_describe(exc)}") from None
        return _lease_from_object(body)

    def update_lease(self, lease: LeaseRecord) -> LeaseRecord:
        self._write("lease_update")
        what = f"update Lease {lease.namespace}/{lease.name}"
        try:
            body = self._call(
                what,
                self._coordination.replace_namespaced_lease,
                lease.name,
                lease.namespace,
                self._lease_body(lease),
            )
        except client.ApiException as exc:
            if _status_of(exc) == 409:
                raise Conflict(f"Lease {lease.namespace}/{lease.name} changed") from None
            raise StoreError(f"{what}: {_describe(exc)}") from None
        return _lease_from_object(body)

    # -- pods, nodes, domains ----------------------------------------------------------

    def list_node_pods(self, node: str) -> list[PodInfo]:
        items = self._pages(
            f"list pods of {node}",
            self._core.list_pod_for_all_namespaces,
            field_selector=f"spec.nodeName={node}",
        )
        return [_pod_from_object(item) for item in items]

    def cached_node_pods(self, node: str) -> list[PodInfo] | None:
        if self._pod_watch is None:
            self._pod_watch = NodePodWatch(self._client, node, on_list=self._listed)
            self._pod_watch.start()
        if self._pod_watch.node != node:
            return None  # one watch per store: the node's own
        return self._pod_watch.pods()

    def list_pods(self) -> list[PodInfo]:
        items = self._pages("list pods", self._core.list_pod_for_all_namespaces)
        return [_pod_from_object(item) for item in items]

    def list_nodes(self) -> list[str]:
        items = self._pages("list nodes", self._core.list_node)
        return [_text((item.get("metadata") or {}).get("name")) for item in items]

    def list_domains(self) -> list[VrfDomainSpec]:
        items = self._pages(
            "list VRFDomains",
            self._custom.list_cluster_custom_object,
            CNI_GROUP,
            CNI_VERSION,
            VRFDOMAINS,
        )
        domains = (domain_from_object(item) for item in items)
        return [d for d in domains if d is not None]
