"""The per-node router: pods to other nodes over the uplink, the uplink to
local pods, and next hops resolved through ARP while packets are held."""
import pytest
from scapy.layers.inet import IPOption_NOP, IPOption_Router_Alert

from golden import (ALL_PORTS, BCAST, DEFAULT_ROUTE, GW_IP, GW_MAC, NEIGHBORS, NODE_IP, PODS, POD_PORTS,
                    REMOTE_NODE_IP, REMOTE_NODE_MAC, REMOTE_POD_IP, ROUTES, UPLINK, UPLINK_MAC, ARP, ICMP, IP, TCP,
                    UDP, Ether, assert_frame, icmp_checksum_valid, ip_checksum_valid, pod_frame, replay, routed,
                    uplink_frame)

# These tests are about routing and ARP; egress masquerade is tested in test_nat.py.
NO_MASQUERADE = "[nat]\nmasquerade_egress = false\n"

POD_A_IP, POD_A_MAC = PODS[0]
ZERO_MAC = "00:00:00:00:00:00"
DEFAULT_GW_IP, DEFAULT_GW_MAC = DEFAULT_ROUTE[1], "02:00:00:00:01:01"


def to_remote(**ip):
    return pod_frame(0) / IP(src=POD_A_IP, dst=REMOTE_POD_IP, **ip)


CROSS_NODE_CASES = {
    "tcp": to_remote(ttl=64, id=0x1234, flags="DF") / TCP(sport=43210, dport=8080, seq=1000, ack=2000, flags="PA",
                                                          window=502) / b"GET / HTTP/1.1\r\n\r\n",
    "udp": to_remote(ttl=2, tos=0xB8) / UDP(sport=5000, dport=53) / b"\x00\x01query",
    "udp-zero-checksum": to_remote() / UDP(sport=1, dport=2, chksum=0) / b"no l4 checksum",
    "icmp-echo": to_remote(ttl=255) / ICMP(id=77, seq=3) / (b"p" * 56),
    "ip-options": to_remote(options=[IPOption_Router_Alert(), IPOption_NOP(), IPOption_NOP(), IPOption_NOP(),
                                     IPOption_NOP()]) / UDP(sport=7, dport=7) / b"options",
    "padded-frame": bytes(to_remote(ttl=10) / UDP(sport=1, dport=2) / b"x") + b"\xee" * 17,
    "first-fragment": to_remote(flags="MF", id=9) / UDP(sport=1, dport=2, len=3000) / (b"f" * 64),
    "later-fragment": to_remote(frag=100, id=9) / (b"g" * 40),
    "unknown-protocol": to_remote(proto=132) / (b"\x00" * 12 + b"sctp-ish"),
    "ttl-2-checksum-edge": to_remote(ttl=2, id=0xFFFF, tos=0xFF) / UDP(sport=65535, dport=65535) / b"\xff",
}


def test_pod_to_other_node(tmp_path):
    """pod0 -> 10.244.2.0/24 (another node's pod CIDR), the table's frames in
    one pcap: each leaves the uplink, in order, to the node's MAC from the
    uplink MAC, TTL-1, valid header checksum, everything else unchanged."""
    r = replay(tmp_path, {"pod0": list(CROSS_NODE_CASES.values())})
    assert len(r.out[UPLINK]) == len(CROSS_NODE_CASES)
    for (case, frame), out in zip(CROSS_NODE_CASES.items(), r.out[UPLINK]):
        got, sent = Ether(out), Ether(bytes(frame))
        assert (got.dst, got.src, got.type) == (REMOTE_NODE_MAC, UPLINK_MAC, 0x0800), case
        assert got[IP].ttl == sent[IP].ttl - 1, case
        assert ip_checksum_valid(got), case
        assert (got[IP].src, got[IP].dst, got[IP].id, got[IP].tos, got[IP].flags, got[IP].frag, got[IP].len,
                got[IP].proto, got[IP].options) == \
            (sent[IP].src, sent[IP].dst, sent[IP].id, sent[IP].tos, sent[IP].flags, sent[IP].frag, sent[IP].len,
             sent[IP].proto, sent[IP].options), case
        l4 = slice(14 + sent[IP].ihl * 4, 14 + sent[IP].len)
        assert out[l4] == bytes(frame)[l4], f"{case}: L4 header or payload changed"
        assert_frame(out, routed(frame, UPLINK_MAC, REMOTE_NODE_MAC), case)
    assert all(r.out[p] == [] for p in POD_PORTS)
    assert r.drops() == {}


