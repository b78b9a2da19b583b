"""What ``import ctvis`` leaves alone, and what the tools set up for their run instead: known
noise filtered (ctvis.utils.known_noise), distributed runs on a CPU-only torch
(ctvis.utils.distributed)."""
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch
from mmengine.config import Config

from conftest import GLOO_PROBE_TIMEOUT_S, REPO, free_port, loopback_env, pythonpath_for
from ctvis.utils import (CPU_MODEL_WRAPPER, known_noise_filtered, load_tool_config,
                         use_cpu_model_wrapper)

# ----------------------------------------------------------------------------------------------
# import ctvis
# ----------------------------------------------------------------------------------------------

IMPORT_SIDE_EFFECTS = textwrap.dedent("""
    import logging, sys, warnings
    import numpy, torch
    import mmengine.config, mmengine.dist.utils, mmengine.logging, mmengine.model, mmengine.runner
    import mmengine.utils.dl_utils
    import mmdet.datasets, mmdet.engine, mmdet.evaluation, mmdet.models, mmdet.structures
    from mmengine.logging.logger import FilterDuplicateWarning
    from mmengine.model.wrappers import MMDistributedDataParallel
    from mmengine.runner.checkpoint import CheckpointLoader

    PACKAGES = ('torch', 'mmengine', 'mmdet', 'mmcv', 'numpy', 'logging', 'warnings', 'pickle')

    def snapshot():
        return dict(
            modules={name: {key: id(value) for key, value in vars(module).items()}
                     for name, module in list(sys.modules.items())
                     if module is not None and name.split('.')[0] in PACKAGES},
            classes=[dict(vars(cls)) for cls in (MMDistributedDataParallel,
                                                 FilterDuplicateWarning, CheckpointLoader)],
            schemes=dict(CheckpointLoader._schemes), filters=list(warnings.filters),
            safe_globals=set(torch.serialization.get_safe_globals()),
            loggers={name: (list(logger.handlers), list(logger.filters), logger.level)
                     for name, logger in [('', logging.root)] + list(
                         logging.Logger.manager.loggerDict.items())
                     if isinstance(logger, logging.Logger)})

    before = snapshot()
    exec(sys.argv[1])
    after = snapshot()
    changed = [f'{name}.{key}' for name, attrs in before['modules'].items()
               for key, value in attrs.items() if after['modules'][name].get(key) != value]
    changed += [key for key in ('classes', 'schemes', 'filters', 'safe_globals')
                if before[key] != after[key]]
    changed += [f'logger {name!r}' for name, value in before['loggers'].items()
                if after['loggers'][name] != value]
    print('changed:', changed)
""")


def import_side_effects(statement: str) -> str:
    """The 'changed: [...]' line of IMPORT_SIDE_EFFECTS for ``statement``, in a fresh process."""
    result = subprocess.run([sys.executable, '-c', IMPORT_SIDE_EFFECTS, statement], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1]


def test_import_ctvis_changes_nothing_outside_ctvis():
    """Every attribute of every torch/mmengine/mmdet/mmcv/numpy/logging/warnings module, the
    classes ctvis used to patch, mmengine's checkpoint schemes, torch's weights-only allow-list,
    the warning filters and every logger's handlers and filters: the same before and after."""
    assert import_side_effects('import ctvis') == 'changed: []'


def test_the_side_effect_check_sees_a_patch():
    """The check above fails for what the old compat module did, e.g. wrapping a method."""
    patch = ('import mmengine.model.wrappers as w; '
             'w.MMDistributedDataParallel.__init__ = lambda self, *a, **k: None')
    assert import_side_effects(patch) == 'changed: [\'classes\']'
    assert 'mmengine.runner.checkpoint.torch' in import_side_effects(
        'import mmengine.runner.checkpoint as c, types; c.torch = types.ModuleType("torch")')


# ----------------------------------------------------------------------------------------------
# Known noise, filtered in the tools' run only
# ----------------------------------------------------------------------------------------------

MMDET_BASE_CONFIG = textwrap.dedent("""
    _base_ = ['mmdet::_base_/default_runtime.py']
    train_cfg = dict(type='IterBasedTrainLoop', max_iters=3)
""")


def test_mmdet_base_inheritance_without_pkg_resources_noise(tmp_path):
    path = tmp_path / 'inherits_mmdet.py'
    path.write_text(MMDET_BASE_CONFIG)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        Config.fromfile(str(path))  # control: mmengine's lookup warns
        assert [w for w in caught if 'pkg_resources' in str(w.message)]
        del caught[:]
        with known_noise_filtered():
            cfg = Config.fromfile(str(path))
    assert cfg.default_scope == 'mmdet' and cfg.train_cfg.max_iters == 3
    assert cfg.default_hooks.checkpoint.type == 'CheckpointHook'
    assert not [w for w in caught if 'pkg_resources' in str(w.message)]


