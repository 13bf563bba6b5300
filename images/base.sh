#!/usr/bin/env bash
# Builds the offline base image (default agent-server-base:bookworm): a Debian bookworm root made
# with debootstrap from this machine's configured apt mirror, imported with `docker import`. No
# container registry is needed. Idempotent: does nothing when the image exists. Run as root
# (debootstrap needs it); needs `debootstrap` (apt-get install debootstrap) and a Docker daemon.
#   images/base.sh [TAG]
set -euo pipefail
BASE_TAG="${1:-${AGENT_SERVER_BASE_TAG:-agent-server-base:bookworm}}"
log() { printf '[base] %s\n' "$*" >&2; }

if docker image inspect "$BASE_TAG" >/dev/null 2>&1; then
  log "base image $BASE_TAG exists"
  exit 0
fi
command -v debootstrap >/dev/null || { log "debootstrap missing: apt-get install -y debootstrap"; exit 1; }
MIRROR="$( (cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null || true) \
  | awk '/^(URIs:|deb) +https?:\/\// && !/security/ { for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) { print $i; exit } }')"
[[ -n "$MIRROR" ]] || { log "no Debian mirror found in the apt sources"; exit 1; }
ROOTFS="$(mktemp -d /tmp/agent-server-rootfs.XXXXXX)"
trap 'rm -rf "$ROOTFS"' EXIT
log "debootstrap bookworm into $ROOTFS (about a minute)"
# git/tini/ca-certificates are included so that building our image on it needs no network at all.
debootstrap --variant=minbase --include=git,tini,ca-certificates bookworm "$ROOTFS" "$MIRROR" \
  >/tmp/debootstrap.log 2>&1 || { tail -30 /tmp/debootstrap.log >&2; exit 1; }
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/*
tar -C "$ROOTFS" -c . | docker import -c 'CMD ["bash"]' - "$BASE_TAG" >/dev/null
log "built $BASE_TAG"
