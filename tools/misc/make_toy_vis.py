"""Write a synthetic VIS dataset (YouTube-VIS layout) for quick CPU experiments and tests.

Two kinds (``ctvis/datasets/synthetic/``): ``toy`` (toy.py, the quickstart's data) and
``association`` (association.py: in every video look-alike instances cross with occlusion and
one re-appears after several frames outside the frame). Example::

    python tools/misc/make_toy_vis.py data/toy_vis --videos 40 --frames 24 --seed 0 \\
        --val-videos 8
    python tools/misc/make_toy_vis.py data/assoc_vis --kind association --videos 48 \\
        --frames 12 --val-videos 16 --absent-frames 3 5

writes ``OUT/{train,valid}.json`` and ``OUT/JPEGImages/<video>/00000.jpg ...``
(``annotations.json`` instead when ``--val-videos 0``).
"""
import argparse
import time

from ctvis.datasets.synthetic.association import make_association_vis
from ctvis.datasets.synthetic.toy import make_toy_vis


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Write a ctvis synthetic VIS dataset')
    parser.add_argument('out_dir', help='output directory')
    parser.add_argument('--kind', choices=('toy', 'association'), default='toy',
                        help='toy: the quickstart set; association: every video has a '
                        'look-alike crossing with occlusion and a re-appearance')
    parser.add_argument('--videos', type=int, default=40, help='training videos')
    parser.add_argument('--frames', type=int, default=24, help='frames per video')
    parser.add_argument('--seed', type=int, default=0, help='random seed')
    parser.add_argument('--size', type=int, nargs=2, default=(96, 128), metavar=('H', 'W'),
                        help='frame height and width')
    parser.add_argument('--val-videos', type=int, default=0,
                        help='validation videos (valid.json, with annotations); with 0 the '
                        'training videos go to annotations.json')
    parser.add_argument('--instances', type=int, nargs=2, metavar=('MIN', 'MAX'),
                        help='inclusive range of instances per video (default: toy 2 4, '
                        'association 3 5)')
    parser.add_argument('--absent-frames', type=int, nargs=2, metavar=('MIN', 'MAX'),
                        help='association only: inclusive range of the frames the re-appearing '
                        'instance spends outside the frame (default 3 5)')
    args = parser.parse_args()
    if args.absent_frames is not None and args.kind != 'association':
        parser.error('--absent-frames needs --kind association')
    if args.seed < 0:
        parser.error(f'--seed must be >= 0, got {args.seed}')
    return args


def main() -> None:
    args = parse_args()
    options = {}
    if args.instances is not None:
        options['instances_per_video'] = tuple(args.instances)
    if args.absent_frames is not None:
        options['absent_frames'] = tuple(args.absent_frames)
    make = make_association_vis if args.kind == 'association' else make_toy_vis
    start = time.perf_counter()
    try:
        paths = make(args.out_dir, num_videos=args.videos, num_frames=args.frames,
                     seed=args.seed, size=tuple(args.size), num_val_videos=args.val_videos,
                     **options)
    except ValueError as error:  # counts and sizes the generator cannot make
        raise SystemExit(f'error: {error}') from None
    written = ', '.join(f'{split}: {path}' for split, path in paths.items())
    print(f'make_toy_vis: wrote {args.videos} + {args.val_videos} {args.kind} videos of '
          f'{args.frames} frames in {time.perf_counter() - start:.1f} s ({written})')


if __name__ == '__main__':
    main()
