"""A scripted OpenAI chat-completions server for the SDK's remote-agent-server examples
(stdlib only). It answers each example's prompt the way a model would, keyed on the latest
user message; the step is the number of tool results after that message (no state kept):

- "Run `CMD` in the terminal"            → terminal CMD, then finish
- "Echo the value of the $NAME ..."      → terminal `echo $NAME`, then "YES"
- "... show_notification ... navigate_to" → terminal (find ... | wc -l), show_notification,
                                            navigate_to, then finish
- the stop-hook prompt of example 01     → stop_hook_mock's script
- anything else                          → a one-line text answer
Requests without tools (titles, condensation) get a short title.
"""
import json
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import stop_hook_mock


def text_of(message: dict) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    return "\n".join(p.get("text", "") for p in content or [] if isinstance(p, dict))


def latest_user(messages: list) -> tuple[int, str]:
    """Index and text of the latest real user message (not a tool result)."""
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].get("role") == "user":
            return i, text_of(messages[i])
    return 0, ""


def call(name: str, args: dict, body: dict) -> tuple[dict, str]:
    args = dict(args, security_risk="LOW", summary=name)
    for tool in body.get("tools") or []:
        fn = tool.get("function") or {}
        if fn.get("name") == name:
            props = (fn.get("parameters") or {}).get("properties") or {}
            args = {k: v for k, v in args.items() if k in props}
    tc = {"id": "call_%d" % time.time_ns(), "type": "function",
          "function": {"name": name, "arguments": json.dumps(args)}}
    return {"role": "assistant", "content": None, "tool_calls": [tc]}, "tool_calls"


def say(text: str) -> tuple[dict, str]:
    return {"role": "assistant", "content": text}, "stop"


def reply(body: dict) -> tuple[dict, str]:
    msgs = body.get("messages") or []
    if not body.get("tools"):
        return say("Example conversation")
    idx, text = latest_user(msgs)
    step = sum(1 for m in msgs[idx + 1:] if m.get("role") == "tool")
    if "test_broken" in "".join(text_of(m) for m in msgs if m.get("role") == "user") or \
            "syntax error" in text:
        return stop_hook_mock.reply(body)
    run = re.search(r"[Rr]un `([^`]+)` in the terminal", text)
    if run:
        return call("terminal", {"command": run.group(1)}, body) if step == 0 else \
            call("finish", {"message": "Ran: " + run.group(1)}, body)
    echo = re.search(r"value of the \$(\w+)", text)
    if echo:
        return call("terminal", {"command": "echo $" + echo.group(1)}, body) if step == 0 \
            else say("YES")
    if "show_notification" in text:
        script = [("terminal", {"command": "find . -name '*.py' | wc -l"}),
                  ("show_notification", {"message": "0 Python files", "level": "info"}),
                  ("navigate_to", {"route": "/files"})]
        if step < len(script):
            return call(*script[step], body)
        return call("finish", {"message": "Notified and navigated."}, body)
    if "42" in text:
        return say("42")
    if "2 + 2" in text:
        return say("4")
    return say("An OpenAI-compatible gateway lets OpenAI clients drive the agent.")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.loads(raw or b"{}")
        msg, finish = reply(body)
        out = json.dumps({
            "id": "chatcmpl-%d" % time.time_ns(), "object": "chat.completion",
            "created": int(time.time()), "model": body.get("model", "mock"),
            "choices": [{"index": 0, "message": msg, "finish_reason": finish}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110},
        }).encode()
        self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(out), out))


def start(port: int = 0) -> ThreadingHTTPServer:
    """Serves the mock on a daemon thread; `server.server_address[1]` is the port."""
    srv = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


if __name__ == "__main__":
    srv = start(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
    print("MOCK_LLM_PORT=%d" % srv.server_address[1], flush=True)
    threading.Event().wait()
