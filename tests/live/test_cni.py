"""kdp-cni as a container runtime runs it, against a running kdp.

kdp starts with only its uplink (to a node-b namespace, as in test_live.py);
the pods come and go through the plugin, which is run exactly as a runtime
runs a CNI plugin: CNI_* variables and the network config on stdin.

    pod-a: a named namespace      (CNI_NETNS=/var/run/netns/<name>)
    pod-b: a process's own netns  (CNI_NETNS=/proc/<pid>/ns/net, as Docker's)

The tests of TestLifecycle run in order: ADD both pods, traffic through kdp,
CHECK, the spec's error codes, DEL. Needs root, iproute2, ping, socat, ss,
unshare and nsenter, and the binaries from $KDP_BIN and $KDP_CNI_BIN.
"""
import ipaddress
import json
import os
import re
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
from kdp_harness import NODE, REPO, UPLINK_MAC, NodeConfig, Port  # noqa: E402
from test_live import NODE_B, NODE_IP, REMOTE_POD, Topology, run, wait_for  # noqa: E402

KDP_CNI_BIN = os.environ.get("KDP_CNI_BIN", str(REPO / "build" / "tools" / "kdp-cni"))
GATEWAY = NODE["gateway_ip"]
SUBNET = NODE["pod_cidr"]

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="live tests need root for network namespaces")


def fnv1a32(data: bytes) -> int:
    h = 2166136261
    for b in data:
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return h


def expected_host_ifname(container_id: str, ifname: str) -> str:
    """README: "kdp" and the FNV-1a hash of container id, NUL, ifname."""
    digest = fnv1a32(container_id.encode() + b"\0" + ifname.encode())
    return f"kdp{digest:08x}"


def control(sock: Path, verb: str, args: dict | None = None) -> dict:
    """One request on kdp's control socket; returns the reply."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(20)
        s.connect(str(sock))
        s.sendall((json.dumps({"verb": verb, "args": args or {}}) + "\n").encode())
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            assert chunk, f"kdp closed the connection answering {verb}"
            data += chunk
    return json.loads(data)


def kdp_pods(sock: Path) -> dict:
    reply = control(sock, "pod.list")
    assert reply["ok"], reply
    return {p["name"]: p for p in reply["result"]}


def link_exists(name: str, netns_cmd=()) -> bool:
    return run([*netns_cmd, "ip", "link", "show", "dev", name], check=False, timeout=10).returncode == 0


class Pod:
    """One sandbox: its namespace, the CNI_* variables for it, its ADD result."""

    def __init__(self, name: str, netns: str, enter: list):
        self.name = name                      # K8S_POD_NAME
        self.netns = netns                    # CNI_NETNS
        self.enter = enter                    # argv prefix that runs a command inside
        self.container_id = uuid.uuid4().hex + uuid.uuid4().hex  # 64 hex digits, as runtimes make them
        self.result = None

    def env(self, command: str, **override) -> dict:
        env = {"CNI_COMMAND": command, "CNI_CONTAINERID": self.container_id, "CNI_NETNS": self.netns,
               "CNI_IFNAME": "eth0", "CNI_PATH": str(Path(KDP_CNI_BIN).parent),
               "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={self.name};"
                           f"K8S_POD_INFRA_CONTAINER_ID={self.container_id}"}
        env.update(override)
        return {k: v for k, v in env.items() if v is not None}

    def sh(self, *cmd, timeout=20, check=True):
        return run([*self.enter, *cmd], timeout=timeout, check=check)

    @property
    def ip(self) -> str:
        return self.result["ips"][0]["address"].split("/")[0]


class CniTopology(Topology):
    """test_live's topology without its static pods: kdp has only its uplink."""

    def __init__(self, workdir: Path):
        super().__init__(workdir)
        self.ns = {"node-b": self.prefix + "-nb", "pod-a": self.prefix + "-pa"}
        self.host_if = {"node-b": self.prefix + "-u"}
        self.socket = None  # kdp's control socket: set once its config is written
        self.data_dir = workdir / "cni-networks"
        self.network = self.prefix  # one address store per run
        self.pods = {}

    def create(self):
        self._add_host("node-b", NODE_B + "/24")
        self.sh("node-b", "ip", "addr", "add", REMOTE_POD + "/32", "dev", "lo")
        self.sh("node-b", "ip", "route", "add", SUBNET, "via", NODE_IP)
        run(["ip", "netns", "add", self.ns["pod-a"]])
        self.created_ns.append(self.ns["pod-a"])
        self.pods["pod-a"] = Pod("pod-a", f"/var/run/netns/{self.ns['pod-a']}", ["ip", "netns", "exec", self.ns["pod-a"]])
        # pod-b's namespace belongs to a process alone: it dies with it.
        holder = subprocess.Popen(["unshare", "--net", "sleep", "600"])
        self.servers.append(holder)  # cleanup() kills it
        netns = f"/proc/{holder.pid}/ns/net"
        wait_for("pod-b's namespace", lambda: os.readlink(netns) != os.readlink("/proc/self/ns/net"), timeout=5)
        self.pods["pod-b"] = Pod("pod-b", netns, ["nsenter", f"--net={netns}"])
        self.pods["pod-b"].holder = holder

    def config(self) -> NodeConfig:
        return NodeConfig(
            ports=[Port("up0", "uplink", f"net_af_packet0,iface={self.host_if['node-b']}", mac=UPLINK_MAC)],
            routes=[("10.244.2.0/24", NODE_B)],
            node=dict(NODE, node_ip=NODE_IP + "/24"),
            lcores=(1,),
        )

    def net_config(self, **override) -> dict:
        conf = {"cniVersion": "1.0.0", "name": self.network, "type": "kdp-cni", "subnet": SUBNET,
                "gateway": GATEWAY, "socket": str(self.socket), "dataDir": str(self.data_dir),
                "dns": {"nameservers": ["10.96.0.10"]}}
        conf.update(override)
        return {k: v for k, v in conf.items() if v is not None}

    def cni(self, env: dict, conf: dict | str):
        """Runs kdp-cni as a runtime does; returns (exit status, stdout JSON or None, stderr)."""
        stdin = conf if isinstance(conf, str) else json.dumps(conf)
        proc = subprocess.run([KDP_CNI_BIN], input=stdin, env={"PATH": os.environ.get("PATH", ""), **env},
                              capture_output=True, text=True, timeout=60)
        out = json.loads(proc.stdout) if proc.stdout.strip() else None
        return proc.returncode, out, proc.stderr

    def allocated(self) -> dict:
        """The address store's files: {ip: container id}."""
        store = self.data_dir / self.network
        if not store.exists():
            return {}
        out = {}
        for f in store.iterdir():
            try:
                ipaddress.ip_address(f.name)
            except ValueError:
                continue
            out[f.name] = f.read_text().split("\n")[0]
        return out

    def cleanup(self):
        for pod in self.pods.values():
            if pod.result:
                self.host_if["cni-" + pod.name] = pod.result["interfaces"][0]["name"]
        super().cleanup()


