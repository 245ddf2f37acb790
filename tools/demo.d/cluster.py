"""The two-node cluster of tools/demo and tests/e2e: one description, one way
to build it, both nodes' kdp configs generated from it.

    underlay netns: Linux bridge br0 192.168.50.1/24, ip_forward: the node
    segment and its router (to the internet; 203.0.113.100, the load balancer
    IP, is routed to node A)
      ├─ node-a netns: kdp (node A: node IP 192.168.50.10, pods 10.244.1.0/24)
      │    up0 ── br0;  pod-a1, pod-a2 ── eth0 of netns pod-a1 10.244.1.2, pod-a2 10.244.1.3
      ├─ node-b netns: kdp (node B: node IP 192.168.50.11, pods 10.244.2.0/24)
      │    up0 ── br0;  pod-b1, pod-b2 ── eth0 of netns pod-b1 10.244.2.2, pod-b2 10.244.2.3
      └─ inet0 198.51.100.1/24 ── eth0 of netns internet 198.51.100.10 (a host
         beyond the default route; also the external client)

Every kdp runs inside its node's namespace on net_af_packet ports over the
veth ends there; pods are namespaces whose eth0 is the other end. Every
namespace is named PREFIX-HOST (tools/demo: kdp-demo-*; tests: a random
prefix), so nothing in the root namespace is touched but kdp's DPDK runtime
directory (/var/run/dpdk/PREFIX-NODE) and the work directory.

pod-a2 and pod-b1 are the Services' backends, pod-a1 and pod-b2 their
clients (a client that is its own backend is hairpin: default/self).

Each pod and the internet host run pod_server.py: HTTP on 8080, UDP echo on
9000, TCP echo on 9001, each answer "NAME saw CLIENT_IP:PORT".

Every Service is on both nodes (as kube-proxy runs on every node); each
node's node.name decides which endpoints are its own.
"""
import json
import os
import re
import select
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
KDP_BIN = os.environ.get("KDP_BIN", str(REPO / "build" / "dataplane" / "kdp"))
KDPCTL_BIN = os.environ.get("KDPCTL_BIN", str(REPO / "build" / "tools" / "kdpctl"))
PYTHON = "/usr/bin/python3"
POD_SERVER = HERE / "pod_server.py"
TOOLS = ["ip", "ethtool", "ping", "curl", "socat", "ss", "sysctl", PYTHON]

HTTP_PORT, UDP_PORT, TCP_PORT = 8080, 9000, 9001

# ---------------------------------------------------------------------------
# The description


@dataclass(frozen=True)
class Node:
    name: str
    node_ip: str
    pod_cidr: str
    gateway: str
    uplink_mac: str


@dataclass(frozen=True)
class Pod:
    name: str
    node: str
    ip: str


@dataclass(frozen=True)
class ServicePort:
    name: str
    protocol: str
    port: int
    target_port: int
    node_port: int = 0


@dataclass(frozen=True)
class Service:
    name: str                   # namespace/name
    cluster_ip: str
    ports: tuple
    endpoints: tuple            # pod names
    type: str = "ClusterIP"
    external_traffic_policy: str = "Cluster"
    session_affinity: str = "None"
    load_balancer_ips: tuple = ()


UNDERLAY_SUBNET = "192.168.50.0/24"
UNDERLAY_IP = "192.168.50.1"
CLUSTER_CIDR = "10.244.0.0/16"
SERVICE_CIDR = "10.96.0.0/12"
INTERNET_IP, INTERNET_GW = "198.51.100.10", "198.51.100.1"
LB_IP = "203.0.113.100"

NODES = {
    "node-a": Node("node-a", "192.168.50.10", "10.244.1.0/24", "10.244.1.1", "02:00:00:00:0a:01"),
    "node-b": Node("node-b", "192.168.50.11", "10.244.2.0/24", "10.244.2.1", "02:00:00:00:0b:01"),
}
PODS = {
    "pod-a1": Pod("pod-a1", "node-a", "10.244.1.2"),
    "pod-a2": Pod("pod-a2", "node-a", "10.244.1.3"),
    "pod-b1": Pod("pod-b1", "node-b", "10.244.2.2"),
    "pod-b2": Pod("pod-b2", "node-b", "10.244.2.3"),
}


def http(port=80, node_port=0, name="http"):
    return ServicePort(name, "TCP", port, HTTP_PORT, node_port)


