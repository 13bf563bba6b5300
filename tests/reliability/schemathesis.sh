#!/usr/bin/env bash
# Property-based API check: schemathesis (from PyPI, in its own venv) generates requests from our
# /openapi.json (examples, coverage and fuzzing phases) and fails on any 5xx answer.
#   tests/reliability/schemathesis.sh [--short|--long] [BINARY]
#   --short (default, CI): 60 s    --long (by hand): 240 s
# The server runs on a free loopback port in a throw-away directory and is stopped at the end.
# The last line is schemathesis' summary; the exit status is its own.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
seconds=60
case "${1:-}" in
  --short) shift ;;
  --long) seconds=240; shift ;;
esac
binary=$(realpath "${1:-$root/target/release/agent-server}")
venv=${SCHEMATHESIS_VENV:-$HOME/.cache/agent-server-schemathesis}
version=4.32.5
log() { echo "[schemathesis] $*" >&2; }

if ! "$venv/bin/st" --version 2>/dev/null | grep -q "$version"; then
  base=""
  for c in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.1[2-9]*/bin/python3 python3; do
    if command -v "$c" >/dev/null 2>&1; then base=$(command -v "$c"); break; fi
  done
  [[ -n "$base" ]] || { log "no python3"; exit 1; }
  log "installing schemathesis $version into $venv"
  "$base" -m venv "$venv"
  "$venv/bin/pip" install -q "schemathesis==$version"
fi

work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cd "$work"
mkdir -p "$work/home"
# Settings, profiles and secrets the fuzzer writes stay in the scratch directory. A Canvas App
# ingress is configured: without one, the app-backend routes answer the reference's 503 ("not
# configured") by design, and that 5xx would hide real ones.
HOME="$work/home" OH_PERSISTENCE_DIR="$work/persistence" \
  OH_APP_BACKEND_PUBLIC_URL="http://127.0.0.1:9" \
  setsid "$binary" --host 127.0.0.1 --port "$port" >"$work/server.log" 2>&1 &
server=$!
# The server finishes writing (its graceful stop persists conversations) before the scratch
# directory goes; one that has not stopped 20 s after SIGTERM is reported and killed, so a hung
# server fails the run instead of hanging it.
stop_server() {
  kill -- -"$server" 2>/dev/null || return 0
  for _ in $(seq 200); do
    kill -0 "$server" 2>/dev/null || { wait "$server" 2>/dev/null; return 0; }
    sleep 0.1
  done
  log "the server did not stop within 20 s of SIGTERM; killed. Its log ends:"
  tail -20 "$work/server.log" >&2
  kill -KILL -- -"$server" 2>/dev/null || true
  wait "$server" 2>/dev/null
  return 1
}
cleanup() {
  status=$?
  stop_server || status=1
  rm -rf "$work" || true
  exit "$status"
}
trap cleanup EXIT
for _ in $(seq 100); do
  curl -fs "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fs "http://127.0.0.1:$port/health" >/dev/null || { log "the server did not start:"; tail -20 "$work/server.log" >&2; exit 1; }
log "checking http://127.0.0.1:$port for $seconds s"
out="$work/schemathesis.out"
set +e
"$venv/bin/st" run "http://127.0.0.1:$port/openapi.json" \
  --checks not_a_server_error --phases examples,coverage,fuzzing \
  --max-time "$seconds" -w 2 --no-color >"$out" 2>&1
set -e
tail -n 14 "$out"
# Fails on a 5xx answer, a refused or reset connection, or a server that stopped answering.
# Not failures: a schema error (the reference's contract has a `oneOf`, in
# SetConfirmationPolicyRequest, that no generator can satisfy) and a slow answer (an agent
# asked something while waiting on an unreachable LLM the fuzzer configured).
if grep -qE "Server error|Connection (refused|reset|aborted)" "$out"; then
  grep -nE -B2 -A12 "Server error|Connection (refused|reset|aborted)" "$out" | head -80 >&2
  log "FAILED: a 5xx answer or a broken connection"
  exit 1
fi
curl -fs "http://127.0.0.1:$port/health" >/dev/null || { log "FAILED: the server stopped answering"; exit 1; }
grep -q "generated" "$out" || { log "FAILED: schemathesis did not run"; exit 1; }
log "no 5xx answer"
