"""Services, as a table: kube-proxy's rules for ClusterIP, NodePort, load
balancer and external IPs, the traffic policies, hairpin, rejections,
source ranges, terminating endpoints, egress masquerade and the load
balancing algorithms.

Each row of CASES is one kdp run (a replay through net_pcap): the Services
and [nat] settings, the frames each port receives, the frames each port must
send and the drop counters that must be counted. The table is the spec.

How expectations read:
  * Uplinks: exactly these frames, in this order.
  * Pod ports: exactly these frames among those addressed to that port's pod
    (its MAC), in order. A frame kdp routes to a pod whose MAC the bridge has
    not learned yet is flooded to every pod port, so a pod port may also carry
    copies of frames expected at *other* pod ports, and nothing else.
  * Translated frames are rebuilt by scapy with every checksum computed
    afresh, so kdp's incremental checksum updates are compared byte for byte.
    ICMP errors (`Unreachable`) are checked field by field.
  * Drops: the run's non-zero drop counters, exactly.

Port order matters where an answer arrives on another port than its request:
kdp polls ports in config order, so a case lists the requester's port first
(POD_FIRST or UP_FIRST) and the request has made its flow before the answer is
read. Within one port, frames are read in pcap order.

Node A: node IP 192.168.50.10/24 on up0, pods 10.244.1.5/.6/.7 on pod0/1/2
(gateway 10.244.1.1), node B's pods 10.244.2.0/24 via 192.168.50.11, the
internet via 192.168.50.1, the service range 10.96.0.0/12. One worker, so
SNAT ports are handed out from 32768 upwards, one per masqueraded flow.
"""
import json
from dataclasses import dataclass, field

import pytest

from golden import (GW_IP, GW_MAC, NODE, NODE_IP, PODS, REMOTE_NODE_IP, REMOTE_NODE_MAC, REMOTE_POD_IP, ROUTES,
                    UPLINK, UPLINK_MAC, ICMP, IP, TCP, UDP, Ether, assert_frame, icmp_checksum_valid,
                    ip_checksum_valid, pod_frame, replay, routed, show, uplink_frame, without_padding, translated)

# ---- the network -------------------------------------------------------------

LOCAL_NODE = NODE["name"]  # "node-a"
OTHER_NODE = "node-b"
POD_PORT_MAC = {f"pod{n}": mac for n, (_, mac) in enumerate(PODS)}
(POD0_IP, POD0_MAC), (POD1_IP, POD1_MAC), _ = PODS
REMOTE_POD2_IP, REMOTE_POD3_IP = "10.244.2.6", "10.244.2.7"

VIP = "10.96.0.10"
UNALLOCATED_VIP = "10.96.0.77"
LB_IP = "203.0.113.10"
EXT_IP = "203.0.113.20"
NODE_PORT = 30080

OUTSIDE_IP, OUTSIDE_MAC = "192.168.50.99", "02:00:00:00:0c:63"   # a client on the uplink subnet
ALLOWED_IP, ALLOWED_MAC = "192.168.50.70", "02:00:00:00:0c:46"   # inside the source range of LB_CASE
INTERNET_GW_IP, INTERNET_GW_MAC = "192.168.50.1", "02:00:00:00:0c:01"
INTERNET_IP = "8.8.8.8"
NO_MASQ_IP = "172.16.5.5"

SNAT = 32768  # the first port of [nat] snat_ports (one worker)

NODE_CFG = {"service_cidr": "10.96.0.0/12", "node_ip": NODE_IP + "/24"}
CASE_ROUTES = ROUTES + [("0.0.0.0/0", INTERNET_GW_IP)]
NEIGHBORS = [(REMOTE_NODE_IP, REMOTE_NODE_MAC), (OUTSIDE_IP, OUTSIDE_MAC), (ALLOWED_IP, ALLOWED_MAC),
             (INTERNET_GW_IP, INTERNET_GW_MAC)] + list(PODS)

POD_FIRST = ("pod0", "pod1", "pod2", UPLINK)
UP_FIRST = (UPLINK, "pod0", "pod1", "pod2")


# ---- configuration builders --------------------------------------------------

def ep(ip, node=OTHER_NODE, **conditions) -> dict:
    """An endpoint; conditions: ready, serving, terminating (EndpointSlice)."""
    return {"ip": ip, "node": node, **conditions}


