"""Evaluate a YouTube-VIS / OVIS results file against a ground-truth JSON.

Prints video mask AP / AR in percent (the numbers of the official
youtube-vis cocoapi) and, with ``--json``, writes them to a file. Accepts any
method's results in the standard format (a JSON list of ``{video_id,
category_id, score, segmentations}``, or a zip holding ``results.json``).

Example::

    python tools/analysis_tools/eval_ytvis.py \\
        data/youtube_vis_2021/valid_sub.json work_dirs/ctvis/results.json \\
        --json work_dirs/ctvis/metrics.json

A malformed file is reported in one line naming the entry and the problem,
with exit status 1.
"""
import argparse
import json
import os.path as osp
import sys
from typing import Dict, List, Optional

from ctvis.evaluation.ytvis_eval import (YTVISFormatError, evaluate_ytvis,
                                         load_long_video_ids, metrics_table)


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
    return parser.parse_args(argv)


def to_percent(metrics: Dict[str, float]) -> Dict[str, float]:
    """Fractions to percent; undefined values (-1) stay -1."""
    return {
        name: value * 100 if value >= 0 else -1.0
        for name, value in metrics.items()
    }


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    try:
        long_video_ids = (
            load_long_video_ids(args.long_video_ids)
            if args.long_video_ids else None)
        metrics = evaluate_ytvis(args.gt_json, args.results_json,
                                 long_video_ids)
    except (YTVISFormatError, OSError) as error:
        print(f'eval_ytvis: error: {error}', file=sys.stderr)
        return 1
    print(metrics_table(metrics))
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
