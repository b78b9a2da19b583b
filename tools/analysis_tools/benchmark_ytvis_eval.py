"""Benchmark ctvis' YouTube-VIS evaluator against mmdet's copy of ytvoseval.

Builds a seeded synthetic YouTube-VIS set (by default 100 videos of 1280x720,
20-40 frames, 1-5 ground-truth objects of a few categories, moving and
changing ellipses with ragged outlines; predictions = perturbed copies of the
ground truth plus false positives, at least 10 per video), evaluates it with
``mmdet.evaluation.functional.YTVIS`` / ``YTVISeval`` (``np.float`` aliased to
``float`` for that run only; mmdet's copy needs it on numpy >= 1.24) and with
:func:`ctvis.evaluation.ytvis_eval.evaluate_ytvis`, and prints the time of
each, the speed ratio and the largest difference of every metric.

Example::

    python tools/analysis_tools/benchmark_ytvis_eval.py --repeats 3
"""
import argparse
import contextlib
import copy
import gc
import io
import time
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
from pycocotools import mask as mask_utils

from ctvis.evaluation.ytvis_eval import (METRIC_NAMES, YTVISEvaluator,
                                         evaluate_ytvis)

# Ellipse semi-axes (pixels at 720p) of small / medium / large objects.
_OBJECT_SCALES = (30, 90, 220)


def ellipse_counts(height: int, width: int, center: Tuple[float, float],
                   axes: Tuple[float, float],
                   rng: np.random.Generator) -> np.ndarray:
    """Run lengths (column-major, pycocotools order) of a filled ellipse
    whose top and bottom edges are jittered by up to 2 pixels per column,
    written directly without rasterising the frame.

    Returns:
        np.ndarray: int64 (num_runs, ), alternating background / foreground
        runs starting with background, summing to ``height * width``.
    """
    cx, cy = center
    ax, ay = axes
    x0 = max(int(np.floor(cx - ax)), 0)
    x1 = min(int(np.ceil(cx + ax)), width - 1)
    if x1 < x0:
        return np.array([height * width])
    xs = np.arange(x0, x1 + 1)
    half = ay * np.sqrt(np.clip(1 - ((xs - cx) / ax)**2, 0, None))
    jitter = rng.integers(-2, 3, (2, len(xs)))
    top = np.clip(np.round(cy - half).astype(np.int64) + jitter[0], 0, height)
    bottom = np.clip(
        np.round(cy + half).astype(np.int64) + jitter[1], 0, height)
    keep = bottom > top
    starts, ends = xs[keep] * height + top[keep], xs[keep] * height + bottom[
        keep]
    if not len(starts):
        return np.array([height * width])
    touching = starts[1:] == ends[:-1]  # full-height columns side by side
    starts = starts[np.concatenate([[True], ~touching])]
    ends = ends[np.concatenate([~touching, [True]])]
    boundaries = np.empty(2 * len(starts) + 2, np.int64)
    boundaries[0], boundaries[-1] = 0, height * width
    boundaries[1:-1:2], boundaries[2:-1:2] = starts, ends
    return np.diff(boundaries)


