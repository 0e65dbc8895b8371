"""KubeBlockStore: a reply cut off while its body is read is an unknown outcome.

The API server answers a write in two steps (status line and headers, then the
body); a restart between them leaves a committed write whose reply breaks during
the body read.  That must surface as StoreUnavailable (the actor's "outcome
unknown"), never as a raw urllib3 error that crashes the actor.
"""

from __future__ import annotations

import http.client
import ipaddress
from dataclasses import replace
from typing import Any

import pytest
import urllib3
from kubernetes import client

from pyroute2_cni.ipam_blocks import new_block
from pyroute2_cni.ipam_store import KubeBlockStore, StoreUnavailable

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
