"""Config and run set-up shared by tools/train.py and tools/test.py, so both read configs,
overrides and launchers the same way, and set up their run the same way (:func:`tool_run`)."""
import argparse
import ast
import contextlib
import copy
import difflib
import inspect
import os
import os.path as osp
import stat
import sys
import tempfile
from typing import Any, Dict, Iterable, Iterator, List, Optional, Set, Tuple

from mmengine.config import Config, DictAction
from mmengine.hooks import CheckpointHook
from mmengine.logging import print_log
from mmengine.runner import Runner
from mmengine.utils import import_modules_from_strings

from .checkpoint_loaders import safe_checkpoint_loading
from .distributed import choose_dist_backend, init_cpu_process_group, use_cpu_model_wrapper
from .known_noise import KnownLogNoiseFilter, known_noise_filtered

# Top-level keys the Runner reads even when a config leaves them out (so they may be set).
RUNNER_KEYS = frozenset(inspect.signature(Runner.__init__).parameters) - {'self', 'cfg'} | {
    'runner_type', 'model_wrapper_cfg', 'find_unused_parameters', 'sync_bn', 'compile'
}


class ConfigError(ValueError):
    """A config file or a ``--cfg-options`` override that cannot be used; says which and why."""


def preview(values: Iterable, limit: int) -> str:
    """The first ``limit`` of ``values`` joined by commas, then ``...`` if there are more (for
    messages that name what they found)."""
    values = list(values)
    return ', '.join(map(str, values[:limit])) + (', ...' if len(values) > limit else '')


def _missing_key(cfg: Config, dotted_key: str) -> Optional[Tuple[str, str, list]]:
    """(existing prefix, first missing part, keys available there) or None if the key exists.

    Digit parts index lists, as ``Config.merge_from_dict`` allows (``pipeline.0.type``).
    """
    node: Any = cfg
    parts = dotted_key.split('.')
    for depth, part in enumerate(parts):
        prefix = '.'.join(parts[:depth])
        if isinstance(node, (list, tuple)):
            if not (part.isdigit() and int(part) < len(node)):
                return prefix, part, [str(i) for i in range(len(node))]
            node = node[int(part)]
        elif hasattr(node, 'keys'):
            if part not in node:
                return prefix, part, sorted(map(str, node.keys()))
            node = node[part]
        else:
            return prefix, part, []
    return None


