"""Memory of a server whose conversations run scoped bash commands, round after round.

Starts BINARY on a throw-away directory with OH_CONVERSATION_IDLE_TTL_SECONDS=TTL, creates
CONVERSATIONS conversations, then for each of ROUNDS rounds runs COMMANDS short commands per
conversation through `/api/conversations/{id}/bash/execute_bash_command` (16 clients) and
prints the server's RSS and threads right after the round and 30 s later (past the idle time,
when the conversations' bash runners have been released). With the release working, the RSS
after each round's pause stays near the first round's however long the history grows; a TTL
longer than the test (e.g. 3600) shows the runners kept.

Needs `httpx` (the SDK venv has it). By hand, not in CI:
    python tests/reliability/scoped_bash_memory.py target/release/agent-server 5 40 1000 4
"""

import concurrent.futures as cf
import os
import socket
import subprocess
import sys
import tempfile
import time

import httpx

binary, ttl = os.path.abspath(sys.argv[1]), sys.argv[2]
conversations, commands = int(sys.argv[3]), int(sys.argv[4])
rounds = int(sys.argv[5]) if len(sys.argv) > 5 else 1

tmp = tempfile.mkdtemp()
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
env = dict(os.environ, OH_CONVERSATION_IDLE_TTL_SECONDS=ttl,
           OH_CONVERSATIONS_PATH=f"{tmp}/conversations", OH_BASH_EVENTS_DIR=f"{tmp}/bash",
           RUST_LOG=os.environ.get("RUST_LOG", "warn"))
server = subprocess.Popen([binary, "--host", "127.0.0.1", "--port", str(port)], cwd=tmp,
                          env=env)
url = f"http://127.0.0.1:{port}"


def usage() -> str:
    fields = {}
    with open(f"/proc/{server.pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            fields[key] = rest.split()[0] if rest.split() else ""
    return f"{int(fields['VmRSS']) / 1024:.1f} MiB RSS, {fields['Threads']} threads"


def run_commands(conversation_id: str) -> None:
    with httpx.Client(base_url=url, timeout=60) as client:
        for j in range(commands):
            client.post(f"/api/conversations/{conversation_id}/bash/execute_bash_command",
                        json={"command": f"echo {j}"}).raise_for_status()


try:
    for _ in range(200):
        try:
            if httpx.get(f"{url}/health").status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.05)
    http = httpx.Client(base_url=url, timeout=60)
    os.makedirs(f"{tmp}/work")
    ids = []
    for _ in range(conversations):
        created = http.post("/api/conversations", json={
            "agent": {"kind": "Agent", "tools": [],
                      "llm": {"model": "openai/none", "api_key": "k",
                              "base_url": "http://127.0.0.1:9"}},
            "workspace": {"working_dir": f"{tmp}/work", "kind": "LocalWorkspace"},
            "autotitle": False})
        created.raise_for_status()
        ids.append(created.json()["id"])
    print(f"idle, {conversations} conversations: {usage()}", flush=True)
    for n in range(1, rounds + 1):
        started = time.time()
        with cf.ThreadPoolExecutor(16) as pool:
            list(pool.map(run_commands, ids))
        print(f"round {n}: {conversations * commands} commands in "
              f"{time.time() - started:.0f} s: {usage()}", flush=True)
        time.sleep(30)
        print(f"round {n}: 30 s later: {usage()}", flush=True)
    listed = http.get(f"/api/conversations/{ids[0]}/bash/bash_events/search",
                      params={"limit": 100}).json()["items"]
    assert len(listed) == 100, "the first conversation's events are still listed"
finally:
    server.terminate()
    server.wait()
