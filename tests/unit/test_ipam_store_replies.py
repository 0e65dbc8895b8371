"""KubeBlockStore: a reply cut off while its body is read is an unknown outcome, and a
404 is a deletion only when it names the object.

The API server answers a write in two steps (status line and headers, then the
body); a restart between them leaves a committed write whose reply breaks during
the body read.  That must surface as StoreUnavailable (the actor's "outcome
unknown"), never as a raw urllib3 error that crashes the actor.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
from dataclasses import replace
from typing import Any

import pytest
import urllib3
from kubernetes import client

from pyroute2_cni.ipam.blocks import new_block
from pyroute2_cni.ipam.store import BlockGone, KubeBlockStore, StoreUnavailable
from pyroute2_cni.kube.client import object_not_found
from pyroute2_cni.kube.transport import api_error

pytestmark = pytest.mark.unit


class BrokenBody:
    """A raw urllib3 response whose headers arrived but whose body read breaks."""

    status = 200

    @property
    def data(self) -> bytes:
        raise urllib3.exceptions.ProtocolError(
            "Connection broken: IncompleteRead(0 bytes read)", http.client.IncompleteRead(b"")
        )


class Answered:
    """The REST layer's answer: status 200; the body is read later, by the store."""

    status = 200
    response = BrokenBody()


class CutOffClient(client.ApiClient):  # type: ignore[misc]  # kubernetes is untyped
    """Every request is answered 200 with a body that breaks (no network)."""

    def call_api(self, *args: Any, **kwargs: Any) -> Any:
        return Answered()


@pytest.fixture
def store() -> KubeBlockStore:
    return KubeBlockStore(CutOffClient())


def test_a_status_write_whose_body_breaks_is_store_unavailable(store: KubeBlockStore) -> None:
    block = new_block(7, ipaddress.IPv4Network("10.7.0.0/28"), "n1")
    with pytest.raises(StoreUnavailable, match=r"update IPBlock .* status"):
        store.replace_status(replace(block, resource_version="5"))


def test_a_create_and_a_read_whose_body_breaks_are_store_unavailable(
    store: KubeBlockStore,
) -> None:
    block = new_block(7, ipaddress.IPv4Network("10.7.0.0/28"), "n1")
    with pytest.raises(StoreUnavailable, match="create IPBlock"):
        store.create_block(block)
    with pytest.raises(StoreUnavailable, match="get IPBlock"):
        store.get_block(block.name)
    with pytest.raises(StoreUnavailable, match="list IPBlocks"):
        store.list_node_blocks("n1")


# -- 404s: the object is gone, or the path is not served (yet) ---------------------------

# What a starting kube-apiserver answers for custom resources until its CRD informer
# has synced (seen here under load, between "server is starting" 503s and the first 200).
NOT_SERVED = "404 page not found\n"


def named_not_found(name: str) -> str:
    return json.dumps(
        {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "message": f'ipblocks.ipam.pyroute2.org "{name}" not found',
            "reason": "NotFound",
            "details": {"name": name, "group": "ipam.pyroute2.org", "kind": "ipblocks"},
            "code": 404,
        }
    )


class Answers404(client.ApiClient):  # type: ignore[misc]  # kubernetes is untyped
    """Every request is answered 404 with `body` (no network)."""

    def __init__(self, body: str) -> None:
        super().__init__()
        self._body = body

    def call_api(self, *args: Any, **kwargs: Any) -> Any:
        raise client.ApiException(status=404, reason="Not Found", body=self._body)


def test_a_404_from_a_starting_api_server_is_unavailable_not_a_deletion() -> None:
    store = KubeBlockStore(Answers404(NOT_SERVED))
    block = replace(new_block(7, ipaddress.IPv4Network("10.7.0.0/28"), "n1"), resource_version="5")
    # Each of these used to say "gone": the actor then dropped the cached block and
    # answered DELs for its attachments "nothing held", leaving the records behind.
    with pytest.raises(StoreUnavailable, match="does not serve this resource"):
        store.get_block(block.name)
    with pytest.raises(StoreUnavailable, match="does not serve this resource"):
        store.replace_status(block)
    with pytest.raises(StoreUnavailable, match="does not serve this resource"):
        store.delete_block(block.name, "5")
    with pytest.raises(StoreUnavailable, match="does not serve this resource"):
        store.get_lease("kube-system", "pyroute2-cni-ipam")


def test_a_404_naming_the_object_still_means_it_is_gone() -> None:
    block = replace(new_block(7, ipaddress.IPv4Network("10.7.0.0/28"), "n1"), resource_version="5")
    store = KubeBlockStore(Answers404(named_not_found(block.name)))
    assert store.get_block(block.name) is None
    assert store.delete_block(block.name, "5") is False
    with pytest.raises(BlockGone):
        store.replace_status(block)


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (NOT_SERVED, False),
        ("", False),
        ('{"kind":"Status","reason":"NotFound","details":{},"code":404}', False),
        ('{"kind":"Status","reason":"NotFound","details":{"name":"b1"},"code":404}', True),
        ('{"kind":"Status","reason":"Conflict","details":{"name":"b1"},"code":404}', False),
    ],
)
def test_object_not_found_reads_the_status_body(body: str, named: bool) -> None:
    assert object_not_found(client.ApiException(status=404, body=body)) is named
    assert object_not_found(client.ApiException(status=409, body=body)) is False


def test_the_watcher_takes_an_unserved_path_for_a_temporary_error() -> None:
    unserved = api_error(client.ApiException(status=404, body=NOT_SERVED))
    assert unserved.status == 503 and unserved.temporary
    gone = api_error(client.ApiException(status=404, body=named_not_found("d1")))
    assert gone.status == 404 and not gone.temporary
