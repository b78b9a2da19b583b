"""YouTube-VIS / OVIS video mask AP for online models (an mmengine metric).

The model sees one frame per test step; when it has seen a video's last frame it emits a
:class:`~mmdet.structures.TrackDataSample` whose metainfo has ``video_complete=True`` and which
holds one ``DetDataSample`` per frame, each with the video-level predictions as
``pred_track_instances`` (:meth:`~ctvis.models.VideoPrediction.to_data_sample`).

:class:`YTVISMetric` reads each finished video back as a
:class:`~ctvis.models.VideoPrediction` (the one video-result structure), turns the videos into the
standard results list ``[{video_id, category_id, score, segmentations}]`` with
:meth:`~ctvis.models.VideoPrediction.to_ytvis_results`, and scores it with
:mod:`ctvis.evaluation.ytvis_eval` against the raw YouTube-VIS JSON (so the test pipeline needs no
ground-truth masks), optionally with the identity metrics of
:mod:`ctvis.evaluation.tracking_metrics` (HOTA, IDF1, ...), or writes the submission files.
"""
import json
import math
import os
import os.path as osp
import zipfile
from collections import Counter
from typing import Any, Dict, Iterable, List, Optional, Sequence, Union

from mmengine.dist import (all_gather_object, broadcast_object_list,
                           is_main_process)
from mmengine.evaluator import BaseMetric
from mmengine.logging import MMLogger

from mmdet.registry import METRICS
from ..datasets.ytvis_format import load_json_file, load_long_video_ids
from ..datasets.ytvis_format.loading import is_real
from ..models.video_tracks import VideoPrediction
from ..utils.tool_config import ConfigError
from .tracking_metrics import TrackingEvaluator, tracking_metrics_table
from .ytvis_eval import YTVISEvaluator, evaluate_ytvis, metrics_table

__all__ = [
    'YTVISMetric', 'results2json', 'dump_results'
]


def results2json(videos: Iterable[VideoPrediction],
                 category_ids: Sequence[int]) -> List[dict]:
    """The standard YouTube-VIS results list of several videos, in the order given.

    Args:
        videos (Iterable[VideoPrediction]): One prediction per video, each with its
            ``video_id`` (as :meth:`VideoPrediction.from_data_sample` gives them).
        category_ids (Sequence[int]): Sorted ground-truth category ids; label ``i`` is
            ``category_ids[i]``.

    Returns:
        list[dict]: ``{video_id, category_id, score, segmentations}`` entries
        (:meth:`VideoPrediction.to_ytvis_results` of each video).

    Raises:
        ValueError: A video without ``video_id``, or a label outside ``category_ids``.
    """
    results = []
    for index, video in enumerate(videos):
        if video.video_id is None:
            raise ValueError(f'results2json: video {index} of the list has no video_id')
        results.extend(video.to_ytvis_results(video.video_id, category_ids))
    return results


def dump_results(results: List[dict], path: str) -> None:
    """Write a results list: JSON, or for a ``.zip`` path a zip holding
    ``results.json`` (the layout the YouTube-VIS / OVIS CodaLab servers
    expect)."""
    directory = osp.dirname(osp.abspath(path))
    os.makedirs(directory, exist_ok=True)
    if path.endswith('.zip'):
        with zipfile.ZipFile(path, 'w', zipfile.ZIP_DEFLATED) as archive:
            archive.writestr('results.json', json.dumps(results))
    else:
        with open(path, 'w', encoding='utf-8') as f:
            json.dump(results, f)


