"""Kubernetes objects through kdpctl against a running kdp: `apply -f` of
Services and EndpointSlices as `kubectl get -o json` prints them, and `watch`
over a watch-event stream (`kubectl get services,endpointslices -A --watch
--output-watch-events -o json`). The fixtures are real-format objects written
by hand. The config file's own Service (default/web) stays alongside.
"""
import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_kdpctl import KDPCTL_BIN, Kdp  # noqa: E402
from kdp_harness import stop_kdp  # noqa: E402

API = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {
        "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"kind\":\"Service\"}\n"},
        "creationTimestamp": "2024-05-02T09:14:07Z",
        "labels": {"app": "api"},
        "managedFields": [{"apiVersion": "v1", "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {}},
                           "manager": "kubectl-client-side-apply", "operation": "Update",
                           "time": "2024-05-02T09:14:07Z"}],
        "name": "api",
        "namespace": "prod",
        "resourceVersion": "48213",
        "uid": "5c1b0a3e-8f5e-4b8e-9d7c-2f4b1f0c6e11",
    },
    "spec": {
        "clusterIP": "10.96.1.10",
        "clusterIPs": ["10.96.1.10"],
        "externalTrafficPolicy": "Cluster",
        "internalTrafficPolicy": "Cluster",
        "ipFamilies": ["IPv4"],
        "ipFamilyPolicy": "SingleStack",
        "ports": [{"name": "http", "nodePort": 30081, "port": 80, "protocol": "TCP", "targetPort": "http"}],
        "selector": {"app": "api"},
        "sessionAffinity": "None",
        "type": "NodePort",
    },
    "status": {"loadBalancer": {}},
}

API_SLICE = {
    "addressType": "IPv4",
    "apiVersion": "discovery.k8s.io/v1",
    "endpoints": [
        {"addresses": ["10.244.1.8"], "conditions": {"ready": True, "serving": True, "terminating": False},
         "nodeName": "node-a", "targetRef": {"kind": "Pod", "name": "api-6d4f9-aaaaa", "namespace": "prod"}},
        {"addresses": ["10.244.2.8"], "conditions": {"ready": True, "serving": True, "terminating": False},
         "nodeName": "node-b", "targetRef": {"kind": "Pod", "name": "api-6d4f9-bbbbb", "namespace": "prod"}},
        {"addresses": ["10.244.2.9"], "conditions": {"ready": False, "serving": False, "terminating": True},
         "nodeName": "node-b", "targetRef": {"kind": "Pod", "name": "api-6d4f9-ccccc", "namespace": "prod"}},
    ],
    "kind": "EndpointSlice",
    "metadata": {
        "generateName": "api-",
        "generation": 4,
        "labels": {"endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
                   "kubernetes.io/service-name": "api"},
        "name": "api-x7k2p",
        "namespace": "prod",
        "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": "api", "controller": True}],
        "resourceVersion": "48240",
    },
    "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
}

HEADLESS = {
    "apiVersion": "v1", "kind": "Service",
    "metadata": {"name": "db", "namespace": "prod"},
    "spec": {"clusterIP": "None", "clusterIPs": ["None"], "ports": [{"name": "pg", "port": 5432}], "type": "ClusterIP"},
}

FRONTENDS = {"10.96.1.10:80/TCP", "192.168.50.10:30081/TCP"}


def k8s_list(*items):
    return {"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": list(items)}


def entries(kdp):
    return {e["key"]: e for e in json.loads(kdp.ctl("service", "list", "--json").stdout)}


def api_backends(kdp):
    listed = entries(kdp)
    assert set(listed) >= FRONTENDS
    return sorted(f'{b["ip"]}:{b["port"]}' for b in listed["10.96.1.10:80/TCP"]["backends"])


@pytest.fixture
def kdp(tmp_path):
    node = Kdp(tmp_path)
    yield node
    run = stop_kdp(node.proc, node.stats_path)
    assert run.returncode == 0, run.stderr


