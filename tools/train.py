"""Train a model from a config: ``python tools/train.py CONFIG [options]``.

Same command line as mmdet 3.x's tools/train.py. ``import ctvis`` registers ctvis components;
the config's ``custom_imports`` are honoured. The run loads checkpoints safely and without the
stack's known deprecation noise (:func:`ctvis.utils.tool_run`). Distributed: tools/dist_train.sh
(on a machine without CUDA too, see :mod:`ctvis.utils.distributed`).
"""
import argparse
import glob
import logging
import os.path as osp
import re
from typing import List, Optional

import torch
from mmengine.logging import print_log
from mmengine.runner import IterBasedTrainLoop

import ctvis  # noqa: F401  (registration)
from ctvis.datasets import YTVISFormatError
from ctvis.engine import (CheckpointFitsModel, TrainingTimeBudget, ValidateResumedCheckpoint,
                          parse_duration)
from ctvis.utils import (ConfigError, build_runner, builds_class, checkpoint_problem,
                         load_tool_config, parse_tool_args, run_and_release_process_group,
                         tool_run, tune_malloc, unknown_names)
from mmdet.registry import HOOKS, LOOPS


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a ctvis (or any mmdet) model.')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='where logs and checkpoints go '
                        '(default: the config\'s work_dir, else ./work_dirs/<config name>)')
    parser.add_argument('--amp', action='store_true',
                        help='automatic mixed precision (AmpOptimWrapper, dynamic loss scale); '
                        'needs a CUDA GPU')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the lr by (total batch size / auto_scale_lr.base_batch_size)')
    parser.add_argument('--resume', nargs='?', type=str, const='auto',
                        help='resume from this checkpoint; without a path, from the latest '
                        'intact checkpoint in the work_dir (last_checkpoint, else the newest '
                        'readable iter_*.pth / epoch_*.pth)')
    parser.add_argument('--time-budget', metavar='DURATION',
                        help='train for about this long (e.g. 900s, 15m, 1.5h): the number of '
                        'iterations and the parts of the schedule tied to its end are scaled '
                        'to the speed measured in the run (TrainingTimeBudget; iteration-based '
                        'configs only)')
    return parse_tool_args(parser, argv)


# mmengine's CheckpointHook names
TRAINING_CHECKPOINT = re.compile(r'(iter|epoch)_\d+\.pth')


def _warn(message: str) -> None:
    print_log(message, logger='current', level=logging.WARNING)


def _newest_first(paths: List[str]) -> List[str]:
    """Checkpoints by the iteration (or epoch) in their name, then modification time."""

    def progress(path: str) -> tuple:
        number = re.search(r'(\d+)\.pth$', osp.basename(path))
        return (int(number.group(1)) if number else -1, osp.getmtime(path))

    return sorted(paths, key=progress, reverse=True)


def resume_checkpoint(work_dir: str) -> Optional[str]:
    """The checkpoint ``--resume`` (without a path) continues from, or None to start afresh.

    The file ``last_checkpoint`` names it; when that record is empty or names a missing or
    damaged file (a save cut short by ``kill -9``, a full disk), the newest intact training
    checkpoint of the work_dir (``iter_N.pth`` / ``epoch_N.pth``, mmengine's names; other
    ``.pth`` files there, such as pretrained weights, hold no training state) is used instead,
    with a warning naming what was skipped.

    Raises:
        ConfigError: the work_dir holds checkpoints, but none is intact (nothing to resume,
            and silently starting over would throw the training away).
    """
    record = osp.join(work_dir, 'last_checkpoint')
    candidates = []
    if osp.isfile(record):
        with open(record) as f:
            recorded = f.read().strip()
        if not recorded:
            _warn(f'--resume: {record} is empty; looking for the newest intact checkpoint in '
                  f'{work_dir}')
        elif not osp.isfile(recorded):
            _warn(f'--resume: {record} names {recorded}, which does not exist; looking for the '
                  f'newest intact checkpoint in {work_dir}')
        else:
            candidates.append(recorded)
    others = [path for path in glob.glob(osp.join(work_dir, '*.pth'))
              if osp.isfile(path) and TRAINING_CHECKPOINT.fullmatch(osp.basename(path))]
    candidates += [path for path in _newest_first(others)
                   if not any(osp.samefile(path, seen) for seen in candidates)]
    broken = []
    for path in candidates:
        problem = checkpoint_problem(path)
        if problem is None:
            return path
        broken.append(path)
        _warn(f'--resume: skipping {path}: not a readable checkpoint ({problem}); delete it')
    if broken:
        raise ConfigError(f'--resume: no intact checkpoint in {work_dir}; unreadable: '
                          f'{", ".join(broken)}. Resume from a checkpoint elsewhere with '
                          '--resume PATH, or move them away to train from the start.')
    return None


