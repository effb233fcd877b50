#!/usr/bin/env bash
# Stops the cluster that start.sh started in DIR (only the processes it started, the real
# node's pods, cgroups and network namespace) and removes DIR.   stop.sh DIR [--keep]   (--keep leaves DIR, for reading its logs)
set -uo pipefail
dir="${1:?usage: stop.sh DIR [--keep]}"
keep="${2:-}"
[[ -f "$dir/pids" ]] || { echo "stop.sh: no cluster in $dir" >&2; exit 0; }
# Reverse order: kwok and the controllers before the apiserver, etcd last.
mapfile -t entries < <(tac "$dir/pids")
for entry in "${entries[@]}"; do
  pid="${entry%% *}"; name="${entry#* }"
  # The watchdog runs this script (bash may exec it in place): never signal ourselves.
  [[ "$name" == watchdog && ( "$pid" == "$$" || "$pid" == "$PPID" ) ]] && continue
  kill -0 "$pid" 2>/dev/null || continue
  # The real node's processes are killed outright: its pods go with it (node_stop), so there is
  # nothing for them to wind down.
  if [[ "$name" == node || "$name" == containerd || "$name" == kubelet || "$name" == kube-proxy ]]; then
    kill -9 "$pid" 2>/dev/null
    continue
  fi
  kill "$pid" 2>/dev/null
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
done
: > "$dir/pids"
# shellcheck source=node.sh
source "$(cd "$(dirname "$0")" && pwd)/node.sh"
node_stop "$dir"
if [[ "$keep" != --keep ]]; then rm -rf "$dir"; fi
