"""ICMP: echo replies from the node's own addresses, and the errors a router
sends (time exceeded, network unreachable, port unreachable)."""
import pytest
from scapy.packet import Raw

from golden import (ALL_PORTS, GW_IP, GW_MAC, NODE_IP, PODS, REMOTE_NODE_IP, REMOTE_POD_IP, UPLINK,
                    UPLINK_MAC, ICMP, IP, TCP, UDP, Ether, assert_frame, icmp_checksum_valid, ip_checksum_valid,
                    pod_frame, replay, uplink_frame, without_padding)

POD_A_IP, POD_A_MAC = PODS[0]
ICMP_ERROR_QUOTE_MAX = 576 - 20 - 8


def echo_reply(request, our_mac):
    """What an echo request turns into: addresses swapped, TTL 64, type 0,
    id/seq/payload unchanged, checksums fresh, padding gone."""
    req = Ether(without_padding(request))
    rep = req.copy()
    rep.src, rep.dst = our_mac, req.src
    rep[IP].src, rep[IP].dst = req[IP].dst, req[IP].src
    rep[IP].ttl = 64
    del rep[IP].chksum
    rep[ICMP].type = 0
    del rep[ICMP].chksum
    return bytes(rep)


# name: (ingress port, echo request, MAC kdp answers with)
ECHO_CASES = {
    "pod-to-gateway": ("pod0", pod_frame(0) / IP(src=POD_A_IP, dst=GW_IP, id=0x1111) /
                       ICMP(id=0x4242, seq=7) / (b"0123456789abcdef" * 4), GW_MAC),
    "pod-to-node-ip": ("pod1", pod_frame(1) / IP(src=PODS[1][0], dst=NODE_IP, flags="DF") /
                       ICMP(id=1, seq=65535) / b"ping", GW_MAC),
    "pod-ttl-1": ("pod0", pod_frame(0) / IP(src=POD_A_IP, dst=GW_IP, ttl=1) / ICMP(id=9, seq=1) / b"ttl one", GW_MAC),
    "pod-padded": ("pod2", bytes(pod_frame(2) / IP(src=PODS[2][0], dst=GW_IP) / ICMP(id=3, seq=3)) + b"\0" * 18,
                   GW_MAC),
    "uplink-to-node-ip": (UPLINK, uplink_frame() / IP(src=REMOTE_NODE_IP, dst=NODE_IP, tos=0x10) /
                          ICMP(id=0xbeef, seq=2) / (b"x" * 1000), UPLINK_MAC),
    "uplink-to-gateway-ip": (UPLINK, uplink_frame() / IP(src=REMOTE_POD_IP, dst=GW_IP, ttl=1) / ICMP(id=5, seq=6),
                             UPLINK_MAC),
}


@pytest.mark.parametrize("case", ECHO_CASES, ids=str)
def test_echo_reply(tmp_path, case):
    ingress, req, our_mac = ECHO_CASES[case]
    r = replay(tmp_path, {ingress: [req]})
    assert len(r.out[ingress]) == 1
    got, sent = Ether(r.out[ingress][0]), Ether(bytes(req))
    assert (got.dst, got.src) == (sent.src, our_mac)
    assert (got[IP].src, got[IP].dst, got[IP].ttl, got[IP].proto) == (sent[IP].dst, sent[IP].src, 64, 1)
    assert (got[ICMP].type, got[ICMP].code, got[ICMP].id, got[ICMP].seq) == (0, 0, sent[ICMP].id, sent[ICMP].seq)
    assert bytes(got[ICMP].payload) == bytes(Ether(without_padding(req))[ICMP].payload)
    assert ip_checksum_valid(got) and icmp_checksum_valid(got)
    assert_frame(r.out[ingress][0], echo_reply(req, our_mac))
    assert all(r.out[p] == [] for p in ALL_PORTS if p != ingress)
    assert r.drops() == {}


