"""Test (and evaluate) a checkpoint: ``python tools/test.py CONFIG CHECKPOINT [options]``.

Same command line as mmdet 3.x's tools/test.py. The run loads checkpoints safely
(:func:`ctvis.utils.tool_run`): the checkpoints mmengine writes load on torch >= 2.6, through
torch's weights-only loader, so a checkpoint from elsewhere cannot run code. ``--out`` writes the
standard YouTube-VIS results JSON through the config's YTVISMetric (``results_file``, written
before evaluating); ``--show-dir`` draws each video's predicted masks on its frames
(:class:`ctvis.engine.VideoMaskVisualizationHook`); ``--compile`` runs the model's per-frame
network through ``torch.compile`` (``CTVIS.compile_detector``; each new frame size compiles once).
Distributed: tools/dist_test.sh (on a machine without CUDA too, see :mod:`ctvis.utils.distributed`).
"""
import argparse
import os
from typing import List, Sequence

from mmengine.config import Config, ConfigDict
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper

import ctvis  # noqa: F401  (registration)
from ctvis.engine import CheckpointFitsModel, VideoMaskVisualizationHook
from ctvis.evaluation import YTVISMetric
from ctvis.datasets.ytvis_format import YTVISFormatError, load_long_video_ids
from ctvis.utils import (ConfigError, build_runner, builds_class, checkpoint_file_error,
                         load_tool_config, output_file_problem, output_folder_problem,
                         parse_tool_args, preview, run_and_release_process_group, tool_run,
                         tune_malloc)
from mmdet.registry import METRICS


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Test (and evaluate) a ctvis checkpoint.')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file (path or URL)')
    parser.add_argument('--work-dir', help='where logs and metrics go '
                        '(default: the config\'s work_dir, else ./work_dirs/<config name>)')
    parser.add_argument('--out', help='also write the YouTube-VIS results JSON here (the '
                        'format the CodaLab servers and tools/analysis_tools/eval_ytvis.py read)')
    parser.add_argument('--show-dir', help='draw the predicted masks of every frame into '
                        'SHOW_DIR/<video_id>/<frame file name>')
    parser.add_argument('--show-score-thr', type=float, default=0.3,
                        help='score threshold of the drawn predictions')
    parser.add_argument('--compile', action='store_true',
                        help='run the per-frame network through torch.compile (the tracker '
                        'stays eager; each new frame size compiles once)')
    return parse_tool_args(parser, argv)


def evaluator_metrics(evaluator_cfg) -> List[ConfigDict]:
    """The metric configs of a ``test_evaluator`` (a metric, a list, or an Evaluator dict)."""
    if isinstance(evaluator_cfg, dict) and 'metrics' in evaluator_cfg:
        evaluator_cfg = evaluator_cfg['metrics']
    if isinstance(evaluator_cfg, dict):
        return [evaluator_cfg]
    return [metric for metric in evaluator_cfg or [] if isinstance(metric, dict)]


def write_results_with_metric(cfg: Config, out_file: str, config_path: str) -> None:
    """Make the YTVISMetric of ``test_evaluator`` also write its results JSON to ``out_file``."""
    if not out_file.endswith('.json'):
        raise ConfigError(f'--out {out_file}: the YouTube-VIS results file must end in .json')
    metrics = evaluator_metrics(cfg.get('test_evaluator'))
    ytvis_metrics = [m for m in metrics if builds_class(METRICS, m.get('type'), YTVISMetric)]
    if not ytvis_metrics:
        found = ', '.join(str(m.get('type')) for m in metrics) or 'none'
        raise ConfigError(f'{config_path}: --out writes YouTube-VIS results through the '
                          f'YTVISMetric, but test_evaluator has none (metrics: {found})')
    if len(ytvis_metrics) > 1:
        raise ConfigError(f'{config_path}: --out is ambiguous with {len(ytvis_metrics)} '
                          'YTVISMetrics in test_evaluator')
    ytvis_metrics[0].results_file = out_file


