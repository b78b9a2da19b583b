"""ctvis.evaluation.ytvis_eval against mmdet's copy of the official ytvoseval, and the tools that
run it (eval_ytvis.py, benchmark_ytvis_eval.py, vis_error_breakdown.py)."""
import copy
import json
import os.path as osp
import re
import subprocess
import sys
from collections import Counter
from typing import List, Optional

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from ctvis.datasets.synthetic.annotations import box_mask, random_ytvis_set, rle_of
from ctvis.datasets.ytvis_format import YTVISFormatError, load_long_video_ids
from ctvis.evaluation.ytvis_eval import METRIC_NAMES, YTVISEvaluator, evaluate_ytvis, metrics_table

from conftest import REPO, jsonable, load_module, logged_messages
EVAL_TOOL = osp.join(REPO, 'tools', 'analysis_tools', 'eval_ytvis.py')
BENCHMARK_TOOL = osp.join(REPO, 'tools', 'analysis_tools',
                          'benchmark_ytvis_eval.py')
BREAKDOWN_TOOL = osp.join(REPO, 'tools', 'analysis_tools',
                          'vis_error_breakdown.py')
BENCHMARK = load_module(BENCHMARK_TOOL, 'benchmark_ytvis_eval')


# ---------------------------------------------------------------------------
# Tiny deterministic data (random_ytvis_set: ctvis.datasets.synthetic.annotations)
# ---------------------------------------------------------------------------
def reference_eval(gt: dict, results: List[dict], video_ids: Optional[List[int]] = None):
    """mmdet's YTVIS / YTVISeval (ytvoseval) on copies of the inputs, as the benchmark tool runs
    it, on the videos ``video_ids`` only when given."""
    gt, results = copy.deepcopy(gt), copy.deepcopy(results)
    if video_ids is not None:
        keep = set(video_ids)
        gt['videos'] = [v for v in gt['videos'] if v['id'] in keep]
        gt['annotations'] = [a for a in gt['annotations'] if a['video_id'] in keep]
        results = [r for r in results if r['video_id'] in keep]
    return BENCHMARK.reference_ytvis_eval(gt, results)


def single_category_gt(num_frames: int = 2, masks=None) -> dict:
    """One 10x10 video, category 1, with the given per-object frame masks."""
    annotations = []
    for index, frames in enumerate(masks or []):
        annotations.append(
            dict(id=index + 1, video_id=1, category_id=1,
                 segmentations=[rle_of(m) if m is not None else None
                                for m in frames],
                 areas=[float(m.sum()) if m is not None else None
                        for m in frames], iscrowd=0))
    return dict(videos=[dict(id=1, height=10, width=10, length=num_frames)],
                annotations=annotations,
                categories=[dict(id=1, name='thing')])


# ---------------------------------------------------------------------------
# The evaluator
# ---------------------------------------------------------------------------
def test_perfect_predictions_score_one():
    gt, _ = random_ytvis_set()
    for annotation in gt['annotations']:
        # ytvoseval records a match as the annotation id and tests it for
        # truth: a match with annotation id 0 counts as a miss.
        annotation['id'] += 1
    results = []
    for annotation in gt['annotations']:
        if annotation['iscrowd']:
            continue
        height = next(v['height'] for v in gt['videos']
                      if v['id'] == annotation['video_id'])
        width = next(v['width'] for v in gt['videos']
                     if v['id'] == annotation['video_id'])
        segmentations = []
        for segmentation in annotation['segmentations']:
            if isinstance(segmentation, list):  # polygon
                segmentation = mask_utils.merge(
                    mask_utils.frPyObjects(segmentation, height, width))
            elif segmentation is not None and isinstance(
                    segmentation['counts'], list):
                segmentation = mask_utils.frPyObjects(segmentation, height,
                                                      width)
            segmentations.append(segmentation)
        results.append(
            dict(video_id=annotation['video_id'],
                 category_id=annotation['category_id'], score=1.0,
                 segmentations=segmentations))
    metrics = evaluate_ytvis(gt, results)
    for name in ('AP', 'AP50', 'AP75', 'AP_S', 'AR10', 'AR100'):
        assert metrics[name] == 1.0, name


def test_no_predictions_score_zero():
    gt, _ = random_ytvis_set()
    metrics = evaluate_ytvis(gt, [])
    assert metrics['AP'] == 0.0 and metrics['AR100'] == 0.0
    assert metrics['AP_S'] == 0.0


