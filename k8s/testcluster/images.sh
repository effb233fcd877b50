#!/usr/bin/env bash
# Builds the real test node's images into a cache outside the clone and prints the directory
# holding their archives (what `ctr images import` takes). No registry is reachable, so:
#   pause.tar   registry.k8s.io/pause:3.6, containerd 1.6's default sandbox image, from
#               images/pause (a static Go program)
#   echo.tar    kubefn.test/echo:1, an image function (images/echo)
#   python.tar  kubefn.test/python:3.11-bookworm, Debian bookworm with python3 and pip
#   node.tar    kubefn.test/node:18-bookworm, Debian bookworm with nodejs and npm
#   rootfs/kubefn-base.tar  Debian bookworm with CA certificates: kubefn's own image's base
#               (not an image itself; kubefn-image.sh adds the binary and the site)
# The runtime images are root filesystems made by mmdebstrap from Debian's archive (about a
# minute each); image.py wraps each as a one-layer image. Unchanged inputs reuse the cache.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache_root="${KUBEFN_TOOLS:-$HOME/.cache/kubefn-tools}/testcluster-images"
key="$( (cat "$here/image.py" "$here/images/pause/main.go" "$here/images/echo/main.go" "$here/go.mod"
         grep -v '^ *#' "$here/images.sh") | sha256sum | cut -c1-16)"
out="$cache_root/$key"
archives=(pause echo python node)

complete() {
  local a
  for a in "${archives[@]}"; do [[ -s "$out/$a.tar" ]] || return 1; done
  [[ -s "$out/rootfs/kubefn-base.tar" ]]
}
if complete; then
  echo "$out"
  exit 0
fi
for tool in go mmdebstrap; do
  command -v "$tool" > /dev/null || {
    echo "images.sh: building the test node's images needs '$tool' (apt-get install mmdebstrap; Go 1.26)" >&2
    exit 1
  }
done

start=$(date +%s)
mkdir -p "$out.partial"
work="$(mktemp -d "$cache_root/work.XXXXXX")"
trap 'rm -rf "$work"' EXIT
echo "building the test node's images into $out (about 2 minutes the first time, then cached)" >&2
(cd "$here" && CGO_ENABLED=0 GOFLAGS=-buildvcs=false go build -trimpath -ldflags "-s -w" -o "$work/" ./images/pause ./images/echo) >&2
"$here/image.py" "$out.partial/pause.tar" --tag registry.k8s.io/pause:3.6 --file "$work/pause:/pause" --user 65535 --entrypoint /pause
"$here/image.py" "$out.partial/echo.tar" --tag kubefn.test/echo:1 --file "$work/echo:/echo" --user 65534 --entrypoint /echo

# Documentation, manual pages and translations are left out: a third of the size.
slim=(--dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*'
      --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*')
runtime_image() { # name, tag, packages
  mmdebstrap --quiet --variant=apt --include="$3" "${slim[@]}" bookworm "$work/$1-rootfs.tar" >&2
  "$here/image.py" "$out.partial/$1.tar" --tag "$2" --rootfs "$work/$1-rootfs.tar"
  rm -f "$work/$1-rootfs.tar"
}
runtime_image python kubefn.test/python:3.11-bookworm python3,python3-pip,ca-certificates
runtime_image node kubefn.test/node:18-bookworm nodejs,npm,ca-certificates
mkdir -p "$out.partial/rootfs"
mmdebstrap --quiet --variant=apt --include=ca-certificates "${slim[@]}" bookworm "$out.partial/rootfs/kubefn-base.tar" >&2
rm -rf "$out" && mv "$out.partial" "$out"
echo "built in $(( $(date +%s) - start )) s" >&2
echo "$out"
