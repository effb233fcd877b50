#!/usr/bin/env bash
# Starts a throwaway PostgreSQL server (Debian's postgresql package) for kubefn's tests and
# prints its URL, postgres://postgres@127.0.0.1:PORT, on stdout. Installs the package when
# missing (the tests need a real server, as they need a real control plane).
#
# Usage: tests/postgres/start.sh DIR PORT
#   DIR   an empty directory to hold the data, the socket and the log (removed at stop)
#   PORT  a free loopback port
# Environment:
#   KUBEFN_PG_OWNER_PID  stop the server and remove DIR when this process ends (the test binary)
#   KUBEFN_PG_LISTEN     an address to listen on besides loopback, trusted from anywhere (for
#                        pods of the test cluster, which reach this machine there)
# Stop by hand: tests/postgres/stop.sh DIR
set -euo pipefail
dir="$1"
port="$2"
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=server.sh
source "$here/server.sh"

if [[ -z "$(pg_bin)" ]]; then
  echo "installing PostgreSQL from Debian (apt-get install postgresql)" >&2
  # Installing must not start the distribution's own cluster: the tests run their own.
  policy=/usr/sbin/policy-rc.d
  if [[ ! -e "$policy" ]]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"
    chmod +x "$policy"
    trap 'rm -f "$policy"' EXIT
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >&2
fi
bin="$(pg_bin)"

# As root, the server's files belong to the postgres user it runs as.
if [[ "$(id -u)" == 0 ]]; then
  chmod 0755 "$dir"
  install -d -o postgres -g postgres -m 0700 "$dir/data" "$dir/socket"
  touch "$dir/log" && chown postgres:postgres "$dir/log"
else
  install -d -m 0700 "$dir/data" "$dir/socket"
fi

as_server "$bin/initdb" -D "$dir/data" -U postgres --auth=trust --no-sync -E UTF8 --locale=C.UTF-8 >/dev/null
listen=127.0.0.1
if [[ -n "${KUBEFN_PG_LISTEN:-}" ]]; then
  listen="127.0.0.1,$KUBEFN_PG_LISTEN"
  echo "host all all 0.0.0.0/0 trust" >> "$dir/data/pg_hba.conf"
fi
# No fsync: the data is thrown away with the directory. Connections: each kubefn process and
# each test store opens a pool of its own.
as_server "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 60 \
  -o "-p $port -k $dir/socket -c listen_addresses=$listen -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" \
  start >/dev/null

if [[ -n "${KUBEFN_PG_OWNER_PID:-}" ]]; then
  owner="$KUBEFN_PG_OWNER_PID"
  nohup setsid bash -c "while kill -0 $owner 2>/dev/null; do sleep 1; done; '$here/stop.sh' '$dir'" \
    >/dev/null 2>&1 &
fi
echo "postgres://postgres@127.0.0.1:$port"
