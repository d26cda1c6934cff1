#!/usr/bin/env python3
"""Validates rendered manifests: core kinds against the Kubernetes schemas (kubernetes-validate,
strict), prometheus-operator and cert-manager kinds by structure (no schema ships for them), and
kernsight's own invariants (least privilege, probes, read-only host paths, a metrics port that is
TLS with authentication or loopback behind kube-rbac-proxy, only the agent's own bpffs
directory, its own seccomp profile, NET_ADMIN only for the networking programs, no ClusterRole for
the agent).

usage: check_manifests.py K8S_VERSION OUT_DIR MANIFEST[:unconfined]...
A manifest marked `:unconfined` was rendered with the fallback seccompProfile.type=Unconfined;
every other one must run the agent under the shipped Localhost profile.
Writes each PrometheusRule's spec to OUT_DIR/prometheusrule-N.yaml for `promtool check rules`.
"""
import json
import os
import subprocess
import sys
import tomllib

import yaml

MONITORING = "monitoring.coreos.com/v1"
CERT_MANAGER = "cert-manager.io/v1"
# What the agent needs; docs/deploy.md says why for each. NET_ADMIN only with a networking program
# (cgroup_skb for network.cgroup_traffic, TC or XDP for network.interface_counters).
CAPABILITIES = {"BPF", "PERFMON"}
NETWORK_CAPABILITY = "NET_ADMIN"
# The host's bpffs directory of the agent, mounted alone where bpf.pin_dir points: other tools'
# pins (Cilium's maps ...) stay out of the pod's reach.
PIN_HOST_DIR = "/sys/fs/bpf/kernsight"
PIN_MOUNT = "/sys/fs/bpf"
# The shipped seccomp profile, as the DaemonSet names it under the kubelet's seccomp root.
SECCOMP_PROFILE = "kernsight/agent.json"
# What every agent container mounts besides its pin directory (docs/deploy.md says why).
REQUIRED_MOUNTS = {"/etc/kernsight", "/sys/kernel/btf", "/sys/kernel/tracing", "/sys/fs/cgroup", "/host/usr"}
DEPLOY = os.path.dirname(os.path.abspath(__file__))
SECCOMP_FILE = os.path.join(DEPLOY, "kubernetes", "seccomp-agent.json")
# The pod's memory beside the eBPF map budget (bpf::budget::USER_SPACE_MEBIBYTES; docs/deploy.md,
# "Memory"): limit = request = bpf.map_memory_budget_mebibytes + this.
USER_SPACE_MEBIBYTES = 128


def fail(where, why):
    sys.exit(f"check_manifests: {where}: {why}")


def agent_config(docs):
    """The agent's kernsight.toml, parsed (check_memory asserts there is exactly one)."""
    for doc in docs:
        if doc["kind"] == "ConfigMap" and "kernsight.toml" in doc.get("data", {}):
            return tomllib.loads(doc["data"]["kernsight.toml"])
    return {}


def needs_net_admin(config):
    """Whether the configuration turns on a networking program (the agent's defaults: both on)."""
    network = config.get("network", {})
    return network.get("cgroup_traffic", True) or network.get("interface_counters", "tc") != "off"


def check_bpffs(name, pod, container, config):
    """Only the agent's own bpffs directory is mounted, writable, where bpf.pin_dir points;
    nothing mounts the host's /sys/fs/bpf (or a directory above it), and no mount propagates."""
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for volume in volumes.values():
        path = volume.get("hostPath", {}).get("path")
        if path is None or path == PIN_HOST_DIR:
            continue
        if PIN_MOUNT == path or PIN_MOUNT.startswith(path.rstrip("/") + "/"):
            fail(name, f"hostPath {path} exposes the node's whole bpffs: mount {PIN_HOST_DIR} alone")
    for c in pod["containers"] + pod.get("initContainers", []):
        for mount in c.get("volumeMounts", []):
            if mount.get("mountPropagation", "None") != "None":
                fail(name, f"{c['name']}: volume {mount['name']} must not propagate mounts")
    mounts = [m for m in container["volumeMounts"] if m["mountPath"] == PIN_MOUNT]
    if len(mounts) != 1:
        fail(name, f"the agent must mount its pin directory at {PIN_MOUNT}")
    host = volumes.get(mounts[0]["name"], {}).get("hostPath") or fail(name, f"{PIN_MOUNT} is not a hostPath")
    if host != {"path": PIN_HOST_DIR, "type": "DirectoryOrCreate"}:
        fail(name, f"{PIN_MOUNT} must be the hostPath {PIN_HOST_DIR} (DirectoryOrCreate): {host}")
    pin_dir = config.get("bpf", {}).get("pin_dir")
    if pin_dir != PIN_MOUNT:
        fail(name, f"bpf.pin_dir must be {PIN_MOUNT}, the mounted directory (it is {pin_dir!r})")


