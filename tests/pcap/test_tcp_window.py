"""TCP window tracking in conntrack, replayed through net_pcap: a Service
connection whose valid segments pass translated while segments outside the
tracked window (a sequence number beyond what the receiver allowed, an
acknowledgement of data never sent, a blind reset) are dropped and counted as
conntrack_tcp_out_of_window; and ICMP errors that match a flow only when the
header they quote does.

Client and backend both sit behind the uplink (an outside client, a backend
on node B), so one pcap holds the whole conversation in order. The client
reaches the ClusterIP from outside the cluster: DNAT to the backend and SNAT
to the node IP, so every passing segment is visibly translated."""
from golden import (NODE_IP, REMOTE_NODE_IP, REMOTE_NODE_MAC, REMOTE_POD_IP, ROUTES, UPLINK, UPLINK_MAC, ICMP,
                    IP, TCP, Ether, assert_frame, replay, translated, uplink_frame)

VIP = "10.96.0.10"
SNAT_PORT = 32768  # the first port of worker 0's share of [nat] snat_ports
OUTSIDE_IP, OUTSIDE_MAC = "192.168.50.99", "02:00:00:00:0c:63"
ROUTER_IP, ROUTER_MAC = "192.168.50.1", "02:00:00:00:0c:01"
NODE = {"service_cidr": "10.96.0.0/12", "node_ip": NODE_IP + "/24"}
NEIGHBORS = [(REMOTE_NODE_IP, REMOTE_NODE_MAC), (OUTSIDE_IP, OUTSIDE_MAC), (ROUTER_IP, ROUTER_MAC)]
SERVICE = f'''[[service]]
name = "default/web"
cluster_ip = "{VIP}"
  [[service.port]]
  port = 80
  target_port = 8080
  [[service.endpoint]]
  ip = "{REMOTE_POD_IP}"
  node = "node-b"
'''

CLIENT_ISN, SERVER_ISN = 1000, 5_000_000
WSCALE = [("MSS", 1460), ("NOP", None), ("WScale", 7)]  # both sides offer scale 7, as Linux does


def from_client(flags, seq, ack=0, payload=b"", window=502, options=()):
    return (uplink_frame(src_mac=OUTSIDE_MAC) / IP(src=OUTSIDE_IP, dst=VIP) /
            TCP(sport=51000, dport=80, flags=flags, seq=seq, ack=ack, window=window, options=list(options)) /
            payload)


def from_backend(flags, seq, ack=0, payload=b"", window=509, options=()):
    return (uplink_frame() / IP(src=REMOTE_POD_IP, dst=NODE_IP) /
            TCP(sport=8080, dport=SNAT_PORT, flags=flags, seq=seq, ack=ack, window=window, options=list(options)) /
            payload)


def to_backend(frame) -> bytes:
    return translated(frame, UPLINK_MAC, REMOTE_NODE_MAC, src=NODE_IP, sport=SNAT_PORT, dst=REMOTE_POD_IP, dport=8080)


def to_client(frame) -> bytes:
    return translated(frame, UPLINK_MAC, OUTSIDE_MAC, src=VIP, sport=80, dst=OUTSIDE_IP, dport=51000)


def run(tmp_path, frames):
    return replay(tmp_path, {UPLINK: frames}, ports=(UPLINK, "pod0"), routes=ROUTES, neighbors=NEIGHBORS, node=NODE,
                  extra=SERVICE)


def test_out_of_window_segments_dropped_valid_ones_translated(tmp_path):
    c, s = CLIENT_ISN + 1, SERVER_ISN + 1
    conversation = [
        # (frame, where it must come out: to_backend, to_client or None for a drop)
        (from_client("S", CLIENT_ISN, window=64240, options=WSCALE), to_backend),
        (from_backend("SA", SERVER_ISN, c, window=65160, options=WSCALE), to_client),
        (from_client("A", c, s), to_backend),
        (from_client("PA", c, s, b"GET / HTTP/1.1\r\n\r\n"), to_backend),
        # 10 MB ahead of anything the backend's window (509 << 7 bytes) allows
        (from_client("PA", c + 10_000_000, s, b"smuggled"), None),
        # acknowledges 100,000 bytes the backend never sent
        (from_client("A", c + 18, s + 100_000), None),
        # a blind reset with a guessed sequence number, as if from the backend
        (from_backend("R", s + 3_000_000), None),
        (from_backend("PA", s, c + 18, b"HTTP/1.1 200 OK\r\n\r\n"), to_client),
        (from_client("A", c + 18, s + 19), to_backend),
        # a reset in window is honoured
        (from_client("R", c + 18), to_backend),
    ]
    r = run(tmp_path, [frame for frame, _ in conversation])
    expected = [way(frame) for frame, way in conversation if way is not None]
    out = r.out[UPLINK]
    for i, (got, want) in enumerate(zip(out, expected)):
        assert_frame(got, want, f"passing segment {i}")
    assert len(out) == len(expected)
    assert r.drops() == {"conntrack_tcp_out_of_window": 3}
    assert r.stats["conntrack"]["flows"] == 1


