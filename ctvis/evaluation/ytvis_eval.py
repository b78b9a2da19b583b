"""YouTube-VIS / OVIS evaluation: video-level mask AP and AR.

:func:`evaluate_ytvis` returns the numbers of the official YouTube-VIS cocoapi
(``ytvoseval.YTVISeval``; mmdet ships a copy as ``mmdet.evaluation.functional.YTVISeval``) on the
same well-formed inputs, bit for bit (some files it would score are refused here: results of an
unknown category, an absent frame as ``[]``, float ids). We keep our own because that copy
crashes on numpy >= 1.24 (``np.float``), hangs or reads out of bounds on a malformed RLE
(:mod:`ctvis.datasets.ytvis_format` checks the inputs here), and merges the masks of every
(prediction, ground truth, frame) one call at a time.

As ``YTVISeval.evaluate / accumulate / summarize``, per (category, video) pair:

1. **Video IoU** of every (prediction, ground truth): the sum over frames of the intersections over
   the sum of the unions. The masks of a block of frames lie side by side on one wide canvas
   (:meth:`~ctvis.datasets.ytvis_format.MaskTable.build_canvases`), so one
   ``pycocotools.mask.iou`` call gives all their intersections (masks of different frames never
   overlap: pycocotools drops them by their bounding boxes). IoUs that cannot reach 0.5 are skipped.
2. **Greedy matching** in score order, for the 4 area ranges x 10 IoU thresholds at once.
3. **Accumulation** of the precision / recall curves per category, and the summary means.
"""
import os
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
from pycocotools import mask as mask_utils

from ..datasets.ytvis_format import (GroundTruth, PathOrDict, PathOrList, Tracks, YTVISFormatError,
                                     gc_paused, load_long_video_ids, load_source,
                                     parse_ground_truth, parse_results)

# The file format (YTVISFormatError, load_json_file, load_long_video_ids) lives in
# ctvis.datasets.ytvis_format.
__all__ = ['YTVISEvaluator', 'evaluate_ytvis', 'metrics_table', 'METRIC_NAMES', 'METRIC_NAMES_2022',
           'IOU_THRESHOLDS', 'RECALL_THRESHOLDS', 'MAX_DETS', 'AREA_RANGES']

# Evaluation parameters of ytvoseval (built the same way, so that 0.5 and 0.75 equal the literals).
IOU_THRESHOLDS = np.linspace(.5, .95, 10)
RECALL_THRESHOLDS = np.linspace(.0, 1., 101)
MAX_DETS = (1, 10, 100)
# (name, low, high) of the average-area ranges; bounds are inclusive.
AREA_RANGES = (('all', 0, 1e5**2), ('small', 0, 128**2), ('medium', 128**2, 256**2),
               ('large', 256**2, 1e5**2))
_AREA_LOW, _AREA_HIGH = (np.array([r[i] for r in AREA_RANGES], np.float64) for i in (1, 2))
# ytvoseval caps a threshold at 1 - 1e-10 before comparing IoUs with it.
_MATCH_THRESHOLDS = np.minimum(IOU_THRESHOLDS, 1 - 1e-10)
# Cost of one pycocotools.mask.iou call in bounding-box tests (about 9 us against 4.3 ns).
_PAIRS_PER_CALL = 2000

# name -> (is AP, IoU threshold or None for .50:.95, area range, max dets), in ytvoseval's order.
_SUMMARY = {
    'AP': (True, None, 'all', 100), 'AP50': (True, .5, 'all', 100),
    'AP75': (True, .75, 'all', 100), 'AP_S': (True, None, 'small', 100),
    'AP_M': (True, None, 'medium', 100), 'AP_L': (True, None, 'large', 100),
    'AR1': (False, None, 'all', 1), 'AR10': (False, None, 'all', 10),
    'AR100': (False, None, 'all', 100), 'AR_S': (False, None, 'small', 100),
    'AR_M': (False, None, 'medium', 100), 'AR_L': (False, None, 'large', 100),
}  # yapf: disable
METRIC_NAMES = tuple(_SUMMARY)
# YouTube-VIS 2022 reports these on the short and the long videos separately.
_METRICS_PER_SPLIT = ('AP', 'AP50', 'AP75', 'AR1', 'AR10')
METRIC_NAMES_2022 = tuple(f'{name}_{split}' for split in ('short', 'long')
                          for name in _METRICS_PER_SPLIT) + ('AP_2022', )