def test_hand_computed_case():
    """Two objects; predictions by score: A (IoU 0.625 with object 1), B
    (no overlap), C (object 2 exactly).

    IoU thresholds .50, .55, .60: TP, FP, TP -> precision 1 up to recall .5,
    2/3 after: AP_t = (51 * 1 + 50 * 2/3) / 101 = 253 / 303.
    Thresholds .65 ... .95 (7 of them): FP, FP, TP -> precision 1/3 up to
    recall .5, 0 after: AP_t = 51 / 3 / 101 = 17 / 101.
    AP = (3 * 253/303 + 7 * 17/101) / 10 = 372 / 1010.
    Recall: 1 at the first three thresholds, .5 at the others -> AR100 =
    .65; with one detection (A) per video: .5 and 0 -> AR1 = .15.
    """
    object_1 = box_mask(10, 10, (0, 0, 4, 2))  # 8 pixels
    object_2 = box_mask(10, 10, (6, 6, 9, 9))
    gt = single_category_gt(2, [[object_1, object_1], [object_2, object_2]])
    partial = box_mask(10, 10, (0, 0, 1, 2))  # 2 of object 1's pixels
    # IoU(A, object 1) = (8 + 2) / (8 + 8) = 0.625
    results = [
        dict(video_id=1, category_id=1, score=0.9,
             segmentations=[rle_of(object_1), rle_of(partial)]),
        dict(video_id=1, category_id=1, score=0.8,
             segmentations=[rle_of(box_mask(10, 10, (5, 0, 8, 3)))] * 2),
        dict(video_id=1, category_id=1, score=0.7,
             segmentations=[rle_of(object_2)] * 2),
    ]
    metrics = evaluate_ytvis(gt, results)
    assert metrics['AP'] == pytest.approx(372 / 1010, abs=1e-12)
    assert metrics['AP50'] == pytest.approx(253 / 303, abs=1e-12)
    assert metrics['AP75'] == pytest.approx(17 / 101, abs=1e-12)
    assert metrics['AR100'] == pytest.approx(0.65, abs=1e-12)
    assert metrics['AR1'] == pytest.approx(0.15, abs=1e-12)
    assert metrics['AP_S'] == metrics['AP']  # all objects are small
    assert metrics['AP_M'] == -1 and metrics['AP_L'] == -1  # none there


def test_equals_ytvoseval_on_random_set():
    gt, results = random_ytvis_set()
    reference = reference_eval(gt, results)
    precision, recall, _ = YTVISEvaluator(gt).accumulate(results)
    np.testing.assert_array_equal(precision, reference.eval['precision'])
    np.testing.assert_array_equal(recall, reference.eval['recall'])
    metrics = evaluate_ytvis(gt, results)
    for index, name in enumerate(METRIC_NAMES):
        assert abs(metrics[name] - reference.stats[index]) <= 1e-6, name
    # The set must exercise matches, misses and every size bin.
    assert 0.05 < metrics['AP'] < 0.95
    assert all(metrics[name] >= 0 for name in ('AP_S', 'AP_M', 'AP_L'))


def test_equals_ytvoseval_on_2022_splits():
    gt, results = random_ytvis_set(seed=5)
    long_ids = [1, 3]
    metrics = evaluate_ytvis(gt, results, long_video_ids=long_ids)
    short = reference_eval(gt, results, [2, 4, 9]).stats
    long = reference_eval(gt, results, long_ids).stats
    for split, stats in (('short', short), ('long', long)):
        for index, name in enumerate(('AP', 'AP50', 'AP75')):
            assert abs(metrics[f'{name}_{split}'] - stats[index]) <= 1e-6
        assert abs(metrics[f'AR1_{split}'] - stats[6]) <= 1e-6
        assert abs(metrics[f'AR10_{split}'] - stats[7]) <= 1e-6
    assert metrics['AP_2022'] == pytest.approx(
        (metrics['AP_short'] + metrics['AP_long']) / 2)
    assert metrics['AP_short'] != metrics['AP_long']


