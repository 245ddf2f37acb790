"""tools/demo's body: the two-node cluster of cluster.py, every path of the
Kubernetes network model tried with real clients, and a report of what each
saw. Run by tools/demo (which installs dependencies and builds first).

    demo.py            set up, try every path, report, stop kdp, clean up
    demo.py --keep     the same, but leave the cluster running for exploration
    demo.py --cleanup  stop kdp (printing its summary) and remove everything

Exits 1 if any path failed.
"""
import collections
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cluster as C  # noqa: E402
from cluster import INTERNET_IP, LB_IP, NODES, PODS, SERVICES  # noqa: E402

PREFIX = "kdp-demo"
STATE = Path("/tmp/kdp-demo")
SVC = {name.split("/")[1]: s for name, s in SERVICES.items()}


def say(text=""):
    print(text, flush=True)


class Report:
    def __init__(self):
        self.failures = 0

    def path(self, title, check):
        """Runs check() -> (ok, [lines]); prints the path's result."""
        try:
            ok, lines = check()
        except Exception as e:  # a path that breaks is a failed path, the others still run
            ok, lines = False, [f"error: {e}"]
        self.failures += not ok
        say(f"  {'ok  ' if ok else 'FAIL'} {title}")
        for line in lines:
            say(f"         {line}")


def who(body):
    """(server, source it saw) from a pod_server answer, or (None, None)."""
    return C.parse_saw(body) or (None, None)


def gets(cluster, host, url, n):
    """n GETs; [(server, seen)], failures as (None, 'curl error')."""
    out = []
    for _ in range(n):
        rc, body, err, _ = C.curl(cluster, host, url, timeout=5)
        out.append(who(body) if rc == 0 else (None, f"curl exit {rc}: {err}"))
    return out


def tally(answers):
    counts = collections.Counter(server for server, _ in answers)
    return ", ".join(f"{s} x{n}" for s, n in sorted(counts.items(), key=lambda kv: str(kv[0])))


def seen_text(answers):
    by = collections.defaultdict(set)
    for server, seen in answers:
        by[server].add(seen)
    return "; ".join(f"{s} saw {', '.join(sorted(v))}" for s, v in sorted(by.items(), key=lambda kv: str(kv[0])))


def ping_text(cluster, host, dst):
    got, sent, _ = C.ping(cluster, host, dst)
    return got == sent, f"ping {dst}: {got}/{sent} replies"


# ---------------------------------------------------------------------------
# The paths


def pod_to_pod(cluster, src, dst):
    def check():
        s, d = PODS[src], PODS[dst]
        ok_ping, ptext = ping_text(cluster, src, d.ip)
        rc, body, err, _ = C.curl(cluster, src, f"http://{d.ip}:{C.HTTP_PORT}/", timeout=5)
        server, seen = who(body)
        ok = ok_ping and rc == 0 and server == dst and seen == s.ip
        return ok, [f"{src} ({s.ip}, {s.node}) -> {dst} ({d.ip}, {d.node}): {ptext}; "
                    f"HTTP: {body or err!r} (no NAT: {dst} sees {src} itself)"]
    return check


def pod_to_cluster_ip(cluster, src):
    def check():
        svc = SVC["web"]
        answers = gets(cluster, src, f"http://{svc.cluster_ip}/", 12)
        nodes = {PODS[s].node for s, _ in answers if s in PODS}
        ok = (all(s in svc.endpoints for s, _ in answers) and len(nodes) == 2 and
              all(seen == PODS[src].ip for _, seen in answers))
        return ok, [f"{src} -> {svc.name} {svc.cluster_ip}:80, 12 connections: {tally(answers)} "
                    f"(backends on {len(nodes)} node(s))",
                    f"{seen_text(answers)} (pods are not masqueraded)"]
    return check


def affinity(cluster):
    def check():
        svc = SVC["sticky"]
        lines, ok = [], True
        for src in ("pod-a1", "pod-b2"):
            answers = gets(cluster, src, f"http://{svc.cluster_ip}/", 6)
            servers = {s for s, _ in answers}
            ok &= len(servers) == 1 and servers <= set(svc.endpoints)
            lines.append(f"{src} -> {svc.name} {svc.cluster_ip}:80 (sessionAffinity ClientIP), "
                         f"6 connections: {tally(answers)}")
        return ok, lines
    return check


def udp_service(cluster, src):
    def check():
        svc = SVC["echo"]
        stream = C.Stream(cluster, src, f"UDP:{svc.cluster_ip}:53")
        try:
            stream.send("hello")
            line = stream.read_line(timeout=3) or ""
        finally:
            stream.close()
        server, seen = who(line)
        ok = server in svc.endpoints and seen == PODS[src].ip and line.endswith("hello")
        return ok, [f"{src} -> {svc.name} {svc.cluster_ip}:53/UDP (socat): {line or 'no answer'!r}"]
    return check