def test_out_of_window_segment_does_not_advance_the_flow(tmp_path):
    """A FIN beyond the window neither closes the flow nor moves its window:
    the in-window segment after it passes, and the flow stays established."""
    c, s = CLIENT_ISN + 1, SERVER_ISN + 1
    frames = [from_client("S", CLIENT_ISN, window=64240, options=WSCALE),
              from_backend("SA", SERVER_ISN, c, window=65160, options=WSCALE),
              from_client("A", c, s),
              from_client("FA", c + 5_000_000, s),
              from_client("PA", c, s, b"still open")]
    r = run(tmp_path, frames)
    out = r.out[UPLINK]
    assert len(out) == 4
    assert_frame(out[3], to_backend(frames[4]), "the segment after the dropped FIN")
    assert r.drops() == {"conntrack_tcp_out_of_window": 1}


def quoted(frame_bytes: bytes, **changes) -> bytes:
    """The first 28 bytes of the IP packet in `frame_bytes` (as an ICMP error
    quotes it), with fields changed and the IP checksum computed afresh."""
    pkt = IP(frame_bytes[14:])
    for name in ("src", "dst"):
        if name in changes:
            setattr(pkt, name, changes[name])
    for name in ("sport", "dport"):
        if name in changes:
            setattr(pkt.payload, name, changes[name])
    del pkt.chksum
    return bytes(pkt)[:28]


def test_icmp_error_matches_a_flow_only_by_its_quoted_header(tmp_path):
    """Fragmentation-needed errors about the translated SYN: the one quoting
    the flow's tuple exactly reaches the client, translated; ones quoting
    another source port, another destination or another protocol match no
    flow and never reach the client."""
    syn = from_client("S", CLIENT_ISN, window=64240, options=WSCALE)
    sent = to_backend(syn)

    def frag_needed(quote):
        return (uplink_frame(src_mac=ROUTER_MAC) / IP(src=ROUTER_IP, dst=NODE_IP) /
                ICMP(type=3, code=4, nexthopmtu=1400) / quote)

    good = frag_needed(quoted(sent))
    wrong_port = frag_needed(quoted(sent, sport=SNAT_PORT + 1))
    wrong_dst = frag_needed(quoted(sent, dst="10.244.2.99"))
    udp_quote = bytearray(quoted(sent))
    udp_quote[9] = 17  # the same addresses and ports, but UDP
    wrong_proto = frag_needed(quoted(bytes(Ether()) + bytes(udp_quote)))
    r = run(tmp_path, [syn, wrong_port, wrong_dst, wrong_proto, good])
    out = r.out[UPLINK]
    assert out[0] == sent
    to_client_errors = [f for f in out[1:] if Ether(f)[IP].dst == OUTSIDE_IP]
    assert len(to_client_errors) == 1, [Ether(f).summary() for f in out[1:]]
    got = Ether(to_client_errors[0])
    assert got[ICMP].type == 3 and got[ICMP].code == 4
    inner = IP(bytes(got[ICMP].payload)[:28])
    assert (inner.src, inner.dst, inner.payload.sport, inner.payload.dport) == (OUTSIDE_IP, VIP, 51000, 80)


def test_window_scale_read_from_the_syn_options(tmp_path):
    """The backend opens with a 1,000-byte window, then advertises 509 units:
    65,152 bytes when both SYNs carried the window scale option (shift 7), so
    a segment 30,000 bytes ahead passes; 509 bytes when the backend's SYN+ACK
    carried none, so the same segment is out of window."""
    c, s = CLIENT_ISN + 1, SERVER_ISN + 1
    ahead = from_client("PA", c + 30_000, s, b"x" * 100)

    def conversation(backend_options):
        return [from_client("S", CLIENT_ISN, window=64240, options=WSCALE),
                from_backend("SA", SERVER_ISN, c, window=1000, options=backend_options),
                from_client("A", c, s),
                from_backend("A", s, c, window=509),
                ahead]

    r = run(tmp_path / "scaled", conversation(WSCALE))
    assert len(r.out[UPLINK]) == 5
    assert_frame(r.out[UPLINK][4], to_backend(ahead), "the segment inside the scaled window")
    assert r.drops() == {}

    r = run(tmp_path / "unscaled", conversation([("MSS", 1460)]))
    assert len(r.out[UPLINK]) == 4
    assert r.drops() == {"conntrack_tcp_out_of_window": 1}
