"""The data plane: the desired kernel state and the rtnetlink transport.

Owns, pure (no I/O): interface names, MACs and MTU (``names``), kernel objects as specs and
states (``specs``), a domain's desired state and the node's rules (``desired``), the plans
that reach it from a live view (``plan``), the VTEP choice (``vtep``), a plumbed pod's alias
and CHECK (``pods``). The kernel side: pod plumbing through the backend (``plumbing``: a
pod's veth pair, address and route), the protocol the NetlinkActor uses (``backend``), the
netlink wire (``transport``), entering a namespace (``netns``), decoding replies
(``decode``), the node's and a pod's sessions (``sessions``), zebra's EVPN entries and the
held copies (``evpn_kernel``). The only domain that imports ``pyroute2`` (``sessions`` and
``evpn_kernel``). May import: ``messages`` and ``values``; no other domain.
"""
