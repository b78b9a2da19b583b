"""demo/video_demo.py: mixed-size folders, output folders, frame counts and readable labels."""
import json
import os
import os.path as osp
import re
import signal
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
    with pytest.raises(demo.InputError,
                       match=f'{blocker}/x.json: its folder {blocker} cannot be created'):
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
    assert status == 2 and f'{blocker}/x.json: its folder {blocker} cannot be created' in err
    # settings the video encoder refuses (they failed after the model had run the first frame)
    write_frames(tmp_path / 'same', frames[:1])
    for option in (['--fps', '1e9'], ['--fps', '0.001']):
        status, _, err = run_demo(tmp_path / 'same', CONFIG, missing, '--out', tmp_path / 'x.mp4',
                                  *option)
        assert status == 2 and str(missing) not in err
        assert (f'{tmp_path / "x.mp4"}: the video encoder (mp4v) refuses 600x480 frames at '
                f'{float(option[1]):g} fps') in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ['file', 'mixed', 'same']
    # Only then the model: the missing checkpoint is the error once the inputs are sound
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
    # the JSON's permissions follow the umask, as the video's (mkstemp made it owner-only)
    assert results.stat().st_mode & 0o777 == out.stat().st_mode & 0o777


def test_an_odd_frame_size_keeps_its_last_row_and_column_in_the_video(
        tmp_path, checkpoint, toy_frames, run_demo):
    """The encoder takes even sides only: a 95x127 frame is written 96x128, padded with black
    (it came back 94x126, without its last row and column)."""
    frames = [frame[:95, :127].copy() for frame in toy_frames[:2]]
    for frame in frames:
        frame[-3:], frame[:, -3:] = 255, 255  # a bright bottom and right edge
    write_frames(tmp_path / 'video', frames)
    out, results = tmp_path / 'odd.mp4', tmp_path / 'odd.json'
    status, _, err = run_demo(tmp_path / 'video', CONFIG, checkpoint, '--out', out,
                              '--json', results, '--display-min-side', '0', '--score-thr', '1')
    assert status == 0, err[-3000:]
    ok, written = cv2.VideoCapture(str(out)).read()
    assert ok and written.shape[:2] == (96, 128)
    assert written[:88, 124:127].mean() > 200 and written[92:95, :120].mean() > 200  # kept
    assert written[:, 127].mean() < 60 and written[95].mean() < 60  # the black padding
    # the frame itself, not scaled or shifted (mp4v is lossy: a loose bound)
    assert np.abs(written[:90, :120].astype(int) - frames[0][:90, :120]).mean() < 8
    assert demo.encoder_size(127, 95) == (128, 96) and demo.encoder_size(128, 96) == (128, 96)
    predictions = json.loads(results.read_text())  # the input's size, not the video's
    assert predictions and all(s['size'] == [95, 127] for p in predictions
                               for s in p['segmentations'])


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