@pytest.fixture(scope="module")
def topo(tmp_path_factory):
    assert Path(KDP_CNI_BIN).exists(), f"no kdp-cni at {KDP_CNI_BIN} (ninja -C build)"
    t = CniTopology(tmp_path_factory.mktemp("cni"))
    try:
        t.create()
        t.start_kdp()
        t.socket = Path(re.search(r'socket = "([^"]+)"', (t.workdir / "node.toml").read_text()).group(1))
        yield t
    finally:
        t.cleanup()


@pytest.fixture(autouse=True)
def kdp_still_running(topo):
    yield
    topo.assert_kdp_alive()


def ping_count(pod: Pod, dst: str, count: int) -> tuple[int, str]:
    proc = pod.sh("ping", "-n", "-c", str(count), "-i", "0.2", "-W", "2", dst, timeout=count * 2 + 10, check=False)
    m = re.search(r"(\d+) received", proc.stdout)
    return (int(m.group(1)) if m else 0), proc.stdout + proc.stderr


def assert_reaches(pod: Pod, dst: str):
    # The first packets may meet a port kdp is still starting, and ARP.
    wait_for(f"{pod.name} -> {dst}", lambda: ping_count(pod, dst, 1)[0] == 1, timeout=15)
    received, out = ping_count(pod, dst, 3)
    assert received == 3, f"{pod.name} -> {dst}: {received}/3 replies\n{out}"


