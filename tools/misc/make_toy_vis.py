"""Write the built-in toy VIS dataset (YouTube-VIS layout) for quick CPU experiments and tests.

Example::

    python tools/misc/make_toy_vis.py data/toy_vis --videos 40 --frames 24 --seed 0 \\
        --val-videos 8

writes ``data/toy_vis/{train,valid}.json`` and ``data/toy_vis/JPEGImages/<video>/00000.jpg ...``
(``annotations.json`` instead when ``--val-videos 0``). See ``ctvis/datasets/synthetic/toy.py``.
"""
import argparse
import time

from ctvis.datasets.synthetic.toy import make_toy_vis


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Write the ctvis toy VIS dataset')
    parser.add_argument('out_dir', help='output directory')
    parser.add_argument('--videos', type=int, default=40, help='training videos')
    parser.add_argument('--frames', type=int, default=24, help='frames per video')
    parser.add_argument('--seed', type=int, default=0, help='random seed')
    parser.add_argument('--size', type=int, nargs=2, default=(96, 128), metavar=('H', 'W'),
                        help='frame height and width')
    parser.add_argument('--val-videos', type=int, default=0,
                        help='validation videos (valid.json, with annotations); with 0 the '
                        'training videos go to annotations.json')
    parser.add_argument('--instances', type=int, nargs=2, default=(2, 4), metavar=('MIN', 'MAX'),
                        help='inclusive range of instances per video')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    start = time.perf_counter()
    paths = make_toy_vis(args.out_dir, num_videos=args.videos, num_frames=args.frames,
                         seed=args.seed, size=tuple(args.size), num_val_videos=args.val_videos,
                         instances_per_video=tuple(args.instances))
    written = ', '.join(f'{split}: {path}' for split, path in paths.items())
    print(f'make_toy_vis: wrote {args.videos} + {args.val_videos} videos of {args.frames} '
          f'frames in {time.perf_counter() - start:.1f} s ({written})')


if __name__ == '__main__':
    main()