def _malformed(results: List[dict], case: str) -> List[dict]:
    """Return ``results`` broken in one way (see test parameters)."""
    results = copy.deepcopy(results)
    entry = results[1]
    frame = next(i for i, s in enumerate(entry['segmentations']) if s)
    segmentation = entry['segmentations'][frame]
    if case == 'not a list':
        return {'results': results}
    if case == 'missing key':
        del entry['score']
    elif case == 'unknown video':
        entry['video_id'] = 1234
    elif case == 'unknown category':
        entry['category_id'] = 99
    elif case == 'frame count':
        entry['segmentations'].append(None)
    elif case == 'bad score':
        entry['score'] = float('nan')
    elif case == 'size':
        segmentation['size'] = [segmentation['size'][0] + 1,
                                segmentation['size'][1]]
    elif case == 'character':
        segmentation['counts'] = segmentation['counts'][:-1] + ' '
    elif case == 'truncated':
        segmentation['counts'] = segmentation['counts'] + 'P'
    elif case == 'other frame size':  # right size field, wrong run lengths
        height, width = segmentation['size']
        segmentation['counts'] = rle_of(
            box_mask(height, width - 1, (2, 3, 9, 8)))['counts']
    elif case == 'uncompressed sum':
        segmentation['counts'] = [3, 4]
    elif case == 'negative run':  # 'K' encodes -5
        segmentation['counts'] = 'K' + segmentation['counts']
    elif case == 'negative fourth run':  # sums to height*width, pycocotools' area is 2
        # runs h*w - 10, 5, 5, -3, 3: pycocotools' string of the first one, then '55HN' (5, 5,
        # and the differences -3 - 5 and 3 - 5)
        size = segmentation['size']
        first = mask_utils.frPyObjects(dict(size=size, counts=[size[0] * size[1] - 10]), *size)
        segmentation['counts'] = first['counts'].decode() + '55HN'
    elif case == 'not a dict':
        entry['segmentations'][frame] = 'mask'
    return results


@pytest.mark.parametrize('case, message', [
    ('not a list', 'must be a list'),
    ('missing key', 'misses score'),
    ('unknown video', 'video_id 1234 is not a video'),
    ('unknown category', 'category_id 99 is not one of'),
    ('frame count', 'segmentations for a video of'),
    ('bad score', 'score must be a finite number'),
    ('size', 'does not match the video size'),
    ('character', 'invalid character'),
    ('truncated', 'ends inside a number'),
    ('other frame size', 'run lengths cover'),
    ('uncompressed sum', 'uncompressed counts must be'),
    ('negative run', 'a run length is negative'),
    ('negative fourth run', 'a run length is negative (run 3 is -3)'),
    ('not a dict', 'must be an RLE dict'),
])
def test_malformed_results_are_rejected(tmp_path, case, message):
    gt, results = random_ytvis_set()
    path = tmp_path / 'results.json'
    path.write_text(json.dumps(_malformed(jsonable(results), case)))
    with pytest.raises(YTVISFormatError) as error:
        evaluate_ytvis(gt, str(path))
    assert str(path) in str(error.value)
    assert message in str(error.value)
    if case != 'not a list':
        assert 'results[1]' in str(error.value)


def test_long_video_ids_formats(tmp_path):
    for content in ([3, 1], [{'id': 3}, {'id': 1}],
                    {'videos': [{'id': 3}, {'id': 1}]},
                    {'long_video_ids': [3, 1]}):
        path = tmp_path / 'long.json'
        path.write_text(json.dumps(content))
        assert load_long_video_ids(str(path)) == [3, 1]
    path.write_text(json.dumps(['three']))
    with pytest.raises(YTVISFormatError, match="entry 0 is not a video id"):
        load_long_video_ids(str(path))
    gt, results = random_ytvis_set()
    with pytest.raises(YTVISFormatError, match='long video id 77'):
        evaluate_ytvis(gt, results, long_video_ids=[1, 77])


def test_malformed_ground_truth_is_rejected():
    gt, results = random_ytvis_set()
    gt['annotations'][0]['areas'] = gt['annotations'][0]['areas'][:-1]
    with pytest.raises(YTVISFormatError, match=r"annotations\[0\].*'areas'"):
        YTVISEvaluator(gt, gt_name='gt.json')
    gt, results = random_ytvis_set()  # an infinite area would put the track in no area range
    gt['annotations'][0]['areas'] = [a and float('inf') for a in gt['annotations'][0]['areas']]
    with pytest.raises(YTVISFormatError, match=r"annotations\[0\].*'areas' must list one finite"):
        YTVISEvaluator(gt, gt_name='gt.json')
    # An uncompressed RLE of the wrong length, among the annotation's other
    # uncompressed ones (checked all at once).
    gt, results = random_ytvis_set()
    index, annotation = next(
        (i, a) for i, a in enumerate(gt['annotations'])
        if all(isinstance(s, dict) and isinstance(s['counts'], list)
               for s in a['segmentations'] if s is not None))
    frame = next(f for f, s in enumerate(annotation['segmentations']) if s)
    annotation['segmentations'][frame]['counts'].append(1)
    with pytest.raises(YTVISFormatError) as error:
        YTVISEvaluator(gt, gt_name='gt.json')
    assert (f"gt.json: annotations[{index}] (id {annotation['id']}), frame "
            f'{frame}: malformed RLE: uncompressed counts must be'
            ) in str(error.value)


