"""Service NAT and masquerade through conntrack, replayed through net_pcap:
DNAT of a new connection, reverse translation of its reply, masquerade,
and the rejections kube-proxy makes. Expected frames are rebuilt by scapy
with fresh checksums, so kdp's incremental updates are checked byte for byte.

Pod ports are listed before the uplink where a reply arrives on another
port than its request: kdp polls ports in config order, so the request has
made its flow before the reply is read."""
import pytest
from golden import (GW_IP, GW_MAC, NODE_IP, PODS, REMOTE_NODE_IP, REMOTE_NODE_MAC, REMOTE_POD_IP, ROUTES, UPLINK,
                    UPLINK_MAC, ICMP, IP, TCP, UDP, Ether, assert_frame, icmp_checksum_valid, pod_frame, replay,
                    translated, uplink_frame)

POD_A_IP, POD_A_MAC = PODS[0]
VIP = "10.96.0.10"
SNAT_PORT = 32768  # the first port of worker 0's share of [nat] snat_ports
OUTSIDE_IP, OUTSIDE_MAC = "192.168.50.99", "02:00:00:00:0c:63"
INTERNET_GW_IP, INTERNET_GW_MAC = "192.168.50.1", "02:00:00:00:0c:01"
POD_FIRST = ("pod0", "pod1", "pod2", UPLINK)
NODE = {"service_cidr": "10.96.0.0/12", "node_ip": NODE_IP + "/24"}
NEIGHBORS = [(REMOTE_NODE_IP, REMOTE_NODE_MAC), (POD_A_IP, POD_A_MAC), (OUTSIDE_IP, OUTSIDE_MAC),
             (INTERNET_GW_IP, INTERNET_GW_MAC)]


def service(endpoints=((REMOTE_POD_IP, "node-b"),), policy="Cluster", protocol="TCP", affinity="None"):
    toml = f'''[[service]]
name = "default/web"
type = "NodePort"
cluster_ip = "{VIP}"
external_traffic_policy = "{policy}"
session_affinity = "{affinity}"
  [[service.port]]
  protocol = "{protocol}"
  port = 80
  target_port = 8080
  node_port = 30080
'''
    for ip, node in endpoints:
        toml += f'''  [[service.endpoint]]
  ip = "{ip}"
  node = "{node}"
'''
    return toml


def nat_run(tmp_path, inputs, *, ports=POD_FIRST, svc=None, routes=ROUTES, extra=""):
    return replay(tmp_path, inputs, ports=ports, routes=routes, neighbors=NEIGHBORS, node=NODE,
                  extra=(svc if svc is not None else service()) + extra)


def test_cluster_ip_from_pod_dnat_and_reply(tmp_path):
    """pod → ClusterIP:80 leaves to the backend 10.244.2.5:8080 with the pod's
    own source (pods are not masqueraded); the backend's SYN+ACK comes back
    from the ClusterIP."""
    syn = pod_frame(0) / IP(src=POD_A_IP, dst=VIP) / TCP(sport=40000, dport=80, flags="S", seq=1000)
    synack = uplink_frame() / IP(src=REMOTE_POD_IP, dst=POD_A_IP) / TCP(sport=8080, dport=40000, flags="SA",
                                                                         seq=5000, ack=1001)
    r = nat_run(tmp_path, {"pod0": [syn], UPLINK: [synack]})
    assert r.out[UPLINK] == [translated(syn, UPLINK_MAC, REMOTE_NODE_MAC, dst=REMOTE_POD_IP, dport=8080)]
    back = translated(synack, GW_MAC, POD_A_MAC, src=VIP, sport=80)
    assert back in r.out["pod0"], "the reply reaches the client from the ClusterIP"
    for port in ("pod1", "pod2"):  # flooded copies only, until the client's MAC is learned
        assert all(f == back for f in r.out[port])
    assert r.drops() == {}


