#!/usr/bin/env bash
# Makes Docker usable for the launcher tests on a fresh Debian machine with no container registry:
# installs docker.io + debootstrap, starts dockerd if no daemon answers, then runs images/build.sh
# (a Debian base made with debootstrap + `docker import`, and agent-server:latest on it).
# Idempotent: every step is skipped when its result already exists. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
export AGENT_SERVER_BASE_TAG="${AGENT_SERVER_BASE_TAG:-agent-server-base:bookworm}"
BASE_TAG="$AGENT_SERVER_BASE_TAG"
log() { printf '[ci-setup] %s\n' "$*"; }

need=()
command -v dockerd >/dev/null || need+=(docker.io)
command -v debootstrap >/dev/null || need+=(debootstrap)
if ((${#need[@]})); then
  log "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" iptables ca-certificates >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
  log "starting dockerd"
  # Detached from this shell so it survives; its own session so CI's process cleanup sees one tree.
  setsid dockerd >/tmp/dockerd.log 2>&1 < /dev/null &
  DOCKERD_PID=$!
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
  if ! docker info >/dev/null 2>&1; then
    log "dockerd did not come up; retrying with the vfs storage driver"
    [[ -n "${DOCKERD_PID:-}" ]] && kill "$DOCKERD_PID" 2>/dev/null || true
    sleep 2
    setsid dockerd --storage-driver=vfs >/tmp/dockerd.log 2>&1 < /dev/null &
    for _ in $(seq 1 60); do
      docker info >/dev/null 2>&1 && break
      sleep 1
    done
  fi
  docker info >/dev/null 2>&1 || { tail -30 /tmp/dockerd.log; log "no Docker daemon"; exit 1; }
fi
log "docker: $(docker info --format '{{.ServerVersion}} {{.Driver}}')"

if [[ "${SKIP_IMAGE_BUILD:-0}" == 1 ]]; then
  "$ROOT/images/base.sh" "$BASE_TAG"
else
  # The README's command: the offline base if missing, then agent-server:latest on it.
  "$ROOT/images/build.sh"
fi
