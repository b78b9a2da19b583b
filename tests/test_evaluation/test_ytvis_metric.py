"""ctvis.evaluation.ytvis_metric: YTVISMetric on the model's outputs (process, compute, duplicated
and missing videos, format-only submissions)."""
import json
import logging
import zipfile
from typing import List

import numpy as np
import pytest
from mmengine.logging import MMLogger

from conftest import track_samples
from mmdet.registry import METRICS
from ctvis.evaluation import YTVISMetric
from ctvis.datasets.ytvis_format import YTVISFormatError
from ctvis.evaluation.ytvis_eval import evaluate_ytvis


def float32_scores(results: List[dict]) -> List[dict]:
    """Scores as the model's float32 outputs carry them."""
    return [
        dict(r, score=float(np.float32(r['score']))) for r in results
    ]


def test_metric_process_and_compute(gt_file):
    path, gt, results = gt_file
    metric = METRICS.build(dict(type='YTVISMetric', ann_file=path))
    samples = track_samples(gt, results)
    # The Runner's Evaluator hands metrics the samples as dicts.
    metric.process({}, [s.to_dict() for s in samples[:4]])
    metric.process({}, samples[4:])
    metrics = metric.evaluate(size=len(samples))
    expected = evaluate_ytvis(gt, float32_scores(results))
    assert set(metrics) == {f'youtube_vis/{name}' for name in expected}
    for name, value in expected.items():
        assert metrics[f'youtube_vis/{name}'] == value

    # YouTube-VIS 2022: the split numbers come along.
    metric = YTVISMetric(ann_file=path, long_video_ids=[1, 3])
    metric.process({}, samples)
    metrics = metric.evaluate(size=len(samples))
    expected = evaluate_ytvis(gt, float32_scores(results), [1, 3])
    assert metrics['youtube_vis/AP_2022'] == expected['AP_2022']
    assert metrics['youtube_vis/AP_long'] == expected['AP_long']


def test_metric_rejects_duplicated_videos_and_logs_missing(gt_file):
    path, gt, results = gt_file
    samples = track_samples(gt, results)
    metric = YTVISMetric(ann_file=path)
    metric.process({}, samples + samples[1:2])
    with pytest.raises(ValueError, match=r'videos \[1\] were predicted more'):
        metric.evaluate(size=len(samples))

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    try:
        metric = YTVISMetric(ann_file=path)
        metric.process({}, samples[2:])  # video 1 not predicted
        metrics = metric.evaluate(size=len(samples))
    finally:
        logger.removeHandler(handler)
    assert any('1 of 5 videos' in r.getMessage() for r in records)
    assert metrics['youtube_vis/AP'] < evaluate_ytvis(
        gt, float32_scores(results))['AP']


def test_metric_format_only_writes_submission(gt_file, tmp_path):
    path, gt, results = gt_file
    test_split = dict(gt)
    del test_split['annotations']  # a test split has no annotations
    test_path = tmp_path / 'test_split.json'
    test_path.write_text(json.dumps(test_split))
    out_dir = tmp_path / 'submission'
    metric = YTVISMetric(ann_file=str(test_path), format_only=True,
                         outfile_prefix=str(out_dir))
    metric.process({}, track_samples(gt, results))
    assert metric.evaluate(size=1) == {}
    written = json.loads((out_dir / 'results.json').read_text())
    assert written == float32_scores(
        sorted(results, key=lambda r: r['video_id']))
    with zipfile.ZipFile(out_dir / 'results.zip') as archive:
        assert archive.namelist() == ['results.json']
    # Round trip: the zip evaluates to what the metric reports.
    evaluated = YTVISMetric.evaluate_results(gt, str(out_dir / 'results.zip'))
    assert evaluated == evaluate_ytvis(gt, float32_scores(results))
    with pytest.raises(ValueError, match='outfile_prefix'):
        YTVISMetric(ann_file=path, format_only=True)


def test_unusable_settings_are_refused_before_any_inference(gt_file):
    """A NaN tracking threshold filtered every prediction (HOTA 0, no error); bad long video ids
    failed only after the whole inference, or read 1.7 as video 1."""
    with pytest.raises(ValueError, match='tracking_score_thr must be a finite number or None, '
                       'got nan'):
        YTVISMetric(ann_file=gt_file, tracking_metrics=True, tracking_score_thr=float('nan'))
    for ids, entry in (([1, 'x'], "entry 1 is not a video id: 'x'"),
                       ([1.7], 'entry 0 is not a video id: 1.7')):
        with pytest.raises(YTVISFormatError, match=f'YTVISMetric: long_video_ids: {entry}'):
            YTVISMetric(ann_file=gt_file, long_video_ids=ids)
    assert YTVISMetric(ann_file=gt_file, long_video_ids=(1, )).long_video_ids == [1]
    # format_only computes no metrics: the ids had to name a file that is never used
    with pytest.raises(ValueError, match='long_video_ids split the metrics by video length, '
                       'format_only=True computes no metrics'):
        YTVISMetric(ann_file=gt_file, format_only=True, outfile_prefix='out',
                    long_video_ids='missing.json')


def test_ids_beyond_int64_are_format_errors(tmp_path):
    """They crashed with an OverflowError naming no file."""
    from ctvis.datasets.synthetic.annotations import random_ytvis_set
    gt, _ = random_ytvis_set()
    gt['annotations'][0]['id'] = 2**70
    path = tmp_path / 'gt.json'
    path.write_text(json.dumps(gt))
    with pytest.raises(YTVISFormatError, match=rf"{path}: annotations\[0\] must be a dict with "
                       r"an integer \(64-bit\) 'id'"):
        evaluate_ytvis(str(path), [])
    gt['annotations'][0]['id'] = 2**63 - 1  # the largest that fits
    evaluate_ytvis(gt, [])
