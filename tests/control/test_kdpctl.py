"""The control socket and kdpctl against a running kdp.

kdp runs over net_null ports that receive nothing (no-rx=1), with its control
socket in the test's own directory; each test drives it with the kdpctl
binary ($KDPCTL_BIN, else build/tools/kdpctl) and checks what kdp reports
and that rejected changes leave the state as it was.
"""
import json
import os
import socket
import stat
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
from kdp_harness import NODE, REPO, NodeConfig, Port, start_kdp, stop_kdp  # noqa: E402

KDPCTL_BIN = os.environ.get("KDPCTL_BIN", str(REPO / "build" / "tools" / "kdpctl"))
MAX_REQUEST = 64 << 20

WEB = '''[[service]]
name = "default/web"
type = "NodePort"
cluster_ip = "10.96.0.10"
  [[service.port]]
  protocol = "TCP"
  port = 80
  target_port = 8080
  node_port = 30080
  [[service.endpoint]]
  ip = "10.244.1.5"
  node = "node-a"
  [[service.endpoint]]
  ip = "10.244.2.5"
  node = "node-b"
'''

DNS = '''[[service]]
name = "kube-system/dns"
cluster_ip = "10.96.0.53"
  [[service.port]]
  protocol = "UDP"
  port = 53
  [[service.endpoint]]
  ip = "10.244.1.7"
  node = "node-a"
'''


