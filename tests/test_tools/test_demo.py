"""demo/video_demo.py: mixed-size folders, output folders, frame counts and readable labels."""
import json
import os.path as osp
import sys

import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

from ctvis.datasets.synthetic.toy import render_toy_video
from mmdet.registry import MODELS
from conftest import REPO, load_module

demo = load_module(osp.join(REPO, 'demo', 'video_demo.py'), 'video_demo')
CONFIG = osp.join(REPO, 'configs', 'ctvis', 'ctvis_quickstart.py')
TOY_SIZE = (96, 128)  # the quickstart's frames


def write_frames(folder, frames) -> list:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for t, frame in enumerate(frames):
        paths.append(str(folder / f'{t:05d}.png'))
        assert cv2.imwrite(paths[-1], frame)
    return paths


@pytest.fixture
def run_demo(monkeypatch, capsys):
    """Run the demo's command line in this process; returns (exit status, stdout, stderr)."""
    def run(*args):
        monkeypatch.setattr(sys, 'argv', ['video_demo.py', *map(str, args)])
        status = demo.main()
        captured = capsys.readouterr()
        return status, captured.out, captured.err
    return run


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory) -> str:
    """Freshly initialised quickstart weights: the demo's plumbing needs no trained model."""
    init_default_scope('mmdet')
    torch.manual_seed(0)
    model = MODELS.build(Config.fromfile(CONFIG).model)
    model.init_weights()
    path = str(tmp_path_factory.mktemp('demo_ckpt') / 'init.pth')
    torch.save(dict(state_dict=model.state_dict()), path)
    return path


@pytest.fixture(scope='module')
def toy_frames():
    return render_toy_video((5, 0), 6, TOY_SIZE).frames


# ------------------------------------------------------------------------ input and output checks
def test_folder_of_mixed_sizes_is_refused_naming_the_first_odd_frame(tmp_path):
    frames = [np.full((32, 40, 3), 100, np.uint8)] * 3 + [np.zeros((40, 40, 3), np.uint8)] * 2
    paths = write_frames(tmp_path / 'video', frames)
    with pytest.raises(demo.InputError) as error:
        demo.open_frames(str(tmp_path / 'video'))
    assert str(error.value).startswith(f'{paths[3]}: frame size 40x40 differs from 32x40 '
                                       f'(the first frame, {paths[0]})')
    # Same size throughout: accepted, and every frame comes out
    write_frames(tmp_path / 'video', [frames[0]] * 5)
    stream, count, _ = demo.open_frames(str(tmp_path / 'video'))
    assert count == 5 and len(list(stream)) == 5


def test_stored_image_size_follows_the_exif_rotation_opencv_applies(tmp_path):
    from PIL import Image
    path = str(tmp_path / 'rotated.jpg')
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    Image.new('RGB', (40, 32)).save(path, exif=exif)
    assert cv2.imread(path).shape[:2] == (40, 32)
    assert demo.stored_image_size(path) == (40, 32)
    unreadable = tmp_path / 'broken.png'
    unreadable.write_bytes(b'no image')
    with pytest.raises(demo.InputError, match='broken.png: not a readable image'):
        demo.stored_image_size(str(unreadable))


def test_output_folders_are_created_or_refused_before_work(tmp_path):
    out, results = tmp_path / 'a' / 'b' / 'demo.mp4', tmp_path / 'c' / 'demo.json'
    demo.prepare_outputs([str(out), str(results), None])
    assert out.parent.is_dir() and results.parent.is_dir()
    blocker = tmp_path / 'file'
    blocker.write_text('')
    with pytest.raises(demo.InputError, match=f'{blocker}/x.json: cannot create its folder'):
        demo.prepare_outputs([str(blocker / 'x.json')])
    with pytest.raises(demo.InputError, match='is a folder, expected a file name'):
        demo.prepare_outputs([str(tmp_path / 'a')])


