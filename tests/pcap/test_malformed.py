"""Malformed and unroutable packets: each is dropped with its own named
reason, forwarded nowhere, and the worker goes on (a valid packet after it in
the same pcap still gets through). Every case runs from a pod port and from
the uplink at once, so the expected counters are the sum of both sides."""
from collections import Counter

import pytest
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Dot1Q
from scapy.packet import Raw

from golden import (GW_MAC, NODE_IP, PODS, POD_PORTS, REMOTE_NODE_MAC, REMOTE_POD_IP, UPLINK,
                    UPLINK_MAC, ICMP, IP, TCP, UDP, Ether, assert_frame, replay, routed)

POD_A_IP, POD_A_MAC = PODS[0]

# What differs between the two ingress sides: who sends, to which MAC, and a
# destination the router would forward to (pod side: another node; uplink
# side: a local pod without a neighbour entry).
SIDES = {
    "pod0": dict(src_mac=POD_A_MAC, dst_mac=GW_MAC, src_ip=POD_A_IP, dst_ip=REMOTE_POD_IP),
    UPLINK: dict(src_mac=REMOTE_NODE_MAC, dst_mac=UPLINK_MAC, src_ip=REMOTE_POD_IP, dst_ip="10.244.1.99"),
}


def eth(s, **kw):
    return Ether(src=kw.pop("src", s["src_mac"]), dst=kw.pop("dst", s["dst_mac"]), **kw)


def ip(s, **kw):
    kw.setdefault("src", s["src_ip"])
    kw.setdefault("dst", s["dst_ip"])
    return IP(**kw)


def bad_checksum(s):
    frame = bytearray(bytes(eth(s) / ip(s) / UDP() / b"x"))
    frame[24] ^= 0x01  # low byte of the header checksum
    return bytes(frame)


# name: (frame builder for a side, drops it causes on one side)
CASES = {
    "runt-13-bytes": (lambda s: bytes(eth(s))[:13], {"runt_frame": 1}),
    "runt-empty": (lambda s: b"", {"runt_frame": 1}),
    "ipv4-too-short": (lambda s: bytes(eth(s) / ip(s))[:14 + 19], {"ipv4_too_short": 1}),
    "ipv4-version-6": (lambda s: eth(s) / ip(s, version=6) / UDP(), {"ipv4_bad_version": 1}),
    "ipv4-ihl-4": (lambda s: eth(s) / ip(s, ihl=4) / UDP(), {"ipv4_bad_ihl": 1}),
    "ipv4-ihl-beyond-frame": (lambda s: eth(s) / ip(s, ihl=15) / UDP(), {"ipv4_bad_ihl": 1}),
    "ipv4-total-length-beyond-frame": (lambda s: eth(s) / ip(s, len=200) / UDP() / b"short",
                                       {"ipv4_bad_total_length": 1}),
    "ipv4-total-length-below-ihl": (lambda s: eth(s) / ip(s, len=19) / UDP(), {"ipv4_bad_total_length": 1}),
    "ipv4-bad-checksum": (bad_checksum, {"ipv4_bad_checksum": 1}),
    "tcp-data-offset-4": (lambda s: eth(s) / ip(s) / TCP(dataofs=4) / b"data", {"tcp_bad_data_offset": 1}),
    "tcp-data-offset-beyond-length": (lambda s: eth(s) / ip(s) / TCP(dataofs=15) / b"data",
                                      {"tcp_bad_data_offset": 1}),
    "tcp-truncated": (lambda s: eth(s) / ip(s, proto=6) / Raw(b"\x00\x50\x01\xbb" + b"\0" * 6), {"l4_truncated": 1}),
    "udp-truncated": (lambda s: eth(s) / ip(s, proto=17) / Raw(b"\x00\x35\x00"), {"l4_truncated": 1}),
    "icmp-truncated": (lambda s: eth(s) / ip(s, proto=1) / Raw(b"\x08\x00\xf7\xff"), {"l4_truncated": 1}),
    "udp-length-below-header": (lambda s: eth(s) / ip(s) / UDP(len=4) / b"abcd", {"udp_bad_length": 1}),
    "udp-length-beyond-datagram": (lambda s: eth(s) / ip(s) / UDP(len=100) / b"abcd", {"udp_bad_length": 1}),
    "vlan-tagged": (lambda s: eth(s) / Dot1Q(vlan=100) / ip(s) / UDP() / b"tagged", {"vlan_tagged": 1}),
    "src-mac-multicast": (lambda s: eth(s, src="01:00:5e:00:00:01") / ip(s) / UDP(), {"src_mac_multicast": 1}),
    "src-mac-broadcast": (lambda s: eth(s, src="ff:ff:ff:ff:ff:ff") / ip(s) / UDP(), {"src_mac_multicast": 1}),
    "ipv6-to-router-mac": (lambda s: eth(s) / IPv6(src="fd00::1", dst="fd00::2") / UDP(),
                           {"unsupported_ethertype": 1}),
    "martian-source-loopback": (lambda s: eth(s) / ip(s, src="127.0.0.1") / UDP(), {"martian_source": 1}),
    "martian-source-zero": (lambda s: eth(s) / ip(s, src="0.0.0.0") / UDP(), {"martian_source": 1}),
    "martian-source-multicast": (lambda s: eth(s) / ip(s, src="224.0.0.9") / UDP(), {"martian_source": 1}),
    "martian-source-broadcast": (lambda s: eth(s) / ip(s, src="255.255.255.255") / UDP(), {"martian_source": 1}),
    "martian-destination-loopback": (lambda s: eth(s) / ip(s, dst="127.0.0.1") / UDP(),
                                     {"martian_destination": 1}),
    "martian-destination-this-network": (lambda s: eth(s) / ip(s, dst="0.1.2.3") / UDP(),
                                         {"martian_destination": 1}),
    "pod-network-broadcast-address": (lambda s: eth(s) / ip(s, dst="10.244.1.255") / UDP(),
                                      {"martian_destination": 1}),
    "pod-network-address": (lambda s: eth(s) / ip(s, dst="10.244.1.0") / UDP(), {"martian_destination": 1}),
    "multicast-destination-unicast-mac": (lambda s: eth(s) / ip(s, dst="224.0.0.5") / UDP(), {"consumed": 1}),
    # No ICMP error about an ICMP error, nor about a non-first fragment.
    "ttl-1-icmp-error": (lambda s: eth(s) / ip(s, ttl=1) / ICMP(type=3, code=1) / bytes(ip(s) / UDP()),
                         {"ttl_exceeded": 1}),
    "ttl-1-non-first-fragment": (lambda s: eth(s) / ip(s, ttl=1, frag=64, proto=17) / (b"f" * 24),
                                 {"ttl_exceeded": 1}),
    "no-route-icmp-error": (lambda s: eth(s) / ip(s, dst="8.8.8.8") / ICMP(type=11) / bytes(ip(s) / UDP()),
                            {"no_route": 1}),
}


