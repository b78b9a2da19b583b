"""The whole CTVIS stack through the tools: toy data -> train -> validate -> 2-process test -> demo.

Real components only: the toy generator, YTVISDataset with its pipelines, the CTVIS model, the
tracker, YTVISMetric, tools/train.py, tools/dist_test.sh (2 gloo processes) and the video demo.
"""
import json
import os
import os.path as osp
import sys
from collections import Counter

import cv2
import pytest
from mmengine.registry import DefaultScope

from conftest import REPO, free_port, load_module, run_in_repo
from mmdet.registry import DATASETS

CONFIG = osp.join(REPO, 'tests', 'data', 'configs', 'ctvis_toy_e2e.py')


@pytest.fixture(scope='module')
def trained(small_toy_root, tmp_path_factory):
    """Trained on the toy data given as ``--cfg-options data_root=...``; the config's own
    data_root (from $CTVIS_TOY_DATA) names a folder that does not exist."""
    work_dir = str(tmp_path_factory.mktemp('e2e_train'))
    result = run_in_repo([sys.executable, 'tools/train.py', CONFIG, '--work-dir', work_dir,
                          '--cfg-options', f'data_root={small_toy_root}/'],
                         osp.join(work_dir, 'absent'))
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    return dict(work_dir=work_dir, log=log, checkpoint=osp.join(work_dir, 'iter_2.pth'))


def test_train_and_validate(trained, small_toy_root):
    assert 'Iter(train) [2/2]' in trained['log'] and 'loss_reid' in trained['log']
    assert osp.isfile(trained['checkpoint'])
    assert 'youtube_vis/AP' in trained['log']  # validation ran the YouTube-VIS metric
    # the override reached every path built from data_root, the evaluator's included
    dumped = open(osp.join(trained['work_dir'], 'ctvis_toy_e2e.py')).read()
    assert 'absent' not in dumped and f"ann_file='{small_toy_root}/valid.json'" in dumped


def test_data_root_and_classes_overrides_reach_every_use(small_toy_root, tmp_path, monkeypatch):
    """``data_root`` and ``classes`` are config variables that other values are computed from
    when the config is read; overriding them re-reads the config, so datasets, evaluators,
    class counts and the built datasets follow."""
    monkeypatch.delenv('CTVIS_TOY_DATA', raising=False)  # the config's data_root: data/toy_vis/
    train = load_module(osp.join(REPO, 'tools', 'train.py'), 'ctvis_tool_train_e2e')
    cfg = train.configure_training(train.parse_args(
        [CONFIG, '--cfg-options', f'data_root={small_toy_root}/', 'classes=[ring,disc]']))
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        assert cfg[loader].dataset.data_root == small_toy_root + '/'
        assert tuple(cfg[loader].dataset.metainfo.classes) == ('ring', 'disc')
    for evaluator in ('val_evaluator', 'test_evaluator'):
        assert cfg[evaluator].ann_file == f'{small_toy_root}/valid.json'
    head = cfg.model.track_head
    assert head.num_things_classes == 2 and cfg.model.tracker.num_classes == 2
    assert len(head.loss_cls.class_weight) == 3  # num_classes + the no-object class
    # a new root inside the old one: its paths start with the old root too, and are fine
    cfg = train.configure_training(train.parse_args(
        [CONFIG, '--cfg-options', 'data_root=data/toy_vis/v2/']))
    assert cfg.test_evaluator.ann_file == 'data/toy_vis/v2/valid.json'

    # own data with other class names: the built dataset takes them (the config's would not
    # match its categories)
    renamed = ['w', 'x', 'y', 'z']
    root = tmp_path / 'renamed'
    root.mkdir()
    os.symlink(osp.join(small_toy_root, 'JPEGImages'), root / 'JPEGImages')
    with open(osp.join(small_toy_root, 'train.json')) as f:
        content = json.load(f)
    for category, name in zip(sorted(content['categories'], key=lambda c: c['id']), renamed):
        category['name'] = name
    (root / 'train.json').write_text(json.dumps(content))
    cfg = train.configure_training(train.parse_args(
        [CONFIG, '--cfg-options', f'data_root={root}/', f'classes={renamed}'.replace("'", '')]))
    with DefaultScope.overwrite_default_scope('mmdet'):
        dataset = DATASETS.build(cfg.train_dataloader.dataset)
    assert dataset.metainfo['classes'] == tuple(renamed) and len(dataset) == 4

    # a path written out under the old data_root instead of built from it: refused, named
    stale = tmp_path / 'stale.py'
    stale.write_text(f"_base_ = '{CONFIG}'\n"
                     "val_evaluator = dict(ann_file='data/toy_vis/valid.json')\n")
    with pytest.raises(train.ConfigError, match=r"still hold the old one .*"
                       r"val_evaluator\.ann_file='data/toy_vis/valid\.json'"):
        train.configure_training(train.parse_args(
            [str(stale), '--cfg-options', f'data_root={small_toy_root}/']))
    cfg = train.configure_training(train.parse_args(
        [str(stale), '--cfg-options', f'data_root={small_toy_root}/',
         f'val_evaluator.ann_file={small_toy_root}/valid.json']))
    assert cfg.val_evaluator.ann_file == f'{small_toy_root}/valid.json'
    cfg = train.configure_training(train.parse_args(  # kept under the old root on purpose
        [str(stale), '--cfg-options', f'data_root={small_toy_root}/',
         'val_evaluator.ann_file=data/toy_vis/valid.json']))
    assert cfg.val_evaluator.ann_file == 'data/toy_vis/valid.json'


