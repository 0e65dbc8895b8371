"""The Kubernetes edge for watching: list+watch pumps and the VRFDomain status writer.

One :class:`ResourcePump` thread per resource (VRFDomain, VRFDomainBinding,
VRFNodeConfig, Node, Namespace) lists, then watches from the list's
resourceVersion, and turns every object into a typed value before handing it to
its sink (CRDWatcherActor's ``tell``).  Nothing past this module sees a dict or
a kubernetes model object.

The pumps talk to the API through :class:`KubeApi`, a small raw interface
(JSON objects in, JSON objects out) implemented by :class:`KubernetesApi` for
the real client and by ``tests/harness/fake_kube_watch.py`` for unit tests.

Invariants (keep in sync with tests/unit/test_crd_watcher.py):

- The pump remembers the resourceVersion of the last event (or bookmark) it
  handed on.  A stream that ends (server timeout), breaks (connection reset)
  or goes quiet (no byte within ``quiet_timeout``) is resumed from it: no
  relist, no event lost, none repeated.
- Only "410 Gone / Expired" (an ERROR event or an HTTP error) relists.  A
  relist hands on the complete object set as :class:`ResourceListed`
  (``relist=True``); the receiver compares it with what it had and synthesises
  DELETED for objects that vanished, so no deletion is lost either.
- Unknown event types are ignored; an object that cannot be read is handed on
  as unreadable (``obj=None``; for a VRFDomain, a :class:`DomainObject` whose
  ``spec`` is None and ``error`` says why), never dropped silently.
- Errors back off exponentially, bounded by ``backoff_max``; the pump stops
  within one socket shutdown when asked (:meth:`ResourcePump.stop` shuts the
  open stream's socket down, waking the blocked read).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Any, Protocol

import urllib3
from kubernetes import client as k8s

from pyroute2_cni.kube.client import object_not_found
from pyroute2_cni.kube.crd_validate import REASON_PREFIX_CHANGE_REFUSED, BlockCut, Verdict
from pyroute2_cni.messages.crd import (
    DEFAULT_ACCEPT_DEFAULT_ROUTE,
    Attachment,
    AttachmentType,
    ChangeKind,
    ImportPrefix,
    NodeInfo,
    NodeInterface,
    VrfDomainBindingSpec,
    VrfDomainSpec,
    VrfNodeConfigSpec,
)

log = logging.getLogger(__name__)

CRD_GROUP = "cni.pyroute2.org"
CRD_VERSION = "v1alpha1"
DEFAULT_VXLAN_PORT = 4789

Json = Mapping[str, Any]


class Resource(Enum):
    """The watched resources; the value is the plural resource name."""

    VRF_DOMAIN = "vrfdomains"
    VRF_DOMAIN_BINDING = "vrfdomainbindings"
    VRF_NODE_CONFIG = "vrfnodeconfigs"
    NODE = "nodes"
    NAMESPACE = "namespaces"

    @property
    def custom(self) -> bool:
        return self not in (Resource.NODE, Resource.NAMESPACE)


# -- errors -------------------------------------------------------------------------------


class ApiError(Exception):
    """An API call failed.  ``status`` is the HTTP status, 0 when the server was unreachable."""

    def __init__(self, status: int, reason: str = "", message: str = "") -> None:
        super().__init__(f"{status} {reason}: {message}" if message else f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def temporary(self) -> bool:
        """Worth retrying after a delay (unreachable, throttled, server trouble)."""
        return self.status == 0 or self.status == 429 or self.status >= 500


class Expired(ApiError):
    """410: the resourceVersion is too old to watch from (or a continue token expired)."""

    def __init__(self, message: str = "") -> None:
        super().__init__(410, "Expired", message)


class StreamQuiet(Exception):
    """No byte arrived within the quiet timeout: the connection is presumed dead."""


# -- the raw interface the pumps and the writer use ---------------------------------------


class RawStream(Protocol):
    """A watch response: iterate for decoded events; close() from any thread ends it."""

    def __iter__(self) -> Iterator[Json]: ...

    def close(self) -> None: ...


class KubeApi(Protocol):
    def list(self, resource: Resource) -> tuple[list[Json], str]:
        """Every object and the list's resourceVersion.  Raises ApiError (Expired on 410)."""
        ...

    def watch(self, resource: Resource, resource_version: str, timeout_seconds: int) -> RawStream:
        """Open a watch with bookmarks from `resource_version`.  Raises ApiError."""
        ...

    def create(self, resource: Resource, body: Json) -> Json: ...

    def replace_status(self, resource: Resource, name: str, body: Json) -> Json:
        """PUT the status subresource; `body` carries metadata.resourceVersion (409 if stale)."""
        ...

    def close(self) -> None: ...


