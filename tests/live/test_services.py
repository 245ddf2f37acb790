"""Live tests of Services and masquerade: real clients, real servers, kdp in between.

Topology (every name carries a random kdpt-<hex> prefix; test_live.py's helpers):

    pod-a  netns eth0 10.244.1.2/24 ─veth─ <p>-a ─┐ pod0 ┐
    pod-b  netns eth0 10.244.1.3/24 ─veth─ <p>-b ─┘ pod1 ├ kdp = node A (net_af_packet)
                                            <p>-u ─ up0 ─┘  node IP 192.168.50.10/24
                                              │
    seg    netns: Linux bridge br0, the uplink segment 192.168.50.0/24
                                              ├─ node-b netns eth0 192.168.50.11/24, lo 10.244.2.1/32,
                                              │    route 10.244.1.0/24 via 192.168.50.10; ip_forward=1:
                                              │    the default gateway of node A, and the router to
                                              │    inet netns eth0 203.0.113.10/24 (node-b: 203.0.113.1)
                                              └─ ext netns eth0 192.168.50.20/24: a client outside the cluster

kdp routes 10.244.2.0/24 and 0.0.0.0/0 via 192.168.50.11. Services:
default/web (NodePort, externalTrafficPolicy Cluster) and default/local
(NodePort, externalTrafficPolicy Local), both 80 -> 8080 with one backend on
each node: pod-b (10.244.1.3) and node B's 10.244.2.1. HTTP servers answer
with their name and log the client address they saw.

A second kdp, with two workers on two RX/TX queue pairs of every port, proves
that every flow is translated in both directions whichever queue (worker) a
packet of it arrives on.
"""
import collections
import concurrent.futures
import errno
import os
import time
from pathlib import Path

import pytest

# test_live.py's topology and helpers (pytest puts this folder on sys.path;
# importing test_live also puts tests/lib there). tools_present is its
# session fixture checking the tools, used here too.
from test_live import (GATEWAY, NODE_B, NODE_IP, POD_A, POD_B, REMOTE_POD, SERVER_PYTHON, Topology,  # noqa: F401
                       ping, run, tools_present, wait_for)
from kdp_harness import UPLINK_MAC, NodeConfig, Port  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
HTTP_SERVER = REPO / "tools" / "demo.d" / "http_server.py"

EXT = "192.168.50.20"
INET, INET_GW = "203.0.113.10", "203.0.113.1"
WEB_VIP, LOCAL_VIP = "10.96.0.10", "10.96.0.11"
WEB_NODEPORT, LOCAL_NODEPORT = 30080, 30081
BACKEND_PORT = 8080
BODY = {"pod-b": "hello from pod-b", "node-b": "hello from node-b", "inet": "hello from inet"}

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="live tests need root for network namespaces")

SERVICES_TOML = f"""
[nat]
masquerade_egress = true

[[service]]
name = "default/web"
type = "NodePort"
cluster_ip = "{WEB_VIP}"
external_traffic_policy = "Cluster"
  [[service.port]]
  protocol = "TCP"
  port = 80
  target_port = {BACKEND_PORT}
  node_port = {WEB_NODEPORT}
  [[service.endpoint]]
  ip = "{POD_B}"
  node = "node-a"
  [[service.endpoint]]
  ip = "{REMOTE_POD}"
  node = "node-b"

[[service]]
name = "default/local"
type = "NodePort"
cluster_ip = "{LOCAL_VIP}"
external_traffic_policy = "Local"
  [[service.port]]
  protocol = "TCP"
  port = 80
  target_port = {BACKEND_PORT}
  node_port = {LOCAL_NODEPORT}
  [[service.endpoint]]
  ip = "{POD_B}"
  node = "node-a"
  [[service.endpoint]]
  ip = "{REMOTE_POD}"
  node = "node-b"
"""

# Drop reasons the traffic of these tests may produce: ARP and echo kdp handled
# itself, the probe of a cluster IP port no Service has (test 5), and, as the
# uplink is on a shared segment now, what its other hosts send that is not
# for kdp (their IGMP reports when their addresses come up, floods).
ALLOWED_DROPS = {"consumed", "service_unknown_port", "l2_not_for_us"}


