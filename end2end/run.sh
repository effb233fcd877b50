#!/usr/bin/env bash
# Starts kubefn (as built by `cargo leptos build`) on a fresh database, runs the Playwright
# suite against it in Debian's Chromium, and stops the server whatever happens.
# kubefn runs as `make run` runs it: from a directory laid out like a fresh clone (its target/
# is this clone's), with the README's defaults, so the relative data directory `data` too.
set -euo pipefail
cd "$(dirname "$0")/.."

# A free port unless one is given: a kubefn (or another suite) already on a fixed one must not
# fail the run.
port="${KUBEFN_E2E_PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
root="$(mktemp -d)"
ln -s "$PWD/target" "$root/target"
log="$root/kubefn.log"
server=""
cleanup() {
  if [ -n "$server" ] && kill -0 "$server" 2>/dev/null; then
    kill "$server" && wait "$server" 2>/dev/null || true
  fi
  rm -rf "$root"
}
trap cleanup EXIT

if [ ! -x /usr/bin/chromium ] && [ -z "${CHROMIUM:-}" ]; then
  echo "end2end: /usr/bin/chromium is missing; run 'make chromium' (the browser tests cannot run without it)" >&2
  exit 1
fi

(cd "$root" && unset KUBEFN_DATA_DIR && exec env KUBEFN_LISTEN="127.0.0.1:$port" KUBEFN_ADMIN="admin:admin-password" \
  LEPTOS_SITE_ROOT=target/site ./target/debug/kubefn) >"$log" 2>&1 &
server=$!

for _ in $(seq 1 100); do
  if curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; then break; fi
  if ! kill -0 "$server" 2>/dev/null; then echo "end2end: kubefn exited during start-up:" >&2; cat "$log" >&2; exit 1; fi
  sleep 0.2
done
curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null || { echo "end2end: kubefn did not become ready" >&2; cat "$log" >&2; exit 1; }

status=0
(cd end2end && KUBEFN_URL="http://127.0.0.1:$port" npx playwright test "$@") || status=$?
if [ "$status" -ne 0 ]; then
  echo "end2end: failed; the server log follows" >&2
  tail -n 100 "$log" >&2
fi
exit "$status"
