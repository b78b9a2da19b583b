"""tools/analysis_tools/tracker_sweep.py: tracker settings replayed over cached candidates give
exactly what real test runs with those settings give."""
import json
import os.path as osp
import re

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

from ctvis.models import CTVISTracker, RandomIdentityTracker
from ctvis.utils import ConfigError
from mmdet.registry import MODELS
from conftest import REPO, load_module

tool = load_module(osp.join(REPO, 'tools', 'analysis_tools', 'tracker_sweep.py'),
                   'tracker_sweep')
test_tool = load_module(osp.join(REPO, 'tools', 'test.py'), 'ctvis_test_for_sweep')
CONFIG = osp.join(REPO, 'configs', 'ctvis', 'ctvis_quickstart.py')


def test_swept_values_and_grid():
    sweep = tool.parse_sweep(['score_thr=0.1, 0.3', 'match_metric=bisoftmax,det2track',
                              'frame_weight=true,False', 'max_per_video=None,5'])
    assert sweep == dict(score_thr=[0.1, 0.3], match_metric=['bisoftmax', 'det2track'],
                         frame_weight=[True, False], max_per_video=[None, 5])
    grid = tool.settings_grid(dict(a=[1, 2], b=['x', 'y', 'z']))
    assert grid[:4] == [dict(a=1, b='x'), dict(a=1, b='y'), dict(a=1, b='z'), dict(a=2, b='x')]
    assert len(grid) == 6
    assert tool.settings_grid({}) == [{}]  # no --set: the config's own setting alone
    for bad, message in [('score_thr', 'expected KEY=VALUE'), ('score_thr=0.1,', 'empty value'),
                         ('=0.1', 'expected KEY=VALUE')]:
        with pytest.raises(ValueError, match=message):
            tool.parse_sweep([bad])
    with pytest.raises(ValueError, match='given twice'):
        tool.parse_sweep(['score_thr=0.1', 'score_thr=0.2'])


def test_sweepable_keys_are_the_trackers_arguments():
    arguments = tool.tracker_arguments(CTVISTracker)
    assert 'num_classes' not in arguments
    assert {'score_thr', 'init_score_thr', 'mask_nms_thr', 'match_score_thr', 'frame_weight',
            'suppress_frame_num'} <= set(arguments)
    assert arguments['score_thr'] == 0.01 and arguments['frame_weight'] is True
    # a subclass taking **kwargs: its own arguments and its base's, with their defaults
    assert tool.tracker_arguments(RandomIdentityTracker) == dict(seed=0, **arguments)
    cfg = dict(type='CTVISTracker', num_classes=4, score_thr=0.3)
    tool.check_sweep(dict(score_thr=[0.1, 1], frame_weight=[False], match_metric=['det2track'],
                          max_per_video=[5, None]), cfg, CTVISTracker, 'c.py')
    with pytest.raises(ConfigError, match=r'c.py: --set score_threshold: not an argument of '
                       r'CTVISTracker nor a model key; sweepable: score_thr, '):
        tool.check_sweep(dict(score_threshold=[0.1]), cfg, CTVISTracker, 'c.py')
    for key, value, default in [('score_thr', 'high', '0.01'), ('frame_weight', 1, 'True'),
                                ('max_per_video', 'all', '1'), ('num_dead_frames', True, '20')]:
        with pytest.raises(ConfigError, match=rf'--set {key}={value!r}: expected a value like '
                           rf'the default {default}'):
            tool.check_sweep({key: [value]}, cfg, CTVISTracker, 'c.py')
    with pytest.raises(ConfigError, match=r"--set \{'match_metric': 'cosine'\}: CTVISTracker "
                       r"refuses it: match_metric must be"):
        tool.check_sweep(dict(match_metric=['bisoftmax', 'cosine']), cfg, CTVISTracker, 'c.py')
    # values of the right kind out of range: refused before the network runs (they passed, and
    # the replay crashed after the whole network pass)
    with pytest.raises(ConfigError, match=r"--set \{'max_cache': 0\}: CTVISTracker refuses it: "
                       r'CTVISTracker: max_cache must be a whole number >= 1, got 0'):
        tool.check_sweep(dict(max_cache=[10, 0]), cfg, CTVISTracker, 'c.py')
    for value in (0, -1):
        with pytest.raises(ConfigError, match=rf'--set max_per_video={value}: must be a whole '
                           r'number >= 1'):
            tool.check_sweep(dict(max_per_video=[value]), cfg, CTVISTracker, 'c.py')


