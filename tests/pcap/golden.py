"""Golden-packet helpers for the pcap replay suite.

A test describes input frames per port; `replay()` writes one rx pcap per port,
runs kdp over `net_pcap` vdevs until idle, and returns the frames each port
transmitted (raw bytes, in order) with kdp's final counters. Tests then build
the frame they expect with scapy and compare field by field and byte for byte.
"""
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))

from kdp_harness import NODE, UPLINK_MAC, KdpRun, NodeConfig, Port, run_kdp  # noqa: E402

# The layers tests build packets from, re-exported with the helpers.
from scapy.layers.inet import ICMP, IP, TCP, UDP  # noqa: E402,F401
from scapy.layers.l2 import ARP, Ether  # noqa: E402,F401
from scapy.utils import checksum  # noqa: E402

GW_IP = NODE["gateway_ip"]
GW_MAC = NODE["gateway_mac"]
NODE_IP = NODE["node_ip"]
BCAST = "ff:ff:ff:ff:ff:ff"

# The other node, reachable over the uplink, with a static neighbour entry.
REMOTE_NODE_IP = "192.168.50.11"
REMOTE_NODE_MAC = "02:00:00:00:0b:01"
REMOTE_POD_IP = "10.244.2.5"
ROUTES = [("10.244.2.0/24", REMOTE_NODE_IP)]
NEIGHBORS = [(REMOTE_NODE_IP, REMOTE_NODE_MAC)]
DEFAULT_ROUTE = ("0.0.0.0/0", "192.168.50.1")

# Pods of this node: (ip, mac), the n-th one normally attached to pod<n>.
PODS = [("10.244.1.5", "0a:58:0a:f4:01:05"), ("10.244.1.6", "0a:58:0a:f4:01:06"),
        ("10.244.1.7", "0a:58:0a:f4:01:07")]

UPLINK = "up0"
POD_PORTS = ("pod0", "pod1", "pod2")
ALL_PORTS = (UPLINK,) + POD_PORTS

_PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)  # DLT_EN10MB


def write_pcap(path: Path, frames) -> None:
    """Writes frames (scapy packets or bytes) exactly as given, no padding."""
    with open(path, "wb") as f:
        f.write(_PCAP_HEADER)
        for i, frame in enumerate(frames):
            data = bytes(frame)
            f.write(struct.pack("<IIII", 1, i, len(data), len(data)))
            f.write(data)


def read_pcap(path: Path) -> list[bytes]:
    data = path.read_bytes() if path.exists() else b""
    if not data:
        return []
    magic = struct.unpack("<I", data[:4])[0]
    order = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    off, frames = 24, []
    while off + 16 <= len(data):
        _, _, incl, _ = struct.unpack(order + "IIII", data[off:off + 16])
        frames.append(data[off + 16:off + 16 + incl])
        off += 16 + incl
    return frames


@dataclass
class Replay:
    run: KdpRun
    out: dict  # port name -> [bytes] it transmitted, in order

    @property
    def stats(self) -> dict:
        return self.run.stats

    def drops(self) -> dict:
        return self.run.drops()

    def control(self, key: str) -> int:
        return self.run.stats["control"][key]

    def frames(self, port: str) -> list:
        return [Ether(b) for b in self.out[port]]

    def silent(self, *ports: str) -> bool:
        return all(not self.out[p] for p in ports)


