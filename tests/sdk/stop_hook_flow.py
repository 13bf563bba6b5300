"""The reference's "local agent server" example flow, driven by the official SDK against a
running server: a stop hook that blocks while a Python file does not compile, a title from a
second LLM, and the client's run loop until the agent has really finished.

Usage: stop_hook_flow.py --server URL [--api-key KEY]. Exit 0 when every check passes.
"""
import argparse
import os
import py_compile
import sys
import tempfile
import time
from pathlib import Path

from pydantic import SecretStr

from openhands.sdk import LLM, Conversation, RemoteConversation, Workspace
from openhands.sdk.event import ActionEvent, HookExecutionEvent, MessageEvent
from openhands.sdk.hooks import HookConfig, HookDefinition, HookMatcher
from openhands.tools.preset.default import get_default_agent

sys.path.insert(0, str(Path(__file__).parent))
import stop_hook_mock  # noqa: E402

HOOK = Path(__file__).parent / "hook_scripts" / "pre_commit_check.sh"


def check(cond: bool, what: str) -> None:
    if not cond:
        raise SystemExit("FAIL: " + what)
    print("ok:", what, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", required=True)
    ap.add_argument("--api-key")
    a = ap.parse_args()

    mock = stop_hook_mock.start()
    base = "http://127.0.0.1:%d/v1" % mock.server_address[1]
    llm = LLM(usage_id="agent", model="openai/mock", base_url=base, api_key=SecretStr("sk-mock"))
    title_llm = LLM(usage_id="title-gen-llm", model="openai/mock", base_url=base,
                    api_key=SecretStr("sk-mock"))

    workdir = tempfile.mkdtemp(prefix="stop_hook_flow_")
    workspace = Workspace(host=a.server, working_dir=workdir, api_key=a.api_key)
    pwd = workspace.execute_command("pwd", cwd=workdir)
    check(pwd.exit_code == 0 and pwd.stdout.strip() == workdir, "pwd runs in the working dir")

    seen = []
    hooks = HookConfig(stop=[HookMatcher(matcher="*", hooks=[
        HookDefinition(command=str(HOOK), timeout=60)])])
    conv = Conversation(agent=get_default_agent(llm=llm, cli_mode=True), workspace=workspace,
                        callbacks=[seen.append], hook_config=hooks)
    check(isinstance(conv, RemoteConversation), "a RemoteConversation")
    try:
        conv.send_message("Create test_broken.py with a syntax error, then finish.")
        title = conv.generate_title(max_length=60, llm=title_llm)
        check(title == stop_hook_mock.TITLE, "title from the title LLM: %r" % title)

        status = None
        for _ in range(5):
            conv.run()
            time.sleep(0.5)
            status = conv.state.execution_status.value
            if status != "running":
                break
        check(status == "finished", "the run loop ends finished (status %s)" % status)

        # the events the server recorded, as the client reads them back
        events = list(conv.state.events)
        stops = [e for e in events if isinstance(e, HookExecutionEvent)
                 and e.hook_event_type == "Stop"]
        check([e.blocked for e in stops] == [True, False],
              "stop hook blocked once, then allowed (%s)" % [e.blocked for e in stops])
        check("SyntaxError" in (stops[0].stderr or "") + (stops[0].reason or ""),
              "the blocked stop says why")
        feedback = [e for e in events if isinstance(e, MessageEvent) and e.source == "environment"
                    and "[Stop hook feedback]" in str(e.llm_message.content)
                    and "SyntaxError" in str(e.llm_message.content)]
        check(len(feedback) == 1, "the hook's feedback went back to the agent")
        tools = [e.tool_name for e in events if isinstance(e, ActionEvent)]
        check(tools == ["terminal", "finish", "terminal", "finish"], "actions %s" % tools)
        py_compile.compile(os.path.join(workdir, "test_broken.py"), doraise=True)
        check(True, "test_broken.py compiles after the agent fixed it")
        check(any(isinstance(e, HookExecutionEvent) for e in seen),
              "the callback received hook events over the WebSocket")
        usage = conv.conversation_stats.get_combined_metrics().accumulated_token_usage
        check(usage is not None and usage.prompt_tokens > 0, "token usage is reported")
    finally:
        conv.close()
    print("PASS stop_hook_flow", flush=True)


if __name__ == "__main__":
    main()