def _track(rng: np.random.Generator, height: int, width: int,
           num_frames: int) -> dict:
    """A random object trajectory: ellipse axes, start point, velocity and
    growth, visible in a random sub-range of the frames."""
    scale = rng.choice(_OBJECT_SCALES) * height / 720
    axes = scale * rng.uniform(0.6, 1.4, 2)
    start = rng.uniform(axes, [width - axes[0], height - axes[1]])
    first = int(rng.integers(0, max(num_frames // 4, 1)))
    last = int(rng.integers(3 * num_frames // 4, num_frames + 1))
    return dict(
        axes=axes,
        start=start,
        velocity=rng.normal(0, 0.004 * width, 2),
        growth=rng.uniform(-0.01, 0.01),
        frames=range(first, max(last, first + 1)))


def _frame_counts(track: dict, frame: int, height: int, width: int,
                  rng: np.random.Generator, offset=(0., 0.),
                  scale=1.) -> np.ndarray:
    center = track['start'] + track['velocity'] * frame + offset
    axes = track['axes'] * scale * (1 + track['growth'] * frame)
    return ellipse_counts(height, width, tuple(center), tuple(axes), rng)


def make_synthetic_ytvis(num_videos: int = 100,
                         height: int = 720,
                         width: int = 1280,
                         frame_range: Tuple[int, int] = (20, 40),
                         object_range: Tuple[int, int] = (1, 5),
                         category_ids: Tuple[int, ...] = (1, 2, 3, 5, 8, 13),
                         min_predictions: int = 10,
                         seed: int = 0) -> Tuple[dict, List[dict]]:
    """A seeded synthetic YouTube-VIS ground truth and results list.

    Ground truth follows the official YouTube-VIS layout (uncompressed RLE
    per frame, None where the object is absent, ``areas``, 5% crowd).
    Predictions look like the output of query-based VIS models (ours
    included): a compressed RLE in every frame, empty where the object is
    not seen; 1-2 perturbed copies of every object (shifted, rescaled, a few
    frames missed, 15% with a wrong category) and false positives (random
    objects and categories, lower scores) up to at least ``min_predictions``
    per video. Scores have two decimals, so ties occur.
    """
    rng = np.random.default_rng(seed)
    videos, annotations, results = [], [], []

    def compressed(counts: np.ndarray) -> dict:
        rle = mask_utils.frPyObjects(
            {
                'counts': counts,
                'size': [height, width]
            }, height, width)
        return {'size': [height, width], 'counts': rle['counts'].decode()}

    empty = compressed(np.array([height * width]))

    for video_id in range(1, num_videos + 1):
        num_frames = int(rng.integers(frame_range[0], frame_range[1] + 1))
        videos.append(
            dict(
                id=video_id,
                width=width,
                height=height,
                length=num_frames,
                file_names=[
                    f'{video_id:05d}/{t:05d}.jpg' for t in range(num_frames)
                ]))
        objects = []
        for _ in range(
                int(rng.integers(object_range[0], object_range[1] + 1))):
            track = _track(rng, height, width, num_frames)
            track['category'] = int(rng.choice(category_ids))
            segmentations, areas = [None] * num_frames, [None] * num_frames
            for frame in track['frames']:
                counts = _frame_counts(track, frame, height, width, rng)
                segmentations[frame] = {
                    'counts': counts.tolist(),
                    'size': [height, width]
                }
                areas[frame] = float(counts[1::2].sum())
            annotations.append(
                dict(
                    id=len(annotations) + 1,
                    video_id=video_id,
                    category_id=track['category'],
                    segmentations=segmentations,
                    areas=areas,
                    iscrowd=int(rng.random() < 0.05),
                    width=width,
                    height=height))
            objects.append(track)
        predictions = []
        for track in objects:
            for _ in range(int(rng.integers(1, 3))):
                category = (
                    track['category'] if rng.random() < 0.85 else int(
                        rng.choice(category_ids)))
                offset = rng.normal(0, 0.1 * track['axes'].mean(), 2)
                scale = rng.uniform(0.85, 1.15)
                segmentations = [empty] * num_frames
                for frame in track['frames']:
                    if rng.random() < 0.05:
                        continue
                    segmentations[frame] = compressed(
                        _frame_counts(track, frame, height, width, rng,
                                      offset, scale))
                predictions.append(
                    dict(
                        video_id=video_id,
                        category_id=category,
                        score=round(float(rng.uniform(0.3, 1.0)), 2),
                        segmentations=segmentations))
        while len(predictions) < min_predictions or rng.random() < 0.3:
            track = _track(rng, height, width, num_frames)
            segmentations = [empty] * num_frames
            for frame in track['frames']:
                segmentations[frame] = compressed(
                    _frame_counts(track, frame, height, width, rng))
            predictions.append(
                dict(
                    video_id=video_id,
                    category_id=int(rng.choice(category_ids)),
                    score=round(float(rng.uniform(0.0, 0.7)), 2),
                    segmentations=segmentations))
        results.extend(predictions)
    categories = [
        dict(id=c, name=f'class_{c}', supercategory='object')
        for c in category_ids
    ]
    return dict(
        videos=videos, annotations=annotations,
        categories=categories), results


def reference_ytvis_eval(gt: dict, results: List[dict]) -> object:
    """Run mmdet's YTVIS / YTVISeval (ytvoseval) and return the YTVISeval
    object (``stats``, ``eval['precision']``, ``eval['recall']``).

    ytvoseval's accumulate uses ``np.float`` (removed in numpy 1.24): for the
    duration of this run only, its module sees plain numpy with ``np.float``
    aliased to ``float`` (also replacing, for the run, the slower module
    overlay that ``ctvis.utils.compat`` installs there, so that the timing
    is that of ytvoseval itself). The inputs are modified in place by
    ytvoseval: pass copies.
    """
    from mmdet.evaluation.functional import YTVIS, YTVISeval
    from mmdet.evaluation.functional import ytviseval as ytviseval_module
    module_numpy, had_alias = ytviseval_module.np, hasattr(np, 'float')
    ytviseval_module.np = np
    np.float = float
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            ytvis = YTVIS(gt)
            evaluator = YTVISeval(ytvis, ytvis.loadRes(results), 'segm')
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
    finally:
        ytviseval_module.np = module_numpy
        if not had_alias:
            del np.float
    return evaluator


def _best_time(run: Callable[[], object], repeats: int) -> Tuple[float, float,
                                                                 object]:
    """(best wall seconds, best CPU seconds, last output) of ``repeats``
    runs. On a shared machine the CPU time is the steadier of the two."""
    best_wall, best_cpu, output = float('inf'), float('inf'), None
    for _ in range(repeats):
        gc.collect()
        wall, cpu = time.perf_counter(), time.process_time()
        output = run()
        best_wall = min(best_wall, time.perf_counter() - wall)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    return best_wall, best_cpu, output


def run_benchmark(num_videos: int = 100,
                  height: int = 720,
                  width: int = 1280,
                  repeats: int = 3,
                  seed: int = 0,
                  log: Optional[Callable[[str], None]] = print,
                  **set_options) -> Dict:
    """Generate the set, time both evaluators and compare their numbers.

    Returns:
        dict: ``reference_seconds``, ``ours_seconds`` (best wall time of
        ``repeats`` end-to-end runs), ``ours_loaded_seconds`` (the same with
        the ground truth already parsed, as in the metric), the matching
        ``*_cpu_seconds``, ``speedup`` (end to end), ``max_abs_diff``
        (metric -> |ours - reference|), ``max_abs_diff_arrays`` (over the
        whole precision and recall arrays) and ``stats`` of the set.
        ``set_options`` go to :func:`make_synthetic_ytvis`.
    """
    log = log or (lambda _: None)
    start = time.perf_counter()
    gt, results = make_synthetic_ytvis(
        num_videos, height, width, seed=seed, **set_options)
    num_masks = sum(s is not None for r in results
                    for s in r['segmentations'])
    stats = dict(
        videos=len(gt['videos']),
        frames=sum(v['length'] for v in gt['videos']),
        annotations=len(gt['annotations']),
        predictions=len(results),
        prediction_masks=num_masks)
    log(f'synthetic set ({time.perf_counter() - start:.1f}s): {stats}')

    copies = [(copy.deepcopy(gt), copy.deepcopy(results))
              for _ in range(repeats)]
    ref_wall, ref_cpu, reference = _best_time(
        lambda: reference_ytvis_eval(*copies.pop()), repeats)
    our_wall, our_cpu, ours = _best_time(
        lambda: evaluate_ytvis(gt, results), repeats)
    evaluator = YTVISEvaluator(gt)  # ground truth parsed once (the metric)
    loaded_wall, loaded_cpu, _ = _best_time(
        lambda: evaluator.evaluate(results), repeats)
    precision, recall, _ = evaluator.accumulate(results)
    diffs = {
        name: abs(ours[name] - float(reference.stats[i]))
        for i, name in enumerate(METRIC_NAMES)
    }
    array_diff = max(
        np.abs(precision - reference.eval['precision']).max(),
        np.abs(recall - reference.eval['recall']).max())
    report = dict(
        reference_seconds=ref_wall,
        ours_seconds=our_wall,
        ours_loaded_seconds=loaded_wall,
        reference_cpu_seconds=ref_cpu,
        ours_cpu_seconds=our_cpu,
        ours_loaded_cpu_seconds=loaded_cpu,
        speedup=ref_wall / our_wall,
        max_abs_diff=diffs,
        max_abs_diff_arrays=float(array_diff),
        metrics=ours,
        stats=stats)
    log(format_report(report))
    return report


def stage_times(gt: dict, results: List[dict],
                repeats: int = 3) -> Dict[str, Dict[str, float]]:
    """Best CPU seconds of each stage of both evaluators (a diagnostic: it
    drives ytvoseval's steps one by one and ctvis' internal stages)."""
    from mmdet.evaluation.functional import YTVIS, YTVISeval
    from mmdet.evaluation.functional import ytviseval as ytviseval_module

    from ctvis.evaluation import ytvis_eval

    def reference_stages() -> Dict[str, float]:
        module_numpy = ytviseval_module.np
        ytviseval_module.np = np
        np.float = float
        gt_copy, results_copy = copy.deepcopy(gt), copy.deepcopy(results)
        clock = [time.process_time()]

        def lap() -> float:
            clock.append(time.process_time())
            return clock[-1] - clock[-2]

        try:
            with contextlib.redirect_stdout(io.StringIO()):
                ytvis = YTVIS(gt_copy)
                evaluator = YTVISeval(ytvis, ytvis.loadRes(results_copy))
                times = dict(results=lap())
                params = evaluator.params
                evaluator._prepare()  # converts the ground-truth RLEs
                times['ground_truth'] = lap()
                evaluator.ious = {(v, c): evaluator.computeIoU(v, c)
                                  for v in params.vidIds
                                  for c in params.catIds}
                evaluator.evalImgs = [
                    evaluator.evaluateVid(v, c, a, max(params.maxDets))
                    for c in params.catIds for a in params.areaRng
                    for v in params.vidIds
                ]
                evaluator._paramsEval = copy.deepcopy(params)
                times['ious_and_matching'] = lap()
                evaluator.accumulate()
                evaluator.summarize()
                times['accumulation'] = lap()
        finally:
            ytviseval_module.np = module_numpy
            del np.float
        return times

    def our_stages() -> Dict[str, float]:
        clock = [time.process_time()]

        def lap() -> float:
            clock.append(time.process_time())
            return clock[-1] - clock[-2]

        evaluator = YTVISEvaluator(gt)
        times = dict(ground_truth=lap())
        tracks = ytvis_eval._parse_results(results, 'results', evaluator._gt)
        times['results'] = lap()
        matches = ytvis_eval._match_all(evaluator._gt, tracks)
        times['ious_and_matching'] = lap()
        ytvis_eval._summarize(*ytvis_eval._accumulate(
            matches, len(evaluator.category_ids)))
        times['accumulation'] = lap()
        return times

    best: Dict[str, Dict[str, float]] = {}
    runs = (('ytvoseval', reference_stages), ('ctvis', our_stages))
    for name, run in runs:
        for _ in range(repeats):
            gc.collect()
            times = run()
            best[name] = {
                stage: min(seconds, best.get(name, {}).get(stage, seconds))
                for stage, seconds in times.items()
            }
    return best


def format_report(report: Dict) -> str:
    """Markdown tables of a :func:`run_benchmark` report."""
    reference_wall = report['reference_seconds']
    reference_cpu = report['reference_cpu_seconds']
    rows = [('mmdet `YTVIS`/`YTVISeval` (ytvoseval)', reference_wall,
             reference_cpu),
            ('ctvis `evaluate_ytvis` (end to end)', report['ours_seconds'],
             report['ours_cpu_seconds']),
            ('ctvis `YTVISEvaluator.evaluate` (ground truth already parsed)',
             report['ours_loaded_seconds'],
             report['ours_loaded_cpu_seconds'])]
    lines = [
        '| evaluator | wall time (s) | CPU time (s) | speed-up (wall / CPU) |',
        '|---|---:|---:|---:|'
    ]
    for name, wall, cpu in rows:
        lines.append(f'| {name} | {wall:.3f} | {cpu:.3f} | '
                     f'{reference_wall / wall:.2f}x / '
                     f'{reference_cpu / cpu:.2f}x |')
    lines += ['', '| metric | value (ctvis) | max abs difference |',
              '|---|---:|---:|']
    for name, diff in report['max_abs_diff'].items():
        lines.append(
            f"| {name} | {report['metrics'][name]:.6f} | {diff:.1e} |")
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
    parser.add_argument(
        '--frames', type=int, nargs=2, default=(20, 40), metavar=('MIN',
                                                                  'MAX'))
    parser.add_argument(
        '--objects',
        type=int,
        nargs=2,
        default=(1, 5),
        metavar=('MIN', 'MAX'),
        help='ground-truth objects per video')
    parser.add_argument(
        '--min-predictions',
        type=int,
        default=10,
        help='predictions per video, at least')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument(
        '--stages',
        action='store_true',
        help='also print the CPU time of each stage of both evaluators')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    report = run_benchmark(
        args.num_videos,
        args.height,
        args.width,
        args.repeats,
        args.seed,
        frame_range=tuple(args.frames),
        object_range=tuple(args.objects),
        min_predictions=args.min_predictions)
    if args.stages:
        gt, results = make_synthetic_ytvis(
            args.num_videos,
            args.height,
            args.width,
            frame_range=tuple(args.frames),
            object_range=tuple(args.objects),
            min_predictions=args.min_predictions,
            seed=args.seed)
        for name, times in stage_times(gt, results, args.repeats).items():
            print(f'{name} stages (best CPU seconds): ' + ', '.join(
                f'{stage} {seconds:.3f}' for stage, seconds in times.items())
                  + f', total {sum(times.values()):.3f}')
    worst = max(report['max_abs_diff'].values())
    if worst > 1e-6 or report['max_abs_diff_arrays'] > 1e-6:
        raise SystemExit(f'numbers differ from ytvoseval (up to {worst})')


if __name__ == '__main__':
    main()
