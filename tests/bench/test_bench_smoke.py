"""tools/bench --smoke: every scenario moves packets through its DUT and the
ratios are computed (no performance thresholds: CI machines differ).

Runs the benchmark script itself (tools/bench.d/bench.py, with the binaries
meson test names in $KDP_BIN, $KDPCTL_BIN and $KDP_GEN_BIN) with --json.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
from kdp_harness import REPO  # noqa: E402

BENCH = REPO / "tools" / "bench.d" / "bench.py"


@pytest.fixture(scope="module")
def smoke():
    if os.geteuid() != 0:
        pytest.skip("tools/bench needs root (network namespaces)")
    if shutil.which("dpdk-testpmd") is None:
        pytest.skip("dpdk-testpmd (Debian package dpdk-dev) not installed")
    if (os.cpu_count() or 1) < 2:
        pytest.skip("the benchmark pins the generator and the DUT to two CPUs")
    proc = subprocess.run(["/usr/bin/python3", str(BENCH), "--smoke", "--json"], capture_output=True, text=True,
                          timeout=480)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}"
    return json.loads(proc.stdout)


def test_every_scenario_moved_packets(smoke):
    rows = smoke["rows"]
    duts = {r["dut"] for r in rows}
    assert {"testpmd", "kdp", "kernel iptables", "kernel nftables"} <= duts, duts
    for r in rows:
        name = f"{r['group']}: {r['scenario']} [{r['dut']}]"
        assert r["error"] is None, f"{name}: {r['error']}"
        assert r["rx_packets"] > 0 and r["mpps"] > 0, name
        assert r["p50_us"] is not None and r["p99_us"] is not None, name
        assert 0 <= r["loss_pct"] <= 100, name


def test_ratios_computed(smoke):
    rows = smoke["rows"]
    memif_kdp = [r for r in rows if r["group"] == "memif" and r["dut"] == "kdp"]
    veth_kdp = [r for r in rows if r["group"] == "veth" and r["dut"] == "kdp"]
    assert memif_kdp and veth_kdp
    assert all(r["vs_testpmd"] > 0 for r in memif_kdp)
    assert all(r["vs_kernel_iptables"] > 0 and r["vs_kernel_nftables"] > 0 for r in veth_kdp)
    # kdp's cycles per packet come from its own busy-poll counters.
    assert all(r["cycles"] and r["cycles"] > 0 for r in memif_kdp + veth_kdp)


def test_memory_measured(smoke):
    memory = smoke["memory"]
    assert "error" not in memory, memory
    assert memory["bytes_per_flow_slot"] > 0 and memory["bytes_per_service"] > 0
    # The control-plane update benchmark: applies and endpoint changes while
    # traffic flowed, each with kdp's own timing, and the packets counted.
    updates = smoke["updates"]
    # The config file's Services and as many Kubernetes ones, both applied whole.
    assert updates["services_applied"] == 1000 and updates["services"] == 2000, updates
    for apply in ("apply", "reapply", "k8s_apply"):
        assert updates[f"{apply}_added"] == 999 and updates[f"{apply}_ms"] > 0, updates  # svc-0 / web-0 were there
        assert updates[f"{apply}_parse_ms"] > 0 and updates[f"{apply}_live_ms"] is not None, updates
    assert updates["endpoint_changes"] > 0 and updates["endpoint_live_ms"]["max"] is not None, updates
    assert updates["tx_packets"] > 0 and updates["lost"] == updates["tx_packets"] - updates["rx_packets"], updates
