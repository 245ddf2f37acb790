"""ARP: kdp answers for the gateway IP on pod ports and for the node IP on the
uplink, floods pods' broadcast requests like a bridge, and drops malformed ARP."""
import pytest

from golden import (ALL_PORTS, BCAST, GW_IP, GW_MAC, NODE_IP, PODS, POD_PORTS, REMOTE_NODE_IP, REMOTE_NODE_MAC,
                    UPLINK, UPLINK_MAC, ARP, Ether, assert_frame, replay)

POD_A_IP, POD_A_MAC = PODS[0]
NEW_NEIGHBOR_IP, NEW_NEIGHBOR_MAC = "192.168.50.20", "02:00:00:00:14:01"


def request(src_mac, src_ip, target_ip, eth_dst=BCAST, pad=0):
    frame = Ether(src=src_mac, dst=eth_dst) / ARP(op=1, hwsrc=src_mac, psrc=src_ip, hwdst="00:00:00:00:00:00",
                                                  pdst=target_ip)
    return bytes(frame) + b"\0" * pad


def reply(our_mac, our_ip, to_mac, to_ip):
    return Ether(src=our_mac, dst=to_mac) / ARP(op=2, hwsrc=our_mac, psrc=our_ip, hwdst=to_mac, pdst=to_ip)


def malformed(frame: bytes) -> bytes:
    """An ARP frame with hlen 5 and opcode 7."""
    data = bytearray(frame)
    data[14 + 4] = 5              # hardware address length
    data[14 + 6:14 + 8] = b"\x00\x07"  # opcode
    return bytes(data)


POD_WHO_HAS_GW = request(POD_A_MAC, POD_A_IP, GW_IP)
POD_REPLY = reply(GW_MAC, GW_IP, POD_A_MAC, POD_A_IP)
UP_WHO_HAS_NODE = request(REMOTE_NODE_MAC, REMOTE_NODE_IP, NODE_IP, pad=18)
UP_REPLY = reply(UPLINK_MAC, NODE_IP, REMOTE_NODE_MAC, REMOTE_NODE_IP)

