"""Where a video instance segmentation model loses AP: association or detection.

Example::

    python tools/analysis_tools/vis_error_breakdown.py \\
        data/toy_vis/valid.json work_dirs/quickstart/results.json [--iou-thr 0.5] [--json OUT]

For every ground-truth instance and frame, the result mask of highest IoU (above ``--iou-thr``)
covers it. Printed:

* how many ground-truth frame masks some result covers, and how many the instance's main result
  (the one covering most of its frames) covers;
* identity switches: the covering result changes between consecutive covered frames of an
  instance, classed by what happened in between: the instance was absent; its box came within
  2 px of the box of a same-class instance (look-alikes crossing) or of another-class instance;
  none of these;
* the AP as is and the AP of the same masks re-associated by ground-truth identity (perfect
  association): in every frame the result masks matched one-to-one to instances (highest IoU
  first) form one track per instance (its results' majority class and mean score); the other
  masks stay in their tracks. The gap between the two is what association costs;
* the AP of those per-instance tracks alone: the gap to the previous one is what the spurious
  tracks (and the leftovers of switched tracks) cost, what remains below 100 is detection and
  segmentation;
* merged instances: pairs of instances visible in one frame of which a single result mask covers
  at least ``MERGE_FRACTION`` of each, for same-class and other-class pairs. A dot-product mask
  head on translation-equivariant features tends to give look-alike instances one mask (on the
  toy data: 37-42 % of same-class pairs, 0-0.5 % of other-class ones; docs/benchmarks.md); such
  merges break the identities that depend on them;
* the identity metrics HOTA (DetA, AssA), IDF1 and ID switches, by trackeval
  (:mod:`ctvis.evaluation.tracking_metrics`: per category, class averages). Its switches are
  counted per category after CLEAR's one-to-one matching at IoU 0.5, so they differ from the
  switches above (the highest-IoU result of any category).

Inputs are checked by the evaluator first; a malformed file is reported in one line (exit 1).
"""
import argparse
import json
import os
import sys
from collections import Counter, defaultdict
from typing import Dict, List, Optional, Tuple, Union

import numpy as np
import pycocotools.mask as mask_utils

from ctvis.datasets.ytvis_format import YTVISFormatError, load_json_file
from ctvis.evaluation.tracking_metrics import (TrackingEvaluator, segmentation_to_rle,
                                               video_length)
from ctvis.evaluation.ytvis_eval import YTVISEvaluator

NEAR_PX = 2  # boxes this close count as touching
MERGE_FRACTION = 0.3  # a result mask covering this much of each of two instances merges them
SWITCH_CAUSES = ('after_absence', 'near_same_class', 'near_other_class', 'other')


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Coverage, identity switches and the AP with perfect association.')
    parser.add_argument('gt_json', help='ground-truth annotation JSON')
    parser.add_argument('results_json', help='results JSON (or a zip holding results.json)')
    parser.add_argument('--iou-thr', type=float, default=0.5,
                        help='frame mask IoU above which a result covers an instance')
    parser.add_argument('--json', metavar='OUT_JSON', help='also write the breakdown here')
    args = parser.parse_args(argv)
    if not 0 <= args.iou_thr < 1:  # NaN fails too
        parser.error(f'--iou-thr must be in [0, 1), got {args.iou_thr}')
    return args


def _percent(value: float) -> float:
    """A fraction in percent; undefined (-1, e.g. the AP without any ground truth) stays -1."""
    return value * 100 if value >= 0 else -1.0


def _shown(value: float) -> str:
    return f'{value:.2f}' if value >= 0 else 'n/a'


def frame_ious(gt_rles: List[Optional[dict]], dt_rles: List[Optional[dict]]) -> np.ndarray:
    """(num_gt, num_dt) mask IoU of one frame; 0 where either mask is absent."""
    ious = np.zeros((len(gt_rles), len(dt_rles)))
    gt_index = [i for i, rle in enumerate(gt_rles) if rle is not None]
    dt_index = [j for j, rle in enumerate(dt_rles) if rle is not None]
    if gt_index and dt_index:
        pairs = mask_utils.iou([dt_rles[j] for j in dt_index], [gt_rles[i] for i in gt_index],
                               [0] * len(gt_index))
        ious[np.ix_(gt_index, dt_index)] = np.asarray(pairs).T
    return ious


def boxes_near(box: np.ndarray, other: np.ndarray) -> bool:
    """Whether two (x, y, w, h) boxes overlap or lie within NEAR_PX of each other."""
    return bool(box[0] - NEAR_PX <= other[0] + other[2] and other[0] <= box[0] + box[2] + NEAR_PX
                and box[1] - NEAR_PX <= other[1] + other[3]
                and other[1] <= box[1] + box[3] + NEAR_PX)