# ------------------------------------------------------------------ outputs, order, interruption
def test_outputs_that_would_destroy_an_input_or_each_other_are_refused(tmp_path):
    video, config = tmp_path / 'in.mp4', tmp_path / 'cfg.py'
    video.write_bytes(b'x')
    config.write_text('')
    inputs = [str(video), str(config), str(tmp_path / 'missing.pth')]
    with pytest.raises(demo.InputError, match=f'^{video}: is also an input'):
        demo.prepare_outputs([str(video), None], inputs)
    link = tmp_path / 'link.json'
    link.symlink_to(config)
    with pytest.raises(demo.InputError, match=f'^{link}: is also an input \\({config}\\)'):
        demo.prepare_outputs([str(tmp_path / 'out.mp4'), str(link)], inputs)
    same = str(tmp_path / 'out.mp4')
    with pytest.raises(demo.InputError, match=f'^{same}: is also the output {same}'):
        demo.prepare_outputs([same, same], inputs)
    fifo = tmp_path / 'pipe.json'
    os.mkfifo(fifo)
    with pytest.raises(demo.InputError, match=f'^{fifo}: exists and is not a regular file'):
        demo.prepare_outputs([same, str(fifo)], inputs)
    demo.prepare_outputs([same, str(tmp_path / 'out.json')], inputs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['cfg.py', 'in.mp4', 'link.json',
                                                          'pipe.json']  # no probe left


def test_folder_frames_run_in_natural_order(tmp_path):
    """ffmpeg's %d.jpg names are not zero-padded: 10.png comes after 9.png, not after 1.png."""
    frames = [np.full((8, 8, 3), 10 * t, np.uint8) for t in range(12)]
    folder = tmp_path / 'video'
    folder.mkdir()
    for t, frame in enumerate(frames):
        cv2.imwrite(str(folder / f'{t}.png'), frame)
    stream, count, _ = demo.open_frames(str(folder))
    assert count == 12 and [int(f[0, 0, 0]) for f in stream] == [10 * t for t in range(12)]
    (folder / '._3.png').write_bytes(b'\0\5\26\7 AppleDouble')  # macOS metadata: skipped
    assert len(list(demo.open_frames(str(folder))[0])) == 12
    assert sorted(['a10.png', 'a9.png', 'b1.png'], key=demo.natural_key) == [
        'a9.png', 'a10.png', 'b1.png']


def test_folder_frames_of_every_format_opencv_decodes_and_the_rest_said(tmp_path, capsys):
    """A .jfif or .ppm frame among .jpg ones was dropped without a word (the frames after it
    shifted in the JSON); a TIFF turned by its EXIF orientation failed in cv2.imread."""
    from PIL import Image
    folder = tmp_path / 'video'
    folder.mkdir()
    values = [20, 40, 60, 80, 100, 120]
    for t, ext in enumerate(['png', 'jfif', 'ppm', 'pgm', 'bmp']):  # GIF: not in every OpenCV
        image = Image.fromarray(np.full((6, 8, 3), values[t], np.uint8))
        (image.convert('L') if ext == 'pgm' else image).save(
            folder / f'{t}.{ext}', format={'jfif': 'JPEG'}.get(ext))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display: stored 8x6, decoded 6x8
    Image.fromarray(np.full((8, 6, 3), values[5], np.uint8)).save(folder / '5.tif', exif=exif)
    (folder / 'notes.txt').write_text('not a frame')
    stream, count, _ = demo.open_frames(str(folder))
    frames = list(stream)
    assert count == 6 and [f.shape for f in frames] == [(6, 8, 3)] * 6
    assert [int(np.median(f)) for f in frames] == pytest.approx(values, abs=2)  # jfif's loss
    assert capsys.readouterr().err.strip() == (
        f'video_demo: {folder}: 1 entries are not frames by their extension, skipped: notes.txt')


class ScriptedCapture:
    """A cv2.VideoCapture whose reads succeed or fail as scripted (True: a frame)."""

    def __init__(self, script):
        self.script = list(script)

    def isOpened(self):
        return True

    def get(self, prop):
        return float(len(self.script)) if prop == cv2.CAP_PROP_FRAME_COUNT else 25.0

    def read(self):
        if not self.script:
            return False, None
        return (True, np.zeros((8, 8, 3), np.uint8)) if self.script.pop(0) else (False, None)

    def release(self):
        pass


@pytest.mark.parametrize('script, message', [
    ([True, True, False, True, True], 'frame 2 of 5 cannot be decoded, frames after it can; the '
     'output stops at frame 2'),
    ([True, True, False, False, False], 'decoding stopped at frame 2 of 5; the rest of the file '
     'is unreadable'),
])
def test_a_video_that_stops_decoding_part_way_is_an_error(tmp_path, monkeypatch, script,
                                                          message):
    """The frames before the failure come out; the failure is an error, not a warning (the
    output lacks frames the input has), saying whether later frames would decode."""
    video = tmp_path / 'in.mp4'
    video.write_bytes(b'x')
    monkeypatch.setattr(demo.cv2, 'VideoCapture', lambda source: ScriptedCapture(script))
    stream, count, _ = demo.open_frames(str(video))
    assert count == 5 and next(stream) is not None and next(stream) is not None
    with pytest.raises(demo.InputError, match=re.escape(f'{video}: {message}')):
        next(stream)
    stream, _, _ = demo.open_frames(str(video))
    monkeypatch.setattr(demo.cv2, 'VideoCapture', lambda source: ScriptedCapture([True] * 3))
    assert len(list(demo.open_frames(str(video))[0])) == 3  # a whole video ends quietly


@pytest.mark.parametrize('hard', [False, True])
def test_an_interrupted_run_writes_the_same_frames_to_the_video_and_the_json(
        tmp_path, checkpoint, toy_frames, run_demo, monkeypatch, hard):
    """Ctrl-C stops between frames; a second one interrupts inside a frame the tracker has
    already recorded: the JSON is then cut to the frames the video holds."""
    write_frames(tmp_path / 'video', toy_frames)
    step = demo.OnlineVideoSegmenter.step

    def step_then_interrupt(segmenter, frame):
        tracks = step(segmenter, frame)
        if segmenter.frame_id == 3:
            if hard:
                raise KeyboardInterrupt
            os.kill(os.getpid(), signal.SIGINT)
        return tracks

    monkeypatch.setattr(demo.OnlineVideoSegmenter, 'step', step_then_interrupt)
    out, results = tmp_path / 'demo.mp4', tmp_path / 'demo.json'
    def caller_handler(signum, stack):  # the caller's own (a background job's would ignore it)
        raise KeyboardInterrupt

    outer_handler = signal.signal(signal.SIGINT, caller_handler)
    try:
        status, out_text, err = run_demo(tmp_path / 'video', CONFIG, checkpoint, '--out', out,
                                         '--json', results, '--score-thr', '0')
        restored = signal.getsignal(signal.SIGINT)
    finally:
        signal.signal(signal.SIGINT, outer_handler)
    written = 2 if hard else 3
    assert status == 0 and 'interrupted, writing what was processed' in err
    assert f'\n{written} frames in' in out_text
    assert int(cv2.VideoCapture(str(out)).get(cv2.CAP_PROP_FRAME_COUNT)) == written
    predictions = json.loads(results.read_text())
    assert predictions and all(len(p['segmentations']) == written for p in predictions)
    assert restored is caller_handler  # the demo put the caller's handler back


def test_a_json_that_cannot_be_written_is_an_error_and_leaves_no_file(
        tmp_path, checkpoint, toy_frames, run_demo, monkeypatch):
    write_frames(tmp_path / 'video', toy_frames[:2])

    def disk_full(content, f):
        raise OSError(28, 'No space left on device')

    monkeypatch.setattr(demo.json, 'dump', disk_full)
    results = tmp_path / 'demo.json'
    status, _, err = run_demo(tmp_path / 'video', CONFIG, checkpoint, '--out',
                              tmp_path / 'demo.mp4', '--json', results)
    assert status == 2
    assert f'{results}: cannot write the predictions: No space left on device' in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ['demo.mp4', 'video']
