#!/usr/bin/env bash
# The project's test command: installs what is missing (scripts/install.sh), then runs pytest.
# Arguments go to pytest, e.g. `bash scripts/test.sh tests/test_testbed.py -x`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

source scripts/install.sh

echo "==> [test] python -m pytest -q $*"
status=0
"$STREAMSRV_VENV_DIR/bin/python" -m pytest -q "$@" || status=$?
# 5 means pytest collected nothing: a wrong path or a broken collection must not pass as green.
if [ "$status" -eq 5 ]; then
  echo "==> [test] FAILED: no tests were collected" >&2
  exit 1
fi
echo "==> [test] pytest exited with $status"
exit "$status"