def service(*, name="default/web", type="ClusterIP", cluster_ip=VIP, protocol="TCP", port=80, target_port=8080,
            node_port=None, endpoints=(), etp=None, itp=None, external_ips=(), lb_ips=(), source_ranges=(),
            lb=None) -> str:
    q = json.dumps
    lines = ["[[service]]", f"name = {q(name)}", f"type = {q(type)}", f"cluster_ip = {q(cluster_ip)}"]
    if etp: lines.append(f"external_traffic_policy = {q(etp)}")
    if itp: lines.append(f"internal_traffic_policy = {q(itp)}")
    if external_ips: lines.append(f"external_ips = {q(list(external_ips))}")
    if lb_ips: lines.append(f"load_balancer_ips = {q(list(lb_ips))}")
    if source_ranges: lines.append(f"load_balancer_source_ranges = {q(list(source_ranges))}")
    if lb: lines.append(f"lb_algorithm = {q(lb)}")
    lines += ["  [[service.port]]", f"  protocol = {q(protocol)}", f"  port = {port}", f"  target_port = {target_port}"]
    if node_port: lines.append(f"  node_port = {node_port}")
    for e in endpoints:
        lines.append("  [[service.endpoint]]")
        lines += [f"  {k} = {q(v)}" for k, v in e.items()]
    return "\n".join(lines) + "\n"


def nat(**settings) -> str:
    return "[nat]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items())


# ---- frame builders ----------------------------------------------------------

def from_pod(n, dst, l4, **ip):
    return pod_frame(n) / IP(src=PODS[n][0], dst=dst, **ip) / l4


def from_outside(dst, l4, src=OUTSIDE_IP, mac=OUTSIDE_MAC):
    return uplink_frame(src_mac=mac) / IP(src=src, dst=dst) / l4


def from_remote_pod(src, dst, l4):
    return uplink_frame() / IP(src=src, dst=dst) / l4


def from_internet(dst, l4):
    return uplink_frame(src_mac=INTERNET_GW_MAC) / IP(src=INTERNET_IP, dst=dst) / l4


def syn(sport, dport, **kw):
    return TCP(sport=sport, dport=dport, flags="S", seq=1000, **kw)


def synack(sport, dport):
    return TCP(sport=sport, dport=dport, flags="SA", seq=5000, ack=1001)


def to_uplink(frame, next_hop_mac, **rw) -> bytes:
    return translated(frame, UPLINK_MAC, next_hop_mac, **rw)


def to_pod(frame, n, **rw) -> bytes:
    return translated(frame, GW_MAC, PODS[n][1], **rw)


@dataclass
class Unreachable:
    """ICMP port unreachable about `request`, from `source` (the address the
    request was sent to), back out of the port it came in by."""
    request: object
    source: str

    def check(self, actual: bytes, what: str) -> None:
        req = Ether(without_padding(self.request))
        got = Ether(actual)
        our_mac = UPLINK_MAC if req.dst == UPLINK_MAC else GW_MAC
        assert got.haslayer(ICMP), f"{what}: not ICMP\n{show(actual)}"
        fields = lambda p: (p[Ether].src, p[Ether].dst, p[IP].src, p[IP].dst, p[IP].proto, p[IP].ihl,  # noqa: E731
                            p[ICMP].type, p[ICMP].code, bytes(p[IP])[24:28])  # the unused word
        want = (our_mac, req.src, self.source, req[IP].src, 1, 5, 3, 3, b"\0" * 4)
        assert fields(got) == want, f"{what}: {fields(got)} != {want}\n{show(actual)}"
        assert got[IP].ttl == 64 and got[IP].frag == 0 and got[IP].flags == 0, f"{what}\n{show(actual)}"
        assert ip_checksum_valid(got) and icmp_checksum_valid(got), f"{what}: bad checksum\n{show(actual)}"
        assert got[IP].len == len(actual) - 14 == 20 + 8 + req[IP].len, f"{what}: length\n{show(actual)}"
        assert actual[14 + 28:] == bytes(req[IP]), f"{what}: does not quote the request as received"


# ---- per-port expectations that are not a fixed list -------------------------

@dataclass
class Alternating:
    """New flows that alternate between backends: frames[i] is flow i's
    translation to each backend; whichever backend comes first, the next
    flow must go to the other one."""
    frames: list  # [(to backend A, to backend B)]

    def match(self, out, what):
        assert len(out) == len(self.frames), f"{what}: {len(out)} frames, expected {len(self.frames)}"
        first = self.frames[0].index(out[0]) if out[0] in self.frames[0] else None
        assert first is not None, f"{what}: flow 0 went to no backend\n{show(out[0])}"
        for i, (options, got) in enumerate(zip(self.frames, out)):
            assert_frame(got, options[(first + i) % 2], f"{what}: flow {i} (round robin)")