def test_many_flows_in_one_burst(tmp_path):
    """Forty packets from three pods (more than one RX burst): all routed, in
    order per ingress port."""
    frames = {f"pod{n}": [pod_frame(n) / IP(src=PODS[n][0], dst=f"10.244.2.{10 + i}", ttl=20 + i) /
                          UDP(sport=1000 + i, dport=n + 1) / (bytes([i]) * (i + 1)) for i in range(40 if n == 0 else 5)]
              for n in range(3)}
    r = replay(tmp_path, {"pod0": frames["pod0"], "pod1": frames["pod1"], "pod2": frames["pod2"]})
    assert len(r.out[UPLINK]) == 50
    for port, sent in frames.items():
        mine = [f for f in r.out[UPLINK] if Ether(f)[IP].src == PODS[int(port[-1])][0]]
        assert mine == [routed(f, UPLINK_MAC, REMOTE_NODE_MAC) for f in sent]
    assert r.drops() == {}


def from_uplink_to(pod_ip, **ip):
    return uplink_frame() / IP(src=REMOTE_POD_IP, dst=pod_ip, **ip) / TCP(sport=80, dport=43210, flags="SA") / b"ok"


def test_uplink_to_local_pod_static_neighbor(tmp_path):
    """Uplink -> 10.244.1.5 with a static neighbour entry, pod A seen on pod0:
    delivered on pod0 with the pod's MAC, from the gateway MAC, TTL-1. Until
    the bridge has learned pod A the packet is flooded, so the other pod
    ports may get the same frame, never anything else."""
    seen = pod_frame(0) / IP(src=POD_A_IP, dst=GW_IP) / ICMP(type=0)  # an echo reply: consumed silently
    frame = from_uplink_to(POD_A_IP, ttl=61)
    r = replay(tmp_path, {"pod0": [seen], UPLINK: [frame]}, ports=("pod0", "pod1", "pod2", UPLINK),
               neighbors=NEIGHBORS + [PODS[0]])
    expected = routed(frame, GW_MAC, POD_A_MAC)
    assert len(r.out["pod0"]) == 1
    got = Ether(r.out["pod0"][0])
    assert (got.dst, got.src, got[IP].ttl) == (POD_A_MAC, GW_MAC, 60) and ip_checksum_valid(got)
    assert_frame(r.out["pod0"][0], expected)
    for port in ("pod1", "pod2"):
        assert r.out[port] in ([], [expected])
    assert r.out[UPLINK] == []
    assert r.drops() == {"consumed": 1}
    assert r.control("held") == 0 and r.control("arp_requests_sent") == 0


def test_uplink_to_unlearned_pod_floods(tmp_path):
    """A static neighbour whose MAC the bridge never saw: flooded to every pod port."""
    frame = from_uplink_to(PODS[1][0])
    r = replay(tmp_path, {UPLINK: [frame]}, neighbors=NEIGHBORS + [PODS[1]])
    expected = routed(frame, GW_MAC, PODS[1][1])
    for port in POD_PORTS:
        assert len(r.out[port]) == 1
        assert_frame(r.out[port][0], expected, port)
    assert r.out[UPLINK] == []
    assert r.drops() == {}