@METRICS.register_module()
class YTVISMetric(BaseMetric):
    """Video mask AP / AR of an online VIS model on YouTube-VIS or OVIS.

    Reads the ground truth from the raw annotation file (so validation and
    test pipelines need no ground-truth masks) and evaluates with
    :class:`~ctvis.evaluation.ytvis_eval.YTVISEvaluator`, which gives the
    numbers of the official cocoapi ``ytvoseval``. We do not subclass mmdet's
    ``YouTubeVISMetric``: it gathers the ground truth from the data samples,
    expects clip-level predictions and evaluates with mmdet's ytvoseval copy
    (broken on numpy >= 1.24, and slow).

    Args:
        ann_file (str): YouTube-VIS style JSON of the split (videos,
            categories, and annotations unless ``format_only``).
        metric (str): only ``'youtube_vis_ap'``.
        format_only (bool): only write ``<outfile_prefix>/results.json`` and
            ``<outfile_prefix>/results.zip`` (for the evaluation server) and
            return no metrics.
        outfile_prefix (str, optional): directory for those files; also
            written when evaluating if given.
        long_video_ids (str | Sequence[int], optional): YouTube-VIS 2022 long
            videos (ids or a JSON file); adds ``AP_short``, ``AP_long``,
            ``AP_2022`` and the other per-split numbers (not with ``format_only``).
        tracking_metrics (bool): also the identity metrics ``HOTA``,
            ``DetA``, ``AssA``, ``IDF1`` (class averages), their ``*_det_av``
            (over all detections) and ``IDSW`` (a count), by trackeval.
        tracking_score_thr (float, optional): identity metrics of the
            predictions scoring at least this (default: all, as trackeval).
        results_file (str, optional): also write the standard results list
            to this JSON file, before evaluating (an evaluation error never
            loses the inference; ``tools/test.py --out``).
        collect_device (str): kept for the ``BaseMetric`` interface; results
            are gathered with ``all_gather_object`` on the process group's
            backend.
        prefix (str, optional): metric name prefix; ``'youtube_vis'``.

    Metric values are fractions in [0, 1] (mmdet's convention); -1 where no
    category has ground truth (e.g. ``AP_L`` without large objects).

    Raises:
        ConfigError: settings that cannot be used together or at all (the tools report it in
            one line, before any inference).
    """
    default_prefix: Optional[str] = 'youtube_vis'

    def __init__(self,
                 ann_file: str,
                 metric: str = 'youtube_vis_ap',
                 format_only: bool = False,
                 outfile_prefix: Optional[str] = None,
                 long_video_ids: Optional[Union[str, Sequence[int]]] = None,
                 tracking_metrics: bool = False,
                 tracking_score_thr: Optional[float] = None,
                 results_file: Optional[str] = None,
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        if metric != 'youtube_vis_ap':
            raise ConfigError(f"YTVISMetric: metric must be 'youtube_vis_ap', "
                              f'got {metric!r}')
        if format_only and outfile_prefix is None:
            raise ConfigError('YTVISMetric: format_only=True needs an '
                              'outfile_prefix to write results.json/.zip to')
        if format_only and tracking_metrics:
            raise ConfigError('YTVISMetric: tracking_metrics=True needs the '
                              'ground truth, format_only=True computes no '
                              'metrics')
        if format_only and long_video_ids is not None:
            raise ConfigError('YTVISMetric: long_video_ids split the metrics by video length, '
                              'format_only=True computes no metrics (the evaluation server '
                              'splits them itself): set one of them to None')
        self.ann_file = ann_file
        self.format_only = format_only
        self.outfile_prefix = outfile_prefix
        if tracking_score_thr is not None and not (is_real(tracking_score_thr)
                                                   and math.isfinite(tracking_score_thr)):
            raise ConfigError('YTVISMetric: tracking_score_thr must be a finite number or None, '
                              f'got {tracking_score_thr!r}')
        # checked now (a file is read), not after the whole inference
        self.long_video_ids = None if long_video_ids is None else load_long_video_ids(
            long_video_ids, None if isinstance(long_video_ids, (str, os.PathLike))
            else 'YTVISMetric: long_video_ids')
        self.tracking_metrics = tracking_metrics
        self.tracking_score_thr = tracking_score_thr
        self.results_file = results_file
        self._evaluator: Optional[YTVISEvaluator] = None
        self._tracking_evaluator: Optional[TrackingEvaluator] = None

    @property
    def evaluator(self) -> YTVISEvaluator:
        """The evaluator of ``ann_file`` (loaded on first use, then kept)."""
        if self._evaluator is None:
            self._load_ground_truth()
        return self._evaluator

    @property
    def tracking_evaluator(self) -> TrackingEvaluator:
        """The identity-metrics evaluator of ``ann_file`` (made on first use,
        then kept)."""
        if self._tracking_evaluator is None:
            self._load_ground_truth()
        return self._tracking_evaluator

    def _load_ground_truth(self) -> None:
        # Read once for both evaluators when both are wanted.
        gt = load_json_file(self.ann_file)
        self._evaluator = YTVISEvaluator(gt, self.ann_file)
        if self.tracking_metrics:
            self._tracking_evaluator = TrackingEvaluator(
                gt, self.ann_file, self._evaluator)

    def process(self, data_batch: Any, data_samples: Sequence[Any]) -> None:
        """Keep the :class:`VideoPrediction` of every finished video;
        intermediate frames (samples without ``video_complete=True``) are
        skipped."""
        for sample in data_samples:
            video = VideoPrediction.from_data_sample(sample)
            if video is not None:
                self.results.append(video)

    def evaluate(self, size: int = 0) -> Dict[str, float]:
        """Gather every rank's videos and compute the metrics.

        Unlike ``BaseMetric.evaluate`` this does not interleave the ranks'
        results sample by sample nor cut them to ``size``: there is one
        result per video, and ranks may hold different numbers of videos
        (the test sampler keeps whole videos on one rank).

        Args:
            size (int): unused (the dataset length, given by the loops).
        """
        if not self.results:
            MMLogger.get_current_instance().warning(
                'YTVISMetric: no complete video was processed on this rank')
        results = [
            video for part in all_gather_object(self.results)
            for video in part
        ]
        metrics = [None]
        if is_main_process():
            metrics = [{
                f'{self.prefix}/{name}' if self.prefix else name: value
                for name, value in self.compute_metrics(results).items()
            }]
        broadcast_object_list(metrics)
        self.results.clear()
        return metrics[0]

    def compute_metrics(self,
                        results: List[VideoPrediction]) -> Dict[str, float]:
        """Evaluate (or format) the gathered per-video predictions.

        Args:
            results (list[VideoPrediction]): One per video, with its
                ``video_id``.

        Raises:
            ValueError: a video was predicted more than once (e.g. duplicated
                across ranks).
        """
        logger = MMLogger.get_current_instance()
        repeated = sorted(
            video_id
            for video_id, count in Counter(r.video_id
                                           for r in results).items()
            if count > 1)
        if repeated:
            raise ValueError(
                f'YTVISMetric: videos {repeated[:20]} were predicted more '
                'than once (duplicated across ranks by the sampler?)')
        evaluator = self.evaluator
        predictions = results2json(results, evaluator.category_ids)
        if self.results_file is not None:
            dump_results(predictions, self.results_file)
            logger.info(f'YTVISMetric: wrote {self.results_file}')
        missing = len(set(evaluator.video_ids) - {r.video_id
                                                  for r in results})
        if missing:
            logger.warning(
                f'YTVISMetric: {missing} of {len(evaluator.video_ids)} videos '
                f'of {self.ann_file} got no prediction')
        source = 'predictions of the model'
        metrics: Dict[str, float] = {}
        if self.format_only:
            evaluator.check_results(predictions, source)
        else:
            metrics = evaluator.evaluate(predictions, self.long_video_ids, source)
            logger.info('YouTube-VIS evaluation (percent):\n' +
                        metrics_table(metrics))
            if self.tracking_metrics:
                tracking = self.tracking_evaluator.evaluate(
                    predictions, source, self.tracking_score_thr)
                logger.info('Identity metrics (trackeval; percent, IDSW a '
                            'count):\n' + tracking_metrics_table(tracking))
                metrics.update(tracking)
        if self.outfile_prefix is not None:
            for name in ('results.json', 'results.zip'):
                path = osp.join(self.outfile_prefix, name)
                dump_results(predictions, path)
                logger.info(f'YTVISMetric: wrote {path}')
        return metrics

    @staticmethod
    def evaluate_results(
        gt: Union[str, dict],
        results: Union[str, List[dict]],
        long_video_ids: Optional[Union[str, Iterable[int]]] = None
    ) -> Dict[str, float]:
        """Evaluate a standard results list or file outside a Runner (see
        :func:`~ctvis.evaluation.ytvis_eval.evaluate_ytvis`)."""
        return evaluate_ytvis(gt, results, long_video_ids)
