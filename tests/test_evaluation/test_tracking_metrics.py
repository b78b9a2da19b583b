"""Tests of the identity metrics (ctvis.evaluation.tracking_metrics): hand-checked cases, and
agreement with trackeval's own YouTube-VIS pipeline (its folder layout and Evaluator) on a
results file of the toy set."""
import copy
import json
import math
import os.path as osp
from typing import List, Optional, Sequence, Tuple

import numpy as np
import pytest
import trackeval
from pycocotools import mask as mask_utils

from ctvis.datasets.synthetic.annotations import box_mask, rle_of
from ctvis.datasets.synthetic.toy import make_toy_vis
from ctvis.datasets.ytvis_format import YTVISFormatError
from ctvis.evaluation import YTVISMetric
from ctvis.evaluation.tracking_metrics import (TRACKING_METRIC_NAMES, TrackingEvaluator,
                                               evaluate_tracking)

from conftest import REPO, load_module, track_samples

EVAL_TOOL = osp.join(REPO, 'tools', 'analysis_tools', 'eval_ytvis.py')
BREAKDOWN_TOOL = osp.join(REPO, 'tools', 'analysis_tools', 'vis_error_breakdown.py')
H, W = 20, 30


def square(x: int) -> np.ndarray:
    """An 8x8 square at column x (disjoint from the square at x +- 10)."""
    return box_mask(H, W, (x, 4, x + 8, 12))


def make_gt(tracks: Sequence[Sequence[Optional[np.ndarray]]], categories: Sequence[int],
            video_ids: Sequence[int] = (1, ), track_videos: Optional[Sequence[int]] = None,
            category_ids: Sequence[int] = (1, 2, 3)) -> dict:
    """A YouTube-VIS ground truth (uncompressed RLEs, as the official files) of videos of equal
    length; track i is annotation id 10 + i of ``track_videos[i]`` (default: the first)."""
    length = len(tracks[0]) if tracks else 4
    track_videos = track_videos or [video_ids[0]] * len(tracks)
    return dict(
        videos=[dict(id=v, height=H, width=W, length=length,
                     file_names=[f'video{v}/{t:05d}.jpg' for t in range(length)])
                for v in video_ids],
        categories=[dict(id=c, name=f'class{c}') for c in category_ids],
        annotations=[
            dict(id=10 + i, video_id=video, category_id=category, iscrowd=0, height=H, width=W,
                 segmentations=[None if m is None else rle_of(m, 'list') for m in masks],
                 areas=[None if m is None else int(m.sum()) for m in masks])
            for i, (masks, category, video) in enumerate(zip(tracks, categories, track_videos))
        ])


def prediction(masks: Sequence[Optional[np.ndarray]], category: int, score: float = 0.9,
               video_id: int = 1) -> dict:
    return dict(video_id=video_id, category_id=category, score=score,
                segmentations=[None if m is None else rle_of(m) for m in masks])


def as_predictions(gt: dict) -> List[dict]:
    """Every ground-truth track as a prediction (compressed RLEs)."""
    return [dict(video_id=a['video_id'], category_id=a['category_id'], score=1.0,
                 segmentations=[None if s is None else mask_utils.frPyObjects(s, H, W)
                                for s in a['segmentations']])
            for a in gt['annotations']]


def two_objects(length: int = 4):
    """Two same-category squares side by side over ``length`` frames."""
    a = [square(2)] * length
    b = [square(14)] * length
    return a, b


# ---------------------------------------------------------------------------
# Hand-checked cases
# ---------------------------------------------------------------------------
def test_perfect_predictions_score_100():
    a, b = two_objects()
    c = [None, square(5), square(6), None]
    # Category 3 has neither ground truth nor predictions: left out of the class average.
    gt = make_gt([a, b, c], [1, 1, 2])
    metrics = evaluate_tracking(gt, as_predictions(gt))
    assert set(metrics) == set(TRACKING_METRIC_NAMES)
    for name in TRACKING_METRIC_NAMES:
        assert metrics[name] == (0 if name == 'IDSW' else pytest.approx(1)), name


