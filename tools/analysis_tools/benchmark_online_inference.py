"""Measure online inference: frames per second and how memory evolves over a long video.

usage: benchmark_online_inference.py CONFIG [--checkpoint CKPT] [--frames 1000] [--size H W]
                                     [--report-every 100] [--threads N]

Streams a synthetic toy video (moving, occluding shapes; see ``ctvis.datasets.toy``) through
:class:`ctvis.apis.OnlineVideoSegmenter` frame by frame and prints a table: frames done, frames per
second, resident memory (RSS) of the process, tracks in the memory bank, tracks recorded for the
video output and the bytes their RLE masks take. Without a checkpoint the model keeps its random
initialisation (the tracker then keeps many low-score tracks: a stress case for memory).
"""
import argparse
import time

import numpy as np
import torch
from mmengine.config import Config

import ctvis  # noqa: F401
from ctvis.apis import OnlineVideoSegmenter
from ctvis.datasets.toy import render_toy_video


def rss_mib() -> float:
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024
    return float('nan')


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config')
    parser.add_argument('--checkpoint')
    parser.add_argument('--frames', type=int, default=1000)
    parser.add_argument('--size', type=int, nargs=2, default=(96, 128), metavar=('H', 'W'))
    parser.add_argument('--report-every', type=int, default=100)
    parser.add_argument('--threads', type=int, default=None)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    segmenter = OnlineVideoSegmenter.from_config(Config.fromfile(args.config), args.checkpoint)
    clip = render_toy_video((0, 0), min(args.frames, 200), tuple(args.size)).frames
    print(f'{"frames":>7} {"fps":>7} {"RSS MiB":>8} {"memory tracks":>13} '
          f'{"output tracks":>13} {"RLE KiB":>8}')
    start = last = time.time()
    for t in range(args.frames):
        # play the clip forwards and backwards so the motion stays smooth over any length
        period = 2 * len(clip) - 2
        k = t % period
        segmenter.step(np.ascontiguousarray(clip[k if k < len(clip) else period - k]))
        if (t + 1) % args.report_every == 0 or t + 1 == args.frames:
            now = time.time()
            video = segmenter.model.tracker.video  # replaced at every reset
            rle_bytes = sum(len(m['counts']) for r in video.records.values() for m in r.masks)
            print(f'{t + 1:>7} {args.report_every / (now - last):>7.2f} {rss_mib():>8.0f} '
                  f'{len(segmenter.model.tracker.memory):>13} {len(video.records):>13} '
                  f'{rle_bytes / 1024:>8.0f}')
            last = now
    result = segmenter.finish()
    print(f'{args.frames} frames in {time.time() - start:.1f} s; video output: '
          f'{len(result[0].pred_track_instances)} predictions x {len(result)} frames; '
          f'RSS {rss_mib():.0f} MiB')


if __name__ == '__main__':
    main()
