"""Runs one of the SDK's remote-agent-server examples, unmodified, against OUR binary.

    run_example.py EXAMPLE.py [AGENT_SERVER_BIN]

The example starts `python -m openhands.agent_server ...` (scripts/utils.py); that one
command is replaced by `AGENT_SERVER_BIN ...` (default: target/release/agent-server; the
environment variable AGENT_SERVER_BIN may name another, and an empty value keeps the
reference server, for comparison). The LLM is tests/sdk/example_mock.py, served in-process;
LLM_API_KEY, LLM_MODEL and LLM_BASE_URL point the example at it. Exit status: the example's.
"""
import os
import runpy
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import example_mock  # noqa: E402

example = Path(sys.argv[1]).resolve()
default_bin = HERE.parent.parent / "target" / "release" / "agent-server"
binary = sys.argv[2] if len(sys.argv) > 2 else os.environ.get("AGENT_SERVER_BIN", str(default_bin))

mock = example_mock.start()
os.environ.setdefault("LLM_API_KEY", "sk-mock")
os.environ["LLM_MODEL"] = "openai/mock"
os.environ["LLM_BASE_URL"] = "http://127.0.0.1:%d/v1" % mock.server_address[1]
os.environ.setdefault("OPENHANDS_SUPPRESS_BANNER", "1")

_popen_init = subprocess.Popen.__init__


def _popen(self, args, *rest, **kwargs):
    if (binary and isinstance(args, (list, tuple)) and len(args) >= 3
            and args[1:3] == ["-m", "openhands.agent_server"]):
        args = [binary, *args[3:]]
    return _popen_init(self, args, *rest, **kwargs)


subprocess.Popen.__init__ = _popen
os.chdir(example.parent)
sys.path.insert(0, str(example.parent))
sys.argv = [str(example)]
runpy.run_path(str(example), run_name="__main__")
