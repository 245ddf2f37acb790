"""End-to-end tests on tools/demo's two-node cluster: two kdps, real pods in
network namespaces, real clients (curl, ping, socat) and servers.

The topology, the Services and both nodes' configs come from
tools/demo.d/cluster.py, the same code tools/demo runs: see its docstring.
Every namespace is named kdpe-<random>-HOST, so runs never clash with each
other or with a running demo; every address a test sends to is inside those
namespaces. The cluster is removed after the last test, or when setting it up
fails, or on SIGTERM (a meson timeout).

Needs root, iproute2, iputils-ping, ethtool, curl, socat and Debian's python3;
tools/setup-deps installs them.
"""
import collections
import os
import shutil
import signal
import sys
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools" / "demo.d"))
import cluster as C  # noqa: E402
from cluster import INTERNET_IP, LB_IP, NODES, PODS, SERVICES  # noqa: E402

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="e2e tests need root for network namespaces")

SVC = {name.split("/")[1]: s for name, s in SERVICES.items()}
CLIENTS = ("pod-a1", "pod-b2")  # no Service but default/self has them as endpoints
# What this traffic may drop: ARP and echo kdp answered itself, the Service
# without endpoints (rejected), and frames on the shared underlay segment
# that are not for this node.
ALLOWED_DROPS = {"consumed", "service_no_endpoints", "l2_not_for_us"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    missing = [t for t in C.TOOLS if shutil.which(t) is None]
    assert not missing, f"e2e tests need {', '.join(missing)} (tools/setup-deps installs them)"
    assert Path(C.KDP_BIN).exists() and Path(C.KDPCTL_BIN).exists(), "build first: ninja -C build"
    # SIGTERM (meson's timeout) unwinds like Ctrl-C, so the cluster is removed.
    previous = signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    c = C.Cluster("kdpe-" + uuid.uuid4().hex[:6], tmp_path_factory.mktemp("e2e"), idle_sleep_us=100)
    try:
        c.up()
        yield c
    finally:
        try:
            c.down()
        finally:
            signal.signal(signal.SIGTERM, previous)


@pytest.fixture(autouse=True)
def kdp_alive(cluster):
    yield
    if cluster.kdps:
        dead = cluster.kdp_alive()
        assert not dead, f"kdp exited: {dead}"


def get(cluster, host, url):
    """GETs url from host: (server that answered, source address it saw)."""
    rc, body, err, _ = C.curl(cluster, host, url, timeout=5)
    assert rc == 0, f"curl {url} from {host} exited {rc}: {err}"
    saw = C.parse_saw(body)
    assert saw, f"{url} from {host}: unexpected answer {body!r}"
    return saw


def gets(cluster, host, url, n):
    return [get(cluster, host, url) for _ in range(n)]


def assert_ping(cluster, host, dst):
    got, sent, out = C.ping(cluster, host, dst)
    assert got == sent, f"{host} -> {dst}: {got}/{sent} replies\n{out}"


def http_count(cluster, host):
    return sum(1 for kind, _ in cluster.server_log(host) if kind == "http")


def set_endpoint(cluster, service, pod, present):
    """Adds or removes pod as an endpoint of service on every node, as kube-proxy would."""
    for node in NODES:
        if present:
            cluster.kdpctl(node, "endpoint", "add", "--service", service, "--ip", PODS[pod].ip,
                           "--node", PODS[pod].node)
        else:
            cluster.kdpctl(node, "endpoint", "del", "--service", service, "--ip", PODS[pod].ip)


# ---------------------------------------------------------------------------
# Pods


def test_pod_to_pod_same_node(cluster):
    for src, dst in (("pod-a1", "pod-a2"), ("pod-b2", "pod-b1")):
        assert_ping(cluster, src, PODS[dst].ip)
        assert get(cluster, src, f"http://{PODS[dst].ip}:{C.HTTP_PORT}/") == (dst, PODS[src].ip)


def test_pod_to_pod_across_nodes(cluster):
    for src, dst in (("pod-a1", "pod-b1"), ("pod-b2", "pod-a2")):
        assert_ping(cluster, src, PODS[dst].ip)
        # No NAT between pods: the server sees the client pod itself.
        assert get(cluster, src, f"http://{PODS[dst].ip}:{C.HTTP_PORT}/") == (dst, PODS[src].ip)


def test_pod_to_internet_masqueraded_to_node_ip(cluster):
    for src in ("pod-a1", "pod-b1"):
        node_ip = NODES[PODS[src].node].node_ip
        assert get(cluster, src, f"http://{INTERNET_IP}:{C.HTTP_PORT}/") == ("internet", node_ip)
        assert_ping(cluster, src, INTERNET_IP)  # ICMP echo is masqueraded too


# ---------------------------------------------------------------------------
# Services


def test_cluster_ip_backends_on_both_nodes(cluster):
    svc = SVC["web"]
    for src in CLIENTS:
        answers = gets(cluster, src, f"http://{svc.cluster_ip}/", 16)
        servers = collections.Counter(s for s, _ in answers)
        # Random choice over 16 connections: both endpoints, one on each node.
        assert set(servers) == set(svc.endpoints), (src, servers)
        assert {PODS[s].node for s in servers} == set(NODES), servers
        # Pods are not masqueraded: every backend sees the client pod.
        assert {seen for _, seen in answers} == {PODS[src].ip}, answers


def test_node_port_cluster_masquerades(cluster):
    svc = SVC["web"]
    for node, n in NODES.items():
        answers = gets(cluster, "internet", f"http://{n.node_ip}:{svc.ports[0].node_port}/", 16)
        assert {s for s, _ in answers} <= set(svc.endpoints), answers
        # Any node's endpoint (16 random choices reach both), and never the client's own address:
        # the node's address on the interface towards the backend.
        assert {PODS[s].node for s, _ in answers} == set(NODES), (node, answers)
        for server, seen in answers:
            assert seen == C.masquerade_source(node, server) != INTERNET_IP, (node, server, seen)


def test_node_port_local_preserves_source(cluster):
    svc = SVC["local"]
    for node, n in NODES.items():
        answers = gets(cluster, "internet", f"http://{n.node_ip}:{svc.ports[0].node_port}/", 6)
        local = [p for p in svc.endpoints if PODS[p].node == node]
        # Only this node's endpoint, and the client's own address.
        assert answers == [(local[0], INTERNET_IP)] * 6, (node, answers)


def test_load_balancer_ip(cluster):
    svc = SVC["web"]
    answers = gets(cluster, "internet", f"http://{LB_IP}/", 16)
    assert {PODS[s].node for s, _ in answers} == set(NODES), answers
    # The underlay routes the load balancer IP to node-a, which serves it (Cluster: masqueraded).
    for server, seen in answers:
        assert server in svc.endpoints and seen == C.masquerade_source("node-a", server), answers


def test_session_affinity_keeps_client_on_one_backend(cluster):
    svc = SVC["sticky"]
    for src in CLIENTS:
        answers = gets(cluster, src, f"http://{svc.cluster_ip}/", 10)
        assert len({s for s, _ in answers}) == 1, (src, answers)
        assert answers[0][0] in svc.endpoints and answers[0][1] == PODS[src].ip, answers


def test_hairpin(cluster):
    # pod-a1 through the Service whose only endpoint is pod-a1: masqueraded to the
    # gateway, or pod-a1 would answer itself directly and the connection would fail.
    svc = SVC["self"]
    for _ in range(3):
        assert get(cluster, "pod-a1", f"http://{svc.cluster_ip}/") == ("pod-a1", NODES["node-a"].gateway)


def test_udp_service(cluster):
    svc = SVC["echo"]
    stream = C.Stream(cluster, "pod-b2", f"UDP:{svc.cluster_ip}:53")
    try:
        replies = []
        for i in range(3):
            stream.send(f"query {i}")
            replies.append(stream.read_line(timeout=3))
        assert all(r and r.endswith(f"query {i}") for i, r in enumerate(replies)), replies
        saw = {C.parse_saw(r) for r in replies}
        # One flow: one backend; the client unmasqueraded.
        assert len(saw) == 1 and next(iter(saw))[0] in svc.endpoints, replies
        assert next(iter(saw))[1] == PODS["pod-b2"].ip, replies
    finally:
        stream.close()


def test_service_without_endpoints_rejected_at_once(cluster):
    svc = SVC["empty"]
    for src in CLIENTS:
        rc, body, err, took = C.curl(cluster, src, f"http://{svc.cluster_ip}/", timeout=5)
        # curl 7: could not connect (ICMP port unreachable is ECONNREFUSED); 28 would be its timeout.
        assert rc == 7, (src, rc, body, err)
        assert took < 2, f"{src}: took {took:.1f}s: no ICMP error, curl waited for its timeout"


# ---------------------------------------------------------------------------
# Endpoints removed at run time (kdpctl endpoint del on every node)


def test_scale_down_keeps_established_tcp(cluster):
    svc = SVC["scale"]
    echo_port = next(p.port for p in svc.ports if p.name == "echo")
    stream = C.Stream(cluster, "pod-a1", f"TCP:{svc.cluster_ip}:{echo_port}")
    removed = None
    try:
        greeting = stream.read_line(timeout=5)
        saw = C.parse_saw(greeting or "")
        assert saw and saw[0] in svc.endpoints and saw[1] == PODS["pod-a1"].ip, greeting
        removed = saw[0]
        stream.send("before")
        assert stream.read_line() == "before"

        before = http_count(cluster, removed)
        set_endpoint(cluster, svc.name, removed, present=False)
        remaining = [p for p in svc.endpoints if p != removed]
        # New connections go to the endpoints that are left only.
        answers = gets(cluster, "pod-a1", f"http://{svc.cluster_ip}/", 8)
        assert {s for s, _ in answers} == set(remaining), (removed, answers)
        assert http_count(cluster, removed) == before, f"{removed} still got new connections"

        # The established connection keeps working until it is closed.
        for i in range(3):
            stream.send(f"after {i}")
            assert stream.read_line() == f"after {i}", f"the connection to {removed} broke"
        assert stream.close() == 0, stream.proc.stderr.read().decode(errors="replace")
    finally:
        stream.close()
        if removed:
            set_endpoint(cluster, svc.name, removed, present=True)
    # Scaled up again: both endpoints answer.
    answers = gets(cluster, "pod-a1", f"http://{svc.cluster_ip}/", 16)
    assert {s for s, _ in answers} == set(svc.endpoints), answers


def test_udp_client_recovers_after_endpoint_removed(cluster):
    svc = SVC["echo"]
    stream = C.Stream(cluster, "pod-b2", f"UDP:{svc.cluster_ip}:53")
    removed = None
    try:
        stream.send("q0")
        first = C.parse_saw(stream.read_line(timeout=3) or "")
        assert first and first[0] in svc.endpoints, first
        removed = first[0]
        set_endpoint(cluster, svc.name, removed, present=False)
        # The same socket (same flow tuple) keeps asking, as a resolver would;
        # kdp flushed the flow to the removed endpoint, so it reaches another.
        reply = None
        for attempt in range(3):
            stream.send(f"q{attempt + 1}")
            reply = stream.read_line(timeout=2)
            if reply:
                break
        saw = C.parse_saw(reply or "")
        assert saw, f"no answer after {removed} was removed"
        assert saw[0] in svc.endpoints and saw[0] != removed, (removed, reply)
        assert saw[1] == PODS["pod-b2"].ip, reply
    finally:
        stream.close()
        if removed:
            set_endpoint(cluster, svc.name, removed, present=True)


# ---------------------------------------------------------------------------
# Last: both kdps stop cleanly with only the drops this traffic explains


def test_counters(cluster):
    results = cluster.stop_kdps()
    for node, stats in results.items():
        assert stats is not None, f"{node}: no stats JSON"
        drops = {k: v for k, v in stats["drops"].items() if v}
        unexpected = {k: v for k, v in drops.items() if k not in ALLOWED_DROPS}
        assert not unexpected, f"{node}: unexpected drops {unexpected}"
        assert stats["drops"].get("l2_not_for_us", 0) <= 20, (node, drops)
        assert stats["conntrack"]["created"] > 0 and stats["conntrack"]["full"] == 0, (node, stats["conntrack"])
        for port in stats["ports"]:
            assert port["rx"] > 0 and port["tx"] > 0, (node, port)
            assert port["tx_dropped"] == 0 and port["rx_errors"] == 0, (node, port)
        worker = stats["workers"][0]
        assert worker["idle_sleeps"] > 0, f"{node}: the worker never slept ([workers] idle_sleep_us)"
    # Each node rejected its own client's connection to the empty Service.
    assert all(s["icmp_errors"]["sent"] >= 1 for s in results.values()), results
