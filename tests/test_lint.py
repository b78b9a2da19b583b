"""The code passes the linter (ruff, configured in ruff.toml): one line length of 100 characters,
pycodestyle errors and pyflakes everywhere, imports after ``_base_`` allowed in configs only."""
import importlib.util
import json
import subprocess
import sys
from typing import List

import pytest

from conftest import REPO


def ruff(*args: str, source: str = None) -> subprocess.CompletedProcess:
    """``ruff`` run from the repository root (so ruff.toml applies, .gitignore'd files skipped)."""
    if importlib.util.find_spec('ruff') is None:
        pytest.fail('ruff is not installed: pip install -r requirements/tests.txt')
    return subprocess.run([sys.executable, '-m', 'ruff', *args], cwd=REPO, input=source,
                          capture_output=True, text=True, timeout=300)


def codes(source: str, filename: str) -> List[str]:
    """Rule codes ruff reports for ``source`` as if it were the repository file ``filename``."""
    result = ruff('check', '--no-cache', '--output-format', 'json', '--stdin-filename', filename,
                  '-', source=source)
    assert result.returncode in (0, 1), result.stderr
    return sorted(v['code'] for v in json.loads(result.stdout))


def test_code_passes_the_linter():
    result = ruff('check', '--no-cache', '--output-format', 'concise', '.')
    assert result.returncode == 0, (
        'ruff check . (ruff.toml) found problems; fix them (`ruff check --fix .` for the fixable '
        f'ones):\n{result.stdout}{result.stderr}')


def test_the_linter_enforces_the_rules():
    line = 'x = 1  # ' + '-' * 91  # 100 characters: the limit
    assert len(line) == 100
    assert codes(line + '\n', 'ctvis/probe.py') == []
    assert codes(line + '-\n', 'ctvis/probe.py') == ['E501']
    assert codes('import os\n', 'tools/probe.py') == ['F401']
    assert codes('print(undefined)\n', 'tests/probe.py') == ['F821']
    after_code = "x = 1\nfrom ctvis.utils.config_tools import update_step\nupdate_step([], 'A')\n"
    assert codes(after_code, 'ctvis/probe.py') == ['E402']
    for config in ('configs/ctvis/probe.py', 'projects/minvis/configs/probe.py'):
        assert codes(after_code, config) == []  # after `_base_`: see ctvis.utils.config_tools
        assert codes(line + '-\n', config) == ['E501']
