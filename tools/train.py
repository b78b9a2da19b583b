"""Train a model from a config: ``python tools/train.py CONFIG [options]``.

Same command line as mmdet 3.x's tools/train.py. ``import ctvis`` applies the stack fixes
(checkpoint loading on torch >= 2.6 included) and registers ctvis components; the config's
``custom_imports`` are honoured. Distributed: tools/dist_train.sh.
"""
import argparse
import logging
import os.path as osp
import sys

import torch
from mmengine.logging import print_log
from mmengine.runner import find_latest_checkpoint

import ctvis  # noqa: F401  (stack fixes + registration)
from ctvis.utils import (ConfigError, build_runner, load_tool_config, parse_tool_args,
                         run_and_release_process_group)


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
                        'checkpoint in the work_dir')
    return parse_tool_args(parser, argv)


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

    if args.auto_scale_lr:
        if 'base_batch_size' not in cfg.get('auto_scale_lr', {}):
            raise ConfigError(f'{args.config}: --auto-scale-lr needs '
                              'auto_scale_lr = dict(base_batch_size=...) in the config')
        cfg.auto_scale_lr.enable = True

    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
        if find_latest_checkpoint(cfg.work_dir) is None:
            print_log(f'--resume: no checkpoint in {cfg.work_dir} yet, training from the start',
                      logger='current', level=logging.WARNING)
    elif args.resume is not None:
        if '://' not in args.resume and not osp.isfile(args.resume):
            raise ConfigError(f'{args.resume}: --resume checkpoint not found')
        cfg.resume = True
        cfg.load_from = args.resume
    return cfg


def main(argv=None) -> None:
    args = parse_args(argv)
    try:
        cfg = configure_training(args)
    except ConfigError as error:
        sys.exit(f'train.py: error: {error}')
    from mmdet.utils import setup_cache_size_limit_of_dynamo
    setup_cache_size_limit_of_dynamo()
    run_and_release_process_group(lambda: build_runner(cfg).train())


if __name__ == '__main__':
    main()
