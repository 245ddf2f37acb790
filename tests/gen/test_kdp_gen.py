"""kdp-gen, the traffic generator: what it writes and what it measures.

Frames come out through net_pcap (read back with scapy: sizes, tuples,
checksums recomputed, MACs, the stamp); loss, reordering and latency are
measured over loopbacks: net_ring's vdev mode (what a port sends comes back
on it), a net_memif server/client pair inside one kdp-gen, and a memif to
dpdk-testpmd in macswap mode (skipped where testpmd is not installed).
The binary comes from $KDP_GEN_BIN (set by meson test), else build/tools/kdp-gen.
"""
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from scapy.all import ICMP, IP, TCP, UDP, Ether, rdpcap, wrpcap
from scapy.layers.inet import in4_chksum
from scapy.utils import checksum

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
from kdp_harness import REPO  # noqa: E402

GEN = os.environ.get("KDP_GEN_BIN", str(REPO / "build" / "tools" / "kdp-gen"))
EAL = ["--no-huge", "-m", "256", "--no-pci"]
SRC_MAC, DST_MAC = "02:aa:00:00:00:01", "02:bb:00:00:00:02"
STAMP_MAGIC = 0x6B67
L4 = {"udp": UDP, "tcp-syn": TCP, "tcp-ack": TCP, "icmp": ICMP}


def run_gen(*args, timeout=60):
    """Runs kdp-gen with --json and returns its summary."""
    cmd = [GEN, *map(str, args), "--json", "--", *EAL]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return json.loads(proc.stdout)


def l4_bounds(pkt):
    """Offsets of the L4 header and its payload in the frame's bytes."""
    l4 = 14 + pkt[IP].ihl * 4
    return l4, l4 + (pkt[TCP].dataofs * 4 if TCP in pkt else 8)


def stamp(pkt):
    """(magic, seq, tsc) from the start of the L4 payload."""
    _, payload = l4_bounds(pkt)
    return struct.unpack("!HII", bytes(pkt)[payload:payload + 10])


def tuple_of(pkt):
    ip = pkt[IP]
    if ICMP in pkt:
        return (ip.src, ip.dst, "icmp", pkt[ICMP].id)
    l4 = pkt[TCP] if TCP in pkt else pkt[UDP]
    return (ip.src, ip.dst, ip.proto, l4.sport, l4.dport)


CSUM_OFFSET = {6: 16, 17: 6, 1: 2}  # TCP, UDP, ICMP


def checksums_valid(pkt):
    """Recomputes the IPv4 and L4 checksums with scapy over the frame's raw
    bytes (not re-serialised layers: UDP to port 53 would parse as DNS)."""
    raw = bytearray(bytes(pkt))
    ip = pkt[IP]
    l4, _ = l4_bounds(pkt)
    header = bytearray(raw[14:l4])
    header[10:12] = b"\0\0"
    if checksum(bytes(header)) != ip.chksum:
        return False
    segment = bytearray(raw[l4:14 + ip.len])
    at = CSUM_OFFSET[ip.proto]
    stored = struct.unpack("!H", segment[at:at + 2])[0]
    segment[at:at + 2] = b"\0\0"
    if ip.proto == 1:
        return checksum(bytes(segment)) == stored
    expected = in4_chksum(ip.proto, ip, bytes(segment))
    if ip.proto == 17 and expected == 0:
        expected = 0xFFFF
    return expected == stored


def pcap_run(tmp_path, name, *args):
    out = tmp_path / f"{name}.pcap"
    summary = run_gen("--port", f"net_pcap0,tx_pcap={out}", "--rx-port", "0", *args)
    return summary, rdpcap(str(out))


