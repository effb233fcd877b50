# Sourced by start.sh and stop.sh: where Debian's PostgreSQL binaries are, and how to run them
# as the user the server runs as (PostgreSQL refuses root; as root, the package's postgres user).
pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
as_server() {
  if [[ "$(id -u)" == 0 ]]; then
    setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"
  else
    "$@"
  fi
}