class ServiceTopology(Topology):
    """test_live's topology with the uplink on a bridged segment, an outside client and an internet host."""

    def __init__(self, workdir: Path, workers: int = 1):
        super().__init__(workdir)
        self.workers = workers
        # Namespaces without a root-namespace veth end; the uplink's root end
        # (host_if["node-b"], kdp's up0) is a port of seg's bridge.
        for host, suffix in (("seg", "sg"), ("ext", "ex"), ("inet", "in")):
            self.ns[host] = f"{self.prefix}-{suffix}"
        self.host_if["tmp"] = self.prefix + "-t"  # a veth's name before it moves; cleanup removes leftovers
        self.logs = {}

    def _add_ns(self, host):
        run(["ip", "netns", "add", self.ns[host]])
        self.created_ns.append(self.ns[host])
        for key in ("all", "default"):
            self.sh(host, "sysctl", "-qw", f"net.ipv6.conf.{key}.disable_ipv6=1")
        self.sh(host, "ip", "link", "set", "lo", "up")

    def _veth(self, a, a_if, b, b_if, a_addr=None, b_addr=None):
        """A veth between two namespaces (a may be None: the root namespace)."""
        tmp = self.host_if["tmp"]
        run(["ip", "link", "add", tmp, "type", "veth", "peer", "name", b_if, "netns", self.ns[b]])
        if a is None:
            run(["ip", "link", "set", tmp, "name", a_if])
            run(["sysctl", "-qw", f"net.ipv6.conf.{a_if}.disable_ipv6=1"])
            run(["sysctl", "-qw", f"net.ipv4.conf.{a_if}.forwarding=0"])
            run(["ip", "link", "set", a_if, "up"])
        else:
            run(["ip", "link", "set", tmp, "netns", self.ns[a], "name", a_if])
            self.sh(a, "ethtool", "-K", a_if, "tx", "off")
            if a_addr:
                self.sh(a, "ip", "addr", "add", a_addr, "dev", a_if)
            self.sh(a, "ip", "link", "set", a_if, "up")
        # Full checksums from the kernel: kdp forwards frames as they are.
        self.sh(b, "ethtool", "-K", b_if, "tx", "off")
        if b_addr:
            self.sh(b, "ip", "addr", "add", b_addr, "dev", b_if)
        self.sh(b, "ip", "link", "set", b_if, "up")

    def create(self):
        self._add_host("pod-a", POD_A + "/24")
        self._add_host("pod-b", POD_B + "/24")
        for pod in ("pod-a", "pod-b"):
            self.sh(pod, "ip", "route", "add", "default", "via", GATEWAY)
        for host in ("seg", "node-b", "ext", "inet"):
            self._add_ns(host)
        # The uplink segment: a bridge in seg; kdp's up0 (root end), node-b and ext on it.
        self.sh("seg", "ip", "link", "add", "br0", "type", "bridge", "forward_delay", "0", "stp_state", "0")
        self.sh("seg", "ip", "link", "set", "br0", "up")
        self._veth(None, self.host_if["node-b"], "seg", "p-up")
        self._veth("node-b", "eth0", "seg", "p-nb", a_addr=NODE_B + "/24")
        self._veth("ext", "eth0", "seg", "p-ex", a_addr=EXT + "/24")
        for port in ("p-up", "p-nb", "p-ex"):
            self.sh("seg", "ip", "link", "set", port, "master", "br0")
        # node-b: node B's pod network, the way back to node A's pods, and the router to inet.
        self.sh("node-b", "ip", "addr", "add", REMOTE_POD + "/32", "dev", "lo")
        self.sh("node-b", "ip", "route", "add", "10.244.1.0/24", "via", NODE_IP)
        self._veth("node-b", "eth1", "inet", "eth0", a_addr=INET_GW + "/24", b_addr=INET + "/24")
        self.sh("node-b", "sysctl", "-qw", "net.ipv4.ip_forward=1")
        self.sh("node-b", "sysctl", "-qw", "net.ipv4.conf.all.send_redirects=0")
        self.sh("inet", "ip", "route", "add", "default", "via", INET_GW)

    def config(self) -> NodeConfig:
        qp = ",qpairs=2" if self.workers > 1 else ""
        cfg = WorkersConfig(
            ports=[
                Port("pod0", "pod", f"net_af_packet0,iface={self.host_if['pod-a']}{qp}"),
                Port("pod1", "pod", f"net_af_packet1,iface={self.host_if['pod-b']}{qp}"),
                Port("up0", "uplink", f"net_af_packet2,iface={self.host_if['node-b']}{qp}", mac=UPLINK_MAC),
            ],
            routes=[("10.244.2.0/24", NODE_B), ("0.0.0.0/0", NODE_B)],
            extra=SERVICES_TOML,
        )
        cfg.node.update(node_ip=NODE_IP + "/24", service_cidr="10.96.0.0/12")
        if self.workers > 1:
            # Two worker lcores sharing CPU 1: the machine may have only two cores.
            cfg.lcores = (1, 2)
            cfg.cpus = (1, 1)
            cfg.memory_mb = 512
        return cfg

    def serve(self, host, bind_ip, name):
        """tools/demo's HTTP server on :8080 answering "hello from <name>"; logs each client."""
        root = self.workdir / f"www-{name}"
        root.mkdir(exist_ok=True)
        (root / "index.html").write_text(BODY[name] + "\n")
        log = self.workdir / f"http-{name}.log"
        self.start_server(host, [SERVER_PYTHON, "-u", str(HTTP_SERVER), bind_ip, str(BACKEND_PORT), str(root)],
                          BACKEND_PORT, log)
        self.logs[name] = log

    def clients(self, name) -> list[str]:
        """The client address of every request the server `name` logged so far."""
        return [line.split()[0] for line in self.logs[name].read_text().splitlines() if '"GET /' in line]


