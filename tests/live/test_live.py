"""Live tests: real kernel pods in network namespaces talking through kdp.

Topology (every name carries a random kdpt-<hex> prefix, so runs never clash):

    pod-a netns  eth0 10.244.1.2/24 ─veth─ <p>-a ─┐
    pod-b netns  eth0 10.244.1.3/24 ─veth─ <p>-b ─┼─ kdp (net_af_packet): pod0, pod1 = bridge, up0 = uplink
    node-b netns eth0 192.168.50.11/24 ─veth─ <p>-u ─┘
                 lo   10.244.2.1/32 (node B's pod network), route 10.244.1.0/24 via 192.168.50.10

kdp is node A: gateway 10.244.1.1 (02:00:0a:f4:01:01) on the bridge, node IP
192.168.50.10/24 on the uplink, route 10.244.2.0/24 via 192.168.50.11.

Needs root (network namespaces), iproute2, iputils-ping, ethtool, curl, socat
and Debian's python3 (the HTTP server); tools/setup-deps installs them.
"""
import hashlib
import os
import re
import select
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
from kdp_harness import KDP_BIN, NODE, UPLINK_MAC, KdpRun, NodeConfig, Port, start_kdp, stop_kdp  # noqa: E402

POD_A, POD_B, NODE_B = "10.244.1.2", "10.244.1.3", "192.168.50.11"
REMOTE_POD = "10.244.2.1"  # an address of node B's pod network
GATEWAY, NODE_IP = NODE["gateway_ip"], "192.168.50.10"
SERVER_PYTHON = "/usr/bin/python3"
TOOLS = ["ip", "ethtool", "ping", "curl", "socat", "ss", SERVER_PYTHON]

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="live tests need root for network namespaces")


def run(cmd, timeout=15, check=True, input=None):
    """Runs a command with a bound on its time; returns the CompletedProcess."""
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, input=input)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout}{proc.stderr}")
    return proc


