#!/usr/bin/env bash
# Build kube-apiserver (Debian bookworm's kubernetes 1.20 source) and install etcd, for `make k8s-e2e`.
# Output: $1 (default .tools/kube-apiserver). About 6 minutes on a 2-core machine; skipped when present.
# Needs root and Debian's package archive. The vendored reflect2 1.0.1 breaks under Go >= 1.18
# (panics on dry-run, loses metadata.name): Debian's reflect2 1.0.2 replaces it before the build,
# which follows the Debian package's own recipe (debian/rules: GOPATH and `make WHAT=...`).
set -euo pipefail
out="${1:-.tools/kube-apiserver}"
mkdir -p "$(dirname "$out")"
out="$(cd "$(dirname "$out")" && pwd)/$(basename "$out")"
export DEBIAN_FRONTEND=noninteractive
if [ ! -x "$out" ] || ! command -v etcd >/dev/null; then
  if ! grep -rqs 'deb-src' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources > /etc/apt/sources.list.d/odeon-src.sources
  fi
  apt-get update -qq
  apt-get install -y -qq etcd-server golang-go dpkg-dev rsync golang-github-modern-go-reflect2-dev >/dev/null
fi
[ -x "$out" ] && exit 0
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
apt-get source -qq --download-only kubernetes >/dev/null 2>&1
dpkg-source -x --no-check ./kubernetes_*.dsc src >/dev/null
cd src
rm -rf vendor/github.com/modern-go/reflect2
cp -r /usr/share/gocode/src/github.com/modern-go/reflect2 vendor/github.com/modern-go/reflect2
export GOPATH="$PWD/.go" CGO_ENABLED=0 HOME="$work/home"
mkdir -p .go/src/k8s.io "$HOME"
ln -s ../../.. .go/src/k8s.io/kubernetes
make WHAT=cmd/kube-apiserver >/dev/null
cp _output/bin/kube-apiserver "$out"
echo "built $out"