class Kdp:
    def __init__(self, workdir: Path, ports=None, services=WEB):
        self.workdir = workdir
        self.sock = workdir / "ctl.sock"
        config = NodeConfig(
            ports=ports or [Port("up0", "uplink", "net_null0,no-rx=1"), Port("pod0", "pod", "net_null1,no-rx=1")],
            routes=[("10.244.2.0/24", "192.168.50.11")],
            neighbors=[("192.168.50.11", "02:00:00:00:0b:01")],
            node=dict(NODE, node_ip="192.168.50.10/24", service_cidr="10.96.0.0/12"),
            extra=services + f'[control]\nsocket = "{self.sock}"\n')
        self.proc, self.stats_path = start_kdp(config, workdir)
        self.text = (workdir / "node.toml").read_text()  # the running config, file prefix and all
        deadline = time.monotonic() + 30
        while not self.sock.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                run = stop_kdp(self.proc, self.stats_path)
                pytest.fail(f"kdp did not open its control socket (exit {run.returncode}):\n{run.stderr}")
            time.sleep(0.05)

    def ctl(self, *args, rc=0):
        proc = subprocess.run([KDPCTL_BIN, "--socket", str(self.sock), *args], capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == rc, f"kdpctl {' '.join(args)}: exit {proc.returncode}\n{proc.stdout}{proc.stderr}"
        return proc

    def json(self, *args):
        return json.loads(self.ctl("--json", *args).stdout)

    def write(self, name: str, text: str) -> Path:
        path = self.workdir / name
        path.write_text(text)
        return path

    def state(self):
        return {what: self.json(what, "list") for what in ("service", "route", "neighbor")}


@pytest.fixture
def kdp(tmp_path):
    node = Kdp(tmp_path)
    yield node
    run = stop_kdp(node.proc, node.stats_path)
    assert run.returncode == 0, run.stderr
    assert not node.sock.exists(), "kdp removes its control socket on exit"


def test_socket_is_private(kdp):
    mode = os.stat(kdp.sock).st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o600


def test_stats(kdp):
    stats = kdp.json("stats")
    for key in ("node", "ports", "stages", "drops", "icmp_errors", "workers", "conntrack", "services", "control"):
        assert key in stats, key
    assert stats["node"] == "node-a"
    assert [p["name"] for p in stats["ports"]] == ["up0", "pod0"]
    assert stats["services"] == 2  # cluster IP and node port
    human = kdp.ctl("stats").stdout
    assert "node node-a" in human and "up0" in human
    prom = kdp.ctl("stats", "--prometheus").stdout
    for line in ('kdp_port_rx_packets_total{port="up0",role="uplink"} 0', 'kdp_drops_total{reason="no_route"} 0',
                 "kdp_conntrack_flows 0", "kdp_conntrack_capacity 16384", "kdp_service_frontends 2"):
        assert line in prom.splitlines(), line
    assert "# TYPE kdp_drops_total counter" in prom


def test_lists(kdp):
    ports = kdp.json("port", "list")
    assert [(p["name"], p["role"]) for p in ports] == [("up0", "uplink"), ("pod0", "pod")]
    routes = {r["prefix"]: r for r in kdp.json("route", "list")}
    assert routes["10.244.1.0/24"]["kind"] == "pod-network"
    assert routes["10.244.2.0/24"]["via"] == "192.168.50.11" and routes["10.244.2.0/24"]["port"] == "up0"
    neighbors = kdp.json("neighbor", "list")
    assert {"ip": "192.168.50.11", "mac": "02:00:00:00:0b:01", "state": "static", "port": None} in neighbors
    assert kdp.json("fdb", "list") == []
    for args in (("port", "list"), ("route", "list"), ("neighbor", "list"), ("fdb", "list")):
        assert kdp.ctl(*args).stdout.split()[0] in ("NAME", "PREFIX", "IP", "MAC")


def test_service_list(kdp):
    entries = {e["key"]: e for e in kdp.json("service", "list")}
    assert set(entries) == {"10.96.0.10:80/TCP", "192.168.50.10:30080/TCP"}
    web = entries["10.96.0.10:80/TCP"]
    assert web["service"] == "default/web" and web["kind"] == "cluster IP"
    assert {(b["ip"], b["port"]) for b in web["backends"]} == {("10.244.1.5", 8080), ("10.244.2.5", 8080)}
    human = kdp.ctl("service", "list").stdout
    assert "default/web" in human and "10.96.0.10:80/TCP" in human and "10.244.1.5:8080*" in human
    # --json may come after the subcommand too.
    assert json.loads(kdp.ctl("service", "list", "--json").stdout) == list(entries.values())


def test_apply_adds_a_service(kdp):
    before = kdp.state()
    path = kdp.write("new.toml", kdp.text + DNS)
    diff = kdp.ctl("diff", "-f", str(path)).stdout
    assert "+ 10.96.0.53:53/UDP kube-system/dns" in diff and "dry run" in diff
    assert kdp.state() == before, "diff changes nothing"

    result = json.loads(kdp.ctl("--json", "apply", "-f", str(path)).stdout)
    assert result["services"] == {"added": ["10.96.0.53:53/UDP kube-system/dns"], "changed": [], "removed": []}
    assert result["dry_run"] is False
    keys = [e["key"] for e in kdp.json("service", "list")]
    assert "10.96.0.53:53/UDP" in keys
    assert kdp.json("stats")["services"] == 3

    # Applying the original again removes it.
    result = json.loads(kdp.ctl("--json", "apply", "-f", str(kdp.write("orig.toml", kdp.text))).stdout)
    assert result["services"]["removed"] == ["10.96.0.53:53/UDP"]
    assert kdp.state() == before


def test_apply_from_a_pipe_and_stdin(kdp):
    # `kdpctl apply -f <(generate)` reads a pipe, which has no size to ask for.
    before = kdp.state()
    proc = subprocess.run(["bash", "-c", 'exec "$0" --socket "$1" --json apply -f <(cat "$2")', KDPCTL_BIN,
                           str(kdp.sock), str(kdp.write("dns.toml", kdp.text + DNS))],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["services"]["added"] == ["10.96.0.53:53/UDP kube-system/dns"]
    proc = subprocess.run([KDPCTL_BIN, "--socket", str(kdp.sock), "--json", "apply", "-f", "-"], input=kdp.text,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["services"]["removed"] == ["10.96.0.53:53/UDP"]
    assert kdp.state() == before


def test_apply_changes_routes_and_neighbors(kdp):
    text = kdp.text.replace('via = "192.168.50.11"', 'via = "192.168.50.12"')
    text += '[[neighbor]]\nip = "192.168.50.12"\nmac = "02:00:00:00:0b:02"\n'
    out = kdp.ctl("apply", "-f", str(kdp.write("new.toml", text))).stdout
    assert "routes: 0 added, 1 changed, 0 removed" in out
    routes = {r["prefix"]: r for r in kdp.json("route", "list")}
    assert routes["10.244.2.0/24"]["via"] == "192.168.50.12"
    neighbors = {n["ip"]: n for n in kdp.json("neighbor", "list")}
    assert neighbors["192.168.50.12"]["state"] == "static"


def test_apply_bad_file_is_rejected(kdp):
    before = kdp.state()
    text = kdp.text + DNS.replace('"10.96.0.53"', '"10.96.0.300"')
    line = text.splitlines().index('cluster_ip = "10.96.0.300"') + 1
    path = kdp.write("bad.toml", text)
    err = kdp.ctl("apply", "-f", str(path), rc=1).stderr
    assert f'{path}:{line}: service[1].cluster_ip: not an IPv4 address: "10.96.0.300"' in err
    # An unknown key names the key too.
    err = kdp.ctl("apply", "-f", str(kdp.write("typo.toml", kdp.text + "[bridge]\nagin_s = 5\n")), rc=1).stderr
    assert "bridge.agin_s: unknown key" in err
    assert kdp.state() == before


def test_apply_of_node_change_is_rejected(kdp):
    before = kdp.state()
    text = kdp.text.replace('pod_cidr = "10.244.1.0/24"', 'pod_cidr = "10.244.0.0/23"') + DNS
    err = kdp.ctl("apply", "-f", str(kdp.write("cidr.toml", text)), rc=1).stderr
    assert "node.pod_cidr: differs from the running configuration" in err
    text = kdp.text.replace('lcores = [1]', 'lcores = [1]\nidle_sleep_us = 10')
    err = kdp.ctl("apply", "-f", str(kdp.write("workers.toml", text)), rc=1).stderr
    assert "workers.idle_sleep_us: differs from the running configuration" in err
    assert kdp.state() == before


def test_endpoint_add_and_del(kdp):
    def backends():
        entry = next(e for e in kdp.json("service", "list") if e["key"] == "10.96.0.10:80/TCP")
        return sorted(b["ip"] for b in entry["backends"])

    kdp.ctl("endpoint", "add", "--service", "default/web", "--ip", "10.244.1.9", "--node", "node-a")
    assert backends() == ["10.244.1.5", "10.244.1.9", "10.244.2.5"]
    kdp.ctl("endpoint", "del", "--service", "default/web", "--ip", "10.244.1.5")
    assert backends() == ["10.244.1.9", "10.244.2.5"]
    err = kdp.ctl("endpoint", "del", "--service", "default/web", "--ip", "10.244.1.5", rc=1).stderr
    assert "10.244.1.5 is not an endpoint" in err
    err = kdp.ctl("endpoint", "add", "--service", "default/nope", "--ip", "10.244.1.9", rc=1).stderr
    assert 'no service is named "default/nope"' in err
    err = kdp.ctl("endpoint", "add", "--service", "default/web", "--ip", "10.96.0.10", rc=1).stderr
    assert "endpoint.ip: 10.96.0.10 is inside node.service_cidr" in err
    assert backends() == ["10.244.1.9", "10.244.2.5"]


def test_conntrack(kdp):
    assert kdp.json("conntrack", "count") == {"flows": 0, "capacity": 16384}
    assert kdp.ctl("conntrack", "count").stdout.strip() == "0 flows (capacity 16384)"
    assert kdp.json("conntrack", "list", "--limit", "5") == {"flows": 0, "matched": 0, "shown": 0, "entries": []}
    assert kdp.json("conntrack", "list", "--service", "default/web", "--dst", "10.244.1.5")["matched"] == 0
    err = kdp.ctl("conntrack", "list", "--service", "default/nope", rc=1).stderr
    assert 'no service is named "default/nope"' in err
    assert kdp.json("conntrack", "flush", "--dst", "10.96.0.10") == {"flushed": 0}
    assert kdp.json("conntrack", "flush", "--service", "default/web") == {"flushed": 0}
    err = kdp.ctl("conntrack", "flush", "--service", "default/nope", rc=1).stderr
    assert 'no service is named "default/nope"' in err


def test_service_get_and_del(kdp):
    before = kdp.state()
    web = kdp.json("service", "get", "default/web")
    assert sorted(e["key"] for e in web) == ["10.96.0.10:80/TCP", "192.168.50.10:30080/TCP"]
    assert "default/web" in kdp.ctl("service", "get", "default/web").stdout
    err = kdp.ctl("service", "get", "default/nope", rc=1).stderr
    assert 'args.service: no service is named "default/nope"' in err
    kdp.ctl("service", "get", "no-namespace", rc=2)  # checked by kdpctl before it asks
    dry = kdp.json("service", "del", "default/web", "--dry-run")
    assert dry["dry_run"] is True and len(dry["services"]["removed"]) == 2
    assert kdp.state() == before
    err = kdp.ctl("service", "del", "default/nope", rc=1).stderr
    assert 'no service is named "default/nope"' in err
    assert kdp.state() == before
    done = kdp.json("service", "del", "default/web")
    assert sorted(done["services"]["removed"]) == ["10.96.0.10:80/TCP", "192.168.50.10:30080/TCP"]
    assert done["timing"]["apply_ms"] >= 0 and done["timing"]["live_ms"] >= 0 and done["timing"]["parse_ms"] >= 0
    assert kdp.json("service", "list") == []
    kdp.ctl("service", "get", "default/web", rc=1)


def test_route_add_and_del(kdp):
    def static_routes():
        return sorted((r["prefix"], r["via"]) for r in kdp.json("route", "list") if r["kind"] == "gateway")

    assert static_routes() == [("10.244.2.0/24", "192.168.50.11")]
    before = kdp.state()
    human = kdp.ctl("route", "add", "10.250.0.0/16", "--via", "192.168.50.11").stdout
    assert "+ 10.250.0.0/16 via 192.168.50.11" in human and "live in all workers" in human
    assert static_routes() == [("10.244.2.0/24", "192.168.50.11"), ("10.250.0.0/16", "192.168.50.11")]
    # Rejected whole, naming the field; the table stays as it was.
    middle = kdp.state()
    for args, message in [
            (["10.244.1.128/25", "--via", "192.168.50.11"], "route.prefix: 10.244.1.128/25 lies inside node.pod_cidr"),
            (["10.250.0.0/16", "--via", "192.168.50.12"], "route.prefix: 10.250.0.0/16 is already routed"),
            (["10.251.0.0/16", "--via", "192.168.50.10"], "route.via: 192.168.50.10 is this node's own address"),
            (["10.251.0.0/16", "--via", "192.168.50.11", "--port", "pod0"], "route.port: \"pod0\" is a pod port"),
            (["10.251.0.0/16", "--via", "192.168.50.11", "--port", "nope"], "route.port: no [[port]] is named")]:
        err = kdp.ctl("route", "add", *args, rc=1).stderr
        assert message in err, err
    kdp.ctl("route", "add", "10.251.0.0/33", "--via", "192.168.50.11", rc=2)  # not a prefix: kdpctl refuses
    kdp.ctl("route", "add", "10.251.0.0/16", "--via", "not-an-ip", rc=2)
    err = kdp.ctl("route", "del", "10.99.0.0/16", rc=1).stderr
    assert "route.prefix: no route for 10.99.0.0/16" in err
    assert kdp.state() == middle
    kdp.ctl("route", "del", "10.250.0.0/16")
    assert static_routes() == [("10.244.2.0/24", "192.168.50.11")]
    assert kdp.state() == before


def test_snat_list(kdp):
    snat = kdp.json("snat", "list")
    assert snat["in_use"] == 0 and snat["entries"] == []
    [share] = snat["ports"]  # one worker holds the whole [nat] snat_ports range
    assert share["worker"] == 0 and share["low"] < share["high"]
    assert "worker 0: ports" in kdp.ctl("snat", "list").stdout


def test_update_latency_is_reported(kdp):
    before = kdp.json("stats")["updates"]
    kdp.ctl("endpoint", "add", "--service", "default/web", "--ip", "10.244.1.9")
    kdp.ctl("endpoint", "del", "--service", "default/web", "--ip", "10.244.1.77", rc=1)
    after = kdp.json("stats")["updates"]
    assert after["applied"] == before["applied"] + 1
    assert after["failed"] == before["failed"] + 1
    assert after["live_seconds"]["count"] == before["live_seconds"]["count"] + 1
    assert after["apply_seconds"]["buckets"][-1][1] == after["apply_seconds"]["count"]
    prom = kdp.ctl("stats", "--prometheus").stdout.splitlines()
    assert "# TYPE kdp_update_live_seconds histogram" in prom
    assert f'kdp_update_apply_seconds_count {after["apply_seconds"]["count"]}' in prom
    assert f'kdp_update_failures_total {after["failed"]}' in prom


def test_usage_and_connection_errors(kdp, tmp_path):
    kdp.ctl("conntrack", "list", "--limit", "0", rc=2)
    kdp.ctl("conntrack", "flush", "--dst", "not-an-ip", rc=2)
    kdp.ctl("frobnicate", rc=2)
    kdp.ctl("apply", "-f", str(tmp_path / "missing.toml"), rc=2)
    proc = subprocess.run([KDPCTL_BIN, "--socket", str(tmp_path / "none.sock"), "stats"], capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 2 and "cannot connect" in proc.stderr


def raw_exchange(sock_path: Path, payload: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        s.connect(str(sock_path))
        try:
            s.sendall(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # kdp may close before reading it all; its reply is still there
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


def test_raw_protocol(kdp):
    replies = raw_exchange(kdp.sock, b'{"verb": "conntrack.count"}\n')
    assert json.loads(replies) == {"ok": True, "result": {"flows": 0, "capacity": 16384}}
    assert json.loads(raw_exchange(kdp.sock, b'{"verb": "nope"}\n')) == {"ok": False, "error": 'unknown verb "nope"'}
    assert json.loads(raw_exchange(kdp.sock, b"garbage\n"))["error"] == "request is not valid JSON"
    big = raw_exchange(kdp.sock, b'{"verb": "apply", "args": {"toml": "' + b"x" * MAX_REQUEST + b'"}}\n')
    assert json.loads(big) == {"ok": False, "error": f"request larger than {MAX_REQUEST} bytes"}
    # Still serving afterwards.
    assert kdp.json("conntrack", "count")["flows"] == 0


def exchange_lines(sock_path: Path, data: bytes, shut_write: bool = False) -> list:
    """Sends data, then reads reply lines until kdp closes the connection or 2 s pass without one."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(2)
        s.connect(str(sock_path))
        s.sendall(data)
        if shut_write:
            s.shutdown(socket.SHUT_WR)
        received = b""
        try:
            while chunk := s.recv(65536):
                received += chunk
        except socket.timeout:
            pass
        return [json.loads(line) for line in received.splitlines()]


def test_raw_payloads(kdp):
    """apply's document as raw bytes after the line: nothing escaped, and the
    connection goes on with the next request."""
    toml = kdp.text.encode()
    line = json.dumps({"verb": "apply", "args": {"dry_run": True, "source": "raw.toml"},
                       "payload": {"arg": "toml", "bytes": len(toml)}}).encode() + b"\n"
    replies = exchange_lines(kdp.sock, line + toml + b'{"verb": "conntrack.count"}\n', shut_write=True)
    assert [r["ok"] for r in replies] == [True, True], replies
    assert replies[0]["result"]["dry_run"] is True and replies[1]["result"]["flows"] == 0

    # A refused line that announced a payload: an error, then the connection ends
    # (its bytes would otherwise be read as requests).
    bad = json.dumps({"verb": "apply", "args": {"dry_run": "yes"},
                      "payload": {"arg": "toml", "bytes": len(toml)}}).encode() + b"\n"
    replies = exchange_lines(kdp.sock, bad + toml + b'{"verb": "conntrack.count"}\n')
    assert replies == [{"ok": False, "error": "apply: args.dry_run: must be true or false"}]

    # A connection that ends before its payload has arrived.
    short = json.dumps({"verb": "apply", "args": {}, "payload": {"arg": "toml", "bytes": 100}}).encode() + b"\n"
    replies = exchange_lines(kdp.sock, short + b"[node]\n", shut_write=True)
    assert replies == [{"ok": False, "error": "apply: payload toml cut short: 7 of 100 bytes arrived"}]
    assert kdp.json("conntrack", "count")["flows"] == 0


def test_apply_of_malformed_json_is_rejected(kdp):
    before = kdp.state()
    for text, error in (('{"kind": "List",\n "items": [', "apply: args.k8s: not valid JSON: parse error at line 2, "
                                                          "column 12: syntax error while parsing value - unexpected "
                                                          "end of input"),
                        ('{"a": ' * 600 + "1" + "}" * 600, "apply: args.k8s: nested deeper than 128 levels")):
        err = kdp.ctl("apply", "-f", str(kdp.write("bad.json", text)), rc=1).stderr
        assert error in err, err
    assert kdp.state() == before


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to connect as another user")
def test_peer_credentials(kdp):
    # Let the file permissions pass, so SO_PEERCRED is what refuses: the socket
    # is opened to all and linked where another user can reach it (pytest's
    # directories are private).
    link = Path("/tmp") / f"kdp-peer-{os.getpid()}-{time.monotonic_ns()}.sock"
    os.link(kdp.sock, link)
    os.chmod(kdp.sock, 0o666)
    try:
        code = ("import os, socket, sys\n"
                "os.setgid(65534); os.setuid(65534)\n"
                "s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])\n"
                # kdp answers the refusal at once and closes: the request may
                # meet a closed socket, the answer is still there to read.
                "try:\n    s.sendall(b'{\"verb\": \"stats\"}\\n')\nexcept BrokenPipeError:\n    pass\n"
                "print(s.recv(4096).decode())\n")
        proc = subprocess.run([sys.executable, "-c", code, str(link)], capture_output=True, text=True, timeout=30)
        assert proc.returncode == 0, proc.stderr
        reply = json.loads(proc.stdout)
        assert reply["ok"] is False and "permission denied" in reply["error"]
    finally:
        os.chmod(kdp.sock, 0o600)
        link.unlink()


def write_pcap(path: Path, frames) -> None:
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for i, frame in enumerate(frames):
            data = bytes(frame)
            f.write(struct.pack("<IIII", 1, i, len(data), len(data)) + data)


def test_apply_flushes_stale_udp_flows_only(tmp_path):
    """A pod's UDP flow to a DNS backend that apply removes is flushed
    (kube-proxy's stale-UDP cleanup); its TCP connection to another Service
    and a UDP flow whose backend stays are kept."""
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.l2 import Ether

    pod_ip, pod_mac = "10.244.1.5", "0a:58:0a:f4:01:05"
    dns = DNS.replace('ip = "10.244.1.7"\n  node = "node-a"', 'ip = "10.244.2.7"\n  node = "node-b"')
    dns2 = dns.replace('"kube-system/dns"', '"kube-system/dns2"').replace('"10.96.0.53"', '"10.96.0.54"')
    frames = [Ether(src=pod_mac, dst=NODE["gateway_mac"]) / IP(src=pod_ip, dst=dst) / l4 for dst, l4 in (
        ("10.96.0.53", UDP(sport=5000, dport=53) / b"query"),
        ("10.96.0.54", UDP(sport=5001, dport=53) / b"query"),
        ("10.96.0.10", TCP(sport=40000, dport=80, flags="S")))]
    ports = []
    for i, (name, role) in enumerate((("pod0", "pod"), ("up0", "uplink"))):
        rx = tmp_path / f"{name}.rx.pcap"
        write_pcap(rx, frames if name == "pod0" else [])
        ports.append(Port(name, role, f"net_pcap{i},rx_pcap={rx},tx_pcap={tmp_path / (name + '.tx.pcap')}"))
    web = WEB.replace('  [[service.endpoint]]\n  ip = "10.244.1.5"\n  node = "node-a"\n', "")  # the client is not a backend
    node = Kdp(tmp_path, ports=ports, services=web + dns + dns2)
    try:
        deadline = time.monotonic() + 20
        while node.json("conntrack", "count")["flows"] < 3:
            assert time.monotonic() < deadline, node.json("stats")
            time.sleep(0.05)
        flows = node.json("conntrack", "list")["entries"]
        assert {(f["protocol"], f["reply"]["src"]) for f in flows} == {
            ("udp", "10.244.2.7"), ("tcp", "10.244.2.5")}
        assert all("dnat" in f["flags"] for f in flows)

        # dns moves to another backend; web loses its only one; dns2 is unchanged.
        text = node.text.replace(dns, dns.replace('"10.244.2.7"', '"10.244.2.8"'))
        text = text.replace('  [[service.endpoint]]\n  ip = "10.244.2.5"\n  node = "node-b"\n', "")
        assert text.count("10.244.2.7") == 1 and "10.244.2.5" not in text
        dry = json.loads(node.ctl("--json", "diff", "-f", str(node.write("new.toml", text))).stdout)
        assert dry["udp_flows_flushed"] == 1 and node.json("conntrack", "count")["flows"] == 3
        result = json.loads(node.ctl("--json", "apply", "-f", str(node.write("new.toml", text))).stdout)
        assert result["udp_flows_flushed"] == 1
        assert sorted(result["services"]["changed"]) == ["10.96.0.10:80/TCP default/web",
                                                         "10.96.0.53:53/UDP kube-system/dns",
                                                         "192.168.50.10:30080/TCP default/web"]
        left = {(f["protocol"], f["orig"]["dst"]) for f in node.json("conntrack", "list")["entries"]}
        assert left == {("udp", "10.96.0.54"), ("tcp", "10.96.0.10")}, "TCP is kept; an unchanged backend's UDP too"

        assert node.json("conntrack", "flush", "--service", "kube-system/dns2") == {"flushed": 1}
        assert node.json("conntrack", "flush", "--dst", "10.244.2.5") == {"flushed": 1}  # by backend address
        assert node.json("conntrack", "count")["flows"] == 0
    finally:
        run = stop_kdp(node.proc, node.stats_path)
        assert run.returncode == 0, run.stderr