def apply_cfg_options(cfg: Config, options: Dict[str, Any], config_path: str) -> None:
    """Merge ``--cfg-options`` into ``cfg``; every key must already exist in the config.

    A misspelt key would otherwise add a new, unused entry and the run would silently use the
    old value. Top-level Runner settings (:data:`RUNNER_KEYS`, e.g. ``work_dir``) may be added;
    prefix any other new key with ``+`` to add it on purpose (``+model.test_cfg.x=1``).

    Raises:
        ConfigError: a key (without ``+``) is not in the config.
    """
    checked = {}
    for key, value in options.items():
        top_level = key.split('.')[0]
        if key.startswith('+') or (top_level in RUNNER_KEYS and top_level not in cfg):
            checked[key.lstrip('+')] = value
            continue
        missing = _missing_key(cfg, key)
        if missing is not None:
            prefix, part, available = missing
            where = f"'{prefix}'" if prefix else 'the config'
            close = difflib.get_close_matches(part, available, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ''
            listed = preview(available, 20)
            raise ConfigError(
                f"{config_path}: --cfg-options key '{key}': '{part}' is not in {where}{hint}. "
                f'Keys there: {listed or "none (not a dict)"}. To add a new key on purpose, '
                f"write '+{key}=...'.")
        checked[key] = value
    cfg.merge_from_dict(checked)


def _assigned_names(statement: ast.stmt) -> Set[str]:
    """Names a module-level statement binds (``x = ...``, ``a, b = ...``, ``x += ...``)."""
    if isinstance(statement, ast.Assign):
        targets = statement.targets
    elif isinstance(statement, (ast.AugAssign, ast.AnnAssign)):
        targets = [statement.target]
    else:
        return set()
    names = set()
    for target in targets:
        for node in ast.walk(target):
            if isinstance(node, ast.Name):
                names.add(node.id)
    return names


@contextlib.contextmanager
def _variables_forced(values: Dict[str, Any]) -> Iterator[None]:
    """While active, every module-level assignment to a name in ``values``, in a Python config
    and each of its bases, is followed by ``name = <override>``.

    So values that the config computes from the variable at parse time (``ann_file=data_root +
    'valid.json'``, ``num_classes = len(classes)``) are computed from the override. It hooks the
    AST pass with which mmengine's ``Config._file2dict`` strips ``_base_`` assignments.
    """
    import mmengine.config.config as config_module
    original = config_module.RemoveAssignFromAST

    class RemoveBaseAssignAndForceVariables(original):

        def visit(self, node: ast.AST) -> ast.AST:
            node = super().visit(node)
            if isinstance(node, ast.Module):
                body = []
                for statement in node.body:
                    body.append(statement)
                    for name in sorted(_assigned_names(statement) & values.keys()):
                        value = ast.parse(repr(values[name]), mode='eval').body
                        body.append(ast.copy_location(
                            ast.Assign(targets=[ast.Name(id=name, ctx=ast.Store())],
                                       value=value), statement))
                node.body = body
                ast.fix_missing_locations(node)
            return node

    config_module.RemoveAssignFromAST = RemoveBaseAssignAndForceVariables
    try:
        yield
    finally:
        config_module.RemoveAssignFromAST = original


def _parse_time_variables(cfg: Config, options: Dict[str, Any]) -> Dict[str, Any]:
    """The ``--cfg-options`` that set a top-level config variable (``data_root``, ``classes``,
    ``max_iters`` ...), as opposed to a Runner setting or a key inside a dict."""
    return {
        key: value
        for key, value in options.items()
        if '.' not in key and not key.startswith('+') and key not in RUNNER_KEYS and key in cfg
        and not isinstance(cfg[key], dict)
    }


def _edited_variables(cfg: Config, options: Dict[str, Any],
                      overridden: Dict[str, Any]) -> Tuple[Dict[str, Any], Set[str]]:
    """New values of the top-level config variables that dotted ``--cfg-options`` edit inside
    (``train_pipeline.0.frame_range=8``), as plain literals, and the options applied to them; an
    edit applies to the variable's ``overridden`` value where an option also sets the whole
    variable.

    Why: such a variable (a pipeline, a list of strides) is copied into the Runner's settings
    when the config is read, so editing only the variable would leave the run unchanged.
    """
    edited: Dict[str, Config] = {}
    applied: Set[str] = set()
    for key, value in options.items():
        plain = key.lstrip('+')  # '+': a new key inside the variable, on purpose
        root = plain.split('.')[0]
        if '.' not in plain or root in RUNNER_KEYS or root not in cfg:
            continue
        variable = edited.get(root) or Config(
            {root: copy.deepcopy(overridden.get(root, cfg[root]))})
        if plain == key and _missing_key(variable, key) is not None:
            continue  # a wrong key: apply_cfg_options says so
        edited[root] = variable
        variable.merge_from_dict({plain: value})
        applied.add(key)
    return {root: variable.to_dict()[root] for root, variable in edited.items()}, applied


def _stale_copies(node: Any, old: Any, new: Any, skip: Set[str], prefix: str = '') -> List[str]:
    """``key=value`` of the dotted keys (except ``skip``) under ``node`` whose value still holds
    ``old`` and not ``new``: a string that starts with it, or a list or tuple equal to it."""
    if isinstance(node, dict):
        items = node.items()
    elif isinstance(node, (list, tuple)):
        items = enumerate(node)
    else:
        return []
    found = []
    for key, value in items:
        dotted = f'{prefix}{key}'
        if dotted in skip:
            continue
        if isinstance(old, str) and isinstance(value, str):
            if value.startswith(old) and not value.startswith(str(new)):
                found.append(f'{dotted}={value!r}')
        elif isinstance(old, (list, tuple)) and isinstance(value, (list, tuple)) and list(
                value) == list(old):
            found.append(f'{dotted}={value!r}')
        else:
            found.extend(_stale_copies(value, old, new, skip, dotted + '.'))
    return found


def read_config(config_path: str) -> Config:
    """``Config.fromfile``, with a Python syntax error reported as a ConfigError that names the
    file and the line (mmengine parses the source without its name, so the bare SyntaxError
    says ``File "<unknown>"``)."""
    try:
        return Config.fromfile(config_path)
    except SyntaxError as error:
        where = f'{config_path}, line {error.lineno}'
        if config_path.endswith('.py'):
            try:
                with open(config_path, encoding='utf-8') as f:
                    ast.parse(f.read(), filename=config_path)
                where = f'{config_path}: in a config it inherits (_base_), line {error.lineno}'
            except SyntaxError:
                pass
        raise ConfigError(f'{where}: invalid Python syntax: {error.msg}'
                          + (f': {error.text.strip()}' if error.text else '')) from None


def _read_with_variables(config_path: str, variables: Dict[str, Any]) -> Config:
    """Re-read a Python config with its parse-time ``variables`` overridden (see
    :func:`_variables_forced`).

    Raises:
        ConfigError: not a Python config, a value that is not a literal, or a variable that the
            re-read config does not hold.
    """
    listed = ' '.join(f'{key}={value!r}' for key, value in variables.items())
    if not config_path.endswith('.py'):
        raise ConfigError(f'{config_path}: --cfg-options {listed}: only Python configs compute '
                          'values from variables; set the keys that use them instead')
    for key, value in variables.items():
        try:
            literal_ok = ast.literal_eval(repr(value)) == value
        except (ValueError, SyntaxError):
            literal_ok = False
        if not literal_ok:
            raise ConfigError(f'{config_path}: --cfg-options {key}: {value!r} is not a literal')
    with _variables_forced(variables):
        cfg = Config.fromfile(config_path)
    not_reached = [f'{key} stays {cfg.get(key)!r}' for key, value in variables.items()
                   if cfg.get(key) != value]
    if not_reached:
        raise ConfigError(f'{config_path}: --cfg-options {listed}: re-reading the config with '
                          f'the new value failed ({"; ".join(not_reached)}: assigned where it '
                          'cannot be overridden); set the keys that use it instead')
    print_log(f'--cfg-options {listed}: re-read {config_path} with the new value, so the values '
              'computed from it (dataset paths, class counts ...) follow', logger='current')
    return cfg


def _refuse_stale_copies(cfg: Config, options: Dict[str, Any], variables: Dict[str, Any],
                        defaults: Config, config_path: str) -> None:
    """After every override: refuse keys that still hold an overridden variable's old value (a
    path under the old ``data_root``, the old ``classes``) unless an option set them too."""
    set_keys = {key.lstrip('+') for key in options}
    tree = cfg.to_dict()
    problems = []
    for key, value in variables.items():
        old = defaults[key]
        if old != value and isinstance(old, (str, list, tuple)) and old:
            problems.extend(_stale_copies(tree, old, value, set_keys))
    if problems:
        listed = ' '.join(f'{key}={value!r}' for key, value in variables.items())
        raise ConfigError(
            f'{config_path}: --cfg-options {listed}: the config was re-read with the new value, '
            'but these keys still hold the old one (they are written out in the config, not '
            'built from the variable): ' + '; '.join(problems) +
            '. Set each of them with --cfg-options too.')


def load_tool_config(config_path: str,
                     cfg_options: Optional[Dict[str, Any]] = None,
                     launcher: str = 'none',
                     work_dir: Optional[str] = None) -> Config:
    """Read a config for tools/train.py and tools/test.py.

    Checks the file exists, merges ``cfg_options`` (:func:`apply_cfg_options`), imports the
    config's ``custom_imports`` (again, in case an override changed them), records the launcher
    (without CUDA: the gloo backend and ``CPUDistributedDataParallel``, see
    :mod:`ctvis.utils.distributed`) and sets ``work_dir``: ``work_dir`` argument > the config's
    ``work_dir`` > ``./work_dirs/<config name>``.

    An override of a top-level variable of a Python config (``data_root=...``, ``classes=...``,
    or a key inside one: ``train_pipeline.0.frame_range=8``) re-reads the config with that
    variable replaced where the config assigns it, so every value computed from it follows; keys
    that still hold the old value afterwards are refused.

    Raises:
        ConfigError: the file does not exist or is not a ``.py``/``.json``/``.yaml`` config, its
            Python syntax is invalid, an override key is wrong, a variable override cannot
            reach every key built from it, or the work_dir lies below a file.
    """
    if not osp.isfile(config_path):
        raise ConfigError(f'{config_path}: config file not found')
    if not config_path.endswith(('.py', '.json', '.yaml', '.yml')):
        raise ConfigError(f'{config_path}: not a config file (.py, .json or .yaml expected)')
    cfg = read_config(config_path)
    if cfg_options:
        whole = _parse_time_variables(cfg, cfg_options)
        edited, applied_inside = _edited_variables(cfg, cfg_options, whole)
        variables = {**whole, **edited}
        if variables:
            defaults, cfg = cfg, _read_with_variables(config_path, variables)
        # what the re-read applied is not merged again: with a whole list and a key inside it,
        # mmengine's merge fails ('list' object has no attribute 'setdefault')
        apply_cfg_options(cfg, {key: value for key, value in cfg_options.items()
                                if key not in whole and key not in applied_inside}, config_path)
        if variables:
            _refuse_stale_copies(cfg, cfg_options, variables, defaults, config_path)
    if cfg.get('custom_imports'):
        import_modules_from_strings(**cfg.custom_imports)
    cfg.launcher = launcher
    if launcher != 'none':
        choose_dist_backend(cfg)
        use_cpu_model_wrapper(cfg)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(config_path))[0])
    if '://' not in cfg.work_dir:  # mmengine creates it later, with a bare traceback on failure
        existing = osp.abspath(cfg.work_dir)
        while not osp.exists(existing):
            existing = osp.dirname(existing)
        if not osp.isdir(existing):
            raise ConfigError(f'{cfg.work_dir}: cannot be the work_dir: {existing} is a file, '
                              'not a folder')
        if not os.access(existing, os.W_OK | os.X_OK):  # a read-only file system too
            raise ConfigError(f'{cfg.work_dir}: cannot be the work_dir: {existing} is not '
                              'writable (give --work-dir a writable folder)')
    return cfg