@dataclass
class EachOneOf:
    """Each flow goes to one of the backends (which one is the case's to say
    elsewhere); at least `spread` distinct backends are used."""
    options: list  # per frame: [translation to each backend]
    spread: int = 1

    def match(self, out, what):
        assert len(out) == len(self.options), f"{what}: {len(out)} frames, expected {len(self.options)}"
        chosen = set()
        for i, (options, got) in enumerate(zip(self.options, out)):
            assert got in options, f"{what}: flow {i} went to no backend\n{show(got)}"
            chosen.add(options.index(got))
        assert len(chosen) >= self.spread, f"{what}: only backends {chosen} used"


# ---- the table ---------------------------------------------------------------

@dataclass
class Case:
    name: str
    rule: str
    config: str              # [[service]] tables and [nat]
    inputs: dict             # port -> [frames]
    expect: dict             # port -> [frames | Unreachable] or a matcher (Alternating, EachOneOf)
    drops: dict = field(default_factory=dict)
    ports: tuple = POD_FIRST
    runs: int = 1            # >1: every run must transmit the very same frames
    xfail: str | None = None


CASES: list[Case] = []


def case(**kw):
    CASES.append(Case(**kw))


REMOTE = [ep(REMOTE_POD_IP)]

# --- ClusterIP -----------------------------------------------------------------

_syn = from_pod(0, VIP, syn(40000, 80))
_synack = from_remote_pod(REMOTE_POD_IP, POD0_IP, synack(8080, 40000))
case(name="cluster-ip-from-pod-tcp",
     rule="pod → ClusterIP: DNAT to the backend, source kept (no masquerade); the reply comes from the ClusterIP",
     config=service(endpoints=REMOTE),
     inputs={"pod0": [_syn], UPLINK: [_synack]},
     expect={UPLINK: [to_uplink(_syn, REMOTE_NODE_MAC, dst=REMOTE_POD_IP, dport=8080)],
             "pod0": [to_pod(_synack, 0, src=VIP, sport=80)]})

_req = from_pod(0, VIP, UDP(sport=40000, dport=53) / b"query")
_ans = from_remote_pod(REMOTE_POD_IP, POD0_IP, UDP(sport=5353, dport=40000) / b"answer!")
case(name="cluster-ip-from-pod-udp",
     rule="pod → ClusterIP over UDP: DNAT both ways, the UDP checksum updated",
     config=service(protocol="UDP", port=53, target_port=5353, endpoints=REMOTE),
     inputs={"pod0": [_req], UPLINK: [_ans]},
     expect={UPLINK: [to_uplink(_req, REMOTE_NODE_MAC, dst=REMOTE_POD_IP, dport=5353)],
             "pod0": [to_pod(_ans, 0, src=VIP, sport=53)]})

_syn = from_outside(VIP, syn(51000, 80))
_synack = from_remote_pod(REMOTE_POD_IP, NODE_IP, synack(8080, SNAT))
_ack = from_outside(VIP, TCP(sport=51000, dport=80, flags="A", seq=1001, ack=5001) / b"GET /")
case(name="cluster-ip-from-outside-masqueraded-to-node-ip",
     rule="outside the cluster CIDR → ClusterIP: DNAT and SNAT to the node IP (backend on another node); "
          "replies and later packets translated",
     config=service(endpoints=REMOTE),
     inputs={UPLINK: [_syn, _synack, _ack]},
     expect={UPLINK: [to_uplink(_syn, REMOTE_NODE_MAC, src=NODE_IP, sport=SNAT, dst=REMOTE_POD_IP, dport=8080),
                      to_uplink(_synack, OUTSIDE_MAC, src=VIP, sport=80, dst=OUTSIDE_IP, dport=51000),
                      to_uplink(_ack, REMOTE_NODE_MAC, src=NODE_IP, sport=SNAT, dst=REMOTE_POD_IP, dport=8080)]})

_syn = from_outside(VIP, syn(51000, 80))
_synack = from_pod(1, GW_IP, synack(8080, SNAT))
case(name="cluster-ip-from-outside-local-backend-masqueraded-to-gateway",
     rule="outside → ClusterIP with a backend on this node: SNAT to the gateway IP (the address kdp reaches "
          "the pod by), so the pod answers through kdp",
     config=service(endpoints=[ep(POD1_IP, LOCAL_NODE)]),
     ports=UP_FIRST,
     inputs={UPLINK: [_syn], "pod1": [_synack]},
     expect={"pod1": [to_pod(_syn, 1, src=GW_IP, sport=SNAT, dst=POD1_IP, dport=8080)],
             UPLINK: [to_uplink(_synack, OUTSIDE_MAC, src=VIP, sport=80, dst=OUTSIDE_IP, dport=51000)]})

