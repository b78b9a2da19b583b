"""Convert official CTVIS / Mask2Former detectron2 weights to ctvis weights.

usage: ctvis_d2_to_mmdet.py SRC DST [--config CONFIG] [--init]

SRC is an official CTVIS checkpoint (``.pth``, state dict under ``model``) or a Mask2Former COCO
checkpoint (``.pkl``). Every source key is mapped or reported. With ``--config`` the result is
checked against the model that config builds: shapes must agree, and the file must load with
``strict=True``, unless ``--init`` says the weights only initialise training (Mask2Former COCO:
the class head, whose size differs, is dropped and the re-id head is left to its initialisation).
"""
import argparse
import os.path as osp
import pickle
import sys

import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

import ctvis  # noqa: F401  (registration)
from ctvis.utils import output_file_problem
from ctvis.utils.checkpoint import checkpoint_file_error, safe_load_file
from ctvis.utils.d2_conversion import (check_against_model, convert_state_dict,
                                       unwrap_d2_checkpoint)
from mmdet.registry import MODELS


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('src', help='detectron2 checkpoint (.pth or .pkl)')
    parser.add_argument('dst', help='output ctvis checkpoint (.pth)')
    parser.add_argument('--config', help='check the result against this config\'s model')
    parser.add_argument(
        '--init', action='store_true',
        help='weights for initialisation: drop shape mismatches, allow missing keys')
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    try:  # everything that can fail before the conversion's work is kept
        if args.config and not osp.isfile(args.config):
            raise ValueError(f'{args.config}: --config file not found')
        problem = output_file_problem(args.dst)
        if problem is not None:
            raise ValueError(f'{args.dst}: {problem}')
        # torch does not check a zip checkpoint's CRCs: a damaged download would convert into a
        # clean file of wrong weights
        error = checkpoint_file_error(args.src, 'it was probably damaged or cut short in the '
                                      'download: fetch it again')
        if error is not None:
            raise ValueError(error)
        source = unwrap_d2_checkpoint(safe_load_file(args.src), args.src)
        conversion = convert_state_dict(source)
    except (OSError, ValueError, pickle.UnpicklingError) as e:
        print(f'ctvis_d2_to_mmdet: {e}', file=sys.stderr)
        return 2
    state_dict = conversion.state_dict
    print(f'{args.src}: {len(source)} tensors, {len(state_dict)} converted '
          f'(incl. BatchNorm num_batches_tracked buffers)')
    for key, reason in conversion.dropped.items():
        print(f'  dropped {key}: {reason}')
    if conversion.unmapped:
        print(f'ctvis_d2_to_mmdet: {len(conversion.unmapped)} source keys have no ctvis '
              f'counterpart:\n  ' + '\n  '.join(conversion.unmapped), file=sys.stderr)
        return 1
    if args.config:
        cfg = Config.fromfile(args.config)
        init_default_scope(cfg.get('default_scope', 'mmdet'))
        model = MODELS.build(cfg.model)
        missing, unexpected, mismatched = check_against_model(state_dict, model)
        if args.init:
            for line in mismatched:
                print(f'  dropped (shape differs, re-initialised in training) {line}')
                state_dict.pop(line.split(':')[0])
            for key in missing:
                print(f'  not in source (initialised by the model) {key}')
            mismatched, missing = [], []
        problems = ([f'missing in source: {k}' for k in missing] +
                    [f'not in model: {k}' for k in unexpected] +
                    [f'shape mismatch {m}' for m in mismatched])
        if problems:
            print(f'ctvis_d2_to_mmdet: the weights do not fit {args.config}:\n  ' +
                  '\n  '.join(problems), file=sys.stderr)
            return 1
        model.load_state_dict(state_dict, strict=not args.init)
        print(f'loads into {args.config} (strict={not args.init})')
    torch.save(dict(state_dict=state_dict, meta=dict(source=args.src,
                                                     converter='ctvis_d2_to_mmdet')), args.dst)
    print(f'saved {args.dst}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