def test_identities_swapping_at_mid_video():
    a, b = two_objects()
    gt = make_gt([a, b], [1, 1])
    results = [prediction(a[:2] + b[2:], 1), prediction(b[:2] + a[2:], 1)]
    metrics = evaluate_tracking(gt, results)
    # Best identity assignment: each track keeps one object for 2 of its 4 frames.
    assert metrics['IDF1'] == pytest.approx(0.5)
    assert metrics['IDSW'] == 2  # each object changes track once
    assert metrics['DetA'] == pytest.approx(1)
    # Each true positive's association IoU: 2 shared frames / (4 + 4 - 2).
    assert metrics['AssA'] == pytest.approx(1 / 3)
    assert metrics['HOTA'] == pytest.approx(math.sqrt(1 / 3))


def test_categories_are_evaluated_separately():
    a, b = two_objects()
    gt = make_gt([a, b], [1, 2])
    # Perfect masks, b predicted as category 3: a is perfect, b missed, the prediction false.
    metrics = evaluate_tracking(gt, [prediction(a, 1), prediction(b, 3)])
    assert metrics['IDF1'] == pytest.approx((1 + 0 + 0) / 3)  # categories 1, 2 and 3
    assert metrics['DetA'] == pytest.approx(1 / 3)
    # Pooled over categories: 4 true, 4 missed and 4 false detections.
    assert metrics['IDF1_det_av'] == pytest.approx(4 / (4 + 0.5 * 4 + 0.5 * 4))
    assert metrics['DetA_det_av'] == pytest.approx(4 / 12)
    assert metrics['IDSW'] == 0


def test_empty_predictions():
    a, b = two_objects()
    metrics = evaluate_tracking(make_gt([a, b], [1, 2]), [])
    for name in TRACKING_METRIC_NAMES:
        assert metrics[name] == 0, name


def test_video_without_ground_truth():
    a, _ = two_objects()
    gt = make_gt([a], [1], video_ids=(1, 2))
    spurious = [square(3), square(3), None, None]
    metrics = evaluate_tracking(gt, [prediction(a, 1), prediction(spurious, 1, video_id=2)])
    # 4 true positives in video 1, 2 false ones in video 2, identities perfect.
    assert metrics['DetA'] == pytest.approx(4 / 6)
    assert metrics['AssA'] == pytest.approx(1)
    assert metrics['HOTA'] == pytest.approx(math.sqrt(4 / 6))
    assert metrics['IDF1'] == pytest.approx(4 / (4 + 0.5 * 2))


def test_empty_masks_are_absent():
    """An empty mask, as models write for frames where a track is absent, is no detection."""
    a, b = two_objects()
    gt = make_gt([a, b], [1, 1])
    empty = np.zeros((H, W), bool)
    partial = prediction([a[0], a[1], None, None], 1)
    with_empty = prediction([a[0], a[1], empty, empty], 1)
    expected = evaluate_tracking(gt, [partial, prediction(b, 1)])
    assert expected['DetA'] == pytest.approx(6 / 8)  # no false detection
    assert evaluate_tracking(gt, [with_empty, prediction(b, 1)]) == pytest.approx(expected)
    # Ground truth too: an instance whose masks are empty has no detection to find.
    gt['annotations'][1]['segmentations'] = [rle_of(empty, 'list')] * 4
    assert evaluate_tracking(gt, [prediction(a, 1)])['DetA'] == pytest.approx(1)


def test_score_threshold_keeps_predictions_at_or_above_it():
    a, b = two_objects()
    gt = make_gt([a, b], [1, 1])
    results = [prediction(a, 1, score=0.5), prediction(b, 1, score=0.4999)]
    evaluator = TrackingEvaluator(gt)
    assert evaluator.evaluate(results)['DetA'] == pytest.approx(1)  # default: every score
    assert evaluator.evaluate(results, score_thr=0.5)['DetA'] == pytest.approx(0.5)
    assert evaluator.evaluate(results, score_thr=0.6)['DetA'] == 0


def test_nothing_to_evaluate_is_undefined():
    gt = make_gt([[None] * 4], [1])
    metrics = evaluate_tracking(gt, [])
    assert metrics == dict({name: -1.0 for name in TRACKING_METRIC_NAMES}, IDSW=0)


def test_malformed_input_is_named(tmp_path):
    a, b = two_objects()
    gt = make_gt([a, b], [1, 1])
    gt_path = tmp_path / 'gt.json'
    gt_path.write_text(json.dumps(gt))
    results = [prediction(a, 1), prediction(b[:3], 1)]
    results_path = tmp_path / 'results.json'
    results_path.write_text(json.dumps(results))
    with pytest.raises(YTVISFormatError, match=f'{results_path}: results\\[1\\].*3 segmentations '
                       'for a video of 4 frames'):
        TrackingEvaluator(str(gt_path)).evaluate(str(results_path))
    del gt['annotations']
    gt_path.write_text(json.dumps(gt))
    with pytest.raises(YTVISFormatError, match=f'{gt_path}: has no annotations'):
        TrackingEvaluator(str(gt_path))