SERVICES = {s.name: s for s in [
    # Endpoints on both nodes, reachable from outside on either node's port
    # 30080 and on the load balancer IP (routed to node A).
    Service("default/web", "10.96.0.10", (http(node_port=30080),), ("pod-a2", "pod-b1"),
            type="LoadBalancer", load_balancer_ips=(LB_IP,)),
    # externalTrafficPolicy Local: each node sends outside clients to its own endpoint only, unmasqueraded.
    Service("default/local", "10.96.0.11", (http(node_port=30081),), ("pod-a2", "pod-b1"),
            type="NodePort", external_traffic_policy="Local"),
    # sessionAffinity ClientIP: a client stays with the backend it first got.
    Service("default/sticky", "10.96.0.12", (http(),), ("pod-a2", "pod-b1"), session_affinity="ClientIP"),
    # UDP: a DNS-like echo.
    Service("default/echo", "10.96.0.13", (ServicePort("dns", "UDP", 53, UDP_PORT),), ("pod-a2", "pod-b1")),
    # Scaled down at run time by the e2e tests: HTTP and a TCP echo.
    Service("default/scale", "10.96.0.14", (http(), ServicePort("echo", "TCP", TCP_PORT, TCP_PORT)),
            ("pod-a2", "pod-b1")),
    # No endpoints: rejected at once.
    Service("default/empty", "10.96.0.15", (http(),), ()),
    # pod-a1's own Service: hairpin.
    Service("default/self", "10.96.0.16", (http(),), ("pod-a1",)),
]}


def node_toml(node: Node, prefix: str, workdir: Path, idle_sleep_us: int = 100) -> str:
    """kdp's config for one node of the cluster."""
    q = json.dumps  # TOML basic strings are JSON-compatible for these values
    other = [n for n in NODES.values() if n.name != node.name]
    pods = [p for p in PODS.values() if p.node == node.name]
    out = [
        f"# {node.name} of the kdp two-node cluster (generated by tools/demo.d/cluster.py)",
        "[node]",
        f"name = {q(node.name)}",
        f"node_ip = {q(node.node_ip + '/' + UNDERLAY_SUBNET.split('/')[1])}",
        f"pod_cidr = {q(node.pod_cidr)}",
        f"gateway_ip = {q(node.gateway)}",
        f"cluster_cidr = {q(CLUSTER_CIDR)}",
        f"service_cidr = {q(SERVICE_CIDR)}",
        "",
        "[eal]",
        'args = ["--no-huge", "-m", "256", "--no-pci"]',
        f"file_prefix = {q(prefix + '-' + node.name)}",
        "",
        "[workers]",
        "main_lcore = 0",
        "lcores = [1]",
        "cpus = [1]",
        "# Two kdps and their clients share 2 CPUs: idle workers sleep instead of spinning.",
        f"idle_sleep_us = {idle_sleep_us}",
        "",
        "[conntrack]",
        "max_flows = 65536   # the default (1M flows) wants ~200 MB more than -m 256 gives",
        "",
        "[nat]",
        "masquerade_egress = true",
        "",
        "[control]",
        f"socket = {q(str(workdir / (node.name + '.sock')))}",
        "",
        "[[port]]",
        'name = "up0"',
        'role = "uplink"',
        'device = "net_af_packet0,iface=up0"',
        f"mac = {q(node.uplink_mac)}",
    ]
    for i, pod in enumerate(pods):
        out += ["", "[[port]]", f'name = "pod{i}"', 'role = "pod"',
                f'device = "net_af_packet{i + 1},iface={pod.name}"']
    for n in other:
        out += ["", "[[route]]", f"prefix = {q(n.pod_cidr)}", f"via = {q(n.node_ip)}"]
    out += ["", "[[route]]", 'prefix = "0.0.0.0/0"', f"via = {q(UNDERLAY_IP)}"]
    for svc in SERVICES.values():
        out += ["", "[[service]]", f"name = {q(svc.name)}", f"type = {q(svc.type)}",
                f"cluster_ip = {q(svc.cluster_ip)}"]
        if svc.type != "ClusterIP":
            out.append(f"external_traffic_policy = {q(svc.external_traffic_policy)}")
        if svc.session_affinity != "None":
            out.append(f"session_affinity = {q(svc.session_affinity)}")
        if svc.load_balancer_ips:
            out.append(f"load_balancer_ips = [{', '.join(q(ip) for ip in svc.load_balancer_ips)}]")
        for port in svc.ports:
            out += ["  [[service.port]]"]
            if len(svc.ports) > 1:
                out.append(f"  name = {q(port.name)}")
            out += [f"  protocol = {q(port.protocol)}", f"  port = {port.port}", f"  target_port = {port.target_port}"]
            if port.node_port:
                out.append(f"  node_port = {port.node_port}")
        for pod_name in svc.endpoints:
            pod = PODS[pod_name]
            out += ["  [[service.endpoint]]", f"  ip = {q(pod.ip)}", f"  node = {q(pod.node)}"]
    return "\n".join(out) + "\n"


