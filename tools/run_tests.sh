#!/usr/bin/env bash
# Set up .venv/ (tools/setup_env.sh; a no-op when up to date) and run the whole test suite.
# Extra arguments go to pytest, e.g. `bash tools/run_tests.sh -k tracker`.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/tools/setup_env.sh" || exit $?
cd "$ROOT"
"$ROOT/.venv/bin/python" -m pytest tests "$@"
status=$?
if [[ $status -eq 5 ]]; then
    echo "run_tests: pytest collected no tests" >&2
fi
exit $status