_syn = from_pod(0, VIP, syn(40000, 80))
_synack = from_remote_pod(REMOTE_POD_IP, NODE_IP, synack(8080, SNAT))
case(name="cluster-ip-masquerade-all",
     rule="[nat] masquerade_all: pod → ClusterIP is masqueraded too (node IP towards another node)",
     config=service(endpoints=REMOTE) + nat(masquerade_all=True),
     inputs={"pod0": [_syn], UPLINK: [_synack]},
     expect={UPLINK: [to_uplink(_syn, REMOTE_NODE_MAC, src=NODE_IP, sport=SNAT, dst=REMOTE_POD_IP, dport=8080)],
             "pod0": [to_pod(_synack, 0, src=VIP, sport=80, dst=POD0_IP, dport=40000)]})

# --- NodePort, load balancer IP, external IP: externalTrafficPolicy Cluster ----

FRONTENDS = [(NODE_IP, NODE_PORT), (LB_IP, 80), (EXT_IP, 80)]


def all_frontends(**kw):
    return service(type="LoadBalancer", node_port=NODE_PORT, lb_ips=[LB_IP], external_ips=[EXT_IP], **kw)


_syns = [from_outside(ip, syn(51000 + i, port)) for i, (ip, port) in enumerate(FRONTENDS)]
_synacks = [from_remote_pod(REMOTE_POD_IP, NODE_IP, synack(8080, SNAT + i)) for i in range(3)]
case(name="etp-cluster-masqueraded",
     rule="externalTrafficPolicy Cluster: outside → NodePort, LB IP, external IP are DNATed and SNATed to the "
          "node IP; each reply comes back from its frontend",
     config=all_frontends(endpoints=REMOTE),
     inputs={UPLINK: _syns + _synacks},
     expect={UPLINK: [to_uplink(s, REMOTE_NODE_MAC, src=NODE_IP, sport=SNAT + i, dst=REMOTE_POD_IP, dport=8080)
                      for i, s in enumerate(_syns)] +
                     [to_uplink(a, OUTSIDE_MAC, src=ip, sport=port, dst=OUTSIDE_IP, dport=51000 + i)
                      for i, (a, (ip, port)) in enumerate(zip(_synacks, FRONTENDS))]})

_syns = [from_pod(0, ip, syn(40000 + i, port)) for i, (ip, port) in enumerate(FRONTENDS)]
_synacks = [from_remote_pod(REMOTE_POD_IP, NODE_IP, synack(8080, SNAT + i)) for i in range(3)]
case(name="etp-cluster-from-pod-masqueraded",
     rule="externalTrafficPolicy Cluster, from a pod: NodePort, LB IP and external IP are masqueraded too",
     config=all_frontends(endpoints=REMOTE),
     inputs={"pod0": _syns, UPLINK: _synacks},
     expect={UPLINK: [to_uplink(s, REMOTE_NODE_MAC, src=NODE_IP, sport=SNAT + i, dst=REMOTE_POD_IP, dport=8080)
                      for i, s in enumerate(_syns)],
             "pod0": [to_pod(a, 0, src=ip, sport=port, dst=POD0_IP, dport=40000 + i)
                      for i, (a, (ip, port)) in enumerate(zip(_synacks, FRONTENDS))]})

_syn = from_outside(NODE_IP, syn(51000, NODE_PORT))
_synack = from_pod(1, GW_IP, synack(8080, SNAT))
case(name="node-port-local-backend-masqueraded-to-gateway",
     rule="externalTrafficPolicy Cluster, outside → NodePort with a backend on this node: SNAT to the gateway IP; "
          "the pod's answer leaves from the node port",
     config=service(type="NodePort", node_port=NODE_PORT, endpoints=[ep(POD1_IP, LOCAL_NODE)]),
     ports=UP_FIRST,
     inputs={UPLINK: [_syn], "pod1": [_synack]},
     expect={"pod1": [to_pod(_syn, 1, src=GW_IP, sport=SNAT, dst=POD1_IP, dport=8080)],
             UPLINK: [to_uplink(_synack, OUTSIDE_MAC, src=NODE_IP, sport=NODE_PORT, dst=OUTSIDE_IP, dport=51000)]})

