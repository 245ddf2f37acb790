"""The pod bridge: same-node forwarding, flooding, and the 802.1Q policy."""
import pytest
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6
from scapy.layers.l2 import Dot1AD, Dot1Q
from scapy.packet import Raw

from golden import (ALL_PORTS, BCAST, GW_MAC, PODS, POD_PORTS, REMOTE_NODE_MAC, REMOTE_POD_IP, UPLINK, UPLINK_MAC,
                    IP, TCP, UDP, Ether, assert_frame, ip_checksum_valid, pod_frame, replay, routed, uplink_frame)

POD_A_IP, POD_A_MAC = PODS[0]
POD_B_IP, POD_B_MAC = PODS[1]
UNKNOWN_MAC = "0a:58:0a:f4:01:63"


def test_pod_to_pod_unicast_is_bridged_unchanged(tmp_path):
    """pod0 -> pod B on pod1: every frame arrives on pod1 byte for byte, in
    order, never back on pod0 nor on the uplink. pod2 may see copies only
    until the bridge has learned pod B (learning goes through the control
    thread), so its copies are a prefix of the stream."""
    hello = pod_frame(1, POD_A_MAC) / IP(src=POD_B_IP, dst=POD_A_IP) / UDP(sport=5353, dport=4000) / b"learn me"
    to_b = [
        pod_frame(0, POD_B_MAC) / IP(src=POD_A_IP, dst=POD_B_IP, ttl=64) / UDP(sport=4000, dport=5353) / b"hello",
        pod_frame(0, POD_B_MAC) / IP(src=POD_A_IP, dst=POD_B_IP, ttl=1) / TCP(sport=40000, dport=80, flags="S"),
        # TTL 1 and a bad L4 checksum: a bridge touches neither.
        pod_frame(0, POD_B_MAC) / IP(src=POD_A_IP, dst=POD_B_IP) / UDP(sport=1, dport=2, chksum=0x1234) / b"x",
        # Ethernet padding is kept by a bridge.
        bytes(pod_frame(0, POD_B_MAC) / IP(src=POD_A_IP, dst=POD_B_IP) / UDP(sport=7, dport=7)) + b"\0" * 18,
        pod_frame(0, POD_B_MAC) / IPv6(src="fd00::5", dst="fd00::6") / ICMPv6EchoRequest(id=1, seq=2),
        Ether(src=POD_A_MAC, dst=POD_B_MAC, type=0x88B5) / Raw(b"local experimental ethertype".ljust(46, b".")),
    ]
    r = replay(tmp_path, {"pod1": [hello], "pod0": to_b})

    assert len(r.out["pod1"]) == len(to_b)
    for i, (got, sent) in enumerate(zip(r.out["pod1"], to_b)):
        assert_frame(got, sent, f"frame {i} on pod1")
    assert r.out["pod0"] == [bytes(hello)]  # pod A's reply-path frame, flooded or forwarded
    assert r.out[UPLINK] == []
    to_b_bytes = [bytes(f) for f in to_b]
    flooded = [f for f in r.out["pod2"] if f != bytes(hello)]
    assert flooded == to_b_bytes[:len(flooded)], "pod2 got frames for a learned MAC"
    assert r.out["pod2"].count(bytes(hello)) <= 1
    assert r.drops() == {}
    assert r.control("fdb_learned") == 2 and r.control("fdb_entries") == 2


FLOOD_CASES = {
    "broadcast-udp": ("pod0", Ether(src=POD_A_MAC, dst=BCAST) / IP(src="0.0.0.0", dst="255.255.255.255") /
                      UDP(sport=68, dport=67) / b"\x01\x01\x06\x00dhcp-discover"),
    "broadcast-from-pod2": ("pod2", Ether(src=PODS[2][1], dst=BCAST) / IP(src=PODS[2][0], dst="10.244.1.255") /
                            UDP(sport=9, dport=9) / b"directed broadcast"),
    "ipv4-multicast": ("pod0", Ether(src=POD_A_MAC, dst="01:00:5e:00:00:fb") / IP(src=POD_A_IP, dst="224.0.0.251", ttl=1)
                       / UDP(sport=5353, dport=5353) / b"mdns"),
    "ipv6-multicast": ("pod1", Ether(src=POD_B_MAC, dst="33:33:00:00:00:01") / IPv6(src="fe80::6", dst="ff02::1") /
                       ICMPv6EchoRequest()),
    "unknown-unicast": ("pod0", Ether(src=POD_A_MAC, dst=UNKNOWN_MAC) / IP(src=POD_A_IP, dst="10.244.1.99") /
                        TCP(sport=1234, dport=443, flags="S")),
    "non-ip-multicast": ("pod1", Ether(src=POD_B_MAC, dst="01:80:c2:00:00:0e", type=0x88CC) / Raw(b"\x02\x07lldp" * 6)),
}


