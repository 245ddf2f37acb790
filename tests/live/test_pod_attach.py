"""Pods attached and detached while kdp runs (kdpctl pod add / del / list).

kdp starts with an uplink (node B) and one configured pod port (pod A, a
[[pod]]). Pod B's namespace and veth are made only after kdp runs; `kdpctl
pod add` hot-plugs its host end as a new bridge port, and real pings prove
it forwards; `kdpctl pod del` takes it away again (pings fail, the port
lists no longer have it), and a second attach reuses its port index.

    pod-a netns  eth0 10.244.1.2/24 ─veth─ <p>-a ── kdp pod0 ([[pod]] default/pod-a)
    pod-b netns  eth0 10.244.1.3/24 ─veth─ <p>-b ── kdp <p>-b (pod add default/pod-b, at run time)
    node-b netns eth0 192.168.50.11/24 ─veth─ <p>-u ── kdp up0
"""
import json
import os
import socket
import subprocess
from pathlib import Path

import pytest

# test_live.py's topology and helpers (importing it puts tests/lib on sys.path).
from test_live import GATEWAY, NODE_B, NODE_IP, POD_A, POD_B, Topology, make_topology, ping, tools_present, wait_for  # noqa: F401
from kdp_harness import KDPCTL_BIN, NODE, UPLINK_MAC, NodeConfig, Port, control_socket_path, kdp_stats  # noqa: E402

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="live tests need root for network namespaces")

MAC_A, MAC_B = "02:00:0a:f4:01:02", "02:00:0a:f4:01:03"
POD_A_NAME, POD_B_NAME = "default/pod-a", "default/pod-b"
SPOOFED_IP = "10.244.1.77"