def check_schedule(cfg, config_path: str) -> None:
    """ConfigError unless the training loop's lengths and intervals are whole numbers >= 1:
    mmengine trained nothing and exited 0 on max_iters=-3, divided by zero after the first
    iteration on val_interval=0, and named no setting for a string."""
    train_cfg = cfg.get('train_cfg') or {}
    for key in ('max_iters', 'max_epochs', 'val_interval', 'val_begin'):
        value = train_cfg.get(key)
        minimum = 0 if key == 'val_begin' else 1
        if value is not None and (type(value) is not int or value < minimum):
            raise ConfigError(f'{config_path}: train_cfg.{key} must be a whole number >= '
                              f'{minimum}, got {value!r}')


# the paramwise_cfg keys mmengine's DefaultOptimWrapperConstructor reads (ctvis's own constructor
# checks its keys itself)
DEFAULT_PARAMWISE_KEYS = ('bias_decay_mult', 'bias_lr_mult', 'bypass_duplicate', 'custom_keys',
                          'dcn_offset_lr_mult', 'dwconv_decay_mult', 'flat_decay_mult',
                          'norm_decay_mult')


def check_paramwise_cfg(cfg, config_path: str) -> None:
    """ConfigError for a paramwise_cfg key mmengine's default constructor would ignore
    (``norm_decay_mul`` left the norms' weight decay on, silently)."""
    wrapper = cfg.get('optim_wrapper') or {}
    if wrapper.get('constructor', 'DefaultOptimWrapperConstructor') not in (
            'DefaultOptimWrapperConstructor', 'mmengine.DefaultOptimWrapperConstructor'):
        return
    unknown = set(wrapper.get('paramwise_cfg') or {}) - set(DEFAULT_PARAMWISE_KEYS)
    if unknown:
        raise ConfigError(f'{config_path}: optim_wrapper.paramwise_cfg has unknown keys '
                          f'{unknown_names(unknown, DEFAULT_PARAMWISE_KEYS)}; mmengine\'s '
                          'DefaultOptimWrapperConstructor takes '
                          f'{", ".join(DEFAULT_PARAMWISE_KEYS)}')


def add_time_budget(cfg, config_path: str, duration: str) -> None:
    """A TrainingTimeBudget of ``duration`` in ``cfg.custom_hooks`` (replacing one the config
    has); ConfigError for a duration that does not parse or an epoch-based loop."""
    try:
        seconds = parse_duration(duration)
    except ValueError as error:
        raise ConfigError(f'--time-budget: {error}') from None
    train_cfg = cfg.get('train_cfg') or {}
    loop_type = train_cfg.get('type') or ('EpochBasedTrainLoop' if train_cfg.get('by_epoch')
                                          else 'IterBasedTrainLoop')
    if not builds_class(LOOPS, loop_type, IterBasedTrainLoop):
        raise ConfigError(f'{config_path}: --time-budget scales an iteration-based schedule; '
                          f'this config trains with {loop_type}')
    hooks = [hook for hook in cfg.get('custom_hooks', [])
             if not builds_class(HOOKS, hook.get('type'), TrainingTimeBudget)]
    cfg.custom_hooks = hooks + [dict(type='TrainingTimeBudget', seconds=seconds)]


