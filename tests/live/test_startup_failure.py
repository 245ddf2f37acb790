"""A kdp whose start-up fails after the EAL is up (a port set up after
another has started) exits with the reason and tears the EAL down as a
normal exit does: the run's DPDK runtime directory (/var/run/dpdk/<file
prefix>) is gone.
"""
import re
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
from kdp_harness import KDP_BIN, UPLINK_MAC, NodeConfig, Port, config_text  # noqa: E402


def test_port_failure_after_another_port_started_cleans_up(tmp_path):
    rx = tmp_path / "empty.pcap"
    # A pcap header and no packets: net_pcap probes it, with one queue pair.
    rx.write_bytes(bytes.fromhex("d4c3b2a1020004000000000000000000ffff000001000000"))
    node = NodeConfig(
        ports=[Port("pod0", "pod", f"net_memif0,role=server,socket={tmp_path / 'pod0.sock'}"),
               Port("up0", "uplink", f"net_pcap0,rx_pcap={rx},tx_pcap={tmp_path / 'out.pcap'}", mac=UPLINK_MAC)],
        lcores=(1, 2), workers={"cpus": [1, 1]})  # two workers: net_pcap has one queue pair, too few
    config = tmp_path / "node.toml"
    text = config_text(node, tmp_path)
    config.write_text(text)
    prefix = re.search(r'file_prefix = "([^"]+)"', text).group(1)
    run = subprocess.run([KDP_BIN, "--config", str(config)], capture_output=True, text=True, timeout=60)
    assert run.returncode != 0
    assert "port up0 (net_pcap0): the device has 1 RX / 1 TX queues but [workers] needs one per worker (2)" \
        in run.stderr, run.stderr[-2000:]
    assert not (Path("/var/run/dpdk") / prefix).exists(), "the EAL runtime directory was left behind"