LOCAL_SILENT_CASES = {
    "echo-reply": (pod_frame(0) / IP(src=POD_A_IP, dst=GW_IP) / ICMP(type=0, id=1, seq=1), {"consumed": 1}),
    "timestamp": (pod_frame(0) / IP(src=POD_A_IP, dst=GW_IP) / ICMP(type=13), {"consumed": 1}),
    "echo-code-1": (pod_frame(0) / IP(src=POD_A_IP, dst=GW_IP) / ICMP(type=8, code=1), {"consumed": 1}),
    # kdp does not reassemble: a fragmented echo request gets no reply (a
    # reply to the first fragment alone would be a fragment never completed).
    "echo-first-fragment": (pod_frame(0) / IP(src=POD_A_IP, dst=GW_IP, flags="MF", id=42) / ICMP(id=1, seq=1) /
                            (b"a" * 64), {"consumed": 1}),
    "echo-later-fragment": (pod_frame(0) / IP(src=POD_A_IP, dst=GW_IP, frag=9, id=42, proto=1) / (b"a" * 64),
                            {"consumed": 1}),
    "tcp-syn": (pod_frame(0) / IP(src=POD_A_IP, dst=GW_IP) / TCP(dport=22, flags="S"), {"local_unhandled": 1}),
    "gre": (pod_frame(0) / IP(src=POD_A_IP, dst=NODE_IP, proto=47) / b"\0\0\x08\0", {"local_unhandled": 1}),
}


@pytest.mark.parametrize("case", LOCAL_SILENT_CASES, ids=str)
def test_local_delivery_without_answer(tmp_path, case):
    frame, drops = LOCAL_SILENT_CASES[case]
    r = replay(tmp_path, {"pod0": [frame]})
    assert all(r.out[p] == [] for p in ALL_PORTS)
    assert r.drops() == drops


def icmp_error(offending, our_mac, our_ip, icmp_type, icmp_code):
    """RFC 1812 error about `offending` (as received): to its sender, quoting
    its IP datagram up to 576 bytes in all."""
    sent = Ether(without_padding(offending))
    quote = bytes(sent[IP])[:ICMP_ERROR_QUOTE_MAX]
    return bytes(Ether(src=our_mac, dst=sent.src) /
                 IP(tos=0xC0, id=0, flags=0, ttl=64, proto=1, src=our_ip, dst=sent[IP].src) /
                 ICMP(type=icmp_type, code=icmp_code, unused=0) / Raw(quote))


def check_error(r, ingress, offending, our_mac, our_ip, icmp_type, icmp_code):
    assert len(r.out[ingress]) == 1, f"{ingress}: {len(r.out[ingress])} frames"
    got, sent = Ether(r.out[ingress][0]), Ether(without_padding(offending))
    assert (got.dst, got.src, got.type) == (sent.src, our_mac, 0x0800)
    ip = got[IP]
    assert (ip.src, ip.dst, ip.ttl, ip.proto, ip.tos, ip.id, int(ip.flags), ip.frag) == \
        (our_ip, sent[IP].src, 64, 1, 0xC0, 0, 0, 0)
    assert (got[ICMP].type, got[ICMP].code) == (icmp_type, icmp_code)
    assert ip_checksum_valid(got) and icmp_checksum_valid(got)
    quote = bytes(ip)[28:ip.len]
    assert quote == bytes(sent[IP])[:ICMP_ERROR_QUOTE_MAX], "the quote is not the original datagram"
    assert_frame(r.out[ingress][0], icmp_error(offending, our_mac, our_ip, icmp_type, icmp_code))
    assert all(r.out[p] == [] for p in ALL_PORTS if p != ingress)


TTL_CASES = {
    "pod-udp-ttl-1": ("pod0", pod_frame(0) / IP(src=POD_A_IP, dst=REMOTE_POD_IP, ttl=1) /
                      UDP(sport=33434, dport=33435) / b"traceroute", GW_MAC, GW_IP),
    "pod-tcp-ttl-0": ("pod1", pod_frame(1) / IP(src=PODS[1][0], dst=REMOTE_POD_IP, ttl=0) /
                      TCP(sport=1, dport=2, flags="S"), GW_MAC, GW_IP),
    "pod-echo-ttl-1-padded": ("pod0", bytes(pod_frame(0) / IP(src=POD_A_IP, dst=REMOTE_POD_IP, ttl=1) / ICMP()) +
                              b"\xaa" * 18, GW_MAC, GW_IP),
    "pod-big-quote-truncated": ("pod0", pod_frame(0) / IP(src=POD_A_IP, dst=REMOTE_POD_IP, ttl=1) /
                                UDP(sport=5, dport=6) / (bytes(range(256)) * 5), GW_MAC, GW_IP),
    "pod-ip-options": ("pod0", pod_frame(0) / IP(src=POD_A_IP, dst=REMOTE_POD_IP, ttl=1,
                                                 options=[b"\x94\x04\x00\x00"]) / UDP() / b"ra", GW_MAC, GW_IP),
    "uplink-to-pod-ttl-1": (UPLINK, uplink_frame() / IP(src=REMOTE_POD_IP, dst=POD_A_IP, ttl=1) /
                            UDP(sport=1, dport=53) / b"q", UPLINK_MAC, NODE_IP),
}