def test_node_port_from_outside_masqueraded(tmp_path):
    """outside → node IP:30080 (externalTrafficPolicy Cluster): DNAT to the
    backend and SNAT to the node IP; the reply is un-NATed both ways."""
    syn = uplink_frame(src_mac=OUTSIDE_MAC) / IP(src=OUTSIDE_IP, dst=NODE_IP) / TCP(sport=51000, dport=30080,
                                                                                   flags="S")
    synack = uplink_frame() / IP(src=REMOTE_POD_IP, dst=NODE_IP) / TCP(sport=8080, dport=SNAT_PORT, flags="SA")
    ack = uplink_frame(src_mac=OUTSIDE_MAC) / IP(src=OUTSIDE_IP, dst=NODE_IP) / TCP(sport=51000, dport=30080,
                                                                                   flags="A") / b"GET /"
    r = nat_run(tmp_path, {UPLINK: [syn, synack, ack]})
    assert r.out[UPLINK] == [
        translated(syn, UPLINK_MAC, REMOTE_NODE_MAC, src=NODE_IP, sport=SNAT_PORT, dst=REMOTE_POD_IP, dport=8080),
        translated(synack, UPLINK_MAC, OUTSIDE_MAC, src=NODE_IP, sport=30080, dst=OUTSIDE_IP, dport=51000),
        translated(ack, UPLINK_MAC, REMOTE_NODE_MAC, src=NODE_IP, sport=SNAT_PORT, dst=REMOTE_POD_IP, dport=8080)]
    assert r.drops() == {}
    assert r.stats["conntrack"]["flows"] == 1
    assert r.stats["conntrack"]["created"] == 1


def test_node_port_local_policy_preserves_source(tmp_path):
    """externalTrafficPolicy Local with a local endpoint: no masquerade, the
    backend sees the client's address."""
    local_ip, local_mac = PODS[1]
    syn = uplink_frame(src_mac=OUTSIDE_MAC) / IP(src=OUTSIDE_IP, dst=NODE_IP) / TCP(sport=51000, dport=30080,
                                                                                   flags="S")
    r = replay(tmp_path, {UPLINK: [syn]}, ports=POD_FIRST, routes=ROUTES, node=NODE,
               neighbors=NEIGHBORS + [(local_ip, local_mac)],
               extra=service(endpoints=((local_ip, "node-a"), (REMOTE_POD_IP, "node-b")), policy="Local"))
    out = translated(syn, GW_MAC, local_mac, dst=local_ip, dport=8080)
    assert all(r.out[p] == [out] for p in ("pod0", "pod1", "pod2")), "flooded: the pod's MAC is not learned yet"
    assert r.drops() == {}


def test_egress_masquerade_and_reply(tmp_path):
    """pod → internet leaves with the node IP and a port from the SNAT range;
    the reply comes back to the pod."""
    syn = pod_frame(0) / IP(src=POD_A_IP, dst="8.8.8.8") / TCP(sport=5555, dport=443, flags="S")
    synack = uplink_frame(src_mac=INTERNET_GW_MAC) / IP(src="8.8.8.8", dst=NODE_IP) / TCP(sport=443, dport=SNAT_PORT,
                                                                                        flags="SA")
    r = nat_run(tmp_path, {"pod0": [syn], UPLINK: [synack]}, routes=ROUTES + [("0.0.0.0/0", INTERNET_GW_IP)])
    assert r.out[UPLINK] == [translated(syn, UPLINK_MAC, INTERNET_GW_MAC, src=NODE_IP, sport=SNAT_PORT)]
    back = translated(synack, GW_MAC, POD_A_MAC, dst=POD_A_IP, dport=5555)
    assert back in r.out["pod0"]
    assert r.drops() == {}


def test_egress_within_cluster_not_masqueraded(tmp_path):
    """pod → a pod on another node keeps its source."""
    frame = pod_frame(0) / IP(src=POD_A_IP, dst=REMOTE_POD_IP) / UDP(sport=7, dport=7) / b"x"
    r = nat_run(tmp_path, {"pod0": [frame]}, svc="")
    assert r.out[UPLINK] == [translated(frame, UPLINK_MAC, REMOTE_NODE_MAC)]


def expect_port_unreachable(r, request, from_ip):
    out = r.frames("pod0")
    assert len(out) == 1
    err = out[0]
    assert err[Ether].dst == POD_A_MAC and err[Ether].src == GW_MAC
    assert (err[IP].src, err[IP].dst, err[ICMP].type, err[ICMP].code) == (from_ip, POD_A_IP, 3, 3)
    assert icmp_checksum_valid(err)
    assert bytes(err[ICMP].payload)[:20] == bytes(request[IP])[:20], "quotes the original header"


def test_service_without_endpoints_rejected(tmp_path):
    """No endpoints: ICMP port unreachable from the ClusterIP, at once."""
    syn = pod_frame(0) / IP(src=POD_A_IP, dst=VIP) / TCP(sport=40000, dport=80, flags="S")
    r = nat_run(tmp_path, {"pod0": [syn]}, svc=service(endpoints=()))
    expect_port_unreachable(r, syn, VIP)
    assert r.drops() == {"service_no_endpoints": 1}
    assert r.silent(UPLINK, "pod1", "pod2")


