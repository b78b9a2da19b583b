"""The whole CTVIS stack through the tools: toy data -> train -> validate -> 2-process test -> demo.

Real components only: the toy generator, YTVISDataset with its pipelines, the CTVIS model, the
tracker, YTVISMetric, tools/train.py, tools/dist_test.sh (2 gloo processes) and the video demo.
"""
import json
import os.path as osp
import subprocess
import sys

import cv2
import pytest

from conftest import REPO, free_port, loopback_env

CONFIG = osp.join(REPO, 'tests', 'data', 'configs', 'ctvis_toy_e2e.py')
NUM_VAL_VIDEOS = 3


def run(args, data_root, timeout=300, **env):
    environment = loopback_env(CTVIS_TOY_DATA=data_root + '/', **env)
    return subprocess.run(args, cwd=REPO, env=environment, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope='module')
def toy_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('toy_vis'))
    result = subprocess.run([sys.executable, 'tools/misc/make_toy_vis.py', root, '--videos', '4',
                             '--frames', '6', '--val-videos', str(NUM_VAL_VIDEOS), '--size',
                             '64', '80', '--seed', '3'], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return root


@pytest.fixture(scope='module')
def trained(toy_root, tmp_path_factory):
    work_dir = str(tmp_path_factory.mktemp('e2e_train'))
    result = run([sys.executable, 'tools/train.py', CONFIG, '--work-dir', work_dir], toy_root)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    return dict(work_dir=work_dir, log=log, checkpoint=osp.join(work_dir, 'iter_2.pth'))


def test_train_and_validate(trained):
    assert 'Iter(train) [2/2]' in trained['log'] and 'loss_reid' in trained['log']
    assert osp.isfile(trained['checkpoint'])
    assert 'youtube_vis/AP' in trained['log']  # validation ran the YouTube-VIS metric


def test_two_process_test_covers_every_video_once(trained, toy_root, tmp_path, loopback_gloo):
    out = tmp_path / 'results.json'
    result = run(['bash', 'tools/dist_test.sh', CONFIG, trained['checkpoint'], '2', '--work-dir',
                  str(tmp_path / 'test'), '--out', str(out)], toy_root, PORT=str(free_port()))
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]  # both ranks finished
    assert 'youtube_vis/AP' in log
    results = json.loads(out.read_text())
    with open(osp.join(toy_root, 'valid.json')) as f:
        videos = {v['id']: v['length'] for v in json.load(f)['videos']}
    per_video = {}
    for entry in results:
        per_video[entry['video_id']] = per_video.get(entry['video_id'], 0) + 1
        assert len(entry['segmentations']) == videos[entry['video_id']]
    assert set(per_video) == set(videos)  # every video evaluated ...
    # ... once: the config keeps the top 10 (track, class) pairs per video, a video processed by
    # both ranks would have 20
    assert set(per_video.values()) == {10}


def test_video_demo_renders_and_rejects_bad_input(trained, toy_root, tmp_path):
    video_dir = osp.join(toy_root, 'JPEGImages', 'valid_00000')
    out = tmp_path / 'demo.mp4'
    result = run([sys.executable, 'demo/video_demo.py', video_dir, CONFIG,
                  trained['checkpoint'], '--out', str(out), '--json', str(tmp_path / 'demo.json'),
                  '--score-thr', '0'], toy_root)
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'frames/s' in result.stdout
    capture = cv2.VideoCapture(str(out))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 6
    ok, frame = capture.read()
    assert ok and frame.shape[:2] == (64, 80)
    predictions = json.loads((tmp_path / 'demo.json').read_text())
    assert predictions and all(len(p['segmentations']) == 6 for p in predictions)

    corrupt = tmp_path / 'corrupt.mp4'
    corrupt.write_bytes(b'not a video at all' * 100)
    result = run([sys.executable, 'demo/video_demo.py', str(corrupt), CONFIG,
                  trained['checkpoint'], '--out', str(tmp_path / 'x.mp4')], toy_root)
    assert result.returncode == 2 and str(corrupt) in result.stderr
    assert 'Traceback' not in result.stderr