def configure_training(args: argparse.Namespace):
    """The config with the command line applied; ConfigError for anything unusable."""
    cfg = load_tool_config(args.config, args.cfg_options, args.launcher, args.work_dir)

    if args.amp:
        if not torch.cuda.is_available():
            raise ConfigError(
                '--amp needs a CUDA GPU: mmengine\'s AmpOptimWrapper (fp16 with dynamic loss '
                'scaling) refuses to run on CPU, and torch.cuda.is_available() is False here. '
                'Train without --amp.')
        if 'optim_wrapper' not in cfg:
            raise ConfigError(f'{args.config}: --amp needs an optim_wrapper in the config')
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.loss_scale = 'dynamic'

    if cfg.get('randomness', {}).get('deterministic') and torch.cuda.is_available():
        raise ConfigError(
            'randomness.deterministic=True cannot train on CUDA: the mask losses sample the '
            'mask logits with grid_sample, whose CUDA backward has no deterministic '
            'implementation (torch refuses it at the first backward). Drop '
            'randomness.deterministic (CUDA runs are then close, not bit-exact), or hide the '
            'GPUs (CUDA_VISIBLE_DEVICES=) for a bit-exact run on the CPU.')

    check_schedule(cfg, args.config)
    check_paramwise_cfg(cfg, args.config)
    checkpoint_hook = (cfg.get('default_hooks') or {}).get('checkpoint') or {}
    if checkpoint_hook.get('max_keep_ckpts') == 1:
        _warn('default_hooks.checkpoint.max_keep_ckpts=1: mmengine deletes the previous '
              'checkpoint before it writes the next, so a run killed during a save has nothing '
              'left to resume from; keep 2 or more')
    if args.time_budget is not None:
        add_time_budget(cfg, args.config, args.time_budget)

    if args.auto_scale_lr:
        if 'base_batch_size' not in cfg.get('auto_scale_lr', {}):
            raise ConfigError(f'{args.config}: --auto-scale-lr needs '
                              'auto_scale_lr = dict(base_batch_size=...) in the config')
        cfg.auto_scale_lr.enable = True

    if args.resume == 'auto':
        checkpoint = resume_checkpoint(cfg.work_dir)
        cfg.resume = checkpoint is not None
        cfg.load_from = checkpoint
        if checkpoint is None:
            _warn(f'--resume: no checkpoint in {cfg.work_dir} yet, training from the start')
        else:
            print_log(f'--resume: resuming from the latest intact checkpoint {checkpoint}',
                      logger='current')
    elif args.resume is not None:
        if '://' not in args.resume:
            problem = checkpoint_problem(args.resume)
            if problem == 'no such file':
                raise ConfigError(f'{args.resume}: --resume checkpoint not found')
            if problem is not None:
                raise ConfigError(
                    f'{args.resume}: --resume checkpoint is not readable ({problem}). Resume '
                    'from an earlier checkpoint, or give --resume without a path to continue '
                    'from the newest intact checkpoint of the work_dir.')
        cfg.resume = True
        cfg.load_from = args.resume
    budgeted = any(builds_class(HOOKS, hook.get('type'), TrainingTimeBudget)
                   for hook in cfg.get('custom_hooks', []))
    if cfg.get('resume') and not budgeted:  # a budgeted run's checkpoint keeps its plan
        cfg.custom_hooks = list(cfg.get('custom_hooks', [])) + [
            dict(type='TrainingTimeBudget', seconds=None)]
    return cfg


def main(argv=None) -> None:
    args = parse_args(argv)
    with tool_run('train.py', reported=(YTVISFormatError, )):
        cfg = configure_training(args)
        from mmdet.utils import setup_cache_size_limit_of_dynamo
        setup_cache_size_limit_of_dynamo()
        run_and_release_process_group(lambda: build_training_runner(cfg).train())


def build_training_runner(cfg):
    """The runner; when resuming, with the checks that the checkpoint's weights fit the model
    (else the optimizer state of other shapes is stepped) and that a validation due at the
    resumed iteration runs (:mod:`ctvis.engine.checkpoint_hooks`)."""
    runner = build_runner(cfg)
    if cfg.get('resume'):
        runner.register_hook(CheckpointFitsModel(cfg.get('load_from') or 'the resumed checkpoint',
                                                 'nothing was trained', resuming=True))
        runner.register_hook(ValidateResumedCheckpoint())
    return runner


if __name__ == '__main__':
    print_log(tune_malloc(), logger='current')  # this process only, never on import
    main()
