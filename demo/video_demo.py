"""Segment and track the instances of a video with a CTVIS model, online.

usage: video_demo.py INPUT CONFIG CHECKPOINT --out OUT.mp4 [--json OUT.json] [--score-thr 0.3]
                     [--device cpu] [--max-frames N] [--display-min-side 480] [--compile]

INPUT is a video file, a folder of frames (in natural order of their names: 2.jpg before 10.jpg;
hidden files skipped) or a camera index (0, 1, ...).
Frames stream through the model one at a time: without ``--json`` memory does not grow with the
video's length (flat over 8,000 frames, docs/benchmarks.md); ``--json`` keeps a compact record of
every detection for the video-level predictions (about 1 KiB each plus its mask's runs).
The frames of one video must share one size (the video-level masks have one size): a folder
whose images differ in size is refused before the model runs, naming the first differing file.
The output video shows each track's mask, outline and a label (id, class, score) in a colour
that stays with the track; labels are sized to the frame and placed so they do not cover each
other, and a frame whose short side is below ``--display-min-side`` is upscaled by a whole factor
for display (the JSON keeps the input's size; an odd side of the video gets one black row or
column, since the encoder takes even sides only). ``--json`` writes the video-level predictions
in the YouTube-VIS results format. Output folders are created before the model runs; an output
that is the input, the config, the checkpoint or the other output is refused. Ctrl-C (or
``--max-frames``) stops early and still writes everything seen so far: the video and the JSON hold
the same frames. A video whose decoding fails part way stops there (exit status 2), keeping the
frames before it in step with the input. ``--compile`` runs the
per-frame network through ``torch.compile`` (the first frame then takes the compile time; see
docs/benchmarks.md for when it pays).
"""
import argparse
import itertools
import json
import math
import os
import os.path as osp
import re
import signal
import sys
import tempfile
import time
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
from mmengine.utils import ProgressBar

import ctvis  # noqa: F401  (registration)
from ctvis.apis import OnlineVideoSegmenter
from ctvis.datasets.ytvis import decoded_image_size
from ctvis.engine import draw_tracks
from ctvis.models import VideoPrediction
from ctvis.utils import known_noise_filtered, output_file_problem, tune_malloc

# still-image formats OpenCV decodes (frames are decoded as mmcv's loader does; GIF and AVIF
# only where OpenCV was built with them: a frame it cannot decode stops the demo, named)
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.jpe', '.jfif', '.png', '.bmp', '.dib', '.webp', '.tif',
                    '.tiff', '.ppm', '.pgm', '.pbm', '.pnm', '.sr', '.ras', '.gif', '.jp2',
                    '.avif')
# containers OpenCV's VideoWriter writes with the mp4v codec, chosen by the extension
VIDEO_OUTPUT_EXTENSIONS = ('.mp4', '.m4v', '.mov', '.avi', '.mkv')
MAX_DISPLAY_SIDE = 4096  # upscaling for display stops here (the encoder refuses huge frames)


class InputError(RuntimeError):
    """The input cannot be read; the message says which and why."""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('input', help='video file, folder of frames, or camera index')
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('--out', required=True, help='output video (.mp4)')
    parser.add_argument('--json', help='write video-level predictions (YouTube-VIS format)')
    parser.add_argument('--score-thr', type=float, default=0.3,
                        help='draw tracks whose class score in the frame is above this')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--max-frames', type=int, help='stop after this many frames')
    parser.add_argument('--fps', type=float, default=None,
                        help='output frame rate (default: the input\'s, or 10)')
    parser.add_argument('--display-min-side', type=int, default=480,
                        help='upscale the output video by the smallest whole factor that makes '
                        'its short side at least this many pixels (0: input size)')
    parser.add_argument('--compile', action='store_true',
                        help='run the per-frame network through torch.compile (the first frame '
                        'compiles it)')
    args = parser.parse_args()
    if osp.splitext(args.out)[1].lower() not in VIDEO_OUTPUT_EXTENSIONS:
        parser.error(f'--out {args.out}: the output video needs one of the extensions '
                     f'{", ".join(VIDEO_OUTPUT_EXTENSIONS)} (its container)')
    if args.max_frames is not None and args.max_frames < 1:
        parser.error(f'--max-frames must be at least 1, got {args.max_frames}')
    if args.fps is not None and not 0 < args.fps < math.inf:  # NaN fails too
        parser.error(f'--fps must be a positive number, got {args.fps}')
    if not math.isfinite(args.score_thr):
        parser.error(f'--score-thr must be a finite number, got {args.score_thr}')
    return args