def test_apply_list_of_service_and_slice(kdp):
    before = kdp.state()
    path = kdp.write("objects.json", json.dumps(k8s_list(API, API_SLICE, HEADLESS), indent=4))
    dry = kdp.ctl("diff", "-f", str(path)).stdout
    assert "+ 10.96.1.10:80/TCP prod/api" in dry and "dry run" in dry
    assert kdp.state() == before

    out = kdp.ctl("apply", "-f", str(path)).stdout
    assert "services: 2 added, 0 changed, 0 removed" in out
    assert "Service prod/api: applied" in out
    assert "EndpointSlice prod/api-x7k2p: applied" in out
    assert "Service prod/db: skipped (headless (clusterIP None))" in out
    listed = entries(kdp)
    assert set(listed) == FRONTENDS | {"10.96.0.10:80/TCP", "192.168.50.10:30080/TCP"}, "the config file's stay"
    # The named targetPort "http" is the slice's port 8080; the terminating, not serving endpoint is left out.
    assert api_backends(kdp) == ["10.244.1.8:8080", "10.244.2.8:8080"]
    node_port = listed["192.168.50.10:30081/TCP"]
    assert node_port["service"] == "prod/api" and node_port["kind"] == "node port" and node_port["port_name"] == "http"
    assert {(b["ip"], b["local"]) for b in node_port["backends"]} == {("10.244.1.8", True), ("10.244.2.8", False)}

    # A config file apply keeps the Kubernetes Services, and the other way round.
    result = json.loads(kdp.ctl("--json", "apply", "-f", str(kdp.write("orig.toml", kdp.text))).stdout)
    assert result["services"] == {"added": [], "changed": [], "removed": []}
    assert set(entries(kdp)) >= FRONTENDS
    # Applying the same objects again changes nothing.
    result = json.loads(kdp.ctl("--json", "apply", "-f", str(path)).stdout)
    assert result["services"] == {"added": [], "changed": [], "removed": []}
    assert [c["action"] for c in result["k8s"]] == ["applied", "applied", "skipped"]


def watch(kdp, events, *flags, rc=0, stdin=False):
    text = "\n".join(e if isinstance(e, str) else json.dumps(e) for e in events) + "\n"
    if stdin:
        proc = subprocess.run([KDPCTL_BIN, "--socket", str(kdp.sock), "watch", "-f", "-", *flags], input=text,
                              capture_output=True, text=True, timeout=60)
    else:
        path = kdp.write("events.json", text)
        proc = subprocess.run([KDPCTL_BIN, "--socket", str(kdp.sock), "watch", "-f", str(path), *flags],
                              capture_output=True, text=True, timeout=60)
    assert proc.returncode == rc, f"exit {proc.returncode}\n{proc.stdout}{proc.stderr}"
    return proc.stdout.splitlines()


def test_watch_stream_keeps_the_node_in_sync(kdp):
    before = kdp.state()
    out = watch(kdp, [{"type": "ADDED", "object": API}])
    assert out[0] == "ADDED Service prod/api: applied; services: 2 added, 0 changed, 0 removed"
    assert out[-1] == "1 events, 0 rejected"
    assert api_backends(kdp) == []

    out = watch(kdp, [{"type": "ADDED", "object": API_SLICE}])
    assert out[0] == "ADDED EndpointSlice prod/api-x7k2p: applied; services: 0 added, 2 changed, 0 removed"
    assert api_backends(kdp) == ["10.244.1.8:8080", "10.244.2.8:8080"]

    # The slice loses an endpoint; the event comes pretty-printed over several lines, on stdin.
    modified = copy.deepcopy(API_SLICE)
    del modified["endpoints"][1]
    modified["metadata"]["resourceVersion"] = "48311"
    out = watch(kdp, [json.dumps({"type": "MODIFIED", "object": modified}, indent=4)], stdin=True)
    assert out[0] == "MODIFIED EndpointSlice prod/api-x7k2p: applied; services: 0 added, 2 changed, 0 removed"
    assert api_backends(kdp) == ["10.244.1.8:8080"]

    out = watch(kdp, [{"type": "DELETED", "object": API}, {"type": "DELETED", "object": modified}])
    assert out[0] == "DELETED Service prod/api: deleted; services: 0 added, 0 changed, 2 removed"
    assert out[1] == "DELETED EndpointSlice prod/api-x7k2p: deleted; services: 0 added, 0 changed, 0 removed"
    assert kdp.state() == before

    # All four in one stream, as kubectl prints them.
    out = watch(kdp, [{"type": "ADDED", "object": API}, {"type": "ADDED", "object": API_SLICE},
                      {"type": "MODIFIED", "object": modified}, {"type": "DELETED", "object": API}], "--json")
    results = [json.loads(line) for line in out]
    assert [r["ok"] for r in results] == [True] * 4
    assert [len(r["result"]["services"]["removed"]) for r in results] == [0, 0, 0, 2]
    assert kdp.state() == before