class WorkersConfig(NodeConfig):
    """NodeConfig with [workers] cpus (two worker lcores may share one CPU)."""
    cpus: tuple = ()

    def to_toml(self) -> str:
        text = super().to_toml()
        if self.cpus:
            lcores = f"lcores = [{', '.join(str(c) for c in self.lcores)}]"
            assert lcores in text
            text = text.replace(lcores, lcores + f"\ncpus = [{', '.join(str(c) for c in self.cpus)}]", 1)
        return text


def make_services_topology(tmp_path_factory, name, workers=1):
    topo = ServiceTopology(tmp_path_factory.mktemp(name), workers)
    try:
        topo.create()
        topo.start_kdp()
        topo.serve("pod-b", POD_B, "pod-b")
        topo.serve("node-b", REMOTE_POD, "node-b")
        topo.serve("inet", INET, "inet")
    except BaseException:
        topo.cleanup()
        raise
    return topo


def curl(topo, host, url, timeout=10):
    """GETs url from host: (curl exit code, body, stderr, seconds)."""
    start = time.monotonic()
    proc = topo.sh(host, "curl", "-sS", "--noproxy", "*", "--max-time", str(timeout), url,
                   timeout=timeout + 10, check=False)
    return proc.returncode, proc.stdout.strip(), proc.stderr.strip(), time.monotonic() - start


def get(topo, host, url):
    """GETs url from host; the body, which must have come back."""
    rc, body, err, _ = curl(topo, host, url)
    assert rc == 0, f"curl {url} from {host} exited {rc}: {err}"
    return body


def wait_logged(topo, counts: dict):
    """Waits until each server has logged at least counts[name] requests."""
    wait_for(f"server logs {counts}", lambda: all(len(topo.clients(n)) >= c for n, c in counts.items()), timeout=5)


def logged_since(topo, before: dict) -> dict:
    return {name: topo.clients(name)[before[name]:] for name in before}


def log_marks(topo) -> dict:
    return {name: len(topo.clients(name)) for name in topo.logs}


def check_stats(topo, allowed=ALLOWED_DROPS):
    """Stops kdp; checks it exited cleanly with flows made and only allowed drops. Returns the stats."""
    result = topo.stop_kdp()
    assert result.returncode == 0, result.stderr
    assert result.stats is not None, f"no stats JSON\n{result.stderr}"
    stats = result.stats
    assert stats["conntrack"]["created"] > 0, stats["conntrack"]
    assert stats["conntrack"]["full"] == 0 and stats["conntrack"]["evicted"] == 0, stats["conntrack"]
    unexpected = {k: v for k, v in result.drops().items() if k not in allowed}
    assert not unexpected, f"unexpected drops: {unexpected}\n{result.stdout}\n{result.stderr[-3000:]}"
    assert stats["drops"].get("l2_not_for_us", 0) <= 20, result.stdout
    for name in ("pod0", "pod1", "up0"):
        port = result.port(name)
        assert port["tx_dropped"] == 0 and port["rx_errors"] == 0, port
    return stats