@pytest.mark.parametrize("case", FLOOD_CASES, ids=str)
def test_flooding(tmp_path, case):
    """Broadcast, multicast and unknown unicast go unchanged to every pod port
    but the ingress one, and never to the uplink."""
    ingress, frame = FLOOD_CASES[case]
    r = replay(tmp_path, {ingress: [frame]})
    for port in POD_PORTS:
        if port == ingress:
            assert r.out[port] == [], f"flood came back to its ingress port {port}"
        else:
            assert len(r.out[port]) == 1, f"{port} got {len(r.out[port])} frames"
            assert_frame(r.out[port][0], frame, f"flooded copy on {port}")
    assert r.out[UPLINK] == []
    assert r.drops() == {}
    assert r.control("fdb_learned") == 1


UPLINK_L2_CASES = {
    "broadcast-udp": (uplink_frame(BCAST) / IP(src="192.168.50.20", dst="255.255.255.255") / UDP(sport=68, dport=67),
                      {"l2_not_for_us": 1}),
    "multicast": (uplink_frame("01:00:5e:00:00:01") / IP(src="192.168.50.20", dst="224.0.0.1") / UDP(),
                  {"l2_not_for_us": 1}),
    "unicast-other-mac": (uplink_frame(POD_A_MAC) / IP(src="192.168.50.20", dst=POD_A_IP) / UDP(),
                          {"l2_not_for_us": 1}),
    "unicast-gateway-mac": (uplink_frame(GW_MAC) / IP(src="192.168.50.20", dst=POD_A_IP) / UDP(),
                            {"l2_not_for_us": 1}),
    "ipv6-to-uplink-mac": (uplink_frame() / IPv6(src="fd00::20", dst="fd00::10") / ICMPv6EchoRequest(),
                           {"unsupported_ethertype": 1}),
}


@pytest.mark.parametrize("case", UPLINK_L2_CASES, ids=str)
def test_uplink_frames_are_not_bridged(tmp_path, case):
    """The uplink is no bridge member: frames not for its MAC are dropped,
    nothing reaches the pods."""
    frame, drops = UPLINK_L2_CASES[case]
    r = replay(tmp_path, {UPLINK: [frame]})
    assert all(r.out[p] == [] for p in ALL_PORTS)
    assert r.drops() == drops
    assert r.control("fdb_learned") == 0


VLAN_STRIP = '[dataplane]\nvlan = "strip"\n'


def _tagged(frame, *tags):
    """`frame` with 802.1Q/802.1ad tags inserted after its MAC addresses."""
    eth = Ether(bytes(frame))
    out = Ether(src=eth.src, dst=eth.dst)
    for tag in tags:
        out = out / tag
    return out / eth.payload


def test_vlan_strip_between_pods(tmp_path):
    """vlan = "strip": a tagged frame between pods is forwarded untagged."""
    plain = pod_frame(0, POD_B_MAC) / IP(src=POD_A_IP, dst=POD_B_IP) / UDP(sport=1000, dport=2000) / b"tagged"
    tagged = _tagged(plain, Dot1Q(prio=5, vlan=100))
    assert bytes(tagged)[12:14] == b"\x81\x00" and len(tagged) == len(plain) + 4
    r = replay(tmp_path, {"pod0": [tagged]}, extra=VLAN_STRIP)
    assert len(r.out["pod1"]) == 1
    assert_frame(r.out["pod1"][0], plain, "stripped frame on pod1")
    assert r.out["pod2"] in ([], [bytes(plain)])
    assert r.out["pod0"] == [] and r.out[UPLINK] == []
    assert r.drops() == {}


def test_vlan_strip_then_routed(tmp_path):
    """vlan = "strip": a tagged frame to the gateway MAC is routed untagged."""
    plain = pod_frame(0) / IP(src=POD_A_IP, dst=REMOTE_POD_IP, ttl=9) / TCP(sport=1, dport=2, flags="A") / b"data"
    r = replay(tmp_path, {"pod0": [_tagged(plain, Dot1Q(vlan=7))]}, extra=VLAN_STRIP)
    assert len(r.out[UPLINK]) == 1
    got = Ether(r.out[UPLINK][0])
    assert got.type == 0x0800 and got[IP].ttl == 8 and ip_checksum_valid(got)
    assert_frame(r.out[UPLINK][0], routed(plain, UPLINK_MAC, REMOTE_NODE_MAC))
    assert r.drops() == {}


@pytest.mark.parametrize("tags", [(Dot1AD(vlan=10), Dot1Q(vlan=20)), (Dot1Q(vlan=10), Dot1Q(vlan=20))],
                         ids=["qinq-88a8", "double-8100"])
def test_vlan_strip_keeps_dropping_stacked_tags(tmp_path, tags):
    """Only one tag can be stripped: stacked tags still drop as vlan_tagged."""
    plain = pod_frame(0, POD_B_MAC) / IP(src=POD_A_IP, dst=POD_B_IP) / UDP() / b"stacked"
    r = replay(tmp_path, {"pod0": [_tagged(plain, *tags)]}, extra=VLAN_STRIP)
    assert all(r.out[p] == [] for p in ALL_PORTS)
    assert r.drops() == {"vlan_tagged": 1}