def switch_cause(instance: int, since: int, frame: int, present: np.ndarray, boxes: np.ndarray,
                 labels: List[int]) -> str:
    """Why the covering result of ``instance`` changed between frames ``since`` and ``frame``."""
    if not present[instance, since:frame + 1].all():
        return 'after_absence'
    near = set()
    for t in range(since, frame + 1):
        for other in np.flatnonzero(present[:, t]):
            if other != instance and boxes_near(boxes[instance, t], boxes[other, t]):
                near.add('near_same_class' if labels[other] == labels[instance]
                         else 'near_other_class')
    for cause in ('near_same_class', 'near_other_class'):
        if cause in near:
            return cause
    return 'other'


def count_merges(gt_rles: List[List[Optional[dict]]], dt_rles: List[List[Optional[dict]]],
                 labels: List[int], counts: Counter) -> None:
    """Count the pairs of instances visible in one frame (``pairs_same_class`` /
    ``pairs_other_class``) and those a single result mask merges (``merged_same_class`` /
    ``merged_other_class``): it covers at least :data:`MERGE_FRACTION` of each."""
    for t in range(len(gt_rles[0]) if gt_rles else 0):
        visible = [i for i, rles in enumerate(gt_rles) if rles[t] is not None]
        if len(visible) < 2:
            continue
        covered = np.zeros((len(visible), 0), bool)  # (instance, result): covers the fraction
        results = [rles[t] for rles in dt_rles if rles[t] is not None]
        if results:
            areas = mask_utils.area([gt_rles[i][t] for i in visible])
            covered = np.array([[mask_utils.area(mask_utils.merge([gt_rles[i][t], rle], True))
                                 >= MERGE_FRACTION * area for rle in results]
                                for i, area in zip(visible, areas)])
        for a in range(len(visible)):
            for b in range(a + 1, len(visible)):
                kind = ('same_class' if labels[visible[a]] == labels[visible[b]]
                        else 'other_class')
                counts['pairs_' + kind] += 1
                counts['merged_' + kind] += bool((covered[a] & covered[b]).any())


def analyse_video(video: dict, instances: List[dict], tracks: List[dict], iou_thr: float,
                  counts: Counter) -> Tuple[List[dict], List[dict]]:
    """Count coverage and switches of one video; return its masks re-associated by identity:
    one track per matched instance, and what is left of the original tracks."""
    height, width, length = video['height'], video['width'], video_length(video)
    # (None for missing or empty masks: models write empty masks for the frames a track is not in)
    gt_rles = [[segmentation_to_rle(s, height, width) for s in a['segmentations']]
               for a in instances]
    dt_rles = [[segmentation_to_rle(s, height, width) for s in r['segmentations']]
               for r in tracks]
    ious = np.stack([
        frame_ious([rles[t] for rles in gt_rles], [rles[t] for rles in dt_rles])
        for t in range(length)
    ], axis=1)  # (num_gt, length, num_dt)
    present = np.array([[rle is not None for rle in rles] for rles in gt_rles]).reshape(-1, length)
    boxes = np.zeros((len(instances), length, 4))
    for i, rles in enumerate(gt_rles):
        for t, rle in enumerate(rles):
            if rle is not None:
                boxes[i, t] = mask_utils.toBbox(rle)
    labels = [a['category_id'] for a in instances]

    count_merges(gt_rles, dt_rles, labels, counts)
    for i in range(len(instances)):
        counts['frames'] += int(present[i].sum())
        covering = np.where(ious[i].max(axis=1, initial=0) > iou_thr,
                            ious[i].argmax(axis=1) if tracks else -1, -1)
        covered = np.flatnonzero(covering >= 0)
        counts['covered_any'] += len(covered)
        if len(covered):
            counts['covered_main'] += int(np.bincount(covering[covered]).max())
        for since, frame in zip(covered[:-1], covered[1:]):
            if covering[since] != covering[frame]:
                counts[switch_cause(i, since, frame, present, boxes, labels)] += 1

    # Perfect association: one-to-one matches per frame, highest IoU first.
    moved = [[None] * length for _ in instances]
    sources = [[] for _ in instances]
    kept = [list(r['segmentations']) for r in tracks]
    for t in range(length):
        pairs = np.argwhere(ious[:, t] > iou_thr)
        order = np.argsort(-ious[pairs[:, 0], t, pairs[:, 1]], kind='stable')
        taken_gt, taken_dt = set(), set()
        for i, j in pairs[order].tolist():
            if i not in taken_gt and j not in taken_dt:
                taken_gt.add(i)
                taken_dt.add(j)
                moved[i][t], kept[j][t] = kept[j][t], None
                sources[i].append(j)
    per_instance, leftover = [], []
    for i, segmentations in enumerate(moved):
        if sources[i]:
            classes = Counter(tracks[j]['category_id'] for j in sources[i])
            per_instance.append(dict(
                video_id=video['id'], category_id=classes.most_common(1)[0][0],
                score=float(np.mean([tracks[j]['score'] for j in sources[i]])),
                segmentations=segmentations))
    for track, segmentations, rles in zip(tracks, kept, dt_rles):
        if any(s is not None and rle is not None for s, rle in zip(segmentations, rles)):
            leftover.append(dict(track, segmentations=segmentations))
    return per_instance, leftover


