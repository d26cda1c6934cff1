#!/bin/sh
# Builds the static binary and the image from it, with no registry involved:
#
#   deploy/image.sh [TAG]      default tag: localhost/kernsight:dev
#
# Then `podman save localhost/kernsight:dev | ...` into a registry or a node's image store.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
tag=${1:-localhost/kernsight:dev}
target=x86_64-unknown-linux-musl

cd "$root"
# What `cargo test` or `cargo run` set for the program they run (CARGO_PKG_NAME..., OUT_DIR):
# build scripts watch some of them (ring's), so a build started from a test would otherwise
# rebuild the whole static binary that the same build from a shell (or cargo xtask) has made.
for var in $(env | sed -n 's/^\(CARGO_PKG_[A-Z_]*\|CARGO_MANIFEST_[A-Z_]*\|CARGO_CRATE_NAME\|CARGO_BIN_NAME\|CARGO_PRIMARY_PACKAGE\|OUT_DIR\)=.*/\1/p'); do
    unset "$var"
done
# ring (rustls' crypto) compiles C: Debian's musl-tools names the compiler musl-gcc.
CC_x86_64_unknown_linux_musl=${CC_x86_64_unknown_linux_musl:-musl-gcc} \
    cargo +1.99.0 build --release -p kernsight --target "$target"
binary=$root/target/$target/release/kernsight
# A dynamically linked binary would start in a FROM scratch image only to fail on the loader.
file "$binary" | grep -q "static" || { echo "$binary is not static" >&2; exit 1; }

context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
cp "$binary" "$context/kernsight"
podman build --quiet --file "$root/deploy/Containerfile" --tag "$tag" "$context"
