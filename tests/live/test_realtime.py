"""Worker lcores under SCHED_FIFO ([workers] realtime_priority, kdp-gen
--realtime-priority): on a CPU shared with other tasks, a worker that has
packets waiting must not sit behind a kernel thread or a build for
milliseconds while its peer's ring fills. Checked here: kdp's and kdp-gen's
worker threads, and only they, run SCHED_FIFO at the priority asked for while
traffic flows through kdp; and a kdp that may not raise its priority (no
CAP_SYS_NICE) refuses to start, naming the setting, instead of running
without it.
"""
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
from kdp_harness import (KDP_BIN, KDP_GEN_BIN, NODE, UPLINK_MAC, NodeConfig, Port, config_text,  # noqa: E402
                         control_socket_path, kdp_stats, port_of, start_kdp, stop_kdp, wait_for_control_socket)

GEN_A_MAC, GEN_B_MAC, NODE_B = "02:bb:00:00:00:0a", "02:bb:00:00:00:0b", "192.168.50.11"
SCHED_FIFO = 1


def memif_node(sockets, **workers):
    return NodeConfig(
        ports=[Port("pod0", "pod", f"net_memif0,role=server,socket={sockets[0]}"),
               Port("up0", "uplink", f"net_memif1,role=server,socket={sockets[1]}", mac=UPLINK_MAC)],
        routes=[("10.244.2.0/24", NODE_B)],
        neighbors=[(NODE_B, GEN_B_MAC)],
        node=dict(NODE, node_ip="192.168.50.10/24", service_cidr="10.96.0.0/12"),
        workers=workers)


def threads(pid):
    """{thread name: (policy, rt priority)} from /proc (fields 41 and 40 of stat)."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        stat = (task / "stat").read_text()
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()  # fields from 3 on
        out.setdefault(name, []).append((int(fields[38]), int(fields[37])))
    return out


def test_workers_run_sched_fifo_under_traffic(tmp_path):
    sockets = [tmp_path / "pod0.sock", tmp_path / "up0.sock"]
    proc, stats_path = start_kdp(memif_node(sockets, idle_sleep_us=100, realtime_priority=5), tmp_path)
    sock = wait_for_control_socket(proc, tmp_path)
    try:
        gen = subprocess.Popen(
            [KDP_GEN_BIN, *[a for i, s in enumerate(sockets) for a in ("--port", f"net_memif{i},role=client,socket={s}")],
             "--tx-port", "0", "--rx-port", "1", "--main-cpu", "0", "--lcores", "1", "--realtime-priority", "3",
             "--idle-sleep-us", "50", "--proto", "udp", "--src-mac", GEN_A_MAC, "--dst-mac", NODE["gateway_mac"],
             "--src-ip", "10.244.1.10-10.244.1.20", "--dst", "10.244.2.5:80", "--flows", "100", "--rate", "20000",
             "--duration", "3", "--drain-ms", "500", "--json", "--", "--no-huge", "-m", "256", "--no-pci"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # Sampled once traffic reaches kdp: kdp-gen sets its lcores' policy
        # before it sends anything.
        deadline = time.monotonic() + 30
        while port_of(kdp_stats(sock), "pod0")["rx"] == 0:
            assert gen.poll() is None, f"kdp-gen exited {gen.returncode}: {gen.stderr.read()[-2000:]}"
            assert time.monotonic() < deadline, "no traffic from kdp-gen reached kdp"
            time.sleep(0.05)
        kdp_threads, gen_threads = threads(proc.pid), threads(gen.pid)
        out, err = gen.communicate(timeout=60)
        assert gen.returncode == 0, f"kdp-gen exited {gen.returncode}: {err[-2000:]}"
    finally:
        result = stop_kdp(proc, stats_path)
    assert result.returncode == 0, result.stderr[-2000:]

    assert kdp_threads["rte-worker-1"] == [(SCHED_FIFO, 5)]
    assert gen_threads["rte-worker-1"] == [(SCHED_FIFO, 3)]
    # The control thread, the interrupt thread and the rest keep the default policy.
    for name, policies in [*kdp_threads.items(), *gen_threads.items()]:
        if name != "rte-worker-1":
            assert all(policy == 0 for policy, _ in policies), f"{name}: {policies}"
    summary = json.loads(out)
    assert summary["total"]["tx_packets"] > 10000
    # Traffic went through kdp while both ran so (loss is the bench's measure, not this test's).
    assert summary["total"]["rx_stamped"] > 0.9 * summary["total"]["tx_packets"], summary["total"]


def test_refuses_to_start_without_the_right_to_raise_priority(tmp_path):
    sockets = [tmp_path / "pod0.sock", tmp_path / "up0.sock"]
    config = tmp_path / "node.toml"
    config.write_text(config_text(memif_node(sockets, realtime_priority=5), tmp_path))
    run = subprocess.run(["setpriv", "--bounding-set", "-sys_nice", "--inh-caps", "-sys_nice", KDP_BIN,
                          "--config", str(config)], capture_output=True, text=True, timeout=60)
    assert run.returncode != 0
    assert "workers.realtime_priority: cannot run lcore 1 as SCHED_FIFO at priority 5: Operation not permitted" \
        in run.stderr, run.stderr[-2000:]
    assert not control_socket_path(tmp_path).exists(), "kdp got as far as its control socket"
