#!/usr/bin/env bash
# Set up .venv/ (tools/setup_env.sh; a no-op when up to date) and run the whole test suite.
# Extra arguments go to pytest, e.g. `bash tools/run_tests.sh -k tracker`; paths under tests/
# among them replace the whole suite: `bash tools/run_tests.sh tests/test_plugin.py -q`.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/tools/setup_env.sh" || exit $?
cd "$ROOT"
targets=(tests)
for arg in "$@"; do
    if [[ "$arg" == tests || "$arg" == tests/* ]]; then  # a test path, or path::name
        targets=()
        break
    fi
done
"$ROOT/.venv/bin/python" -m pytest "${targets[@]}" "$@"
status=$?
if [[ $status -eq 5 ]]; then
    echo "run_tests: pytest collected no tests" >&2
fi
exit $status
