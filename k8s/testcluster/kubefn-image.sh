#!/usr/bin/env bash
# Builds kubefn's own image without a container engine, as k8s/Dockerfile describes it: the
# server binary at /app/kubefn (debug symbols stripped), the site at /app/site, the same
# environment, user 65532, on Debian bookworm with CA certificates (images.sh's cached base).
#
#   kubefn-image.sh OUT.tar BINARY [SITE_DIR]     (tag: kubefn:latest, what k8s/base deploys)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:?usage: kubefn-image.sh OUT.tar BINARY [SITE_DIR]}"
binary="${2:?usage: kubefn-image.sh OUT.tar BINARY [SITE_DIR]}"
site="${3:-}"
images="$("$here/images.sh")"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
strip --strip-debug -o "$work/kubefn" "$binary"
# Without a built site (the wasm bundle and styles) the pages still render on the server.
mkdir -p "$work/site/pkg"
[[ -n "$site" && -d "$site" ]] && cp -r "$site/." "$work/site/"
"$here/image.py" "$out" --tag kubefn:latest --rootfs "$images/rootfs/kubefn-base.tar" \
  --file "$work/kubefn:/app/kubefn" --dir "$work/site:/app/site" \
  --user 65532:65532 --workdir /app --entrypoint /app/kubefn \
  --env LEPTOS_SITE_ROOT=/app/site --env LEPTOS_SITE_PKG_DIR=pkg --env LEPTOS_OUTPUT_NAME=kubefn \
  --env KUBEFN_LISTEN=0.0.0.0:3000 --env KUBEFN_DATA_DIR=/data --env KUBEFN_RUNTIME=kubernetes
