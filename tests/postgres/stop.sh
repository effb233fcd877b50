#!/usr/bin/env bash
# Stops the server tests/postgres/start.sh started in DIR and removes DIR.
set -uo pipefail
dir="$1"
# shellcheck source=server.sh
source "$(cd "$(dirname "$0")" && pwd)/server.sh"
if [[ -f "$dir/data/postmaster.pid" ]]; then
  as_server "$(pg_bin)/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null
fi
rm -rf "$dir"
