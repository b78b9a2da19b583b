"""Benchmark ctvis' YouTube-VIS evaluation against mmdet's.

Builds a seeded synthetic YouTube-VIS set
(:func:`ctvis.datasets.synthetic.annotations.make_synthetic_ytvis`: by default
100 videos of 1280x720, 20-40 frames, 1-5 ground-truth objects of a few
categories, moving and changing ellipses with ragged outlines; predictions =
perturbed copies of the ground truth plus false positives, at least 10 per
video), evaluates it with
``mmdet.evaluation.functional.YTVIS`` / ``YTVISeval`` (``np.float`` aliased to
``float`` for that run only; mmdet's copy needs it on numpy >= 1.24) and with
:func:`ctvis.evaluation.ytvis_eval.evaluate_ytvis`, and prints the time of
each, the speed ratio and the largest difference of every metric.

With ``--metric`` it also compares the metrics, each fed the same
predictions and ground truth the way it takes them: mmdet's
``YouTubeVISMetric`` (dense masks and ground truth in the data samples) and
ctvis' ``YTVISMetric`` (the RLE masks ``CTVIS.video_result`` emits, ground
truth from the annotation file), ``process()`` + ``evaluate()``.

Example::

    python tools/analysis_tools/benchmark_ytvis_eval.py --repeats 7
    python tools/analysis_tools/benchmark_ytvis_eval.py --metric
"""
import argparse
import contextlib
import copy
import gc
import io
import json
import os.path as osp
import tempfile
import time
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch
from pycocotools import mask as mask_utils

from ctvis.datasets.synthetic.annotations import make_synthetic_ytvis
from ctvis.evaluation.ytvis_eval import METRIC_NAMES, YTVISEvaluator, evaluate_ytvis


@contextlib.contextmanager
def plain_ytvoseval() -> Iterator[None]:
    """Let mmdet's ytvoseval run, timed as itself, for the duration.

    Its accumulate uses ``np.float`` (removed in numpy 1.24): its module sees
    plain numpy with ``np.float`` aliased to ``float`` for the duration. Its
    prints are discarded.
    """
    from mmdet.evaluation.functional import ytviseval as ytviseval_module
    module_numpy, had_alias = ytviseval_module.np, hasattr(np, 'float')
    ytviseval_module.np = np
    np.float = float
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        ytviseval_module.np = module_numpy
        if not had_alias:
            del np.float


def reference_ytvis_eval(gt: dict, results: List[dict]) -> object:
    """Run mmdet's YTVIS / YTVISeval (ytvoseval) and return the YTVISeval
    object (``stats``, ``eval['precision']``, ``eval['recall']``). The inputs
    are modified in place by ytvoseval: pass copies."""
    from mmdet.evaluation.functional import YTVIS, YTVISeval
    with plain_ytvoseval():
        ytvis = YTVIS(gt)
        evaluator = YTVISeval(ytvis, ytvis.loadRes(results), 'segm')
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator


def differences(metrics: Dict[str, float], precision: np.ndarray, recall: np.ndarray,
                reference: object) -> Dict:
    """``max_abs_diff`` (metric -> |ours - reference|) and
    ``max_abs_diff_arrays`` (over the whole precision and recall arrays) of
    our numbers against a finished ytvoseval ``YTVISeval``."""
    return dict(
        max_abs_diff={
            name: abs(metrics[name] - float(reference.stats[i]))
            for i, name in enumerate(METRIC_NAMES)
        },
        max_abs_diff_arrays=float(
            max(
                np.abs(precision - reference.eval['precision']).max(),
                np.abs(recall - reference.eval['recall']).max())))


def check_identical(report: Dict, against: str) -> None:
    """Exit with an error if a report's numbers differ by more than 1e-6."""
    worst = max(report['max_abs_diff'].values())
    if worst > 1e-6 or report['max_abs_diff_arrays'] > 1e-6:
        raise SystemExit(f'numbers differ from {against} (up to '
                         f"{max(worst, report['max_abs_diff_arrays'])})")


