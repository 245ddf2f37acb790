"""MTU on a real path: the uplink veth pair has MTU 1400, the pods 1500.

kdp takes the uplink's MTU from its kernel interface. A pod's ping too large
for it with DF set gets "fragmentation needed" from the gateway, carrying
1400, and the pod's kernel caches that path MTU (RFC 1191); without DF, kdp
fragments it and node B's kernel reassembles it and answers. Topology as in
test_live.py; needs root, iproute2 and ping.
"""
import os
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
from test_live import GATEWAY, NODE_B, Topology, make_topology, ping, tools_present  # noqa: E402,F401
from kdp_harness import control_socket_path, kdp_stats  # noqa: E402

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="live tests need root for network namespaces")

UPLINK_MTU = 1400


class MtuTopology(Topology):
    def create(self):
        super().create()
        self.sh("node-b", "ip", "link", "set", "eth0", "mtu", str(UPLINK_MTU))
        self.kdp_side("ip", "link", "set", self.host_if["node-b"], "mtu", str(UPLINK_MTU))


@pytest.fixture(scope="module")
def topo(tmp_path_factory):
    t = make_topology(tmp_path_factory, "mtu", MtuTopology)
    try:
        yield t
    finally:
        t.cleanup()


def test_dont_fragment_too_large_gets_the_path_mtu(topo):
    # 1472 bytes of ICMP data: a 1500-byte packet, 100 over the uplink's MTU.
    received, _, out = ping(topo, "pod-a", NODE_B, count=1, extra=("-M", "do", "-s", "1472"))
    assert received == 0, out
    assert f"From {GATEWAY} icmp_seq=1 Frag needed and DF set (mtu = {UPLINK_MTU})" in out, out
    route = topo.sh("pod-a", "ip", "route", "get", NODE_B).stdout
    assert re.search(rf"\bmtu {UPLINK_MTU}\b", route), f"no path MTU cached in pod-a:\n{route}"
    # What fits the path goes through with DF.
    received, _, out = ping(topo, "pod-a", NODE_B, count=3, extra=("-M", "do", "-s", str(UPLINK_MTU - 28)))
    assert received == 3, out


def test_without_dont_fragment_kdp_fragments(topo):
    before = kdp_stats(control_socket_path(topo.workdir))["workers"][0]["fragments_made"]
    received, _, out = ping(topo, "pod-a", NODE_B, count=3, extra=("-M", "dont", "-s", "1800"))
    assert received == 3, out
    after = kdp_stats(control_socket_path(topo.workdir))["workers"][0]["fragments_made"]
    # Each 1828-byte request left in at least two fragments of at most 1400.
    # (net_af_packet's fanout socket has the kernel reassemble what it
    # receives, so kdp sees whole datagrams and cuts the replies to the pods'
    # 1500 too.)
    assert after - before >= 3 * 2, (before, after)


def test_the_uplink_mtu_is_the_interface_s(topo):
    stats = kdp_stats(control_socket_path(topo.workdir))
    assert stats["drops"].get("fragmentation_needed", 0) >= 1, stats["drops"]
