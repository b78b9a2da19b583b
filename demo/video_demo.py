"""Segment and track the instances of a video with a CTVIS model, online.

usage: video_demo.py INPUT CONFIG CHECKPOINT --out OUT.mp4 [--json OUT.json] [--score-thr 0.3]
                     [--device cpu] [--max-frames N]

INPUT is a video file, a folder of frames (sorted by name) or a camera index (0, 1, ...).
Frames stream through the model one at a time: memory does not grow with the video's length.
The output video shows each track's mask, id and class in a colour that stays with the track.
``--json`` writes the video-level predictions in the YouTube-VIS results format. Ctrl-C (or
``--max-frames``) stops early and still writes everything seen so far.
"""
import argparse
import json
import os
import os.path as osp
import sys
import time
from typing import Iterator, Tuple

import cv2
import numpy as np
import pycocotools.mask as mask_util
from mmengine.utils import ProgressBar

import ctvis  # noqa: F401  (registration, safe checkpoint loading)
from ctvis.apis import OnlineVideoSegmenter

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.webp', '.tif', '.tiff')


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
    return parser.parse_args()


def open_frames(source: str) -> Tuple[Iterator[np.ndarray], int, float]:
    """Frames of a video file, image folder or camera, with their count (-1 if unknown) and fps."""
    if osp.isdir(source):
        names = sorted(n for n in os.listdir(source) if n.lower().endswith(IMAGE_EXTENSIONS))
        if not names:
            raise InputError(f'{source}: the folder holds no image files')

        def folder():
            for name in names:
                frame = cv2.imread(osp.join(source, name), cv2.IMREAD_COLOR)
                if frame is None:
                    raise InputError(f'{osp.join(source, name)}: not a readable image')
                yield frame
        return folder(), len(names), 10.0
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
                    if 0 < count and index < count - 1:
                        print(f'\nwarning: {source}: decoding stopped at frame {index} of '
                              f'{count}; the rest of the file is unreadable', file=sys.stderr)
                    return
                index += 1
                yield frame
        finally:
            capture.release()
    return stream(), count, fps


def track_colour(track_id: int) -> Tuple[int, int, int]:
    """A vivid BGR colour that depends only on the track id."""
    hue = (track_id * 0.61803398875) % 1.0
    hsv = np.uint8([[[int(hue * 179), 200, 255]]])
    return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0])


def draw_tracks(frame: np.ndarray, tracks, class_names, score_thr: float) -> np.ndarray:
    canvas = frame.copy()
    for track_id, label, score, rle in zip(tracks.instances_id.tolist(), tracks.labels.tolist(),
                                           tracks.scores.tolist(), tracks.masks):
        if score < score_thr:
            continue
        mask = mask_util.decode(rle).astype(bool)
        if not mask.any():
            continue
        colour = np.array(track_colour(track_id), dtype=np.float32)
        canvas[mask] = (0.45 * canvas[mask] + 0.55 * colour).astype(np.uint8)
        ys, xs = np.nonzero(mask)
        name = class_names[label] if class_names and label < len(class_names) else str(label)
        text = f'{track_id}:{name} {score:.2f}'
        org = (int(xs.min()), max(int(ys.min()) - 3, 10))
        cv2.putText(canvas, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 2, cv2.LINE_AA)
        cv2.putText(canvas, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.35,
                    tuple(int(c) for c in colour), 1, cv2.LINE_AA)
    return canvas


def video_results_json(video, class_names) -> list:
    """YouTube-VIS results entries (category ids = label + 1) of a finished video."""
    preds = video[0].pred_track_instances
    results = []
    for k in range(len(preds)):
        label = int(preds.labels[k])
        results.append(dict(
            video_id=0, score=float(preds.scores[k]), category_id=label + 1,
            category_name=class_names[label] if class_names else str(label),
            track_id=int(preds.instances_id[k]),
            segmentations=[frame.pred_track_instances.masks[k] for frame in video]))
    return results


def main() -> int:
    args = parse_args()
    try:
        frames, count, input_fps = open_frames(args.input)
        segmenter = OnlineVideoSegmenter.from_config(args.config, args.checkpoint, args.device)
    except (InputError, FileNotFoundError, ValueError) as e:
        print(f'video_demo: {e}', file=sys.stderr)
        return 2
    total = max(count, 0)
    if args.max_frames:
        total = min(total, args.max_frames) if total else args.max_frames
    progress = ProgressBar(total)  # 0: unknown length, shows the count and the speed
    writer, num_frames, start, error = None, 0, time.time(), None
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    try:
        for frame in frames:
            tracks = segmenter.step(frame)
            canvas = draw_tracks(frame, tracks, segmenter.class_names, args.score_thr)
            if writer is None:
                writer = cv2.VideoWriter(args.out, cv2.VideoWriter_fourcc(*'mp4v'),
                                         args.fps or input_fps, canvas.shape[1::-1])
                if not writer.isOpened():
                    raise InputError(f'{args.out}: cannot open the output video for writing')
            writer.write(canvas)
            num_frames += 1
            progress.update()
            if args.max_frames and num_frames >= args.max_frames:
                break
    except KeyboardInterrupt:
        print('\nvideo_demo: interrupted, writing what was processed', file=sys.stderr)
    except InputError as e:
        error = e
    finally:
        if writer is not None:
            writer.release()
    elapsed = time.time() - start
    if num_frames == 0:
        print(f'\nvideo_demo: {error or "no frame was processed"}', file=sys.stderr)
        return 2
    print(f'\n{num_frames} frames in {elapsed:.1f} s ({num_frames / elapsed:.2f} frames/s) '
          f'-> {args.out}')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(video_results_json(segmenter.finish(), segmenter.class_names), f)
        print(f'video-level predictions -> {args.json}')
    if error is not None:
        print(f'video_demo: stopped early: {error}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
