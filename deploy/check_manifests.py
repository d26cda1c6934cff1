#!/usr/bin/env python3
"""Validates rendered manifests: core kinds against the Kubernetes schemas (kubernetes-validate,
strict), prometheus-operator kinds by structure (no schema ships for them), and kernsight's own
invariants (least privilege, probes, read-only host paths).

usage: check_manifests.py K8S_VERSION OUT_DIR MANIFEST...
Writes each PrometheusRule's spec to OUT_DIR/prometheusrule-N.yaml for `promtool check rules`.
"""
import os
import subprocess
import sys

import yaml

MONITORING = "monitoring.coreos.com/v1"
# What the agent needs; docs/deploy.md says why for each.
CAPABILITIES = {"BPF", "PERFMON", "NET_ADMIN"}


def fail(where, why):
    sys.exit(f"check_manifests: {where}: {why}")


def check_daemonset(name, ds):
    pod = ds["spec"]["template"]["spec"]
    if not pod.get("hostPID"):
        fail(name, "hostPID must be true (conmon command lines)")
    if not pod.get("hostNetwork"):
        fail(name, "hostNetwork must be true (XDP on the node's interfaces, the node's conntrack)")
    if pod.get("dnsPolicy") != "ClusterFirstWithHostNet":
        fail(name, "dnsPolicy must be ClusterFirstWithHostNet with hostNetwork")
    if pod.get("priorityClassName") != "system-node-critical":
        fail(name, "priorityClassName must be system-node-critical")
    if {"operator": "Exists"} not in pod.get("tolerations", []):
        fail(name, "the agent must tolerate every taint")
    (container,) = pod["containers"]
    sc = container["securityContext"]
    expected = {
        "privileged": False,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsUser": 0,
    }
    for key, value in expected.items():
        if sc.get(key) != value:
            fail(name, f"securityContext.{key} must be {value}")
    caps = sc["capabilities"]
    if caps.get("drop") != ["ALL"] or set(caps.get("add", [])) != CAPABILITIES:
        fail(name, f"capabilities must drop ALL and add exactly {sorted(CAPABILITIES)}: {caps}")
    for mount in container["volumeMounts"]:
        # bpffs alone is writable: the agent pins its counters there (docs/deploy.md).
        writable = mount["mountPath"] == "/sys/fs/bpf"
        if bool(mount.get("readOnly")) == writable:
            fail(name, f"volume {mount['name']} must be mounted {'read-write' if writable else 'read-only'}")
    if container["livenessProbe"]["httpGet"]["path"] != "/healthz":
        fail(name, "liveness must probe /healthz")
    if container["readinessProbe"]["httpGet"]["path"] != "/readyz":
        fail(name, "readiness must probe /readyz")
    env = {e["name"]: e for e in container.get("env", [])}
    if env.get("NODE_NAME", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") != "spec.nodeName":
        fail(name, "NODE_NAME must come from spec.nodeName")
    args = container.get("args", [])
    if not any(a.startswith("--config=") for a in args) or "--listen=0.0.0.0:9464" not in args:
        fail(name, f"args must pass --config and --listen=0.0.0.0:9464: {args}")
    for key in ("requests", "limits"):
        if not container.get("resources", {}).get(key):
            fail(name, f"resources.{key} missing")


def check_cluster_role(name, role):
    for rule in role["rules"]:
        if rule.get("apiGroups") != [""] or set(rule["resources"]) - {"pods", "nodes"}:
            fail(name, f"only pods and nodes may be read: {rule}")
        if set(rule["verbs"]) - {"get", "list", "watch"}:
            fail(name, f"only get, list, watch: {rule}")


def check_monitor(name, doc, endpoints_key):
    spec = doc.get("spec") or fail(name, "no spec")
    if not spec.get("selector", {}).get("matchLabels"):
        fail(name, "spec.selector.matchLabels missing")
    endpoints = spec.get(endpoints_key) or fail(name, f"spec.{endpoints_key} missing")
    for endpoint in endpoints:
        if endpoint.get("port") != "metrics" or endpoint.get("path") != "/metrics":
            fail(name, f"endpoint must scrape port metrics, /metrics: {endpoint}")
        targets = {r.get("targetLabel") for r in endpoint.get("relabelings", [])}
        if not {"node", "job"} <= targets:
            fail(name, "relabelings must set node and job (the rules and dashboard use them)")


def check_prometheus_rule(name, doc, out_dir, index):
    groups = doc.get("spec", {}).get("groups") or fail(name, "spec.groups missing")
    for group in groups:
        for rule in group.get("rules") or fail(name, f"group {group.get('name')} has no rules"):
            if "expr" not in rule or ("alert" in rule) == ("record" in rule):
                fail(name, f"a rule needs expr and one of alert, record: {rule}")
    path = os.path.join(out_dir, f"prometheusrule-{index}.yaml")
    with open(path, "w") as f:
        yaml.safe_dump({"groups": groups}, f)


def main():
    version, out_dir, manifests = sys.argv[1], sys.argv[2], sys.argv[3:]
    rules = 0
    for manifest in manifests:
        with open(manifest) as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        if not docs:
            fail(manifest, "renders nothing")
        core = []
        kinds = set()
        for doc in docs:
            kind, name = doc["kind"], f"{manifest}: {doc['kind']}/{doc['metadata']['name']}"
            kinds.add(kind)
            if doc["apiVersion"] == MONITORING:
                if kind == "ServiceMonitor":
                    check_monitor(name, doc, "endpoints")
                elif kind == "PodMonitor":
                    check_monitor(name, doc, "podMetricsEndpoints")
                elif kind == "PrometheusRule":
                    rules += 1
                    check_prometheus_rule(name, doc, out_dir, rules)
                else:
                    fail(name, "unexpected kind")
                continue
            core.append(doc)
            if kind == "DaemonSet":
                check_daemonset(name, doc)
            elif kind == "ClusterRole":
                check_cluster_role(name, doc)
        for kind in ("DaemonSet", "ConfigMap", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Service"):
            if kind not in kinds:
                fail(manifest, f"no {kind}")
        core_path = os.path.join(out_dir, "core-" + os.path.basename(manifest))
        with open(core_path, "w") as f:
            yaml.safe_dump_all(core, f)
        subprocess.run(
            ["kubernetes-validate", "--strict", "--quiet", "-k", version, core_path], check=True
        )
        print(f"check_manifests: {manifest}: {len(docs)} objects valid", file=sys.stderr)


if __name__ == "__main__":
    main()