def _best_times(runs: Dict[str, Callable[[], object]],
                repeats: int) -> Dict[str, Tuple[float, float, object]]:
    """name -> (best wall seconds, best CPU seconds, last output) of ``repeats`` rounds that run
    each of ``runs`` once, in turn: on a shared machine, interleaving exposes them all to the same
    load, and the CPU time is the steadier of the two."""
    best = {name: (float('inf'), float('inf'), None) for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            gc.collect()
            wall, cpu = time.perf_counter(), time.process_time()
            output = run()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            best[name] = (min(best[name][0], wall), min(best[name][1], cpu), output)
    return best


def run_benchmark(gt: dict,
                  results: List[dict],
                  repeats: int = 3,
                  log: Optional[Callable[[str], None]] = print) -> Dict:
    """Time both evaluators on a set and compare their numbers.

    Returns:
        dict: ``reference_seconds``, ``ours_seconds`` (best wall time of
        ``repeats`` end-to-end runs), ``ours_loaded_seconds`` (the same with
        the ground truth already parsed, as in the metric), the matching
        ``*_cpu_seconds``, ``speedup`` (end to end), ``max_abs_diff``
        (metric -> |ours - reference|), ``max_abs_diff_arrays`` (over the
        whole precision and recall arrays) and ``stats`` of the set.
    """
    log = log or (lambda _: None)
    num_masks = sum(s is not None for r in results for s in r['segmentations'])
    stats = dict(
        videos=len(gt['videos']),
        frames=sum(v['length'] for v in gt['videos']),
        annotations=len(gt['annotations']),
        predictions=len(results),
        prediction_masks=num_masks)
    log(f'synthetic set: {stats}')

    copies = [(copy.deepcopy(gt), copy.deepcopy(results)) for _ in range(repeats)]
    evaluator = YTVISEvaluator(gt)  # ground truth parsed once (the metric)
    times = _best_times(
        dict(
            reference=lambda: reference_ytvis_eval(*copies.pop()),
            ours=lambda: evaluate_ytvis(gt, results),
            loaded=lambda: evaluator.evaluate(results)), repeats)
    ref_wall, ref_cpu, reference = times['reference']
    our_wall, our_cpu, ours = times['ours']
    loaded_wall, loaded_cpu, _ = times['loaded']
    precision, recall, _ = evaluator.accumulate(results)
    report = dict(
        reference_seconds=ref_wall,
        ours_seconds=our_wall,
        ours_loaded_seconds=loaded_wall,
        reference_cpu_seconds=ref_cpu,
        ours_cpu_seconds=our_cpu,
        ours_loaded_cpu_seconds=loaded_cpu,
        speedup=ref_wall / our_wall,
        metrics=ours,
        stats=stats,
        **differences(ours, precision, recall, reference))
    log(format_report(report))
    return report


# --------------------------------------------------------------------------
# Metric level: mmdet's YouTubeVISMetric against ctvis' YTVISMetric
# --------------------------------------------------------------------------
def metric_set(gt: dict, results: List[dict]) -> Tuple[dict, List[dict]]:
    """The synthetic set as both metrics can be given it identically.

    * Categories renumbered 1..K in id order: mmdet's metric names label
      ``i`` category ``i + 1``.
    * Scores rounded to multiples of 1/64 (ties kept): exact in float32, the
      models' score type, and returned unchanged by the mean over frames
      that mmdet's metric takes.
    * Ground truth gets per-frame ``bboxes`` ([x, y, w, h] of the mask) and
      ``areas`` = box areas, and each video's annotations are ordered by
      first frame: mmdet's metric rebuilds the annotations from the data
      samples' instances, with box areas, in order of first appearance.
    """
    renumber = {
        c['id']: k + 1
        for k, c in enumerate(sorted(gt['categories'], key=lambda c: c['id']))
    }
    sizes = {v['id']: (v['height'], v['width']) for v in gt['videos']}
    annotations = []
    for annotation in gt['annotations']:
        height, width = sizes[annotation['video_id']]
        boxes, areas = [], []
        for segmentation in annotation['segmentations']:
            if segmentation is None:
                boxes.append(None)
                areas.append(None)
                continue
            box = mask_utils.toBbox(mask_utils.frPyObjects(segmentation, height, width)).tolist()
            boxes.append(box)
            areas.append(box[2] * box[3])
        first = next(f for f, s in enumerate(annotation['segmentations']) if s is not None)
        annotations.append((annotation['video_id'], first, len(annotations),
                            dict(
                                annotation,
                                category_id=renumber[annotation['category_id']],
                                bboxes=boxes,
                                areas=areas)))
    annotations = [a for *_, a in sorted(annotations, key=lambda a: a[:3])]
    categories = [
        dict(c, id=renumber[c['id']]) for c in sorted(gt['categories'], key=lambda c: c['id'])
    ]
    results = [
        dict(r, category_id=renumber[r['category_id']], score=round(r['score'] * 64) / 64)
        for r in results
    ]
    return dict(gt, annotations=annotations, categories=categories), results


def _by_video(gt: dict, results: List[dict]) -> List[Tuple[dict, list, list]]:
    """(video, its results, its annotations) in video order."""
    entries: Dict[int, list] = {v['id']: [] for v in gt['videos']}
    annotations: Dict[int, list] = {v['id']: [] for v in gt['videos']}
    for entry in results:
        entries[entry['video_id']].append(entry)
    for annotation in gt['annotations']:
        annotations[annotation['video_id']].append(annotation)
    return [(v, entries[v['id']], annotations[v['id']]) for v in gt['videos']]


def ctvis_track_sample(video: dict, entries: List[dict]) -> object:
    """A finished video as ``CTVIS.video_result`` emits it: every frame lists
    all the video's predictions, with that frame's RLE mask of each
    (contiguous labels, float32 scores)."""
    from mmengine.structures import InstanceData

    from mmdet.structures import DetDataSample, TrackDataSample
    labels = torch.tensor([e['category_id'] - 1 for e in entries])
    scores = torch.tensor([e['score'] for e in entries], dtype=torch.float32)
    ids = torch.arange(len(entries))
    frames = []
    for t in range(video['length']):
        frame = DetDataSample(
            metainfo=dict(frame_id=t, ori_shape=(video['height'], video['width'])))
        frame.pred_track_instances = InstanceData(
            instances_id=ids,
            labels=labels,
            scores=scores,
            masks=[e['segmentations'][t] for e in entries])
        frames.append(frame)
    sample = TrackDataSample(
        metainfo=dict(video_id=video['id'], video_complete=True, ori_video_length=video['length']))
    sample.video_data_samples = frames
    return sample


def mmdet_track_sample(video: dict, entries: List[dict], annotations: List[dict],
                       first_img_id: int) -> object:
    """The same video as mmdet's ``YouTubeVISMetric`` needs it: per frame,
    the predictions with dense masks (N, H, W) bool (decoded here from the
    same RLEs) and boxes, and the ground-truth ``instances`` (label, box
    [x1, y1, x2, y2], instance id, ignore flag, the frame's RLE)."""
    from mmengine.structures import InstanceData

    from mmdet.structures import DetDataSample, TrackDataSample
    height, width = video['height'], video['width']
    labels = torch.tensor([e['category_id'] - 1 for e in entries])
    scores = torch.tensor([e['score'] for e in entries], dtype=torch.float32)
    ids = torch.arange(len(entries))
    frames = []
    for t in range(video['length']):
        dense = mask_utils.decode([e['segmentations'][t] for e in entries])
        masks = torch.from_numpy(np.ascontiguousarray(dense.transpose(2, 0, 1)).view(bool))
        instances = []
        for annotation in annotations:
            box = annotation['bboxes'][t]
            if box is None:
                continue
            instances.append(
                dict(
                    bbox_label=annotation['category_id'] - 1,
                    bbox=[box[0], box[1], box[0] + box[2], box[1] + box[3]],
                    instance_id=annotation['id'],
                    ignore_flag=annotation['iscrowd'],
                    mask=annotation['segmentations'][t]))
        frame = DetDataSample(
            metainfo=dict(
                img_id=first_img_id + t,
                video_id=video['id'],
                frame_id=t,
                ori_shape=(height, width),
                ori_video_length=video['length'],
                instances=instances))
        frame.pred_track_instances = InstanceData(
            bboxes=torch.zeros(len(entries), 4),
            scores=scores,
            labels=labels,
            instances_id=ids,
            masks=masks)
        frames.append(frame)
    sample = TrackDataSample()
    sample.video_data_samples = frames
    return sample


def run_metric_benchmark(gt: dict,
                         results: List[dict],
                         repeats: int = 3,
                         log: Optional[Callable[[str], None]] = print) -> Dict:
    """Time the whole metric path of both metrics on the same predictions
    and ground truth (:func:`metric_set`): ``process()`` on every finished
    video's ``TrackDataSample`` (as ``to_dict()``, what mmengine's Evaluator
    passes), then ``evaluate()`` (gathering, ``compute_metrics()``).

    mmdet's ``YouTubeVISMetric`` gets the data samples it needs (dense masks,
    ground truth in the samples; it encodes the masks to RLE in
    ``process()``); ctvis' ``YTVISMetric`` gets those ``CTVIS.video_result``
    emits (RLE masks; ground truth read from the annotation file). Building
    the samples (decoding the dense masks) is not timed.

    Returns:
        dict: ``mmdet``, ``ctvis`` (a fresh metric: its evaluate() reads the
        annotation file) and ``ctvis_again`` (the same metric evaluating
        again), each the best-of-``repeats`` CPU seconds of ``process``,
        ``compute``, ``total``, and for mmdet ``encode`` (its mask encoding
        inside ``process``); ``max_abs_diff`` (metric ->
        |ctvis - mmdet's ytvoseval stats|), ``max_abs_diff_arrays`` and
        ``metrics`` (ctvis).
    """
    from mmengine.logging import MMLogger

    from mmdet.evaluation.metrics import YouTubeVISMetric
    from mmdet.evaluation.metrics import youtube_vis_metric
    from ctvis.evaluation import YTVISMetric
    from ctvis.evaluation.ytvis_metric import results2json
    from ctvis.models import VideoPrediction
    log = log or (lambda _: None)
    # Both metrics log through the current MMLogger; keep it quiet.
    MMLogger.get_instance('benchmark_ytvis_eval', log_level='WARNING')
    gt, results = metric_set(gt, results)
    videos = _by_video(gt, results)
    classes = tuple(c['name'] for c in gt['categories'])
    first_img_ids = np.cumsum([0] + [v['length'] for v, _, _ in videos])

    def best_of(runs: List[Dict[str, float]]) -> Dict[str, float]:
        return min(runs, key=lambda r: r['total'])

    ours, ours_again, metrics = [], [], {}
    with tempfile.TemporaryDirectory() as tmp_dir:
        ann_file = osp.join(tmp_dir, 'annotations.json')
        with open(ann_file, 'w') as f:
            json.dump(gt, f)
        samples = [ctvis_track_sample(v, e) for v, e, _ in videos]
        for _ in range(repeats):
            metric = YTVISMetric(ann_file=ann_file)
            # A fresh metric reads and parses the annotation file in its
            # first evaluate(); later ones (validation during training)
            # reuse it.
            for runs in (ours, ours_again):
                gc.collect()
                start = time.process_time()
                for sample in samples:
                    metric.process({}, [sample.to_dict()])
                processed = time.process_time()
                metrics = metric.evaluate(size=len(samples))
                done = time.process_time()
                runs.append(
                    dict(process=processed - start, compute=done - processed, total=done - start))
        predictions = results2json([VideoPrediction.from_data_sample(s) for s in samples],
                                   metric.evaluator.category_ids)
        precision, recall, _ = metric.evaluator.accumulate(predictions)
    metrics = {name.split('/')[-1]: value for name, value in metrics.items()}
    log(f'ctvis YTVISMetric: {best_of(ours)}, again: {best_of(ours_again)}')

    theirs, recorded = [], []

    class RecordingYTVISeval(youtube_vis_metric.YTVISeval):
        """mmdet's YTVISeval, remembered (for its full-precision numbers)."""

        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            recorded.append(self)

    encode_seconds = [0.0]
    original_eval = youtube_vis_metric.YTVISeval
    original_encode = youtube_vis_metric.encode_mask_results

    def timed_encode(masks: list) -> list:
        start = time.process_time()
        encoded = original_encode(masks)
        encode_seconds[0] += time.process_time() - start
        return encoded

    youtube_vis_metric.YTVISeval = RecordingYTVISeval
    youtube_vis_metric.encode_mask_results = timed_encode
    try:
        for _ in range(repeats):
            metric = YouTubeVISMetric()
            metric.dataset_meta = dict(classes=classes)
            encode_seconds[0] = process_seconds = 0.0
            for (video, entries, annotations), first_img_id in zip(videos, first_img_ids.tolist()):
                sample = mmdet_track_sample(video, entries, annotations, first_img_id)
                gc.collect()
                start = time.process_time()
                metric.process({}, [sample.to_dict()])
                process_seconds += time.process_time() - start
                del sample
            start = time.process_time()
            with plain_ytvoseval():
                metric.evaluate(size=len(videos))
            compute_seconds = time.process_time() - start
            theirs.append(
                dict(
                    process=process_seconds,
                    encode=encode_seconds[0],
                    compute=compute_seconds,
                    total=process_seconds + compute_seconds))
            log(f'mmdet YouTubeVISMetric run: {theirs[-1]}')
    finally:
        youtube_vis_metric.YTVISeval = original_eval
        youtube_vis_metric.encode_mask_results = original_encode
    return dict(
        mmdet=best_of(theirs),
        ctvis=best_of(ours),
        ctvis_again=best_of(ours_again),
        metrics=metrics,
        **differences(metrics, precision, recall, recorded[-1]))


def format_metric_report(report: Dict) -> str:
    """Markdown table of a :func:`run_metric_benchmark` report."""
    mmdet, ours, again = report['mmdet'], report['ctvis'], report['ctvis_again']
    without_encoding = mmdet['total'] - mmdet['encode']
    lines = [
        '| metric, CPU s | process() | of which mask encoding | evaluate() '
        '| total |', '|---|---:|---:|---:|---:|',
        f"| mmdet `YouTubeVISMetric` | {mmdet['process']:.3f} | "
        f"{mmdet['encode']:.3f} | {mmdet['compute']:.3f} | "
        f"{mmdet['total']:.3f} |", f"| ctvis `YTVISMetric`, first evaluation (reads the annotation "
        f"file) | {ours['process']:.3f} | - | {ours['compute']:.3f} | "
        f"{ours['total']:.3f} |",
        f"| ctvis `YTVISMetric`, evaluating again | {again['process']:.3f} "
        f"| - | {again['compute']:.3f} | {again['total']:.3f} |", '',
        f"ctvis speed-up, first / again: {mmdet['total'] / ours['total']:.2f}x"
        f" / {mmdet['total'] / again['total']:.2f}x (whole path), "
        f"{without_encoding / ours['total']:.2f}x / "
        f"{without_encoding / again['total']:.2f}x (mmdet's path without its "
        'mask encoding)', 'ctvis: ' + ', '.join(f'{name} {report["metrics"][name]:.6f}'
                                                for name in ('AP', 'AP50', 'AP75', 'AR10')),
        f"largest |difference| of the 12 metrics: "
        f"{max(report['max_abs_diff'].values()):.1e}, of every precision / "
        f"recall entry: {report['max_abs_diff_arrays']:.1e}"
    ]
    return '\n'.join(lines)


def format_report(report: Dict) -> str:
    """Markdown tables of a :func:`run_benchmark` report."""
    reference_wall = report['reference_seconds']
    reference_cpu = report['reference_cpu_seconds']
    rows = [('mmdet `YTVIS`/`YTVISeval` (ytvoseval)', reference_wall, reference_cpu),
            ('ctvis `evaluate_ytvis` (end to end)', report['ours_seconds'],
             report['ours_cpu_seconds']),
            ('ctvis `YTVISEvaluator.evaluate` (ground truth already parsed)',
             report['ours_loaded_seconds'], report['ours_loaded_cpu_seconds'])]
    lines = [
        '| evaluator | wall time (s) | CPU time (s) | speed-up (wall / CPU) |',
        '|---|---:|---:|---:|'
    ]
    for name, wall, cpu in rows:
        lines.append(f'| {name} | {wall:.3f} | {cpu:.3f} | '
                     f'{reference_wall / wall:.2f}x / '
                     f'{reference_cpu / cpu:.2f}x |')
    lines += ['', '| metric | value (ctvis) | max abs difference |', '|---|---:|---:|']
    for name, diff in report['max_abs_diff'].items():
        lines.append(f"| {name} | {report['metrics'][name]:.6f} | {diff:.1e} |")
    lines.append('| all precision / recall entries | | '
                 f"{report['max_abs_diff_arrays']:.1e} |")
    return '\n'.join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Time ctvis YouTube-VIS evaluation against ytvoseval on '
        'a synthetic set.')
    parser.add_argument('--num-videos', type=int, default=100)
    parser.add_argument('--height', type=int, default=720)
    parser.add_argument('--width', type=int, default=1280)
    parser.add_argument(
        '--repeats', type=int, default=3, help='runs per evaluator; the '
        'fastest counts')
    parser.add_argument('--frames', type=int, nargs=2, default=(20, 40), metavar=('MIN', 'MAX'))
    parser.add_argument(
        '--objects',
        type=int,
        nargs=2,
        default=(1, 5),
        metavar=('MIN', 'MAX'),
        help='ground-truth objects per video')
    parser.add_argument(
        '--min-predictions', type=int, default=10, help='predictions per video, at least')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument(
        '--metric',
        action='store_true',
        help="also compare the metrics: mmdet's YouTubeVISMetric (dense "
        "masks) and ctvis' YTVISMetric (RLE masks), process() + evaluate(); "
        'slow (mmdet encodes every dense mask)')
    parser.add_argument(
        '--metric-repeats', type=int, default=2, help='runs per metric; the fastest counts')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    start = time.perf_counter()
    gt, results = make_synthetic_ytvis(
        args.num_videos,
        args.height,
        args.width,
        frame_range=tuple(args.frames),
        object_range=tuple(args.objects),
        min_predictions=args.min_predictions,
        seed=args.seed)
    print(f'synthetic set made in {time.perf_counter() - start:.1f}s')
    report = run_benchmark(gt, results, args.repeats)
    check_identical(report, 'ytvoseval')
    if args.metric:
        metric_report = run_metric_benchmark(gt, results, args.metric_repeats)
        print(format_metric_report(metric_report))
        check_identical(metric_report, "mmdet's metric")


if __name__ == '__main__':
    main()