def valid_after(side):
    """The valid packet after the corpus, and what kdp sends for it (on up0)."""
    if side == "pod0":
        frame = eth(SIDES[side]) / IP(src=POD_A_IP, dst=REMOTE_POD_IP, ttl=9) / UDP(sport=9, dport=9) / b"alive"
        return frame, routed(frame, UPLINK_MAC, REMOTE_NODE_MAC)
    frame = eth(SIDES[side]) / IP(src=REMOTE_POD_IP, dst=NODE_IP, id=7) / ICMP(id=1, seq=1) / b"alive"
    reply = Ether(src=UPLINK_MAC, dst=REMOTE_NODE_MAC) / IP(src=NODE_IP, dst=REMOTE_POD_IP, id=7) / \
        ICMP(type=0, id=1, seq=1) / b"alive"
    return frame, reply


def check_dropped_and_alive(r, drops):
    assert r.drops() == dict(drops)
    assert len(r.out[UPLINK]) == 2, f"up0 sent {len(r.out[UPLINK])} frames, want the two valid ones"
    by_source = {Ether(f)[IP].src: f for f in r.out[UPLINK] if IP in Ether(f)}
    assert_frame(by_source.get(POD_A_IP, b""), valid_after("pod0")[1], "pod0's valid packet, routed")
    assert_frame(by_source.get(NODE_IP, b""), valid_after(UPLINK)[1], "echo reply to the uplink's valid packet")
    assert all(r.out[p] == [] for p in POD_PORTS), {p: len(r.out[p]) for p in POD_PORTS}


@pytest.mark.parametrize("case", CASES, ids=str)
def test_malformed(tmp_path, case):
    build, drops = CASES[case]
    inputs = {side: [build(s), valid_after(side)[0]] for side, s in SIDES.items()}
    r = replay(tmp_path, inputs)
    check_dropped_and_alive(r, Counter(drops) + Counter(drops))


@pytest.mark.parametrize("side", SIDES)
def test_whole_corpus_in_one_pcap(tmp_path, side):
    """The corpus back to back on one port (more than one RX burst), then the
    valid packet: every reason counted once, nothing forwarded but the valid one."""
    frames = [build(SIDES[side]) for build, _ in CASES.values()] * 2
    r = replay(tmp_path, {side: frames + [valid_after(side)[0]]})
    expected = Counter()
    for _, drops in CASES.values():
        expected.update(drops)
        expected.update(drops)
    assert r.drops() == dict(expected)
    assert r.out[UPLINK] == [bytes(valid_after(side)[1])]
    assert all(r.out[p] == [] for p in POD_PORTS)
