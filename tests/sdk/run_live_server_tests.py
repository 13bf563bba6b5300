"""Runs the upstream live-server tests that use the server over HTTP only against OUR binary.

    run_live_server_tests.py AGENT_SERVER_BIN

The vendored test file (tests/fixtures/upstream_tests) builds the reference app in process;
its `live_server_env` context manager is swapped (in a temporary copy) for one that starts our
binary with the same directories and keys. Exit status: pytest's.
"""
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE.parent / "fixtures" / "upstream_tests" / "test_remote_conversation_live_server.py"

# Tests that need only HTTP (the others read the reference's in-process objects or patch its
# LLM in process). All of them pass against the reference.
TESTS = [
    "test_health_endpoints_return_ok_json",
    "test_server_info_exposes_usable_tools",
    "test_workspace_default_llm_resolves_active_profile_despite_settings_drift",
    "test_settings_and_secrets_api_with_live_server",
    "test_bash_command_endpoint_with_live_server",
    "test_file_upload_endpoint_with_live_server",
    "test_remote_conversation_websocket_first_message_auth",
    "test_interrupt_endpoint_cancels_running_conversation",
]

FIXTURE = (HERE / "live_server_fixture.py").read_text()


def main() -> int:
    text = SOURCE.read_text()
    start = text.index("@contextmanager\ndef live_server_env(")
    end = text.index("def _assert_secret(")
    patched = text[:start] + FIXTURE + text[end:]
    with tempfile.TemporaryDirectory() as tmp:
        test = Path(tmp) / "test_live_server_against_agent_server.py"
        test.write_text(patched)
        env = dict(os.environ, AGENT_SERVER_BIN=sys.argv[1])
        return subprocess.call(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test),
             "-k", " or ".join(TESTS)],
            cwd=tmp, env=env)


if __name__ == "__main__":
    sys.exit(main())