# -- timings --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class WatchTimings:
    """Every timeout and backoff of the watches and API writes, in seconds."""

    # timeoutSeconds asked of the API server for one watch request; each request
    # adds up to `server_timeout_jitter` of it at random so nodes do not all
    # reconnect at once.
    server_timeout: float = 300.0
    server_timeout_jitter: float = 0.2
    # No byte (event or bookmark) for this long: reconnect.  Longer than the
    # server timeout with jitter, since a quiet resource sends nothing until then.
    quiet_timeout: float = 400.0
    connect_timeout: float = 10.0
    # list, create and status writes.
    request_timeout: float = 30.0
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    # How long stop() waits for the pump threads.
    stop_timeout: float = 2.0
    # A node rewrites a VRFDomain status that someone else overwrote (same
    # generation) at most this often: nodes that disagree, e.g. two versions
    # during a rolling upgrade, then cannot ping-pong status writes.
    status_min_interval: float = 30.0
    # While a VRFDomain's change of cut is refused (PrefixChangeRefused), the
    # IPBlocks are listed again this often to let the change through once they
    # are drained.
    recut_recheck: float = 30.0

    def __post_init__(self) -> None:
        longest = self.server_timeout * (1 + self.server_timeout_jitter)
        if self.quiet_timeout <= longest:
            raise ValueError(
                f"quiet_timeout ({self.quiet_timeout:g}) must exceed the longest "
                f"watch request ({longest:g} s)"
            )

    def backoff(self, failures: int) -> float:
        """Delay before attempt `failures` + 1 (failures >= 1)."""
        return float(min(self.backoff_initial * 2 ** max(failures - 1, 0), self.backoff_max))

    def watch_seconds(self) -> int:
        spread = self.server_timeout * self.server_timeout_jitter * random.random()
        return max(1, int(self.server_timeout + spread))


# -- typed values the pumps hand on ---------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Condition:
    """One entry of status.conditions."""

    type: str
    status: str  # "True", "False" or "Unknown"
    reason: str
    message: str
    last_transition_time: str = ""
    observed_generation: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class DomainObject:
    """A VRFDomain with the metadata and status the watcher needs besides its spec."""

    name: str
    created: str = ""  # metadata.creationTimestamp
    generation: int = 0
    resource_version: str = ""
    # None when the spec cannot be read into a VrfDomainSpec; `error` says why.
    spec: VrfDomainSpec | None
    error: str = ""
    conditions: tuple[Condition, ...] = ()
    observed_generation: int = 0
    # status.acceptedCut: what the domain's IPBlocks were cut from.
    accepted_cut: BlockCut | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class NamespaceObject:
    name: str


WatchedObject = DomainObject | VrfDomainBindingSpec | VrfNodeConfigSpec | NodeInfo | NamespaceObject


@dataclass(frozen=True, slots=True, kw_only=True)
class ResourceListed:
    """Every object of `resource` after a list; `relist` after a 410 (not the first list)."""

    resource: Resource
    objects: tuple[WatchedObject, ...]
    relist: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class ResourceChanged:
    """One watch event.  `obj` is None when the object is present but unreadable."""

    resource: Resource
    kind: ChangeKind
    name: str
    obj: WatchedObject | None


@dataclass(frozen=True, slots=True, kw_only=True)
class PumpFailed:
    """A pump thread died of an unexpected exception (a bug): the owner should crash."""

    resource: Resource
    error: str


PumpMessage = ResourceListed | ResourceChanged | PumpFailed


# -- conversion at the edge -----------------------------------------------------------------


class Malformed(ValueError):
    """The object does not have the shape the CRD promises."""


def _at(obj: Json, path: str) -> Any:
    value: Any = obj
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _int(obj: Json, path: str, default: int | None = None) -> int:
    value = _at(obj, path)
    if value is None and default is not None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        if value is None:
            raise Malformed(f"{path} is missing")
        raise Malformed(f"{path} ({value!r}) must be an integer")
    return value


def _str(obj: Json, path: str, default: str | None = None) -> str:
    value = _at(obj, path)
    if value is None and default is not None:
        return default
    if not isinstance(value, str):
        if value is None:
            raise Malformed(f"{path} is missing")
        raise Malformed(f"{path} ({value!r}) must be a string")
    return value


def _list(obj: Json, path: str) -> list[Any]:
    value = _at(obj, path)
    if value is None:
        return []
    if not isinstance(value, list):
        raise Malformed(f"{path} must be a list")
    return value


def _strings(obj: Json, path: str) -> tuple[str, ...]:
    values = _list(obj, path)
    for index, value in enumerate(values):
        if not isinstance(value, str):
            raise Malformed(f"{path}[{index}] ({value!r}) must be a string")
    return tuple(values)