def output_file_problem(path: str) -> Optional[str]:
    """Why no file can be written at ``path``, or None; creates its folder if missing.

    A file is created beside it and removed (``os.access`` says yes to root everywhere), so a
    tool can refuse an unusable output before its work instead of losing that work at the end.
    """
    folder = osp.dirname(osp.abspath(path))
    problem = _folder_problem(folder)
    if problem is not None:
        return f'its folder {problem}'
    if osp.isdir(path):
        return 'is a folder, expected a file name'
    if osp.exists(path) and not stat.S_ISREG(os.stat(path).st_mode):
        return 'exists and is not a regular file'
    return None


def output_folder_problem(folder: str) -> Optional[str]:
    """Why no file can be written inside ``folder``, or None; creates it if missing."""
    problem = _folder_problem(osp.abspath(folder))
    return None if problem is None else f'the folder {problem}'


def _folder_problem(folder: str) -> Optional[str]:
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as error:
        return f'{folder} cannot be created: {error.strerror}'
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix='.ctvis_'):
            pass
    except OSError as error:
        return f'{folder} is not writable: {error.strerror}'
    return None


def build_runner(cfg: Config) -> Runner:
    """mmengine's default Runner, or the registered ``runner_type`` when the config names one.

    Under a launcher on a machine without CUDA the process group is created first
    (:func:`~ctvis.utils.distributed.init_cpu_process_group`). The Runner's logger drops
    mmengine's known log noise (:class:`~ctvis.utils.known_noise.KnownLogNoiseFilter`).
    """
    init_cpu_process_group(cfg.get('launcher', 'none'), cfg.get('env_cfg', {}).get('dist_cfg', {}))
    if 'runner_type' in cfg:
        from mmdet.registry import RUNNERS
        runner = RUNNERS.build(cfg)
    else:
        runner = Runner.from_cfg(cfg)
    runner.logger.addFilter(KnownLogNoiseFilter())
    check_checkpoint_hooks(runner)
    return runner


