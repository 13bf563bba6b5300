#!/usr/bin/env bash
# Makes Docker usable for the launcher tests on a fresh Debian machine with no container registry:
# installs docker.io + debootstrap, starts dockerd if no daemon answers, builds a Debian base image
# with debootstrap + `docker import`, then builds our image on it from the host's release binary.
# Idempotent: every step is skipped when its result already exists. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
BASE_TAG="${AGENT_SERVER_BASE_TAG:-agent-server-base:bookworm}"
IMAGE_TAG="${AGENT_SERVER_IMAGE:-agent-server:ci}"
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

if ! docker image inspect "$BASE_TAG" >/dev/null 2>&1; then
  MIRROR="$( (cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null || true) \
    | awk '/^(URIs:|deb) +https?:\/\// && !/security/ { for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) { print $i; exit } }')"
  [[ -n "$MIRROR" ]] || { log "no Debian mirror found in apt sources"; exit 1; }
  ROOTFS="$(mktemp -d /tmp/agent-server-rootfs.XXXXXX)"
  log "debootstrap bookworm from the configured mirror into $ROOTFS"
  # git/tini/ca-certificates are included so that building our image needs no network at all.
  debootstrap --variant=minbase --include=git,tini,ca-certificates bookworm "$ROOTFS" "$MIRROR" >/tmp/debootstrap.log 2>&1 \
    || { tail -30 /tmp/debootstrap.log; exit 1; }
  rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/*
  tar -C "$ROOTFS" -c . | docker import -c 'CMD ["bash"]' - "$BASE_TAG" >/dev/null
  rm -rf "$ROOTFS"
fi
log "base image: $BASE_TAG"

if [[ "${SKIP_IMAGE_BUILD:-0}" != 1 ]]; then
  "$ROOT/images/build.sh" --prebuilt --base "$BASE_TAG" --tag "$IMAGE_TAG"
fi
