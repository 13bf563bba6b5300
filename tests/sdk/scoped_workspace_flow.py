"""A conversation-scoped remote workspace, driven by the official client.

`RemoteWorkspace(runtime_conversation_id=...)` sends its commands, files and Git calls to
`/api/conversations/{id}/...`: start a long command and stop it with `stop_command()`, run a
command, upload and download a file, list the Git changes, and check that the scoped commands
ran in the conversation's working directory.

Usage: scoped_workspace_flow.py SERVER_URL MOCK_LLM_URL PROJECT_DIR
(prints PASS scoped_workspace_flow)
"""

import subprocess
import sys
import tempfile
import time
from pathlib import Path
from uuid import UUID

import httpx

from openhands.sdk.workspace import RemoteWorkspace

server, llm_url, project = sys.argv[1], sys.argv[2], sys.argv[3]
http = httpx.Client(base_url=server, timeout=30)

subprocess.run(["git", "init", "-q", project], check=True)
created = http.post("/api/conversations", json={
    "agent": {"kind": "Agent", "llm": {"model": "openai/mock", "base_url": llm_url,
                                       "api_key": "k"}, "tools": []},
    "workspace": {"working_dir": project, "kind": "LocalWorkspace"},
    "autotitle": False,
})
assert created.status_code == 201, created.text
conversation_id = UUID(created.json()["id"])

ws = RemoteWorkspace(host=server, working_dir=project,
                     runtime_conversation_id=conversation_id)
assert ws.api_prefix == f"/api/conversations/{conversation_id}"

# stop_command: the long command ends at once, with an exit code.
command_id = ws.start_command("sleep 60", timeout=120)
started = time.monotonic()
ws.stop_command(command_id)
while True:
    out = ws.get_command_output(command_id)
    if out is not None and out.get("exit_code") is not None:
        break
    assert time.monotonic() - started < 15, f"not stopped: {out}"
    time.sleep(0.1)
assert time.monotonic() - started < 15
# Stopping it again (already finished) is a no-op, as the client promises.
ws.stop_command(command_id)

# A command runs in the conversation's working directory.
result = ws.execute_command("pwd && echo scoped-ok > made.txt")
assert result.exit_code == 0, result
assert result.stdout.strip().splitlines()[0] == project, result.stdout

# Files, both ways.
with tempfile.TemporaryDirectory() as tmp:
    src = Path(tmp) / "up.txt"
    src.write_text("uploaded through the scope\n")
    up = ws.file_upload(src, f"{project}/up.txt")
    assert up.success, up
    down = ws.file_download(f"{project}/made.txt", Path(tmp) / "made.txt")
    assert down.success, down
    assert (Path(tmp) / "made.txt").read_text() == "scoped-ok\n"

# Git sees both new files.
changed = sorted(Path(c.path).name for c in ws.git_changes(project))
assert changed == ["made.txt", "up.txt"], changed

# A directory outside the conversation's working directory is refused, as the reference does.
try:
    ws.start_command("true", cwd="/")
except httpx.HTTPStatusError as e:
    assert e.response.status_code == 422, e.response.text
    assert "inside the conversation workspace" in e.response.text, e.response.text
else:
    raise AssertionError("a command outside the working directory was accepted")

print("PASS scoped_workspace_flow")