def test_empty_runs_in_uncompressed_rles():
    """Uncompressed RLEs with empty runs inside score as the same masks
    without them (pycocotools' iou loop stops early where both masks have an
    empty run)."""
    gt, results = random_ytvis_set()
    split = copy.deepcopy(gt)
    for annotation in split['annotations']:
        for segmentation in annotation['segmentations']:
            if (isinstance(segmentation, dict)
                    and isinstance(segmentation['counts'], list)
                    and segmentation['counts'][1] >= 2):
                counts = segmentation['counts']
                # The first foreground run in two, and an empty run at the end
                segmentation['counts'] = [counts[0], 1, 0, counts[1] - 1
                                          ] + counts[2:] + [0]

    def with_copies(gt: dict) -> List[dict]:
        """``results`` and a copy of every uncompressed ground-truth track."""
        return results + [
            dict(video_id=a['video_id'], category_id=a['category_id'],
                 score=0.7, segmentations=a['segmentations'])
            for a in gt['annotations']
            if all(isinstance(s, dict) and isinstance(s['counts'], list)
                   for s in a['segmentations'] if s is not None)
        ]

    precision, recall, _ = YTVISEvaluator(gt).accumulate(with_copies(gt))
    split_precision, split_recall, _ = YTVISEvaluator(split).accumulate(
        with_copies(split))
    np.testing.assert_array_equal(split_precision, precision)
    np.testing.assert_array_equal(split_recall, recall)


def box_rle(height: int, width: int, box, kind: str = 'str') -> dict:
    """RLE of a box mask written from its run lengths (for frames too large
    to rasterise)."""
    x1, y1, x2, y2 = box
    runs = [x1 * height + y1]
    for _ in range(x1, x2 - 1):
        runs += [y2 - y1, height - (y2 - y1)]
    runs += [y2 - y1, height * width - sum(runs) - (y2 - y1)]
    if kind == 'list':
        return {'size': [height, width], 'counts': runs}
    rle = mask_utils.frPyObjects({'size': [height, width], 'counts': runs},
                                 height, width)
    return {'size': [height, width], 'counts': rle['counts'].decode()}


def test_frames_too_large_for_one_canvas():
    """20000x20000 frames: only 10 fit side by side on a canvas (uint32 run
    lengths), so a 13-frame video takes two."""
    size, length = 20000, 13
    gt = dict(videos=[dict(id=1, height=size, width=size, length=length)],
              categories=[dict(id=1, name='thing')], annotations=[])
    results = []
    for index, (x, y) in enumerate(((100, 200), (5000, 9000))):
        boxes = [(x + 30 * t, y, x + 30 * t + 400, y + 300 + 10 * t)
                 for t in range(length)]
        gt['annotations'].append(dict(
            id=index + 1, video_id=1, category_id=1, iscrowd=0,
            segmentations=[box_rle(size, size, b, 'list') for b in boxes],
            areas=[float((b[2] - b[0]) * (b[3] - b[1])) for b in boxes]))
        for shift, score in ((20, 0.9), (150, 0.6)):
            results.append(dict(
                video_id=1, category_id=1, score=score - index / 10,
                segmentations=[
                    box_rle(size, size, (b[0] + shift, b[1], b[2] + shift,
                                         b[3])) for b in boxes
                ]))
    reference = reference_eval(gt, results)
    precision, recall, _ = YTVISEvaluator(gt).accumulate(results)
    np.testing.assert_array_equal(precision, reference.eval['precision'])
    np.testing.assert_array_equal(recall, reference.eval['recall'])
    assert 0 < evaluate_ytvis(gt, results)['AP'] < 1