# name: (ingress port, frame, {port: expected frames}, drops, neighbours learned)
CASES = {
    # A broadcast request for the gateway is answered and still flooded.
    "pod-broadcast-for-gateway": ("pod0", POD_WHO_HAS_GW,
                                  {"pod0": [POD_REPLY], "pod1": [POD_WHO_HAS_GW], "pod2": [POD_WHO_HAS_GW]}, {}, 1),
    # A unicast probe to the gateway MAC (Linux re-checking a stale entry).
    "pod-unicast-for-gateway": ("pod0", request(POD_A_MAC, POD_A_IP, GW_IP, eth_dst=GW_MAC), {"pod0": [POD_REPLY]},
                                {}, 1),
    "pod-padded-request": ("pod1", request(PODS[1][1], PODS[1][0], GW_IP, pad=18),
                           {"pod1": [reply(GW_MAC, GW_IP, PODS[1][1], PODS[1][0])],
                            "pod0": [request(PODS[1][1], PODS[1][0], GW_IP, pad=18)],
                            "pod2": [request(PODS[1][1], PODS[1][0], GW_IP, pad=18)]}, {}, 1),
    # Pods asking for each other: the bridge floods, kdp stays silent.
    # A pod answering kdp's own request: consumed, learned.
    "pod-reply-to-gateway": ("pod0", reply(POD_A_MAC, POD_A_IP, GW_MAC, GW_IP), {}, {"consumed": 1}, 1),
    "pod-for-other-pod": ("pod0", request(POD_A_MAC, POD_A_IP, PODS[1][0]),
                          {"pod1": [request(POD_A_MAC, POD_A_IP, PODS[1][0])],
                           "pod2": [request(POD_A_MAC, POD_A_IP, PODS[1][0])]}, {}, 0),
    # The node IP is the uplink's address, not answered towards pods.
    "pod-for-node-ip": ("pod0", request(POD_A_MAC, POD_A_IP, NODE_IP),
                        {"pod1": [request(POD_A_MAC, POD_A_IP, NODE_IP)],
                         "pod2": [request(POD_A_MAC, POD_A_IP, NODE_IP)]}, {}, 0),
    "uplink-for-node-ip": (UPLINK, UP_WHO_HAS_NODE, {UPLINK: [UP_REPLY]}, {}, 0),  # sender is a static entry
    "uplink-unicast-for-node-ip": (UPLINK, request(NEW_NEIGHBOR_MAC, NEW_NEIGHBOR_IP, NODE_IP, eth_dst=UPLINK_MAC),
                                   {UPLINK: [reply(UPLINK_MAC, NODE_IP, NEW_NEIGHBOR_MAC, NEW_NEIGHBOR_IP)]}, {}, 1),
    # Answered, but a sender inside the pod CIDR is not learned on the uplink.
    "uplink-request-from-pod-cidr-ip": (UPLINK, request(NEW_NEIGHBOR_MAC, "10.244.1.50", NODE_IP),
                                        {UPLINK: [reply(UPLINK_MAC, NODE_IP, NEW_NEIGHBOR_MAC, "10.244.1.50")]}, {}, 0),
    "uplink-for-other-ip": (UPLINK, request(NEW_NEIGHBOR_MAC, NEW_NEIGHBOR_IP, "192.168.50.99"), {}, {"consumed": 1},
                            0),
    "uplink-for-gateway-ip": (UPLINK, request(NEW_NEIGHBOR_MAC, NEW_NEIGHBOR_IP, GW_IP), {}, {"consumed": 1}, 0),
    # Replies aimed at us are how kdp resolves neighbours: consumed and learned.
    "uplink-reply": (UPLINK, bytes(reply(NEW_NEIGHBOR_MAC, NEW_NEIGHBOR_IP, UPLINK_MAC, NODE_IP)), {},
                     {"consumed": 1}, 1),
    # ARP between other hosts creates no entry.
    "uplink-broadcast-reply-for-other": (UPLINK, bytes(Ether(src=NEW_NEIGHBOR_MAC, dst=BCAST) /
                                                       ARP(op=2, hwsrc=NEW_NEIGHBOR_MAC, psrc=NEW_NEIGHBOR_IP,
                                                           hwdst="02:00:00:00:15:01", pdst="192.168.50.21")),
                                         {}, {"consumed": 1}, 0),
    "uplink-malformed": (UPLINK, malformed(UP_WHO_HAS_NODE), {}, {"arp_malformed": 1}, 0),
    "uplink-truncated": (UPLINK, UP_WHO_HAS_NODE[:14 + 20], {}, {"arp_malformed": 1}, 0),
    # A malformed broadcast on a pod port is still flooded by the bridge.
    "pod-malformed-broadcast": ("pod0", malformed(POD_WHO_HAS_GW),
                                {"pod1": [malformed(POD_WHO_HAS_GW)], "pod2": [malformed(POD_WHO_HAS_GW)]}, {}, 0),
    "pod-malformed-to-gateway": ("pod0", malformed(request(POD_A_MAC, POD_A_IP, GW_IP, eth_dst=GW_MAC)), {},
                                 {"arp_malformed": 1}, 0),
    "pod-truncated": ("pod0", POD_WHO_HAS_GW[:14 + 27], {}, {"arp_malformed": 1}, 0),
}


@pytest.mark.parametrize("case", CASES, ids=str)
def test_arp(tmp_path, case):
    ingress, frame, expected, drops, learned = CASES[case]
    r = replay(tmp_path, {ingress: [frame]})
    for port in ALL_PORTS:
        want = [bytes(f) for f in expected.get(port, [])]
        assert len(r.out[port]) == len(want), f"{port}: got {len(r.out[port])} frames, want {len(want)}"
        for i, (got, exp) in enumerate(zip(r.out[port], want)):
            assert_frame(got, exp, f"{port} frame {i}")
    assert r.drops() == drops
    assert r.control("neighbors_learned") == learned


def test_arp_reply_fields(tmp_path):
    """The reply to a pod, field by field."""
    r = replay(tmp_path, {"pod2": [request(PODS[2][1], PODS[2][0], GW_IP)]})
    assert len(r.out["pod2"]) == 1
    got = Ether(r.out["pod2"][0])
    assert (got.dst, got.src, got.type) == (PODS[2][1], GW_MAC, 0x0806)
    arp = got[ARP]
    assert (arp.hwtype, arp.ptype, arp.hwlen, arp.plen, arp.op) == (1, 0x0800, 6, 4, 2)
    assert (arp.hwsrc, arp.psrc, arp.hwdst, arp.pdst) == (GW_MAC, GW_IP, PODS[2][1], PODS[2][0])
    assert len(r.out["pod2"][0]) == 42
    for port in POD_PORTS[:2]:
        assert r.out[port] == [bytes(request(PODS[2][1], PODS[2][0], GW_IP))]
    assert r.out[UPLINK] == []
    assert r.drops() == {}
