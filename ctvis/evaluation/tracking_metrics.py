"""Identity metrics of YouTube-VIS / OVIS results: HOTA (DetA, AssA), IDF1
and ID switches, computed by ``trackeval``.

The numbers come from ``trackeval`` (PyPI 1.3.0, the maintained fork of
TrackEval): its ``YouTubeVIS`` dataset class loads each video, computes the
per-frame mask IoU and splits the data by category, and its ``HOTA``,
``Identity`` and ``CLEAR`` metric classes score every (video, category) and
combine them. ctvis only hands it the ground truth and results from memory
(instead of trackeval's folder layout, see :class:`_InMemoryYouTubeVIS`) and
picks the summary numbers. What is fed, and why:

* every results entry is one predicted track with its own identity; a model
  that lists one track under several categories (the usual top-k (track,
  category) output) gives several tracks, each evaluated in its category, as
  in trackeval. Ground-truth tracks are the annotations (their ``id``);
  ``iscrowd`` plays no part (trackeval's YouTubeVIS uses it for TrackMAP
  only);
* categories are evaluated separately (a prediction of the wrong category
  matches nothing) and the per-category results are combined two ways, as
  trackeval reports them: ``HOTA``, ``DetA``, ``AssA`` and ``IDF1`` are
  class averages, the ``*_det_av`` keys are over all (video, category)
  detections pooled ("combined", trackeval's ``cls_comb_det_av``). The class
  average leaves out the categories with neither ground truth nor prediction
  (trackeval's ``ignore_empty_classes=True``): trackeval's run script averages
  over every category of the file, so a category absent from the split counts
  as a zero and perfect predictions would score below 100;
* similarity is the per-frame mask IoU (pycocotools); a detection pair
  counts for IDF1 and the CLEAR matching (ID switches) from IoU 0.5, HOTA
  averages over the IoU thresholds 0.05, 0.10, ..., 0.95 (trackeval's
  defaults); ``IDSW`` is CLEAR's count, summed over categories;
* all predictions count, whatever their score (trackeval's YouTubeVIS sets
  no threshold); ``score_thr`` keeps only those scoring at least that much.
  VIS models list up to 100 scored predictions per video, and each one
  present in a frame is a detection there, so low-score ones lower DetA;
* a frame's mask is absent when it is ``None``, ``[]`` or an empty mask.
  trackeval's YouTubeVIS loader keeps any non-empty RLE dict, so an empty
  mask, which models (ctvis, MinVIS, CTVIS) write for the frames where a
  track is absent, would count as a detection that matches nothing; the AP
  evaluation treats empty and ``None`` alike, and so do we. Polygon and
  uncompressed RLE segmentations are accepted (converted to compressed RLE
  first), as by the AP evaluator.

Inputs are checked by :class:`~ctvis.evaluation.ytvis_eval.YTVISEvaluator`
first, so a malformed file gets the same error naming the file and entry.
Values are fractions (``IDSW`` a count); -1 when nothing is to be evaluated
(no ground truth and no prediction in any frame).
"""
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
from pycocotools import mask as mask_utils
from trackeval.datasets import YouTubeVIS
from trackeval.datasets._base_dataset import _BaseDataset
from trackeval.eval import eval_sequence
from trackeval.metrics import CLEAR, HOTA, Identity

from ..datasets.ytvis_format import PathOrDict, PathOrList, YTVISFormatError, load_source
from ..datasets.ytvis_format.rle import without_empty_runs
from .ytvis_eval import YTVISEvaluator, metrics_table

__all__ = [
    'TrackingEvaluator', 'evaluate_tracking', 'segmentation_to_rle',
    'tracking_metrics_table', 'TRACKING_METRIC_NAMES', 'COUNT_METRICS'
]

# Summary keys: class averages, then the pooled ("combined") values.
_SCORES = ('HOTA', 'DetA', 'AssA', 'IDF1')
COUNT_METRICS = ('IDSW', )
TRACKING_METRIC_NAMES = _SCORES + COUNT_METRICS + tuple(
    f'{name}_det_av' for name in _SCORES)
# (metric class, its field) of each score.
_SOURCE = {'HOTA': ('HOTA', 'HOTA'), 'DetA': ('HOTA', 'DetA'),
           'AssA': ('HOTA', 'AssA'), 'IDF1': ('Identity', 'IDF1')}
_RESULTS = 'results'  # the one "tracker" of the in-memory dataset