def node_port(cluster, node, service):
    def check():
        svc, n = SVC[service], NODES[node]
        port = svc.ports[0].node_port
        answers = gets(cluster, "internet", f"http://{n.node_ip}:{port}/", 8)
        if svc.external_traffic_policy == "Local":
            ok = all(s in PODS and PODS[s].node == node and seen == INTERNET_IP for s, seen in answers)
            note = f"Local: only {node}'s endpoint, client source preserved"
        else:
            ok = all(s in svc.endpoints and seen == C.masquerade_source(node, s) for s, seen in answers)
            note = f"Cluster: any node's endpoint, masqueraded to {node}'s address towards it"
        return ok, [f"internet ({INTERNET_IP}) -> {n.node_ip}:{port} ({svc.name}), 8 connections: {tally(answers)}",
                    f"{seen_text(answers)} ({note})"]
    return check


def load_balancer(cluster):
    def check():
        svc = SVC["web"]
        answers = gets(cluster, "internet", f"http://{LB_IP}/", 6)
        ok = all(s in svc.endpoints and seen == C.masquerade_source("node-a", s) for s, seen in answers)
        return ok, [f"internet -> {LB_IP}:80 ({svc.name}'s load balancer IP, routed to node-a): {tally(answers)}",
                    f"{seen_text(answers)} (served by node-a, masqueraded)"]
    return check


def to_internet(cluster):
    def check():
        lines, ok = [], True
        for src in ("pod-a1", "pod-b1"):
            rc, body, err, _ = C.curl(cluster, src, f"http://{INTERNET_IP}:{C.HTTP_PORT}/", timeout=5)
            server, seen = who(body)
            node_ip = NODES[PODS[src].node].node_ip
            ok_ping, ptext = ping_text(cluster, src, INTERNET_IP)
            ok &= rc == 0 and server == "internet" and seen == node_ip and ok_ping
            lines.append(f"{src} -> {INTERNET_IP}:{C.HTTP_PORT}: {body or err!r} "
                         f"(masqueraded to {PODS[src].node}'s IP {node_ip}); {ptext}")
        return ok, lines
    return check


def hairpin(cluster):
    def check():
        svc = SVC["self"]
        rc, body, err, _ = C.curl(cluster, "pod-a1", f"http://{svc.cluster_ip}/", timeout=5)
        server, seen = who(body)
        ok = rc == 0 and server == "pod-a1" and seen == NODES["node-a"].gateway
        return ok, [f"pod-a1 -> {svc.name} {svc.cluster_ip}:80, whose only endpoint is pod-a1: {body or err!r} "
                    f"(masqueraded to the gateway, or pod-a1 would answer itself directly)"]
    return check


def no_endpoints(cluster):
    def check():
        svc = SVC["empty"]
        rc, body, err, took = C.curl(cluster, "pod-a1", f"http://{svc.cluster_ip}/", timeout=5)
        ok = rc == 7 and took < 2
        return ok, [f"pod-a1 -> {svc.name} {svc.cluster_ip}:80 (no endpoints): curl exit {rc} after {took:.2f} s "
                    f"(ICMP port unreachable: refused at once)"]
    return check


def run_paths(cluster, report):
    say("")
    say("kdp demo: the paths of the Kubernetes network model, with real clients")
    report.path("pod -> pod, same node (bridge)", pod_to_pod(cluster, "pod-a1", "pod-a2"))
    report.path("pod -> pod, across nodes (router, underlay)", pod_to_pod(cluster, "pod-a1", "pod-b1"))
    report.path("pod -> pod, across nodes, the other way", pod_to_pod(cluster, "pod-b2", "pod-a2"))
    report.path("pod -> ClusterIP", pod_to_cluster_ip(cluster, "pod-a1"))
    report.path("pod -> ClusterIP, from node B", pod_to_cluster_ip(cluster, "pod-b2"))
    report.path("pod -> ClusterIP, session affinity", affinity(cluster))
    report.path("pod -> ClusterIP, UDP", udp_service(cluster, "pod-b2"))
    for node in NODES:
        report.path(f"external -> NodePort on {node}, externalTrafficPolicy Cluster", node_port(cluster, node, "web"))
        report.path(f"external -> NodePort on {node}, externalTrafficPolicy Local", node_port(cluster, node, "local"))
    report.path("external -> LoadBalancer IP", load_balancer(cluster))
    report.path("pod -> internet (egress masquerade)", to_internet(cluster))
    report.path("hairpin: a pod through its own Service", hairpin(cluster))
    report.path("pod -> Service without endpoints", no_endpoints(cluster))


def counters(cluster):
    """While kdp runs (--keep): each node's counters, as kdpctl shows them."""
    for node in NODES:
        say("")
        say(f"kdp demo: {node}'s counters (kdpctl --socket {STATE}/{node}.sock stats)")
        proc = cluster.kdpctl(node, "stats", check=False)
        say("  " + (proc.stdout or proc.stderr).rstrip().replace("\n", "\n  "))