def test_malformed_object_is_rejected_and_changes_nothing(kdp):
    kdp.ctl("apply", "-f", str(kdp.write("good.json", json.dumps(k8s_list(API, API_SLICE)))))
    before = kdp.state()

    bad = copy.deepcopy(API)
    bad["spec"]["ports"].append({"name": "x", "port": 81, "protocol": "SCTPX"})
    err = kdp.ctl("apply", "-f", str(kdp.write("bad.json", json.dumps(k8s_list(API_SLICE, bad)))), rc=1).stderr
    assert 'Service prod/api: spec.ports[1].protocol: unsupported "SCTPX"' in err
    assert kdp.state() == before

    # A clash with the config file's Services names the object and field.
    clash = copy.deepcopy(API)
    clash["metadata"]["namespace"] = "default"
    clash["metadata"]["name"] = "web"
    clash["spec"]["clusterIP"] = clash["spec"]["clusterIPs"][0] = "10.96.1.11"
    clash["spec"]["ports"][0]["nodePort"] = 30082
    err = kdp.ctl("apply", "-f", str(kdp.write("clash.json", json.dumps(clash))), rc=1).stderr
    assert 'Service default/web: metadata.name: "default/web" is also the name of service[0]' in err
    assert kdp.state() == before

    # In a watch stream a bad event is reported and the stream goes on; --strict stops there.
    slice_bad = copy.deepcopy(API_SLICE)
    slice_bad["endpoints"][0]["addresses"] = ["127.0.0.1"]
    gone = copy.deepcopy(API_SLICE)
    gone["endpoints"] = []
    events = [{"type": "MODIFIED", "object": slice_bad}, "not json", {"type": "MODIFIED", "object": gone}]
    out = watch(kdp, events)
    assert out[0].startswith("MODIFIED EndpointSlice prod/api-x7k2p: rejected: EndpointSlice prod/api-x7k2p: "
                             "endpoints[0].addresses[0]: must be a unicast address, got 127.0.0.1")
    assert out[1] == "? -: rejected: not valid JSON"
    assert out[2].startswith("MODIFIED EndpointSlice prod/api-x7k2p: applied")
    assert out[3] == "3 events, 2 rejected"
    assert api_backends(kdp) == []

    after = kdp.state()
    out = watch(kdp, [{"type": "MODIFIED", "object": slice_bad}, {"type": "MODIFIED", "object": API_SLICE}],
                "--strict", rc=1)
    assert len(out) == 1 and "rejected" in out[0]
    assert kdp.state() == after, "--strict stops before the next event"


def test_slice_event_refused_at_render_is_undone(kdp):
    """A slice event passes the object checks but fails against the node (an
    endpoint inside the service range): refused, and the slice kdp
    keeps is the one from before, as a later full render of the Service
    shows. A dry run of a good event changes nothing either."""
    kdp.ctl("apply", "-f", str(kdp.write("good.json", json.dumps(k8s_list(API, API_SLICE)))))
    before = kdp.state()
    clash = copy.deepcopy(API_SLICE)
    clash["endpoints"][0]["addresses"] = ["10.96.0.10"]  # a Service address
    clash["endpoints"][1]["addresses"] = ["10.244.2.77"]
    out = watch(kdp, [{"type": "MODIFIED", "object": clash}], rc=0)
    assert out[0] == ('MODIFIED EndpointSlice prod/api-x7k2p: rejected: EndpointSlice prod/api-x7k2p: '
                      'endpoints[0].addresses[0]: 10.96.0.10 is inside node.service_cidr 10.96.0.0/12')
    assert kdp.state() == before

    # The Service object again: its endpoints are rendered from the slices kdp holds.
    out = watch(kdp, [{"type": "MODIFIED", "object": API}])
    assert out[0] == "MODIFIED Service prod/api: applied; services: 0 added, 0 changed, 0 removed"
    assert api_backends(kdp) == ["10.244.1.8:8080", "10.244.2.8:8080"]

    fewer = copy.deepcopy(API_SLICE)
    del fewer["endpoints"][0]
    out = watch(kdp, [{"type": "MODIFIED", "object": fewer}], "--dry-run")
    assert out[0].startswith("MODIFIED EndpointSlice prod/api-x7k2p:") and "2 changed" in out[0], out
    assert kdp.state() == before
    out = watch(kdp, [{"type": "MODIFIED", "object": API}])
    assert api_backends(kdp) == ["10.244.1.8:8080", "10.244.2.8:8080"], "the dry run kept nothing"