def _bool(obj: Json, path: str, default: bool) -> bool:
    value = _at(obj, path)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise Malformed(f"{path} ({value!r}) must be true or false")
    return value


def _import_prefixes(obj: Json) -> tuple[ImportPrefix, ...]:
    prefixes: list[ImportPrefix] = []
    for index, raw in enumerate(_list(obj, "spec.importPrefixes")):
        where = f"spec.importPrefixes[{index}]"
        if not isinstance(raw, Mapping):
            raise Malformed(f"{where} must be an object")
        try:
            cidr = _str(raw, "cidr")
            le = None if raw.get("le") is None else _int(raw, "le")
        except Malformed as exc:
            raise Malformed(f"{where}.{exc}") from None
        prefixes.append(ImportPrefix(cidr=cidr, le=le))
    return tuple(prefixes)


def object_name(obj: Json) -> str:
    name = _at(obj, "metadata.name")
    return name if isinstance(name, str) else ""


def object_resource_version(obj: Json) -> str:
    rv = _at(obj, "metadata.resourceVersion")
    return rv if isinstance(rv, str) else ""


def _domain_spec(obj: Json) -> VrfDomainSpec:
    attachments: list[Attachment] = []
    for index, raw in enumerate(_list(obj, "spec.attachments")):
        where = f"spec.attachments[{index}]"
        if not isinstance(raw, Mapping):
            raise Malformed(f"{where} must be an object")
        kind = _str(raw, "type")
        try:
            attachment_type = AttachmentType(kind)
        except ValueError:
            raise Malformed(f"{where}.type ({kind!r}) must be l2vni or l3vni") from None
        try:
            vni = _int(raw, "vni")
            port = _int(raw, "port", DEFAULT_VXLAN_PORT)
        except Malformed as exc:
            raise Malformed(f"{where}.{exc}") from None
        attachments.append(Attachment(type=attachment_type, vni=vni, port=port))
    return VrfDomainSpec(
        name=object_name(obj),
        vrf=_int(obj, "spec.vrf"),
        table=_int(obj, "spec.table"),
        prefix=_str(obj, "spec.prefix"),
        prefixlen=_int(obj, "spec.prefixlen"),
        ipblocklen=_int(obj, "spec.ipblocklen"),
        attachments=tuple(attachments),
        resource_version=object_resource_version(obj),
        import_route_targets=_strings(obj, "spec.routeTargets.import"),
        export_route_targets=_strings(obj, "spec.routeTargets.export"),
        import_prefixes=_import_prefixes(obj),
        accept_default_route=_bool(obj, "spec.acceptDefaultRoute", DEFAULT_ACCEPT_DEFAULT_ROUTE),
    )


def _conditions(obj: Json) -> tuple[Condition, ...]:
    out: list[Condition] = []
    raw_list = _at(obj, "status.conditions")
    if not isinstance(raw_list, list):
        return ()
    for raw in raw_list:
        if not isinstance(raw, Mapping):
            continue
        try:
            out.append(
                Condition(
                    type=_str(raw, "type"),
                    status=_str(raw, "status"),
                    reason=_str(raw, "reason", ""),
                    message=_str(raw, "message", ""),
                    last_transition_time=_str(raw, "lastTransitionTime", ""),
                    observed_generation=_int(raw, "observedGeneration", 0),
                )
            )
        except Malformed:
            continue
    return tuple(out)


def _accepted_cut(obj: Json) -> BlockCut | None:
    raw = _at(obj, "status.acceptedCut")
    if not isinstance(raw, Mapping):
        return None
    try:
        return BlockCut(
            vrf=_int(raw, "vrf"),
            prefix=_str(raw, "prefix"),
            prefixlen=_int(raw, "prefixlen"),
            ipblocklen=_int(raw, "ipblocklen"),
        )
    except Malformed:
        return None


def domain_from(obj: Json) -> DomainObject:
    """A VRFDomain JSON object as a DomainObject; never raises."""
    spec: VrfDomainSpec | None
    try:
        spec = _domain_spec(obj)
        error = ""
    except Malformed as exc:
        spec, error = None, str(exc)
    generation = _at(obj, "metadata.generation")
    observed = _at(obj, "status.observedGeneration")
    created = _at(obj, "metadata.creationTimestamp")
    return DomainObject(
        name=object_name(obj),
        created=created if isinstance(created, str) else "",
        generation=generation if isinstance(generation, int) else 0,
        resource_version=object_resource_version(obj),
        spec=spec,
        error=error,
        conditions=_conditions(obj),
        observed_generation=observed if isinstance(observed, int) else 0,
        accepted_cut=_accepted_cut(obj),
    )