@pytest.mark.parametrize("proto,size", [("udp", 64), ("tcp-syn", 64), ("tcp-ack", 99), ("icmp", 1518)])
def test_pcap_frames(tmp_path, proto, size):
    summary, frames = pcap_run(tmp_path, proto, "--count", 100, "--proto", proto, "--flows", 10, "--size", size,
                               "--src-mac", SRC_MAC, "--dst-mac", DST_MAC, "--src-ip", "10.1.0.1-10.1.0.4",
                               "--src-port", "40000-40002", "--dst", "10.96.0.10:80", "--dst", "10.96.0.11:53")
    assert summary["ports"][0]["tx_packets"] == 100
    assert len(frames) == 100
    assert all(len(f) == size for f in frames)
    assert all(f[Ether].src == SRC_MAC and f[Ether].dst == DST_MAC for f in frames)
    assert all(type(f[IP].payload) is L4[proto] for f in frames)
    assert len({tuple_of(f) for f in frames}) == 10
    # Cycled in order: the first ten tuples repeat ten times.
    assert [tuple_of(f) for f in frames[:10]] * 10 == [tuple_of(f) for f in frames]
    assert {f[IP].dst for f in frames} == {"10.96.0.10", "10.96.0.11"}
    assert all(checksums_valid(f) for f in frames), proto
    stamps = [stamp(f) for f in frames]
    assert all(magic == STAMP_MAGIC for magic, _, _ in stamps)
    assert [seq for _, seq, _ in stamps] == list(range(100))
    assert all(tsc == 0 for _, _, tsc in stamps)  # a pcap file gets no time: the same bytes every run
    if proto == "tcp-syn":
        assert all(f[TCP].flags == "S" for f in frames)
    if proto == "icmp":
        assert all(f[ICMP].type == 8 for f in frames)


def test_pcap_is_deterministic(tmp_path):
    args = ("--count", 200, "--proto", "tcp-syn", "--flows", 7, "--new-flow-ratio", 0.3)
    _, first = pcap_run(tmp_path, "a", *args)
    _, second = pcap_run(tmp_path, "b", *args)
    assert [bytes(f) for f in first] == [bytes(f) for f in second]


def test_every_packet_a_new_flow(tmp_path):
    _, frames = pcap_run(tmp_path, "new", "--count", 100, "--new-flow-ratio", 1.0, "--src-port", "1000-1009",
                         "--src-ip", "10.2.0.1-10.2.0.20")
    assert len({tuple_of(f) for f in frames}) == 100
    assert all(checksums_valid(f) for f in frames)


def test_new_flow_ratio_mixes_fresh_and_cycled(tmp_path):
    _, frames = pcap_run(tmp_path, "mix", "--count", 100, "--flows", 4, "--new-flow-ratio", 0.5)
    tuples = [tuple_of(f) for f in frames]
    assert len(set(tuples)) == 4 + 50
    fresh = [t for t in tuples if tuples.count(t) == 1]
    assert len(fresh) == 50


def test_rx_counts_stamped_and_foreign(tmp_path):
    """A pcap of kdp-gen's own frames plus foreign ones, read back on RX."""
    _, frames = pcap_run(tmp_path, "own", "--count", 100, "--proto", "tcp-ack", "--flows", 3)
    foreign = [Ether() / IP(dst="10.0.0.9") / UDP(dport=53) / (b"x" * 20) for _ in range(5)]
    wrpcap(str(tmp_path / "in.pcap"), list(frames) + foreign)
    summary = run_gen("--port", f"net_pcap0,rx_pcap={tmp_path / 'in.pcap'},tx_pcap={tmp_path / 'out.pcap'}",
                      "--count", 100, "--proto", "tcp-ack", "--drain-ms", 2000)
    port = summary["ports"][0]
    assert port["rx_packets"] == 105
    assert port["rx_stamped"] == 100 and port["rx_foreign"] == 5
    assert port["rx_reordered"] == 0 and port["loss"] == 0
    assert port["latency_us"] is None  # frames from a pcap file carry no time


def assert_clean_loop(summary, sent, max_lost=0):
    total = summary["total"]
    assert total["tx_packets"] == sent
    assert sent - max_lost <= total["rx_stamped"] <= sent and total["loss"] == sent - total["rx_stamped"]
    assert total["rx_foreign"] == 0 and total["rx_reordered"] == 0
    latency = total["latency_us"]
    assert latency["samples"] == total["rx_stamped"]
    assert 0 <= latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]
    assert total["tx_cycles_per_packet"] > 0


