"""docs/architecture.md agrees with the code: its layering rules hold for the imports of every file.

The rules are read from the doc's "Layering rules" table (package -> the ctvis modules it may
import besides its own), and every ``import`` / ``from ... import`` statement of the package,
lazy ones inside functions included, is parsed with :mod:`ast`, so adding a forbidden import
fails here whether or not it is ever executed. The paths and names the doc gives must exist.
"""
import ast
import os
import os.path as osp
import re
from typing import Dict, Iterator, List, Optional, Set, Tuple

import pytest

from conftest import REPO

DOC = osp.join(REPO, 'docs', 'architecture.md')
PACKAGE = 'ctvis'
# Folders whose files use ctvis from outside: they may use its public names only.
CLIENTS = ('tools', 'demo', 'projects', 'configs')
# Top-level folders of the repository that the package must never import.
NOT_FOR_THE_PACKAGE = {'tools', 'demo', 'projects', 'tests', 'conftest', 'configs'}
RULE_ROW = re.compile(r'^\| `(ctvis(?:\.\w+)?)` \| (.+?) \|\s*$', re.M)


def layering_rules(text: str) -> Dict[str, List[str]]:
    """The doc's table: each package (or top-level module) -> the ctvis modules it may import."""
    if '## Layering rules' not in text:
        raise AssertionError(f'{DOC}: no "## Layering rules" section')
    section = text.split('## Layering rules', 1)[1].split('\n## ', 1)[0]
    return {package: re.findall(r'`(ctvis[\w.]*)`', allowed)
            for package, allowed in RULE_ROW.findall(section)}


@pytest.fixture(scope='module')
def rules() -> Dict[str, List[str]]:
    with open(DOC, encoding='utf-8') as f:
        found = layering_rules(f.read())
    assert found, f'{DOC}: the "Layering rules" section has no table rows'
    return found


def python_files(folder: str) -> Iterator[str]:
    for root, dirs, files in os.walk(osp.join(REPO, folder)):
        dirs[:] = sorted(d for d in dirs if d != '__pycache__')
        yield from (osp.join(root, f) for f in sorted(files) if f.endswith('.py'))


def module_name(path: str) -> str:
    """``ctvis/models/tracker.py`` -> ``ctvis.models.tracker``; a package's ``__init__.py`` -> the
    package."""
    parts = osp.relpath(path, REPO)[:-len('.py')].split(os.sep)
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def module_file(name: str) -> Optional[str]:
    """The file of a module of the repository (``a.b`` -> ``a/b.py`` or ``a/b/__init__.py``)."""
    base = osp.join(REPO, *name.split('.'))
    for path in (base + '.py', osp.join(base, '__init__.py')):
        if osp.isfile(path):
            return path
    return None


def imports(path: str) -> Iterator[Tuple[int, str, Optional[str]]]:
    """(line, absolute module, imported name or None) of every import statement of a file.

    ``from m import n`` gives the module ``m.n`` when that is a module (with name None), else
    ``m`` and ``n``; relative imports are resolved against the file's package.
    """
    with open(path, encoding='utf-8') as f:
        tree = ast.parse(f.read(), path)
    package = module_name(path) if path.endswith('__init__.py') else \
        module_name(path).rpartition('.')[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, None
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split('.')
                base = '.'.join(parts[:len(parts) - node.level + 1] +
                                ([node.module] if node.module else []))
            else:
                base = node.module
            for alias in node.names:
                submodule = f'{base}.{alias.name}'
                if alias.name != '*' and module_file(submodule) is not None:
                    yield node.lineno, submodule, None
                else:
                    yield node.lineno, base, alias.name


def within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + '.')


def layer_of(module: str, rules: Dict[str, List[str]]) -> Optional[str]:
    """The table row a module belongs to (its package, or itself for a top-level module)."""
    return next((p for p in sorted(rules, key=len, reverse=True) if within(module, p)), None)


def package_files() -> Iterator[str]:
    # The root __init__ imports every package so that ``import ctvis`` registers them.
    return (p for p in python_files(PACKAGE) if module_name(p) != PACKAGE)


# ----------------------------------------------------------------------------- the doc's table
def test_the_doc_places_every_package_in_one_row(rules):
    top = {module_name(p).split('.')[:2][-1] for p in package_files()}
    assert set(rules) == {f'{PACKAGE}.{name}' for name in top}, (
        f'{DOC}: the layering table must have one row per package and top-level module of ctvis')
    for package, allowed in rules.items():
        for name in allowed:
            assert module_file(name) is not None, f'{DOC}: {package} may import {name}: no module'
            assert layer_of(name, rules) != package, f'{DOC}: {package} lists itself'