def binding_from(obj: Json) -> VrfDomainBindingSpec:
    return VrfDomainBindingSpec(
        name=object_name(obj),
        namespace=_str(obj, "spec.namespaceRef.name"),
        domain=_str(obj, "spec.vrfDomainRef.name"),
    )


def node_config_from(obj: Json) -> VrfNodeConfigSpec:
    reflectors: list[str] = []
    for index, raw in enumerate(_list(obj, "spec.routeReflectors")):
        if not isinstance(raw, str):
            raise Malformed(f"spec.routeReflectors[{index}] must be a string")
        reflectors.append(raw)
    interfaces: list[NodeInterface] = []
    for index, raw in enumerate(_list(obj, "spec.interfaces")):
        if not isinstance(raw, Mapping):
            raise Malformed(f"spec.interfaces[{index}] must be an object")
        interfaces.append(NodeInterface(name=_str(raw, "name"), local=_str(raw, "local", "")))
    return VrfNodeConfigSpec(
        name=object_name(obj),
        node=_str(obj, "spec.nodeRef.name"),
        router_id=_str(obj, "spec.routerId", ""),
        route_reflectors=tuple(reflectors),
        interfaces=tuple(interfaces),
    )


def node_from(obj: Json) -> NodeInfo:
    internal = ""
    for raw in _list(obj, "status.addresses"):
        if isinstance(raw, Mapping) and raw.get("type") == "InternalIP":
            address = raw.get("address")
            if isinstance(address, str):
                internal = address
                break
    return NodeInfo(name=object_name(obj), internal_ip=internal)


def convert(resource: Resource, obj: Json) -> WatchedObject:
    """The typed value of one object; raises Malformed (never for a VRFDomain)."""
    if not object_name(obj):
        raise Malformed("metadata.name is missing")
    match resource:
        case Resource.VRF_DOMAIN:
            return domain_from(obj)
        case Resource.VRF_DOMAIN_BINDING:
            return binding_from(obj)
        case Resource.VRF_NODE_CONFIG:
            return node_config_from(obj)
        case Resource.NODE:
            return node_from(obj)
        case Resource.NAMESPACE:
            return NamespaceObject(name=object_name(obj))


# -- the real API -------------------------------------------------------------------------


def _api_error(exc: Exception) -> ApiError:
    if isinstance(exc, k8s.ApiException):
        status = int(exc.status or 0)
        reason = str(exc.reason or "")
        message = ""
        body = exc.body
        if body:
            with contextlib.suppress(ValueError, TypeError):
                decoded = json.loads(body)
                if isinstance(decoded, Mapping):
                    reason = str(decoded.get("reason") or reason)
                    message = str(decoded.get("message") or "")
        if status == 410:
            return Expired(message or reason)
        if status == 404 and not object_not_found(exc):
            # A path not served (yet), e.g. custom resources while the API server starts:
            # temporary, and never to be read as "the object was deleted".
            return ApiError(503, "NotServed", message or str(body or "")[:200])
        return ApiError(status, reason, message)
    return ApiError(0, type(exc).__name__, str(exc))


_TRANSPORT_ERRORS = (urllib3.exceptions.HTTPError, OSError)


class _HttpStream:
    """A watch response read line by line; close() may come from any thread."""

    def __init__(self, response: urllib3.BaseHTTPResponse) -> None:
        self._response = response
        self._lock = threading.Lock()
        self._closed = False
        self._reading = False

    def __iter__(self) -> Iterator[Json]:
        with self._lock:
            if self._closed:
                return
            self._reading = True
        buffer = bytearray()
        try:
            for chunk in self._response.stream(amt=None, decode_content=False):
                buffer.extend(chunk)
                while (newline := buffer.find(b"\n")) >= 0:
                    line = bytes(buffer[:newline])
                    del buffer[: newline + 1]
                    if not line.strip():
                        continue
                    try:
                        event = json.loads(line)
                    except ValueError as exc:
                        raise ApiError(0, "BadEvent", f"undecodable watch event: {exc}") from None
                    if isinstance(event, Mapping):
                        yield event
        except urllib3.exceptions.ReadTimeoutError as exc:
            if self._closed:
                return
            raise StreamQuiet(str(exc)) from None
        except Exception as exc:
            # After close() the read fails in whatever way the shut-down socket
            # makes it fail; that is the end of the stream, not an error.
            if self._closed:
                return
            if isinstance(exc, ApiError):
                raise
            if isinstance(exc, _TRANSPORT_ERRORS):
                raise ApiError(0, "StreamBroken", str(exc)) from None
            raise
        finally:
            with self._lock:
                self._reading = False
                self._closed = True
            self._response.close()

    def close(self) -> None:
        with self._lock:
            if self._closed and not self._reading:
                return
            self._closed = True
            reading = self._reading
        if reading:
            # Wake the reader blocked in recv; it closes the response itself.
            with contextlib.suppress(Exception):
                self._response.shutdown()
        else:
            self._response.close()


