"""/metrics: kdp serves its counters in the Prometheus text format on
[control] metrics_listen (loopback), for a Prometheus server to scrape."""
import socket
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
from kdp_harness import NODE, NodeConfig, Port, start_kdp, stop_kdp  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_metrics_endpoint_serves_prometheus_text(tmp_path):
    port = free_port()
    config = NodeConfig(ports=[Port("up0", "uplink", "net_null0,no-rx=1"), Port("pod0", "pod", "net_null1,no-rx=1")],
                        node=dict(NODE),
                        extra=f'[control]\nsocket = "{tmp_path / "ctl.sock"}"\nmetrics_listen = "127.0.0.1:{port}"\n')
    proc, stats_path = start_kdp(config, tmp_path)
    try:
        body = None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
                    body = response.read().decode()
                    content_type = response.headers["Content-Type"]
                if "kdp_" in body:
                    break
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(0.2)
        assert body and "kdp_" in body, f"no metrics served: {body!r}"
        assert content_type.startswith("text/plain")
        lines = body.splitlines()
        assert any(line.startswith("# TYPE kdp_") for line in lines)
        assert 'kdp_port_rx_packets_total{port="up0",role="uplink"} 0' in lines, body[:2000]
        # Every sample line is "name{labels} value" with a numeric value.
        for line in lines:
            if line and not line.startswith("#"):
                float(line.rsplit(" ", 1)[1])
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/other", timeout=2)
            raise AssertionError("only /metrics is served")
        except urllib.error.HTTPError as e:
            assert e.code == 404
    finally:
        run = stop_kdp(proc, stats_path)
    assert run.returncode == 0, run.stderr


def fetch(url: str, timeout: float = 2) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read().decode()


def test_promtool_and_a_real_prometheus_scrape(tmp_path):
    """promtool accepts the exposition, and a Prometheus server on loopback
    scrapes kdp and can query its counters."""
    import json
    import shutil
    import subprocess

    promtool, prometheus = shutil.which("promtool"), shutil.which("prometheus")
    assert promtool and prometheus, "tools/setup-deps installs Debian's prometheus package"
    kdp_port, prom_port = free_port(), free_port()
    config = NodeConfig(ports=[Port("up0", "uplink", "net_null0,no-rx=1"), Port("pod0", "pod", "net_null1,no-rx=1")],
                        node=dict(NODE),
                        extra=f'[control]\nsocket = "{tmp_path / "ctl.sock"}"\nmetrics_listen = "127.0.0.1:{kdp_port}"\n')
    proc, stats_path = start_kdp(config, tmp_path)
    prom = None
    try:
        body = ""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and "kdp_" not in body:
            try:
                body = fetch(f"http://127.0.0.1:{kdp_port}/metrics")
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.2)
        assert "kdp_update_apply_seconds_bucket" in body, body[:2000]
        check = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, check.stdout + check.stderr

        (tmp_path / "prometheus.yml").write_text(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: kdp\n"
            f"    static_configs:\n      - targets: ['127.0.0.1:{kdp_port}']\n")
        prom = subprocess.Popen([prometheus, f"--config.file={tmp_path / 'prometheus.yml'}",
                                 f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                 f"--web.listen-address=127.0.0.1:{prom_port}"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        query = f"http://127.0.0.1:{prom_port}/api/v1/query?query=kdp_port_rx_packets_total"
        series, targets = [], None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and prom.poll() is None:
            try:
                targets = json.loads(fetch(f"http://127.0.0.1:{prom_port}/api/v1/targets"))
                series = json.loads(fetch(query))["data"]["result"]
                if series:
                    break
            except (urllib.error.URLError, ConnectionError, KeyError, ValueError):
                pass
            time.sleep(0.5)
        assert series, f"Prometheus never scraped kdp: targets {targets}"
        assert {s["metric"]["port"] for s in series} == {"up0", "pod0"}
        health = [t["health"] for t in targets["data"]["activeTargets"]]
        assert health == ["up"], targets
    finally:
        if prom is not None:
            prom.terminate()
            prom.wait(timeout=30)
        run = stop_kdp(proc, stats_path)
    assert run.returncode == 0, run.stderr
