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