class KubernetesApi:
    """KubeApi over the kubernetes client (one ApiClient per instance; the owner closes it)."""

    def __init__(self, api_client: Any, timings: WatchTimings | None = None) -> None:
        self._client = api_client
        self._timings = timings or WatchTimings()
        self._custom = k8s.CustomObjectsApi(api_client)
        self._core = k8s.CoreV1Api(api_client)

    def _list_call(self, resource: Resource) -> Callable[..., Any]:
        if resource.custom:

            def call(**kwargs: Any) -> Any:
                return self._custom.list_cluster_custom_object(
                    CRD_GROUP, CRD_VERSION, resource.value, **kwargs
                )

            return call
        if resource is Resource.NODE:
            return self._core.list_node  # type: ignore[no-any-return]
        return self._core.list_namespace  # type: ignore[no-any-return]

    def _timeout(self) -> tuple[float, float]:
        return (self._timings.connect_timeout, self._timings.request_timeout)

    def pods_on(self, node: str) -> Callable[..., Any]:
        """The list call for the pods bound to `node`, for list_from and watch_from."""
        return functools.partial(
            self._core.list_pod_for_all_namespaces, field_selector=f"spec.nodeName={node}"
        )

    def list_from(self, call: Callable[..., Any]) -> tuple[list[Json], str]:
        """Every object a list call returns, page by page, and the list's resourceVersion."""
        items: list[Json] = []
        resource_version = ""
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"limit": 500}
            if token:
                kwargs["_continue"] = token
            try:
                response = call(**kwargs, _preload_content=False, _request_timeout=self._timeout())
                try:
                    body = json.loads(response.data)
                finally:
                    response.release_conn()
            except (k8s.ApiException, *_TRANSPORT_ERRORS) as exc:
                raise _api_error(exc) from None
            except ValueError as exc:
                raise ApiError(0, "BadList", f"undecodable list: {exc}") from None
            for item in body.get("items") or ():
                if isinstance(item, Mapping):
                    items.append(item)
            resource_version = str(_at(body, "metadata.resourceVersion") or resource_version)
            token = _at(body, "metadata.continue") or None
            if not token:
                return items, resource_version

    def watch_from(
        self, call: Callable[..., Any], resource_version: str, timeout_seconds: int
    ) -> RawStream:
        """A watch of a list call from `resource_version`, with bookmarks."""
        try:
            response = call(
                watch=True,
                resource_version=resource_version,
                allow_watch_bookmarks=True,
                timeout_seconds=timeout_seconds,
                _preload_content=False,
                _request_timeout=(self._timings.connect_timeout, self._timings.quiet_timeout),
            )
        except (k8s.ApiException, *_TRANSPORT_ERRORS) as exc:
            raise _api_error(exc) from None
        return _HttpStream(response)

    def list(self, resource: Resource) -> tuple[list[Json], str]:
        return self.list_from(self._list_call(resource))

    def watch(self, resource: Resource, resource_version: str, timeout_seconds: int) -> RawStream:
        return self.watch_from(self._list_call(resource), resource_version, timeout_seconds)

    def _custom_call(self, fn: Callable[..., Any], *args: Any) -> Json:
        try:
            result = fn(CRD_GROUP, CRD_VERSION, *args, _request_timeout=self._timeout())
        except (k8s.ApiException, *_TRANSPORT_ERRORS) as exc:
            raise _api_error(exc) from None
        if not isinstance(result, Mapping):
            raise ApiError(0, "BadResponse", f"expected an object, got {type(result).__name__}")
        return result

    def create(self, resource: Resource, body: Json) -> Json:
        if not resource.custom:
            raise ValueError(f"create is only for custom resources, not {resource.value}")
        return self._custom_call(
            self._custom.create_cluster_custom_object, resource.value, dict(body)
        )

    def replace_status(self, resource: Resource, name: str, body: Json) -> Json:
        if not resource.custom:
            raise ValueError(f"replace_status is only for custom resources, not {resource.value}")
        return self._custom_call(
            self._custom.replace_cluster_custom_object_status, resource.value, name, dict(body)
        )

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._client.close()


# -- the test hook ------------------------------------------------------------------------


