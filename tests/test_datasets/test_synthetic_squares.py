"""ctvis.datasets.synthetic.squares: the moving-square clip and videos the unit tests use."""
import json

import numpy as np
import pycocotools.mask as mask_utils
import pytest

from ctvis.datasets.synthetic import square_clip, write_square_videos


def test_square_clip_leaves_out_the_absent_instances():
    clip = square_clip(num_frames=3, absent=[(1, 9)])
    frames = clip['data_samples'].video_data_samples
    assert clip['inputs'].shape == (3, 3, 64, 64)
    assert [f.gt_instances.instances_ids.tolist() for f in frames] == [[7, 9], [7], [7, 9]]
    assert all(f.gt_instances.masks.masks.sum(axis=(1, 2)).tolist() == [256] * len(f.gt_instances)
               for f in frames)


def test_square_videos_fit_exactly_the_smallest_frame(tmp_path):
    # 3 videos x 4 frames: rows up to 2 + 3 + 6 = 11, columns up to 1 + 9 + 6 = 16
    path = write_square_videos(str(tmp_path), num_videos=3, num_frames=4, size=16)
    with open(path) as f:
        data = json.load(f)
    assert [v['length'] for v in data['videos']] == [4, 4, 4]
    last = data['annotations'][-1]['segmentations'][-1]
    mask = mask_utils.decode(dict(last, counts=last['counts'].encode()))
    assert mask.sum() == 36 and mask[:, -1].any() and mask[-5:].sum() == 0
    with pytest.raises(ValueError, match='cannot hold'):
        write_square_videos(str(tmp_path), num_videos=3, num_frames=5, size=16)
    with pytest.raises(ValueError, match='cannot hold'):
        write_square_videos(str(tmp_path), num_videos=9, num_frames=2, size=16)


def test_square_videos_differ_in_brightness(tmp_path):
    import mmcv
    write_square_videos(str(tmp_path), num_videos=3, num_frames=1, size=16)
    values = [int(mmcv.imread(str(tmp_path / f'video{v}' / '00000.png'))[3 + v, 1, 0])
              for v in (1, 2, 3)]
    assert values == [210, 230, 250] and np.ptp(values) > 0