def segmentation_to_rle(segmentation: Any, height: int,
                        width: int) -> Optional[dict]:
    """A compressed RLE of a polygon list, an uncompressed or a compressed
    RLE; None for a missing (``None``, ``[]``) or empty mask.

    The segmentation must have been checked (e.g. by
    :class:`~ctvis.evaluation.ytvis_eval.YTVISEvaluator`): pycocotools
    trusts the run lengths.
    """
    if segmentation is None or (isinstance(segmentation, list)
                                and not segmentation):
        return None
    if isinstance(segmentation, list):
        rle = mask_utils.merge(
            mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation['counts'], list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = segmentation
    counts = rle['counts']
    counts = counts.encode('ascii') if isinstance(counts, str) else counts
    # pycocotools' IoU walk would stop at empty runs after the first
    rle = dict(rle, counts=without_empty_runs(counts, height * width))
    return rle if mask_utils.area(rle) > 0 else None


class _InMemoryYouTubeVIS(YouTubeVIS):
    """trackeval's YouTube-VIS dataset over ground truth and results in
    memory.

    Only the constructor is ours (trackeval's reads a folder layout and
    converts the ground-truth RLEs in place): it sets what trackeval's sets,
    from segmentations already converted by :func:`segmentation_to_rle`.
    Loading a video, its mask IoU and the split by category are trackeval's
    (``_load_raw_file``, ``get_raw_seq_data``, ``get_preprocessed_seq_data``).
    Categories and videos are named by their ids (names need not be unique).
    """

    def __init__(self, videos: List[dict], annotations: List[dict],
                 category_ids: List[int], results: List[dict]) -> None:
        _BaseDataset.__init__(self)
        self.should_classes_combine = True
        self.use_super_categories = False
        self.class_list = [str(c) for c in category_ids]
        self.class_name_to_class_id = {str(c): c for c in category_ids}
        self.seq_list = [str(v['id']) for v in videos]
        self.seq_name_to_seq_id = {str(v['id']): v['id'] for v in videos}
        self.seq_lengths = {v['id']: v['length'] for v in videos}
        self.gt_data = {'annotations': annotations}
        self.tracker_list = [_RESULTS]
        self.tracker_data = {_RESULTS: results}
        self.global_tid_counter = 0


def video_length(video: dict) -> int:
    """Frames of a (checked) ground-truth video: its ``length``, or its ``file_names``' count
    where the file leaves ``length`` out (the format allows it)."""
    length = video.get('length')
    return len(video['file_names']) if length is None else length


def _video_table(gt: dict) -> Dict[int, dict]:
    """id -> {id, height, width, length} of the (checked) ground truth."""
    return {video['id']: dict(id=video['id'], height=video['height'], width=video['width'],
                              length=video_length(video)) for video in gt['videos']}


def _converted(entry: dict, video: dict) -> List[Optional[dict]]:
    return [
        segmentation_to_rle(s, video['height'], video['width'])
        for s in entry['segmentations']
    ]


def _mean(values: Any) -> float:
    return float(np.mean(values))


class TrackingEvaluator:
    """HOTA, DetA, AssA, IDF1 and ID switches of YouTube-VIS / OVIS results
    (see the module docstring for what trackeval is fed).

    Args:
        gt (str | dict): path of the YouTube-VIS style JSON or its content.
        gt_name (str, optional): how to name ``gt`` in error messages when it
            is not a path.
        checker (YTVISEvaluator, optional): the AP evaluator of the same
            ground truth, reused to check results (else one is built, which
            also checks ``gt``).

    Example:
        >>> evaluator = TrackingEvaluator('data/toy_vis/valid.json')
        >>> evaluator.evaluate('work_dirs/quickstart/results.json')['HOTA']
    """

    def __init__(self,
                 gt: PathOrDict,
                 gt_name: Optional[str] = None,
                 checker: Optional[YTVISEvaluator] = None) -> None:
        content, self.gt_name = load_source(gt, gt_name or '<ground truth>')
        self.checker = checker or YTVISEvaluator(content, self.gt_name)
        if not self.checker.has_annotations:
            raise YTVISFormatError(
                f'{self.gt_name}: has no annotations (a test split?); '
                'identity metrics need the ground truth')
        self._videos = _video_table(content)
        self._category_ids = self.checker.category_ids
        self._annotations = [
            dict(id=a['id'], video_id=a['video_id'],
                 category_id=a['category_id'], iscrowd=a.get('iscrowd', 0),
                 area=_mean([x for x in a.get('areas') or [] if x] or [0]),
                 segmentations=_converted(a, self._videos[a['video_id']]))
            for a in content['annotations']
        ]

    def evaluate(self,
                 results: PathOrList,
                 results_name: Optional[str] = None,
                 score_thr: Optional[float] = None) -> Dict[str, float]:
        """The identity metrics of ``results``.

        Args:
            results (str | list): results file (JSON, or a zip holding
                ``results.json``) or the list itself.
            results_name (str, optional): how to name ``results`` in errors.
            score_thr (float, optional): evaluate only the predictions with
                ``score >= score_thr`` (default: all, as trackeval).

        Returns:
            dict: :data:`TRACKING_METRIC_NAMES` -> fraction (``IDSW``: count;
            -1 where nothing is to be evaluated).
        """
        _, class_averaged, pooled = self.trackeval_results(
            results, results_name, score_thr)
        metrics: Dict[str, float] = {}
        defined = bool(class_averaged)
        for name, (metric, field) in _SOURCE.items():
            metrics[name] = (_mean(class_averaged[metric][field])
                             if defined else -1.0)
        metrics['IDSW'] = int(pooled['CLEAR']['IDSW'])
        for name, (metric, field) in _SOURCE.items():
            metrics[f'{name}_det_av'] = (_mean(pooled[metric][field])
                                         if defined else -1.0)
        return metrics

    def trackeval_results(
        self,
        results: PathOrList,
        results_name: Optional[str] = None,
        score_thr: Optional[float] = None
    ) -> Tuple[Dict[str, dict], Dict[str, dict], Dict[str, dict]]:
        """trackeval's full results (arguments as :meth:`evaluate`).

        Returns:
            tuple: per category (its id as str) over all videos, the class
            average over the categories with data (empty if none has any),
            and pooled over all categories; each a dict metric name (``HOTA``,
            ``Identity``, ``CLEAR``) -> its trackeval fields (arrays over the
            HOTA thresholds).
        """
        content, name = load_source(results, results_name or '<results>')
        self.checker.check_results(content, name)
        kept = [
            dict(video_id=r['video_id'], category_id=r['category_id'],
                 score=r['score'],
                 segmentations=_converted(r, self._videos[r['video_id']]))
            for r in content if score_thr is None or r['score'] >= score_thr
        ]
        dataset = _InMemoryYouTubeVIS(list(self._videos.values()),
                                      self._annotations, self._category_ids,
                                      kept)
        metrics = [HOTA(), Identity({'PRINT_CONFIG': False}),
                   CLEAR({'PRINT_CONFIG': False})]
        names = [metric.get_name() for metric in metrics]
        per_video = {
            seq: eval_sequence(seq, dataset, _RESULTS, dataset.class_list,
                               metrics, names)
            for seq in dataset.seq_list
        }
        per_category = {
            cls: {
                name: metric.combine_sequences(
                    {seq: res[cls][name] for seq, res in per_video.items()})
                for metric, name in zip(metrics, names)
            }
            for cls in dataset.class_list
        }
        non_empty = {c: r for c, r in per_category.items() if _has_data(r)}
        class_averaged, pooled = {}, {}
        for metric, name in zip(metrics, names):
            by_class = {c: r[name] for c, r in per_category.items()}
            pooled[name] = metric.combine_classes_det_averaged(by_class)
            if non_empty:
                class_averaged[name] = metric.combine_classes_class_averaged(
                    by_class, ignore_empty_classes=True)
        return per_category, class_averaged, pooled


def _has_data(category_result: Dict[str, dict]) -> bool:
    """Whether a category has a ground-truth or predicted detection (what
    trackeval's ``ignore_empty_classes`` tests)."""
    hota = category_result['HOTA']
    return bool((hota['HOTA_TP'] + hota['HOTA_FN'] + hota['HOTA_FP'] > 0)
                .any())


def evaluate_tracking(gt: PathOrDict,
                      results: PathOrList,
                      score_thr: Optional[float] = None) -> Dict[str, float]:
    """Identity metrics of YouTube-VIS / OVIS results (see
    :class:`TrackingEvaluator`)."""
    return TrackingEvaluator(gt).evaluate(results, score_thr=score_thr)


def tracking_metrics_table(metrics: Dict[str, float]) -> str:
    """:func:`~ctvis.evaluation.ytvis_eval.metrics_table` of the scores (in
    percent), with the counts as integers."""
    scores = {k: v for k, v in metrics.items() if k not in COUNT_METRICS}
    lines = [metrics_table(scores)]
    lines += [f'{k:<10}  {int(metrics[k]):>7}' for k in COUNT_METRICS
              if k in metrics]
    return '\n'.join(lines)