class WatchControl:
    """Test hook: cut open streams and choose where the next watch of a resource starts.

    ``hold`` cuts the resource's stream and keeps its pump from reconnecting until
    ``release``, which may pass the resourceVersion the next watch starts from
    (an old one forces a 410).  Production code passes no control.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._held: set[Resource] = set()
        self._waiting: set[Resource] = set()
        self._override: dict[Resource, str] = {}
        self._streams: dict[Resource, list[RawStream]] = {}
        self._watches: dict[Resource, int] = {}

    # called by the test
    def cut(self, resource: Resource) -> None:
        """Close the open stream(s) of `resource`, as a dropped connection would."""
        with self._cond:
            streams = list(self._streams.get(resource, ()))
        for stream in streams:
            stream.close()

    def hold(self, resource: Resource) -> None:
        with self._cond:
            self._held.add(resource)
        self.cut(resource)

    def release(self, resource: Resource, resource_version: str | None = None) -> None:
        with self._cond:
            self._held.discard(resource)
            if resource_version is not None:
                self._override[resource] = resource_version
            self._cond.notify_all()

    def waiting(self, resource: Resource) -> bool:
        """True while the pump of `resource` is held before its next watch."""
        with self._cond:
            return resource in self._waiting

    def watches(self, resource: Resource) -> int:
        """How many watch requests the pump(s) of `resource` opened."""
        with self._cond:
            return self._watches.get(resource, 0)

    # called by the pump
    def before_watch(self, resource: Resource, resource_version: str, stop: threading.Event) -> str:
        with self._cond:
            self._waiting.add(resource)
            try:
                while resource in self._held and not stop.is_set():
                    self._cond.wait(0.05)
            finally:
                self._waiting.discard(resource)
            return self._override.pop(resource, resource_version)

    def opened(self, resource: Resource, stream: RawStream) -> None:
        with self._cond:
            self._streams.setdefault(resource, []).append(stream)
            self._watches[resource] = self._watches.get(resource, 0) + 1

    def closed(self, resource: Resource, stream: RawStream) -> None:
        with self._cond:
            streams = self._streams.get(resource, [])
            if stream in streams:
                streams.remove(stream)


# -- the pump -----------------------------------------------------------------------------


def watch_error(obj: object) -> ApiError:
    """The error an ERROR watch event carries: Expired on 410 (relist), else ApiError."""
    status = obj if isinstance(obj, Mapping) else {}
    code = status.get("code")
    reason = str(status.get("reason") or "")
    message = str(status.get("message") or "")
    if code == 410 or reason in ("Expired", "Gone"):
        return Expired(message or reason)
    return ApiError(code if isinstance(code, int) else 500, reason or "WatchError", message)


class ResourcePump:
    """List, then watch one resource in a thread of its own; see the module docstring."""

    def __init__(
        self,
        resource: Resource,
        api: KubeApi,
        sink: Callable[[PumpMessage], None],
        *,
        timings: WatchTimings,
        control: WatchControl | None = None,
        name: str = "crd-watcher",
    ) -> None:
        self.resource = resource
        self._api = api
        self._sink = sink
        self._timings = timings
        self._control = control
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._stream: RawStream | None = None
        self._log = logging.getLogger(f"{__name__}.{name}.{resource.value}")
        self._thread = threading.Thread(
            target=self._run, name=f"{name}-{resource.value}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to end and wake it (non-blocking; see join)."""
        self._stop.set()
        with self._lock:
            stream = self._stream
        if stream is not None:
            stream.close()

    def join(self, timeout: float) -> bool:
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        try:
            self._loop()
        except Exception as exc:
            self._log.exception("watch pump failed")
            self._sink(PumpFailed(resource=self.resource, error=repr(exc)))
        finally:
            self._api.close()

    def _loop(self) -> None:
        resource_version: str | None = None
        listed = False
        failures = 0
        while not self._stop.is_set():
            try:
                if resource_version is None:
                    objects, resource_version = self._list()
                    if self._stop.is_set():
                        return
                    self._sink(
                        ResourceListed(resource=self.resource, objects=objects, relist=listed)
                    )
                    listed = True
                started = time.monotonic()
                resource_version, events = self._watch(resource_version)
                if events or time.monotonic() - started >= self._timings.backoff_initial:
                    failures = 0
                    continue
                # A stream that ends at once with nothing in it: do not spin.
                failures += 1
                self._stop.wait(self._timings.backoff(failures))
            except Expired as exc:
                self._log.info("resourceVersion %s expired (%s); relisting", resource_version, exc)
                resource_version = None
                failures += 1
                if failures > 1:
                    self._stop.wait(self._timings.backoff(failures - 1))
            except StreamQuiet:
                self._log.info("watch quiet for %gs; reconnecting", self._timings.quiet_timeout)
            except ApiError as exc:
                failures += 1
                delay = self._timings.backoff(failures)
                self._log.warning(
                    "%s failed (%s); retrying in %.1f s",
                    "list" if resource_version is None else "watch",
                    exc,
                    delay,
                )
                self._stop.wait(delay)

    def _list(self) -> tuple[tuple[WatchedObject, ...], str]:
        raw, resource_version = self._api.list(self.resource)
        objects: list[WatchedObject] = []
        for obj in raw:
            try:
                objects.append(convert(self.resource, obj))
            except Malformed as exc:
                self._log.warning("ignoring unreadable %s: %s", object_name(obj) or "object", exc)
        self._log.debug("listed %d at resourceVersion %s", len(objects), resource_version)
        return tuple(objects), resource_version

    def _watch(self, resource_version: str) -> tuple[str, int]:
        """Watch until the stream ends; return the last resourceVersion seen and the event count."""
        if self._control is not None:
            resource_version = self._control.before_watch(
                self.resource, resource_version, self._stop
            )
        if self._stop.is_set():
            return resource_version, 0
        stream = self._api.watch(self.resource, resource_version, self._timings.watch_seconds())
        with self._lock:
            self._stream = stream
        if self._control is not None:
            self._control.opened(self.resource, stream)
        events = 0
        try:
            if self._stop.is_set():
                return resource_version, 0
            for event in stream:
                if self._stop.is_set():
                    break
                events += 1
                resource_version = self._handle(event, resource_version)
        finally:
            with self._lock:
                self._stream = None
            if self._control is not None:
                self._control.closed(self.resource, stream)
            stream.close()
        return resource_version, events

    def _handle(self, event: Json, resource_version: str) -> str:
        etype = event.get("type")
        obj = event.get("object")
        if etype == "ERROR":
            raise watch_error(obj)
        if not isinstance(obj, Mapping):
            return resource_version
        new_version = object_resource_version(obj) or resource_version
        if etype == "BOOKMARK":
            return new_version
        if etype not in ("ADDED", "MODIFIED", "DELETED"):
            self._log.debug("ignoring watch event of unknown type %r", etype)
            return resource_version
        kind = ChangeKind[etype]
        name = object_name(obj)
        typed: WatchedObject | None
        try:
            typed = convert(self.resource, obj)
        except Malformed as exc:
            self._log.warning("%s %s is unreadable: %s", etype.lower(), name or "object", exc)
            typed = None
        if name:
            self._sink(ResourceChanged(resource=self.resource, kind=kind, name=name, obj=typed))
        return new_version


