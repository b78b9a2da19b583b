"""Test (and evaluate) a checkpoint: ``python tools/test.py CONFIG CHECKPOINT [options]``.

Same command line as mmdet 3.x's tools/test.py. ``import ctvis`` applies the stack fixes, so the
checkpoints mmengine writes load on torch >= 2.6 (through the restricted unpickler: a checkpoint
from elsewhere cannot run code). ``--out`` writes the standard YouTube-VIS results JSON through
the config's YTVISMetric; ``--show-dir`` draws each video's predicted masks on its frames.
Distributed: tools/dist_test.sh.
"""
import argparse
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
from ctvis.utils import (ConfigError, build_runner, load_tool_config, parse_tool_args,
                         run_and_release_process_group)
from mmdet.registry import METRICS
from mmdet.structures.mask import mask2bbox

YTVIS_METRIC_TYPES = ('YTVISMetric', 'ctvis.YTVISMetric', 'mmdet.YTVISMetric', YTVISMetric)


@METRICS.register_module(force=True)  # force: this script may be imported more than once
class YTVISMetricWritingResults(YTVISMetric):
    """YTVISMetric that also writes its results list to one JSON file (``--out``).

    YTVISMetric writes ``results.json``/``results.zip`` into an ``outfile_prefix`` directory;
    ``--out`` names the file itself, so it goes through the metric's own helpers
    (``results2json``, ``dump_results``) after the usual evaluation or formatting.
    """

    def __init__(self, results_file: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.results_file = results_file

    def compute_metrics(self, results: List[dict]) -> Dict[str, float]:
        metrics = super().compute_metrics(results)
        dump_results(results2json(results, self.evaluator.category_ids), self.results_file)
        MMLogger.get_current_instance().info(f'--out: wrote {self.results_file}')
        return metrics


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
    if '://' not in args.checkpoint and not osp.isfile(args.checkpoint):
        raise ConfigError(f'{args.checkpoint}: checkpoint not found')
    cfg.load_from = args.checkpoint
    if args.out is not None:
        write_results_with_metric(cfg, args.out, args.config)
    return cfg


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
        if args.show_dir is not None:
            runner.register_hook(VideoMaskVisualizationHook(args.show_dir, args.show_score_thr))
        runner.test()

    run_and_release_process_group(test)


if __name__ == '__main__':
    main()