def masquerade_source(node: str, backend: str) -> str:
    """The source a backend sees for a masqueraded connection that entered at node:
    MASQUERADE takes the address of the interface the packet leaves by."""
    return NODES[node].gateway if PODS[backend].node == node else NODES[node].node_ip


# ---------------------------------------------------------------------------
# Running commands


def run(cmd, timeout=15, check=True, input=None):
    """Runs a command with a bound on its time; returns the CompletedProcess (text)."""
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, input=input)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} exited {proc.returncode}\n{proc.stdout}{proc.stderr}")
    return proc


def wait_for(what, predicate, timeout=10.0, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


SAW = re.compile(r"^(\S+) saw (\d+\.\d+\.\d+\.\d+):(\d+)")


def parse_saw(text):
    """ "pod-b1 saw 10.244.1.2:41234..." -> ("pod-b1", "10.244.1.2"), else None."""
    m = SAW.match(text.strip())
    return (m.group(1), m.group(2)) if m else None


# ---------------------------------------------------------------------------
# Building, running and removing the cluster

HOSTS = ["underlay", "internet", *NODES, *PODS]


def namespaces_with_prefix(prefix):
    names = run(["ip", "netns", "list"], check=False, timeout=10).stdout.split("\n")
    return [line.split()[0] for line in names if line.split() and line.split()[0].startswith(prefix + "-")]


def remove_prefix(prefix, log=lambda s: None, kdp_timeout=20.0):
    """Removes whatever a cluster named PREFIX-* left: stops its kdps (SIGTERM,
    so they write their summaries), kills the rest of its processes, deletes its
    namespaces (their veths go with them) and kdp's DPDK runtime directories."""
    spaces = namespaces_with_prefix(prefix)
    pids = {ns: [int(p) for p in run(["ip", "netns", "pids", ns], check=False, timeout=10).stdout.split()]
            for ns in spaces}
    # kdps first (they live in the node namespaces), gracefully.
    kdps = [pid for ns in spaces if ns.endswith(tuple("-" + n for n in NODES)) for pid in pids[ns]]
    for pid in kdps:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + kdp_timeout
    for pid in kdps:
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        if Path(f"/proc/{pid}").exists():
            log(f"kdp (pid {pid}) did not stop within {kdp_timeout:.0f} s; killing it")
    for ns in spaces:
        for pid in run(["ip", "netns", "pids", ns], check=False, timeout=10).stdout.split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
    for ns in spaces:
        run(["ip", "netns", "del", ns], check=False, timeout=10)
    for node in NODES:
        path = Path("/var/run/dpdk") / f"{prefix}-{node}"
        if path.is_dir():
            subprocess.run(["rm", "-rf", "--one-file-system", str(path)], timeout=10, check=False)

    def gone():
        if namespaces_with_prefix(prefix):
            return False
        # A namespace's processes must be gone too (a killed one may take a moment).
        return not any(Path(f"/proc/{pid}").exists() for ps in pids.values() for pid in ps)

    wait_for(f"namespaces {prefix}-* and their processes to go", gone, timeout=10)


@dataclass
class KdpProcess:
    node: str
    proc: subprocess.Popen
    config: Path
    stdout: Path
    stderr: Path
    stats: Path
    socket: Path


@dataclass
class Cluster:
    prefix: str            # namespace names are PREFIX-HOST
    workdir: Path          # configs, logs, sockets, stats
    idle_sleep_us: int = 100
    kdps: dict = field(default_factory=dict)
    servers: dict = field(default_factory=dict)
    results: dict = field(default_factory=dict)  # node -> stats JSON after stop

    # -- namespaces ----------------------------------------------------------

    def ns(self, host):
        return f"{self.prefix}-{host}"

    def nsx(self, host, *cmd):
        return ["ip", "netns", "exec", self.ns(host), *map(str, cmd)]

    def sh(self, host, *cmd, timeout=15, check=True, input=None):
        return run(self.nsx(host, *cmd), timeout=timeout, check=check, input=input)

    def _add_ns(self, host):
        run(["ip", "netns", "add", self.ns(host)])
        # IPv6 off before any interface exists: no router solicitations or DAD.
        self.sh(host, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
        self.sh(host, "ip", "link", "set", "lo", "up")

    def _veth(self, a, a_if, b, b_if, a_addr=None, b_addr=None):
        run(["ip", "-n", self.ns(a), "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", self.ns(b)])
        for host, ifname, addr in ((a, a_if, a_addr), (b, b_if, b_addr)):
            # Full checksums from the kernel: kdp forwards frames as they are.
            self.sh(host, "ethtool", "-K", ifname, "tx", "off")
            if addr:
                self.sh(host, "ip", "addr", "add", addr, "dev", ifname)
            self.sh(host, "ip", "link", "set", ifname, "up")

    def create(self):
        """The namespaces, veths, addresses and routes (kdp not started)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        for host in HOSTS:
            self._add_ns(host)
        prefix_len = UNDERLAY_SUBNET.split("/")[1]
        self.sh("underlay", "ip", "link", "add", "br0", "type", "bridge", "forward_delay", "0", "stp_state", "0")
        self.sh("underlay", "ip", "addr", "add", f"{UNDERLAY_IP}/{prefix_len}", "dev", "br0")
        self.sh("underlay", "ip", "link", "set", "br0", "up")
        for node in NODES.values():
            port = "to-" + node.name
            self._veth(node.name, "up0", "underlay", port)
            self.sh("underlay", "ip", "link", "set", port, "master", "br0")
            for pod in (p for p in PODS.values() if p.node == node.name):
                self._veth(node.name, pod.name, pod.name, "eth0", b_addr=f"{pod.ip}/{pod_prefix_len(node)}")
                self.sh(pod.name, "ip", "route", "add", "default", "via", node.gateway)
        self._veth("underlay", "inet0", "internet", "eth0", a_addr=f"{INTERNET_GW}/24", b_addr=f"{INTERNET_IP}/24")
        self.sh("internet", "ip", "route", "add", "default", "via", INTERNET_GW)
        self.sh("underlay", "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv4.conf.all.send_redirects=0",
                "net.ipv4.conf.br0.send_redirects=0")
        # The cloud's load balancer: its IP goes to node A, which serves it.
        self.sh("underlay", "ip", "route", "add", f"{LB_IP}/32", "via", NODES["node-a"].node_ip)

    # -- kdp -------------------------------------------------------------------

    def start_kdps(self, timeout=30.0):
        assert Path(KDP_BIN).exists(), f"no kdp binary at {KDP_BIN} (ninja -C build)"
        for node in NODES.values():
            config = self.workdir / f"{node.name}.toml"
            config.write_text(node_toml(node, self.prefix, self.workdir, self.idle_sleep_us))
            out, err = self.workdir / f"{node.name}.out", self.workdir / f"{node.name}.err"
            stats = self.workdir / f"{node.name}.stats.json"
            stats.unlink(missing_ok=True)
            with open(out, "w") as o, open(err, "w") as e:
                # Its own session: tools/demo --keep leaves it running after the demo ends.
                proc = subprocess.Popen(self.nsx(node.name, KDP_BIN, "--config", config, "--stats-json", stats),
                                        stdout=o, stderr=e, stdin=subprocess.DEVNULL, start_new_session=True)
            self.kdps[node.name] = KdpProcess(node.name, proc, config, out, err, stats,
                                              self.workdir / f"{node.name}.sock")
        for kdp in self.kdps.values():
            def started(kdp=kdp):
                if kdp.proc.poll() is not None:
                    raise RuntimeError(f"kdp of {kdp.node} exited {kdp.proc.returncode}:\n{kdp.stderr.read_text()}")
                return "worker(s) running" in kdp.stderr.read_text() and kdp.socket.exists()
            wait_for(f"kdp of {kdp.node} to start", started, timeout=timeout)

    def kdp_alive(self):
        """The nodes whose kdp has exited, with its stderr's tail."""
        return {n: k.stderr.read_text()[-2000:] for n, k in self.kdps.items() if k.proc.poll() is not None}

    def kdpctl(self, node, *args, timeout=15, check=True):
        return run([KDPCTL_BIN, "--socket", str(self.workdir / f"{node}.sock"), *map(str, args)],
                   timeout=timeout, check=check)

    def stop_kdps(self, timeout=20.0):
        """SIGTERM to every kdp; returns node -> its stats JSON (None if it wrote none)."""
        for kdp in self.kdps.values():
            if kdp.proc.poll() is None:
                kdp.proc.terminate()  # ip netns exec execs kdp: this is kdp's pid
        for name, kdp in self.kdps.items():
            try:
                kdp.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                kdp.proc.kill()
                kdp.proc.wait(timeout=5)
            try:
                self.results[name] = json.loads(kdp.stats.read_text()) if kdp.stats.exists() else None
            except json.JSONDecodeError:
                self.results[name] = None
        self.kdps = {}
        return self.results

    # -- servers -----------------------------------------------------------------

    def start_servers(self, timeout=10.0):
        hosts = {p.name: p.ip for p in PODS.values()}
        hosts["internet"] = INTERNET_IP
        for host, ip in hosts.items():
            log = self.workdir / f"server-{host}.log"
            with open(log, "w") as out:
                self.servers[host] = subprocess.Popen(
                    self.nsx(host, PYTHON, "-u", POD_SERVER, host, ip, HTTP_PORT, UDP_PORT, TCP_PORT),
                    stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        for host, proc in self.servers.items():
            def listening(host=host, proc=proc):
                if proc.poll() is not None:
                    raise RuntimeError(f"server in {host} exited {proc.returncode}:\n"
                                       f"{(self.workdir / f'server-{host}.log').read_text()}")
                tcp = self.sh(host, "ss", "-Hltn", timeout=5).stdout
                udp = self.sh(host, "ss", "-Hlun", timeout=5).stdout
                return f":{HTTP_PORT} " in tcp and f":{TCP_PORT} " in tcp and f":{UDP_PORT} " in udp
            wait_for(f"the servers in {host}", listening, timeout=timeout)

    def server_log(self, host):
        """(kind, client ip) of every request the server of host logged so far."""
        lines = (self.workdir / f"server-{host}.log").read_text().splitlines()
        return [(l.split()[0], l.split()[1].rsplit(":", 1)[0]) for l in lines if len(l.split()) == 2]

    # -- all of it -------------------------------------------------------------------

    def up(self):
        """Builds the topology, starts both kdps and the servers; on any failure removes it all again."""
        try:
            self.create()
            self.start_kdps()
            self.start_servers()
        except BaseException:
            self.down()
            raise
        return self

    def down(self):
        """Stops kdp (keeping its stats), the servers, and removes the namespaces."""
        errors = []
        try:
            if self.kdps:
                self.stop_kdps()
        except Exception as e:  # keep cleaning up
            errors.append(f"stopping kdp: {e}")
        for proc in self.servers.values():
            if proc.poll() is None:
                proc.kill()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                errors.append(f"server {proc.pid} did not exit")
        self.servers = {}
        try:
            remove_prefix(self.prefix)
        except Exception as e:
            errors.append(str(e))
        if errors:
            raise RuntimeError("; ".join(errors))


def pod_prefix_len(node: Node) -> str:
    return node.pod_cidr.split("/")[1]


# ---------------------------------------------------------------------------
# Clients: curl, ping, socat, as a pod or the internet host runs them


def curl(cluster, host, url, timeout=10):
    """GETs url from host: (curl exit code, body, stderr, seconds)."""
    start = time.monotonic()
    proc = cluster.sh(host, "curl", "-sS", "--noproxy", "*", "--max-time", timeout, url,
                      timeout=timeout + 10, check=False)
    return proc.returncode, proc.stdout.strip(), proc.stderr.strip(), time.monotonic() - start


def ping(cluster, host, dst, count=3, extra=()):
    """Pings dst from host: (replies received, sent, output)."""
    proc = cluster.sh(host, "ping", "-n", "-c", count, "-i", "0.2", "-W", "2", *extra, dst,
                      timeout=count * 2 + 10, check=False)
    m = re.search(r"(\d+) received", proc.stdout)
    return (int(m.group(1)) if m else 0), count, proc.stdout + proc.stderr


class Stream:
    """A long-lived socat client in a namespace (TCP or UDP): lines in, lines out."""

    def __init__(self, cluster, host, address):
        self.proc = subprocess.Popen(cluster.nsx(host, "socat", "-T", "60", "-", address),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.buf = b""

    def send(self, line: str):
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def read_line(self, timeout=3.0):
        """The next line the peer sent, or None after timeout."""
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    return None
                self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode(errors="replace")

    def close(self, timeout=5.0):
        """Closes the client's side; returns socat's exit code."""
        try:
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
            return None