class TestLifecycle:
    def test_version(self, topo):
        rc, out, err = topo.cni({"CNI_COMMAND": "VERSION"}, {"cniVersion": "1.0.0"})
        assert rc == 0, err
        assert out == {"cniVersion": "1.0.0", "supportedVersions": ["1.0.0"]}

    def test_add_both_pods(self, topo):
        mtu = {"pod-a": None, "pod-b": 1400}  # pod-b: both veth ends at the config's mtu
        for pod in topo.pods.values():
            rc, out, err = topo.cni(pod.env("ADD"), topo.net_config(mtu=mtu[pod.name]))
            assert rc == 0, f"ADD {pod.name}: {out} {err}"
            pod.result = out
            host_if = expected_host_ifname(pod.container_id, "eth0")
            assert out["cniVersion"] == "1.0.0"
            assert [i["name"] for i in out["interfaces"]] == [host_if, "eth0"]
            assert out["interfaces"][1]["sandbox"] == pod.netns
            assert "sandbox" not in out["interfaces"][0]
            # The MACs are the interfaces' own.
            container_link = json.loads(pod.sh("ip", "-j", "link", "show", "dev", "eth0").stdout)[0]
            host_link = json.loads(run(["ip", "-j", "link", "show", "dev", host_if]).stdout)[0]
            assert out["interfaces"][1]["mac"] == container_link["address"]
            assert out["interfaces"][0]["mac"] == host_link["address"]
            assert "UP" in container_link["flags"] and "UP" in host_link["flags"]
            assert container_link["mtu"] == host_link["mtu"] == (mtu[pod.name] or 1500)
            [ip] = out["ips"]
            assert ip["gateway"] == GATEWAY and ip["interface"] == 1
            address = ipaddress.ip_interface(ip["address"])
            assert str(address.network) == SUBNET
            assert str(address.ip) not in (GATEWAY, "10.244.1.0", "10.244.1.255")
            assert out["routes"] == [{"dst": "0.0.0.0/0", "gw": GATEWAY}]
            assert out["dns"] == {"nameservers": ["10.96.0.10"]}
            # Inside: the address, the default route via kdp's gateway.
            addrs = json.loads(pod.sh("ip", "-j", "-4", "addr", "show", "dev", "eth0").stdout)[0]["addr_info"]
            assert [(a["local"], a["prefixlen"]) for a in addrs] == [(str(address.ip), 24)]
            routes = json.loads(pod.sh("ip", "-j", "-4", "route", "show", "default").stdout)
            assert [(r["gateway"], r["dev"]) for r in routes] == [(GATEWAY, "eth0")]
        a, b = topo.pods["pod-a"], topo.pods["pod-b"]
        assert a.ip != b.ip
        assert topo.allocated() == {a.ip: a.container_id, b.ip: b.container_id}

    def test_kdp_has_both_pods(self, topo):
        pods = kdp_pods(topo.socket)
        for pod in topo.pods.values():
            entry = pods.get(f"default/{pod.name}")
            assert entry is not None, pods
            assert entry["iface"] == pod.result["interfaces"][0]["name"]
            assert entry["ip"].split("/")[0] == pod.ip
            assert entry["mac"] == pod.result["interfaces"][1]["mac"]
            assert entry["source"] == "attach"

    def test_traffic_through_kdp(self, topo):
        a, b = topo.pods["pod-a"], topo.pods["pod-b"]
        assert_reaches(a, GATEWAY)
        assert_reaches(b, GATEWAY)
        assert_reaches(a, b.ip)
        assert_reaches(b, a.ip)
        assert_reaches(a, REMOTE_POD)  # routed: kdp's uplink to node B
        neigh = a.sh("ip", "neigh", "show", GATEWAY).stdout
        assert NODE["gateway_mac"] in neigh, neigh

    def test_tcp_between_pods(self, topo):
        """Many full-size segments: the pods' TX checksum offload must be off
        (kdp forwards frames as they are; a partial checksum would arrive)."""
        a, b = topo.pods["pod-a"], topo.pods["pod-b"]
        data = os.urandom(300_000)
        server = subprocess.Popen([*b.enter, "socat", "-T", "10", f"TCP-LISTEN:5101,bind={b.ip},reuseaddr", "PIPE"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        topo.servers.append(server)
        try:
            wait_for("socat listening in pod-b", lambda: ":5101 " in b.sh("ss", "-Hltn").stdout)
            proc = subprocess.run([*a.enter, "socat", "-t", "5", "-T", "10", "-", f"TCP:{b.ip}:5101"], input=data,
                                  capture_output=True, timeout=30)
        finally:
            # It holds pod-b's namespace, which a later test lets die.
            server.kill()
            server.wait(timeout=10)
        assert proc.returncode == 0, proc.stderr.decode(errors="replace")
        assert proc.stdout == data, f"echoed {len(proc.stdout)} of {len(data)} bytes"

    def test_check_succeeds(self, topo):
        for pod in topo.pods.values():
            rc, out, err = topo.cni(pod.env("CHECK"), topo.net_config(prevResult=pod.result))
            assert rc == 0 and out is None, f"CHECK {pod.name}: {out} {err}"

    def test_check_notices_a_missing_route(self, topo):
        a = topo.pods["pod-a"]
        a.sh("ip", "route", "del", "default")
        try:
            rc, out, err = topo.cni(a.env("CHECK"), topo.net_config(prevResult=a.result))
            assert rc != 0 and out["code"] == 104 and "default route" in out["msg"], (out, err)
        finally:
            a.sh("ip", "route", "add", "default", "via", GATEWAY, "dev", "eth0")
        rc, out, err = topo.cni(a.env("CHECK"), topo.net_config(prevResult=a.result))
        assert rc == 0, (out, err)

    def test_bad_config_and_environment_get_spec_codes(self, topo):
        spare = topo.workdir / "no-such-netns"
        run(["ip", "netns", "add", topo.prefix + "-pc"])
        topo.created_ns.append(topo.prefix + "-pc")
        c = Pod("pod-c", f"/var/run/netns/{topo.prefix}-pc", ["ip", "netns", "exec", topo.prefix + "-pc"])
        before = topo.allocated()
        cases = [
            ("missing subnet", c.env("ADD"), topo.net_config(subnet=None), 7, "subnet"),
            ("bad cniVersion", c.env("ADD"), topo.net_config(cniVersion="0.1.0"), 1, "cniVersion"),
            ("missing CNI_NETNS", c.env("ADD", CNI_NETNS=None), topo.net_config(), 4, "CNI_NETNS"),
            ("missing CNI_CONTAINERID", c.env("ADD", CNI_CONTAINERID=None), topo.net_config(), 4, "CNI_CONTAINERID"),
            ("not JSON", c.env("ADD"), "{\"cniVersion\": ", 6, "JSON"),
            ("ipam section", c.env("ADD"), topo.net_config(ipam={"type": "host-local"}), 2, "ipam"),
            ("no such netns", c.env("ADD", CNI_NETNS=str(spare)), topo.net_config(), 3, str(spare)),
            ("CHECK before ADD", c.env("CHECK"), topo.net_config(), 104, "no address"),
        ]
        for what, env, conf, code, needle in cases:
            rc, out, err = topo.cni(env, conf)
            assert rc != 0, what
            assert out is not None and out["code"] == code, f"{what}: {out} {err}"
            assert out["cniVersion"] == "1.0.0" and needle in out["msg"], f"{what}: {out}"
        assert topo.allocated() == before
        assert not link_exists("eth0", c.enter)
        assert not link_exists(expected_host_ifname(c.container_id, "eth0"))

    def test_gateway_other_than_kdps_is_undone(self, topo):
        """kdp accepts the pod but reports another gateway_ip: the plugin
        detaches it again and takes everything back (code 7). Runs while the
        store's next address is a pod address for kdp too (not its gateway)."""
        run(["ip", "netns", "add", topo.prefix + "-pg"])
        topo.created_ns.append(topo.prefix + "-pg")
        d = Pod("pod-g", f"/var/run/netns/{topo.prefix}-pg", ["ip", "netns", "exec", topo.prefix + "-pg"])
        rc, out, err = topo.cni(d.env("ADD"), topo.net_config(gateway="10.244.1.254"))
        assert rc != 0 and out["code"] == 7 and "gateway" in out["msg"], (out, err)
        assert "default/pod-g" not in kdp_pods(topo.socket)
        assert not link_exists(expected_host_ifname(d.container_id, "eth0"))
        assert not link_exists("eth0", d.enter)
        assert topo.allocated() == {p.ip: p.container_id for p in topo.pods.values()}

    def test_kdp_refusal_is_undone(self, topo):
        """A subnet that is not kdp's pod CIDR: kdp refuses the address; the
        plugin takes back the veth and the address and reports code 100."""
        run(["ip", "netns", "add", topo.prefix + "-pd"])
        topo.created_ns.append(topo.prefix + "-pd")
        d = Pod("pod-d", f"/var/run/netns/{topo.prefix}-pd", ["ip", "netns", "exec", topo.prefix + "-pd"])
        conf = topo.net_config(subnet="10.245.0.0/24", gateway="10.245.0.1")
        rc, out, err = topo.cni(d.env("ADD"), conf)
        assert rc != 0 and out["code"] == 100 and "pod.add" in out["msg"], (out, err)
        assert not link_exists(expected_host_ifname(d.container_id, "eth0"))
        assert not link_exists("eth0", d.enter)
        assert topo.allocated() == {p.ip: p.container_id for p in topo.pods.values()}
        assert not [f for f in (topo.data_dir / topo.network).iterdir() if f.name.startswith("10.245.")]
        assert "default/pod-d" not in kdp_pods(topo.socket)

    def test_concurrent_adds_get_distinct_addresses(self, topo):
        """Runtimes start sandboxes in parallel: ADDs at once, no address twice."""
        pods = []
        for i in range(4):
            ns = f"{topo.prefix}-c{i}"
            run(["ip", "netns", "add", ns])
            topo.created_ns.append(ns)
            pods.append(Pod(f"par-{i}", f"/var/run/netns/{ns}", ["ip", "netns", "exec", ns]))
        procs = [subprocess.Popen([KDP_CNI_BIN], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, env={"PATH": os.environ.get("PATH", ""), **p.env("ADD")})
                 for p in pods]
        for p, proc in zip(pods, procs):
            out, err = proc.communicate(json.dumps(topo.net_config()), timeout=60)
            assert proc.returncode == 0, f"ADD {p.name}: {out} {err}"
            p.result = json.loads(out)
        ips = [p.ip for p in pods] + [p.ip for p in topo.pods.values()]
        assert len(set(ips)) == len(ips), ips
        assert_reaches(pods[0], pods[3].ip)
        for p in pods:
            rc, out, err = topo.cni(p.env("DEL"), topo.net_config())
            assert rc == 0, f"DEL {p.name}: {out} {err}"
            assert not link_exists(p.result["interfaces"][0]["name"])
        assert set(topo.allocated()) == {p.ip for p in topo.pods.values()}

    def test_del_pod_a(self, topo):
        a = topo.pods["pod-a"]
        host_if = a.result["interfaces"][0]["name"]
        rc, out, err = topo.cni(a.env("DEL"), topo.net_config(prevResult=a.result))
        assert rc == 0 and out is None, (out, err)
        assert "default/pod-a" not in kdp_pods(topo.socket)
        assert not link_exists(host_if)
        assert not link_exists("eth0", a.enter)
        assert a.ip not in topo.allocated()
        # The other pod still has its way out.
        assert_reaches(topo.pods["pod-b"], GATEWAY)
        # CHECK now fails; a second DEL succeeds and changes nothing.
        rc, out, err = topo.cni(a.env("CHECK"), topo.net_config(prevResult=a.result))
        assert rc != 0 and out["code"] == 104, (out, err)
        rc, out, err = topo.cni(a.env("DEL"), topo.net_config())
        assert rc == 0 and out is None, (out, err)

    def test_del_pod_b_after_its_namespace_died(self, topo):
        """The sandbox's process is gone (node reboot, crash): DEL still
        detaches the pod from kdp and frees its address."""
        b = topo.pods["pod-b"]
        host_if = b.result["interfaces"][0]["name"]
        b.holder.kill()
        b.holder.wait(timeout=10)
        wait_for(f"{host_if} to go with its namespace", lambda: not link_exists(host_if), timeout=10)
        rc, out, err = topo.cni(b.env("DEL"), topo.net_config())
        assert rc == 0 and out is None, (out, err)
        assert "default/pod-b" not in kdp_pods(topo.socket)
        assert topo.allocated() == {}
        rc, out, err = topo.cni(b.env("CHECK"), topo.net_config())
        assert rc != 0 and out["code"] == 3, (out, err)  # the namespace is gone
        rc, out, err = topo.cni(b.env("DEL"), topo.net_config())
        assert rc == 0, (out, err)

    def test_kdp_stops_cleanly(self, topo):
        result = topo.stop_kdp()
        assert result.returncode == 0, result.stderr

    def test_add_without_kdp_is_try_again_and_undone(self, topo):
        """kdp not running (yet): code 11, and nothing left behind; DEL succeeds."""
        assert topo.kdp is None  # stopped by the test before
        e = Pod("pod-e", f"/var/run/netns/{topo.prefix}-pa", ["ip", "netns", "exec", topo.prefix + "-pa"])
        rc, out, err = topo.cni(e.env("ADD"), topo.net_config())
        assert rc != 0 and out["code"] == 11 and str(topo.socket) in out["msg"], (out, err)
        assert not link_exists(expected_host_ifname(e.container_id, "eth0"))
        assert not link_exists("eth0", e.enter)
        assert topo.allocated() == {}
        rc, out, err = topo.cni(e.env("DEL"), topo.net_config())
        assert rc == 0 and out is None, (out, err)