NOISE_SCRIPT = textwrap.dedent("""
    import logging, sys, warnings
    import numpy as np, pycocotools.mask as mask_utils, torch
    import mmengine.optim.optimizer.amp_optimizer_wrapper as amp_wrapper
    from mmengine.config import Config
    from mmengine.fileio import FileClient
    from mmengine.logging import MMLogger, print_log
    from mmengine.runner.amp import autocast
    from mmdet.models.layers.transformer import DeformableDetrTransformerEncoder as Encoder
    from ctvis.utils import KnownLogNoiseFilter, tool_run

    filters = list(warnings.filters)
    MMLogger.get_instance('noise_check', logger_name='noise_check').addFilter(
        KnownLogNoiseFilter())  # as build_runner does for the Runner's logger
    with tool_run('test.py'):
        Config.fromfile(sys.argv[1])                      # pkg_resources import + reload
        with autocast(device_type='cuda', enabled=False):  # torch.get_autocast_gpu_dtype()
            pass
        exec(compile('GradScaler()', amp_wrapper.__file__, 'exec'), vars(amp_wrapper))
        FileClient.infer_client(None, '.')                # mmengine's own deprecated FileClient
        mask_utils.decode(mask_utils.encode(np.asfortranarray(np.ones((4, 4), np.uint8))))
        Encoder.get_encoder_reference_points(torch.tensor([[2, 3]]), torch.ones(1, 1, 2), 'cpu')
        torch.get_autocast_gpu_dtype()                    # control: a user's own deprecated call
        print_log('control: a real warning', logger='current', level=logging.WARNING)
    assert warnings.filters == filters  # undone on exit
    mask_utils.decode(mask_utils.encode(np.asfortranarray(np.ones((4, 4), np.uint8))))
""")