def test_an_edit_inside_a_config_variable_reaches_its_copies(small_toy_root, monkeypatch):
    """``train_pipeline.0.frame_range=2`` edits a variable that the config copied into the
    training dataloader when it was read: the config is re-read with the edited variable, so the
    run uses it (merging into the variable alone left the run unchanged, silently)."""
    monkeypatch.setenv('CTVIS_TOY_DATA', small_toy_root + '/')
    train = load_module(osp.join(REPO, 'tools', 'train.py'), 'ctvis_tool_train_e2e')
    cfg = train.configure_training(train.parse_args(
        [CONFIG, '--cfg-options', 'train_pipeline.0.frame_range=2',
         'train_pipeline.1.transforms.2.prob=0.0']))
    sampling, broadcaster = cfg.train_dataloader.dataset.pipeline[:2]
    assert (sampling.type, sampling.frame_range, sampling.num_frames) == ('VideoClipSample', 2, 3)
    assert broadcaster.transforms[2] == dict(type='RandomFlip', prob=0.0)
    assert cfg.train_pipeline[0].frame_range == 2
    with pytest.raises(train.ConfigError, match=r"'frame_rnage' is not in 'train_pipeline\.0' "
                       r"\(did you mean 'frame_range'\?\)"):
        train.configure_training(train.parse_args(
            [CONFIG, '--cfg-options', 'train_pipeline.0.frame_rnage=2']))
    # the whole variable and a key inside it (mmengine's merge of both failed)
    whole = '[dict(type=VideoClipSample,num_frames=3),dict(type=PackTrackInputs)]'
    cfg = train.configure_training(train.parse_args(
        [CONFIG, '--cfg-options', f'train_pipeline={whole}', '+train_pipeline.0.frame_range=3']))
    assert cfg.train_dataloader.dataset.pipeline == [
        dict(type='VideoClipSample', num_frames=3, frame_range=3), dict(type='PackTrackInputs')]
    with pytest.raises(train.ConfigError, match=r"'frame_range' is not in 'train_pipeline\.0'.*"
                       r"write '\+train_pipeline\.0\.frame_range=\.\.\.'"):  # not in the new value
        train.configure_training(train.parse_args(
            [CONFIG, '--cfg-options', f'train_pipeline={whole}', 'train_pipeline.0.frame_range=3']))
    cfg = train.configure_training(train.parse_args(  # a key only the whole value has
        [CONFIG, '--cfg-options', 'train_pipeline=[dict(type=VideoClipSample,num_frames=3,x=1)]',
         'train_pipeline.0.x=2']))
    assert cfg.train_dataloader.dataset.pipeline[0].x == 2
    cfg = train.configure_training(train.parse_args(  # a new key inside, on purpose
        [CONFIG, '--cfg-options', '+train_pipeline.0.extra=1']))
    assert cfg.train_dataloader.dataset.pipeline[0].extra == 1
    with pytest.raises(train.ConfigError, match=r"'frame_rnage' is not in 'train_pipeline\.0'"):
        train.configure_training(train.parse_args(
            [CONFIG, '--cfg-options', f'train_pipeline={whole}',
             'train_pipeline.0.frame_rnage=3']))


@pytest.mark.parametrize('option, message', [
    ('frame_range', "'frame_range' is not KEY=VALUE"),
    ('a=[(1,2)', "cannot parse 'a=[(1,2)'"),
    ('a=[dict(type=X,n=1)', "cannot parse 'a=[dict(type=X,n=1)'"),
    ('a=dict(path=/data/x)', 'quote every string'),
    ('a=dict(n=len([1]))', "'len([1])' is not a value"),
    ('a=dict(**b)', "'dict(**b)' is not a value"),
    ('a=[{x},2]', "'{x}' is not a value"),
])
def test_an_unparsable_cfg_option_is_a_usage_error(option, message, capsys):
    """mmengine's parser raised ValueError, AssertionError or RecursionError (a comma inside
    ``dict(...)``) with a traceback; the tools stop with the option named instead."""
    train = load_module(osp.join(REPO, 'tools', 'train.py'), 'ctvis_tool_train_e2e')
    with pytest.raises(SystemExit) as exit_info:
        train.parse_args([CONFIG, '--cfg-options', 'a=1', option])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert 'error: --cfg-options: ' in error and message in error and 'Traceback' not in error