_req = from_outside(NODE_IP, UDP(sport=51000, dport=30053) / b"query")
_ans = from_remote_pod(REMOTE_POD_IP, NODE_IP, UDP(sport=5353, dport=SNAT) / b"answer")
case(name="node-port-udp-masqueraded",
     rule="UDP NodePort (Cluster): DNAT + SNAT to the node IP, and back",
     config=service(type="NodePort", protocol="UDP", port=53, target_port=5353, node_port=30053, endpoints=REMOTE),
     inputs={UPLINK: [_req, _ans]},
     expect={UPLINK: [to_uplink(_req, REMOTE_NODE_MAC, src=NODE_IP, sport=SNAT, dst=REMOTE_POD_IP, dport=5353),
                      to_uplink(_ans, OUTSIDE_MAC, src=NODE_IP, sport=30053, dst=OUTSIDE_IP, dport=51000)]})

# --- externalTrafficPolicy Local ----------------------------------------------

_syns = [from_outside(ip, syn(51000 + i, port)) for i, (ip, port) in enumerate(FRONTENDS)]
_synacks = [from_pod(1, OUTSIDE_IP, synack(8080, 51000 + i)) for i in range(3)]
case(name="etp-local-keeps-source",
     rule="externalTrafficPolicy Local: outside → NodePort, LB IP, external IP go to a local endpoint only, "
          "with the client's source; the pod's answer leaves from the frontend",
     config=all_frontends(etp="Local", endpoints=[ep(POD1_IP, LOCAL_NODE), ep(REMOTE_POD_IP)]),
     ports=UP_FIRST,
     inputs={UPLINK: _syns, "pod1": _synacks},
     expect={"pod1": [to_pod(s, 1, dst=POD1_IP, dport=8080) for s in _syns],
             UPLINK: [to_uplink(a, OUTSIDE_MAC, src=ip, sport=port)
                      for a, (ip, port) in zip(_synacks, FRONTENDS)]})

case(name="etp-local-no-local-endpoint-dropped",
     rule="externalTrafficPolicy Local without a local endpoint: outside traffic is dropped (not rejected)",
     config=all_frontends(etp="Local", endpoints=REMOTE),
     inputs={UPLINK: [from_outside(ip, syn(51000 + i, port)) for i, (ip, port) in enumerate(FRONTENDS)]},
     expect={},
     drops={"service_no_local_endpoints": 3})

_syns = [from_pod(0, ip, syn(40000 + i, port)) for i, (ip, port) in enumerate(FRONTENDS)]
_synacks = [from_remote_pod(REMOTE_POD_IP, POD0_IP, synack(8080, 40000 + i)) for i in range(3)]
case(name="etp-local-from-pod-short-circuits",
     rule="externalTrafficPolicy Local, from a pod: any endpoint (here only remote ones), not masqueraded",
     config=all_frontends(etp="Local", endpoints=REMOTE),
     inputs={"pod0": _syns, UPLINK: _synacks},
     expect={UPLINK: [to_uplink(s, REMOTE_NODE_MAC, dst=REMOTE_POD_IP, dport=8080) for s in _syns],
             "pod0": [to_pod(a, 0, src=ip, sport=port) for a, (ip, port) in zip(_synacks, FRONTENDS)]})

_syn = from_outside(NODE_IP, syn(51000, NODE_PORT))
case(name="etp-local-terminating-local-fallback",
     rule="externalTrafficPolicy Local: a local endpoint that is terminating but serving is used when no local "
          "one is ready, though ready ones exist elsewhere",
     config=service(type="NodePort", node_port=NODE_PORT, etp="Local",
                    endpoints=[ep(POD1_IP, LOCAL_NODE, ready=False, serving=True, terminating=True),
                               ep(REMOTE_POD_IP)]),
     inputs={UPLINK: [_syn]},
     ports=UP_FIRST,
     expect={"pod1": [to_pod(_syn, 1, dst=POD1_IP, dport=8080)]})

# --- internalTrafficPolicy Local ------------------------------------------------

_syns = [from_pod(0, VIP, syn(40000 + i, 80)) for i in range(4)]
_outside = from_outside(VIP, syn(51000, 80))
case(name="itp-local-only-local-endpoints",
     rule="internalTrafficPolicy Local: ClusterIP traffic only to this node's endpoints (pods: source kept; "
          "outside: still masqueraded)",
     config=service(itp="Local", endpoints=[ep(POD1_IP, LOCAL_NODE), ep(REMOTE_POD_IP), ep(REMOTE_POD2_IP)]),
     inputs={"pod0": _syns, UPLINK: [_outside]},
     expect={"pod1": [to_pod(s, 1, dst=POD1_IP, dport=8080) for s in _syns] +
                     [to_pod(_outside, 1, src=GW_IP, sport=SNAT, dst=POD1_IP, dport=8080)]})

