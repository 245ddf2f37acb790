"""memif peers that hang up under traffic: kdp has two net_memif server ports
(pod0, up0), kdp-gen is their client and sends from a pod through kdp's
router back to itself (10.244.2.0/24 via node B, a static neighbour with
kdp-gen's MAC). The generator leaves again and again, by exiting and by
being killed mid-traffic, and finally kdp leaves while the generator sends.

DPDK 22.11's memif PMD unmaps a departed peer's rings on EAL's interrupt
thread right after it marks the port down, while a worker may still be in a
burst on them; kdp holds that unmap until every worker has passed a
quiescent point (drivers/interrupt_unmap_guard.h). Checked here: kdp and
kdp-gen never die, traffic flows after every reconnect, and kdp counts a held
unmap for every departure.
"""
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
from kdp_harness import (KDP_GEN_BIN, NODE, UPLINK_MAC, NodeConfig, Port, start_kdp, stop_kdp,  # noqa: E402
                         wait_for_control_socket)

GEN_A_MAC, GEN_B_MAC, NODE_B = "02:bb:00:00:00:0a", "02:bb:00:00:00:0b", "192.168.50.11"
ROUNDS = 6


def gen_cmd(sockets, seconds):
    return [KDP_GEN_BIN, *[a for i, s in enumerate(sockets) for a in ("--port", f"net_memif{i},role=client,socket={s}")],
            "--tx-port", "0", "--main-cpu", "0", "--lcores", "0", "--proto", "udp", "--src-mac", GEN_A_MAC,
            "--dst-mac", NODE["gateway_mac"], "--src-ip", "10.244.1.10-10.244.1.20", "--dst", "10.244.2.5:80",
            "--flows", "100", "--rate", "50000", "--duration", str(seconds), "--drain-ms", "500", "--json",
            "--", "--no-huge", "-m", "256", "--no-pci"]


@pytest.fixture
def memif_kdp(tmp_path):
    sockets = [tmp_path / "pod0.sock", tmp_path / "up0.sock"]
    cfg = NodeConfig(
        ports=[Port("pod0", "pod", f"net_memif0,role=server,socket={sockets[0]}"),
               Port("up0", "uplink", f"net_memif1,role=server,socket={sockets[1]}", mac=UPLINK_MAC)],
        routes=[("10.244.2.0/24", NODE_B)],
        neighbors=[(NODE_B, GEN_B_MAC)],
        node=dict(NODE, node_ip="192.168.50.10/24", service_cidr="10.96.0.0/12"))
    proc, stats_path = start_kdp(cfg, tmp_path)
    wait_for_control_socket(proc, tmp_path)
    try:
        yield proc, stats_path, sockets
    finally:
        if proc.poll() is None:
            stop_kdp(proc, stats_path)


def test_peers_hang_up_under_traffic(memif_kdp):
    proc, stats_path, sockets = memif_kdp
    for i in range(ROUNDS):
        if i % 2 == 0:  # runs its course and leaves (memif's disconnect message)
            run = subprocess.run(gen_cmd(sockets, 1), capture_output=True, text=True, timeout=60)
            assert run.returncode == 0, f"kdp-gen exited {run.returncode}: {run.stderr[-2000:]}"
            assert json.loads(run.stdout)["total"]["rx_stamped"] > 0, "no traffic came back through kdp"
        else:  # killed mid-traffic (the socket just closes)
            gen = subprocess.Popen(gen_cmd(sockets, 30), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(2)
            assert gen.poll() is None, f"kdp-gen exited {gen.returncode} early"
            gen.send_signal(signal.SIGKILL)
            gen.wait()
        time.sleep(0.2)
        assert proc.poll() is None, f"kdp exited {proc.returncode} after the generator's departure {i + 1}"

    # kdp leaves while the generator sends: now kdp-gen's rings go away.
    gen = subprocess.Popen(gen_cmd(sockets, 4), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(2)
    result = stop_kdp(proc, stats_path)
    out, err = gen.communicate(timeout=60)
    assert gen.returncode == 0, f"kdp-gen exited {gen.returncode} when kdp left: {err[-2000:]}"
    assert json.loads(out)["total"]["tx_packets"] > 0

    assert result.returncode == 0, f"kdp exited {result.returncode}:\n{result.stderr[-3000:]}"
    # Each departure unmaps at least one region per port, each held for the workers.
    held = result.stats["control"]["unmap_grace_waits"]
    assert held >= 2 * ROUNDS, f"{held} held unmaps for {ROUNDS} departures of a two-port peer"