def configure_testing(args: argparse.Namespace) -> Config:
    """The config with the command line applied; ConfigError for anything unusable."""
    cfg = load_tool_config(args.config, args.cfg_options, args.launcher, args.work_dir)
    if '://' not in args.checkpoint:
        error = checkpoint_file_error(args.checkpoint, 'it was probably cut short (an '
                                      'interrupted save or copy): use another one')
        if error is not None:
            raise ConfigError(error)
    cfg.load_from = args.checkpoint
    if args.out is not None:
        write_results_with_metric(cfg, args.out, args.config)
    # written after the whole inference: refused now rather than failing then
    for option, path, problem_of in (
            ('--out', getattr(args, 'out', None), output_file_problem),
            ('--show-dir', getattr(args, 'show_dir', None), output_folder_problem)):
        problem = None if path is None else problem_of(path)
        if problem is not None:
            raise ConfigError(f'{option} {path}: {problem}')
    return cfg


def check_ground_truth(dataset, metrics: Sequence) -> None:
    """Before any inference: the ground truth of every YTVISMetric can be evaluated against.

    Its ``ann_file`` exists, parses as YouTube-VIS ground truth (with annotations unless
    ``format_only``), lists exactly the test dataset's videos, and its ``long_video_ids`` file
    (if any) reads; so a wrong file costs seconds, not a whole inference. The parsed ground truth
    stays with the metric for the evaluation.

    Raises:
        ConfigError: names the file and the problem.
    """
    dataset_ids = None
    if len(dataset) and 'video_id' in dataset.get_data_info(0):
        dataset_ids = {int(dataset.get_data_info(i)['video_id']) for i in range(len(dataset))}
    for metric in metrics:
        if not isinstance(metric, YTVISMetric):
            continue
        try:
            evaluator = metric.evaluator  # parses ann_file once and keeps it
            if isinstance(metric.long_video_ids, (str, os.PathLike)):
                load_long_video_ids(metric.long_video_ids)
        except (OSError, ValueError) as error:  # FileNotFoundError, YTVISFormatError
            raise ConfigError(f'test_evaluator ground truth: {error} (checked before '
                              'inference; nothing was run)') from None
        if not metric.format_only and not evaluator.has_annotations:
            raise ConfigError(f'{metric.ann_file}: has no annotations, so it cannot be '
                              'evaluated (a test split?); to write a submission instead set '
                              'test_evaluator.format_only=True and test_evaluator.outfile_prefix')
        if dataset_ids is None:
            continue
        gt_ids = set(evaluator.video_ids)
        not_in_gt, not_in_dataset = dataset_ids - gt_ids, gt_ids - dataset_ids
        if not_in_gt or not_in_dataset:
            source = getattr(dataset, 'ann_file', type(dataset).__name__)
            missing, extra = preview(sorted(not_in_gt), 10), preview(sorted(not_in_dataset), 10)
            raise ConfigError(
                f'{metric.ann_file}: its videos are not those of the test dataset ({source}): '
                f'{len(not_in_gt)} of the dataset\'s {len(dataset_ids)} videos are missing '
                f'from it ({missing or "none"}) and {len(not_in_dataset)} of its '
                f'{len(gt_ids)} videos are not in the dataset ({extra or "none"}). '
                'Point test_evaluator.ann_file at the ground truth of the same split (checked '
                'before inference; nothing was run).')


def compile_detector(model, config_path: str) -> None:
    """Compile the per-frame network of the runner's model (unwrapped from DDP and the like)."""
    model = model.module if is_model_wrapper(model) else model
    if not hasattr(model, 'compile_detector'):
        raise ConfigError(f'{config_path}: --compile needs a CTVIS model (with compile_detector), '
                          f'the config builds a {type(model).__name__}')
    model.compile_detector()


def main(argv=None) -> None:
    args = parse_args(argv)
    with tool_run('test.py', reported=(YTVISFormatError, )):
        _test(args)


def _test(args: argparse.Namespace) -> None:
    """:func:`main` inside :func:`ctvis.utils.tool_run`."""
    cfg = configure_testing(args)
    from mmdet.utils import setup_cache_size_limit_of_dynamo
    setup_cache_size_limit_of_dynamo()

    def test() -> None:
        runner = build_runner(cfg)
        loop = runner.test_loop  # builds the dataset and the metrics, nothing runs yet
        check_ground_truth(loop.dataloader.dataset, loop.evaluator.metrics)
        runner.register_hook(CheckpointFitsModel(args.checkpoint))
        if args.show_dir is not None:
            runner.register_hook(VideoMaskVisualizationHook(args.show_dir, args.show_score_thr))
        if args.compile:
            compile_detector(runner.model, args.config)
        runner.test()

    run_and_release_process_group(test)


if __name__ == '__main__':
    print_log(tune_malloc(), logger='current')  # this process only, never on import
    main()
