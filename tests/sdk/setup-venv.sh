#!/usr/bin/env bash
# Creates (once) the Python virtualenv holding the official OpenHands SDK 1.58.2 that the SDK-driven
# tests use (`cargo test -- --include-ignored`), from the package registry. Idempotent; prints the
# venv's python on its last line. Needs Python >= 3.12 (set SDK_PYTHON_BASE to choose one).
#   VENV: $AGENT_SERVER_SDK_VENV, default ~/.cache/oh-compat/venv-1.58.2 (shared with the
#   compatibility kit, which installs the same pins).
set -euo pipefail
VERSION=1.58.2
VENV="${AGENT_SERVER_SDK_VENV:-$HOME/.cache/oh-compat/venv-$VERSION}"
# The agent-server package and pytest: the vendored upstream live-server tests import them.
PKGS=("openhands-sdk==$VERSION" "openhands-tools==$VERSION" "openhands-workspace==$VERSION"
      "openhands-agent-server==$VERSION" "pytest==8.4.2")
log() { echo "[sdk venv] $*" >&2; }

ok() { "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' 2>/dev/null; }
find_python() {
  if [[ -n "${SDK_PYTHON_BASE:-}" ]]; then echo "$SDK_PYTHON_BASE"; return; fi
  local c
  for c in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.1[2-9]*/bin/python3 python3.13 python3.12 python3; do
    if command -v "$c" >/dev/null 2>&1 && ok "$(command -v "$c")"; then command -v "$c"; return; fi
  done
  return 1
}

if [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" - "${PKGS[@]}" <<'PY' 2>/dev/null; then
import sys
from importlib.metadata import version
for spec in sys.argv[1:]:
    name, _, want = spec.partition("==")
    assert version(name) == want, spec
PY
  log "up to date: $VENV"
else
  base="$(find_python)" || { log "no Python >= 3.12 found (apt-get install python3 or set SDK_PYTHON_BASE)"; exit 1; }
  log "creating $VENV with $base"
  "$base" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
  "$VENV/bin/python" -m pip install -q "${PKGS[@]}"
fi
echo "$VENV/bin/python"