def prepare_outputs(paths: Sequence[Optional[str]], inputs: Sequence[str] = ()) -> None:
    """Create the folders of the output files before any work, or raise InputError: also for an
    output that is one of ``inputs`` (writing it would destroy what is being read), the same
    file as another output, an existing non-regular file (a device, a pipe) or in a folder where
    no file can be created."""
    written = {}
    sources = {osp.realpath(path): path for path in inputs if path and osp.exists(path)}
    for path in paths:
        if not path:
            continue
        real = osp.realpath(path)
        if real in sources:
            raise InputError(f'{path}: is also an input ({sources[real]}); writing it would '
                             'destroy it')
        if real in written:
            raise InputError(f'{path}: is also the output {written[real]}; give each output its '
                             'own file')
        written[real] = path
        problem = output_file_problem(path)
        if problem is not None:
            raise InputError(f'{path}: {problem}')


def write_json_atomically(path: str, content: Union[list, dict]) -> None:
    """Write ``content`` to a temporary file beside ``path``, then rename it into place: a
    failed write (a full disk) leaves no truncated file behind."""
    folder = osp.dirname(osp.abspath(path))
    handle, temporary = tempfile.mkstemp(dir=folder, prefix='.video_demo_', suffix='.json')
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(handle, 0o666 & ~umask)  # mkstemp makes it private to its owner
    try:
        with os.fdopen(handle, 'w') as f:
            json.dump(content, f)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def natural_key(name: str) -> List[Union[str, int]]:
    """Sort key that orders the numbers inside names by value (frame_2 before frame_10)."""
    return [int(part) if part.isdigit() else part for part in re.split(r'(\d+)', name)]


def stored_image_size(path: str) -> Tuple[int, int]:
    """(H, W) of an image as ``cv2.imread`` returns it, read from the header only."""
    try:
        return decoded_image_size(path)
    except OSError as e:
        raise InputError(f'{path}: not a readable image ({e})') from e


def check_folder_frame_sizes(paths: Sequence[str]) -> Tuple[int, int]:
    """The common (H, W) of a video's frame files; InputError names the first that differs."""
    size = stored_image_size(paths[0])
    for path in paths[1:]:
        other = stored_image_size(path)
        if other != size:
            raise InputError(
                f'{path}: frame size {other[0]}x{other[1]} differs from {size[0]}x{size[1]} '
                f'(the first frame, {paths[0]}); the frames of one video must share one size '
                '(resize them first)')
    return size


def open_frames(source: str) -> Tuple[Iterator[np.ndarray], int, float]:
    """Frames of a video file, image folder or camera, with their count (-1 if unknown) and fps."""
    if osp.isdir(source):
        # hidden files are no frames (macOS writes ._NAME metadata files beside copied ones)
        visible = [n for n in os.listdir(source) if not n.startswith('.')]
        names = sorted((n for n in visible if n.lower().endswith(IMAGE_EXTENSIONS)),
                       key=natural_key)
        others = sorted(set(visible) - set(names), key=natural_key)
        if not names:
            raise InputError(f'{source}: the folder holds no image files (by their extension: '
                             f'{" ".join(IMAGE_EXTENSIONS)})')
        if others:  # said, so that a frame in an unexpected format is not dropped unnoticed
            shown = ', '.join(others[:5]) + (f' and {len(others) - 5} more' if len(others) > 5
                                             else '')
            print(f'video_demo: {source}: {len(others)} entries are not frames by their '
                  f'extension, skipped: {shown}', file=sys.stderr)
        paths = [osp.join(source, name) for name in names]
        size = check_folder_frame_sizes(paths)

        def folder():
            for path in paths:
                # decoded from its bytes, as mmcv's loader: cv2.imread (OpenCV 5.1) fails on
                # TIFFs rotated by their EXIF orientation
                try:
                    frame = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_COLOR)
                except (OSError, cv2.error):  # gone or emptied since its header was read
                    frame = None
                if frame is None:
                    raise InputError(f'{path}: not a readable image')
                if frame.shape[:2] != size:  # the header said otherwise
                    raise InputError(f'{path}: decoded size {frame.shape[0]}x{frame.shape[1]} '
                                     f'differs from the first frame\'s {size[0]}x{size[1]}')
                yield frame
        return folder(), len(paths), 10.0
    if source.isdigit():
        capture = cv2.VideoCapture(int(source))
        if not capture.isOpened():
            raise InputError(f'camera {source} cannot be opened')
        count = -1
    else:
        if not osp.isfile(source):
            raise InputError(f'{source}: no such file or folder')
        capture = cv2.VideoCapture(source)
        if not capture.isOpened():
            raise InputError(f'{source}: not a readable video (unknown format or corrupt file)')
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or -1
    fps = capture.get(cv2.CAP_PROP_FPS) or 10.0

    def stream():
        index = 0
        try:
            while True:
                ok, frame = capture.read()
                if not ok:
                    if index == 0:
                        raise InputError(f'{source}: no frame could be decoded')
                    if 0 < count and index < count:
                        raise InputError(decoding_stopped(source, capture, index, count))
                    return
                index += 1
                yield frame
        finally:
            capture.release()
    return stream(), count, fps


