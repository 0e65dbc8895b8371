"""pytest fixtures for the ``api`` tier: one real etcd + kube-apiserver per session.

Registered from the root ``conftest.py`` with
``pytest_plugins = ["tests.harness.api_fixtures", ...]``.

The first start needs the cached kube-apiserver binary; when it is missing the fixture runs
``scripts/build-kube-apiserver.sh`` (several minutes), so build it beforehand in CI.
``PYROUTE2_CNI_API_START_TIMEOUT`` (seconds, default 120) bounds the wait for /readyz.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from tests.harness.apiserver import ApiServer

if TYPE_CHECKING:
    import kubernetes.client


@pytest.fixture(scope="session")
def kube_api() -> Iterator[ApiServer]:
    """The session's etcd + kube-apiserver, stopped at the end of the session."""
    with ApiServer() as server:
        yield server


@pytest.fixture
def k8s_client(kube_api: ApiServer) -> Iterator[kubernetes.client.ApiClient]:
    """A fresh ``kubernetes.client.ApiClient`` for ``kube_api``, closed after the test."""
    client = kube_api.api_client()
    try:
        yield client
    finally:
        client.close()