def unknown_names(names, known) -> str:
    """``names`` joined, each with the closest of ``known`` as a hint: ``a (did you mean b?)``."""
    hinted = []
    for name in sorted(names):
        close = difflib.get_close_matches(name, known, n=1)
        hinted.append(name + (f' (did you mean {close[0]}?)' if close else ''))
    return ', '.join(hinted)


def check_checkpoint_hooks(runner: Runner) -> None:
    """ConfigError for a CheckpointHook argument that it does not know: mmengine keeps any such
    keyword and passes it to the first save, so a typo (``intervall=``) failed only there, after
    the iterations before it."""
    for hook in runner.hooks:
        if isinstance(hook, CheckpointHook) and getattr(hook, 'args', None):
            known = [name for name in inspect.signature(CheckpointHook).parameters
                     if name != 'kwargs']
            raise ConfigError(f'default_hooks.checkpoint: unknown arguments '
                              f'{unknown_names(hook.args, known)}; CheckpointHook takes '
                              f'{", ".join(known)}')


@contextlib.contextmanager
def tool_run(prog: str, reported: Tuple[type, ...] = ()) -> Iterator[None]:
    """What tools/train.py and tools/test.py set up for their whole run, undone on exit.

    Checkpoints load safely (:func:`~ctvis.utils.checkpoint_loaders.safe_checkpoint_loading`) and
    the stack's known deprecation warnings are silenced
    (:func:`~ctvis.utils.known_noise.known_noise_filtered`). ``import ctvis`` does neither.
    A :class:`ConfigError`, or an error of the ``reported`` types (the tools pass the dataset's
    ``YTVISFormatError``: a bad annotation file, or a frame found bad when its video is first
    loaded mid-run), ends the tool with ``'<prog>: error: <message>'``, not a traceback: their
    messages name the file and the problem.
    """
    with known_noise_filtered(), safe_checkpoint_loading():
        try:
            yield
        except (ConfigError, *reported) as error:
            sys.exit(f'{prog}: error: {error}')