def wait_for(what, predicate, timeout=10.0, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


class Topology:
    """The namespaces and veths of one test run, and kdp over them."""

    def __init__(self, workdir: Path):
        self.prefix = "kdpt-" + uuid.uuid4().hex[:6]
        self.workdir = workdir
        self.ns = {"pod-a": self.prefix + "-pa", "pod-b": self.prefix + "-pb", "node-b": self.prefix + "-nb"}
        # Host-side veth ends (root namespace), at most 15 characters.
        self.host_if = {"pod-a": self.prefix + "-a", "pod-b": self.prefix + "-b", "node-b": self.prefix + "-u"}
        self.created_ns = []
        self.servers = []
        self.kdp = None
        self.stats_path = None
        self.kdp_stderr_head = ""
        self.file_prefix = None
        self.result: KdpRun | None = None
        self.kdp_ns = None  # kdp and the host-side veth ends run here; None: the root namespace

    # -- namespaces -------------------------------------------------------

    def nsx(self, host, *cmd):
        return ["ip", "netns", "exec", self.ns[host], *cmd]

    def sh(self, host, *cmd, timeout=15, check=True, input=None):
        return run(self.nsx(host, *cmd), timeout=timeout, check=check, input=input)

    def kdp_side(self, *cmd):
        """Runs a command where kdp runs (kdp_ns, or the root namespace)."""
        return run(["ip", "netns", "exec", self.kdp_ns, *cmd] if self.kdp_ns else list(cmd))

    def _add_host(self, host, address):
        ns, hif = self.ns[host], self.host_if[host]
        run(["ip", "netns", "add", ns])
        self.created_ns.append(ns)
        # IPv6 off before eth0 exists, so no router solicitation or DAD ever leaves.
        for key in ("all", "default"):
            self.sh(host, "sysctl", "-qw", f"net.ipv6.conf.{key}.disable_ipv6=1")
        self.kdp_side("ip", "link", "add", hif, "type", "veth", "peer", "name", "eth0", "netns", ns)
        self.kdp_side("sysctl", "-qw", f"net.ipv6.conf.{hif}.disable_ipv6=1")
        # kdp's namespace must never route what arrives on these ports.
        self.kdp_side("sysctl", "-qw", f"net.ipv4.conf.{hif}.forwarding=0")
        if self.kdp_ns:
            # The namespace holds node_ip (on kdp's host port), and kdp gives
            # the veth ends its MACs: its kernel must neither answer ARP on
            # them nor take packets from them past kdp (strict reverse path:
            # its routes point at the host port), as a NIC bound to DPDK has
            # no kernel side.
            self.kdp_side("sysctl", "-qw", f"net.ipv4.conf.{hif}.arp_ignore=8")
            self.kdp_side("sysctl", "-qw", f"net.ipv4.conf.{hif}.rp_filter=1")
        self.kdp_side("ip", "link", "set", hif, "up")
        # Without this the kernel sends TCP/UDP with partial checksums that
        # only a veth peer would accept; kdp forwards frames as they are.
        self.sh(host, "ethtool", "-K", "eth0", "tx", "off")
        self.sh(host, "ip", "addr", "add", address, "dev", "eth0")
        self.sh(host, "ip", "link", "set", "lo", "up")
        self.sh(host, "ip", "link", "set", "eth0", "up")

    def create(self):
        self._add_host("pod-a", POD_A + "/24")
        self._add_host("pod-b", POD_B + "/24")
        self._add_host("node-b", NODE_B + "/24")
        for pod in ("pod-a", "pod-b"):
            self.sh(pod, "ip", "route", "add", "default", "via", GATEWAY)
        self.sh("node-b", "ip", "addr", "add", REMOTE_POD + "/32", "dev", "lo")
        self.sh("node-b", "ip", "route", "add", NODE["pod_cidr"], "via", NODE_IP)

    # -- kdp ----------------------------------------------------------------

    def config(self) -> NodeConfig:
        return NodeConfig(
            ports=[
                Port("pod0", "pod", f"net_af_packet0,iface={self.host_if['pod-a']}"),
                Port("pod1", "pod", f"net_af_packet1,iface={self.host_if['pod-b']}"),
                Port("up0", "uplink", f"net_af_packet2,iface={self.host_if['node-b']}", mac=UPLINK_MAC),
            ],
            routes=[("10.244.2.0/24", NODE_B)],
            node=dict(NODE, node_ip=NODE_IP + "/24"),
            lcores=(1,),
        )

    def start_kdp(self, timeout=20.0):
        assert Path(KDP_BIN).exists(), f"no kdp binary at {KDP_BIN} (ninja -C build)"
        self.kdp, self.stats_path = start_kdp(self.config(), self.workdir, netns=self.kdp_ns)
        m = re.search(r'file_prefix = "([^"]+)"', (self.workdir / "node.toml").read_text())
        self.file_prefix = m.group(1) if m else None
        # Read stderr straight from the fd until kdp says it runs; stop_kdp's
        # communicate() reads the rest.
        fd = self.kdp.stderr.fileno()
        buf = b""
        deadline = time.monotonic() + timeout
        while b"worker(s) running" not in buf:
            left = deadline - time.monotonic()
            if left <= 0 or self.kdp.poll() is not None:
                break
            ready, _, _ = select.select([fd], [], [], min(left, 0.2))
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                buf += chunk
        self.kdp_stderr_head = buf.decode(errors="replace")
        if b"worker(s) running" not in buf:
            result = self.stop_kdp()
            raise AssertionError(f"kdp did not start (rc {result.returncode}):\n{result.stderr}")

    def assert_kdp_alive(self):
        if self.kdp is not None and self.kdp.poll() is not None:
            result = self.stop_kdp()
            raise AssertionError(f"kdp exited with {result.returncode}:\n{result.stderr}")

    def stop_kdp(self) -> KdpRun:
        if self.kdp is None:
            return self.result
        result = stop_kdp(self.kdp, self.stats_path)
        result.stderr = self.kdp_stderr_head + (result.stderr or "")
        self.kdp, self.result = None, result
        # DPDK leaves its runtime directory behind; it is ours, by its unique prefix.
        if self.file_prefix:
            shutil.rmtree(Path("/var/run/dpdk") / self.file_prefix, ignore_errors=True)
        return result

    # -- servers --------------------------------------------------------------

    def start_server(self, host, cmd, port, log: Path, cwd=None):
        """Starts a server inside a namespace; waits until it listens on port."""
        with open(log, "w") as out:
            proc = subprocess.Popen(self.nsx(host, *cmd), stdout=out, stderr=subprocess.STDOUT, cwd=cwd)
        self.servers.append(proc)

        def listening():
            if proc.poll() is not None:
                raise AssertionError(f"server {cmd} exited {proc.returncode}:\n{log.read_text()}")
            return f":{port} " in self.sh(host, "ss", "-Hltn", timeout=5).stdout

        wait_for(f"{cmd[0]} listening on port {port} in {host}", listening)
        return proc

    # -- teardown -------------------------------------------------------------

    def cleanup(self):
        errors = []
        for proc in self.servers:
            if proc.poll() is None:
                proc.kill()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                errors.append(f"server {proc.pid} did not exit")
        try:
            if self.kdp is not None:
                self.stop_kdp()
        except Exception as e:  # keep cleaning up
            errors.append(f"stopping kdp: {e}")
        for ns in self.created_ns:
            # Anything still running in our namespaces was started by this test.
            pids = run(["ip", "netns", "pids", ns], check=False, timeout=5).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), 9)
                except (ProcessLookupError, ValueError):
                    pass
            run(["ip", "netns", "del", ns], check=False, timeout=10)
        for hif in self.host_if.values():
            run(["ip", "link", "del", hif], check=False, timeout=10)

        def gone():
            links = run(["ip", "-o", "link", "show"], check=False, timeout=5).stdout
            names = run(["ip", "netns", "list"], check=False, timeout=5).stdout
            return self.prefix not in links and self.prefix not in names

        try:
            wait_for(f"namespaces and veths of {self.prefix} to go", gone, timeout=10)
        except AssertionError as e:
            errors.append(str(e))
        if errors:
            raise RuntimeError("; ".join(errors))