def test_the_layers_have_no_cycle(rules):
    """A package never depends, even through others, on itself."""
    depends = {package: {layer_of(name, rules) for name in allowed}
               for package, allowed in rules.items()}

    def reach(package: str, seen: Set[str]) -> Set[str]:
        for other in depends[package] - seen:
            seen.add(other)
            reach(other, seen)
        return seen

    cycles = sorted(p for p in depends if p in reach(p, set()))
    assert not cycles, f'{DOC}: the layering rules let {cycles} depend on themselves'


# ----------------------------------------------------------------------------- the imports
def test_each_package_imports_only_what_its_row_allows(rules):
    problems = []
    for path in package_files():
        layer = layer_of(module_name(path), rules)
        if layer is None:  # no row: test_the_doc_places_every_package_in_one_row says so
            continue
        allowed_names = ', '.join(rules[layer]) or 'nothing else of ctvis'
        for line, module, _ in imports(path):
            if not within(module, PACKAGE) or layer_of(module, rules) == layer:
                continue
            if not any(within(module, allowed) for allowed in rules[layer]):
                problems.append(f'{osp.relpath(path, REPO)}:{line} imports {module}; '
                                f'{layer} may import {allowed_names}')
    assert not problems, f'imports that break {DOC}:\n' + '\n'.join(problems)


def test_the_package_never_imports_the_tools_demo_projects_or_tests():
    problems = [f'{osp.relpath(path, REPO)}:{line} imports {module}'
                for path in python_files(PACKAGE) for line, module, _ in imports(path)
                if module.split('.')[0] in NOT_FOR_THE_PACKAGE]
    assert not problems, '\n'.join(problems)


def defined_names(path: str) -> Optional[Set[str]]:
    """Top-level names a module defines (None if it star-imports: anything may be there)."""
    with open(path, encoding='utf-8') as f:
        tree = ast.parse(f.read(), path)
    names, blocks = set(), [tree.body]
    while blocks:
        for node in blocks.pop():
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                if any(alias.name == '*' for alias in node.names):
                    return None
                names |= {(alias.asname or alias.name).split('.')[0] for alias in node.names}
            elif isinstance(node, (ast.If, ast.Try, ast.With)):
                blocks.append([child for field in ('body', 'orelse', 'finalbody')
                               for child in getattr(node, field, [])] +
                              [child for handler in getattr(node, 'handlers', [])
                               for child in handler.body])
    return names


def test_tools_demo_projects_and_configs_use_public_names_that_exist():
    """Outside the package, ctvis is used by public names (nothing starting with ``_``) that
    exist, so a lazy import inside a tool's function cannot break unnoticed when the package
    moves a name."""
    problems = []
    for folder in CLIENTS:
        for path in python_files(folder):
            for line, module, name in imports(path):
                if not within(module, PACKAGE):
                    continue
                where = f'{osp.relpath(path, REPO)}:{line}'
                shown = module if name is None else f'{module}.{name}'
                if any(part.startswith('_') for part in shown.split('.')):
                    problems.append(f'{where} imports the private {shown}')
                elif module_file(module) is None:
                    problems.append(f'{where} imports {module}: no such module')
                elif name is not None:
                    names = defined_names(module_file(module))
                    if names is not None and name not in names:
                        problems.append(f'{where} imports {name} from {module}: not defined there')
    assert not problems, '\n'.join(problems)


# ----------------------------------------------------------------------------- the doc's map
def test_every_path_and_name_the_doc_gives_exists():
    """The paths the doc names exist, and each name of the "Concept -> module" table is defined
    in one of the modules of its row (so the map follows when code moves)."""
    with open(DOC, encoding='utf-8') as f:
        text = f.read()
    missing = sorted({path for path in re.findall(r'`((?:ctvis|tools|demo|projects|configs)/'
                                                  r'[\w./*-]*)`', text)
                      if '*' not in path and not osp.exists(osp.join(REPO, path))})
    assert not missing, f'{DOC} names paths that do not exist: {missing}'
    table = text.split('## Concept -> module', 1)[1].split('\n## ', 1)[0]
    problems = []
    for row in re.findall(r'^\| [^|]+ \| (.+?) \| (.+?) \|\s*$', table, re.M)[1:]:
        paths = re.findall(r'`([\w./]+)`', row[0])
        folder = osp.dirname(paths[0]) if paths else ''
        files = [module_file(osp.join(p if '/' in p else osp.join(folder, p))
                             .rstrip('/').removesuffix('.py').replace('/', '.')) for p in paths]
        defined = set().union(*(defined_names(f) or set() for f in files if f))
        problems += [f'{name} (row {row[0]})' for name in re.findall(r'`(\w+)`', row[1])
                     if name not in defined]
    assert not problems, f'{DOC}: names not defined in their row\'s modules: {problems}'