def describe():
    say("kdp demo: two nodes, each a kdp in its own network namespace")
    for node in NODES.values():
        pods = ", ".join(f"{p.name} {p.ip}" for p in PODS.values() if p.node == node.name)
        say(f"  {node.name}: node IP {node.node_ip}, pods {node.pod_cidr} ({pods})")
    say(f"  underlay {C.UNDERLAY_IP} joins the nodes and routes to the internet host {INTERNET_IP}, "
        f"and {LB_IP} to node-a")
    for svc in SERVICES.values():
        extra = [svc.type]
        if svc.type != "ClusterIP":
            extra.append(f"externalTrafficPolicy {svc.external_traffic_policy}")
            extra.append("nodePort " + ",".join(str(p.node_port) for p in svc.ports))
        if svc.session_affinity != "None":
            extra.append(f"sessionAffinity {svc.session_affinity}")
        if svc.load_balancer_ips:
            extra.append("loadBalancerIP " + ",".join(svc.load_balancer_ips))
        ports = ",".join(f"{p.port}/{p.protocol}" for p in svc.ports)
        say(f"  Service {svc.name} {svc.cluster_ip}:{ports} ({', '.join(extra)}) -> "
            f"{', '.join(svc.endpoints) or 'no endpoints'}")


def summaries():
    for node in NODES:
        out = STATE / f"{node}.out"
        if out.exists() and out.stat().st_size:
            say("")
            say(f"kdp demo: {node}'s counters (kdp's summary as it stopped)")
            say(out.read_text().rstrip())


def stop_one_node_demo():
    """The one-node demo this one replaced ran kdp in the root namespace
    (pid in STATE/kdp.pid, config STATE/node.toml); a --keep of it may still run."""
    pid_file = STATE / "kdp.pid"
    try:
        pid = int(pid_file.read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except (OSError, ValueError):
        return
    if f"--config {STATE}/node.toml".encode() in cmdline:
        os.kill(pid, signal.SIGTERM)
        C.wait_for("the one-node demo's kdp to stop", lambda: not Path(f"/proc/{pid}").exists(), timeout=20)
    pid_file.unlink(missing_ok=True)


def main():
    mode = {"": "run", "--keep": "keep", "--cleanup": "cleanup"}.get(sys.argv[1] if len(sys.argv) > 1 else "")
    if mode is None or len(sys.argv) > 2:
        print(__doc__, file=sys.stderr)
        return 2
    # SIGTERM cleans up as Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))

    if mode == "cleanup":
        stop_one_node_demo()
        had = bool(C.namespaces_with_prefix(PREFIX))
        C.remove_prefix(PREFIX, log=say)
        if had:
            summaries()
        say(f"kdp demo: cleaned up (namespaces {PREFIX}-*, kdp, servers; logs stay in {STATE})")
        return 0

    stop_one_node_demo()
    C.remove_prefix(PREFIX, log=say)  # whatever a previous run left
    for stale in ("kdp-demo-pa", "kdp-demo-pb", "kdp-demo-up"):  # the one-node demo's root-namespace veths
        subprocess.run(["ip", "link", "del", stale], capture_output=True, timeout=10)
    STATE.mkdir(parents=True, exist_ok=True)
    for pattern in ("node-*", "server-*"):  # the previous run's configs, logs, stats and sockets
        for f in STATE.glob(pattern):
            f.unlink()

    describe()
    cluster = C.Cluster(PREFIX, STATE, idle_sleep_us=100)
    report = Report()
    keep = False
    try:
        start = time.monotonic()
        try:
            cluster.up()
        except Exception as e:  # up() removed what it had made
            say(f"kdp demo: setting up the cluster failed: {e}")
            return 1
        say(f"kdp demo: namespaces {PREFIX}-*, both kdps and the pods' servers up in "
            f"{time.monotonic() - start:.1f} s (configs {STATE}/node-a.toml, node-b.toml)")
        run_paths(cluster, report)
        dead = cluster.kdp_alive()
        for node, tail in dead.items():
            say(f"kdp demo: {node}'s kdp is no longer running:\n{tail}")
            report.failures += 1
        keep = mode == "keep"
        if keep and not dead:
            counters(cluster)
    finally:
        if not keep:
            try:
                cluster.down()
            finally:
                summaries()
    if keep:
        a1, b1 = cluster.ns("pod-a1"), cluster.ns("pod-b1")
        say(f"""
kdp demo: left running (logs, configs and control sockets in {STATE}). Explore:
  ip netns exec {a1} curl http://{SVC['web'].cluster_ip}/          # a Service, answered from either node
  ip netns exec {a1} curl http://{PODS['pod-b1'].ip}:8080/       # pod-b1 on node-b
  ip netns exec {cluster.ns('internet')} curl http://{NODES['node-b'].node_ip}:30081/   # NodePort, Local
  ip netns exec {b1} ping {INTERNET_IP}
  {C.KDPCTL_BIN} --socket {STATE}/node-a.sock service list
  {C.KDPCTL_BIN} --socket {STATE}/node-b.sock conntrack list
  {C.KDPCTL_BIN} --socket {STATE}/node-a.sock endpoint del --service default/web --ip {PODS['pod-a2'].ip}
  ip netns exec {a1} bash                               # a shell in pod-a1
Stop kdp (printing its summaries) and remove everything:
  tools/demo --cleanup""")
    if report.failures:
        say(f"kdp demo: {report.failures} path(s) FAILED")
        return 1
    say("kdp demo: every path works")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
