#!/usr/bin/env bash
# Builds the agent-server image, offline by default.
#   images/build.sh [--binary PATH] [--base IMAGE] [--variant minimal|python-node] [--tag TAG]
#                   [--from-source] [--platform P]
# Default: layers the host's release binary (target/release/agent-server, built or brought up to
#             date first) onto the local base image agent-server-base:bookworm, which images/base.sh
#             makes with debootstrap when it is missing; tagged agent-server:latest, the image
#             `agent-server launch docker` runs. No registry is needed.
# --base      another base image (any apt/apk/dnf distribution; pulled if not local).
# --from-source  compile inside the build (Dockerfile target `runtime`, needs the rust:1-bookworm
#             image from a registry) instead of layering the host binary.
# --variant   minimal (default): the base as given; python-node: first builds images/python-node.Dockerfile
#             on the base (python3, pip, venv, nodejs, npm from the base's package manager).
# --prebuilt  accepted for older scripts; it is the default.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
BASE=""
LOCAL_BASE="${AGENT_SERVER_BASE_TAG:-agent-server-base:bookworm}"
TAG=""
VARIANT="minimal"
PREBUILT=1
BINARY="$ROOT/target/release/agent-server"
PLATFORM=()
while (($#)); do
  case "$1" in
    --prebuilt) PREBUILT=1 ;;
    --from-source) PREBUILT=0 ;;
    --binary) BINARY="$2"; shift ;;
    --base) BASE="$2"; shift ;;
    --tag) TAG="$2"; shift ;;
    --variant) VARIANT="$2"; shift ;;
    --platform) PLATFORM=(--platform "$2"); shift ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
[[ -n "$TAG" ]] || TAG="agent-server:latest$([[ $VARIANT == minimal ]] || echo "-$VARIANT")"
log() { printf '[build] %s\n' "$*" >&2; }

if [[ -z "$BASE" ]]; then
  BASE="$LOCAL_BASE"
  "$ROOT/images/base.sh" "$BASE"
fi

case "$VARIANT" in
  minimal) ;;
  python-node)
    VBASE="agent-server-base:python-node"
    log "building $VBASE on $BASE"
    docker build "${PLATFORM[@]}" --build-arg "BASE_IMAGE=$BASE" -t "$VBASE" \
      -f "$ROOT/images/python-node.Dockerfile" "$ROOT/images"
    BASE="$VBASE"
    ;;
  *) echo "unknown variant $VARIANT" >&2; exit 2 ;;
esac

SHA="$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)"
if ((PREBUILT)); then
  if [[ "$BINARY" == "$ROOT/target/release/agent-server" ]]; then
    log "cargo build --release (no-op when up to date)"
    # The features .ci/run tests with, so that the test build reuses this one.
    cargo build --release --features kubernetes --bin agent-server
  fi
  [[ -x "$BINARY" ]] || { echo "no executable at $BINARY" >&2; exit 1; }
  CTX="$(mktemp -d)"
  trap 'rm -rf "$CTX"' EXIT
  cp "$ROOT/Dockerfile" "$CTX/Dockerfile"
  cp "$BINARY" "$CTX/agent-server"
  strip "$CTX/agent-server" 2>/dev/null || true
  log "building $TAG (prebuilt binary) on $BASE"
  docker build "${PLATFORM[@]}" --target prebuilt --build-arg "BASE_IMAGE=$BASE" \
    --label "org.opencontainers.image.revision=$SHA" -t "$TAG" "$CTX"
else
  log "building $TAG from source on $BASE"
  docker build "${PLATFORM[@]}" --target runtime --build-arg "BASE_IMAGE=$BASE" \
    --label "org.opencontainers.image.revision=$SHA" -t "$TAG" "$ROOT"
fi
log "built $TAG"
echo "$TAG"
