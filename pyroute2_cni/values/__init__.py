"""Value types that messages carry; the bottom layer, importing nothing of pyroute2_cni.

Owns: the CNI attachment identity and ``DEFAULT_NETWORK`` (``attachment``), and the EVPN
hold (``evpn_hold``): pure logic over the kernel, clock and BGP state passed in, whose
``EvpnEntry`` and ``BgpView`` ``messages.evpn`` carries, so it sits below ``messages``
rather than in ``netlink``.
"""
