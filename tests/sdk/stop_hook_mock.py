"""A scripted OpenAI chat-completions server for the stop-hook flow (stdlib only).

The script plays the part of a model asked to write a broken Python file and finish:
  step 0: terminal writes test_broken.py with a syntax error
  step 1: finish                     (the stop hook blocks: the file does not compile)
  step 2: terminal rewrites the file correctly
  step 3+: finish                    (the stop hook allows it)
A step is the number of tool results after the first user message, so the mock keeps no
state. Requests without tools (title generation) get TITLE. Usage: stop_hook_mock.py PORT
"""
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TITLE = "Broken Python file and its stop hook"
BROKEN = "printf 'def broken(:\\n    pass\\n' > test_broken.py && cat test_broken.py"
FIXED = ("printf 'def broken():\\n    pass\\n' > test_broken.py"
         " && python3 -m py_compile test_broken.py && echo fixed")


def reply(body: dict) -> tuple[dict, str]:
    """The assistant message and finish reason for one request."""
    msgs = body.get("messages") or []
    if not body.get("tools"):
        return {"role": "assistant", "content": TITLE}, "stop"
    first = next((i for i, m in enumerate(msgs) if m.get("role") == "user"), 0)
    step = sum(1 for m in msgs[first + 1:] if m.get("role") == "tool")
    if step == 0:
        name, args = "terminal", {"command": BROKEN, "summary": "write the broken file"}
    elif step == 2:
        name, args = "terminal", {"command": FIXED, "summary": "fix the syntax error"}
    else:
        name, args = "finish", {"message": "done after %d tool results" % step, "summary": "finish"}
    args["security_risk"] = "LOW"
    # keep only the arguments the server's tool declares
    for tool in body["tools"]:
        fn = tool.get("function") or {}
        if fn.get("name") == name:
            props = (fn.get("parameters") or {}).get("properties") or {}
            args = {k: v for k, v in args.items() if k in props}
    call = {"id": "call_%d_%d" % (step, time.time_ns()), "type": "function",
            "function": {"name": name, "arguments": json.dumps(args)}}
    return {"role": "assistant", "content": None, "tool_calls": [call]}, "tool_calls"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    requests: list = []

    def log_message(self, *args):
        pass

    def do_POST(self):
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.loads(raw or b"{}")
        Handler.requests.append(body)
        if body.get("stream"):
            out, status = b'{"error":{"message":"this mock does not stream"}}', b"400 Bad Request"
        else:
            msg, finish = reply(body)
            out = json.dumps({
                "id": "chatcmpl-%d" % time.time_ns(), "object": "chat.completion",
                "created": int(time.time()), "model": body.get("model", "mock"),
                "choices": [{"index": 0, "message": msg, "finish_reason": finish}],
                "usage": {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110},
            }).encode()
            status = b"200 OK"
        # one write: headers and body together (no Nagle/delayed-ACK stall)
        self.wfile.write(b"HTTP/1.1 %s\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (status, len(out), out))


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
