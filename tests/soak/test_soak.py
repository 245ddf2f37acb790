"""Soak: kdp under steady traffic to Services while its Services and
endpoints change all the time through the control socket.

kdp has two net_memif ports (pod0, up0); kdp-gen is on their other ends:
port 0 sends from pods 10.244.1.10-41 to two ClusterIP Services (UDP and TCP,
alternating runs of UDP and TCP SYNs, a share of them new connections), and
port 1 receives what kdp forwards to the Services' endpoints on node B
(10.244.2.0/24 via 192.168.50.11, a static neighbour with kdp-gen's MAC).
For the whole run a churn loop adds and removes endpoints (`kdpctl endpoint
add/del`) and applies the config with an extra Service and without it
(`kdpctl apply`). Then:

* kdp never stopped and exits 0;
* every packet the generator sent came back or was dropped under a named
  reason (or on a full TX ring, counted): lost = sent - (delivered + drops) = 0;
* the mbuf pool's in-use count and the conntrack table are back at their
  baselines once traffic stops and the (short) timeouts pass;
* kdp's RSS after warm-up grows less than 5%.

KDP_SOAK_SECONDS sets the duration (default 600; tools/test runs 60).
"""
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
from kdp_harness import (KDP_GEN_BIN, NODE, UPLINK_MAC, NodeConfig, Port, control_socket_path,  # noqa: E402
                         kdp_stats, kdpctl, port_of, rss_kb, start_kdp, stop_kdp)

SOAK_SECONDS = float(os.environ.get("KDP_SOAK_SECONDS", "600"))
RATE = 20000           # packets per second: well within one shared core
SEGMENT_S = 10.0       # one generator run; UDP and TCP SYN runs alternate
TIMEOUT_S = 3          # UDP and embryonic TCP flows: gone soon after traffic stops
WARMUP_S = min(30.0, SOAK_SECONDS / 5)
RSS_GROWTH = 0.05

GEN_A_MAC, GEN_B_MAC = "02:bb:00:00:00:0a", "02:bb:00:00:00:0b"
NODE_B = "192.168.50.11"
UDP_VIP, TCP_VIP, EXTRA_VIP = "10.96.0.10", "10.96.0.11", "10.96.0.12"
BASE_ENDPOINT = "10.244.2.1"                             # always there
CHURN_ENDPOINTS = [f"10.244.2.{i}" for i in range(2, 10)]  # come and go
POD_SOURCES = "10.244.1.10-10.244.1.41"


def service(name, vip, proto, endpoints):
    out = [f'[[service]]\nname = "{name}"\ntype = "ClusterIP"\ncluster_ip = "{vip}"',
           f'  [[service.port]]\n  protocol = "{proto}"\n  port = 80\n  target_port = 8080']
    out += [f'  [[service.endpoint]]\n  ip = "{ip}"\n  node = "node-b"' for ip in endpoints]
    return "\n".join(out) + "\n"


BASE_SERVICES = (service("soak/udp", UDP_VIP, "UDP", [BASE_ENDPOINT]) +
                 service("soak/tcp", TCP_VIP, "TCP", [BASE_ENDPOINT]))
EXTRA_SERVICE = service("soak/extra", EXTRA_VIP, "UDP", [BASE_ENDPOINT, CHURN_ENDPOINTS[0]])


def gen(sockets, proto, dst, seconds):
    """One kdp-gen run: port 0 sends, both ports receive; its JSON summary."""
    new_flow_ratio = "0.02" if proto == "udp" else "0.05"
    cmd = [KDP_GEN_BIN, *[a for s in sockets for a in ("--port", f"net_memif{s[0]},role=client,socket={s[1]}")],
           "--tx-port", "0", "--main-cpu", "0", "--lcores", "0", "--proto", proto, "--src-mac", GEN_A_MAC,
           "--dst-mac", NODE["gateway_mac"], "--src-ip", POD_SOURCES, "--dst", f"{dst}:80", "--flows", "2000",
           "--new-flow-ratio", new_flow_ratio, "--rate", str(RATE), "--duration", str(seconds), "--drain-ms", "1000",
           "--json", "--", "--no-huge", "-m", "256", "--no-pci"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120)
    assert proc.returncode == 0, f"kdp-gen exited {proc.returncode}: {proc.stderr[-3000:]}"
    return json.loads(proc.stdout)


class Churn(threading.Thread):
    """Changes endpoints and Services through the control socket until stopped."""

    def __init__(self, sock: Path, base_toml: str, workdir: Path):
        super().__init__(daemon=True)
        self.sock, self.base_toml = sock, base_toml
        self.with_extra, self.without_extra = workdir / "with-extra.toml", workdir / "without-extra.toml"
        self.with_extra.write_text(base_toml + EXTRA_SERVICE)
        self.without_extra.write_text(base_toml)
        self.stop_event = threading.Event()
        self.operations = 0
        self.error = None

    def run(self):
        try:
            i = 0
            while not self.stop_event.is_set():
                ip = CHURN_ENDPOINTS[i % len(CHURN_ENDPOINTS)]
                for svc in ("soak/udp", "soak/tcp"):
                    kdpctl(self.sock, "endpoint", "add", "--service", svc, "--ip", ip, "--node", "node-b")
                    self.operations += 1
                if i % 2:
                    for svc in ("soak/udp", "soak/tcp"):
                        kdpctl(self.sock, "endpoint", "del", "--service", svc, "--ip", ip)
                        self.operations += 1
                if i % 5 == 4:  # the whole config, with the extra Service or without it
                    kdpctl(self.sock, "apply", "-f", self.with_extra if i % 10 == 4 else self.without_extra)
                    self.operations += 1
                i += 1
                time.sleep(0.05)
        except Exception as e:  # reported by the test
            self.error = e