@pytest.fixture(scope='module')
def sweep_case(small_toy_root, tmp_path_factory):
    """Quickstart weights as initialised, with 10 queries and without the position prior (the
    case was set on those; the prior's layer and more queries shift the random stream), class
    logits doubled so that query scores spread over 0.57-0.86 (10th to 90th percentile) on the
    small toy videos."""
    init_default_scope('mmdet')
    torch.manual_seed(0)
    case_model = {'model.track_head.position_prior': False,  # for the weights and the tool
                  'model.track_head.num_queries': 10}
    config = Config.fromfile(CONFIG)
    config.merge_from_dict(case_model)
    model = MODELS.build(config.model)
    model.init_weights()
    with torch.no_grad():
        model.track_head.cls_embed.weight.mul_(2)
    path = str(tmp_path_factory.mktemp('sweep') / 'weights.pth')
    torch.save(dict(state_dict=model.state_dict()), path)
    data = ['test_dataloader.dataset.data_root=' + small_toy_root + '/',
            f'test_evaluator.ann_file={small_toy_root}/valid.json',
            *(f'{key}={value}' for key, value in case_model.items())]
    return path, data


def test_replayed_settings_equal_real_runs(sweep_case, tmp_path, monkeypatch, capsys):
    checkpoint, data = sweep_case
    replays = []
    replay = tool.replay

    def recorded(videos, tracker_cfg, max_per_video, category_ids):
        results = replay(videos, tracker_cfg, max_per_video, category_ids)
        replays.append((dict(tracker_cfg), max_per_video, results))
        return results

    monkeypatch.setattr(tool, 'replay', recorded)
    table = tmp_path / 'sweep.json'
    # the cache holds the queries above 0.75 (the config's threshold here, the lowest); at 0.95
    # no query passes in any frame and the tracker falls back to each frame's best one
    rows = tool.main([CONFIG, checkpoint, '--set', 'score_thr=0.8,0.95', '--set',
                      'mask_nms_thr=0.05,0.6', '--set', 'max_per_video=3,10', '--out', str(table),
                      '--work-dir', str(tmp_path / 'sweep'), '--cfg-options', *data,
                      'model.tracker.score_thr=0.75'])
    cached, frames = map(int, re.search(r'cached (\d+) candidates of (\d+) frames',
                                        capsys.readouterr().out).groups())
    assert frames == 18 and 18 < cached < 10 * 18  # a subset of the 10 queries per frame
    assert len(rows) == 8 and json.loads(table.read_text()) == rows
    assert not any(r['config'] for r in rows)  # the config's 0.75 is not swept
    assert len(replays) == 9  # the config's own settings first, as the check
    by_setting = {(cfg['score_thr'], cfg['mask_nms_thr'], k): results
                  for cfg, k, results in replays[1:]}
    base = by_setting[0.8, 0.6, 10]  # each swept key changes the results from here
    for other in [(0.95, 0.6, 10), (0.8, 0.05, 10), (0.8, 0.6, 3)]:
        assert by_setting[other] != base, other
    for score_thr, mask_nms_thr, max_per_video in [(0.8, 0.6, 10), (0.95, 0.05, 10)]:
        out = tmp_path / f'real_{score_thr}.json'
        test_tool.main([CONFIG, checkpoint, '--work-dir', str(tmp_path / 'work'), '--out',
                        str(out), '--cfg-options', *data,
                        f'model.tracker.score_thr={score_thr}',
                        f'model.tracker.mask_nms_thr={mask_nms_thr}',
                        f'model.test_cfg.max_per_video={max_per_video}'])
        real = json.loads(out.read_text())
        assert real, 'the real run should predict something'
        assert json.loads(json.dumps(by_setting[score_thr, mask_nms_thr, max_per_video])) == real


def test_half_precision_network_outputs_replay_in_float32(sweep_case, tmp_path, monkeypatch):
    """The zoo configs test under fp16 autocast on CUDA: the network's outputs are fp16, which
    CTVIS.track_frame tracks in float32; the cache kept them in fp16, so the replay of the
    config's own settings differed and the sweep refused to run. Emulated on the CPU."""
    from ctvis.models.ctvis import CTVIS
    detect = CTVIS.detect
    monkeypatch.setattr(CTVIS, 'detect',
                        lambda self, frames: tuple(t.half() for t in detect(self, frames)))
    checkpoint, data = sweep_case
    rows = tool.main([CONFIG, checkpoint, '--set', 'score_thr=0.8', '--work-dir',
                      str(tmp_path / 'sweep'), '--cfg-options', *data,
                      'model.tracker.score_thr=0.75'])
    assert len(rows) == 1 and rows[0]['AP'] >= 0


