"""The Kubernetes side: API client, list+watch, VRFDomain validation and what we write.

Owns: building the API client (``client``), the watched objects as typed values and their
conversion (``objects``, pure), the list and watch calls and their errors (``transport``),
the list+watch pumps (``pump``), the VRFDomain status and VRFNodeConfig status writes
(``crd_writer``), VRFDomain cross-field validation (``crd_validate``, pure), Events
(``events``), the Node condition (``node_condition``) and VRFNodeState (``node_state``).
Only ``client`` and ``transport`` import ``kubernetes``.  May import: ``frr``
(``crd_validate`` checks a domain's routing policy with ``frr.vrf_routing``), ``runtime``
(the health report), ``messages`` and ``values``.
"""