case(name="itp-local-no-local-endpoint-dropped",
     rule="internalTrafficPolicy Local without a local endpoint: dropped, not rejected",
     config=service(itp="Local", endpoints=REMOTE),
     inputs={"pod0": [from_pod(0, VIP, syn(40000, 80))]},
     expect={},
     drops={"service_no_local_endpoints": 1})

# --- hairpin ----------------------------------------------------------------

_syn = from_pod(0, VIP, syn(40000, 80))
_synack = from_pod(0, GW_IP, synack(8080, SNAT))
case(name="hairpin-masqueraded-to-gateway",
     rule="a pod reaching itself through its Service is masqueraded to the gateway IP, so its answer comes back "
          "through kdp and is translated to come from the ClusterIP",
     config=service(endpoints=[ep(POD0_IP, LOCAL_NODE)]),
     inputs={"pod0": [_syn, _synack]},
     expect={"pod0": [to_pod(_syn, 0, src=GW_IP, sport=SNAT, dst=POD0_IP, dport=8080),
                      to_pod(_synack, 0, src=VIP, sport=80, dst=POD0_IP, dport=40000)]})

# --- rejections and drops -------------------------------------------------------

_pod = from_pod(0, VIP, syn(40000, 80))
_outs = [from_outside(ip, syn(51000 + i, port)) for i, (ip, port) in enumerate(FRONTENDS)]
case(name="no-endpoints-rejected",
     rule="no endpoints: ICMP port unreachable from the address asked (ClusterIP, NodePort, LB IP, external IP)",
     config=all_frontends(endpoints=()),
     inputs={"pod0": [_pod], UPLINK: _outs},
     expect={"pod0": [Unreachable(_pod, VIP)],
             UPLINK: [Unreachable(o, ip) for o, (ip, _) in zip(_outs, FRONTENDS)]},
     drops={"service_no_endpoints": 4})

_tcp = from_pod(0, VIP, syn(40000, 81))
_udp = from_pod(0, VIP, UDP(sport=40000, dport=80) / b"x")
case(name="unknown-port-on-cluster-ip-rejected",
     rule="a ClusterIP on a port (or protocol) no Service has: ICMP port unreachable from the ClusterIP",
     config=service(endpoints=REMOTE),
     inputs={"pod0": [_tcp, _udp]},
     expect={"pod0": [Unreachable(_tcp, VIP), Unreachable(_udp, VIP)]},
     drops={"service_unknown_port": 2})

case(name="unallocated-service-address-dropped",
     rule="an address of the service range no Service has: dropped silently",
     config=service(endpoints=REMOTE),
     inputs={"pod0": [from_pod(0, UNALLOCATED_VIP, syn(40000, 80))],
             UPLINK: [from_outside(UNALLOCATED_VIP, UDP(sport=5000, dport=53) / b"q")]},
     expect={},
     drops={"service_unallocated": 2})

_acks = [from_pod(0, VIP, TCP(sport=40000, dport=80, flags="A")),
         from_outside(NODE_IP, TCP(sport=51000, dport=NODE_PORT, flags="A")),
         from_outside(LB_IP, TCP(sport=51001, dport=80, flags="PA") / b"data")]
case(name="mid-stream-tcp-to-frontend-invalid",
     rule="a TCP segment that opens no connection (no SYN) to a Service frontend: conntrack_invalid",
     config=all_frontends(endpoints=REMOTE),
     inputs={"pod0": _acks[:1], UPLINK: _acks[1:]},
     expect={},
     drops={"conntrack_invalid": 3})

# --- loadBalancerSourceRanges ------------------------------------------------------

_denied_out = from_outside(LB_IP, syn(51000, 80))
_allowed = from_outside(LB_IP, syn(52000, 80), src=ALLOWED_IP, mac=ALLOWED_MAC)
_node_port = from_outside(NODE_IP, syn(51001, NODE_PORT))
_denied_pod = from_pod(0, LB_IP, syn(40000, 80))
_cluster_ip = from_pod(0, VIP, syn(40001, 80))
case(name="lb-source-ranges",
     rule="loadBalancerSourceRanges: sources outside them are dropped on LB IPs (pods too); NodePort and "
          "ClusterIP are not restricted",
     config=service(type="LoadBalancer", node_port=NODE_PORT, lb_ips=[LB_IP], source_ranges=["192.168.50.64/27"],
                    endpoints=REMOTE),
     inputs={"pod0": [_denied_pod, _cluster_ip], UPLINK: [_denied_out, _allowed, _node_port]},
     expect={UPLINK: [to_uplink(_cluster_ip, REMOTE_NODE_MAC, dst=REMOTE_POD_IP, dport=8080),
                      to_uplink(_allowed, REMOTE_NODE_MAC, src=NODE_IP, sport=SNAT, dst=REMOTE_POD_IP, dport=8080),
                      to_uplink(_node_port, REMOTE_NODE_MAC, src=NODE_IP, sport=SNAT + 1, dst=REMOTE_POD_IP,
                                dport=8080)]},
     drops={"lb_source_range": 2})

