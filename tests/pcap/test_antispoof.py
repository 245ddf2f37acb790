"""Anti-spoofing on pod ports: a port with [[pod]] entries accepts only
frames from those pods' MACs and, for IPv4 and ARP, their addresses. A pod
cannot impersonate another pod, the node or a Service VIP."""
import pytest

from golden import (BCAST, GW_IP, GW_MAC, NODE_IP, PODS, REMOTE_NODE_MAC, REMOTE_POD_IP, ROUTES, NEIGHBORS, UPLINK,
                    UPLINK_MAC, ARP, IP, UDP, Ether, pod_frame, replay, routed)

POD_A_IP, POD_A_MAC = PODS[0]
POD_B_IP, POD_B_MAC = PODS[1]
PODS_TOML = f'''[[pod]]
name = "default/a"
port = "pod0"
ip = "{POD_A_IP}"
mac = "{POD_A_MAC}"
'''


def to_remote(src_mac=POD_A_MAC, src_ip=POD_A_IP):
    return Ether(src=src_mac, dst=GW_MAC) / IP(src=src_ip, dst=REMOTE_POD_IP) / UDP(sport=1, dport=2) / b"x"


CASES = {
    # frame from pod0, expected drop reason (None: forwarded)
    "own-mac-and-ip": (to_remote(), None),
    "other-pods-mac": (to_remote(src_mac=POD_B_MAC), "spoofed_source_mac"),
    "other-pods-ip": (to_remote(src_ip=POD_B_IP), "spoofed_source_ip"),
    "node-ip": (to_remote(src_ip=NODE_IP.split("/")[0]), "spoofed_source_ip"),
    "service-vip": (to_remote(src_ip="10.96.0.10"), "spoofed_source_ip"),
    "arp-sender-mac-differs": (Ether(src=POD_A_MAC, dst=BCAST) / ARP(op=1, hwsrc=POD_B_MAC, psrc=POD_A_IP, pdst=GW_IP),
                               "spoofed_arp"),
    "arp-for-another-pods-ip": (Ether(src=POD_A_MAC, dst=BCAST) / ARP(op=2, hwsrc=POD_A_MAC, psrc=POD_B_IP,
                                                                       pdst=GW_IP), "spoofed_arp"),
}


@pytest.mark.parametrize("case", CASES, ids=str)
def test_pod_port_accepts_only_its_pod(tmp_path, case):
    frame, reason = CASES[case]
    r = replay(tmp_path, {"pod0": [frame]}, routes=ROUTES, neighbors=NEIGHBORS, extra=PODS_TOML)
    if reason is None:
        assert r.out[UPLINK] == [routed(frame, UPLINK_MAC, REMOTE_NODE_MAC)]
        assert r.drops() == {}
    else:
        assert r.silent(UPLINK, "pod0", "pod1", "pod2")
        assert r.drops() == {reason: 1}
        assert r.control("fdb_learned") == 0, "a spoofed source is not learned"


def test_arp_probe_and_request_from_the_pod_pass(tmp_path):
    probe = Ether(src=POD_A_MAC, dst=BCAST) / ARP(op=1, hwsrc=POD_A_MAC, psrc="0.0.0.0", pdst=POD_A_IP)
    request = Ether(src=POD_A_MAC, dst=BCAST) / ARP(op=1, hwsrc=POD_A_MAC, psrc=POD_A_IP, pdst=GW_IP)
    r = replay(tmp_path, {"pod0": [probe, request]}, routes=ROUTES, neighbors=NEIGHBORS, extra=PODS_TOML)
    replies = [f for f in r.frames("pod0") if ARP in f and f[ARP].op == 2]
    assert len(replies) == 1 and replies[0][ARP].psrc == GW_IP
    assert r.drops() == {}  # both flooded to the other pods; the request answered


def test_ports_without_pods_are_not_checked(tmp_path):
    frame = to_remote(src_mac=POD_B_MAC, src_ip=POD_B_IP)
    r = replay(tmp_path, {"pod1": [frame]}, routes=ROUTES, neighbors=NEIGHBORS, extra=PODS_TOML)
    assert r.out[UPLINK] == [routed(frame, UPLINK_MAC, REMOTE_NODE_MAC)]
    assert r.drops() == {}
