#!/usr/bin/env bash
# Stops the server tests/postgres/start.sh started in DIR and removes DIR.
set -uo pipefail
dir="$1"
bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
if [[ -f "$dir/data/postmaster.pid" ]]; then
  if [[ "$(id -u)" == 0 ]]; then
    setpriv --reuid=postgres --regid=postgres --init-groups -- "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null
  else
    "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null
  fi
fi
rm -rf "$dir"