# --- terminating endpoints ----------------------------------------------------------

SERVING_TERMINATING = dict(ready=False, serving=True, terminating=True)
NOT_SERVING = dict(ready=False, serving=False, terminating=True)
_syns = [from_pod(0, VIP, syn(40000 + i, 80)) for i in range(3)]
case(name="terminating-fallback",
     rule="no ready endpoint: serving terminating ones are used; not-serving ones never",
     config=service(endpoints=[ep(REMOTE_POD_IP, **SERVING_TERMINATING), ep(REMOTE_POD2_IP, **NOT_SERVING)]),
     inputs={"pod0": _syns},
     expect={UPLINK: [to_uplink(s, REMOTE_NODE_MAC, dst=REMOTE_POD_IP, dport=8080) for s in _syns]})

case(name="ready-endpoints-preferred-over-terminating",
     rule="with a ready endpoint, serving terminating ones are not used",
     config=service(endpoints=[ep(REMOTE_POD_IP, **SERVING_TERMINATING), ep(REMOTE_POD2_IP)]),
     inputs={"pod0": _syns},
     expect={UPLINK: [to_uplink(s, REMOTE_NODE_MAC, dst=REMOTE_POD2_IP, dport=8080) for s in _syns]})

_syn = from_pod(0, VIP, syn(40000, 80))
case(name="not-serving-endpoints-never-used",
     rule="only not-serving endpoints: the Service has no endpoints, rejected",
     config=service(endpoints=[ep(REMOTE_POD_IP, **NOT_SERVING), ep(REMOTE_POD2_IP, ready=False)]),
     inputs={"pod0": [_syn]},
     expect={"pod0": [Unreachable(_syn, VIP)]},
     drops={"service_no_endpoints": 1})

# --- egress masquerade --------------------------------------------------------------

_syn = from_pod(0, INTERNET_IP, syn(5555, 443))
_synack = from_internet(NODE_IP, synack(443, SNAT))
case(name="egress-tcp-masqueraded",
     rule="pod → outside the cluster: SNAT to the node IP and a port of snat_ports; the reply mapped back",
     config="",
     inputs={"pod0": [_syn], UPLINK: [_synack]},
     expect={UPLINK: [to_uplink(_syn, INTERNET_GW_MAC, src=NODE_IP, sport=SNAT)],
             "pod0": [to_pod(_synack, 0, dst=POD0_IP, dport=5555)]})

_req = from_pod(0, INTERNET_IP, UDP(sport=5353, dport=53) / b"query")
_ans = from_internet(NODE_IP, UDP(sport=53, dport=SNAT) / b"answer")
case(name="egress-udp-masqueraded",
     rule="UDP egress masqueraded, the reply mapped back",
     config="",
     inputs={"pod0": [_req], UPLINK: [_ans]},
     expect={UPLINK: [to_uplink(_req, INTERNET_GW_MAC, src=NODE_IP, sport=SNAT)],
             "pod0": [to_pod(_ans, 0, dst=POD0_IP, dport=5353)]})

_echo = from_pod(0, INTERNET_IP, ICMP(type=8, id=0x1234, seq=1) / b"ping")
_reply = from_internet(NODE_IP, ICMP(type=0, id=SNAT, seq=1) / b"ping")
case(name="egress-icmp-echo-masqueraded",
     rule="ICMP echo egress: SNAT to the node IP with the identifier translated; the echo reply mapped back",
     config="",
     inputs={"pod0": [_echo], UPLINK: [_reply]},
     expect={UPLINK: [to_uplink(_echo, INTERNET_GW_MAC, src=NODE_IP, ident=SNAT)],
             "pod0": [to_pod(_reply, 0, dst=POD0_IP, ident=0x1234)]})

