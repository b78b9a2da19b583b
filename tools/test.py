"""Test (and evaluate) a checkpoint: ``python tools/test.py CONFIG CHECKPOINT [options]``.

Same command line as mmdet 3.x's tools/test.py. ``import ctvis`` applies the stack fixes, so the
checkpoints mmengine writes load on torch >= 2.6 (through the restricted unpickler: a checkpoint
from elsewhere cannot run code). ``--out`` writes the standard YouTube-VIS results JSON through
the config's YTVISMetric; ``--show-dir`` draws each video's predicted masks on its frames.
Distributed: tools/dist_test.sh.
"""
import argparse
import os
import os.path as osp
import sys
from typing import Dict, List, Optional, Sequence

import cv2
import mmcv
import numpy as np
import pycocotools.mask as mask_utils
import torch
from mmengine.config import Config, ConfigDict
from mmengine.hooks import Hook
from mmengine.logging import MMLogger
from mmengine.structures import InstanceData

import ctvis  # noqa: F401  (stack fixes + registration)
from ctvis.evaluation import YTVISMetric, dump_results, results2json
from ctvis.evaluation.ytvis_eval import load_long_video_ids
from ctvis.utils import (ConfigError, build_runner, checkpoint_problem, load_tool_config,
                         parse_tool_args, run_and_release_process_group)
from mmdet.registry import METRICS
from mmdet.structures.mask import mask2bbox

YTVIS_METRIC_TYPES = ('YTVISMetric', 'ctvis.YTVISMetric', 'mmdet.YTVISMetric', YTVISMetric)


