#!/usr/bin/env python3
"""Validates rendered manifests: core kinds against the Kubernetes schemas (kubernetes-validate,
strict), prometheus-operator and cert-manager kinds by structure (no schema ships for them), and
kernsight's own invariants (least privilege, probes, read-only host paths, a metrics port that is
TLS with authentication or loopback behind kube-rbac-proxy).

usage: check_manifests.py K8S_VERSION OUT_DIR MANIFEST...
Writes each PrometheusRule's spec to OUT_DIR/prometheusrule-N.yaml for `promtool check rules`.
"""
import os
import subprocess
import sys
import tomllib

import yaml

MONITORING = "monitoring.coreos.com/v1"
CERT_MANAGER = "cert-manager.io/v1"
# What the agent needs; docs/deploy.md says why for each.
CAPABILITIES = {"BPF", "PERFMON", "NET_ADMIN"}
# The pod's memory beside the eBPF map budget (bpf::budget::USER_SPACE_MEBIBYTES; docs/deploy.md,
# "Memory"): limit = request = bpf.map_memory_budget_mebibytes + this.
USER_SPACE_MEBIBYTES = 128


def fail(where, why):
    sys.exit(f"check_manifests: {where}: {why}")


def check_daemonset(name, ds):
    pod = ds["spec"]["template"]["spec"]
    if not pod.get("hostPID"):
        fail(name, "hostPID must be true (conmon command lines)")
    if not pod.get("hostNetwork"):
        fail(name, "hostNetwork must be true (TC on the node's interfaces, the node's conntrack)")
    if pod.get("dnsPolicy") != "ClusterFirstWithHostNet":
        fail(name, "dnsPolicy must be ClusterFirstWithHostNet with hostNetwork")
    if pod.get("priorityClassName") != "system-node-critical":
        fail(name, "priorityClassName must be system-node-critical")
    if {"operator": "Exists"} not in pod.get("tolerations", []):
        fail(name, "the agent must tolerate every taint")
    if pod.get("automountServiceAccountToken") is not False:
        fail(name, "automountServiceAccountToken must be false (a token only by volume, where needed)")
    containers = {c["name"]: c for c in pod["containers"]}
    container = containers.get("kernsight") or fail(name, "no container named kernsight")
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
    check_metrics_port(name, pod, containers, container)
    env = {e["name"]: e for e in container.get("env", [])}
    if env.get("NODE_NAME", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") != "spec.nodeName":
        fail(name, "NODE_NAME must come from spec.nodeName")
    args = container.get("args", [])
    if not any(a.startswith("--config=") for a in args):
        fail(name, f"args must pass --config: {args}")
    for key in ("requests", "limits"):
        if not container.get("resources", {}).get(key):
            fail(name, f"resources.{key} missing")


def check_metrics_port(name, pod, containers, agent):
    """The metrics port is never plain HTTP beyond the node's loopback: the agent serves TLS
    with a web config that authenticates scrapers, or listens on loopback behind
    kube-rbac-proxy. kubelet's probes use the plain loopback health port."""
    args = agent.get("args", [])
    listen = next((a.split("=", 1)[1] for a in args if a.startswith("--listen=")), None)
    health = next((a.split("=", 1)[1] for a in args if a.startswith("--health-listen=")), None)
    if not health or not health.startswith("127.0.0.1:"):
        fail(name, f"--health-listen must be on 127.0.0.1 (kubelet's probes): {args}")
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = agent[probe]["httpGet"]
        if get.get("path") != path or get.get("host") != "127.0.0.1" or str(get.get("port")) != health.split(":")[1]:
            fail(name, f"{probe} must GET {path} on the health port {health}: {get}")
    proxy = containers.get("kube-rbac-proxy")
    if listen == "0.0.0.0:9464":
        if not any(a.startswith("--web.config.file=") for a in args):
            fail(name, "a non-loopback --listen needs --web.config.file (TLS and authentication)")
        if proxy:
            fail(name, "kube-rbac-proxy beside an agent that serves the port itself")
        return
    if not listen or not listen.startswith("127.0.0.1:"):
        fail(name, f"--listen must be 0.0.0.0:9464 with a web config, or 127.0.0.1 behind a proxy: {args}")
    if not proxy:
        fail(name, "an agent on loopback needs the kube-rbac-proxy container to serve the port")
    proxy_args = proxy.get("args", [])
    if f"--upstream=http://{listen}/" not in proxy_args or "--allow-paths=/metrics" not in proxy_args:
        fail(name, f"kube-rbac-proxy must forward /metrics only to the agent at {listen}: {proxy_args}")
    sc = proxy["securityContext"]
    if not sc.get("runAsNonRoot") or sc.get("allowPrivilegeEscalation") is not False:
        fail(name, "kube-rbac-proxy runs as non-root without privilege escalation")
    if sc.get("capabilities", {}).get("drop") != ["ALL"] or sc.get("capabilities", {}).get("add"):
        fail(name, "kube-rbac-proxy drops every capability")
    if [p["containerPort"] for p in proxy.get("ports", [])] != [9464]:
        fail(name, "kube-rbac-proxy serves the metrics port 9464")


# The rules each ClusterRole may hold: the agent's reads, kube-rbac-proxy's reviews, and the
# metrics reader that scrapers are bound to.
AGENT_RULE = ({""}, {"pods", "nodes"}, {"get", "list", "watch"})
PROXY_RULES = [
    {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
    {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"]},
]
READER_RULES = [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]
# kubernetesApi.watchPods: the node's pods and the owners of their owners.
WATCH_RULES = [
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["apps"], "resources": ["replicasets"], "verbs": ["get"]},
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get"]},
]


def check_cluster_role(name, role):
    rules = role["rules"]
    if rules in (PROXY_RULES, READER_RULES, WATCH_RULES):
        return
    for rule in rules:
        groups, resources, verbs = AGENT_RULE
        if set(rule.get("apiGroups", [])) != groups or set(rule.get("resources", [])) - resources:
            fail(name, f"only pods and nodes may be read: {rule}")
        if set(rule["verbs"]) - verbs:
            fail(name, f"only get, list, watch: {rule}")


def check_certificate(name, doc):
    spec = doc.get("spec") or fail(name, "no spec")
    for key in ("secretName", "issuerRef", "usages"):
        if not spec.get(key):
            fail(name, f"spec.{key} missing")
    if not spec["issuerRef"].get("name"):
        fail(name, "spec.issuerRef.name missing")
    if not (spec.get("dnsNames") or spec.get("commonName")):
        fail(name, "a Certificate names its subject (dnsNames or commonName)")
    if spec.get("privateKey", {}).get("rotationPolicy") != "Always":
        fail(name, "a renewal rotates the key (privateKey.rotationPolicy: Always)")


def check_monitor_auth(name, endpoint):
    """A monitor scrapes the port the way the DaemonSet serves it: HTTPS, with a client
    certificate or basic auth (tls mode) or a service account token (proxy mode)."""
    if endpoint.get("scheme") != "https":
        fail(name, "the metrics port serves HTTPS: scheme https")
    tls = endpoint.get("tlsConfig") or fail(name, "tlsConfig missing")
    if "bearerTokenFile" in endpoint:
        return
    if not tls.get("ca") or not tls.get("serverName"):
        fail(name, "tlsConfig verifies the agent: ca and serverName")
    if not (tls.get("cert") and tls.get("keySecret")) and not endpoint.get("basicAuth"):
        fail(name, "the monitor authenticates: a client certificate or basicAuth")


def check_monitor(name, doc, endpoints_key):
    spec = doc.get("spec") or fail(name, "no spec")
    if not spec.get("selector", {}).get("matchLabels"):
        fail(name, "spec.selector.matchLabels missing")
    endpoints = spec.get(endpoints_key) or fail(name, f"spec.{endpoints_key} missing")
    for endpoint in endpoints:
        if endpoint.get("port") != "metrics" or endpoint.get("path") != "/metrics":
            fail(name, f"endpoint must scrape port metrics, /metrics: {endpoint}")
        check_monitor_auth(name, endpoint)
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


def check_memory(manifest, docs):
    """The agent's memory request and limit are its map budget plus the user-space allowance."""
    budgets = []
    for doc in docs:
        if doc["kind"] == "ConfigMap" and "kernsight.toml" in doc.get("data", {}):
            config = tomllib.loads(doc["data"]["kernsight.toml"])
            budget = config.get("bpf", {}).get("map_memory_budget_mebibytes")
            if not isinstance(budget, int):
                fail(manifest, "kernsight.toml must set bpf.map_memory_budget_mebibytes (the pod's memory follows it)")
            budgets.append(budget)
    if len(budgets) != 1:
        fail(manifest, f"expected one kernsight.toml ConfigMap, found {len(budgets)}")
    expected = f"{budgets[0] + USER_SPACE_MEBIBYTES}Mi"
    for doc in docs:
        if doc["kind"] != "DaemonSet":
            continue
        agent = next(c for c in doc["spec"]["template"]["spec"]["containers"] if c["name"] == "kernsight")
        for key in ("requests", "limits"):
            memory = agent["resources"][key].get("memory")
            if memory != expected:
                fail(manifest, f"resources.{key}.memory is {memory}: bpf.map_memory_budget_mebibytes "
                     f"{budgets[0]} + {USER_SPACE_MEBIBYTES}Mi = {expected} (docs/deploy.md, Memory)")


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
            if doc["apiVersion"] == CERT_MANAGER:
                if kind != "Certificate":
                    fail(name, "unexpected kind")
                check_certificate(name, doc)
                continue
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
        check_memory(manifest, docs)
        core_path = os.path.join(out_dir, "core-" + os.path.basename(manifest))
        with open(core_path, "w") as f:
            yaml.safe_dump_all(core, f)
        subprocess.run(
            ["kubernetes-validate", "--strict", "--quiet", "-k", version, core_path], check=True
        )
        print(f"check_manifests: {manifest}: {len(docs)} objects valid", file=sys.stderr)


if __name__ == "__main__":
    main()
