"""Who an attachment is: (network name, container id, ifname), as the CNI spec defines it.

The key is the attachment's identity in IPAM records, in the netlink inventory and in every
CNI verb.  Attachments of the network the daemon installs (``DEFAULT_NETWORK``) keep the key
they always had, ``"<containerid>/<ifname>"``, so records written before the network name
was part of the identity are read as that network's without any migration, and a daemon of
either version reads the other's records.  Any other network's key carries its name first:
``"<network>/<containerid>/<ifname>"``.  None of the three parts can hold a ``/`` (the spec's
patterns for network names and container ids; Linux interface names), so the split is exact.

Pure: no I/O, imports nothing of the daemon.
"""

from __future__ import annotations

from dataclasses import dataclass

# The network name in the conflist the daemon installs (cni/install.py).
DEFAULT_NETWORK = "pyroute2-cni"


@dataclass(frozen=True, slots=True, kw_only=True)
class AttachmentId:
    network: str
    container_id: str
    ifname: str

    @property
    def key(self) -> str:
        return attachment_key(self.network, self.container_id, self.ifname)


def attachment_key(network: str, container_id: str, ifname: str) -> str:
    if network == DEFAULT_NETWORK:
        return f"{container_id}/{ifname}"
    return f"{network}/{container_id}/{ifname}"


def parse_key(key: str) -> AttachmentId | None:
    """The attachment a key names; None for a key of no known shape (e.g. "gateway")."""
    parts = key.split("/")
    if len(parts) == 2 and all(parts):
        return AttachmentId(network=DEFAULT_NETWORK, container_id=parts[0], ifname=parts[1])
    if len(parts) == 3 and all(parts):
        return AttachmentId(network=parts[0], container_id=parts[1], ifname=parts[2])
    return None


def key_network(key: str) -> str | None:
    """The network a key belongs to; None when the key has no attachment shape."""
    parsed = parse_key(key)
    return parsed.network if parsed is not None else None