def replay(tmp_path: Path, inputs: dict, *, ports=ALL_PORTS, routes=None, neighbors=None, extra: str = "",
           node: dict | None = None, idle_ms: int = 150) -> Replay:
    """Replays `inputs` ({port: [frames]}) through kdp and returns what each port sent.

    `ports` names the ports in kdp's port order; a name starting with "up" is
    an uplink (with UPLINK_MAC), every other one a pod port. Ports without
    input read an empty pcap. `node` overrides keys of the harness's NODE.
    """
    unknown = set(inputs) - set(ports)
    assert not unknown, f"inputs for ports not configured: {unknown}"
    tmp_path.mkdir(parents=True, exist_ok=True)
    port_cfgs, out_paths = [], {}
    for i, name in enumerate(ports):
        rx, tx = tmp_path / f"{name}.rx.pcap", tmp_path / f"{name}.tx.pcap"
        write_pcap(rx, inputs.get(name, []))
        out_paths[name] = tx
        uplink = name.startswith("up")
        port_cfgs.append(Port(name, "uplink" if uplink else "pod", f"net_pcap{i},rx_pcap={rx},tx_pcap={tx}",
                              UPLINK_MAC if uplink else None))
    cfg = NodeConfig(ports=port_cfgs, routes=list(ROUTES if routes is None else routes),
                     neighbors=list(NEIGHBORS if neighbors is None else neighbors), node={**NODE, **(node or {})},
                     extra=extra)
    run = run_kdp(cfg, tmp_path, exit_when_idle_ms=idle_ms)
    assert run.returncode == 0 and run.stats is not None, f"kdp exited {run.returncode}:\n{run.stderr[-3000:]}"
    for name in ports:
        sent = sum(1 for _ in inputs.get(name, []))
        assert run.port(name)["rx"] == sent, f"{name}: kdp received {run.port(name)['rx']} of {sent} frames"
    return Replay(run, {name: read_pcap(path) for name, path in out_paths.items()})


# --- expectations -----------------------------------------------------------

def show(frame) -> str:
    return Ether(bytes(frame)).show(dump=True)


def assert_frame(actual: bytes, expected, what: str = "frame") -> None:
    """Byte-for-byte equality, with both decodes in the message on failure."""
    expected = bytes(expected)
    if actual != expected:
        raise AssertionError(f"{what} differs\n--- expected ({len(expected)} bytes) {expected.hex()}\n"
                             f"{show(expected)}\n--- actual ({len(actual)} bytes) {actual.hex()}\n{show(actual)}")


def ip_checksum_valid(frame) -> bool:
    """The IPv4 header checksum equals what scapy computes afresh."""
    ip = Ether(bytes(frame))[IP]
    fresh = ip.copy()
    del fresh.chksum
    return ip.chksum == IP(bytes(fresh)).chksum and checksum(bytes(ip)[:ip.ihl * 4]) == 0


def icmp_checksum_valid(frame) -> bool:
    ip = Ether(bytes(frame))[IP]
    icmp_bytes = bytes(ip)[ip.ihl * 4:ip.len]
    fresh = ICMP(icmp_bytes)
    del fresh.chksum
    return ICMP(icmp_bytes).chksum == ICMP(bytes(fresh)).chksum and checksum(icmp_bytes) == 0


def routed(frame, src_mac: str, dst_mac: str) -> bytes:
    """What a router makes of `frame`: new MACs, TTL-1, fresh IPv4 checksum,
    Ethernet padding dropped; everything else unchanged."""
    pkt = Ether(bytes(frame))
    ip_len = pkt[IP].len
    pkt.src, pkt.dst = src_mac, dst_mac
    pkt[IP].ttl -= 1
    del pkt[IP].chksum
    return bytes(pkt)[:14 + ip_len]


def without_padding(frame) -> bytes:
    data = bytes(frame)
    return data[:14 + Ether(data)[IP].len]


def pod_frame(n: int, dst_mac: str = GW_MAC):
    """Ethernet header of a frame sent by pod n."""
    return Ether(src=PODS[n][1], dst=dst_mac)


def uplink_frame(dst_mac: str = UPLINK_MAC, src_mac: str = REMOTE_NODE_MAC):
    return Ether(src=src_mac, dst=dst_mac)


def translated(frame, src_mac, dst_mac, src=None, sport=None, dst=None, dport=None, ident=None) -> bytes:
    """`frame` routed (TTL-1, new MACs) with addresses, ports or ICMP echo
    identifier rewritten and every checksum computed afresh by scapy."""
    pkt = Ether(bytes(frame))
    pkt.src, pkt.dst = src_mac, dst_mac
    ip = pkt[IP]
    ip.ttl -= 1
    if src: ip.src = src
    if dst: ip.dst = dst
    l4 = ip.payload
    if sport is not None: l4.sport = sport
    if dport is not None: l4.dport = dport
    if ident is not None: l4.id = ident
    del ip.chksum
    del l4.chksum
    return bytes(pkt)
