"""The real etcd + kube-apiserver harness behaves like the API the node daemon relies on."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import kubernetes.client
import kubernetes.config
import kubernetes.watch
import pytest
from kubernetes.client.exceptions import ApiException

from tests.harness.apiserver import ApiServer, poll_until

pytestmark = pytest.mark.api

GROUP = "test.pyroute2.org"
VERSION = "v1"
PLURAL = "widgets"
CRD_NAME = f"{PLURAL}.{GROUP}"
NAMESPACE = "default"

WIDGET_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["spec"],
    "properties": {
        "spec": {
            "type": "object",
            "required": ["size", "color"],
            "properties": {
                "size": {"type": "integer", "minimum": 1, "maximum": 10},
                "color": {"type": "string", "enum": ["red", "green", "blue"]},
                "label": {"type": "string", "pattern": "^[a-z][a-z0-9-]*$"},
            },
        },
        "status": {
            "type": "object",
            "properties": {"phase": {"type": "string"}},
        },
    },
}


def widget_crd_body() -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": CRD_NAME},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "plural": PLURAL,
                "singular": "widget",
                "kind": "Widget",
                "listKind": "WidgetList",
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": WIDGET_SCHEMA},
                    "subresources": {"status": {}},
                }
            ],
        },
    }


def widget(name: str, size: int = 1, color: str = "red") -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Widget",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"size": size, "color": color},
    }


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def crd_established(ext: kubernetes.client.ApiextensionsV1Api) -> bool:
    # Raw JSON: the client's models are newer than the 1.20 server.
    resp = ext.read_custom_resource_definition(CRD_NAME, _preload_content=False)
    try:
        crd = json.loads(resp.data)
    finally:
        resp.release_conn()
    conditions = crd.get("status", {}).get("conditions") or []
    return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)


@pytest.fixture(scope="module")
def widget_crd(kube_api: ApiServer) -> Iterator[str]:
    client = kube_api.api_client()
    ext = kubernetes.client.ApiextensionsV1Api(client)
    try:
        ext.create_custom_resource_definition(widget_crd_body(), _preload_content=False)
        poll_until(lambda: crd_established(ext), timeout=30, what=f"{CRD_NAME} Established")
        # Established means served; the discovery/REST handler may lag by a moment.
        objects = kubernetes.client.CustomObjectsApi(client)
        poll_until(
            lambda: _lists(objects),
            timeout=30,
            what=f"{CRD_NAME} served",
        )
        yield CRD_NAME
        ext.delete_custom_resource_definition(CRD_NAME, _preload_content=False)
    finally:
        client.close()


def _lists(objects: kubernetes.client.CustomObjectsApi) -> bool:
    try:
        objects.list_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL)
    except ApiException as err:
        if err.status == 404:
            return False
        raise
    return True


def test_version_and_kubeconfig(kube_api: ApiServer) -> None:
    client = kubernetes.config.new_client_from_config(config_file=kube_api.kubeconfig)
    try:
        info = kubernetes.client.VersionApi(client).get_code()
        assert info.git_version == "v1.20.2"
        names = [
            ns.metadata.name for ns in kubernetes.client.CoreV1Api(client).list_namespace().items
        ]
        assert "default" in names
    finally:
        client.close()


def test_custom_resource_conflict_and_watch(
    widget_crd: str, k8s_client: kubernetes.client.ApiClient
) -> None:
    api = kubernetes.client.CustomObjectsApi(k8s_client)
    start_rv = api.list_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL)["metadata"][
        "resourceVersion"
    ]
    name = unique("w")

    created = api.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, widget(name))
    stale_rv = created["metadata"]["resourceVersion"]
    assert created["spec"] == {"size": 1, "color": "red"}

    updated = dict(created)
    updated["spec"] = {"size": 2, "color": "green"}
    current = api.replace_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, name, updated)
    assert current["metadata"]["resourceVersion"] != stale_rv
    assert current["spec"]["size"] == 2

    stale = dict(created)
    stale["metadata"] = {**created["metadata"], "resourceVersion": stale_rv}
    stale["spec"] = {"size": 3, "color": "blue"}
    with pytest.raises(ApiException) as conflict:
        api.replace_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, name, stale)
    assert conflict.value.status == 409
    got = api.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, name)
    assert got["spec"] == {"size": 2, "color": "green"}

    # The status subresource ignores spec changes and the main resource ignores status.
    got["status"] = {"phase": "Ready"}
    api.replace_namespaced_custom_object_status(GROUP, VERSION, NAMESPACE, PLURAL, name, got)

    seen: list[tuple[str, int]] = []
    stream = kubernetes.watch.Watch()
    for event in stream.stream(
        api.list_namespaced_custom_object,
        GROUP,
        VERSION,
        NAMESPACE,
        PLURAL,
        resource_version=start_rv,
        timeout_seconds=30,
    ):
        obj = event["object"]
        if obj["metadata"]["name"] != name:
            continue
        seen.append((event["type"], obj["spec"]["size"]))
        if obj.get("status", {}).get("phase") == "Ready":
            stream.stop()
    assert seen[0] == ("ADDED", 1)
    assert ("MODIFIED", 2) in seen
    assert all(size != 3 for _, size in seen)

    api.delete_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, name)


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"size": 99, "color": "red"}, "spec.size"),
        ({"size": 1, "color": "purple"}, "spec.color"),
        ({"size": 1, "color": "red", "label": "Not Valid"}, "spec.label"),
        ({"color": "red"}, "spec.size"),
    ],
)
def test_schema_violation_is_422(
    widget_crd: str,
    k8s_client: kubernetes.client.ApiClient,
    spec: dict[str, Any],
    field: str,
) -> None:
    api = kubernetes.client.CustomObjectsApi(k8s_client)
    body = widget(unique("bad"))
    body["spec"] = spec
    with pytest.raises(ApiException) as invalid:
        api.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, body)
    assert invalid.value.status == 422
    assert field in str(invalid.value.body)
