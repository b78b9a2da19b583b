"""Do a model's tracks follow objects or queries? Streams annotated videos through the online
tracker and classifies every step of every track from one frame to the next.

Example::

    python tools/analysis_tools/query_switches.py configs/ctvis/ctvis_quickstart.py \\
        work_dirs/quickstart/iter_3000.pth data/toy_vis/valid.json [--img-dir DIR]

A track's frame covers the ground-truth instance its mask overlaps best, when that IoU is above
``--iou-thr``. For each track present in two consecutive frames and covering an instance in both,
the step is counted by whether the instance is the same (kept) or another (identity switch) and
whether the detection comes from the same query of the detector. A tracker that follows objects
keeps its tracks across changes of query; one whose embeddings mostly say which query they came
from switches identity whenever a query passes from one object to another (docs/benchmarks.md,
"Identity switches follow the query").
"""
import argparse
import os.path as osp
import sys
from collections import Counter, defaultdict
from typing import Dict, Iterable, List, Optional, Tuple

import cv2

from ctvis.apis import OnlineVideoSegmenter
from ctvis.datasets.ytvis_format import YTVISFormatError, load_json_file
from ctvis.evaluation.tracking_metrics import segmentation_to_rle
from ctvis.evaluation.ytvis_eval import YTVISEvaluator
from vis_error_breakdown import frame_ious

#: (instance, query) outcome of a track's step between consecutive frames, in report order.
STEP_KINDS = (('kept', 'same_query'), ('kept', 'other_query'),
              ('switch', 'same_query'), ('switch', 'other_query'))

# Per frame: track id -> (query index, covered instance index or None).
FrameRecord = Dict[int, Tuple[int, Optional[int]]]


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Whether identity switches follow the detector\'s queries.')
    parser.add_argument('config', help='test config of the model')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('gt_json', help='annotation JSON with ground-truth masks')
    parser.add_argument('--img-dir', help='frames folder (default: JPEGImages next to gt_json)')
    parser.add_argument('--iou-thr', type=float, default=0.5,
                        help='frame mask IoU above which a track covers an instance')
    parser.add_argument('--device', default='cpu')
    args = parser.parse_args(argv)
    if not 0 <= args.iou_thr < 1:  # NaN fails too
        parser.error(f'--iou-thr must be in [0, 1), got {args.iou_thr}')
    return args


def count_steps(frames: Iterable[FrameRecord]) -> Counter:
    """Count :data:`STEP_KINDS` over a video's consecutive frames."""
    counts = Counter()
    previous: FrameRecord = {}
    for record in frames:
        for track, (query, instance) in record.items():
            if track not in previous or instance is None or previous[track][1] is None:
                continue
            before_query, before_instance = previous[track]
            counts[('kept' if instance == before_instance else 'switch',
                    'same_query' if query == before_query else 'other_query')] += 1
        previous = record
    return counts


def track_video(segmenter: OnlineVideoSegmenter, video: dict, instances: List[dict],
                img_dir: str, iou_thr: float) -> List[FrameRecord]:
    """Stream one video; per frame, each track's query and covered instance."""
    height, width = video['height'], video['width']
    gt_rles = [[segmentation_to_rle(s, height, width) for s in a['segmentations']]
               for a in instances]
    records = []
    segmenter.reset()
    for t, name in enumerate(video['file_names']):
        path = osp.join(img_dir, name)
        frame = cv2.imread(path)
        if frame is None:
            raise OSError(f'video id={video["id"]}, frame {t}: cannot read {path}')
        tracks = segmenter.step(frame)
        ious = frame_ious([rles[t] for rles in gt_rles], list(tracks.masks))
        record = {}
        for j, (track, query) in enumerate(zip(tracks.instances_id.tolist(),
                                               tracks.queries.tolist())):
            best = int(ious[:, j].argmax()) if len(instances) else -1
            record[track] = (query, best if best >= 0 and ious[best, j] > iou_thr else None)
        records.append(record)
    return records


def query_switches(segmenter: OnlineVideoSegmenter, gt_json: str, img_dir: str,
                   iou_thr: float = 0.5) -> Counter:
    """:func:`count_steps` summed over the videos of ``gt_json`` (checked first)."""
    gt = load_json_file(gt_json)
    YTVISEvaluator(gt, gt_json)  # reports a malformed file by name
    instances = defaultdict(list)
    for annotation in gt['annotations']:
        instances[annotation['video_id']].append(annotation)
    counts = Counter()
    for video in gt['videos']:
        counts += count_steps(track_video(segmenter, video, instances[video['id']], img_dir,
                                          iou_thr))
    return counts


def report(counts: Counter) -> str:
    switches = counts['switch', 'same_query'] + counts['switch', 'other_query']
    lines = [f'{"track stays on its instance" if kind == "kept" else "identity switch"}, '
             f'{"same" if query == "same_query" else "another"} query: {counts[kind, query]}'
             for kind, query in STEP_KINDS]
    if switches:
        lines.append(f'identity switches with the same query: {counts["switch", "same_query"]} '
                     f'of {switches} ({100 * counts["switch", "same_query"] / switches:.1f}%)')
    return '\n'.join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    img_dir = args.img_dir or osp.join(osp.dirname(osp.abspath(args.gt_json)), 'JPEGImages')
    try:
        segmenter = OnlineVideoSegmenter.from_config(args.config, args.checkpoint, args.device)
        counts = query_switches(segmenter, args.gt_json, img_dir, args.iou_thr)
    except (YTVISFormatError, OSError, ValueError) as error:
        print(f'query_switches: error: {error}', file=sys.stderr)
        return 1
    print(report(counts))
    return 0


if __name__ == '__main__':
    sys.exit(main())