@pytest.mark.parametrize("case", TTL_CASES, ids=str)
def test_ttl_exceeded(tmp_path, case):
    """TTL 1 (or 0) on a routed packet: ICMP time exceeded back out of the
    ingress port, from that side's local IP."""
    ingress, frame, our_mac, our_ip = TTL_CASES[case]
    r = replay(tmp_path, {ingress: [frame]})
    check_error(r, ingress, frame, our_mac, our_ip, 11, 0)
    assert r.drops() == {"ttl_exceeded": 1}


UNREACHABLE_CASES = {
    "pod-no-route": ("pod0", pod_frame(0) / IP(src=POD_A_IP, dst="8.8.8.8") / TCP(sport=999, dport=443, flags="S"),
                     GW_MAC, GW_IP, 0, {"no_route": 1}),
    "pod-no-route-other-node-cidr": ("pod0", pod_frame(0) / IP(src=POD_A_IP, dst="10.244.3.9") / ICMP(id=4),
                                     GW_MAC, GW_IP, 0, {"no_route": 1}),
    "uplink-no-route": (UPLINK, uplink_frame() / IP(src=REMOTE_NODE_IP, dst="8.8.8.8") / UDP() / b"x",
                        UPLINK_MAC, NODE_IP, 0, {"no_route": 1}),
    "pod-udp-to-gateway": ("pod0", pod_frame(0) / IP(src=POD_A_IP, dst=GW_IP) / UDP(sport=40000, dport=53) /
                           b"\x12\x34dns?", GW_MAC, GW_IP, 3, {"local_unhandled": 1}),
    "pod-udp-to-node-ip": ("pod2", pod_frame(2) / IP(src=PODS[2][0], dst=NODE_IP) / UDP(sport=1, dport=10250),
                           GW_MAC, NODE_IP, 3, {"local_unhandled": 1}),
    "uplink-udp-to-node-ip": (UPLINK, uplink_frame() / IP(src=REMOTE_NODE_IP, dst=NODE_IP) /
                              UDP(sport=4789, dport=4789) / (b"v" * 600), UPLINK_MAC, NODE_IP, 3,
                              {"local_unhandled": 1}),
}


@pytest.mark.parametrize("ingress, frame, our_mac, our_ip, code, drops",
                         list(UNREACHABLE_CASES.values()),
                         ids=list(UNREACHABLE_CASES))
def test_destination_unreachable(tmp_path, ingress, frame, our_mac, our_ip, code, drops):
    """No route (no default route configured): network unreachable (3/0).
    UDP to a local address: port unreachable (3/3), from the address asked."""
    r = replay(tmp_path, {ingress: [frame]})
    check_error(r, ingress, frame, our_mac, our_ip, 3, code)
    assert r.drops() == drops


def test_icmp_error_rate_limit(tmp_path):
    """icmp_errors_per_s = 2: of five TTL-expired packets arriving together,
    two get an error and three are counted as rate limited."""
    frames = [pod_frame(0) / IP(src=POD_A_IP, dst=REMOTE_POD_IP, ttl=1) / UDP(sport=100 + i, dport=33434)
              for i in range(5)]
    r = replay(tmp_path, {"pod0": frames}, extra="[dataplane]\nicmp_errors_per_s = 2\n")
    assert r.drops() == {"ttl_exceeded": 5}
    assert r.stats["icmp_errors"] == {"sent": 2, "rate_limited": 3, "not_allowed": 0, "no_headroom": 0}
    assert len(r.out["pod0"]) == 2
    for got, sent in zip(r.out["pod0"], frames):
        assert_frame(got, icmp_error(sent, GW_MAC, GW_IP, 11, 0))