class WatchPumps:
    """The five pumps of one CRDWatcherActor instance."""

    def __init__(
        self,
        api_factory: Callable[[], KubeApi],
        sink: Callable[[PumpMessage], None],
        *,
        timings: WatchTimings,
        control: WatchControl | None = None,
        resources: Sequence[Resource] = tuple(Resource),
        name: str = "crd-watcher",
    ) -> None:
        self._timings = timings
        self.pumps = [
            ResourcePump(resource, api_factory(), sink, timings=timings, control=control, name=name)
            for resource in resources
        ]

    def start(self) -> None:
        for pump in self.pumps:
            pump.start()

    def stop(self) -> bool:
        """Stop every pump; True when all threads ended within stop_timeout."""
        for pump in self.pumps:
            pump.stop()
        deadline = time.monotonic() + self._timings.stop_timeout
        return all(pump.join(max(0.0, deadline - time.monotonic())) for pump in self.pumps)


# -- the VRFDomain status writer ------------------------------------------------------------

CONDITION_ACCEPTED = "Accepted"
CONDITION_READY = "Ready"


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True, kw_only=True)
class DesiredCondition:
    type: str
    status: bool
    reason: str
    message: str


def desired_conditions(verdict: Verdict) -> tuple[DesiredCondition, ...]:
    """Accepted and Ready for one verdict.

    Ready is cluster-wide: True when the spec is accepted, so every node deploys
    it; per-node deployment state is each node's own business (metrics, logs),
    not something every node should write into one shared object.
    """
    accepted = DesiredCondition(
        type=CONDITION_ACCEPTED,
        status=verdict.accepted,
        reason=verdict.reason,
        message=verdict.message,
    )
    if verdict.accepted:
        ready = DesiredCondition(
            type=CONDITION_READY,
            status=True,
            reason="Accepted",
            message="accepted; every node deploys the VRF",
        )
    elif verdict.reason == REASON_PREFIX_CHANGE_REFUSED and verdict.cut is not None:
        ready = DesiredCondition(
            type=CONDITION_READY,
            status=True,
            reason="PreviousCutDeployed",
            message=(
                f"every node deploys the VRF with the previously accepted "
                f"{verdict.cut.describe()}; the change of them is refused (see Accepted)"
            ),
        )
    else:
        ready = DesiredCondition(
            type=CONDITION_READY, status=False, reason=verdict.reason, message=verdict.message
        )
    return (accepted, ready)


def _status_text(value: bool) -> str:
    return "True" if value else "False"