# ---------------------------------------------------------------------------
# Metric and tools
# ---------------------------------------------------------------------------
def swap_case():
    a, b = two_objects()
    return make_gt([a, b], [1, 1]), [prediction(a[:2] + b[2:], 1), prediction(b[:2] + a[2:], 1)]


def test_metric_option_adds_the_identity_metrics(tmp_path):
    gt, results = swap_case()
    path = tmp_path / 'gt.json'
    path.write_text(json.dumps(gt))
    metric = YTVISMetric(ann_file=str(path), tracking_metrics=True)
    metric.process({}, track_samples(gt, results))
    metrics = metric.evaluate(size=0)
    expected = evaluate_tracking(gt, results)
    for name in TRACKING_METRIC_NAMES:
        assert metrics[f'youtube_vis/{name}'] == pytest.approx(expected[name]), name
    assert metrics['youtube_vis/IDSW'] == 2
    assert 'youtube_vis/AP' in metrics
    # Off by default; with a threshold above every score, nothing is predicted.
    metric = YTVISMetric(ann_file=str(path))
    metric.process({}, track_samples(gt, results))
    assert 'youtube_vis/HOTA' not in metric.evaluate(size=0)
    metric = YTVISMetric(ann_file=str(path), tracking_metrics=True, tracking_score_thr=0.95)
    metric.process({}, track_samples(gt, results))
    assert metric.evaluate(size=0)['youtube_vis/DetA'] == 0
    with pytest.raises(ValueError, match='tracking_metrics=True needs the ground truth'):
        YTVISMetric(ann_file=str(path), tracking_metrics=True, format_only=True,
                    outfile_prefix=str(tmp_path))


def test_eval_tool_prints_and_writes_identity_metrics(tmp_path, capsys):
    tool = load_module(EVAL_TOOL, 'eval_ytvis')
    gt, results = swap_case()
    gt_path, results_path = tmp_path / 'gt.json', tmp_path / 'results.json'
    gt_path.write_text(json.dumps(gt))
    results_path.write_text(json.dumps(results))
    out = tmp_path / 'metrics.json'
    assert tool.main([str(gt_path), str(results_path), '--tracking-metrics', '--json',
                      str(out)]) == 0
    printed = capsys.readouterr().out
    assert 'IDF1          50.00' in printed and 'IDSW              2' in printed
    assert 'AP50' in printed
    written = json.loads(out.read_text())
    assert written['IDF1'] == pytest.approx(50) and written['IDSW'] == 2  # a count, not percent
    assert written['HOTA'] == pytest.approx(100 * math.sqrt(1 / 3))
    assert tool.main([str(gt_path), str(results_path), '--json', str(out)]) == 0
    assert 'HOTA' not in json.loads(out.read_text())
    assert tool.main([str(gt_path), str(results_path), '--tracking-metrics',
                      '--tracking-score-thr', '0.95', '--json', str(out)]) == 0
    assert json.loads(out.read_text())['DetA'] == 0
    with pytest.raises(SystemExit):  # a threshold without the metrics it is for
        tool.main([str(gt_path), str(results_path), '--tracking-score-thr', '0.5'])
    assert '--tracking-score-thr needs --tracking-metrics' in capsys.readouterr().err


def test_error_breakdown_prints_identity_metrics(capsys):
    tool = load_module(BREAKDOWN_TOOL, 'vis_error_breakdown')
    gt, results = swap_case()
    result = tool.breakdown(gt, results)
    assert result['identity']['IDF1'] == pytest.approx(50)
    assert result['identity']['IDSW'] == 2
    assert 'IDF1 50.00, ID switches 2' in tool.report(result, 0.5)
    # the format lets a video leave out 'length' (its file names count the frames)
    for video in gt['videos']:
        del video['length']
    assert tool.breakdown(gt, results) == result


