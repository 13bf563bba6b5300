"""The settings half of the SDK's remote workspace, driven by the official client.

Stores an LLM, a secret, an MCP server and a named profile over REST, then reads them back
the way SDK users do: `RemoteWorkspace.get_llm()`, `get_llm(profile_name=...)`,
`get_secrets()`, `get_secrets(names)`, `get_mcp_config()`,
`load_skills_from_agent_server()`; finally hands the secrets to a
conversation as `LookupSecret`s and has the agent use one in a terminal command (the value
is fetched by the server, never by the client).

Usage: settings_flow.py SERVER_URL MOCK_LLM_URL PROJECT_DIR   (prints PASS settings_flow)
"""

import hashlib
import sys

import httpx
from pydantic import SecretStr

from openhands.sdk import Conversation, Workspace
from openhands.sdk.event import ObservationEvent
from openhands.tools.preset.default import get_default_agent

server, llm_url = sys.argv[1], sys.argv[2]
SECRET = "ghp_flow_7d1"
http = httpx.Client(base_url=server, timeout=30)


def ok(response: httpx.Response) -> dict:
    assert response.status_code in (200, 201), (response.status_code, response.text)
    return response.json()


ok(http.put("/api/settings/secrets",
            json={"name": "GH_TOKEN", "value": SECRET, "description": "GitHub"}))
ok(http.patch("/api/settings", json={"agent_settings_diff": {
    "llm": {"model": "openai/mock", "base_url": llm_url, "api_key": "mock-key",
            "num_retries": 0}}}))
ok(http.post("/api/settings/mcp/files",
             json={"command": "npx", "args": ["-y", "mcp-files"], "env": {"ROOT": "/w"}}))

workspace = Workspace(host=server)

llm = workspace.get_llm()
assert llm.model == "openai/mock", llm.model
assert llm.api_key.get_secret_value() == "mock-key"
assert llm.base_url == llm_url

ok(http.post("/api/profiles/fast", json={"llm": {
    "model": "openai/mock-fast", "base_url": llm_url, "api_key": "fast-key"}}))
fast = workspace.get_llm(profile_name="fast")
assert fast.model == "openai/mock-fast" and fast.usage_id == "profile:fast", fast
assert fast.api_key.get_secret_value() == "fast-key"
try:
    workspace.get_llm(profile_name="missing")
    raise AssertionError("a missing profile must raise")
except FileNotFoundError:
    pass
ok(http.post("/api/profiles/fast/activate"))
active = workspace.get_llm()
assert active.usage_id == "profile:fast" and active.model == "openai/mock-fast", active

secrets = workspace.get_secrets()
assert list(secrets) == ["GH_TOKEN"], secrets
assert secrets["GH_TOKEN"].description == "GitHub"
assert SECRET not in repr(secrets)
assert workspace.get_secrets(names=["NOPE"]) == {}

mcp = workspace.get_mcp_config()
assert list(mcp) == ["files"] and mcp["files"].command == "npx", mcp
assert mcp["files"].env["ROOT"].get_secret_value() == "/w"

# Project skills, as the SDK loads them for a workspace directory.
project = sys.argv[3]
skills, context = workspace.load_skills_from_agent_server(project_dirs=[project])
names = [s.name for s in skills]
assert names == ["agents", "deploy"], names
assert skills[1].trigger is not None and "deploy" in skills[1].trigger.keywords, skills[1]
assert len(context.skills) == 2

seen = []
agent_llm = llm.model_copy(update={"api_key": SecretStr("mock-key")})
conversation = Conversation(
    agent=get_default_agent(llm=agent_llm, cli_mode=True),
    workspace=workspace,
    callbacks=[lambda e: seen.append(e)],
)
conversation.update_secrets(secrets)
# The command names the secret but not its value; its digest proves the value arrived.
conversation.send_message('[[mock:cmd run=printf%20%s%20"$GH_TOKEN"%20|%20md5sum]]')
conversation.run()
status = conversation.state.execution_status.value
outputs = [str(e.observation) for e in seen if isinstance(e, ObservationEvent)]
conversation.close()
assert status == "finished", status
assert any(hashlib.md5(SECRET.encode()).hexdigest() in o for o in outputs), outputs
assert not any(SECRET in o for o in outputs), outputs
print("PASS settings_flow", flush=True)
