"""The host port: the node's own network stack behind kdp (a net_tap
interface, role "host"), as on a gateway node whose NIC kdp took over.

Topology (random kdpt-<hex> prefix): kdp runs in its own namespace, "node",
which is also the node's stack:

    pod-a netns  eth0 10.244.1.2/24 ─veth─ <p>-a ─┐
    node-b netns eth0 192.168.50.11/24 ─veth─ <p>-u ─┼─ kdp (in netns node): pod0, up0, host0
    node netns   kdp-host (net_tap) 192.168.50.10/24, given by kdp ─┘

The node's stack routes the pod and service networks to kdp-host. Needs root,
iproute2, socat and ping (tools/setup-deps installs them).
"""
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
from test_live import GATEWAY, NODE_B, NODE_IP, POD_A, Topology, assert_ping, run, tcp_echo, tools_present  # noqa: E402,F401
from kdp_harness import (KDP_BIN, NODE, UPLINK_MAC, NodeConfig, Port, config_text, control_socket_path,  # noqa: E402
                         kdp_stats, port_of)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="live tests need root for network namespaces")

HOST_IF = "kdp-host"
CLUSTER_IP = "10.96.0.20"
SERVICE = f"""
[[service]]
name = "default/web"
cluster_ip = "{CLUSTER_IP}"
port = [{{ protocol = "TCP", port = 80, target_port = 8080 }}]
endpoint = [{{ ip = "{POD_A}", node = "node-a" }}]
"""


class HostTopology(Topology):
    def create(self):
        self.kdp_ns = self.prefix + "-nd"
        self.ns["node"] = self.kdp_ns
        run(["ip", "netns", "add", self.kdp_ns])
        self.created_ns.append(self.kdp_ns)
        for key in ("all", "default"):
            self.sh("node", "sysctl", "-qw", f"net.ipv6.conf.{key}.disable_ipv6=1")
        # The node's own connections take source ports kdp's SNAT (32768-60999) leaves alone.
        self.sh("node", "sysctl", "-qw", "net.ipv4.ip_local_port_range=61000 65000")
        self.sh("node", "ip", "link", "set", "lo", "up")
        self._add_host("pod-a", POD_A + "/24")
        self._add_host("node-b", NODE_B + "/24")
        self.sh("pod-a", "ip", "route", "add", "default", "via", GATEWAY)
        self.sh("node-b", "ip", "route", "add", NODE["pod_cidr"], "via", NODE_IP)

    def config(self) -> NodeConfig:
        return NodeConfig(
            ports=[
                Port("pod0", "pod", f"net_af_packet0,iface={self.host_if['pod-a']}"),
                Port("up0", "uplink", f"net_af_packet1,iface={self.host_if['node-b']}", mac=UPLINK_MAC),
                Port("host0", "host", f"net_tap0,iface={HOST_IF}"),
            ],
            node=dict(NODE, node_ip=NODE_IP + "/24"),
            lcores=(1,),
            extra=SERVICE,
        )


@pytest.fixture(scope="module")
def topo(tmp_path_factory):
    t = HostTopology(tmp_path_factory.mktemp("host"))
    try:
        t.create()
        t.start_kdp()
        # As on any node: the pod and service networks are reached through kdp.
        t.sh("node", "ip", "route", "add", "10.244.0.0/16", "dev", HOST_IF)
        t.sh("node", "ip", "route", "add", "10.96.0.0/12", "dev", HOST_IF)
        yield t
    finally:
        t.cleanup()


def test_kdp_gives_the_stack_node_ip(topo):
    link = topo.sh("node", "ip", "-o", "link", "show", "dev", HOST_IF).stdout
    assert "state UP" in link or ",UP" in link, link
    addresses = topo.sh("node", "ip", "-4", "-o", "addr", "show", "dev", HOST_IF).stdout
    assert f"inet {NODE_IP}/24 " in addresses, addresses


# (server, its address, client, port, what the client sends): the peer
# reaches a listener of the node (ssh), the node the peer (an API server),
# a pod the node (the kubelet), the node a pod (a readiness probe). The
# server answers with the address it saw: no NAT on any of these paths.
PATHS = [
    ("node", NODE_IP, "node-b", 2222, b"ssh-like\n"),
    ("node-b", NODE_B, "node", 6443, b"to the API server\n"),
    ("node", NODE_IP, "pod-a", 10250, b"kubelet\n"),
    ("pod-a", POD_A, "node", 8081, b"readiness probe\n"),
]


@pytest.mark.parametrize("server,server_ip,client,port,data", PATHS, ids=[f"{c}-to-{s}" for s, _, c, _, _ in PATHS])
def test_tcp_between_the_node_and_its_neighbours(topo, tmp_path, server, server_ip, client, port, data):
    client_ip = {"node": NODE_IP, "node-b": NODE_B, "pod-a": POD_A}[client]
    out = tcp_echo(topo, server, server_ip, client, port, data, tmp_path / "server.log")
    assert out == f"peer={client_ip}\n".encode() + data, out


def test_node_pings_the_peer(topo):
    assert_ping(topo, "node", NODE_B)


def test_node_reaches_a_cluster_ip(topo, tmp_path):
    topo.start_server("pod-a", ["socat", "-T", "10", f"TCP-LISTEN:8080,bind={POD_A},reuseaddr",
                                'SYSTEM:echo "peer=$SOCAT_PEERADDR"; exec cat'], 8080, tmp_path / "server.log")
    proc = subprocess.run(topo.nsx("node", "socat", "-t", "5", "-T", "10", "-", f"TCP:{CLUSTER_IP}:80"),
                          input=b"via the service\n", capture_output=True, timeout=30)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert proc.stdout.endswith(b"via the service\n"), proc.stdout


def test_pings_to_node_ip_answered(topo):
    assert_ping(topo, "node-b", NODE_IP)
    assert_ping(topo, "pod-a", NODE_IP)


def test_ephemeral_ports_overlapping_snat_refused(tmp_path):
    """The default SNAT range is the kernel's default ephemeral range: a reply
    to the node's own connection could be taken for a SNAT flow. kdp refuses
    to start, naming the setting, and leaves no interface behind."""
    ns = "kdpt-" + uuid.uuid4().hex[:6] + "-ov"
    run(["ip", "netns", "add", ns])
    try:
        run(["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.ip_local_port_range=32768 60999"])
        config = NodeConfig(ports=[Port("host0", "host", f"net_tap0,iface={HOST_IF}")], lcores=(1,))
        cfg = tmp_path / "node.toml"
        cfg.write_text(config_text(config, tmp_path))
        proc = subprocess.run(["ip", "netns", "exec", ns, KDP_BIN, "--config", str(cfg)], capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode != 0
        assert ("port host0 (net_tap0): nat.snat_ports: 32768-60999 overlaps the kernel's ephemeral ports "
                "32768-60999") in proc.stderr, proc.stderr
        links = run(["ip", "netns", "exec", ns, "ip", "-o", "link", "show"]).stdout
        assert HOST_IF not in links, links
    finally:
        run(["ip", "netns", "del", ns], check=False)


def test_the_stack_traffic_went_through_kdp(topo):
    stats = kdp_stats(control_socket_path(topo.workdir))
    host = port_of(stats, "host0")
    assert host["rx"] > 0 and host["tx"] > 0, host
    assert host["role"] == "host", host
