"""One place that builds a Kubernetes API client from settings."""

from __future__ import annotations

from kubernetes import client, config


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