def breakdown(gt: Union[str, dict], results: Union[str, List[dict]],
              iou_thr: float = 0.5) -> Dict[str, float]:
    """Coverage and switch counts; the AP as is, with perfect association, and with perfect
    association and no other tracks (percent); the identity metrics (``identity``: HOTA, DetA,
    AssA, IDF1 class averages in percent and the IDSW count).

    ``gt`` and ``results`` are file paths or their loaded contents.
    """
    gt_name = None if isinstance(gt, dict) else os.fspath(gt)
    results_name = None if isinstance(results, list) else os.fspath(results)
    gt = load_json_file(gt_name) if gt_name else gt
    results = load_json_file(results_name) if results_name else results
    evaluator = YTVISEvaluator(gt, gt_name)  # the ground truth parsed (and checked) once
    ap = evaluator.evaluate(results, results_name=results_name)['AP']  # checks the results
    tracking = TrackingEvaluator(gt, gt_name, evaluator).evaluate(results, results_name)
    identity = {name: _percent(tracking[name]) for name in ('HOTA', 'DetA', 'AssA', 'IDF1')}
    identity['IDSW'] = tracking['IDSW']
    instances, tracks = defaultdict(list), defaultdict(list)
    for annotation in gt['annotations']:
        instances[annotation['video_id']].append(annotation)
    for result in results:
        tracks[result['video_id']].append(result)
    counts = Counter()
    per_instance, leftover = [], []
    for video in gt['videos']:
        matched, rest = analyse_video(video, instances[video['id']], tracks[video['id']],
                                      iou_thr, counts)
        per_instance += matched
        leftover += rest
    return dict(frames=counts['frames'], covered_any=counts['covered_any'],
                covered_main=counts['covered_main'],
                switches={cause: counts[cause] for cause in SWITCH_CAUSES},
                merged={kind: (counts['merged_' + kind], counts['pairs_' + kind])
                        for kind in ('same_class', 'other_class')},
                AP=_percent(ap),
                AP_perfect_association=_percent(
                    evaluator.evaluate(per_instance + leftover)['AP']),
                AP_one_track_per_instance=_percent(evaluator.evaluate(per_instance)['AP']),
                identity=identity)


def report(result: Dict, iou_thr: float) -> str:
    frames = max(result['frames'], 1)
    identity = result['identity']
    switches = result['switches']
    causes = ', '.join(f'{cause.replace("_", " ")} {n}' for cause, n in switches.items())
    return '\n'.join([
        f'ground-truth frame masks: {result["frames"]}',
        f'covered (IoU > {iou_thr}) by some result: {result["covered_any"]} '
        f'({100 * result["covered_any"] / frames:.1f}%)',
        f'covered by the instance\'s main result: {result["covered_main"]} '
        f'({100 * result["covered_main"] / frames:.1f}%)',
        f'identity switches: {sum(switches.values())} ({causes})',
        'instance pairs in one frame merged by one result mask (>= '
        f'{100 * MERGE_FRACTION:.0f}% of each): ' + ', '.join(
            f'{kind.replace("_", "-")} {merged} of {pairs} ({100 * merged / max(pairs, 1):.1f}%)'
            for kind, (merged, pairs) in result['merged'].items()),
        f'AP as is: {_shown(result["AP"])}',
        f'AP with the same masks re-associated by ground-truth identity: '
        f'{_shown(result["AP_perfect_association"])}',
        f'  and without the other tracks (one track per instance): '
        f'{_shown(result["AP_one_track_per_instance"])}',
        f'identity metrics (trackeval, class averages): HOTA {_shown(identity["HOTA"])} '
        f'(DetA {_shown(identity["DetA"])}, AssA {_shown(identity["AssA"])}), '
        f'IDF1 {_shown(identity["IDF1"])}, ID switches {identity["IDSW"]}',
    ])


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    try:
        result = breakdown(args.gt_json, args.results_json, args.iou_thr)
    except (YTVISFormatError, OSError) as error:
        print(f'vis_error_breakdown: error: {error}', file=sys.stderr)
        return 1
    print(report(result, args.iou_thr))
    if args.json:
        try:
            with open(args.json, 'w', encoding='utf-8') as f:
                json.dump(result, f, indent=2)
        except OSError as error:
            print(f'vis_error_breakdown: error: cannot write {args.json}: {error}',
                  file=sys.stderr)
            return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
