"""Exhaustion through the live path: kdp on net_af_packet veths to real pods
(test_live.py's topology: pod-a, pod-b on the bridge, node-b on the uplink),
each resource pushed past its end by a generator while real kernel
connections keep going. Each test checks that kdp keeps forwarding what it
already carries, counts what it refuses under a named reason, keeps its
memory bounded, and is back to its baseline once the pressure stops.

* SYN flood to a ClusterIP Service with a small conntrack table: established
  connections keep carrying data, embryonic flows are evicted and counted.
* mbuf pool near exhaustion: packets held for unresolved neighbours take the
  whole (small) pool; the shortage is counted, no mbuf leaks.
* neighbour table full: existing neighbours keep working, a new one is
  refused and its packets counted, and learning resumes when entries expire.
"""
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

# test_live.py's topology and helpers (importing it puts tests/lib on sys.path).
from test_live import (GATEWAY, NODE_IP, POD_A, POD_B, REMOTE_POD, SERVER_PYTHON, Topology,  # noqa: F401
                       assert_ping, ping, tools_present, wait_for)
from kdp_harness import (KDP_GEN_BIN, NODE, UPLINK_MAC, control_socket_path, kdp_stats, kdpctl, port_of,  # noqa: E402
                         rss_kb)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="live tests need root for network namespaces")

VIP, VIP_PORT, BACKEND_PORT = "10.96.0.10", 80, 8080
# RSS growth a flood may cause: ASan's allocator (quarantine, shadow memory)
# grows where the plain build's does not.
SANITIZED = os.environ.get("KDP_SANITIZED") == "1"
RSS_BOUND_KB = 32768 if SANITIZED else 4096

SERVICE_TOML = f"""
[[service]]
name = "default/echo"
type = "ClusterIP"
cluster_ip = "{VIP}"
  [[service.port]]
  protocol = "TCP"
  port = {VIP_PORT}
  target_port = {BACKEND_PORT}
  [[service.endpoint]]
  ip = "{POD_B}"
  node = "node-a"
"""

# A threaded TCP echo server (pod-b's backend).
ECHO_SERVER = """
import socket, sys, threading
def serve(c):
    with c:
        while True:
            data = c.recv(65536)
            if not data:
                return
            c.sendall(data)
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(128)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""

# Opens N connections to HOST:PORT, says "ready", then sends a line on each
# every 0.1 s and waits for its echo (5 s at most: a stalled connection
# fails) until the file STOP exists (at least one round); prints what
# happened as JSON.
ECHO_CLIENT = """
import json, os, socket, sys, time
host, port, n, stop = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
conns = [socket.create_connection((host, port), timeout=5) for _ in range(n)]
print("ready", flush=True)
rounds = failures = 0
errors, slowest = [], 0.0
while True:
    start = time.monotonic()
    for i, c in enumerate(conns):
        msg = f"connection {i} round {rounds}\\n".encode()
        try:
            c.sendall(msg)
            got = b""
            while len(got) < len(msg):
                chunk = c.recv(len(msg) - len(got))
                if not chunk:
                    raise ConnectionError("closed by peer")
                got += chunk
            if got != msg:
                raise ValueError(f"echo differs: {got!r}")
        except Exception as e:
            failures += 1
            errors.append(f"connection {i} round {rounds}: {e!r}")
    slowest = max(slowest, time.monotonic() - start)
    rounds += 1
    if os.path.exists(stop):
        break
    time.sleep(0.1)
print(json.dumps({"rounds": rounds, "failures": failures, "errors": errors[:5], "slowest_round_s": slowest}),
      flush=True)
"""


class ExhaustionTopology(Topology):
    """test_live's topology; the test sets what its kdp differs in."""

    def __init__(self, workdir: Path, tune):
        super().__init__(workdir)
        self.tune = tune

    def config(self):
        cfg = super().config()
        self.tune(cfg)
        return cfg

    @property
    def sock(self) -> Path:
        return control_socket_path(self.workdir)

    def stats(self) -> dict:
        self.assert_kdp_alive()
        return kdp_stats(self.sock)

    def rss_kb(self) -> int:
        return rss_kb(self.kdp.pid)

    def gen(self, host, *args, timeout=120) -> dict:
        """kdp-gen on host's eth0 (net_af_packet beside the kernel's own use of it); its JSON summary."""
        # On CPU 0: kdp's worker has CPU 1.
        proc = self.sh(host, KDP_GEN_BIN, "--port", "net_af_packet0,iface=eth0", "--main-cpu", "0", "--lcores", "0",
                       "--drain-ms", "100", *map(str, args),
                       "--json", "--", "--no-huge", "-m", "256", "--no-pci", timeout=timeout)
        return json.loads(proc.stdout)