def test_each_frames_best_query_is_cached_when_none_passes(sweep_case, tmp_path, capsys):
    """No query scores above 0.99: the cache holds each frame's best query alone, and the check
    against the test run (which keeps those) passes."""
    checkpoint, data = sweep_case
    tool.main([CONFIG, checkpoint, '--set', 'score_thr=0.995', '--work-dir', str(tmp_path),
               '--cfg-options', *data, 'model.tracker.score_thr=0.99'])
    assert 'cached 18 candidates of 18 frames' in capsys.readouterr().out


def test_motion_settings_replay_as_real_runs(sweep_case, tmp_path, monkeypatch):
    """The motion cue reads the cached mask centroids and areas: a sweep of its weight replays
    what real runs give (the weight changes the tracks here)."""
    checkpoint, data = sweep_case
    replays = {}
    replay = tool.replay

    def recorded(videos, tracker_cfg, max_per_video, category_ids):
        results = replay(videos, tracker_cfg, max_per_video, category_ids)
        replays[tracker_cfg['motion_weight']] = results
        return results

    monkeypatch.setattr(tool, 'replay', recorded)
    options = [*data, 'model.tracker.score_thr=0.75']
    tool.main([CONFIG, checkpoint, '--set', 'motion_weight=0,1.0', '--work-dir',
               str(tmp_path / 'sweep'), '--cfg-options', *options])
    assert replays[0] != replays[1.0]
    out = tmp_path / 'real.json'
    test_tool.main([CONFIG, checkpoint, '--work-dir', str(tmp_path / 'work'), '--out', str(out),
                    '--cfg-options', *options, 'model.tracker.motion_weight=1.0'])
    assert json.loads(json.dumps(replays[1.0])) == json.loads(out.read_text())


def test_config_row_is_marked_and_a_broken_cache_is_refused(sweep_case, tmp_path, monkeypatch,
                                                            capsys):
    checkpoint, data = sweep_case[0], ['--work-dir', str(tmp_path), '--cfg-options', *sweep_case[1]]
    rows = tool.main([CONFIG, checkpoint, '--set', 'score_thr=0.8,0.3', *data])
    assert [(r['score_thr'], r['config']) for r in rows] == [(0.8, False), (0.3, True)]
    # untrained weights: AP 0 everywhere, and the tie goes to the config's setting
    assert rows[0]['AP'] == rows[1]['AP'] == 0
    assert 'best AP 0.00: --cfg-options model.tracker.score_thr=0.3\n' in capsys.readouterr().out
    # a cache that loses candidates the tracker used cannot pass the check against the test run
    record = tool.CandidateCache.record

    def lossy(self, meta, logits, mask_logits, embeds):
        record(self, meta, logits, mask_logits, embeds)
        frame = self.videos[-1][1][-1]
        if len(frame.rles) > 1:
            keep = list(range(1, len(frame.rles)))
            frame.logits, frame.embeds = frame.logits[keep], frame.embeds[keep]
            frame.mask_ious, frame.geometry = frame.mask_ious[keep][:, keep], frame.geometry[keep]
            frame.rles = [frame.rles[k] for k in keep]
            frame.score_num, frame.score_den = frame.score_num[keep], frame.score_den[keep]

    monkeypatch.setattr(tool.CandidateCache, 'record', lossy)
    with pytest.raises(RuntimeError, match='did not give the test run.s results'):
        tool.main([CONFIG, checkpoint, '--set', 'score_thr=0.8', *data])


def test_cli_refusals(sweep_case, tmp_path, capsys):
    checkpoint, data = sweep_case[0], ['--work-dir', str(tmp_path), '--cfg-options', *sweep_case[1]]
    with pytest.raises(SystemExit, match='not an argument of CTVISTracker'):
        tool.main([CONFIG, checkpoint, '--set', 'iou_thr=0.5', *data])
    with pytest.raises(SystemExit):
        tool.main([CONFIG, checkpoint, '--out', 'table.txt'])
    assert '.csv or .json' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        tool.main([CONFIG, checkpoint, '--set', 'score_thr=0.1', '--set', 'score_thr=0.2'])
    assert 'given twice' in capsys.readouterr().err
    with pytest.raises(SystemExit, match='replays a CTVISTracker'):
        tool.main([CONFIG, checkpoint, *data, 'model.tracker.type=MinVISTracker'])
