#!/usr/bin/env bash
# Builds the test control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
# kubectl, kwok; the real node's kubelet and kube-proxy; metrics-server from
# metrics-server/go.mod, a module of its own so its dependencies never move the control plane's) from the pinned versions into a cache outside
# the clone, and prints the directory holding the binaries. A build whose inputs are unchanged
# is reused.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache_root="${KUBEFN_TOOLS:-$HOME/.cache/kubefn-tools}/testcluster"
# The key: every input of the build, and this script without its comments.
key="$( (cat "$here/go.mod" "$here/go.sum" "$here/etcd/main.go" "$here/metrics-server/go.mod" "$here/metrics-server/go.sum"
         grep -v '^ *#' "$here/build.sh") | sha256sum | cut -c1-16)"
out="$cache_root/$key/bin"
binaries=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy kwok metrics-server)

complete() {
  local b
  for b in "${binaries[@]}"; do [[ -x "$out/$b" ]] || return 1; done
}

if complete; then
  echo "$out"
  exit 0
fi

if ! command -v go >/dev/null; then
  echo "build.sh: the test control plane is built with Go 1.26, and 'go' is not on PATH" >&2
  exit 1
fi

k8s_version="$(awk '$1 == "k8s.io/kubernetes" {print $2}' "$here/go.mod")"
kwok_version="$(awk '$1 == "sigs.k8s.io/kwok" {print $2}' "$here/go.mod")"
minor="${k8s_version#v1.}"; minor="${minor%%.*}"
# Without these the binaries report v0.0.0, and clients that compare versions misbehave.
k8s_ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$k8s_version -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean -X k8s.io/client-go/pkg/version.gitVersion=$k8s_version"

mkdir -p "$out.partial"
start=$(date +%s)
echo "building the test control plane ($k8s_version, kwok $kwok_version, etcd from go.mod) into $out; about 10 minutes the first time on 2 cores (then cached)" >&2
cd "$here"
# Go 1.27's jsonv2 experiment breaks kube-openapi's /openapi/v2; harmless to disable on 1.26.
export GOEXPERIMENT="${GOEXPERIMENT:-nojsonv2}" CGO_ENABLED=0 GOFLAGS="-buildvcs=false"
go build -trimpath -ldflags "$k8s_ldflags" -o "$out.partial/" \
  k8s.io/kubernetes/cmd/kube-apiserver \
  k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler \
  k8s.io/kubernetes/cmd/kubectl \
  k8s.io/kubernetes/cmd/kubelet \
  k8s.io/kubernetes/cmd/kube-proxy >&2
go build -trimpath -ldflags "-s -w" \
  -o "$out.partial/kwok" sigs.k8s.io/kwok/cmd/kwok >&2
go build -trimpath -ldflags "-s -w" -o "$out.partial/etcd" ./etcd >&2
(cd metrics-server && go build -trimpath -ldflags "-s -w" -o "$out.partial/metrics-server" sigs.k8s.io/metrics-server/cmd/metrics-server) >&2
rm -rf "$out" && mv "$out.partial" "$out"
echo "built in $(( $(date +%s) - start )) s" >&2
echo "$out"
