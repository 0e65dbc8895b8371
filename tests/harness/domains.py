"""What the release gives a cluster, as the tests share it: the README's server.ini and the
system domain it makes."""

from __future__ import annotations

from pyroute2_cni.messages.crd import Attachment, AttachmentType, VrfDomainSpec

# What the release's ConfigMap gives a cluster: vrf-42, 10.244.0.0/16 in /26 blocks, l3vni 42.
SYSTEM_DOMAIN = VrfDomainSpec(
    name="vrf-42",
    vrf=42,
    table=42,
    prefix="10.244.0.0",
    prefixlen=16,
    ipblocklen=26,
    attachments=(Attachment(type=AttachmentType.L3VNI, vni=42),),
)

# The README's ConfigMap (server.ini), verbatim.
README_SERVER_INI = """\
[default]
vrf = 42
prefix = 10.244.0.0
prefixlen = 16
ipblocklen = 26
system_vrf_type = l3vni

[logging]
level = info
"""
