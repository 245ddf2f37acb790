"""Shared helpers for kdp's Python test suites: node configs and kdp runs.

The kdp binary comes from $KDP_BIN (set by meson test), else build/dataplane/kdp.
"""
import json
import os
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
KDP_BIN = os.environ.get("KDP_BIN", str(REPO / "build" / "dataplane" / "kdp"))
KDPCTL_BIN = os.environ.get("KDPCTL_BIN", str(REPO / "build" / "tools" / "kdpctl"))
KDP_GEN_BIN = os.environ.get("KDP_GEN_BIN", str(REPO / "build" / "tools" / "kdp-gen"))

# Node A of the examples: the values tests address packets to.
NODE = {
    "name": "node-a",
    "node_ip": "192.168.50.10",
    "pod_cidr": "10.244.1.0/24",
    "gateway_ip": "10.244.1.1",
    "gateway_mac": "02:00:0a:f4:01:01",
    "cluster_cidr": "10.244.0.0/16",
}
UPLINK_MAC = "02:00:00:00:0a:01"


@dataclass
class Port:
    name: str
    role: str    # "uplink" | "pod" | "host"
    device: str  # DPDK device string
    mac: str | None = None


@dataclass
class NodeConfig:
    ports: list
    routes: list = field(default_factory=list)      # [(prefix, via)]
    neighbors: list = field(default_factory=list)   # [(ip, mac)]
    node: dict = field(default_factory=lambda: dict(NODE))
    memory_mb: int = 256
    max_flows: int = 16384  # the default 1M flows needs ~200 MB; tests need few
    lcores: tuple = (1,)
    extra: str = ""  # raw TOML appended (e.g. "[bridge]\naging_s = 5\n")
    conntrack: dict = field(default_factory=dict)  # more [conntrack] keys (timeouts: {"udp_s": 2})
    workers: dict = field(default_factory=dict)  # more [workers] keys ({"idle_sleep_us": 100})

    def to_toml(self) -> str:
        q = json.dumps  # TOML basic strings are JSON-compatible for our values
        out = ["[node]"] + [f"{k} = {q(v)}" for k, v in self.node.items()]
        out += ["[eal]", f'args = ["--no-huge", "-m", "{self.memory_mb}", "--no-pci"]',
                f"file_prefix = {q('kdp-test-' + uuid.uuid4().hex[:12])}"]
        out += ["[workers]", f"lcores = [{', '.join(str(c) for c in self.lcores)}]"]
        out += [f"{k} = {q(v)}" for k, v in self.workers.items()]
        out += ["[conntrack]", f"max_flows = {self.max_flows}"] + [f"{k} = {q(v)}" for k, v in self.conntrack.items()]
        for p in self.ports:
            out += ["[[port]]", f"name = {q(p.name)}", f"role = {q(p.role)}", f"device = {q(p.device)}"]
            if p.mac:
                out.append(f"mac = {q(p.mac)}")
        for prefix, via in self.routes:
            out += ["[[route]]", f"prefix = {q(prefix)}", f"via = {q(via)}"]
        for ip, mac in self.neighbors:
            out += ["[[neighbor]]", f"ip = {q(ip)}", f"mac = {q(mac)}"]
        return "\n".join(out) + "\n" + self.extra


@dataclass
class KdpRun:
    returncode: int
    stdout: str
    stderr: str
    stats: dict | None

    def drops(self) -> dict:
        return {k: v for k, v in self.stats["drops"].items() if v}

    def port(self, name: str) -> dict:
        return port_of(self.stats, name)


def control_socket_path(workdir: Path) -> Path:
    """A control socket of this run's own, so kdps of concurrent tests never
    meet at the default /run/kdp/kdp.sock (a Unix socket path is at most 107 bytes)."""
    path = workdir.resolve() / "kdp.sock"
    if len(str(path)) > 100:
        path = Path(tempfile.gettempdir()) / f"kdp-{uuid.uuid4().hex[:12]}.sock"
    return path


def config_text(config: NodeConfig, workdir: Path) -> str:
    """The config file kdp is started with: the config, plus a [control]
    socket in workdir unless the test set its own."""
    text = config.to_toml()
    if "[control]" not in text:
        text += ("" if text.endswith("\n") else "\n") + f"[control]\nsocket = {json.dumps(str(control_socket_path(workdir)))}\n"
    return text


def run_kdp(config: NodeConfig, workdir: Path, exit_when_idle_ms: int = 300, timeout: float = 60) -> KdpRun:
    """Runs kdp until its ports are idle (pcap replay) and returns its stats."""
    workdir.mkdir(parents=True, exist_ok=True)
    cfg_path = workdir / "node.toml"
    cfg_path.write_text(config_text(config, workdir))
    stats_path = workdir / "stats.json"
    proc = subprocess.run([KDP_BIN, "--config", str(cfg_path), "--exit-when-idle", str(exit_when_idle_ms),
                           "--stats-json", str(stats_path)], capture_output=True, text=True, timeout=timeout)
    stats = json.loads(stats_path.read_text()) if proc.returncode == 0 and stats_path.exists() else None
    return KdpRun(proc.returncode, proc.stdout, proc.stderr, stats)


def port_of(stats: dict, name: str) -> dict:
    """The counters of port `name` in kdp's stats (kdpctl --json stats or --stats-json)."""
    return next(p for p in stats["ports"] if p["name"] == name)


def start_kdp(config: NodeConfig, workdir: Path, env: dict | None = None,
              netns: str | None = None) -> tuple[subprocess.Popen, Path]:
    """Starts kdp in the background (live tests); stop it with stop_kdp().
    env: kdp's whole environment (default: this process's); netns: the
    network namespace kdp runs in (ip netns exec execs kdp in place, so the
    process is kdp's)."""
    workdir.mkdir(parents=True, exist_ok=True)
    cfg_path = workdir / "node.toml"
    cfg_path.write_text(config_text(config, workdir))
    stats_path = workdir / "stats.json"
    in_netns = ["ip", "netns", "exec", netns] if netns else []
    proc = subprocess.Popen([*in_netns, KDP_BIN, "--config", str(cfg_path), "--stats-json", str(stats_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    return proc, stats_path


def wait_for_control_socket(proc: subprocess.Popen, workdir: Path, timeout: float = 60) -> Path:
    """Waits until kdp started by start_kdp() listens on its control socket; returns its path."""
    sock = control_socket_path(workdir)
    deadline = time.monotonic() + timeout
    while not sock.exists():
        assert proc.poll() is None, f"kdp exited {proc.returncode}: {proc.stderr.read()[-2000:]}"
        assert time.monotonic() < deadline, "kdp did not start"
        time.sleep(0.1)
    return sock


def stop_kdp(proc: subprocess.Popen, stats_path: Path, timeout: float = 20) -> KdpRun:
    proc.terminate()
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    stats = json.loads(stats_path.read_text()) if stats_path.exists() else None
    return KdpRun(proc.returncode, out, err, stats)


def kdpctl(socket: Path, *args, timeout: float = 30, check: bool = True) -> subprocess.CompletedProcess:
    """Runs kdpctl against the control socket of a running kdp."""
    proc = subprocess.run([KDPCTL_BIN, "--socket", str(socket), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"kdpctl {' '.join(map(str, args))} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc


def kdp_stats(socket: Path) -> dict:
    """The counters of a running kdp (`kdpctl --json stats`), as --stats-json writes them."""
    return json.loads(kdpctl(socket, "--json", "stats").stdout)


def rss_kb(pid: int) -> int:
    """A process's resident set (VmRSS) in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for process {pid}")
