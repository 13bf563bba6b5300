#!/bin/sh
# Stop hook: refuse to stop while a Python file in the working directory does not compile.
# Exit 2 blocks; what it writes on stderr goes back to the agent as feedback.
status=0
for f in *.py; do
  [ -e "$f" ] || continue
  if ! err=$(python3 -m py_compile "$f" 2>&1); then
    printf '%s\n' "$err" >&2
    status=2
  fi
done
[ "$status" -eq 0 ] && echo "all Python files compile"
exit "$status"
