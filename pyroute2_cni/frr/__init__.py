"""Routing: the FRR model, its templates, frr-reload.py and the vty client.

Owns: a VRFDomain's routing policy (``vrf_routing``, pure), the frozen FRR configuration and
its rendering with ``templates/*.j2`` (``model``, pure), writing, validating and reloading
``frr.conf`` (``control``), and asking zebra and bgpd over their vty sockets (``vty``).
May import: ``runtime`` (``control`` reads ``config.FrrSection``), ``messages`` and
``values``.
"""