_to_cluster = from_pod(0, REMOTE_POD_IP, UDP(sport=7, dport=7) / b"x")
_to_no_masq = from_pod(0, NO_MASQ_IP, syn(5555, 443))
# A non-first fragment has no ports: Nat lets it by, so routing is what sees
# its service-range destination (masquerading it would drop it).
_to_service_range = from_pod(0, UNALLOCATED_VIP, b"fragment", frag=10, proto=17, id=7)
case(name="egress-masquerade-exceptions",
     rule="destinations in cluster_cidr, service_cidr and non_masquerade_cidrs keep the pod's source",
     config=nat(non_masquerade_cidrs=["172.16.0.0/12"]),
     inputs={"pod0": [_to_cluster, _to_no_masq, _to_service_range]},
     expect={UPLINK: [routed(_to_cluster, UPLINK_MAC, REMOTE_NODE_MAC),
                      routed(_to_no_masq, UPLINK_MAC, INTERNET_GW_MAC),
                      routed(_to_service_range, UPLINK_MAC, INTERNET_GW_MAC)]})

_syn = from_pod(0, INTERNET_IP, syn(5555, 443))
_synack = from_internet(POD0_IP, synack(443, 5555))
case(name="egress-masquerade-disabled",
     rule="masquerade_egress = false: pod traffic leaves with its own source",
     config=nat(masquerade_egress=False),
     inputs={"pod0": [_syn], UPLINK: [_synack]},
     expect={UPLINK: [routed(_syn, UPLINK_MAC, INTERNET_GW_MAC)],
             "pod0": [routed(_synack, GW_MAC, POD0_MAC)]})

# --- load balancing algorithms ----------------------------------------------------

_syns = [from_pod(0, VIP, syn(40000 + i, 80)) for i in range(4)]
case(name="round-robin-alternates",
     rule="lb_algorithm round_robin: consecutive new flows alternate between the backends",
     config=service(endpoints=[ep(REMOTE_POD_IP), ep(REMOTE_POD2_IP)]) + nat(lb_algorithm="round_robin"),
     inputs={"pod0": _syns},
     expect={UPLINK: Alternating([tuple(to_uplink(s, REMOTE_NODE_MAC, dst=b, dport=8080)
                                        for b in (REMOTE_POD_IP, REMOTE_POD2_IP)) for s in _syns])})

MAGLEV_BACKENDS = (REMOTE_POD_IP, REMOTE_POD2_IP, REMOTE_POD3_IP)
_syns = [from_pod(0, VIP, syn(40000 + 7 * i, 80)) for i in range(8)]
case(name="maglev-consistent-across-runs",
     rule="lb_algorithm maglev (per Service): the same 5-tuple reaches the same backend in two separate kdp runs",
     config=service(lb="maglev", endpoints=[ep(b) for b in MAGLEV_BACKENDS]),
     inputs={"pod0": _syns},
     runs=2,
     expect={UPLINK: EachOneOf([[to_uplink(s, REMOTE_NODE_MAC, dst=b, dport=8080) for b in MAGLEV_BACKENDS]
                                for s in _syns], spread=2)})


# ---- the checker -------------------------------------------------------------

def match_list(out, expected, what):
    assert len(out) == len(expected), (f"{what}: {len(out)} frames, expected {len(expected)}\n" +
                                       "\n".join(show(f) for f in out))
    for i, (got, want) in enumerate(zip(out, expected)):
        if isinstance(want, Unreachable):
            want.check(got, f"{what}[{i}]")
        else:
            assert_frame(got, want, f"{what}[{i}]")


def check(c: Case, out: dict):
    pod_frames = [f for p, exp in c.expect.items() if p in POD_PORT_MAC and isinstance(exp, list)
                  for f in exp if isinstance(f, bytes)]
    for port in c.ports:
        want = c.expect.get(port, [])
        got = out[port]
        if port in POD_PORT_MAC:
            mine = [f for f in got if Ether(f).dst == POD_PORT_MAC[port]]
            others = [f for f in got if Ether(f).dst != POD_PORT_MAC[port]]
            for f in others:
                assert f in pod_frames, f"{port}: sent a frame that is no flooded copy of an expected one\n{show(f)}"
            got = mine
        if isinstance(want, list):
            match_list(got, want, port)
        else:
            want.match(got, port)


@pytest.mark.parametrize("c", [pytest.param(c, id=c.name, marks=[pytest.mark.xfail(strict=True, reason=c.xfail)]
                                            if c.xfail else []) for c in CASES])
def test_service_case(tmp_path, c: Case):
    """One row of CASES (its `rule` says what it pins down)."""
    outs = []
    for run in range(c.runs):
        r = replay(tmp_path / f"run{run}", c.inputs, ports=c.ports, routes=CASE_ROUTES, neighbors=NEIGHBORS,
                   node=NODE_CFG, extra=c.config)
        check(c, r.out)
        assert r.drops() == c.drops
        outs.append(r.out)
    for other in outs[1:]:
        assert other == outs[0], "another run transmitted other frames"
