"""The Kubernetes side: API client, list+watch, VRFDomain validation and what we write.

Owns: building the API client (``client``), the list+watch pumps and the VRFDomain status
writer (``watch``), VRFDomain cross-field validation (``crd_validate``, pure), Events
(``events``), the Node condition (``node_condition``) and VRFNodeState (``node_state``).
May import: ``frr`` (``crd_validate`` checks a domain's routing policy with
``frr.vrf_routing``), ``runtime`` (the health report), ``messages`` and ``values``.
"""