def _frame_area_table(tracks: Tracks, which: np.ndarray,
                      num_frames: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The non-empty masks of the tracks ``which``: their rows, the position of their track in
    ``which``, and int64 (len(which), num_frames) the area of each track in each frame."""
    masks = tracks.masks
    starts = masks.track_start[which]
    counts = masks.track_start[which + 1] - starts
    owner = np.repeat(np.arange(len(which)), counts)
    rows = np.arange(counts.sum()) + (starts - np.cumsum(counts) + counts)[owner]
    non_empty = masks.area[rows] > 0
    rows, owner = rows[non_empty], owner[non_empty]
    areas = np.zeros((len(which), num_frames), np.int64)
    areas[owner, masks.frame[rows]] = masks.area[rows]
    return rows, owner, areas


def _pair_ious(gt: GroundTruth, dt: Tracks, g: np.ndarray, d: np.ndarray, video: int) -> np.ndarray:
    """float64 (len(d), len(g)) video IoUs of the prediction tracks ``d`` and ground-truth tracks
    ``g`` of one video; 0 where below 0.5.

    A pair cannot reach 0.5 even if every frame's smaller mask lay inside the other when
    M = sum_f min(|P_f|, |G_f|) >= |P & G| gives M / (|P| + |G| - M) < 1/2, i.e. 3 M < |P| + |G|:
    those are not computed.
    """
    num_frames, slots = int(gt.videos.length[video]), int(gt.videos.slots[video])
    g_masks, d_masks = gt.tracks.masks, dt.masks
    g_rows, g_owner, g_areas = _frame_area_table(gt.tracks, g, num_frames)
    d_rows, d_owner, d_areas = _frame_area_table(dt, d, num_frames)
    most = np.minimum(d_areas[:, None], g_areas[None]).sum(-1)
    total = d_areas.sum(1)[:, None] + g_areas.sum(1)[None]
    hopeful = (most > 0) & (3 * most >= total)
    ious = np.zeros(hopeful.shape)
    if not hopeful.any():
        return ious
    # Masks of hopeful tracks in the frames where both sides have one.
    g_hopeful, d_hopeful = hopeful.any(0), hopeful.any(1)
    both = (g_areas[g_hopeful] > 0).any(0) & (d_areas[d_hopeful] > 0).any(0)
    g_frame, d_frame = g_masks.frame[g_rows], d_masks.frame[d_rows]
    g_keep = g_hopeful[g_owner] & both[g_frame]
    d_keep = d_hopeful[d_owner] & both[d_frame]
    g_rows, g_owner, g_frame = g_rows[g_keep], g_owner[g_keep], g_frame[g_keep]
    d_rows, d_owner, d_frame = d_rows[d_keep], d_owner[d_keep], d_frame[d_keep]
    # Frames per call: a block of B frames costs B * d * g bounding-box tests (d, g: masks per
    # frame) against _PAIRS_PER_CALL for a call. Blocks do not cross a canvas (distinct slots).
    per_frame = len(d_rows) * len(g_rows) / int(both.sum())**2
    block = max(1, int(np.sqrt(_PAIRS_PER_CALL / max(per_frame, 1))))
    period = num_frames // block + 1
    g_block = g_frame // slots * period + g_frame % slots // block
    d_block = d_frame // slots * period + d_frame % slots // block
    intersection = np.zeros(ious.shape)
    for b in np.unique(g_block).tolist():
        gb, db = g_block == b, d_block == b
        # With iscrowd=1 pycocotools returns |P & G| / |P| (exactly, in double): rounding
        # recovers the integer intersection.
        ratio = mask_utils.iou([d_masks.canvas[i] for i in d_rows[db].tolist()],
                               [g_masks.canvas[i] for i in g_rows[gb].tolist()],
                               [1] * int(gb.sum()))
        pixels = np.rint(ratio * d_masks.area[d_rows[db]][:, None])
        np.add.at(intersection, (d_owner[db][:, None], g_owner[gb][None]), pixels)
    union = total - intersection
    np.divide(intersection, union, out=ious, where=hopeful & (union > 0))
    return ious


def _greedy_match(ious: np.ndarray, g_ignore: np.ndarray, g_crowd: np.ndarray,
                  g_ids: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """ytvoseval's matching of one (video, category), for every (area range, IoU threshold) at once.

    Each prediction, in score order, takes the ground truth of best IoU (the last one among equals)
    with IoU >= threshold that is still free (crowd ones always are), preferring non-ignored ground
    truth; ignored ones only if no other qualifies.

    Args:
        ious (np.ndarray): float64 (D, G), predictions in score order.
        g_ignore (np.ndarray): bool (A, G) crowd or outside the area range.
        g_crowd (np.ndarray): bool (G, ).
        g_ids (np.ndarray): int64 (G, ) annotation ids.

    Returns:
        tuple: the matched annotation id (0: none) int64 (A, T, D), and whether the match is with
        an ignored ground truth, bool (A, T, D).
    """
    num_dt, num_gt = ious.shape
    shape = (len(AREA_RANGES), len(IOU_THRESHOLDS), num_dt)
    matched_id, ignored = np.zeros(shape, np.int64), np.zeros(shape, bool)
    free = np.ones(shape[:2] + (num_gt, ), bool)  # crowd ground truth stays free
    regular_gt = ~g_ignore[:, None, :]
    above = ious[:, None, :] >= _MATCH_THRESHOLDS[:, None]  # (D, T, G)
    for k in np.flatnonzero(above[:, 0].any(1)).tolist():
        iou = ious[k]
        candidate = free & above[k]
        regular = candidate & regular_gt
        pool = np.where(regular.any(-1, keepdims=True), regular, candidate)
        best = np.where(pool, iou, -np.inf).max(-1, keepdims=True)
        winners = pool & (iou == best)
        a, t = np.nonzero(winners.any(-1))
        j = num_gt - 1 - np.argmax(winners[a, t, ::-1], -1)
        free[a, t, j] = g_crowd[j]
        matched_id[a, t, k] = g_ids[j]
        ignored[a, t, k] = g_ignore[a, j]
    return matched_id, ignored


def _outside(average_area: np.ndarray) -> np.ndarray:
    """bool (A, n) whether each average area is outside each range."""
    return (average_area[None] < _AREA_LOW[:, None]) | (average_area[None] > _AREA_HIGH[:, None])


def _evaluate_pairs(gt: GroundTruth, dt: Tracks) -> Dict[str, np.ndarray]:
    """Match every (category, video) pair. Returns the arrays :func:`_accumulate` reads: per pair
    (by category, then video) ``category``, ``video`` and ``regular_gt`` int64 (P, A), its ground
    truths not ignored; per prediction (the top ``max(MAX_DETS)`` of each pair, pairs in order,
    score order within) ``pair``, ``rank`` in its pair, ``score``, ``matched`` and ``ignored``
    bool (A, T, N)."""
    num_videos = len(gt.videos.ids)
    g_key = gt.tracks.category * num_videos + gt.tracks.video
    d_key = dt.category * num_videos + dt.video
    keys = np.union1d(g_key, d_key)
    # Annotation order within a pair; predictions by score, ties in results order (as ytvoseval).
    g_order = np.argsort(g_key, kind='stable')
    d_order = np.lexsort((np.arange(len(d_key)), -dt.value, d_key))
    g_start, g_end = (np.searchsorted(g_key[g_order], keys, side) for side in ('left', 'right'))
    d_pair = np.searchsorted(keys, d_key[d_order])
    top = np.arange(len(d_order)) - np.searchsorted(d_pair, d_pair) < max(MAX_DETS)
    d_order, d_pair = d_order[top], d_pair[top]
    d_start, d_end = (np.searchsorted(d_pair, range(len(keys)), side) for side in ('left', 'right'))
    g_ignore = _outside(gt.tracks.value) | gt.crowd
    nonempty = dt.masks.area > 0
    d_area = np.bincount(dt.masks.track, dt.masks.area, len(d_key))
    d_count = np.bincount(dt.masks.track[nonempty], minlength=len(d_key))
    d_outside = _outside(np.divide(d_area, d_count, out=np.zeros(len(d_key)), where=d_count > 0))
    # Canvases of the prediction masks that can overlap ground truth.
    dt.masks.build_canvases(np.flatnonzero(nonempty & np.isin(d_key[dt.masks.track], g_key)))
    # Unmatched predictions outside an area range are ignored in it.
    matched = np.zeros((len(AREA_RANGES), len(IOU_THRESHOLDS), len(d_order)), bool)
    ignored = matched | d_outside[:, None, d_order]
    for p in np.flatnonzero((g_end > g_start) & (d_end > d_start)).tolist():
        g, at = g_order[g_start[p]:g_end[p]], slice(d_start[p], d_end[p])
        d = d_order[at]
        matched_id, match_ignored = _greedy_match(_pair_ious(gt, dt, g, d, keys[p] % num_videos),
                                                  g_ignore[:, g], gt.crowd[g], gt.annotation_ids[g])
        # A match with annotation id 0 does not count (ytvoseval tests the recorded id for truth).
        matched[:, :, at] = matched_id != 0
        ignored[:, :, at] = match_ignored | ((matched_id == 0) & d_outside[:, None, d])
    g_pair = np.searchsorted(keys, g_key)
    return dict(category=keys // num_videos, video=keys % num_videos, pair=d_pair,
                rank=np.arange(len(d_order)) - d_start[d_pair], score=dt.value[d_order],
                regular_gt=np.stack([np.bincount(g_pair[~ignore], minlength=len(keys))
                                     for ignore in g_ignore], 1),
                matched=matched, ignored=ignored)


def _accumulate(pairs: Dict[str, np.ndarray], num_categories: int,
                video_mask: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Precision (T, R, K, A, M) and recall (T, K, A, M) curves as ytvoseval.accumulate (-1 where a
    category has no regular ground truth), of the videos in ``video_mask`` (bool (V, ); all)."""
    num_thr, num_rec = len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS)
    num_areas, num_dets = len(AREA_RANGES), len(MAX_DETS)
    precision = -np.ones((num_thr, num_rec, num_categories, num_areas, num_dets))
    recall = -np.ones((num_thr, num_categories, num_areas, num_dets))
    pair_in = (
        np.ones(len(pairs['video']), bool) if video_mask is None else video_mask[pairs['video']])
    dt_in = pair_in[pairs['pair']]
    for k in range(num_categories):
        in_k = pair_in & (pairs['category'] == k)
        if not in_k.any():
            continue
        regular_gt = pairs['regular_gt'][in_k].sum(0)
        # Pairs are in video order, each pair's predictions in score order: a stable sort keeps
        # ytvoseval's tie order.
        dts = np.flatnonzero(dt_in & in_k[pairs['pair']])
        dts = dts[np.argsort(-pairs['score'][dts], kind='stable')]
        for m, max_det in enumerate(MAX_DETS):
            selected = dts[pairs['rank'][dts] < max_det]
            for a in np.flatnonzero(regular_gt).tolist():
                matched = pairs['matched'][a][:, selected]
                counted = ~pairs['ignored'][a][:, selected]
                tp = np.cumsum(matched & counted, axis=1).astype(np.float64)
                fp = np.cumsum(~matched & counted, axis=1).astype(np.float64)
                rc = tp / regular_gt[a]
                pr = tp / (fp + tp + np.spacing(1))
                recall[:, k, a, m] = rc[:, -1] if len(selected) else 0
                # Interpolate: precision at recall r = max precision at >= r.
                pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]
                for t in range(num_thr):
                    at = np.searchsorted(rc[t], RECALL_THRESHOLDS, 'left')
                    valid = at < len(selected)
                    precision[t, :, k, a, m] = 0
                    precision[t, valid, k, a, m] = pr[t, at[valid]]
    return precision, recall