# ---------------------------------------------------------------------------
# One worker: every Service path


@pytest.fixture(scope="class")
def svc(tmp_path_factory):
    t = make_services_topology(tmp_path_factory, "services")
    try:
        yield t
    finally:
        t.cleanup()


@pytest.fixture(autouse=True)
def kdp_alive(request):
    yield
    for name in ("svc", "multi"):
        if name in request.fixturenames:
            request.getfixturevalue(name).assert_kdp_alive()


class TestServices:
    def test_cluster_ip_from_pod(self, svc):
        before = log_marks(svc)
        answers = collections.Counter(get(svc, "pod-a", f"http://{WEB_VIP}/") for _ in range(16))
        assert set(answers) <= {BODY["pod-b"], BODY["node-b"]}, answers
        # Random choice over 12 connections: both backends, same node and across the router.
        assert answers[BODY["pod-b"]] and answers[BODY["node-b"]], answers
        wait_logged(svc, {n: before[n] + answers[BODY[n]] for n in ("pod-b", "node-b")})
        seen = logged_since(svc, before)
        # Pods are not masqueraded: the backends see the pod itself.
        assert seen["pod-b"] and set(seen["pod-b"]) == {POD_A}, seen
        assert seen["node-b"] and set(seen["node-b"]) == {POD_A}, seen
        assert not seen["inet"], seen

    def test_node_port_cluster_masquerades(self, svc):
        before = log_marks(svc)
        answers = collections.Counter(get(svc, "ext", f"http://{NODE_IP}:{WEB_NODEPORT}/") for _ in range(8))
        assert set(answers) <= {BODY["pod-b"], BODY["node-b"]} and sum(answers.values()) == 8, answers
        wait_logged(svc, {n: before[n] + answers[BODY[n]] for n in ("pod-b", "node-b")})
        seen = logged_since(svc, before)
        # externalTrafficPolicy Cluster: the source becomes the address of the
        # interface towards the backend; never the client's own.
        assert set(seen["pod-b"]) <= {GATEWAY}, seen
        assert set(seen["node-b"]) <= {NODE_IP}, seen
        assert len(seen["pod-b"]) + len(seen["node-b"]) == 8, seen

    def test_node_port_local_preserves_source(self, svc):
        before = log_marks(svc)
        answers = collections.Counter(get(svc, "ext", f"http://{NODE_IP}:{LOCAL_NODEPORT}/") for _ in range(6))
        # externalTrafficPolicy Local: only this node's endpoint.
        assert answers == {BODY["pod-b"]: 6}, answers
        wait_logged(svc, {"pod-b": before["pod-b"] + 6})
        seen = logged_since(svc, before)
        assert seen["pod-b"] == [EXT] * 6, seen
        assert not seen["node-b"], seen

    def test_egress_masquerade(self, svc):
        before = log_marks(svc)
        for _ in range(3):
            assert get(svc, "pod-a", f"http://{INET}:{BACKEND_PORT}/") == BODY["inet"]
        wait_logged(svc, {"inet": before["inet"] + 3})
        seen = logged_since(svc, before)
        assert seen["inet"] == [NODE_IP] * 3, seen
        # ICMP echo is masqueraded too (by its identifier).
        received, _, out = ping(svc, "pod-a", INET, count=3)
        assert received == 3, out

    def test_unknown_service_port_refused(self, svc):
        rc, body, err, took = curl(svc, "pod-a", f"http://{WEB_VIP}:81/", timeout=5)
        # curl: 7 = could not connect (28 would be its timeout).
        assert rc == 7, (rc, body, err)
        assert took < 2.5, f"took {took:.1f}s: no ICMP error, curl waited for its timeout"
        # What the kernel made of kdp's answer: ICMP port unreachable is ECONNREFUSED for TCP.
        probe = ("import socket, time\n"
                 "s = socket.socket(); s.settimeout(5); t = time.monotonic()\n"
                 f"print(s.connect_ex(('{WEB_VIP}', 81)), round(time.monotonic() - t, 3))\n")
        errno_, secs = svc.sh("pod-a", SERVER_PYTHON, "-c", probe, timeout=15).stdout.split()
        assert int(errno_) == errno.ECONNREFUSED and float(secs) < 2.5, (errno.errorcode.get(int(errno_)), secs)

    def test_stats(self, svc):
        stats = check_stats(svc)
        assert stats["services"] >= 2, stats["services"]
        assert stats["icmp_errors"].get("sent", 0) >= 1, stats["icmp_errors"]
        assert stats["drops"].get("service_unknown_port", 0) >= 1, stats["drops"]


