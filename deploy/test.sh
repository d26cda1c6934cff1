#!/bin/sh
# Static checks of everything under deploy/: no cluster, no root, about 15 s.
#
#   deploy/tools.sh && deploy/test.sh
#
# A missing tool is a failure, not a skip (agent/tests/integration/deploy.rs runs this script).
set -eu

deploy=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$deploy")
tools=${KERNSIGHT_DEPLOY_TOOLS:-$root/target/deploy-tools}
PATH=$tools/bin:$PATH
# The Kubernetes version whose schemas the manifests must satisfy (the kubectl shipped by tools.sh).
k8s_version=1.31.0

for tool in helm kubectl kubernetes-validate yamllint promtool python3; do
    command -v "$tool" >/dev/null || { echo "deploy/test.sh: $tool is missing: run deploy/tools.sh" >&2; exit 1; }
done

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
step() { echo "== $*" >&2; }

step yamllint
(cd "$deploy" && yamllint --strict -c .yamllint .)

step "promtool check rules, promtool test rules"
promtool check rules "$deploy/prometheus/rules.yaml"
(cd "$deploy/prometheus" && promtool test rules rules_test.yaml)

step "promtool check config: the shipped scrape configs (their secret files stood in for)"
mkdir -p "$out/scrape" "$out/secrets/kernsight-tls" "$out/secrets/kernsight-client" "$out/serviceaccount"
for f in kernsight-tls/ca.crt kernsight-client/tls.crt kernsight-client/tls.key; do : >"$out/secrets/$f"; done
: >"$out/serviceaccount/token"
sed -e "s|/etc/prometheus/secrets/|$out/secrets/|" \
    -e "s|/var/run/secrets/kubernetes.io/serviceaccount/|$out/serviceaccount/|" \
    "$deploy/prometheus/scrape-configs.yaml" >"$out/scrape/prometheus.yml"
promtool check config "$out/scrape/prometheus.yml"

step "the chart's copy of the rules is deploy/prometheus/rules.yaml"
cmp "$deploy/prometheus/rules.yaml" "$deploy/helm/kernsight/files/rules.yaml"

step "the chart's copy of the seccomp profile is deploy/kubernetes/seccomp-agent.json"
cmp "$deploy/kubernetes/seccomp-agent.json" "$deploy/helm/kernsight/files/seccomp-agent.json"

step "helm lint"
helm lint --strict "$deploy/helm/kernsight"
helm lint --strict "$deploy/helm/kernsight" \
    --set serviceMonitor.enabled=true,podMonitor.enabled=true,prometheusRule.enabled=true
helm lint --strict "$deploy/helm/kernsight" --set web.mode=proxy,serviceMonitor.enabled=true
helm lint --strict "$deploy/helm/kernsight" --set kubernetesApi.watchPods=true

step "the chart refuses a metrics port without authentication"
if helm template kernsight "$deploy/helm/kernsight" --set web.tls.clientAuthType=NoClientCert >/dev/null 2>&1; then
    echo "deploy/test.sh: web.mode=tls without client certificates nor basicAuthUsers rendered" >&2
    exit 1
fi

step "helm template, kubectl kustomize"
helm template kernsight "$deploy/helm/kernsight" --namespace kernsight >"$out/helm-default.yaml"
helm template kernsight "$deploy/helm/kernsight" --namespace kernsight \
    --set serviceMonitor.enabled=true,podMonitor.enabled=true,prometheusRule.enabled=true \
    --set config.syscalls.latency_histogram=true,criSockets={/run/k3s/containerd/containerd.sock} \
    --set dockerContainersPath= >"$out/helm-monitors.yaml"
helm template kernsight "$deploy/helm/kernsight" --namespace kernsight \
    --set serviceMonitor.enabled=true,podMonitor.enabled=true \
    --set web.tls.certManager.enabled=true,web.tls.certManager.issuerRef.name=kernsight-ca \
    --set-string 'web.basicAuthUsers.prometheus=$2y$10$X0h1gDsPszWURQaxFh.zoubFi6DXncSjhoQNJgRrnGs7EsimhC7zG' \
    --set web.basicAuthSecretName=kernsight-basic-auth >"$out/helm-cert-manager.yaml"