# ---------------------------------------------------------------------------
# trackeval's own pipeline on a results file of the toy set
# ---------------------------------------------------------------------------
def perturbed_predictions(gt: dict, seed: int = 0) -> List[dict]:
    """Predictions made from the ground truth: masks shifted, identities swapped between two
    instances from a random frame on, instances lost for some frames, each track also predicted
    with a wrong category at a lower score, and spurious tracks; absent frames hold empty
    masks (as models write them) or None."""
    rng = np.random.default_rng(seed)
    num_categories = len(gt['categories'])
    results = []
    by_video = {}
    for annotation in gt['annotations']:
        by_video.setdefault(annotation['video_id'], []).append(annotation)
    for video in gt['videos']:
        height, width, length = video['height'], video['width'], video['length']
        empty = np.zeros((height, width), bool)
        tracks = []
        for annotation in by_video.get(video['id'], []):
            masks = []
            for segmentation in annotation['segmentations']:
                mask = empty if segmentation is None else mask_utils.decode(
                    segmentation).astype(bool)
                masks.append(np.roll(mask, int(rng.integers(-3, 4)), axis=int(rng.integers(2))))
            lost = rng.integers(length, size=2)
            for t in range(min(lost), max(lost)):
                masks[t] = empty
            tracks.append((masks, annotation['category_id']))
        if len(tracks) >= 2:
            start = int(rng.integers(1, length))
            first, second = tracks[0][0], tracks[1][0]
            first[start:], second[start:] = second[start:], first[start:]
        spurious = np.zeros((height, width), bool)
        spurious[:10, :10] = True
        tracks.append(([spurious if t % 3 else empty for t in range(length)],
                       int(rng.integers(num_categories)) + 1))
        for masks, category in tracks:
            segmentations = [rle_of(m) if m.any() or rng.random() < 0.5 else None
                             for m in masks]
            results.append(dict(video_id=video['id'], category_id=category,
                                score=float(rng.uniform(0.5, 1)), segmentations=segmentations))
            wrong = category % num_categories + 1
            results.append(dict(results[-1], category_id=wrong,
                                score=float(rng.uniform(0, 0.5))))
    return results


def trackeval_pipeline(gt: dict, results: List[dict], root) -> dict:
    """trackeval's own YouTube-VIS evaluation (its folder layout, dataset class and Evaluator)
    of the files; the combined results by category name."""
    split = 'toy'
    gt_dir = root / 'gt' / f'youtube_vis_{split}'
    results_dir = root / 'trackers' / f'youtube_vis_{split}' / 'toy_model' / 'data'
    gt_dir.mkdir(parents=True)
    results_dir.mkdir(parents=True)
    (gt_dir / 'valid.json').write_text(json.dumps(gt))
    (results_dir / 'results.json').write_text(json.dumps(results))
    dataset = trackeval.datasets.YouTubeVIS(dict(
        GT_FOLDER=f'{root}/gt/', TRACKERS_FOLDER=f'{root}/trackers/', SPLIT_TO_EVAL=split,
        OUTPUT_FOLDER=str(root / 'out'), PRINT_CONFIG=False))
    evaluator = trackeval.Evaluator(dict(
        USE_PARALLEL=False, PRINT_RESULTS=False, PRINT_CONFIG=False, TIME_PROGRESS=False,
        OUTPUT_SUMMARY=False, OUTPUT_DETAILED=False, PLOT_CURVES=False, LOG_ON_ERROR=None))
    metrics = [trackeval.metrics.HOTA(), trackeval.metrics.Identity(dict(PRINT_CONFIG=False)),
               trackeval.metrics.CLEAR(dict(PRINT_CONFIG=False))]
    output, messages = evaluator.evaluate([dataset], metrics)
    assert messages['YouTubeVIS']['toy_model'] == 'Success'
    return output['YouTubeVIS']['toy_model']['COMBINED_SEQ']


def for_trackeval(gt: dict, results: List[dict]):
    """The files as trackeval's YouTube-VIS loader reads them: ground truth with uncompressed
    RLEs (it converts them in place; compressed ones fail), results with None for the empty
    masks (it counts any RLE as a detection, we count empty ones as absent)."""
    gt = copy.deepcopy(gt)
    for annotation in gt['annotations']:
        annotation['segmentations'] = [
            rle_of(mask_utils.decode(s), 'list') if s is not None and isinstance(s['counts'], str)
            else s for s in annotation['segmentations']]
    results = copy.deepcopy(results)
    for result in results:
        result['segmentations'] = [
            None if s is None or not mask_utils.area(s) else s for s in result['segmentations']]
    return gt, results


