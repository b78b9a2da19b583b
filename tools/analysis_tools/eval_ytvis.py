"""Evaluate a YouTube-VIS / OVIS results file against a ground-truth JSON.

Prints video mask AP / AR in percent (the numbers of the official
youtube-vis cocoapi), with ``--tracking-metrics`` also the identity metrics
HOTA, DetA, AssA, IDF1 and ID switches (computed by trackeval, see
:mod:`ctvis.evaluation.tracking_metrics`), and with ``--json`` writes them to
a file (percent; ``IDSW`` a count). Accepts any method's results in the
standard format (a JSON list of ``{video_id, category_id, score,
segmentations}``, or a zip holding ``results.json``).

Example::

    python tools/analysis_tools/eval_ytvis.py \\
        data/youtube_vis_2021/valid_sub.json work_dirs/ctvis/results.json \\
        --json work_dirs/ctvis/metrics.json [--tracking-metrics]

A malformed file is reported in one line naming the entry and the problem,
with exit status 1.
"""
import argparse
import json
import math
import os.path as osp
import sys
from typing import Dict, List, Optional

from ctvis.datasets.ytvis_format import (YTVISFormatError, load_json_file,
                                         load_long_video_ids)
from ctvis.evaluation.tracking_metrics import (COUNT_METRICS,
                                               TrackingEvaluator,
                                               tracking_metrics_table)
from ctvis.evaluation.ytvis_eval import YTVISEvaluator, metrics_table
from ctvis.utils import preview


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='YouTube-VIS / OVIS video mask AP of a results file.')
    parser.add_argument('gt_json', help='ground-truth annotation JSON')
    parser.add_argument(
        'results_json', help='results JSON (or a zip holding results.json)')
    parser.add_argument(
        '--json', metavar='OUT_JSON', help='write the metrics (percent) here')
    parser.add_argument(
        '--long-video-ids',
        metavar='FILE',
        help='YouTube-VIS 2022: JSON listing the long videos (ids, video '
        'dicts, or a YouTube-VIS file of them); adds AP_short / AP_long / '
        'AP_2022')
    parser.add_argument(
        '--tracking-metrics',
        action='store_true',
        help='also HOTA, DetA, AssA, IDF1 (class averages and *_det_av over '
        'all detections) and IDSW, by trackeval')
    parser.add_argument(
        '--tracking-score-thr',
        type=float,
        metavar='SCORE',
        help='identity metrics of the predictions scoring at least this '
        '(default: all, as trackeval)')
    args = parser.parse_args(argv)
    if args.tracking_score_thr is not None and not args.tracking_metrics:
        parser.error('--tracking-score-thr needs --tracking-metrics')
    if args.tracking_score_thr is not None and not math.isfinite(args.tracking_score_thr):
        parser.error(f'--tracking-score-thr must be a finite number, got '
                     f'{args.tracking_score_thr}')
    return args


def to_percent(metrics: Dict[str, float]) -> Dict[str, float]:
    """Fractions to percent; undefined values (-1) and counts stay as they
    are."""
    return {
        name: value if name in COUNT_METRICS else
        value * 100 if value >= 0 else -1.0
        for name, value in metrics.items()
    }


def videos_without_results(gt: dict, results: list) -> Optional[str]:
    """A note on the ground-truth videos with annotations that the results never mention
    (scored as missed, as ytvoseval does: a results file of another tool, or of a run on part
    of the videos, would otherwise pass unremarked), or None."""
    annotated = {a['video_id'] for a in gt.get('annotations') or []}
    missing = sorted(annotated - {r['video_id'] for r in results})
    if not missing:
        return None
    return (f'{len(missing)} of the {len(annotated)} annotated videos have no results '
            f'(scored as missed): video ids {preview(missing, 5)}')


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    try:
        long_video_ids = (
            load_long_video_ids(args.long_video_ids)
            if args.long_video_ids else None)
        # Each file read once for both evaluations.
        gt = load_json_file(args.gt_json)
        results = load_json_file(args.results_json)
        evaluator = YTVISEvaluator(gt, args.gt_json)
        metrics = evaluator.evaluate(results, long_video_ids,
                                     args.results_json)
        print(metrics_table(metrics))
        note = videos_without_results(gt, results)
        if note:
            print(f'eval_ytvis: note: {args.results_json}: {note}', file=sys.stderr)
        if args.tracking_metrics:
            tracking = TrackingEvaluator(gt, args.gt_json, evaluator).evaluate(
                results, args.results_json, args.tracking_score_thr)
            print('identity metrics (trackeval)')
            print(tracking_metrics_table(tracking))
            metrics.update(tracking)
    except (YTVISFormatError, OSError) as error:
        print(f'eval_ytvis: error: {error}', file=sys.stderr)
        return 1
    if args.json:
        try:
            with open(args.json, 'w', encoding='utf-8') as f:
                json.dump(to_percent(metrics), f, indent=2)
        except OSError as error:
            print(f'eval_ytvis: error: cannot write {args.json}: {error}',
                  file=sys.stderr)
            return 1
        print(f'metrics (percent) written to {osp.abspath(args.json)}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
