"""kdp's heap on transparent huge pages: kdp restarts itself once with
glibc's malloc.hugetlb tunable set, so that a large apply (toml++'s tree of
thousands of Services) faults its memory in by 2 MB instead of by 4 KB.
Checked here by what the kernel reports of kdp's memory after such an apply:
huge pages by default and when the operator set other tunables, none when
the operator turned the tunable off. (/proc/PID/environ cannot tell: glibc
cuts GLIBC_TUNABLES up in place while reading it.)
"""
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
from kdp_harness import (NODE, UPLINK_MAC, NodeConfig, Port, kdpctl, start_kdp, stop_kdp,  # noqa: E402
                         wait_for_control_socket)

SERVICES = 3000
THP_MODE = Path("/sys/kernel/mm/transparent_hugepage/enabled")
# In "always" mode every process gets huge pages and in "never" none does;
# only "madvise" shows whether kdp asked for them.
pytestmark = [
    pytest.mark.skipif(not THP_MODE.exists() or "[madvise]" not in THP_MODE.read_text(),
                       reason="transparent huge pages are not in madvise mode on this machine"),
    pytest.mark.skipif(os.environ.get("KDP_SANITIZED") == "1",
                       reason="a sanitizer build's allocator replaces glibc's malloc and its tunables"),
]


def services_toml(n):
    out = []
    for i in range(n):
        out += ["[[service]]", f'name = "heap/svc-{i}"', f'cluster_ip = "10.100.{i // 250}.{i % 250 + 1}"',
                'port = [{ protocol = "TCP", port = 80, target_port = 8080 }]',
                'endpoint = [{ ip = "10.244.1.20" }, { ip = "10.244.1.21" }]']
    return "\n".join(out) + "\n"


def anon_huge_kb(pid):
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("AnonHugePages:"):
            return int(line.split()[1])
    raise AssertionError("no AnonHugePages in smaps_rollup")


def huge_kb_after_large_apply(tmp_path, tunables=None):
    """kB of kdp's anonymous memory on huge pages after one apply of SERVICES Services."""
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    if tunables is not None:
        env["GLIBC_TUNABLES"] = tunables
    proc, stats_path = start_kdp(NodeConfig(ports=[Port("up0", "uplink", "net_null0", mac=UPLINK_MAC)],
                                            node=dict(NODE, node_ip="192.168.50.10/24", service_cidr="10.96.0.0/12"),
                                            workers={"idle_sleep_us": 100}), tmp_path, env=env)
    try:
        sock = wait_for_control_socket(proc, tmp_path)
        big = tmp_path / "services.toml"
        big.write_text((tmp_path / "node.toml").read_text() + services_toml(SERVICES))
        kdpctl(sock, "apply", "-f", big, timeout=120)
        huge = anon_huge_kb(proc.pid)
    finally:
        result = stop_kdp(proc, stats_path)
    assert result.returncode == 0, result.stderr[-2000:]
    return huge


def test_heap_of_a_large_apply_is_on_huge_pages(tmp_path):
    # toml++'s tree of the file alone is tens of MB.
    assert huge_kb_after_large_apply(tmp_path) >= 8 * 1024


def test_other_tunables_are_kept_and_this_one_added(tmp_path):
    assert huge_kb_after_large_apply(tmp_path, "glibc.malloc.arena_max=2") >= 8 * 1024


def test_operator_choice_of_the_tunable_is_kept(tmp_path):
    assert huge_kb_after_large_apply(tmp_path, "glibc.malloc.hugetlb=0") == 0