def test_tool_run_silences_known_noise_and_the_rest_still_shows(tmp_path):
    config = tmp_path / 'inherits_mmdet.py'
    config.write_text(MMDET_BASE_CONFIG)
    result = subprocess.run([sys.executable, '-W', 'always', '-c', NOISE_SCRIPT, str(config)],
                            capture_output=True, text=True, cwd=REPO, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    for noise in ('pkg_resources is deprecated', '`torch.cuda.amp.GradScaler(args...)` is '
                  'deprecated', '"FileClient" will be deprecated', '"HardDiskBackend" is the '
                  'alias', 'torch.meshgrid: in an upcoming release'):
        assert noise not in output
    # the user's own deprecated call, the unrelated GradScaler warning and real log lines remain
    assert output.count('torch.get_autocast_gpu_dtype() is deprecated') == 1
    assert 'CUDA is not available.  Disabling' in output
    assert 'control: a real warning' in output
    # after the run the filters are the process' own again: pycocotools warns once more
    assert output.count("__array__ implementation doesn't accept a copy keyword") == 1


# ----------------------------------------------------------------------------------------------
# Distributed runs on a CPU-only torch
# ----------------------------------------------------------------------------------------------

cpu_only = pytest.mark.skipif(torch.cuda.is_available(), reason='checks the CPU-only code paths')


@cpu_only
@pytest.mark.parametrize('wrapper, expected', [
    (None, dict(type=CPU_MODEL_WRAPPER, broadcast_buffers=False, find_unused_parameters=True)),
    (dict(find_unused_parameters=True), dict(type=CPU_MODEL_WRAPPER,
                                             find_unused_parameters=True)),
    (dict(type='MMDistributedDataParallel', broadcast_buffers=True),
     dict(type=CPU_MODEL_WRAPPER, broadcast_buffers=True)),
    (dict(type='MMFullyShardedDataParallel'), dict(type='MMFullyShardedDataParallel')),
])
def test_cpu_model_wrapper_replaces_only_the_default_wrapper(wrapper, expected):
    cfg = Config(dict(find_unused_parameters=True))
    if wrapper is not None:
        cfg.model_wrapper_cfg = wrapper
    use_cpu_model_wrapper(cfg)
    assert cfg.model_wrapper_cfg.to_dict() == expected


@cpu_only
def test_tool_config_under_a_launcher_sets_gloo_and_the_cpu_wrapper(tmp_path):
    path = tmp_path / 'config.py'
    path.write_text('model = dict(type="X")\n')
    cfg = load_tool_config(str(path), launcher='pytorch')
    assert cfg.env_cfg.dist_cfg.backend == 'gloo'
    assert cfg.model_wrapper_cfg.type == CPU_MODEL_WRAPPER
    path.write_text('env_cfg = dict(dist_cfg=dict(backend="nccl", timeout=5))\n')
    kept = load_tool_config(str(path), launcher='pytorch').env_cfg.dist_cfg.to_dict()
    assert kept == dict(backend='gloo', timeout=5)
    alone = load_tool_config(str(path), launcher='none')
    assert 'model_wrapper_cfg' not in alone and alone.env_cfg.dist_cfg.backend == 'nccl'


_CPU_DISTRIBUTED_CHECK = textwrap.dedent("""
    import gc, os, sys
    import pytest, torch, torch.distributed as dist, torch.nn as nn
    from mmengine.config import Config
    from test_checkpoint import TinyRegressor, make_runner
    from ctvis.utils import (CPUDistributedDataParallel, init_cpu_process_group,
                             run_and_release_process_group, use_cpu_model_wrapper)

    with pytest.raises(AttributeError, match='_cuda_setDevice'):
        torch.cuda.set_device(0)  # what mmengine's _init_dist_pytorch would hit

    def gloo_threads():
        names = [open(f'/proc/self/task/{task}/comm').read().strip()
                 for task in os.listdir('/proc/self/task')]
        return [name for name in names if 'gloo' in name]

    kept = []

    def train(name, keep_runner=False):  # what tools/train.py runs, as torchrun's rank 0 of 1
        cfg = Config(dict(launcher='pytorch'))
        use_cpu_model_wrapper(cfg)
        dist_cfg = dict(backend='gloo', timeout=60)
        init_cpu_process_group('pytorch', dist_cfg)  # before the Runner, as build_runner does
        assert dist.get_backend() == 'gloo'
        runner = make_runner(os.path.join(sys.argv[1], name), 2, name, launcher='pytorch',
                             env_cfg=dict(dist_cfg=dist_cfg), cfg=cfg)  # wrapper: from cfg
        with pytest.raises(ValueError, match='device_ids'):  # plain torch DDP refuses CPU + ids
            nn.parallel.DistributedDataParallel(TinyRegressor(), device_ids=[0])
        assert type(runner.model) is CPUDistributedDataParallel
        assert runner.model.device_ids is None
        runner.train()
        dist.broadcast_object_list([{'AP': 1.0}], src=0)  # how the evaluator ends a test run
        assert gloo_threads()
        if keep_runner:
            kept.append(runner)

    run_and_release_process_group(lambda: train('released'))
    assert not dist.is_initialized()
    assert gloo_threads() == [], gloo_threads()  # joined: none left to abort the exit
    print('cpu distributed pieces: ok', flush=True)

    run_and_release_process_group(lambda: train('kept', keep_runner=True))
    assert not dist.is_initialized() and gloo_threads()  # alive through `kept`, as the log says
    kept.clear()
    gc.collect()
    assert gloo_threads() == []  # so this process, too, exits without gloo threads
""")


@cpu_only
def test_cpu_only_distributed_pieces(loopback_gloo, tmp_path):
    """The tools' process group and model wrapper work without CUDA (mmengine's own launcher and
    DDP wrapping do not), and the group, gloo threads included, is gone before the interpreter
    exits. In a fresh process (a process group is process-wide state), bounded in time."""
    result = subprocess.run([sys.executable, '-c', _CPU_DISTRIBUTED_CHECK, str(tmp_path)],
                            env=loopback_env(PYTHONPATH=pythonpath_for(__file__), RANK='0',
                                             LOCAL_RANK='0', WORLD_SIZE='1',
                                             MASTER_PORT=str(free_port())),
                            capture_output=True, text=True, timeout=GLOO_PROBE_TIMEOUT_S)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert 'cpu distributed pieces: ok' in result.stdout
    assert 'the process group is still referenced' in result.stdout + result.stderr


def test_a_list_index_is_a_key_only_below_the_lists_length():
    from ctvis.utils.tool_config import _missing_key
    assert _missing_key(Config(dict(a=[1, 2])), 'a.2') == ('a', '2', ['0', '1'])
    assert _missing_key(Config(dict(a=[1, 2])), 'a.1') is None


def test_overriding_a_variable_that_was_empty_refuses_nothing(tmp_path):
    """An empty old value is in every string: the stale-copy check would flag every key."""
    config = tmp_path / 'c.py'
    config.write_text("prefix = ''\nmodel = dict(name=prefix + 'net', other='x')\n")
    cfg = load_tool_config(str(config), {'prefix': 'a/'}, work_dir=str(tmp_path / 'w'))
    assert cfg.model.name == 'a/net' and cfg.model.other == 'x'


def test_preview_marks_only_what_it_leaves_out():
    from ctvis.utils import preview
    assert preview([1, 2, 3], 3) == '1, 2, 3' and preview([1, 2, 3], 2) == '1, 2, ...'
    assert preview(iter(['a']), 5) == 'a' and preview([], 5) == ''