def test_ring_loopback():
    summary = run_gen("--port", f"net_ring_{uuid.uuid4().hex[:8]}", "--count", 20000, "--rate", 200000,
                      "--proto", "udp", "--flows", 100)
    assert_clean_loop(summary, 20000)
    assert summary["total"]["tx_mpps"] == pytest.approx(0.2, rel=0.2)


def test_warmup_is_sent_first_and_not_counted():
    summary = run_gen("--port", f"net_ring_{uuid.uuid4().hex[:8]}", "--count", 5000, "--rate", 100000,
                      "--warmup", 3000, "--proto", "udp", "--flows", 100)
    assert summary["warmup"] == {"tx_packets": 3000, "returned": 3000}
    # The measured run counts from zero; its sequence numbers follow the
    # warm-up's, so nothing looks reordered or foreign.
    assert_clean_loop(summary, 5000)
    assert summary["total"]["latency_us"]["samples"] == 5000


def test_longest_pass_gap_is_reported():
    # Paced with 3 ms sleeps when idle: each worker's longest gap between
    # passes is at least one sleep, and ended within the run.
    summary = run_gen("--port", f"net_ring_{uuid.uuid4().hex[:8]}", "--count", 2000, "--rate", 2000,
                      "--proto", "udp", "--idle-sleep-us", 3000)
    assert_clean_loop(summary, 2000)
    [worker] = summary["workers"]
    assert worker["longest_pass_gap_us"] >= 3000
    assert 0 < worker["longest_pass_gap_end_s"] <= summary["elapsed_s"]


def test_memif_pair_in_one_process(tmp_path):
    sock = tmp_path / "memif.sock"
    summary = run_gen("--port", f"net_memif0,role=server,socket={sock}", "--port", f"net_memif1,role=client,socket={sock}",
                      "--tx-port", 0, "--rx-port", 1, "--count", 20000, "--rate", 50000, "--proto", "tcp-syn",
                      "--size", 128)
    assert_clean_loop(summary, 20000)
    assert summary["ports"][0]["tx_packets"] == 20000 and summary["ports"][1]["rx_packets"] == 20000


@pytest.mark.skipif(shutil.which("dpdk-testpmd") is None, reason="dpdk-testpmd (Debian package dpdk-dev) not installed")
def test_memif_to_testpmd_macswap(tmp_path):
    sock = tmp_path / "testpmd.sock"
    # testpmd's forwarding lcore shares CPU 0 with its idle main lcore;
    # kdp-gen's worker polls on CPU 1. (A larger memif ring, rsize=14, loses
    # a few frames in testpmd: its mbuf pool is no bigger than the ring.)
    testpmd = subprocess.Popen(
        ["dpdk-testpmd", "--no-huge", "-m", "512", "--no-pci", "--file-prefix", f"tp-{uuid.uuid4().hex[:8]}",
         "--lcores", "0@0,1@0", f"--vdev=net_memif0,role=server,socket={sock}", "--",
         "--no-mlockall", "--total-num-mbufs=16384", "--forward-mode=macswap", "--auto-start", "--stats-period", "0"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for _ in range(100):
            if sock.exists():
                break
            assert testpmd.poll() is None, testpmd.stdout.read()
            time.sleep(0.1)
        summary = run_gen("--port", f"net_memif0,role=client,socket={sock}", "--count", 10000,
                          "--rate", 20000, "--proto", "udp", "--flows", 16, "--drain-ms", 2000)
    finally:
        testpmd.send_signal(signal.SIGINT)
        try:
            testpmd.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            testpmd.kill()
            testpmd.communicate()
    # testpmd is another process on a shared 2-core machine (and kdp-gen may
    # run under ASan): allow it to lose 0.1%; the in-process loops allow none.
    assert_clean_loop(summary, 10000, max_lost=10)


def test_usage_errors():
    for args in (["--port", "net_null0", "--size", "63"], ["--port", "net_null0", "--proto", "sctp"],
                 ["--port", "net_null0", "--flows", "5", "--src-port", "1-2"], ["--port", "net_null0", "--tx-port", "1"]):
        proc = subprocess.run([GEN, *args, "--", *EAL], capture_output=True, text=True, timeout=30)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