@pytest.fixture(scope="session", autouse=True)
def tools_present():
    missing = [t for t in TOOLS if shutil.which(t) is None]
    assert not missing, f"live tests need {', '.join(missing)} (tools/setup-deps installs them)"


def make_topology(tmp_path_factory, name, kind=Topology):
    topo = kind(tmp_path_factory.mktemp(name))
    try:
        topo.create()
        topo.start_kdp()
    except BaseException:
        topo.cleanup()
        raise
    return topo


def ping(topo, host, dst, count=3, extra=()):
    """Pings dst from host; returns (received, avg rtt in ms, output)."""
    proc = topo.sh(host, "ping", "-n", "-c", str(count), "-i", "0.2", "-W", "2", *extra, dst,
                   timeout=count * 2 + 10, check=False)
    m = re.search(r"(\d+) received", proc.stdout)
    received = int(m.group(1)) if m else 0
    m = re.search(r"= [\d.]+/([\d.]+)/", proc.stdout)
    return received, float(m.group(1)) if m else None, proc.stdout + proc.stderr


def assert_ping(topo, host, dst, count=3):
    received, _, out = ping(topo, host, dst, count)
    assert received == count, f"{host} -> {dst}: {received}/{count} replies\n{out}"


def tcp_echo(topo, server_host, server_ip, client_host, port, payload: bytes, log: Path) -> bytes:
    """One TCP connection: the server sends the client's address, then echoes."""
    topo.start_server(server_host, ["socat", "-T", "10", f"TCP-LISTEN:{port},bind={server_ip},reuseaddr",
                                    'SYSTEM:echo "peer=$SOCAT_PEERADDR"; exec cat'], port, log)
    proc = subprocess.run(topo.nsx(client_host, "socat", "-t", "5", "-T", "10", "-", f"TCP:{server_ip}:{port}"),
                          input=payload, capture_output=True, timeout=30)
    assert proc.returncode == 0, f"client socat exited {proc.returncode}: {proc.stderr.decode(errors='replace')}"
    return proc.stdout