def test_cfg_option_values_with_dicts(small_toy_root, monkeypatch):
    """``vis_backends=[dict(type=A),dict(type=B)]`` (docs/user_guide.md): mmengine's parser kept
    such dicts as strings (or failed on a comma inside one); they are parsed as dicts, the rest
    as before, and the variable reaches the visualizer that the config built from it."""
    monkeypatch.setenv('CTVIS_TOY_DATA', small_toy_root + '/')
    train = load_module(osp.join(REPO, 'tools', 'train.py'), 'ctvis_tool_train_e2e')
    args = train.parse_args([
        CONFIG, '--cfg-options', 'a=1', 'b=[1,(2,-3.5),x,true,None]', 'd={}.jpg',
        "c={'k': [dict(type=X,n=-2,flag=false,none=None)], 'p': '/data/x y/'}",
        "vis_backends=[dict(type='LocalVisBackend'),dict(type=LocalVisBackend,save_dir=v)]"])
    options = dict(args.cfg_options)
    assert options.pop('vis_backends') == [dict(type='LocalVisBackend'),
                                           dict(type='LocalVisBackend', save_dir='v')]
    assert options == {'a': 1, 'b': [1, (2, -3.5), 'x', True, None], 'd': '{}.jpg',
                       'c': {'k': [dict(type='X', n=-2, flag=False, none=None)], 'p': '/data/x y/'}}
    cfg = train.configure_training(train.parse_args([
        CONFIG, '--cfg-options',
        "vis_backends=[dict(type='LocalVisBackend'),dict(type=LocalVisBackend,save_dir=v)]"]))
    assert cfg.visualizer.vis_backends == [dict(type='LocalVisBackend'),
                                           dict(type='LocalVisBackend', save_dir='v')]


def test_two_process_test_covers_every_video_once(trained, small_toy_root, tmp_path, loopback_gloo):
    out = tmp_path / 'results.json'
    result = run_in_repo(['bash', 'tools/dist_test.sh', CONFIG, trained['checkpoint'], '2',
                          '--work-dir', str(tmp_path / 'test'), '--out', str(out)],
                         small_toy_root, PORT=str(free_port()))
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]  # both ranks finished
    assert 'youtube_vis/AP' in log
    results = json.loads(out.read_text())
    with open(osp.join(small_toy_root, 'valid.json')) as f:
        videos = {v['id']: v['length'] for v in json.load(f)['videos']}
    for entry in results:
        assert len(entry['segmentations']) == videos[entry['video_id']]
    assert {entry['video_id'] for entry in results} == set(videos)  # every video evaluated ...
    # ... once: as many entries per video as a one-process run (a video processed by both ranks
    # would list its entries twice; scores may differ in the last bits with the thread count)
    single_out = tmp_path / 'single.json'
    single = run_in_repo([sys.executable, 'tools/test.py', CONFIG, trained['checkpoint'],
                          '--work-dir', str(tmp_path / 'single'), '--out', str(single_out)],
                         small_toy_root)
    assert single.returncode == 0, (single.stdout + single.stderr)[-4000:]

    def entries_per_video(items):
        return Counter(entry['video_id'] for entry in items)

    assert entries_per_video(results) == entries_per_video(json.loads(single_out.read_text()))


def test_video_demo_renders_and_rejects_bad_input(trained, small_toy_root, tmp_path):
    video_dir = osp.join(small_toy_root, 'JPEGImages', 'valid_00000')
    out = tmp_path / 'demo.mp4'
    result = run_in_repo([sys.executable, 'demo/video_demo.py', video_dir, CONFIG,
                          trained['checkpoint'], '--out', str(out), '--json',
                          str(tmp_path / 'demo.json'), '--score-thr', '0'], small_toy_root)
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'frames/s' in result.stdout
    assert 'Warning' not in result.stderr, result.stderr  # the stack's noise is silenced
    capture = cv2.VideoCapture(str(out))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 6
    ok, frame = capture.read()
    assert ok and frame.shape[:2] == (512, 640)  # 64x80 upscaled 8 times for display
    predictions = json.loads((tmp_path / 'demo.json').read_text())
    assert predictions and all(len(p['segmentations']) == 6 for p in predictions)

    corrupt = tmp_path / 'corrupt.mp4'
    corrupt.write_bytes(b'not a video at all' * 100)
    result = run_in_repo([sys.executable, 'demo/video_demo.py', str(corrupt), CONFIG,
                          trained['checkpoint'], '--out', str(tmp_path / 'x.mp4')], small_toy_root)
    assert result.returncode == 2 and str(corrupt) in result.stderr
    assert 'Traceback' not in result.stderr