def _summarize(precision: np.ndarray, recall: np.ndarray,
               names: Sequence[str] = METRIC_NAMES) -> Dict[str, float]:
    """ytvoseval.summarize: means over the valid (> -1) entries, -1 if none."""
    area_names = [r[0] for r in AREA_RANGES]
    summary = {}
    for name in names:
        is_ap, iou_threshold, area, max_det = _SUMMARY[name]
        a, m = area_names.index(area), MAX_DETS.index(max_det)
        values = precision[..., a, m] if is_ap else recall[..., a, m]
        if iou_threshold is not None:
            values = values[np.flatnonzero(IOU_THRESHOLDS == iou_threshold)]
        valid = values[values > -1]
        summary[name] = float(np.mean(valid)) if len(valid) else -1.0
    return summary


class YTVISEvaluator:
    """YouTube-VIS / OVIS evaluator with the ground truth parsed once.

    Args:
        gt (str | dict): path of the YouTube-VIS style JSON or its content.
        gt_name (str, optional): how to name ``gt`` in error messages when it is not a path.

    Example:
        >>> evaluator = YTVISEvaluator('data/ovis/annotations_valid_sub.json')
        >>> metrics = evaluator.evaluate('work_dirs/results.json')
        >>> metrics['AP'], metrics['AR10']  # fractions, -1 where undefined
    """

    def __init__(self, gt: PathOrDict, gt_name: Optional[str] = None) -> None:
        with gc_paused():
            content, self.gt_name = load_source(gt, gt_name or '<ground truth>')
            self._gt = parse_ground_truth(content, self.gt_name)

    @property
    def category_ids(self) -> List[int]:
        """Sorted ground-truth category ids (label ``i`` is the ``i``-th)."""
        return self._gt.category_ids.tolist()

    @property
    def video_ids(self) -> List[int]:
        """Sorted ground-truth video ids."""
        return self._gt.videos.ids.tolist()

    @property
    def has_annotations(self) -> bool:
        """False for a file without annotations (a test split)."""
        return self._gt.tracks is not None

    def check_results(self, results: PathOrList, results_name: Optional[str] = None) -> None:
        """Raise :class:`YTVISFormatError` if ``results`` is malformed (also for a ground truth
        without annotations, e.g. before a submission)."""
        with gc_paused():
            content, name = load_source(results, results_name or '<results>')
            parse_results(content, name, self._gt)

    def evaluate(self,
                 results: PathOrList,
                 long_video_ids: Optional[Iterable[int]] = None,
                 results_name: Optional[str] = None) -> Dict[str, float]:
        """Video mask AP / AR of ``results`` (fractions in [0, 1]; -1 where no category has
        ground truth, as ytvoseval).

        Args:
            results (str | list): results file (JSON, or a zip holding ``results.json``) or the
                list itself.
            long_video_ids (Iterable[int], optional): YouTube-VIS 2022 long videos; then also
                ``AP_short``, ``AP_long``, ..., ``AP_2022 = (AP_short + AP_long) / 2``.
            results_name (str, optional): how to name ``results`` in errors.

        Returns:
            dict: :data:`METRIC_NAMES` (+ :data:`METRIC_NAMES_2022`).
        """
        precision, recall, splits = self.accumulate(results, long_video_ids, results_name)
        metrics = _summarize(precision, recall)
        for split, (split_precision, split_recall) in splits.items():
            metrics.update((f'{name}_{split}', value) for name, value in _summarize(
                split_precision, split_recall, _METRICS_PER_SPLIT).items())
        if splits:
            short, long = metrics['AP_short'], metrics['AP_long']
            defined = short >= 0 and long >= 0
            metrics['AP_2022'] = (short + long) / 2 if defined else -1.0
        return metrics

    def accumulate(
        self,
        results: PathOrList,
        long_video_ids: Optional[Iterable[int]] = None,
        results_name: Optional[str] = None
    ) -> Tuple[np.ndarray, np.ndarray, Dict[str, Tuple[np.ndarray, np.ndarray]]]:
        """The precision (T, R, K, A, M) and recall (T, K, A, M) arrays of ytvoseval
        (``eval['precision']`` / ``eval['recall']``), and with ``long_video_ids`` the same for the
        ``'short'`` and ``'long'`` videos."""
        if self._gt.tracks is None:
            raise YTVISFormatError(f'{self.gt_name}: has no annotations (a test split?); it can '
                                   'only be used to format results (format_only)')
        long_mask = None
        if long_video_ids is not None:
            long_mask = np.zeros(len(self._gt.videos.ids), bool)
            for video_id in load_long_video_ids(long_video_ids, 'long_video_ids'):
                position = self._gt.videos.index.get(video_id)
                if position is None:
                    raise YTVISFormatError(f'long video id {video_id} is not a video of '
                                           f'{self.gt_name}')
                long_mask[position] = True
        with gc_paused():
            content, name = load_source(results, results_name or '<results>')
            pairs = _evaluate_pairs(self._gt, parse_results(content, name, self._gt))
        num_categories = len(self._gt.category_ids)
        precision, recall = _accumulate(pairs, num_categories)
        splits = {} if long_mask is None else {
            'short': _accumulate(pairs, num_categories, ~long_mask),
            'long': _accumulate(pairs, num_categories, long_mask)}
        return precision, recall, splits


def evaluate_ytvis(gt: PathOrDict,
                   results: PathOrList,
                   long_video_ids: Optional[Union[str, Iterable[int]]] = None) -> Dict[str, float]:
    """Evaluate YouTube-VIS / OVIS results (see :class:`YTVISEvaluator`).

    Args:
        gt (str | dict): ground-truth JSON path or content.
        results (str | list): results JSON path (or zip) or the list.
        long_video_ids (str | Iterable[int], optional): YouTube-VIS 2022 long videos, or a JSON
            file listing them.

    Returns:
        dict: metric name -> fraction (-1 where undefined).
    """
    if isinstance(long_video_ids, (str, os.PathLike)):
        long_video_ids = load_long_video_ids(long_video_ids)
    return YTVISEvaluator(gt).evaluate(results, long_video_ids)


def metrics_table(metrics: Dict[str, float], percent: bool = True) -> str:
    """A two-column text table of metrics (percent by default; undefined values, -1, as "n/a")."""
    lines = ['metric      value', '----------  -------']
    for name, value in metrics.items():
        shown = ('n/a' if value < 0 else f'{value * 100:.2f}' if percent else f'{value:.4f}')
        lines.append(f'{name:<10}  {shown:>7}')
    return '\n'.join(lines)
