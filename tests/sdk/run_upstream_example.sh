#!/usr/bin/env bash
# Runs the reference's own example examples/02_remote_agent_server/01_convo_with_local_agent_server.py
# (OpenHands/software-agent-sdk; pass your copy of it) unmodified against OUR server, with the
# scripted LLM of tests/sdk/stop_hook_mock.py and our own hook script:
#   tests/sdk/run_upstream_example.sh path/to/01_convo_with_local_agent_server.py [agent-server binary]
# The example starts `python -m openhands.agent_server --port 8001`; a `python` shim first on PATH
# starts our binary instead (AGENT_SERVER_BIN= empty runs the reference, for comparison).
set -euo pipefail
example=$(realpath "$1")
here=$(cd "$(dirname "$0")" && pwd)
export AGENT_SERVER_BIN=${2-$here/../../target/release/agent-server}
venv_python=${SDK_PYTHON:-$HOME/.cache/oh-compat/venv-1.58.2/bin/python}
dir=$(mktemp -d)
trap 'kill "$mock_pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
cp "$example" "$dir/example.py"
cp -r "$here/hook_scripts" "$dir/"
mkdir "$dir/bin"
cat > "$dir/bin/python" <<SHIM
#!/bin/sh
if [ -n "\$AGENT_SERVER_BIN" ] && [ "\$1" = "-m" ] && [ "\$2" = "openhands.agent_server" ]; then
  shift 2; exec "\$AGENT_SERVER_BIN" "\$@"
fi
exec "$venv_python" "\$@"
SHIM
chmod +x "$dir/bin/python"
"$venv_python" "$here/stop_hook_mock.py" > "$dir/mock.out" &
mock_pid=$!
for _ in $(seq 50); do grep -q MOCK_LLM_PORT "$dir/mock.out" 2>/dev/null && break; sleep 0.1; done
port=$(sed -n 's/MOCK_LLM_PORT=//p' "$dir/mock.out")
cd "$dir"
PATH="$dir/bin:$PATH" LLM_API_KEY=sk-mock LLM_MODEL=openai/mock \
  LLM_BASE_URL="http://127.0.0.1:$port/v1" OH_CONVERSATIONS_PATH="$dir/conversations" \
  "$venv_python" example.py