def test_uplink_to_pod_resolved_by_glean(tmp_path):
    """No entry for 10.244.1.5; pod A asks for the gateway (broadcast ARP).
    Whichever comes first, the routed packet reaches pod0 only (held and
    released, or routed after the glean), and pod A gets its ARP reply."""
    who_has = Ether(src=POD_A_MAC, dst=BCAST) / ARP(op=1, hwsrc=POD_A_MAC, psrc=POD_A_IP, pdst=GW_IP)
    frame = from_uplink_to(POD_A_IP, ttl=33)
    r = replay(tmp_path, {"pod0": [who_has], UPLINK: [frame]})
    expected = routed(frame, GW_MAC, POD_A_MAC)
    ip_out = {p: [f for f in r.out[p] if Ether(f).type == 0x0800] for p in ALL_PORTS}
    assert ip_out == {UPLINK: [], "pod0": [expected], "pod1": [], "pod2": []}
    arp_reply = Ether(src=GW_MAC, dst=POD_A_MAC) / ARP(op=2, hwsrc=GW_MAC, psrc=GW_IP, hwdst=POD_A_MAC, pdst=POD_A_IP)
    assert bytes(arp_reply) in r.out["pod0"]
    assert r.control("neighbors_learned") == 1 and r.control("pending_resolutions") == 0
    # Punted (at most once) means released, whether held first or not.
    assert r.control("hold_released") == r.stats["workers"][0]["punted"] <= 1
    assert r.control("held") <= r.control("hold_released")
    assert r.drops() == {}


def kdp_who_has(our_mac, our_ip, target_ip):
    return bytes(Ether(src=our_mac, dst=BCAST) /
                 ARP(op=1, hwsrc=our_mac, psrc=our_ip, hwdst=ZERO_MAC, pdst=target_ip))


FAST_GIVE_UP = "[neighbors]\nretries = 2\nretry_ms = 50\n"


@pytest.mark.parametrize("give_up", [False, True], ids=["pending", "given-up"])
def test_unresolved_pod_is_held_and_arped(tmp_path, give_up):
    """Uplink -> 10.244.1.7, nobody answers: the packet is held and kdp
    broadcasts who-has 10.244.1.7 from the gateway to every pod port. With
    the defaults (retry after 1 s) kdp is idle and exits first, the packet
    still pending; with 2 tries 50 ms apart it gives up and counts it."""
    frame = from_uplink_to(PODS[2][0])
    r = replay(tmp_path, {UPLINK: [frame]}, extra=FAST_GIVE_UP if give_up else "", idle_ms=500 if give_up else 150)
    tries = 2 if give_up else 1
    request = kdp_who_has(GW_MAC, GW_IP, PODS[2][0])
    for port in POD_PORTS:
        assert r.out[port] == [request] * tries, port
    got = Ether(request)[ARP]
    assert (got.op, got.hwsrc, got.psrc, got.hwdst, got.pdst) == (1, GW_MAC, GW_IP, ZERO_MAC, PODS[2][0])
    assert r.out[UPLINK] == []
    assert r.control("held") == 1 and r.control("arp_requests_sent") == tries
    assert r.control("hold_released") == 0
    assert (r.control("hold_unresolved"), r.control("pending_resolutions")) == ((1, 0) if give_up else (0, 1))
    assert r.stats["workers"][0]["punted"] == 1
    assert r.drops() == {}


def test_hold_queue_overflow(tmp_path):
    """hold_packets = 4: of 20 packets for an unresolved pod, 4 are held and
    16 counted as overflow; one ARP request is sent."""
    frames = [from_uplink_to(PODS[2][0], id=i) for i in range(20)]
    r = replay(tmp_path, {UPLINK: frames}, extra="[neighbors]\nhold_packets = 4\n")
    assert (r.control("held"), r.control("hold_overflow"), r.control("arp_requests_sent")) == (4, 16, 1)
    assert r.control("pending_resolutions") == 1
    assert all(r.out[p] == [kdp_who_has(GW_MAC, GW_IP, PODS[2][0])] for p in POD_PORTS)
    assert r.drops() == {}


def test_default_route_next_hop_arp_on_uplink(tmp_path):
    """pod0 -> 8.8.8.8 via the default route's unresolved gateway: held, and
    who-has 192.168.50.1 goes out of the uplink only, from the node IP."""
    frame = pod_frame(0) / IP(src=POD_A_IP, dst="8.8.8.8") / UDP(sport=3333, dport=53) / b"dns"
    r = replay(tmp_path, {"pod0": [frame]}, routes=ROUTES + [DEFAULT_ROUTE])
    assert r.out[UPLINK] == [kdp_who_has(UPLINK_MAC, NODE_IP, DEFAULT_GW_IP)]
    assert all(r.out[p] == [] for p in POD_PORTS)
    assert (r.control("held"), r.control("arp_requests_sent"), r.control("pending_resolutions")) == (1, 1, 1)
    assert r.drops() == {}


