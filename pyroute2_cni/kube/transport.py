"""The API calls the watches and writers make, and their errors.

:class:`KubeApi` is a small raw interface (JSON objects in, JSON objects out), implemented by
:class:`KubernetesApi` over the kubernetes client and by ``tests/harness/fake_kube_watch.py``
for unit tests.  Every failure becomes an :class:`ApiError` (``temporary`` when worth a
retry): :class:`Expired` for 410, on a list, a watch request or an ERROR watch event
(:func:`watch_error`); a watch that goes quiet raises :class:`StreamQuiet`.  A watch stream
may be closed from any thread, which wakes its blocked read.  Every timeout and backoff is
in :class:`WatchTimings`.
"""

from __future__ import annotations

import contextlib
import functools
import json
import random
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import urllib3
from kubernetes import client as k8s

from pyroute2_cni.kube.client import object_not_found
from pyroute2_cni.kube.objects import CRD_GROUP, CRD_VERSION, Json, Resource, value_at

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


# -- the real API -------------------------------------------------------------------------


def api_error(exc: Exception) -> ApiError:
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
                raise api_error(exc) from None
            except ValueError as exc:
                raise ApiError(0, "BadList", f"undecodable list: {exc}") from None
            for item in body.get("items") or ():
                if isinstance(item, Mapping):
                    items.append(item)
            resource_version = str(value_at(body, "metadata.resourceVersion") or resource_version)
            token = value_at(body, "metadata.continue") or None
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
            raise api_error(exc) from None
        return _HttpStream(response)

    def list(self, resource: Resource) -> tuple[list[Json], str]:
        return self.list_from(self._list_call(resource))

    def watch(self, resource: Resource, resource_version: str, timeout_seconds: int) -> RawStream:
        return self.watch_from(self._list_call(resource), resource_version, timeout_seconds)

    def _custom_call(self, fn: Callable[..., Any], *args: Any) -> Json:
        try:
            result = fn(CRD_GROUP, CRD_VERSION, *args, _request_timeout=self._timeout())
        except (k8s.ApiException, *_TRANSPORT_ERRORS) as exc:
            raise api_error(exc) from None
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


def watch_error(obj: object) -> ApiError:
    """The error an ERROR watch event carries: Expired on 410 (relist), else ApiError."""
    status = obj if isinstance(obj, Mapping) else {}
    code = status.get("code")
    reason = str(status.get("reason") or "")
    message = str(status.get("message") or "")
    if code == 410 or reason in ("Expired", "Gone"):
        return Expired(message or reason)
    return ApiError(code if isinstance(code, int) else 500, reason or "WatchError", message)