def test_cli_refuses_before_loading_the_model(tmp_path, run_demo):
    """The checkpoint does not exist: each error below comes before the model is built."""
    frames = [np.zeros((32, 40, 3), np.uint8), np.zeros((36, 40, 3), np.uint8)]
    paths = write_frames(tmp_path / 'mixed', frames)
    missing = tmp_path / 'missing.pth'
    status, _, err = run_demo(tmp_path / 'mixed', CONFIG, missing, '--out', tmp_path / 'x.mp4')
    assert status == 2 and f'{paths[1]}: frame size 36x40 differs from 32x40' in err
    assert not (tmp_path / 'x.mp4').exists()
    blocker = tmp_path / 'file'
    blocker.write_text('')
    status, _, err = run_demo(tmp_path / 'mixed', CONFIG, missing, '--out', tmp_path / 'x.mp4',
                              '--json', blocker / 'x.json')
    assert status == 2 and f'{blocker}/x.json: cannot create its folder' in err
    # Only then the model: the missing checkpoint is the error once the inputs are sound
    write_frames(tmp_path / 'same', frames[:1])
    status, _, err = run_demo(tmp_path / 'same', CONFIG, missing, '--out', tmp_path / 'x.mp4')
    assert status == 2 and str(missing) in err


@pytest.mark.parametrize('option, value, message', [
    ('--max-frames', '0', '--max-frames must be at least 1, got 0'),  # 0 ran the whole video
    ('--max-frames', '-2', '--max-frames must be at least 1, got -2'),  # -2 ran one frame
    ('--fps', '0', '--fps must be a positive number, got 0.0'),  # 0 took the input's rate
    ('--fps', '-5', '--fps must be a positive number, got -5.0'),
    ('--score-thr', 'nan', '--score-thr must be a finite number, got nan'),  # drew nothing
    # refused only after the model had run a frame
    ('--out', 'demo', '--out demo: the output video needs one of the extensions .mp4'),
    ('--out', 'demo.txt', '--out demo.txt: the output video needs one of the extensions'),
])
def test_cli_refuses_option_values_it_would_misread(tmp_path, run_demo, capsys, option, value,
                                                    message):
    with pytest.raises(SystemExit) as exit_info:
        run_demo(tmp_path, CONFIG, tmp_path / 'missing.pth', '--out', tmp_path / 'x.mp4',
                 option, value)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_writes_every_frame_it_reports_and_the_json_into_new_folders(
        tmp_path, checkpoint, toy_frames, run_demo):
    write_frames(tmp_path / 'video', toy_frames)
    out, results = tmp_path / 'new' / 'demo.mp4', tmp_path / 'deeper' / 'new' / 'demo.json'
    status, out_text, err = run_demo(tmp_path / 'video', CONFIG, checkpoint, '--out', out,
                                     '--json', results, '--score-thr', '0')
    assert status == 0, err[-3000:]
    assert '\n6 frames in' in out_text
    capture = cv2.VideoCapture(str(out))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 6
    ok, frame = capture.read()
    assert ok and frame.shape[:2] == (480, 640)  # 96x128 upscaled 5 times for display
    predictions = json.loads(results.read_text())
    assert predictions and all(len(p['segmentations']) == 6 for p in predictions)
    assert all(s['size'] == list(TOY_SIZE) for p in predictions for s in p['segmentations'])


# ---------------------------------------------------------------------------------- drawing
def test_display_scale_upscales_small_frames_by_a_whole_factor():
    assert demo.display_scale(96, 128, 480) == 5
    assert demo.display_scale(64, 80, 480) == 8
    assert demo.display_scale(479, 640, 480) == 2
    assert demo.display_scale(480, 640, 480) == 1
    assert demo.display_scale(96, 128, 0) == 1
    # a thin frame stops where its long side reaches MAX_DISPLAY_SIDE (4096)
    assert demo.display_scale(2, 200, 480) == 20
    assert demo.display_scale(2, 2048, 480) == 2 and demo.display_scale(2, 2049, 480) == 1
    assert demo.display_scale(2, 5000, 480) == 1