# ---------------------------------------------------------------------------
# Two workers, two queues per port: flows spread over queues, translated both ways


@pytest.fixture(scope="class")
def multi(tmp_path_factory):
    t = make_services_topology(tmp_path_factory, "multi", workers=2)
    try:
        yield t
    finally:
        t.cleanup()


def parallel_gets(topo, jobs, width=8):
    """Runs (host, url) GETs, width at a time; returns [(host, url, rc, body, err)]."""
    def one(job):
        host, url = job
        rc, body, err, _ = curl(topo, host, url)
        return host, url, rc, body, err
    with concurrent.futures.ThreadPoolExecutor(width) as pool:
        return list(pool.map(one, jobs))


class TestMultiWorker:
    """Each port has two queues, one per worker; the kernel's PACKET_FANOUT
    hashes every flow of an interface onto one of them. A connection's two
    directions arrive on different interfaces with different tuples (before
    and after translation), hashed independently: about half the connections
    have their replies handled by the worker that did not create their flow,
    which must find it in the shared table and translate them back."""

    def test_flows_spread_over_workers(self, multi):
        assert "2 worker(s) running" in multi.kdp_stderr_head, multi.kdp_stderr_head
        before = log_marks(multi)
        jobs = ([("pod-a", f"http://{WEB_VIP}/")] * 40 + [("ext", f"http://{NODE_IP}:{WEB_NODEPORT}/")] * 40 +
                [("ext", f"http://{NODE_IP}:{LOCAL_NODEPORT}/")] * 10 +
                [("pod-a", f"http://{INET}:{BACKEND_PORT}/")] * 10)
        results = parallel_gets(multi, jobs)
        failed = [r for r in results if r[2] != 0]
        if failed:
            summary = multi.stop_kdp().stdout
            raise AssertionError(f"{len(failed)} of {len(results)} failed: {failed[:5]}\n{summary}")
        answered = collections.Counter()  # (client, url kind, backend name)
        for host, url, _, body, _ in results:
            if INET in url:
                assert body == BODY["inet"], (host, url, body)
                answered[(host, "egress", "inet")] += 1
                continue
            backend = next((n for n in ("pod-b", "node-b") if body == BODY[n]), None)
            assert backend, (host, url, body)
            kind = "local" if f":{LOCAL_NODEPORT}" in url else "cluster"
            answered[(host, kind, backend)] += 1
        assert answered[("ext", "local", "node-b")] == 0, answered  # Local: this node's endpoint only
        assert answered[("pod-a", "cluster", "pod-b")] and answered[("pod-a", "cluster", "node-b")], answered

        # Every request reached its backend with the source it must have:
        # pods as themselves, ext masqueraded (Cluster: the address towards the
        # backend) or as itself (Local), egress as the node IP.
        expected = {
            "pod-b": collections.Counter({POD_A: answered[("pod-a", "cluster", "pod-b")],
                                          GATEWAY: answered[("ext", "cluster", "pod-b")],
                                          EXT: answered[("ext", "local", "pod-b")]}),
            "node-b": collections.Counter({POD_A: answered[("pod-a", "cluster", "node-b")],
                                           NODE_IP: answered[("ext", "cluster", "node-b")]}),
            "inet": collections.Counter({NODE_IP: 10}),
        }
        wait_logged(multi, {n: before[n] + sum(c.values()) for n, c in expected.items()})
        seen = {n: collections.Counter(clients) for n, clients in logged_since(multi, before).items()}
        assert seen == {n: +c for n, c in expected.items()}, (seen, expected)
        received, _, out = ping(multi, "pod-a", INET, count=3)
        assert received == 3, out

        stats = check_stats(multi)
        workers = stats["workers"]
        assert len(workers) == 2, workers
        assert all(w["packets"] > 0 for w in workers), f"a worker carried nothing: {workers}"
        # Both carried a real share, not just a stray ARP.
        total = sum(w["packets"] for w in workers)
        assert min(w["packets"] for w in workers) >= total // 10, workers
        assert stats["conntrack"]["created"] >= 100, stats["conntrack"]