@METRICS.register_module(force=True)  # force: this script may be imported more than once
class YTVISMetricWritingResults(YTVISMetric):
    """YTVISMetric that also writes its results list to one JSON file (``--out``).

    YTVISMetric writes ``results.json``/``results.zip`` into an ``outfile_prefix`` directory;
    ``--out`` names the file itself, so it goes through the metric's own helpers
    (``results2json``, ``dump_results``), before the usual evaluation or formatting: an error
    there never loses the results of the whole inference.
    """

    def __init__(self, results_file: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.results_file = results_file

    def compute_metrics(self, results: List[dict]) -> Dict[str, float]:
        dump_results(results2json(results, self.evaluator.category_ids), self.results_file)
        MMLogger.get_current_instance().info(f'--out: wrote {self.results_file}')
        return super().compute_metrics(results)


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
    ytvis_metrics = [m for m in metrics if m.get('type') in YTVIS_METRIC_TYPES]
    if not ytvis_metrics:
        found = ', '.join(str(m.get('type')) for m in metrics) or 'none'
        raise ConfigError(f'{config_path}: --out writes YouTube-VIS results through the '
                          f'YTVISMetric, but test_evaluator has none (metrics: {found})')
    if len(ytvis_metrics) > 1:
        raise ConfigError(f'{config_path}: --out is ambiguous with {len(ytvis_metrics)} '
                          'YTVISMetrics in test_evaluator')
    ytvis_metrics[0].type = 'YTVISMetricWritingResults'
    ytvis_metrics[0].results_file = out_file


def configure_testing(args: argparse.Namespace) -> Config:
    """The config with the command line applied; ConfigError for anything unusable."""
    cfg = load_tool_config(args.config, args.cfg_options, args.launcher, args.work_dir)
    if '://' not in args.checkpoint:
        problem = checkpoint_problem(args.checkpoint)
        if problem == 'no such file':
            raise ConfigError(f'{args.checkpoint}: checkpoint not found')
        if problem is not None:
            raise ConfigError(f'{args.checkpoint}: not a readable checkpoint ({problem}); it was '
                              'probably cut short (an interrupted save or copy): use another one')
    cfg.load_from = args.checkpoint
    if args.out is not None:
        write_results_with_metric(cfg, args.out, args.config)
    return cfg


def _preview(ids: set) -> str:
    return ', '.join(map(str, sorted(ids)[:10])) + (', ...' if len(ids) > 10 else '')


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
            raise ConfigError(
                f'{metric.ann_file}: its videos are not those of the test dataset ({source}): '
                f'{len(not_in_gt)} of the dataset\'s {len(dataset_ids)} videos are missing '
                f'from it ({_preview(not_in_gt) or "none"}) and {len(not_in_dataset)} of its '
                f'{len(gt_ids)} videos are not in the dataset '
                f'({_preview(not_in_dataset) or "none"}). '
                'Point test_evaluator.ann_file at the ground truth of the same split (checked '
                'before inference; nothing was run).')


def track_color(track_id: int) -> tuple:
    """A fixed colour per track id, so a track keeps its colour across frames."""
    rng = np.random.RandomState(int(track_id) % 2**31)
    return tuple(int(c) for c in rng.randint(40, 256, 3))


class VideoMaskVisualizationHook(Hook):
    """Draw every finished video's predicted masks on its frames (test time).

    Why not mmdet's TrackVisualizationHook: it draws only ``outputs[0][0]`` of a step, expects
    bitmap masks, names folders by ``img_path.split('/')[-3]`` (``JPEGImages`` for every
    YouTube-VIS video) and its TrackLocalVisualizer needs seaborn for colours. ctvis' online model
    returns, once a video is complete, one sample with the whole video's predictions as RLE
    (``video_complete=True``); this hook remembers each frame's ``img_path`` as the frames go by
    and then draws masks, boxes and ``class id | score`` into
    ``out_dir/<video_id>/<frame file name>``. It draws with OpenCV, on every rank (mmengine's
    visualizers draw on rank 0 only, and each rank tests its own videos).
    """
    priority = 'NORMAL'

    def __init__(self, out_dir: str, score_thr: float = 0.3) -> None:
        self.out_dir = out_dir
        self.score_thr = score_thr
        self.frame_paths: Dict[tuple, str] = {}

    def after_test_iter(self, runner, batch_idx: int, data_batch: Optional[dict] = None,
                        outputs: Optional[list] = None) -> None:
        for video in (data_batch or {}).get('data_samples', []):
            for frame in video:
                if 'img_path' in frame:
                    self.frame_paths[(frame.get('video_id', video.get('video_id')),
                                      frame.frame_id)] = frame.img_path
        classes = (runner.test_dataloader.dataset.metainfo or {}).get('classes')
        for result in outputs or []:
            if result.get('video_complete', False):
                self.draw_video(result, classes)

    def draw_video(self, result, classes: Optional[Sequence[str]]) -> None:
        video_id = result.video_id
        for frame in result:
            path = self.frame_paths.pop((video_id, frame.frame_id), None)
            if path is None:
                raise KeyError(f'--show-dir: no img_path was seen for frame {frame.frame_id} of '
                               f'video {video_id}; the test pipeline must pack img_path')
            canvas = mmcv.imread(path)  # BGR
            instances = self.decoded(frame.pred_track_instances, canvas.shape)
            shown = instances[(instances.scores > self.score_thr)
                              & torch.from_numpy(instances.masks.any(axis=(1, 2)))]
            for mask, box, label, track_id, score in zip(shown.masks, shown.bboxes.int().tolist(),
                                                         shown.labels.tolist(),
                                                         shown.instances_id.tolist(),
                                                         shown.scores.tolist()):
                color = track_color(track_id)
                canvas[mask] = (0.5 * canvas[mask] + 0.5 * np.array(color)).astype(np.uint8)
                cv2.rectangle(canvas, tuple(box[:2]), tuple(box[2:]), color, 1)
                name = classes[label] if classes else f'class {label}'
                cv2.putText(canvas, f'{name} {track_id} | {score:.2f}',
                            (box[0], max(box[1] - 3, 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.4, color,
                            1, cv2.LINE_AA)
            mmcv.imwrite(canvas, osp.join(self.out_dir, str(video_id), osp.basename(path)))

    @staticmethod
    def decoded(instances: InstanceData, image_shape: tuple) -> InstanceData:
        """RLE (or None) masks -> bool (K, H, W) masks and their (K, 4) boxes."""
        height, width = image_shape[:2]
        masks = np.stack([
            mask_utils.decode(rle).astype(bool) if rle is not None else
            np.zeros((height, width), bool) for rle in instances.masks
        ]) if len(instances) else np.zeros((0, height, width), bool)
        return InstanceData(
            masks=masks, bboxes=mask2bbox(torch.from_numpy(masks)).float(),
            labels=torch.as_tensor(instances.labels), scores=torch.as_tensor(instances.scores),
            instances_id=torch.as_tensor(instances.instances_id))


def main(argv=None) -> None:
    args = parse_args(argv)
    try:
        cfg = configure_testing(args)
    except ConfigError as error:
        sys.exit(f'test.py: error: {error}')
    from mmdet.utils import setup_cache_size_limit_of_dynamo
    setup_cache_size_limit_of_dynamo()

    def test() -> None:
        runner = build_runner(cfg)
        loop = runner.test_loop  # builds the dataset and the metrics, nothing runs yet
        check_ground_truth(loop.dataloader.dataset, loop.evaluator.metrics)
        if args.show_dir is not None:
            runner.register_hook(VideoMaskVisualizationHook(args.show_dir, args.show_score_thr))
        runner.test()

    try:
        run_and_release_process_group(test)
    except ConfigError as error:
        sys.exit(f'test.py: error: {error}')


if __name__ == '__main__':
    main()