def test_unknown_port_on_cluster_ip_rejected(tmp_path):
    syn = pod_frame(0) / IP(src=POD_A_IP, dst=VIP) / TCP(sport=40000, dport=81, flags="S")
    r = nat_run(tmp_path, {"pod0": [syn]})
    expect_port_unreachable(r, syn, VIP)
    assert r.drops() == {"service_unknown_port": 1}


def test_unallocated_service_address_dropped(tmp_path):
    syn = pod_frame(0) / IP(src=POD_A_IP, dst="10.96.0.77") / TCP(sport=40000, dport=80, flags="S")
    r = nat_run(tmp_path, {"pod0": [syn]})
    assert r.silent(UPLINK, "pod0", "pod1", "pod2")
    assert r.drops() == {"service_unallocated": 1}


def test_mid_stream_packet_to_service_is_invalid(tmp_path):
    """A TCP packet that opens no connection is not handed to a backend."""
    ack = pod_frame(0) / IP(src=POD_A_IP, dst=VIP) / TCP(sport=40000, dport=80, flags="A")
    r = nat_run(tmp_path, {"pod0": [ack]})
    assert r.silent(UPLINK, "pod0", "pod1", "pod2")
    assert r.drops() == {"conntrack_invalid": 1}


def test_pod_answer_to_outside_client_not_masqueraded(tmp_path):
    """A client outside the cluster talks to a pod directly: the connection is
    tracked on the way in, so the pod's answer keeps its own source."""
    request = uplink_frame(src_mac=OUTSIDE_MAC) / IP(src=OUTSIDE_IP, dst=POD_A_IP) / UDP(sport=5353, dport=53) / b"q"
    answer = pod_frame(0) / IP(src=POD_A_IP, dst=OUTSIDE_IP) / UDP(sport=53, dport=5353) / b"a"
    synack = pod_frame(0) / IP(src=POD_A_IP, dst=OUTSIDE_IP) / TCP(sport=22, dport=40000, flags="SA")
    r = nat_run(tmp_path, {UPLINK: [request], "pod0": [answer, synack]}, ports=("up0", "pod0", "pod1", "pod2"))
    assert r.out[UPLINK] == [translated(answer, UPLINK_MAC, OUTSIDE_MAC), translated(synack, UPLINK_MAC, OUTSIDE_MAC)]
    assert r.drops() == {}


REMOTE_PODS = [f"10.244.2.{n}" for n in range(5, 9)]


def backends_chosen(r):
    return [Ether(f)[IP].dst for f in r.out[UPLINK]]


def test_session_affinity_keeps_client_on_one_backend(tmp_path):
    """sessionAffinity ClientIP: every new connection of one client goes to
    the same backend (4 backends, random choice: without affinity ten
    connections would spread); another client is placed on its own."""
    syns = [pod_frame(0) / IP(src=POD_A_IP, dst=VIP) / TCP(sport=41000 + n, dport=80, flags="S") for n in range(10)]
    svc = service(endpoints=[(ip, "node-b") for ip in REMOTE_PODS], affinity="ClientIP")
    r = nat_run(tmp_path, {"pod0": syns}, svc=svc)
    chosen = backends_chosen(r)
    assert len(chosen) == 10 and len(set(chosen)) == 1, chosen
    assert r.drops() == {}
    # Without affinity the same ten connections do spread.
    r = nat_run(tmp_path / "random", {"pod0": syns}, svc=service(endpoints=[(ip, "node-b") for ip in REMOTE_PODS]))
    assert len(set(backends_chosen(r))) > 1


def quoted(frame_bytes: bytes, **changes) -> bytes:
    """The first 28 bytes of the IP packet in `frame_bytes` (header + 8 L4
    bytes, as an ICMP error quotes it), with fields changed and the IP
    checksum computed afresh."""
    pkt = IP(frame_bytes[14:])
    for field in ("src", "dst"):
        if field in changes:
            setattr(pkt, field, changes[field])
    for field in ("sport", "dport"):
        if field in changes:
            setattr(pkt.payload, field, changes[field])
    del pkt.chksum
    return bytes(pkt)[:28]


ROUTER_IP, ROUTER_MAC = "192.168.50.1", "02:00:00:00:0c:01"