def open_writer(path: str, size: Tuple[int, int], fps: float) -> cv2.VideoWriter:
    """The mp4v writer of the output video, (width, height) frames; InputError saying what the
    encoder refuses (MPEG-4 takes sides up to 8191 pixels, and a limited frame-rate range)."""
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*'mp4v'), fps, size)
    if not writer.isOpened():
        raise InputError(f'{path}: the video encoder (mp4v) refuses {size[0]}x{size[1]} frames '
                         f'at {fps:g} fps; try --fps between 1 and 1000 and, for very large '
                         'frames, --display-min-side 0')
    return writer


def encoder_size(width: int, height: int) -> Tuple[int, int]:
    """(width, height) of the output video: the frame's, rounded up to even sides. The mp4v
    encoder stores colour at half resolution and drops an odd last column or row (129x97
    frames came back 128x96); the frames are padded instead (:func:`pad_frame`)."""
    return width + width % 2, height + height % 2


def pad_frame(image: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """``image`` with black columns and rows added on the right and at the bottom up to
    ``size`` (width, height)."""
    if image.shape[1::-1] == size:
        return image
    return cv2.copyMakeBorder(image, 0, size[1] - image.shape[0], 0, size[0] - image.shape[1],
                              cv2.BORDER_CONSTANT, value=0)


def check_writer(path: str, size: Tuple[int, int], fps: float) -> None:
    """:func:`open_writer` on a scratch file beside ``path``, so that settings the encoder refuses
    fail before the model is built."""
    folder, extension = osp.dirname(osp.abspath(path)), osp.splitext(path)[1]
    handle, scratch = tempfile.mkstemp(dir=folder, prefix='.video_demo_', suffix=extension)
    os.close(handle)
    try:
        open_writer(scratch, size, fps).release()
    except InputError as error:
        raise InputError(str(error).replace(scratch, path)) from None
    finally:
        os.unlink(scratch)


def decoding_stopped(source: str, capture: cv2.VideoCapture, index: int, count: int) -> str:
    """Why a video's frames stop at ``index`` of ``count``: whether later frames decode (a few
    reads further) decides what to advise. Skipping the broken frame would shift every later
    frame's masks against the input's frame numbers, so the output stops there either way."""
    resumes = any(capture.read()[0] for _ in range(8))
    if resumes:
        return (f'{source}: frame {index} of {count} cannot be decoded, frames after it can; the '
                f'output stops at frame {index} to keep its frames in step with the input: '
                're-encode the video (e.g. ffmpeg -i IN -c:v libx264 OUT.mp4) to run it whole')
    return (f'{source}: decoding stopped at frame {index} of {count}; the rest of the file is '
            'unreadable')


def display_scale(height: int, width: int, min_side: int) -> int:
    """The smallest whole factor that brings the short side of a frame to ``min_side``, but no
    larger than keeps the long side within :data:`MAX_DISPLAY_SIDE` (very thin frames)."""
    if min_side <= 0:
        return 1
    return max(1, min(math.ceil(min_side / min(height, width)),
                      MAX_DISPLAY_SIDE // max(height, width)))


def video_results_json(video, class_names: Optional[Sequence[str]]) -> list:
    """YouTube-VIS results entries of a finished video (category id = label + 1), each also with
    its ``category_name`` and ``track_id``.

    Args:
        video (TrackDataSample): :meth:`OnlineVideoSegmenter.finish` of the video.
        class_names (Sequence[str], optional): The config's class names.
    """
    prediction = VideoPrediction.from_data_sample(video)
    num_labels = int(prediction.labels.max()) + 1 if len(prediction) else 0
    entries = prediction.to_ytvis_results(0, range(1, num_labels + 1))
    return [dict(video_id=entry['video_id'], score=entry['score'],  # the keys in their old order
                 category_id=entry['category_id'],
                 category_name=class_names[label] if class_names else str(label),
                 track_id=track_id, segmentations=entry['segmentations'])
            for entry, label, track_id in zip(entries, prediction.labels.tolist(),
                                              prediction.track_ids.tolist())]


def main() -> int:
    args = parse_args()
    try:
        prepare_outputs([args.out, args.json], [args.input, args.config, args.checkpoint])
        frames, count, input_fps = open_frames(args.input)
        first = next(frames)  # the output's size and the encoder's check, before the model
        frames = itertools.chain([first], frames)
        scale = display_scale(*first.shape[:2], args.display_min_side)
        size = encoder_size(first.shape[1] * scale, first.shape[0] * scale)
        check_writer(args.out, size, args.fps or input_fps)
        # the video-level record only for --json: without it memory stays flat on any stream
        segmenter = OnlineVideoSegmenter.from_config(args.config, args.checkpoint, args.device,
                                                     compile=args.compile,
                                                     video_result=bool(args.json))
    except (InputError, FileNotFoundError, ValueError) as e:
        print(f'video_demo: {e}', file=sys.stderr)
        return 2
    total = max(count, 0)
    if args.max_frames:
        total = min(total, args.max_frames) if total else args.max_frames
    progress = ProgressBar(total)  # 0: unknown length, shows the count and the speed
    writer, num_frames, start, error = None, 0, time.time(), None
    # Ctrl-C stops between frames, so a frame is either tracked, drawn and written or not seen at
    # all; a second Ctrl-C interrupts at once (the JSON is then cut to the written frames).
    interrupted = []

    def on_interrupt(signum, stack):
        interrupted.append(signum)
        signal.signal(signal.SIGINT, signal.default_int_handler)

    previous_handler = signal.signal(signal.SIGINT, on_interrupt)
    try:
        for frame in frames:
            tracks = segmenter.step(frame)
            if writer is None:
                writer = open_writer(args.out, size, args.fps or input_fps)
            writer.write(pad_frame(draw_tracks(frame, tracks, segmenter.class_names,
                                               args.score_thr, scale), size))
            num_frames += 1
            progress.update()
            if interrupted or args.max_frames and num_frames >= args.max_frames:
                break
    except KeyboardInterrupt:
        interrupted.append(signal.SIGINT)
    except (InputError, ValueError) as e:  # ValueError: a frame the model cannot take
        error = e
    finally:
        signal.signal(signal.SIGINT, previous_handler)
        if writer is not None:
            writer.release()
    if interrupted:
        print('\nvideo_demo: interrupted, writing what was processed', file=sys.stderr)
    elapsed = time.time() - start
    if num_frames == 0:
        print(f'\nvideo_demo: {error or "no frame was processed"}', file=sys.stderr)
        return 2
    print(f'\n{num_frames} frames in {elapsed:.1f} s ({num_frames / elapsed:.2f} frames/s) '
          f'-> {args.out}')
    if args.json:
        results = video_results_json(segmenter.finish(), segmenter.class_names)
        for entry in results:  # a frame tracked but not written (interrupted inside it)
            del entry['segmentations'][num_frames:]
        try:
            write_json_atomically(args.json, results)
        except OSError as e:
            print(f'video_demo: {args.json}: cannot write the predictions: {e.strerror or e}',
                  file=sys.stderr)
            return 2
        print(f'video-level predictions -> {args.json}')
    if error is not None:
        print(f'video_demo: stopped early: {error}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    print(tune_malloc(), file=sys.stderr)  # this process only, never on import
    with known_noise_filtered():  # the stack's deprecation noise, as in tools/test.py
        sys.exit(main())