# ---------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------
def test_eval_tool_prints_table_and_writes_json(gt_file, tmp_path):
    path, gt, results = gt_file
    results_path = tmp_path / 'results.json'
    results_path.write_text(json.dumps(results))
    long_path = tmp_path / 'long.json'
    long_path.write_text(json.dumps([1, 3]))
    out = tmp_path / 'metrics.json'
    done = subprocess.run([
        sys.executable, EVAL_TOOL, path,
        str(results_path), '--json',
        str(out), '--long-video-ids',
        str(long_path)
    ], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    expected = evaluate_ytvis(gt, results, long_video_ids=[1, 3])
    assert f"AP50          {expected['AP50'] * 100:.2f}" in done.stdout
    written = json.loads(out.read_text())
    assert set(written) == set(expected)
    for name, value in expected.items():
        assert written[name] == pytest.approx(
            value * 100 if value >= 0 else -1)

    bad = tmp_path / 'bad.json'
    bad.write_text(json.dumps(_malformed(results, 'other frame size')))
    done = subprocess.run([sys.executable, EVAL_TOOL, path, str(bad)],
                          capture_output=True, text=True, cwd=REPO,
                          timeout=120)
    assert done.returncode == 1
    assert 'Traceback' not in done.stderr
    assert f'{bad}: results[1]' in done.stderr


def test_eval_tool_refuses_a_nan_tracking_threshold(capsys):
    """A NaN threshold keeps no prediction (every comparison is false): identity metrics of 0
    that look measured."""
    tool = load_module(EVAL_TOOL, 'eval_ytvis')
    with pytest.raises(SystemExit) as exit_info:
        tool.parse_args(['gt.json', 'results.json', '--tracking-metrics',
                         '--tracking-score-thr', 'nan'])
    assert exit_info.value.code == 2
    assert '--tracking-score-thr must be a finite number, got nan' in capsys.readouterr().err


def test_eval_tool_notes_annotated_videos_without_results(tmp_path, capsys):
    """Scored as missed, as ytvoseval does; a file covering part of the videos passed without a
    remark."""
    gt, mask = one_object_set()
    gt['videos'].append(dict(id=3, height=10, width=10, length=1))
    gt['annotations'].append(dict(gt['annotations'][0], id=2, video_id=3))
    result = dict(video_id=1, category_id=1, score=0.9, segmentations=[rle_of(mask)])
    tool = load_module(EVAL_TOOL, 'eval_ytvis')
    paths = [str(tmp_path / name) for name in ('gt.json', 'part.json', 'all.json')]
    for path, content in zip(paths, (gt, [result], [result, dict(result, video_id=3)])):
        with open(path, 'w') as f:
            json.dump(content, f)
    assert tool.main([paths[0], paths[1]]) == 0
    assert capsys.readouterr().err == (
        f'eval_ytvis: note: {paths[1]}: 1 of the 2 annotated videos have no results (scored as '
        'missed): video ids 3\n')
    assert tool.main([paths[0], paths[2]]) == 0
    assert capsys.readouterr().err == ''


def test_benchmark_tool_agrees_with_ytvoseval():
    benchmark = BENCHMARK
    gt, results = benchmark.make_synthetic_ytvis(num_videos=4, height=72,
                                                 width=96)
    report = benchmark.run_benchmark(gt, results, repeats=1, log=None)
    assert report['stats']['predictions'] >= 40
    assert max(report['max_abs_diff'].values()) == 0
    assert report['max_abs_diff_arrays'] == 0
    assert report['metrics']['AP'] > 0

    # Metric level: mmdet's YouTubeVISMetric on dense masks, ctvis'
    # YTVISMetric on the RLEs our model emits.
    gt, results = benchmark.make_synthetic_ytvis(num_videos=3, height=72,
                                                 width=96)
    report = benchmark.run_metric_benchmark(gt, results, repeats=1, log=None)
    assert max(report['max_abs_diff'].values()) == 0
    assert report['max_abs_diff_arrays'] == 0
    assert 0 < report['metrics']['AP'] < 1
    assert report['mmdet']['encode'] > 0


def crossing_case():
    """Two same-class squares cross (frames 1-2 touch); a third instance, of
    another class, is off frame in frame 1. The results swap the squares'
    identities at the crossing, give the third instance a new track after its
    absence and add a spurious track; every other result mask equals its
    ground truth."""
    height, width, length = 8, 24, 4
    left = [box_mask(height, width, (2 + 4 * t, 1, 6 + 4 * t, 5))
            for t in range(length)]
    right = [box_mask(height, width, (18 - 4 * t, 2, 22 - 4 * t, 6))
             for t in range(length)]
    third = [box_mask(height, width, (20, 6, 23, 8)) if t != 1 else None
             for t in range(length)]
    instances = [(1, left), (1, right), (2, third)]
    gt = dict(videos=[dict(id=1, height=height, width=width, length=length)],
              annotations=[dict(id=i + 1, video_id=1, category_id=category,
                                iscrowd=0,
                                segmentations=[rle_of(m, 'list') if m is not None
                                               else None for m in masks],
                                areas=[float(m.sum()) if m is not None else None
                                       for m in masks])
                           for i, (category, masks) in enumerate(instances)],
              categories=[dict(id=1, name='square'), dict(id=2, name='disc')])
    empty = np.zeros((height, width), bool)

    def track(category, score, masks):
        return dict(video_id=1, category_id=category, score=score,
                    segmentations=[rle_of(m if m is not None else empty)
                                   for m in masks])

    results = [track(1, 0.9, left[:2] + right[2:]),
               track(1, 0.8, right[:2] + left[2:]),
               track(2, 0.7, third[:1] + [None] * 3),
               track(2, 0.6, [None] * 2 + third[2:]),
               track(2, 0.95, [box_mask(height, width, (10, 0, 12, 2))] * 4)]
    return gt, results


def test_error_breakdown_names_switches_and_what_association_costs(tmp_path,
                                                                   capsys):
    tool = load_module(BREAKDOWN_TOOL, 'vis_error_breakdown')
    gt, results = crossing_case()
    result = tool.breakdown(gt, results)
    assert (result['frames'], result['covered_any']) == (11, 11)
    assert result['covered_main'] == 2 + 2 + 2  # each instance, half its frames
    assert result['switches'] == dict(after_absence=1, near_same_class=2,
                                      near_other_class=0, other=0)
    assert result['AP'] < 50  # every track half right
    assert 50 < result['AP_perfect_association'] < 100  # the spurious track
    assert result['AP_one_track_per_instance'] == pytest.approx(100)
    # 4 frames with both squares, 3 with the disc and both squares; in frame 2 the squares'
    # ground-truth masks overlap by 12 of their 16 px, so either one's result covers both
    assert result['merged'] == dict(same_class=(1, 4), other_class=(0, 6))

    gt_path, results_path = tmp_path / 'gt.json', tmp_path / 'results.json'
    gt_path.write_text(json.dumps(gt))
    results_path.write_text(json.dumps(results))
    out = tmp_path / 'breakdown.json'
    assert tool.main([str(gt_path), str(results_path), '--json', str(out)]) == 0
    assert json.loads(out.read_text())['switches']['near_same_class'] == 2
    results[1]['segmentations'][0] = {'size': [8, 24], 'counts': '!!'}
    results_path.write_text(json.dumps(results))
    assert tool.main([str(gt_path), str(results_path)]) == 1
    assert f'{results_path}: results[1]' in capsys.readouterr().err

    # An IoU threshold outside [0, 1) (or NaN) would count every or no frame as covered
    for threshold in ('1.5', '-0.1', 'nan'):
        with pytest.raises(SystemExit):
            tool.parse_args([str(gt_path), str(results_path), '--iou-thr', threshold])
        assert f'--iou-thr must be in [0, 1), got {float(threshold)}' in capsys.readouterr().err
    # Without any ground-truth instance the AP is undefined: n/a (and -1 in the JSON), not -100
    empty = dict(gt, annotations=[])
    gt_path.write_text(json.dumps(empty))
    results_path.write_text(json.dumps(crossing_case()[1]))
    assert tool.main([str(gt_path), str(results_path), '--json', str(out)]) == 0
    assert 'AP as is: n/a\n' in capsys.readouterr().out
    assert json.loads(out.read_text())['AP'] == -1


def test_error_breakdown_counts_instances_one_mask_merges():
    """A result mask merges two instances when it covers at least 30 % of each; pairs are
    counted per frame in which both are visible, same class and other classes apart."""
    tool = load_module(BREAKDOWN_TOOL, 'vis_error_breakdown')
    row = [rle_of(box_mask(1, 20, (0, 0, 10, 1))), rle_of(box_mask(1, 20, (10, 0, 20, 1))),
           None]  # two instances of 10 px side by side; a third, absent from this frame
    counts = Counter()
    tool.count_merges([[rle] for rle in row], [[rle_of(box_mask(1, 20, (7, 0, 13, 1)))]],
                      [1, 1, 2], counts)  # 3 px of each: exactly 30 %
    assert counts == Counter(pairs_same_class=1, merged_same_class=1)
    counts = Counter()
    tool.count_merges([[rle] for rle in row], [[rle_of(box_mask(1, 20, (8, 0, 13, 1)))],
                                               [None]], [1, 2, 2], counts)  # 2 px: 20 %
    assert counts == Counter(pairs_other_class=1)
    counts = Counter()
    tool.count_merges([[rle] for rle in row], [], [1, 1, 1], counts)  # no results at all
    assert counts == Counter(pairs_same_class=1)


def single_frame_case(objects, predictions):
    """10x10, one frame; objects: (annotation id, mask, iscrowd, area field)."""
    gt = dict(videos=[dict(id=1, height=10, width=10, length=1)], categories=[dict(id=1)],
              annotations=[dict(id=i, video_id=1, category_id=1, iscrowd=crowd,
                                segmentations=[rle_of(mask, 'list')], areas=[area])
                           for i, mask, crowd, area in objects])
    results = [dict(video_id=1, category_id=1, score=score, segmentations=[rle_of(mask)])
               for score, mask in predictions]
    return gt, results


def _box(*box):
    return box_mask(10, 10, box)


@pytest.mark.parametrize('objects, predictions', [
    # IoU 1 with a crowd object, 0.75 with a regular one: the regular one wins up to .75
    # (mutant caught: ignore the preference of non-ignored ground truth)
    ([(1, _box(0, 0, 4, 4), 1, 16.), (2, _box(0, 0, 4, 3), 0, 12.)], [(0.9, _box(0, 0, 4, 4))]),
    # equal IoUs: the last object (id 0) wins, and a match with id 0 does not count
    # (mutant caught: first among equals)
    ([(5, _box(0, 0, 4, 4), 0, 16.), (0, _box(0, 0, 4, 4), 0, 16.)], [(0.9, _box(0, 0, 4, 4))]),
    # average areas exactly 128**2 and 256**2 are inside both neighbouring ranges
    # (mutants caught: < -> <= on the low bound, > -> >= on the high bound)
    ([(1, _box(0, 0, 4, 4), 0, 128.**2), (2, _box(5, 5, 9, 9), 0, 256.**2)],
     [(0.9, _box(0, 0, 4, 4)), (0.8, _box(5, 5, 9, 9))]),
    # a crowd object stays free for later predictions (mutant caught: crowd taken once)
    ([(1, _box(0, 0, 4, 4), 1, 16.), (2, _box(5, 5, 9, 9), 0, 16.)],
     [(0.9, _box(0, 0, 4, 4)), (0.8, _box(0, 0, 4, 4)), (0.7, _box(5, 5, 9, 9))]),
    # IoU exactly 1/2 where 3 sum_f min(|P_f|, |G_f|) == |P| + |G| (mutant caught: >= -> > in the
    # pruning bound)
    ([(1, _box(0, 0, 2, 2), 0, 4.)], [(0.9, _box(0, 0, 1, 2))]),
])
def test_matching_rules_equal_ytvoseval(objects, predictions):
    gt, results = single_frame_case(objects, predictions)
    reference = reference_eval(gt, results)
    precision, recall, _ = YTVISEvaluator(gt).accumulate(results)
    np.testing.assert_array_equal(precision, reference.eval['precision'])
    np.testing.assert_array_equal(recall, reference.eval['recall'])


def test_annotation_id_zero_is_scored_as_ytvoseval_and_warned_about():
    """ytvoseval never counts a match with annotation id 0; the evaluator reproduces that and says
    so, naming the file and the annotation (mutant caught: no warning)."""
    gt, results = single_frame_case([(0, _box(0, 0, 4, 4), 0, 16.)], [(0.9, _box(0, 0, 4, 4))])
    with logged_messages() as messages:
        precision, _, _ = YTVISEvaluator(gt, 'gt.json').accumulate(results)
    assert precision.max() <= 0  # the perfect prediction is no true positive
    assert any(m.startswith('gt.json: annotations[0] (id 0): ytvoseval, and so this evaluator, '
                            'which reproduces it, never counts a match with annotation id 0')
               for m in messages), messages
    gt['annotations'][0]['id'] = 1
    with logged_messages() as messages:
        precision, _, _ = YTVISEvaluator(gt, 'gt.json').accumulate(results)
    assert precision.max() == pytest.approx(1) and not messages


@pytest.mark.parametrize('polygon, problem', [
    ([0, 0, 4, 4], 'polygon has 4 coordinates, expected an even number >= 6'),  # read as a box
    ([0, 0, 4, 4, 'x', 2], 'polygon coordinates contain non-numbers'),
    ([0, 0, 4, 4, float('inf'), 2], 'polygon coordinates are not finite'),
])
def test_unusable_ground_truth_polygons_are_named(polygon, problem):
    """The dataset and the evaluator share the polygon rules; pycocotools read a 4-number polygon
    as a box, or failed with its internals ("Argument 'bb' has incorrect type")."""
    gt, _ = single_frame_case([(1, _box(0, 0, 4, 4), 0, 16.)], [])
    gt['annotations'][0]['segmentations'] = [[polygon]]
    with pytest.raises(YTVISFormatError, match=re.escape(problem)):
        YTVISEvaluator(gt, 'gt.json')
    gt['annotations'][0]['segmentations'] = [[[0, 0, 4, 0, 4, 4]]]
    YTVISEvaluator(gt, 'gt.json')


def test_identical_masks_with_empty_runs_score_as_identical():
    """pycocotools' IoU walk stops where both RLEs reach an empty run: two identical masks
    written with one (compressed or not) scored IoU 0, AP 0 and HOTA 70 for perfect predictions.
    Such masks are re-encoded canonically first (mutants caught: no re-encoding in the AP path,
    none in the identity metrics' path)."""
    from ctvis.evaluation.tracking_metrics import evaluate_tracking
    gt, _ = random_ytvis_set()
    for annotation in gt['annotations']:
        annotation['id'] += 1  # ytvoseval: a match with id 0 never counts
        annotation['iscrowd'] = 0
        video = next(v for v in gt['videos'] if v['id'] == annotation['video_id'])
        h, w = video['height'], video['width']
        segmentations = []
        for segmentation in annotation['segmentations']:
            if segmentation is None:
                segmentations.append(None)
                continue
            if isinstance(segmentation, list) or isinstance(segmentation['counts'], list):
                segmentation = mask_utils.merge(mask_utils.frPyObjects(
                    segmentation if isinstance(segmentation, list) else [segmentation], h, w))
            column = mask_utils.decode(dict(segmentation, size=[h, w])).ravel(order='F')
            edges = np.concatenate([[0], np.flatnonzero(np.diff(column)) + 1, [len(column)]])
            runs = ([0] if column[0] else []) + np.diff(edges).tolist()
            if runs[0] < 2:
                segmentations.append(dict(size=[h, w], counts=runs))
                continue
            # the first background run split in two: the walk stops before any foreground
            runs = [runs[0] // 2, 0, runs[0] - runs[0] // 2] + runs[1:]
            compressed = mask_utils.frPyObjects(dict(size=[h, w], counts=runs), h, w)['counts']
            segmentations.append(dict(size=[h, w], counts=compressed.decode()))
        annotation['segmentations'] = segmentations
        annotation['areas'] = [None if s is None else float(mask_utils.area(
            mask_utils.frPyObjects(s, *s['size']) if isinstance(s['counts'], list) else s))
            for s in segmentations]
    assert any(isinstance(s, dict) and isinstance(s['counts'], str)
               for a in gt['annotations'] for s in a['segmentations'])
    results = [dict(video_id=a['video_id'], category_id=a['category_id'], score=0.9,
                    segmentations=a['segmentations']) for a in gt['annotations']]
    metrics = evaluate_ytvis(gt, results)
    assert metrics['AP'] == pytest.approx(1) and metrics['AR10'] == pytest.approx(1)
    tracking = evaluate_tracking(gt, results)
    assert tracking['HOTA'] == pytest.approx(1) and tracking['IDF1'] == pytest.approx(1)


def one_object_set():
    """Video 1 holds one object (a 4x4 square); video 2, the same size, none."""
    mask = np.zeros((10, 10), np.uint8)
    mask[2:6, 2:6] = 1
    gt = dict(videos=[dict(id=1, height=10, width=10, length=1),
                      dict(id=2, height=10, width=10, length=1)],
              annotations=[dict(id=1, video_id=1, category_id=1, segmentations=[rle_of(mask)],
                                areas=[16.0], iscrowd=0)],
              categories=[dict(id=1, name='thing')])
    return gt, mask


def test_only_the_top_100_predictions_of_a_video_and_category_count():
    gt, mask = one_object_set()
    wrong = np.zeros((10, 10), np.uint8)
    wrong[7:9, 7:9] = 1
    results = [dict(video_id=1, category_id=1, score=1.0 - k / 1000,
                    segmentations=[rle_of(wrong)]) for k in range(100)]
    results.append(dict(video_id=1, category_id=1, score=0.5, segmentations=[rle_of(mask)]))
    metrics = evaluate_ytvis(gt, results)
    assert metrics['AR100'] == 0 and metrics['AP'] == 0  # the 101st, the hit, is cut (ytvoseval)
    assert evaluate_ytvis(gt, results[1:])['AR100'] == 1  # as the 100th it counts


def test_ap_2022_is_undefined_when_a_split_is_and_zero_prints_as_a_number():
    gt, mask = one_object_set()
    results = [dict(video_id=1, category_id=1, score=0.9, segmentations=[rle_of(mask)])]
    metrics = evaluate_ytvis(gt, results, long_video_ids=[1])  # the short video holds nothing
    assert metrics['AP_long'] > 0.99 and metrics['AP_short'] == -1 and metrics['AP_2022'] == -1
    lines = metrics_table({'AP': 0.0, 'AR1': -1.0}).splitlines()
    assert lines[-2].split() == ['AP', '0.00'] and lines[-1].split() == ['AR1', 'n/a']