helm template kernsight "$deploy/helm/kernsight" --namespace kernsight \
    --set web.mode=proxy,serviceMonitor.enabled=true,podMonitor.enabled=true \
    --set 'web.proxy.allowedServiceAccounts[0].namespace=monitoring' \
    --set 'web.proxy.allowedServiceAccounts[0].name=prometheus-k8s' >"$out/helm-proxy.yaml"
# Least privilege follows the features: no networking program, no NET_ADMIN; TC alone keeps it.
helm template kernsight "$deploy/helm/kernsight" --namespace kernsight \
    --set config.network.cgroup_traffic=false,config.network.interface_counters=off >"$out/helm-no-network.yaml"
helm template kernsight "$deploy/helm/kernsight" --namespace kernsight \
    --set config.network.cgroup_traffic=false >"$out/helm-tc-only.yaml"
helm template kernsight "$deploy/helm/kernsight" --namespace kernsight \
    --set seccompProfile.type=Unconfined >"$out/helm-unconfined.yaml"
# The pod watch: its ClusterRole and the agent's token, with the agent alone and behind the proxy.
helm template kernsight "$deploy/helm/kernsight" --namespace kernsight \
    --set kubernetesApi.watchPods=true >"$out/helm-api-watch.yaml"
helm template kernsight "$deploy/helm/kernsight" --namespace kernsight \
    --set kubernetesApi.watchPods=true,web.mode=proxy >"$out/helm-api-watch-proxy.yaml"
if grep -q "api-watch" "$out/helm-default.yaml"; then
    echo "deploy/test.sh: the pod watch's ClusterRole is rendered without kubernetesApi.watchPods" >&2
    exit 1
fi
kubectl kustomize "$deploy/kubernetes" >"$out/kustomize.yaml"
kubectl kustomize "$deploy/kubernetes-proxy" >"$out/kustomize-proxy.yaml"

step "kubernetes-validate (Kubernetes $k8s_version, strict), monitoring.coreos.com by structure"
python3 "$deploy/check_manifests.py" "$k8s_version" "$out" \
    "$out/helm-default.yaml" "$out/helm-monitors.yaml" "$out/helm-cert-manager.yaml" "$out/helm-proxy.yaml" \
    "$out/helm-no-network.yaml" "$out/helm-tc-only.yaml" "$out/helm-unconfined.yaml:unconfined" \
    "$out/helm-api-watch.yaml" "$out/helm-api-watch-proxy.yaml" \
    "$out/kustomize.yaml" "$out/kustomize-proxy.yaml"
step "check_manifests.py refuses the privileges it guards against"
# refused SED WHY: the kustomize manifests edited with SED fail, for the reason WHY.
refused() {
    sed "$1" "$out/kustomize.yaml" >"$out/tampered.yaml"
    if python3 "$deploy/check_manifests.py" "$k8s_version" "$out" "$out/tampered.yaml" 2>"$out/refusal"; then
        echo "deploy/test.sh: check_manifests.py accepted the manifests edited with '$1'" >&2
        exit 1
    fi
    grep -q "$2" "$out/refusal" || { echo "deploy/test.sh: '$1' refused, but not for '$2':" >&2; cat "$out/refusal" >&2; exit 1; }
}
refused 's|path: /sys/fs/bpf/kernsight|path: /sys/fs/bpf|' "exposes the node's whole bpffs"
refused 's|localhostProfile: kernsight/agent.json|localhostProfile: other.json|' "must be Localhost"
refused 's|^\( *\)- NET_ADMIN$|&\n\1- SYS_ADMIN|' "capabilities must drop ALL"
refused '$a ---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: kernsight\nrules: [{apiGroups: [""], resources: [pods], verbs: [list]}]' \
    "ClusterRole/kernsight granted"
# check_manifests.py wrote each PrometheusRule's spec as a rules file.
for rules in "$out"/prometheusrule-*.yaml; do promtool check rules "$rules"; done

step "grafana dashboard"
python3 "$deploy/grafana/check_dashboard.py" "$deploy/grafana/kernsight.json" "$root/docs/metrics.md" \
    "$deploy/prometheus/rules.yaml"

echo "deploy/test.sh: all static checks passed" >&2