def http_server(topo, host, bind_ip, port, root: Path, log: Path):
    return topo.start_server(host, [SERVER_PYTHON, "-u", "-m", "http.server", "--bind", bind_ip,
                                    "--directory", str(root), str(port)], port, log)


def curl(topo, host, url, out: Path | None = None):
    """GETs url from host; returns (HTTP status, body bytes)."""
    target = out or (topo.workdir / "curl-body")
    proc = topo.sh(host, "curl", "-sS", "--noproxy", "*", "-m", "20", "-o", str(target), "-w", "%{http_code}",
                   url, timeout=30, check=False)
    assert proc.returncode == 0, f"curl {url} from {host} exited {proc.returncode}: {proc.stderr}"
    return int(proc.stdout.strip()), target.read_bytes()


def payload(size: int) -> bytes:
    """Deterministic, non-repeating-looking bytes: easy to check end to end."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(counter.to_bytes(8, "big")).digest()
        counter += 1
    return bytes(out[:size])


# ---------------------------------------------------------------------------
# Every path, through one kdp


@pytest.fixture(scope="class")
def topo(tmp_path_factory):
    t = make_topology(tmp_path_factory, "live")
    try:
        yield t
    finally:
        t.cleanup()


@pytest.fixture(autouse=True)
def kdp_still_running(request):
    t = request.getfixturevalue("topo") if "topo" in request.fixturenames else None
    yield
    if t is not None:
        t.assert_kdp_alive()


class TestPaths:
    def test_gateway_answers_pods(self, topo):
        assert_ping(topo, "pod-a", GATEWAY)
        assert_ping(topo, "pod-b", GATEWAY)
        # The pods resolved the gateway to its MAC.
        neigh = topo.sh("pod-a", "ip", "neigh", "show", GATEWAY).stdout
        assert NODE["gateway_mac"] in neigh, neigh

    def test_node_ip_answers_uplink(self, topo):
        assert_ping(topo, "node-b", NODE_IP)
        neigh = topo.sh("node-b", "ip", "neigh", "show", NODE_IP).stdout
        assert UPLINK_MAC in neigh, neigh

    def test_bridge_ping(self, topo):
        assert_ping(topo, "pod-a", POD_B)
        assert_ping(topo, "pod-b", POD_A)

    def test_bridge_tcp(self, topo):
        data = payload(200_000)  # many segments, both ways
        got = tcp_echo(topo, "pod-b", POD_B, "pod-a", 5001, data, topo.workdir / "bridge-socat.log")
        assert got.startswith(f"peer={POD_A}\n".encode()), got[:80]
        echoed = got[len(f"peer={POD_A}\n"):]
        assert len(echoed) == len(data) and echoed == data, f"echo differs: {len(echoed)} of {len(data)} bytes"

    def test_router_ping(self, topo):
        assert_ping(topo, "pod-a", NODE_B)      # the connected uplink subnet
        assert_ping(topo, "pod-a", REMOTE_POD)  # the static route to node B's pods
        assert_ping(topo, "node-b", POD_B)      # and back into the pod network

    def test_router_http(self, topo):
        root = topo.workdir / "www-node-b"
        root.mkdir()
        (root / "index.txt").write_text("hello from node-b\n")
        big = payload(2_000_000)
        (root / "big.bin").write_bytes(big)
        log = topo.workdir / "http-node-b.log"
        http_server(topo, "node-b", REMOTE_POD, 8080, root, log)

        status, body = curl(topo, "pod-a", f"http://{REMOTE_POD}:8080/index.txt")
        assert (status, body) == (200, b"hello from node-b\n")
        status, body = curl(topo, "pod-a", f"http://{REMOTE_POD}:8080/big.bin", topo.workdir / "big.out")
        assert status == 200 and hashlib.sha256(body).digest() == hashlib.sha256(big).digest(), \
            f"big.bin: HTTP {status}, {len(body)} of {len(big)} bytes"
        # No NAT: node B sees the pod's own address.
        wait_for("the server's log lines", lambda: "big.bin" in log.read_text(), timeout=5)
        lines = [l for l in log.read_text().splitlines() if "GET /" in l]
        assert len(lines) == 2 and all(l.startswith(POD_A + " ") for l in lines), lines

    def test_router_tcp_into_pod(self, topo):
        data = payload(50_000)
        got = tcp_echo(topo, "pod-a", POD_A, "node-b", 5002, data, topo.workdir / "into-pod-socat.log")
        assert got == f"peer={NODE_B}\n".encode() + data, got[:80]

    def test_ttl_exceeded_from_gateway(self, topo):
        received, _, out = ping(topo, "pod-a", REMOTE_POD, count=1, extra=("-t", "1"))
        assert received == 0
        assert re.search(rf"From {re.escape(GATEWAY)} .*Time to live exceeded", out), out


# ---------------------------------------------------------------------------
# A fresh kdp, a known traffic mix, then its counters

# Drop reasons this traffic may produce: ARP kdp answered or gleaned.
ALLOWED_DROPS = {"consumed"}


@pytest.fixture(scope="class")
def fresh(tmp_path_factory):
    t = make_topology(tmp_path_factory, "stats")
    try:
        yield t
    finally:
        t.cleanup()


class TestStats:
    def test_counters_after_traffic(self, fresh):
        # First, to a next hop kdp does not know: it must ARP for node B and hold the packet.
        assert_ping(fresh, "pod-a", REMOTE_POD, count=2)
        assert_ping(fresh, "pod-a", GATEWAY, count=2)
        assert_ping(fresh, "pod-b", GATEWAY, count=2)
        assert_ping(fresh, "pod-a", POD_B, count=2)
        assert_ping(fresh, "node-b", NODE_IP, count=2)
        got = tcp_echo(fresh, "pod-b", POD_B, "pod-a", 5003, b"kdp-live\n", fresh.workdir / "socat.log")
        assert got == f"peer={POD_A}\nkdp-live\n".encode()
        fresh.assert_kdp_alive()

        result = fresh.stop_kdp()
        assert result.returncode == 0, result.stderr
        assert result.stats is not None, f"no stats JSON\n{result.stderr}"
        assert "summary" in result.stdout, result.stdout
        stats = result.stats

        for name in ("pod0", "pod1", "up0"):
            port = result.port(name)
            assert port["rx"] > 0 and port["tx"] > 0, port
            assert port["tx_dropped"] == 0 and port["rx_missed"] == 0 and port["rx_errors"] == 0, port
        unexpected = {k: v for k, v in result.drops().items() if k not in ALLOWED_DROPS}
        assert not unexpected, f"unexpected drops: {unexpected}"

        control = stats["control"]
        # pod-a, pod-b (ARP for the gateway) and node B (answer to kdp's request).
        assert control["neighbors_learned"] >= 3, control
        assert control["fdb_learned"] >= 2, control
        assert control["arp_requests_sent"] >= 1, control
        assert control["held"] >= 1 and control["hold_released"] == control["held"], control
        assert control["hold_unresolved"] == 0 and control["hold_overflow"] == 0, control
        assert control["pending_resolutions"] == 0, control
        assert control["inject_ring_full"] == 0 and control["mbuf_alloc_failed"] == 0, control
        worker = stats["workers"][0]
        assert worker["punted"] >= 1 and worker["learn_queue_full"] == 0, worker
