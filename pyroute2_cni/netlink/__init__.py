"""The data plane: the desired kernel state and the rtnetlink transport.

Owns: names, MACs, the desired state and the plans to reach it (``model``, pure), the netlink
sockets and message decoding (``backend``), pod plumbing through the backend (``pods``: a
pod's veth pair, address and route, and the record of plumbed pods), zebra's EVPN entries and
the held copies (``evpn_kernel``).  The only domain that imports ``pyroute2`` (``backend`` and
``evpn_kernel``).  May import: ``messages`` and ``values``; no other domain.
"""
