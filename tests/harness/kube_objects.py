"""Kubernetes objects the harnesses register themselves where a real cluster's kubelet would."""

from __future__ import annotations

import time
from typing import Any


def register_node(core: Any, name: str, address: str, message: str) -> None:
    """Create a Ready Node with InternalIP `address`, as a kubelet registers itself.

    `core` is a kubernetes.client.CoreV1Api."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    status = {
        "addresses": [
            {"type": "InternalIP", "address": address},
            {"type": "Hostname", "address": name},
        ],
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "KubeletReady",
                "message": message,
                "lastHeartbeatTime": now,
                "lastTransitionTime": now,
            },
        ],
    }
    body = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"},
        },
        "status": status,
    }
    created = core.create_node(body)
    # Some API versions drop status on create; make sure it is there.
    if not created.status or not created.status.addresses:
        core.patch_node_status(name, {"status": status})