def test_icmp_errors_about_nated_flows_translated(tmp_path):
    """Fragmentation needed from a router about the masqueraded, DNATed
    packet reaches the outside client about the packet it sent; a port
    unreachable from the backend itself comes from the node port's address."""
    syn = uplink_frame(src_mac=OUTSIDE_MAC) / IP(src=OUTSIDE_IP, dst=NODE_IP) / TCP(sport=51000, dport=30080,
                                                                                   flags="S")
    sent = translated(syn, UPLINK_MAC, REMOTE_NODE_MAC, src=NODE_IP, sport=SNAT_PORT, dst=REMOTE_POD_IP, dport=8080)
    frag_needed = (uplink_frame(src_mac=ROUTER_MAC) / IP(src=ROUTER_IP, dst=NODE_IP) /
                   ICMP(type=3, code=4, nexthopmtu=1400) / quoted(sent))
    backend_says = (uplink_frame() / IP(src=REMOTE_POD_IP, dst=NODE_IP) / ICMP(type=3, code=3) / quoted(sent))
    r = nat_run(tmp_path, {UPLINK: [syn, frag_needed, backend_says]})
    assert r.out[UPLINK][0] == sent
    # The quote as the client knows its packet: its own addresses and ports.
    about_client = quoted(sent, src=OUTSIDE_IP, dst=NODE_IP, sport=51000, dport=30080)

    def expected(error, outer_src):
        pkt = Ether(bytes(error))
        pkt.src, pkt.dst = UPLINK_MAC, OUTSIDE_MAC
        pkt[IP].src, pkt[IP].dst = outer_src, OUTSIDE_IP
        pkt[IP].ttl -= 1
        del pkt[IP].chksum
        pkt[ICMP].remove_payload()
        pkt[ICMP].add_payload(about_client)
        del pkt[ICMP].chksum
        return bytes(pkt)

    assert_frame(r.out[UPLINK][1], expected(frag_needed, ROUTER_IP), "fragmentation needed")
    assert_frame(r.out[UPLINK][2], expected(backend_says, NODE_IP), "port unreachable from the backend")
    assert len(r.out[UPLINK]) == 3
    assert r.drops() == {}


def test_ping_to_cluster_ip_rejected(tmp_path):
    """No Service answers pings: an echo to a cluster IP is rejected like a
    port no Service has."""
    echo = pod_frame(0) / IP(src=POD_A_IP, dst=VIP) / ICMP(id=7, seq=1)
    r = nat_run(tmp_path, {"pod0": [echo]})
    expect_port_unreachable(r, echo, VIP)
    assert r.drops() == {"service_unknown_port": 1}


# name: (ingress port, a SYN that expires in kdp's router once translated, the address kdp answers from)
EXPIRED_AFTER_DNAT = {
    "pod-to-cluster-ip": ("pod0", pod_frame(0) / IP(src=POD_A_IP, dst=VIP, ttl=1) /
                          TCP(sport=40001, dport=80, flags="S", seq=7), GW_IP),
    "outside-to-node-port": (UPLINK, uplink_frame(src_mac=OUTSIDE_MAC) / IP(src=OUTSIDE_IP, dst=NODE_IP, ttl=1) /
                             TCP(sport=51001, dport=30080, flags="S", seq=9), NODE_IP),
}


@pytest.mark.parametrize("case", EXPIRED_AFTER_DNAT, ids=str)
def test_icmp_error_kdp_makes_after_dnat_quotes_what_was_sent(tmp_path, case):
    """A SYN to a Service with TTL 1 is translated, then expires in kdp's
    router: the time exceeded reaches its sender quoting the SYN as sent (to
    the Service's address and port, checksums included), as Linux's NAT
    makes the errors it sends itself; a quote of the translated packet would
    match none of the client's sockets (traceroute, path MTU discovery)."""
    ingress, syn, our_ip = EXPIRED_AFTER_DNAT[case]
    r = nat_run(tmp_path, {ingress: [syn]})
    sent = Ether(bytes(syn))
    our_mac = GW_MAC if ingress != UPLINK else UPLINK_MAC
    expected = (Ether(src=our_mac, dst=sent.src) /
                IP(tos=0xC0, id=0, flags=0, ttl=64, proto=1, src=our_ip, dst=sent[IP].src) /
                ICMP(type=11, code=0, unused=0) / bytes(sent[IP]))
    assert [len(r.out[p]) for p in POD_FIRST] == [int(p == ingress) for p in POD_FIRST]
    assert_frame(r.out[ingress][0], bytes(expected), "time exceeded")
    assert r.drops() == {"ttl_exceeded": 1}
