"""Sends the same requests to the reference server and to ours and compares the answers.

    compare_with_reference.py OUR_URL PROBES_DIR

Starts the reference (`python -m openhands.agent_server`, from this interpreter's venv) on a
free port in a throw-away directory, then runs every `PROBES_DIR/*.json` probe list against
both servers in order: each step is `{"method", "path", "body"?, "ignore"?}`. Answers are
compared on status and JSON after normalising what differs by nature (ids, UUIDs, timestamps,
sealed tokens); `ignore` lists JSON paths (`.a.b`) a step does not compare, each a documented
difference. `{PROJECT}` and `{FAKE_ACP}` in bodies are replaced by a project with a sub-agent
file and by the test ACP server. Exit status 1 when any answer differs.
"""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
FAKE_ACP = HERE.parent / "fixtures" / "fake_acp_server.py"
AGENT_FILE = """---
name: reviewer
description: Reviews code <example>review my PR</example>
model: fast
color: blue
tools: [terminal, file_editor]
skills: a, b
permission_mode: Confirm_Risky
max_iteration_per_run: "7"
max_budget_per_run: 1.5
condenser: none
custom_key: hello
---
You review code.
"""


def norm(text):
    text = re.sub(r"gAAAAA[A-Za-z0-9_=-]+", "TOKEN", text)
    text = re.sub(r'"(created|created_at|updated_at|completed_at)": ?[0-9.]+', r'"\1": 0', text)
    text = re.sub(r'"current_datetime": ?"[^"]*"', '"current_datetime": "T"', text)
    text = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "UUID", text)
    text = re.sub(r"\b[0-9a-f]{32}\b", "HEX", text)
    return text


def call(base, step):
    body = step.get("body")
    data = None if body is None else json.dumps(body).encode()
    headers = {"content-type": "application/json"} if data is not None else {}
    req = urllib.request.Request(base + step["path"], data=data, method=step["method"], headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def drop(doc, path):
    parts = [p for p in path.split(".") if p]
    for p in parts[:-1]:
        if not isinstance(doc, dict) or p not in doc:
            return
        doc = doc[p]
    if isinstance(doc, dict):
        doc.pop(parts[-1], None)


def differences(a, b, at=""):
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            if k not in a:
                out.append(f"{at}.{k}: only ours = {json.dumps(b[k])[:200]}")
            elif k not in b:
                out.append(f"{at}.{k}: only the reference = {json.dumps(a[k])[:200]}")
            else:
                out += differences(a[k], b[k], f"{at}.{k}")
        return out
    if a != b:
        return [f"{at}: reference={json.dumps(a)[:300]} ours={json.dumps(b)[:300]}"]
    return []


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url, proc, log):
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"the reference server exited:\n{Path(log).read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2):
                return
        except Exception:
            time.sleep(0.3)
    sys.exit("the reference server did not become healthy")


def main():
    ours, probes = sys.argv[1], Path(sys.argv[2])
    tmp = Path(tempfile.mkdtemp(prefix="ref-compare-"))
    try:
        project = tmp / "project"
        (project / ".agents" / "agents").mkdir(parents=True)
        (project / ".agents" / "agents" / "reviewer.md").write_text(AGENT_FILE)
        (tmp / "ws").mkdir()
        port = free_port()
        env = dict(os.environ, OH_PERSISTENCE_DIR=str(tmp / "persist"), HOME=str(tmp / "home"),
                   OPENHANDS_SUPPRESS_BANNER="1", LITELLM_LOCAL_MODEL_COST_MAP="True")
        env.pop("OH_SESSION_API_KEYS", None)
        env.pop("SESSION_API_KEY", None)
        log = tmp / "reference.log"
        with open(log, "w") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "openhands.agent_server", "--host", "127.0.0.1", "--port", str(port)],
                cwd=tmp / "ws", env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        ref = f"http://127.0.0.1:{port}"
        try:
            wait_healthy(ref, proc, log)
            bad = 0
            total = 0
            for probe in sorted(probes.glob("*.json")):
                text = probe.read_text().replace("{PROJECT}", str(project)).replace("{FAKE_ACP}", str(FAKE_ACP))
                for step in json.loads(text):
                    total += 1
                    (sa, ta), (sb, tb) = call(ref, step), call(ours, step)
                    try:
                        ja, jb = json.loads(norm(ta)), json.loads(norm(tb))
                    except ValueError:
                        ja, jb = norm(ta), norm(tb)
                    for path in step.get("ignore", []):
                        drop(ja, path)
                        drop(jb, path)
                    diffs = differences(ja, jb)
                    if sa != sb or diffs:
                        bad += 1
                        print(f"DIFF {probe.name}: {step['method']} {step['path']} reference={sa} ours={sb}")
                        for d in diffs:
                            print("    " + d)
            print(f"{total} requests, {bad} answers differ")
            sys.exit(1 if bad else 0)
        finally:
            os.killpg(proc.pid, 9)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