def merged_conditions(
    domain: DomainObject, wanted: Sequence[DesiredCondition], now: str
) -> tuple[Condition, ...] | None:
    """The conditions to write, or None when the object already says what we want.

    Conditions of other types are kept; lastTransitionTime changes only when the
    status does.
    """
    current = {c.type: c for c in domain.conditions}
    changed = domain.observed_generation != domain.generation
    result: dict[str, Condition] = dict(current)
    for want in wanted:
        status = _status_text(want.status)
        have = current.get(want.type)
        same = (
            have is not None
            and have.status == status
            and have.reason == want.reason
            and have.message == want.message
            and have.observed_generation == domain.generation
        )
        if same:
            continue
        changed = True
        transition = have.last_transition_time if have is not None and have.status == status else ""
        result[want.type] = Condition(
            type=want.type,
            status=status,
            reason=want.reason,
            message=want.message,
            last_transition_time=transition or now,
            observed_generation=domain.generation,
        )
    if not changed:
        return None
    return tuple(result.values())


def _condition_json(condition: Condition) -> dict[str, Any]:
    return {
        "type": condition.type,
        "status": condition.status,
        "reason": condition.reason,
        "message": condition.message,
        "lastTransitionTime": condition.last_transition_time,
        "observedGeneration": condition.observed_generation,
    }


def default_domain_body(spec: VrfDomainSpec) -> dict[str, Any]:
    return {
        "apiVersion": f"{CRD_GROUP}/{CRD_VERSION}",
        "kind": "VRFDomain",
        "metadata": {"name": spec.name},
        "spec": {
            "vrf": spec.vrf,
            "table": spec.table,
            "prefix": spec.prefix,
            "prefixlen": spec.prefixlen,
            "ipblocklen": spec.ipblocklen,
            "attachments": [
                {"type": a.type.value, "vni": a.vni, "port": a.port} for a in spec.attachments
            ],
        },
    }


class DomainWriter:
    """Typed writes of VRFDomains: create the default one, write status conditions."""

    def __init__(self, api: KubeApi) -> None:
        self.api = api

    def create_domain(self, spec: VrfDomainSpec) -> DomainObject:
        """Create `spec`; raises ApiError (409 AlreadyExists when it exists)."""
        return domain_from(self.api.create(Resource.VRF_DOMAIN, default_domain_body(spec)))

    def write_conditions(
        self,
        domain: DomainObject,
        conditions: Sequence[Condition],
        accepted_cut: BlockCut | None = None,
    ) -> DomainObject:
        """Replace the status of `domain`, conditional on its resourceVersion (409 if stale).

        `accepted_cut` (status.acceptedCut) is written when given; omitted, it is dropped.
        """
        status: dict[str, Any] = {
            "observedGeneration": domain.generation,
            "conditions": [_condition_json(c) for c in conditions],
        }
        if accepted_cut is not None:
            status["acceptedCut"] = {
                "vrf": accepted_cut.vrf,
                "prefix": accepted_cut.prefix,
                "prefixlen": accepted_cut.prefixlen,
                "ipblocklen": accepted_cut.ipblocklen,
            }
        body = {
            "apiVersion": f"{CRD_GROUP}/{CRD_VERSION}",
            "kind": "VRFDomain",
            "metadata": {"name": domain.name, "resourceVersion": domain.resource_version},
            "status": status,
        }
        return domain_from(self.api.replace_status(Resource.VRF_DOMAIN, domain.name, body))

    def write_node_config_status(
        self, name: str, *, accepted: bool, ready: bool, conditions: Sequence[Condition]
    ) -> None:
        """Replace a VRFNodeConfig's status (written only by the node it names).

        Rare (only when FRR's outcome changes), so the current resourceVersion
        is read with a LIST of the few VRFNodeConfigs; a 409 is retried once.
        """
        for attempt in range(2):
            items, _ = self.api.list(Resource.VRF_NODE_CONFIG)
            current = next((i for i in items if i["metadata"]["name"] == name), None)
            if current is None:
                return
            try:
                self._replace_node_config_status(
                    name,
                    current["metadata"]["resourceVersion"],
                    accepted=accepted,
                    ready=ready,
                    conditions=conditions,
                )
                return
            except ApiError as exc:
                if exc.status != 409 or attempt:
                    raise

    def _replace_node_config_status(
        self,
        name: str,
        resource_version: str,
        *,
        accepted: bool,
        ready: bool,
        conditions: Sequence[Condition],
    ) -> None:
        body = {
            "apiVersion": f"{CRD_GROUP}/{CRD_VERSION}",
            "kind": "VRFNodeConfig",
            "metadata": {"name": name, "resourceVersion": resource_version},
            "status": {
                "accepted": accepted,
                "ready": ready,
                "conditions": [_condition_json(c) for c in conditions],
            },
        }
        self.api.replace_status(Resource.VRF_NODE_CONFIG, name, body)