def _python_value(node: ast.expr) -> Any:
    """The value of a ``--cfg-options`` value written with dicts (``[dict(type=A),{'b': 1}]``).

    Numbers, strings, lists, tuples, ``{...}`` and ``dict(key=value, ...)``; a bare word is read
    as mmengine's ``DictAction`` reads it (``True``/``False`` in any case, ``None``, else a
    string). Anything else (calls, operators) is refused: values are data, never code.
    """
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return DictAction._parse_int_float_bool(node.id)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)) and isinstance(
            node.operand, ast.Constant) and isinstance(node.operand.value, (int, float)):
        return -node.operand.value if isinstance(node.op, ast.USub) else node.operand.value
    if isinstance(node, (ast.List, ast.Tuple)):
        values = [_python_value(element) for element in node.elts]
        return values if isinstance(node, ast.List) else tuple(values)
    if isinstance(node, ast.Dict) and None not in node.keys:
        return {_python_value(k): _python_value(v) for k, v in zip(node.keys, node.values)}
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == 'dict'
            and not node.args and all(keyword.arg for keyword in node.keywords)):
        return {keyword.arg: _python_value(keyword.value) for keyword in node.keywords}
    raise ValueError(f'{ast.unparse(node)!r} is not a value')


class CfgOptionsAction(DictAction):
    """mmengine's ``DictAction``, plus values with dicts (``vis_backends=[dict(type=A),
    dict(type=B)]``, which ``DictAction`` keeps as strings or fails on), and an option it cannot
    parse reported as a usage error naming it instead of a traceback."""

    def __call__(self, parser, namespace, values, option_string=None):
        options = dict(getattr(namespace, self.dest, None) or {})
        for option in values:
            key, equals, text = option.partition('=')
            if not equals:
                parser.error(f'{option_string}: {option!r} is not KEY=VALUE')
            try:
                options[key] = self._parse_value(text)
            except (AssertionError, RecursionError, SyntaxError, ValueError) as error:
                detail = f' ({error})' if isinstance(error, ValueError) else ''
                parser.error(f'{option_string}: cannot parse {option!r}{detail}: a value is a '
                             'number, a string, a list [a,b], a tuple (a,b) or a dict(k=v) / '
                             "{'k': v}, with balanced brackets; inside a dict, quote every "
                             "string that is not a single word")
        setattr(namespace, self.dest, options)

    @classmethod
    def _parse_value(cls, text: str) -> Any:
        """Python syntax when the value holds a dict, else ``DictAction``'s reading (a string
        with braces such as ``{}.jpg`` stays a string)."""
        python_error = None
        if 'dict(' in text or '{' in text:
            try:
                return _python_value(ast.parse(text.strip(), mode='eval').body)
            except (SyntaxError, ValueError) as error:
                python_error = error
        value = cls._parse_iterable(text)
        if python_error is not None and _holds_dict_text(value):
            raise python_error
        return value


def _holds_dict_text(value: Any) -> bool:
    """Whether a parsed value holds a string written as a dict (``dict(...)`` or ``{...}``)."""
    if isinstance(value, (list, tuple)):
        return any(_holds_dict_text(element) for element in value)
    text = value.strip() if isinstance(value, str) else ''
    return text.startswith('dict(') or text.startswith('{') and text.endswith('}')


def parse_tool_args(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """Add the arguments every tool shares (``--cfg-options``, ``--launcher``, ``--local-rank``,
    as in mmdet's tools), parse the command line and export ``LOCAL_RANK`` for the launcher."""
    parser.add_argument('--cfg-options', nargs='+', action=CfgOptionsAction,
                        help='override config keys, key=value (nested keys with dots, lists as '
                        'key="[a,b]", dicts as key="dict(k=v)"); keys must exist unless '
                        'prefixed with "+"')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    # torchrun sets LOCAL_RANK; torch.distributed.launch passes --local-rank instead.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args
