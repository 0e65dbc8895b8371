"""One place that builds a Kubernetes API client from settings, and reads its 404s.

Actors that write to the API (events, node conditions, VRFNodeState) take their typed API
objects and the error class from here, so that only the Kubernetes modules import the
``kubernetes`` package (the import contracts in ``.importlinter`` hold it).
"""

from __future__ import annotations

import json

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException as ApiException


def make_api_client(kubeconfig: str) -> client.ApiClient:
    """A client from `kubeconfig`, or the in-cluster service account when it is empty."""
    configuration = client.Configuration()
    if kubeconfig:
        config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    else:
        config.load_incluster_config(client_configuration=configuration)
    # Bounded retries on connection errors; callers handle HTTP errors.
    configuration.retries = 3
    return client.ApiClient(configuration)


def core_v1(api: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api)


def custom_objects(api: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api)


def object_not_found(exc: client.ApiException) -> bool:
    """True when a 404 is the API's NotFound for one named object.

    A 404 also comes back for a path nothing serves: a starting API server answers
    "404 page not found" (plain text) for custom resources until its CRD informer has
    synced, and a cluster without the CRD does the same.  That says nothing about the
    object, so callers treat it as the API being unavailable, never as "deleted".
    """
    if int(exc.status or 0) != 404 or not exc.body:
        return False
    try:
        status = json.loads(exc.body)
    except (ValueError, TypeError):
        return False
    if not isinstance(status, dict) or status.get("reason") != "NotFound":
        return False
    details = status.get("details")
    return isinstance(details, dict) and bool(details.get("name"))