def check_seccomp(name, sc, docs, unconfined):
    """The agent runs under the shipped Localhost profile, whose text the manifests carry in a
    ConfigMap; Unconfined only where the fallback was asked for."""
    profile = sc.get("seccompProfile") or fail(name, "securityContext.seccompProfile missing")
    if unconfined:
        if profile != {"type": "Unconfined"}:
            fail(name, f"the fallback renders seccompProfile type Unconfined: {profile}")
        return
    if profile != {"type": "Localhost", "localhostProfile": SECCOMP_PROFILE}:
        fail(name, f"seccompProfile must be Localhost {SECCOMP_PROFILE}: {profile}")
    with open(SECCOMP_FILE) as f:
        shipped = json.load(f)
    if shipped.get("defaultAction") != "SCMP_ACT_ERRNO" or not any(
        "bpf" in rule.get("names", []) for rule in shipped.get("syscalls", [])
    ):
        fail(SECCOMP_FILE, "the profile denies by default (SCMP_ACT_ERRNO) and allows bpf")
    carried = [
        json.loads(doc["data"]["agent.json"])
        for doc in docs
        if doc["kind"] == "ConfigMap" and "agent.json" in doc.get("data", {})
    ]
    if carried != [shipped]:
        fail(name, f"one ConfigMap must carry {SECCOMP_FILE} as agent.json")


def check_daemonset(name, ds, docs, unconfined):
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
    config = agent_config(docs)
    expected_caps = CAPABILITIES | ({NETWORK_CAPABILITY} if needs_net_admin(config) else set())
    caps = sc["capabilities"]
    if caps.get("drop") != ["ALL"] or set(caps.get("add", [])) != expected_caps:
        fail(name, f"capabilities must drop ALL and add exactly {sorted(expected_caps)}: {caps}")
    check_seccomp(name, sc, docs, unconfined)
    check_bpffs(name, pod, container, config)
    missing = REQUIRED_MOUNTS - {m["mountPath"] for m in container["volumeMounts"]}
    if missing:
        fail(name, f"the agent lacks the mounts {sorted(missing)} (a patch that emptied volumeMounts?)")
    for mount in container["volumeMounts"]:
        # The pin directory alone is writable: the agent pins its counters there (docs/deploy.md).
        writable = mount["mountPath"] == PIN_MOUNT
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


# The ClusterRoles kube-rbac-proxy needs (proxy mode): its reviews, and the metrics reader that
# scrapers are bound to. The agent itself calls no API and gets none.
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


def check_rbac(manifest, docs):
    """The agent calls no API by default: no ClusterRole or binding but kube-rbac-proxy's (proxy
    mode), and no namespaced Role either."""
    proxy = any(
        c["name"] == "kube-rbac-proxy"
        for d in docs
        if d["kind"] == "DaemonSet"
        for c in d["spec"]["template"]["spec"]["containers"]
    )
    roles = {d["metadata"]["name"]: d["rules"] for d in docs if d["kind"] == "ClusterRole"}
    for kind in ("Role", "RoleBinding"):
        if any(d["kind"] == kind for d in docs):
            fail(manifest, f"a {kind}: the agent needs none")
    for role, rules in roles.items():
        if rules != WATCH_RULES and rules not in ((PROXY_RULES, READER_RULES) if proxy else ()):
            fail(manifest, f"ClusterRole/{role} granted: only kube-rbac-proxy's roles, in proxy mode")
    for binding in (d for d in docs if d["kind"] == "ClusterRoleBinding"):
        if binding["roleRef"]["name"] not in roles:
            fail(manifest, f"ClusterRoleBinding/{binding['metadata']['name']} binds a role not rendered here")


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
    version, out_dir, arguments = sys.argv[1], sys.argv[2], sys.argv[3:]
    rules = 0
    for argument in arguments:
        manifest, _, mark = argument.partition(":")
        if mark not in ("", "unconfined"):
            fail(argument, "the only mark is :unconfined")
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
                check_daemonset(name, doc, docs, mark == "unconfined")
        for kind in ("DaemonSet", "ConfigMap", "ServiceAccount", "Service"):
            if kind not in kinds:
                fail(manifest, f"no {kind}")
        check_rbac(manifest, docs)
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