def test_default_route_resolved_by_arp_reply(tmp_path):
    """The default gateway's ARP reply resolves it: pod0 -> 8.8.8.8 leaves the
    uplink to the gateway's MAC whichever of the two kdp sees first."""
    frame = pod_frame(0) / IP(src=POD_A_IP, dst="8.8.8.8", ttl=64) / TCP(sport=5555, dport=443, flags="S")
    is_at = Ether(src=DEFAULT_GW_MAC, dst=UPLINK_MAC) / ARP(op=2, hwsrc=DEFAULT_GW_MAC, psrc=DEFAULT_GW_IP,
                                                             hwdst=UPLINK_MAC, pdst=NODE_IP)
    r = replay(tmp_path, {"pod0": [frame], UPLINK: [is_at]}, routes=ROUTES + [DEFAULT_ROUTE], extra=NO_MASQUERADE)
    ip_out = [f for f in r.out[UPLINK] if Ether(f).type == 0x0800]
    assert ip_out == [routed(frame, UPLINK_MAC, DEFAULT_GW_MAC)]
    assert [f for f in r.out[UPLINK] if Ether(f).type != 0x0800] in ([], [kdp_who_has(UPLINK_MAC, NODE_IP,
                                                                                      DEFAULT_GW_IP)])
    assert all(r.out[p] == [] for p in POD_PORTS)
    assert r.control("neighbors_learned") == 1 and r.control("pending_resolutions") == 0
    assert r.drops() == {"consumed": 1}


def test_default_route_static_gateway(tmp_path):
    """A more specific route wins over the default route; the default route
    carries the rest (static gateway neighbour)."""
    to_remote_pod = pod_frame(0) / IP(src=POD_A_IP, dst=REMOTE_POD_IP) / UDP() / b"specific"
    to_internet = pod_frame(0) / IP(src=POD_A_IP, dst="1.1.1.1") / UDP() / b"default"
    r = replay(tmp_path, {"pod0": [to_remote_pod, to_internet]}, routes=ROUTES + [DEFAULT_ROUTE], extra=NO_MASQUERADE,
               neighbors=NEIGHBORS + [(DEFAULT_GW_IP, DEFAULT_GW_MAC)])
    assert r.out[UPLINK] == [routed(to_remote_pod, UPLINK_MAC, REMOTE_NODE_MAC),
                             routed(to_internet, UPLINK_MAC, DEFAULT_GW_MAC)]
    assert r.drops() == {}


def test_routed_icmp_checksums_untouched(tmp_path):
    """The router leaves ICMP alone: the echo's own checksum stays valid."""
    frame = to_remote(ttl=3) / ICMP(id=1, seq=1) / b"abc"
    r = replay(tmp_path, {"pod0": [frame]})
    assert len(r.out[UPLINK]) == 1 and icmp_checksum_valid(r.out[UPLINK][0])
    assert r.drops() == {}


@pytest.mark.parametrize("node_ip", ["192.168.50.10/24", "192.168.50.10"], ids=["connected-subnet", "host-address"])
def test_connected_uplink_subnet(tmp_path, node_ip):
    """node_ip = "a.b.c.d/len" makes the uplink subnet connected: pod0 ->
    192.168.50.11 goes straight to that host's MAC. Without the length there
    is no such route (and no default route): network unreachable."""
    frame = pod_frame(0) / IP(src=POD_A_IP, dst=REMOTE_NODE_IP) / TCP(sport=40000, dport=10250, flags="S")
    r = replay(tmp_path, {"pod0": [frame]}, node={"node_ip": node_ip}, extra=NO_MASQUERADE)
    if "/" in node_ip:
        assert r.out[UPLINK] == [routed(frame, UPLINK_MAC, REMOTE_NODE_MAC)]
        assert all(r.out[p] == [] for p in POD_PORTS)
        assert r.drops() == {}
    else:
        assert r.out[UPLINK] == []
        assert len(r.out["pod0"]) == 1
        err = Ether(r.out["pod0"][0])
        assert (err[IP].src, err[IP].dst, err[ICMP].type, err[ICMP].code) == (GW_IP, POD_A_IP, 3, 0)
        assert r.drops() == {"no_route": 1}