SUMMARY = {'HOTA': ('HOTA', 'HOTA'), 'DetA': ('HOTA', 'DetA'), 'AssA': ('HOTA', 'AssA'),
           'IDF1': ('Identity', 'IDF1')}


def assert_agrees_with_trackeval(gt: dict, results: List[dict], root) -> Tuple[dict, dict]:
    """Our metrics of ``results`` equal those of trackeval's own pipeline on the same files
    (written as its loader reads them); returns ours and the pipeline's combined results."""
    evaluator = TrackingEvaluator(gt)
    ours = evaluator.evaluate(results)
    per_category, _, _ = evaluator.trackeval_results(results)
    theirs = trackeval_pipeline(*for_trackeval(gt, results), root)

    names = {str(c['id']): c['name'] for c in gt['categories']}
    assert set(per_category) == set(names)
    for category, name in names.items():
        for metric in ('HOTA', 'Identity', 'CLEAR'):
            for field, value in per_category[category][metric].items():
                np.testing.assert_allclose(value, theirs[name][metric][field], rtol=1e-12,
                                           err_msg=f'{name} {metric} {field}')
    # The class average is trackeval's over the categories with any detection (all of them in
    # its run script).
    with_data = [name for name in names.values()
                 if theirs[name]['Count']['GT_Dets'] + theirs[name]['Count']['Dets'] > 0]
    for key, (metric, field) in SUMMARY.items():
        assert ours[key] == pytest.approx(
            np.mean([np.mean(theirs[name][metric][field]) for name in with_data]), rel=1e-12)
        if len(with_data) == len(names):
            assert ours[key] == pytest.approx(
                np.mean(theirs['cls_comb_cls_av'][metric][field]), rel=1e-12)
        assert ours[f'{key}_det_av'] == pytest.approx(
            np.mean(theirs['cls_comb_det_av'][metric][field]), rel=1e-12)
    assert ours['IDSW'] == theirs['cls_comb_det_av']['CLEAR']['IDSW']
    return ours, theirs


@pytest.mark.parametrize('case', ['perfect', 'swap', 'categories', 'no_gt_video'])
def test_hand_checked_cases_agree_with_trackevals_pipeline(case, tmp_path):
    a, b = two_objects()
    if case == 'perfect':
        gt = make_gt([a, b, [None, square(5), square(6), None]], [1, 1, 2])
        results = as_predictions(gt)
    elif case == 'swap':
        gt, results = swap_case()
    elif case == 'categories':
        gt = make_gt([a, b], [1, 2])
        results = [prediction(a, 1), prediction(b, 3)]
    else:
        gt = make_gt([a], [1], video_ids=(1, 2))
        results = [prediction(a, 1),
                   prediction([square(3), square(3), None, None], 1, video_id=2)]
    for result in results:  # trackeval's loader reads compressed RLEs as str
        result['segmentations'] = [
            None if s is None else dict(s, counts=s['counts'].decode())
            if isinstance(s['counts'], bytes) else s for s in result['segmentations']]
    ours, theirs = assert_agrees_with_trackeval(gt, results, tmp_path)
    if case == 'perfect':
        # trackeval's run script averages over every category of the file, category 3 too.
        assert ours['HOTA'] == pytest.approx(1)
        assert np.mean(theirs['cls_comb_cls_av']['HOTA']['HOTA']) == pytest.approx(2 / 3)


def test_agrees_with_trackevals_pipeline_on_toy_results(tmp_path):
    paths = make_toy_vis(str(tmp_path / 'toy'), num_videos=1, num_frames=8, seed=3,
                         size=(48, 64), num_val_videos=5)
    with open(paths['valid']) as f:
        gt = json.load(f)
    results = perturbed_predictions(gt)
    results_path = tmp_path / 'results.json'
    results_path.write_text(json.dumps(results))
    ours, _ = assert_agrees_with_trackeval(gt, results, tmp_path / 'trackeval')
    # The same from the files, and the case is not trivial: every category has ground truth,
    # identities switch and detections are partly wrong.
    assert TrackingEvaluator(paths['valid']).evaluate(str(results_path)) == ours
    assert len({a['category_id'] for a in gt['annotations']}) == len(gt['categories'])
    assert ours['IDSW'] > 0
    assert 0.05 < ours['AssA'] < 0.95 and 0.05 < ours['DetA'] < 0.95
