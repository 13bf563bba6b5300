# The `live_server_env` that tests/sdk/run_live_server_tests.py puts in place of the upstream
# one (spliced into a copy of the test file, so it uses that file's imports: os, time, httpx,
# contextmanager).
import os  # noqa: F401
import socket  # noqa: F401
import subprocess  # noqa: F401


@contextmanager
def live_server_env(tmp_path, monkeypatch, session_api_keys=None, import_modules=None):
    """OUR binary instead of the in-process reference app (same directories, same keys)."""
    import os, socket, subprocess
    conversations_path = tmp_path / "conversations"
    workspace_path = tmp_path / "workspace"
    conversations_path.mkdir(parents=True, exist_ok=True)
    workspace_path.mkdir(parents=True, exist_ok=True)
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
    env = dict(os.environ, OH_CONVERSATIONS_PATH=str(conversations_path),
               OH_WORKSPACE_PATH=str(workspace_path), OH_PERSISTENCE_DIR=str(tmp_path / "persist"),
               HOME=str(tmp_path))
    env.pop("SESSION_API_KEY", None)
    if session_api_keys:
        env["SESSION_API_KEY"] = session_api_keys[0]
    proc = subprocess.Popen([os.environ["AGENT_SERVER_BIN"], "--host", "127.0.0.1", "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base_url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            if httpx.get(f"{base_url}/health", timeout=1.0).status_code == 200:
                break
        except httpx.RequestError:
            pass
        time.sleep(0.05)
    try:
        yield {"app": None, "conversation_service": None, "host": base_url, "workspace_path": workspace_path}
    finally:
        proc.kill(); proc.wait()


