#!/usr/bin/env bash
# Builds kube-router (kube-router/go.mod, a module of its own) into a cache outside the clone
# and prints the binary's path. The test node runs only its network policy controller: the
# bridge CNI plugin enforces no NetworkPolicy, and no policy plugin's image can be pulled here.
# Kept apart from build.sh so that its cache key never forces the control plane's rebuild.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache_root="${KUBEFN_TOOLS:-$HOME/.cache/kubefn-tools}/testcluster"
key="$( (cat "$here/kube-router/go.mod" "$here/kube-router/go.sum"
         grep -v '^ *#' "$here/build-kube-router.sh") | sha256sum | cut -c1-16)"
out="$cache_root/kube-router-$key/kube-router"
if [[ -x "$out" ]]; then
  echo "$out"
  exit 0
fi
command -v go >/dev/null || { echo "build-kube-router.sh: kube-router is built with Go 1.26, and 'go' is not on PATH" >&2; exit 1; }
mkdir -p "$(dirname "$out")"
start=$(date +%s)
echo "building kube-router into $out (about a minute cold, then cached)" >&2
(cd "$here/kube-router" && CGO_ENABLED=0 GOFLAGS="-buildvcs=false" \
  go build -trimpath -ldflags "-s -w" -o "$out.partial" github.com/cloudnativelabs/kube-router/v2/cmd/kube-router) >&2
mv "$out.partial" "$out"
echo "built in $(( $(date +%s) - start )) s" >&2
echo "$out"