@pytest.fixture
def make_topo(tmp_path):
    made = []

    def make(tune):
        topo = ExhaustionTopology(tmp_path, tune)
        made.append(topo)
        topo.create()
        topo.start_kdp()
        return topo

    yield make
    for topo in made:
        topo.cleanup()


def delta(after: dict, before: dict, *path) -> int:
    a, b = after, before
    for key in path:
        a, b = a[key], b[key]
    return a - b


def echo_client(topo, n, stop: Path):
    """Starts ECHO_CLIENT in pod-a against the VIP; returns once its connections are open."""
    proc = subprocess.Popen(topo.nsx("pod-a", SERVER_PYTHON, "-c", ECHO_CLIENT, VIP, str(VIP_PORT), str(n), str(stop)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if line.strip() != "ready":
        proc.kill()
        raise AssertionError(f"echo client did not connect: {line}{proc.communicate()[1]}")
    return proc


def echo_result(proc, timeout) -> dict:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"echo client exited {proc.returncode}: {err}"
    return json.loads(out.strip().splitlines()[-1])


# ---------------------------------------------------------------------------
# SYN flood to a Service

SYN_TIMEOUT_S = 2
FLOOD_RATE, FLOOD_SECONDS = 20000, 5
ESTABLISHED = 4


def test_syn_flood_keeps_established_connections(make_topo):
    def tune(cfg):
        cfg.node["service_cidr"] = "10.96.0.0/12"
        cfg.max_flows = 1024  # the smallest table: the flood fills it within the first tenth of a second
        cfg.conntrack = {"tcp_syn_sent_s": SYN_TIMEOUT_S, "tcp_syn_recv_s": SYN_TIMEOUT_S}
        cfg.extra = SERVICE_TOML

    topo = make_topo(tune)
    topo.start_server("pod-b", [SERVER_PYTHON, "-c", ECHO_SERVER, POD_B, str(BACKEND_PORT)], BACKEND_PORT,
                      topo.workdir / "echo-server.log")
    # Connections open and carrying data before, during and after the flood.
    stop = topo.workdir / "stop-echo"
    client = echo_client(topo, ESTABLISHED, stop)
    wait_for("the established flows", lambda: topo.stats()["conntrack"]["flows"] == ESTABLISHED)
    before = topo.stats()
    rss_before = topo.rss_kb()

    # From outside the cluster (node B's side of the uplink): SYNs from 254
    # spoofed sources and every source port, each a new connection, none ever
    # completed (kdp masquerades them towards pod-b, whose SYN-ACKs go
    # nowhere: the sources have no route).
    flood = topo.gen("node-b", "--proto", "tcp-syn", "--dst-mac", UPLINK_MAC, "--src-ip",
                     "198.51.100.1-198.51.100.254", "--dst", f"{VIP}:{VIP_PORT}", "--flows", 1,
                     "--new-flow-ratio", 1.0, "--rate", FLOOD_RATE, "--duration", FLOOD_SECONDS)
    sent = flood["total"]["tx_packets"]
    during = topo.stats()
    rss_during = topo.rss_kb()
    assert sent >= FLOOD_RATE * FLOOD_SECONDS * 0.9, flood["total"]
    ct = during["conntrack"]
    assert delta(during, before, "conntrack", "full") > 0 and delta(during, before, "conntrack", "evicted") > 0, ct
    assert ct["flows"] <= ct["capacity"] == 1024, ct
    # Every SYN kdp took in became a flow or was dropped under a named reason.
    # (What the veths lose before kdp, the kernel's backlog on a shared CPU,
    # kdp never sees: net_af_packet reports no rx_missed for it.)
    refused = sum(delta(during, before, "drops", r) for r in ("conntrack_full", "snat_ports_exhausted"))
    made = delta(during, before, "conntrack", "created")
    took_in = port_of(during, "up0")["rx"] - port_of(before, "up0")["rx"]
    drops = {k: v - before["drops"][k] for k, v in during["drops"].items() if v != before["drops"][k]}
    assert refused > 0 and drops["conntrack_full"] > 0, drops
    assert took_in >= 10 * 1024, (sent, took_in)  # ten tables' worth reached kdp
    assert made + refused == took_in, (sent, took_in, made, refused, drops, during["conntrack"])

    # The flood over, its embryonic flows time out: back to the established ones.
    wait_for("conntrack back to its baseline", lambda: topo.stats()["conntrack"]["flows"] == ESTABLISHED,
             timeout=SYN_TIMEOUT_S + 20, interval=0.5)
    rss_after = topo.rss_kb()
    # The established connections carried data all along and still do.
    time.sleep(1)
    stop.touch()
    kept = echo_result(client, timeout=30)
    assert kept["failures"] == 0, f"established connections failed: {kept}"
    assert kept["rounds"] >= 20 and kept["slowest_round_s"] < 3, kept
    # New connections open again.
    fresh = echo_result(echo_client(topo, ESTABLISHED, stop), timeout=30)
    assert fresh["failures"] == 0 and fresh["rounds"] == 1, fresh

    # Memory: the table is allocated up front; a flood only reuses it.
    assert max(rss_during, rss_after) - rss_before < RSS_BOUND_KB, (rss_before, rss_during, rss_after)
    after = topo.stats()
    result = topo.stop_kdp()
    assert result.returncode == 0, result.stderr[-3000:]
    print(f"syn flood: {sent} SYNs in {FLOOD_SECONDS} s, {took_in} reached kdp, {made} flows made, {refused} refused, "
          f"{delta(after, before, 'conntrack', 'evicted')} evicted; {ESTABLISHED} established connections, "
          f"{kept['rounds']} rounds, 0 failed; RSS {rss_before} -> {rss_after} KiB")


# ---------------------------------------------------------------------------
# mbuf pool near exhaustion

POOL_SIZE = 1024  # the smallest pool the config accepts
RETRY_MS, RETRIES = 300, 3
# Addresses nobody answers ARP for: 100 on the uplink subnet, 100 in the pod
# CIDR. Each could hold hold_packets (16) mbufs for RETRIES x RETRY_MS: 3,200
# in all, three times the pool; kdp holds at most a quarter of the pool.
HOLD_BUDGET = POOL_SIZE // 4
# Beyond the held packets: bursts in flight and the per-lcore mempool caches,
# plus the ARP requests waiting in the worker's inject ring (one per pending
# resolution and retry, counted at each sample); a sanitizer build's slower
# worker lets many more queue there (1,024 deep), so there only the pool's
# own size bounds them.
IN_FLIGHT = 2 * 32 + 3 * 48 if not SANITIZED else POOL_SIZE
UNRESOLVED = [f"192.168.50.{i}" for i in range(100, 200)] + [f"10.244.1.{i}" for i in range(100, 200)]


def test_mbuf_pool_pressure_bounded_and_recovers(make_topo):
    def tune(cfg):
        cfg.extra = (f"[mbufs]\npool_size = {POOL_SIZE}\ncache_size = 32\n"
                     f"[neighbors]\nretries = {RETRIES}\nretry_ms = {RETRY_MS}\n")

    topo = make_topo(tune)
    # Resolve the neighbours the checks afterwards use, then let the pool settle.
    assert_ping(topo, "pod-a", REMOTE_POD, count=2)
    assert_ping(topo, "node-b", POD_B, count=2)
    wait_for("no held packets", lambda: topo.stats()["control"]["pending_resolutions"] == 0)
    before = topo.stats()
    pool = before["mbuf_pool"]
    assert pool["size"] == POOL_SIZE and pool["in_use"] + pool["available"] == POOL_SIZE, pool
    baseline = pool["in_use"]
    rss_before = topo.rss_kb()

    # From pod-a at 50 kpps, UDP to the unresolved addresses: unbounded, the
    # hold queues would take every mbuf the pool has.
    peak = {"in_use": 0}
    peak_allowed = 0  # the bound on in_use at the peak's sample
    most_held = 0     # packets held at once: held less those released or given up
    gen = subprocess.Popen(topo.nsx("pod-a", KDP_GEN_BIN, "--port", "net_af_packet0,iface=eth0", "--main-cpu", "0",
                                    "--lcores", "0", "--drain-ms", "100",
                                    "--proto", "udp", "--dst-mac", NODE["gateway_mac"], "--src-ip", POD_A,
                                    *[a for ip in UNRESOLVED for a in ("--dst", f"{ip}:9")], "--flows", str(len(UNRESOLVED)),
                                    "--rate", "50000",
                                    "--duration", "4", "--json", "--", "--no-huge", "-m", "256", "--no-pci"),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pinged_during = False
    while gen.poll() is None:
        s = topo.stats()
        c = s["control"]
        most_held = max(most_held, c["held"] - c["hold_released"] - c["hold_unresolved"] -
                        (before["control"]["held"] - before["control"]["hold_released"] -
                         before["control"]["hold_unresolved"]))
        if s["mbuf_pool"]["in_use"] > peak["in_use"]:
            peak = s["mbuf_pool"]
            peak_allowed = baseline + HOLD_BUDGET + IN_FLIGHT + c["pending_resolutions"]
        if not pinged_during and s["control"]["pending_resolutions"] > 50:
            # Resolved traffic keeps its mbufs while the flood is on (rx_nombuf
            # is checked below). A ping may only go missing where kdp counted
            # pod0's packet ring overflowing: the flood (50 kpps on one
            # socket) while the worker was off its shared CPU for milliseconds.
            for dst in (POD_B, REMOTE_POD):
                missed_before = port_of(topo.stats(), "pod0")["rx_missed"]
                received, _, ping_out = ping(topo, "pod-a", dst, 2)
                missed = port_of(topo.stats(), "pod0")["rx_missed"] - missed_before
                assert received == 2 or missed > 0, f"pod-a -> {dst}: {received}/2 replies, no ring overflow\n{ping_out}"
            pinged_during = True
        time.sleep(0.2)
    out, err = gen.communicate()
    assert gen.returncode == 0, err[-2000:]
    sent = json.loads(out)["total"]["tx_packets"]
    during = topo.stats()

    drops = {k: v - before["drops"][k] for k, v in during["drops"].items() if v != before["drops"][k]}
    control = during["control"]
    assert pinged_during, f"the flood never held packets for 50 neighbours: {control}"
    # The held packets filled their budget and no more: the rest were dropped
    # as hold_overflow, and kdp always had mbufs for its ARP requests.
    assert delta(during, before, "control", "held") >= HOLD_BUDGET, (sent, peak, drops, control)
    assert delta(during, before, "control", "hold_overflow") > 0, (sent, peak, drops, control)
    assert most_held <= HOLD_BUDGET, f"{most_held} packets held at once: {control}"
    assert peak["in_use"] <= peak_allowed, f"more mbufs than the hold budget: {peak} (at most {peak_allowed}) {control}"
    assert delta(during, before, "control", "mbuf_alloc_failed") == 0, (sent, peak, drops, control)
    # Nor did a port ever find the pool empty when it took a packet in.
    assert port_of(during, "pod0")["rx_nombuf"] == port_of(before, "pod0")["rx_nombuf"], port_of(during, "pod0")
    took_in = port_of(during, "pod0")["rx"] - port_of(before, "pod0")["rx"]
    assert delta(during, before, "control", "held") + delta(during, before, "control", "hold_overflow") >= took_in - 10, \
        (took_in, control, drops)

    # Pressure off: every held packet is given up after its retries, and the
    # pool is back where it started.
    wait_for("the hold queues to drain", lambda: topo.stats()["control"]["pending_resolutions"] == 0,
             timeout=RETRIES * RETRY_MS / 1000 + 10, interval=0.2)
    wait_for(f"{baseline} mbufs in use again", lambda: topo.stats()["mbuf_pool"]["in_use"] == baseline, timeout=10)
    after = topo.stats()
    held = delta(after, before, "control", "held")
    assert held == delta(after, before, "control", "hold_unresolved") + delta(after, before, "control",
                                                                               "hold_released"), after["control"]
    # Traffic flows again: bridged, routed both ways, and kdp's own answers.
    assert_ping(topo, "pod-a", POD_B)
    assert_ping(topo, "pod-a", REMOTE_POD)
    assert_ping(topo, "node-b", POD_B)
    assert_ping(topo, "node-b", NODE_IP)
    rss_after = topo.rss_kb()
    assert rss_after - rss_before < RSS_BOUND_KB, (rss_before, rss_after)
    result = topo.stop_kdp()
    assert result.returncode == 0, result.stderr[-3000:]
    print(f"mbuf pool: {sent} packets to {len(UNRESOLVED)} unresolved neighbours, {took_in} taken in, peak "
          f"{peak['in_use']} of {POOL_SIZE} mbufs in use, {held} held, "
          f"{delta(after, before, 'control', 'mbuf_alloc_failed')} ARP requests without an mbuf, "
          f"{baseline} mbufs in use before and after")


# ---------------------------------------------------------------------------
# Neighbour table full

NEIGHBOR_MAX = 16  # the smallest table the config accepts
REACHABLE_S, STALE_S = 6, 6
NEW_POD_IP = "10.244.1.77"  # a second address of pod-b's, first used when the table is full
FAKE_SENDERS = [f"10.244.1.{i}" for i in range(100, 250)]

# ARP requests for the gateway from many senders on pod-a's wire: each asks
# kdp for its MAC, so kdp learns each sender (as Linux does).
ARP_FLOOD = """
import sys
from scapy.all import ARP, Ether, sendp
gateway, senders = sys.argv[1], sys.argv[2:]
frames = [Ether(src=f"02:cc:00:00:{i >> 8:02x}:{i & 255:02x}", dst="ff:ff:ff:ff:ff:ff") /
          ARP(op=1, hwsrc=f"02:cc:00:00:{i >> 8:02x}:{i & 255:02x}", psrc=ip, pdst=gateway)
          for i, ip in enumerate(senders)]
sendp(frames, iface="eth0", verbose=False)
"""


def assert_reaches(topo, host, dst, when):
    """assert_ping, with kdp's neighbour table and counters when it fails."""
    try:
        assert_ping(topo, host, dst)
    except AssertionError as e:
        neighbors = kdpctl(topo.sock, "neighbor", "list", check=False).stdout
        raise AssertionError(f"{when}: {e}\n{neighbors}\n{topo.stats()['control']}") from None


def test_neighbor_table_full(make_topo):
    def tune(cfg):
        cfg.extra = (f"[neighbors]\nmax = {NEIGHBOR_MAX}\nreachable_s = {REACHABLE_S}\nstale_s = {STALE_S}\n"
                     "retries = 2\nretry_ms = 300\n")

    topo = make_topo(tune)
    # The neighbours in use: node B (routed from pod-a) and the pods.
    assert_reaches(topo, "pod-a", REMOTE_POD, "before")
    assert_reaches(topo, "node-b", POD_B, "before")
    before = topo.stats()
    used = before["control"]["neighbor_entries"]
    assert 2 <= used < NEIGHBOR_MAX, before["control"]
    rss_before = topo.rss_kb()

    topo.sh("pod-a", SERVER_PYTHON, "-c", ARP_FLOOD, GATEWAY, *FAKE_SENDERS, timeout=60)
    wait_for("the table to fill", lambda: topo.stats()["control"]["neighbor_entries"] == NEIGHBOR_MAX)
    full = topo.stats()
    refused = delta(full, before, "control", "neighbors_full")
    assert refused >= len(FAKE_SENDERS) - (NEIGHBOR_MAX - used), full["control"]

    # The neighbours in use keep working while the table is full...
    assert_reaches(topo, "pod-a", REMOTE_POD, "table full")
    assert_reaches(topo, "node-b", POD_B, "table full")
    # ...and a new one is refused: pod-b answers kdp's ARP for its new
    # address, the answer cannot be stored, the held pings are dropped
    # (hold_unresolved) rather than sent.
    topo.sh("pod-b", "ip", "addr", "add", NEW_POD_IP + "/24", "dev", "eth0")
    received, _, out = ping(topo, "node-b", NEW_POD_IP, count=2)
    assert received == 0, out
    refused_new = topo.stats()
    assert refused_new["control"]["neighbor_entries"] == NEIGHBOR_MAX, refused_new["control"]
    assert delta(refused_new, full, "control", "neighbors_full") >= 1, refused_new["control"]
    wait_for("the held pings to be given up", lambda: delta(topo.stats(), full, "control", "hold_unresolved") >= 1,
             timeout=5)
    rss_full = topo.rss_kb()

    # The senders never speak again: their entries expire, and the new
    # neighbour is learned.
    wait_for("the unused entries to expire", lambda: topo.stats()["control"]["neighbor_entries"] < NEIGHBOR_MAX - 4,
             timeout=REACHABLE_S + STALE_S + 15, interval=0.5)
    assert_reaches(topo, "node-b", NEW_POD_IP, "entries expired")
    assert_reaches(topo, "pod-a", REMOTE_POD, "entries expired")
    after = topo.stats()
    assert rss_full - rss_before < 2048, (rss_before, rss_full)
    result = topo.stop_kdp()
    assert result.returncode == 0, result.stderr[-3000:]
    print(f"neighbour table: {len(FAKE_SENDERS)} senders into {NEIGHBOR_MAX} entries, "
          f"{delta(after, before, 'control', 'neighbors_full')} refused, "
          f"{delta(after, before, 'control', 'hold_unresolved')} held packets dropped; RSS {rss_before} -> {rss_full} KiB")