@pytest.fixture
def memif_kdp(tmp_path):
    sockets = [(0, tmp_path / "pod0.sock"), (1, tmp_path / "up0.sock")]
    cfg = NodeConfig(
        ports=[Port("pod0", "pod", f"net_memif0,role=server,socket={sockets[0][1]}"),
               Port("up0", "uplink", f"net_memif1,role=server,socket={sockets[1][1]}", mac=UPLINK_MAC)],
        routes=[("10.244.2.0/24", NODE_B)],
        neighbors=[(NODE_B, GEN_B_MAC)],
        node=dict(NODE, node_ip="192.168.50.10/24", service_cidr="10.96.0.0/12"),
        conntrack={"udp_s": TIMEOUT_S, "udp_stream_s": TIMEOUT_S, "tcp_syn_sent_s": TIMEOUT_S,
                   "tcp_syn_recv_s": TIMEOUT_S},
        extra=BASE_SERVICES,
    )
    proc, stats_path = start_kdp(cfg, tmp_path)
    sock = control_socket_path(tmp_path)
    deadline = time.monotonic() + 60
    while not sock.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            result = stop_kdp(proc, stats_path)
            raise AssertionError(f"kdp did not start (rc {result.returncode}):\n{result.stderr[-3000:]}")
        time.sleep(0.1)
    try:
        # apply must get the very file kdp runs (its file_prefix is chosen when written).
        yield proc, stats_path, sock, sockets, (tmp_path / "node.toml").read_text()
    finally:
        if proc.poll() is None:
            stop_kdp(proc, stats_path)


def wait_until(what, predicate, timeout):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f}s waiting for {what}"
        time.sleep(0.2)


def test_soak(memif_kdp, tmp_path, capsys):
    proc, stats_path, sock, sockets, base_toml = memif_kdp
    before = kdp_stats(sock)
    mbufs_baseline = before["mbuf_pool"]["in_use"]
    flows_baseline = before["conntrack"]["flows"]

    churn = Churn(sock, base_toml, tmp_path)
    rss = []  # (seconds since start, KiB)
    sampling = threading.Event()

    def sample():
        while not sampling.is_set():
            rss.append((time.monotonic() - start, rss_kb(proc.pid)))
            sampling.wait(1.0)

    start = time.monotonic()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    churn.start()
    sent = delivered = runs = 0
    try:
        while (left := SOAK_SECONDS - (time.monotonic() - start)) > 1:
            proto, vip = ("udp", UDP_VIP) if runs % 2 == 0 else ("tcp-syn", TCP_VIP)
            summary = gen(sockets, proto, vip, min(SEGMENT_S, left))
            sent += summary["total"]["tx_packets"]
            delivered += summary["total"]["rx_stamped"]
            runs += 1
            assert proc.poll() is None, f"kdp exited {proc.returncode} during the soak"
            assert churn.error is None, f"churn failed: {churn.error}"
    finally:
        churn.stop_event.set()
        churn.join(timeout=60)
        sampling.set()
        sampler.join(timeout=5)
    assert churn.error is None, f"churn failed: {churn.error}"
    duration = time.monotonic() - start

    # Traffic over: flows time out, held and in-flight mbufs come home.
    wait_until("conntrack back to its baseline", lambda: kdp_stats(sock)["conntrack"]["flows"] == flows_baseline,
               timeout=TIMEOUT_S + 30)
    wait_until("the mbuf pool back to its baseline",
               lambda: kdp_stats(sock)["mbuf_pool"]["in_use"] == mbufs_baseline, timeout=15)
    after = kdp_stats(sock)
    mbufs_end = after["mbuf_pool"]["in_use"]

    assert proc.poll() is None, f"kdp exited {proc.returncode}"
    result = stop_kdp(proc, stats_path)
    assert result.returncode == 0, f"kdp exited {result.returncode}:\n{result.stderr[-3000:]}"

    drops = {k: v - before["drops"][k] for k, v in after["drops"].items() if v != before["drops"][k]}
    uplink = port_of(after, "up0")
    uplink_before = port_of(before, "up0")
    tx_dropped = uplink["tx_dropped"] - uplink_before["tx_dropped"]
    counted = sum(v for k, v in drops.items() if k != "consumed")
    lost = sent - delivered - counted - tx_dropped

    warm = [kb for t, kb in rss if t >= WARMUP_S]
    assert len(warm) >= 2, rss
    growth = (warm[-1] - warm[0]) / warm[0]

    summary = (f"soak: {duration:.0f} s, {sent} packets sent, {delivered} delivered, {counted} dropped by reason "
               f"{drops or '{}'}, {tx_dropped} TX-ring drops, {lost} lost; {churn.operations} churn operations; "
               f"RSS {rss[0][1]} KiB at start, {warm[0]} after warm-up, {warm[-1]} at the end ({growth:+.1%}); "
               f"mbufs in use {mbufs_baseline} before, {mbufs_end} after; conntrack {flows_baseline} -> "
               f"{after['conntrack']['flows']} flows ({after['conntrack']['created'] - before['conntrack']['created']} "
               f"created)")
    with capsys.disabled():
        print("\n" + summary)
    (tmp_path / "summary.txt").write_text(summary + "\n")

    assert sent > 0 and delivered > 0 and runs >= 2, summary
    assert lost == 0, summary
    assert churn.operations >= SOAK_SECONDS, summary  # about one change a second at the very least
    assert growth < RSS_GROWTH, summary