class PodTopology(Topology):
    """test_live's topology without pod B at start: only pod A is configured."""

    @property
    def sock(self) -> Path:
        return control_socket_path(self.workdir)

    def create(self):
        self._add_host("pod-a", POD_A + "/24")
        self.sh("pod-a", "ip", "link", "set", "eth0", "address", MAC_A)
        self._add_host("node-b", NODE_B + "/24")
        self.sh("pod-a", "ip", "route", "add", "default", "via", GATEWAY)
        self.sh("node-b", "ip", "route", "add", NODE["pod_cidr"], "via", NODE_IP)

    def add_pod_b(self):
        """Pod B's namespace and veth, made while kdp runs."""
        self._add_host("pod-b", POD_B + "/24")
        self.sh("pod-b", "ip", "link", "set", "eth0", "address", MAC_B)
        self.sh("pod-b", "ip", "route", "add", "default", "via", GATEWAY)

    def config(self) -> NodeConfig:
        return NodeConfig(
            ports=[
                Port("pod0", "pod", f"net_af_packet0,iface={self.host_if['pod-a']}"),
                Port("up0", "uplink", f"net_af_packet1,iface={self.host_if['node-b']}", mac=UPLINK_MAC),
            ],
            node=dict(NODE, node_ip=NODE_IP + "/24"),
            lcores=(1,),
            extra=f'[[pod]]\nname = "{POD_A_NAME}"\nport = "pod0"\nip = "{POD_A}"\nmac = "{MAC_A}"\n',
        )

    def ctl(self, *args, rc=0):
        proc = subprocess.run([KDPCTL_BIN, "--socket", str(self.sock), *map(str, args)], capture_output=True,
                              text=True, timeout=30)
        assert proc.returncode == rc, f"kdpctl {' '.join(map(str, args))}: exit {proc.returncode}\n{proc.stdout}{proc.stderr}"
        return proc

    def ctl_json(self, *args):
        return json.loads(self.ctl("--json", *args).stdout)

    def request(self, verb, args):
        """One raw request on the control socket (what kdp itself answers)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(str(self.sock))
            s.sendall((json.dumps({"verb": verb, "args": args}) + "\n").encode())
            reply = b""
            while not reply.endswith(b"\n"):
                chunk = s.recv(65536)
                assert chunk, "kdp closed the connection without a reply"
                reply += chunk
        return json.loads(reply)

    def port_names(self):
        return [p["name"] for p in self.ctl_json("port", "list")]

    def stats_port(self, name):
        return next((p for p in kdp_stats(self.sock)["ports"] if p["name"] == name), None)


@pytest.fixture(scope="module")
def topo(tmp_path_factory):
    t = make_topology(tmp_path_factory, "pod-attach", PodTopology)
    try:
        yield t
    finally:
        t.cleanup()


@pytest.fixture(autouse=True)
def kdp_still_running(topo):
    yield
    topo.assert_kdp_alive()


def received(topo, host, dst, count=3):
    return ping(topo, host, dst, count)[0]


def assert_ping(topo, host, dst, count=3):
    got, _, out = ping(topo, host, dst, count)
    if got != count:
        drops = {k: v for k, v in kdp_stats(topo.sock)["drops"].items() if v}
        raise AssertionError(f"{host} -> {dst}: {got}/{count} replies\n{out}\nkdp drops: {drops}\n"
                             f"neighbours: {topo.ctl_json('neighbor', 'list')}\nports: {kdp_stats(topo.sock)['ports']}\n"
                             f"conntrack: {topo.ctl_json('conntrack', 'list')}\n"
                             f"node-b neigh: {topo.sh('node-b', 'ip', 'neigh').stdout}")


def attach_pod_b(topo):
    return topo.ctl_json("pod", "add", "--name", POD_B_NAME, "--iface", topo.host_if["pod-b"], "--ip", POD_B + "/24",
                         "--mac", MAC_B)


# The tests run in order: each starts from the state the one before left.

def test_config_pod_listed_and_working(topo):
    assert topo.port_names() == ["pod0", "up0"]
    assert topo.ctl_json("pod", "list") == [
        {"name": POD_A_NAME, "port": "pod0", "index": 0, "iface": topo.host_if["pod-a"], "ip": POD_A, "mac": MAC_A,
         "source": "config"}]
    assert_ping(topo, "pod-a", GATEWAY)


def test_attach_at_run_time(topo):
    topo.add_pod_b()
    # A dry run checks, reserves nothing and attaches nothing.
    dry = topo.ctl_json("pod", "add", "--name", POD_B_NAME, "--iface", topo.host_if["pod-b"], "--ip", POD_B,
                        "--mac", MAC_B, "--dry-run")
    assert dry["dry_run"] is True and dry["index"] == 2, dry
    assert topo.port_names() == ["pod0", "up0"]

    reply = attach_pod_b(topo)
    # Answered once live: kdp says how long publishing and the workers took.
    timing = reply.pop("timing")
    assert timing["apply_ms"] >= 0 and timing["live_ms"] >= 0, timing
    assert reply == {"name": POD_B_NAME, "port": topo.host_if["pod-b"], "index": 2, "iface": topo.host_if["pod-b"],
                     "ip": POD_B, "mac": MAC_B, "gateway_ip": GATEWAY, "gateway_mac": NODE["gateway_mac"],
                     "dry_run": False}, reply
    ports = topo.ctl_json("port", "list")
    assert [p["name"] for p in ports] == ["pod0", "up0", topo.host_if["pod-b"]]
    assert ports[2]["role"] == "pod" and ports[2]["mac"] == NODE["gateway_mac"], ports[2]
    assert f"iface={topo.host_if['pod-b']}" in ports[2]["device"], ports[2]
    pods = topo.ctl_json("pod", "list")
    assert [(p["name"], p["source"], p["index"]) for p in pods] == [(POD_A_NAME, "config", 0),
                                                                   (POD_B_NAME, "attach", 2)], pods

    # Real traffic through the new port: to the gateway, to the configured pod, back, and out the uplink.
    assert_ping(topo, "pod-b", GATEWAY)
    assert_ping(topo, "pod-b", POD_A)
    assert_ping(topo, "pod-a", POD_B)
    assert_ping(topo, "pod-b", NODE_B)
    port = topo.stats_port(topo.host_if["pod-b"])
    assert port["rx"] >= 12 and port["tx"] >= 12, port
    fdb = topo.ctl_json("fdb", "list")
    assert {"mac": MAC_B, "port": topo.host_if["pod-b"]}.items() <= next(e for e in fdb if e["mac"] == MAC_B).items()


def test_spoofed_source_from_attached_pod_dropped(topo):
    before = kdp_stats(topo.sock)["drops"]
    topo.sh("pod-b", "ip", "addr", "add", SPOOFED_IP + "/32", "dev", "eth0")
    try:
        got, _, out = ping(topo, "pod-b", POD_A, 3, extra=("-I", SPOOFED_IP))
    finally:
        topo.sh("pod-b", "ip", "addr", "del", SPOOFED_IP + "/32", "dev", "eth0")
    assert got == 0, out
    after = kdp_stats(topo.sock)["drops"]
    assert after["spoofed_source_ip"] - before["spoofed_source_ip"] >= 3, (before, after)
    # The attached pod's own address still passes.
    assert_ping(topo, "pod-b", POD_A, 2)


def test_bad_input_changes_nothing(topo):
    hif_a, hif_b = topo.host_if["pod-a"], topo.host_if["pod-b"]
    ports_before = topo.ctl_json("port", "list")
    pods_before = topo.ctl_json("pod", "list")
    fresh_iface = hif_b  # exists, so each case fails on the field it names and nothing else

    def refused(args, field, rc=1):
        proc = topo.ctl("pod", "add", *args, rc=rc)
        assert f"pod.add: args.{field}: " in proc.stderr, proc.stderr
        return proc.stderr

    err = refused(["--name", "default/x", "--iface", topo.prefix + "-zz", "--ip", "10.244.1.50"], "iface")
    assert "no network interface" in err, err
    err = refused(["--name", "default/x", "--iface", fresh_iface, "--ip", "10.244.2.50/24"], "ip")
    assert "outside node.pod_cidr 10.244.1.0/24" in err, err
    err = refused(["--name", "default/x", "--iface", fresh_iface, "--ip", "10.244.1.50/16"], "ip")
    err = refused(["--name", "default/x", "--iface", fresh_iface, "--ip", GATEWAY], "ip")
    err = refused(["--name", "default/x", "--iface", fresh_iface, "--ip", "10.244.1.255"], "ip")
    err = refused(["--name", POD_B_NAME, "--iface", fresh_iface, "--ip", "10.244.1.50"], "name")
    assert "already a pod" in err, err
    err = refused(["--name", POD_A_NAME, "--iface", fresh_iface, "--ip", "10.244.1.50"], "name")
    err = refused(["--name", "default/x", "--iface", fresh_iface, "--ip", POD_A], "ip")
    assert f'already pod "{POD_A_NAME}"' in err, err
    err = refused(["--name", "default/x", "--iface", fresh_iface, "--ip", POD_B], "ip")
    err = refused(["--name", "default/x", "--iface", hif_a, "--ip", "10.244.1.50"], "iface")
    assert "already used by port pod0" in err, err
    # Malformed values: kdpctl refuses them itself (usage, 2), and so does kdp.
    refused(["--name", "default/x", "--iface", fresh_iface, "--ip", "10.244.1.50", "--mac", "02:00:00:00:00:zz"],
            "mac", rc=2)
    refused(["--name", "default/x", "--iface", "a,qpairs=9", "--ip", "10.244.1.50"], "iface", rc=2)
    for args, field in [({"mac": "02:00:00:00:00:zz"}, "mac"), ({"mac": "01:00:5e:00:00:01"}, "mac"),
                        ({"iface": f"{fresh_iface},qpairs=9"}, "iface"), ({"ip": "10.244.1.300"}, "ip"),
                        ({"name": "no-namespace"}, "name")]:
        request = {"name": "default/x", "iface": fresh_iface, "ip": "10.244.1.50", **args}
        reply = topo.request("pod.add", request)
        assert reply["ok"] is False and reply["error"].startswith(f"pod.add: args.{field}: "), (request, reply)
    # Removing: an unknown pod, and a pod of the config file.
    proc = topo.ctl("pod", "del", "--name", "default/nope", rc=1)
    assert 'pod.del: args.name: no pod is named "default/nope"' in proc.stderr, proc.stderr
    proc = topo.ctl("pod", "del", "--name", POD_A_NAME, rc=1)
    assert "pod.del: args.name: " in proc.stderr and "config file" in proc.stderr, proc.stderr

    assert topo.ctl_json("port", "list") == ports_before
    assert topo.ctl_json("pod", "list") == pods_before
    assert_ping(topo, "pod-b", POD_A, 2)


def test_detach(topo):
    hif_b = topo.host_if["pod-b"]
    dry = topo.ctl_json("pod", "del", "--name", POD_B_NAME, "--dry-run")
    assert dry["dry_run"] is True and dry["index"] == 2 and dry["fdb_flushed"] >= 1, dry
    assert hif_b in topo.port_names()

    rx_before = topo.stats_port(hif_b)["rx"]
    reply = topo.ctl_json("pod", "del", "--name", POD_B_NAME)
    assert reply["name"] == POD_B_NAME and reply["port"] == hif_b and reply["index"] == 2, reply
    assert reply["fdb_flushed"] >= 1 and reply["dry_run"] is False, reply
    topo.rx_before_detach = rx_before

    assert topo.port_names() == ["pod0", "up0"]
    assert [p["name"] for p in topo.ctl_json("pod", "list")] == [POD_A_NAME]
    assert topo.stats_port(hif_b) is None
    assert all(e["port"] != hif_b and e["mac"] != MAC_B for e in topo.ctl_json("fdb", "list"))
    assert all(e["ip"] != POD_B for e in topo.ctl_json("neighbor", "list"))
    assert received(topo, "pod-b", GATEWAY) == 0
    assert received(topo, "pod-a", POD_B) == 0
    # Its name is free again, and a second del finds nothing.
    proc = topo.ctl("pod", "del", "--name", POD_B_NAME, rc=1)
    assert "no pod is named" in proc.stderr, proc.stderr


def test_attach_again_reuses_index(topo):
    hif_b = topo.host_if["pod-b"]
    reply = attach_pod_b(topo)
    assert reply["index"] == 2 and reply["port"] == hif_b, reply
    # The reused index's counters start again from zero (not the detached port's).
    port = topo.stats_port(hif_b)
    assert port["rx"] < topo.rx_before_detach, (port, topo.rx_before_detach)
    assert_ping(topo, "pod-b", GATEWAY)
    assert_ping(topo, "pod-b", POD_A)
    assert_ping(topo, "pod-a", POD_B)


def test_attach_without_mac_checks_the_ip_only(topo):
    hif_b = topo.host_if["pod-b"]
    topo.ctl("pod", "del", "--name", POD_B_NAME)
    # A new MAC on pod B: with no --mac, any source MAC may send from the port, but only from its IP.
    topo.sh("pod-b", "ip", "link", "set", "eth0", "address", "02:00:0a:f4:01:33")
    topo.sh("pod-a", "ip", "neigh", "flush", "dev", "eth0")
    reply = topo.ctl_json("pod", "add", "--name", POD_B_NAME, "--iface", hif_b, "--ip", POD_B)
    assert reply["mac"] is None and reply["index"] == 2, reply
    assert [p["mac"] for p in topo.ctl_json("pod", "list") if p["name"] == POD_B_NAME] == [None]
    assert_ping(topo, "pod-b", POD_A)
    before = kdp_stats(topo.sock)["drops"]["spoofed_source_ip"]
    topo.sh("pod-b", "ip", "addr", "add", SPOOFED_IP + "/32", "dev", "eth0")
    try:
        got = ping(topo, "pod-b", POD_A, 2, extra=("-I", SPOOFED_IP))[0]
    finally:
        topo.sh("pod-b", "ip", "addr", "del", SPOOFED_IP + "/32", "dev", "eth0")
    assert got == 0
    assert kdp_stats(topo.sock)["drops"]["spoofed_source_ip"] - before >= 2
    topo.ctl("pod", "del", "--name", POD_B_NAME)
    topo.sh("pod-b", "ip", "link", "set", "eth0", "address", MAC_B)
    topo.sh("pod-a", "ip", "neigh", "flush", "dev", "eth0")


def test_clean_shutdown(topo):
    # One attached pod left at shutdown: kdp closes it with the others.
    attach_pod_b(topo)
    assert_ping(topo, "pod-b", GATEWAY, 2)
    result = topo.stop_kdp()
    assert result.returncode == 0, result.stderr
    assert result.stats is not None and any(p["name"] == topo.host_if["pod-b"] for p in result.stats["ports"])
