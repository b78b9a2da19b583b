"""Moving squares: the smallest synthetic videos, for unit tests of models and tools.

:func:`square_clip` packs one training clip in memory the way the data loader does;
:func:`write_square_videos` writes tiny videos in the YouTube-VIS layout to disk.
"""
import json
import os.path as osp
from typing import Iterable, Tuple

import mmcv
import numpy as np
import torch
from mmengine.structures import InstanceData

from mmdet.structures import DetDataSample, TrackDataSample
from mmdet.structures.mask import BitmapMasks
from .annotations import rle_of

__all__ = ['square_clip', 'write_square_videos']


def square_clip(num_frames: int = 3, size: Tuple[int, int] = (64, 64), seed: int = 0,
                absent: Iterable[Tuple[int, int]] = ()) -> dict:
    """One clip of two moving squares (ids 7 and 9, labels 0 and 2) as the data loader packs it.

    ``absent`` lists (frame, instance_id) pairs left out of the annotations.
    """
    rng = np.random.RandomState(seed)
    h, w = size
    frames, samples = [], []
    for t in range(num_frames):
        img = rng.randint(0, 60, (3, h, w)).astype(np.uint8)
        masks, labels, ids = [], [], []
        for instance_id, label, (y, x), colour in ((7, 0, (8, 6 + 4 * t), 200),
                                                   (9, 2, (36, 40 - 3 * t), 120)):
            if (t, instance_id) in absent:
                continue
            mask = np.zeros((h, w), np.uint8)
            mask[y:y + 16, x:x + 16] = 1
            img[:, y:y + 16, x:x + 16] = colour
            masks.append(mask)
            labels.append(label)
            ids.append(instance_id)
        frame = DetDataSample(metainfo=dict(img_shape=size, ori_shape=size, frame_id=t,
                                            pad_shape=size, batch_input_shape=size))
        frame.gt_instances = InstanceData(
            labels=torch.tensor(labels, dtype=torch.long),
            masks=BitmapMasks(np.stack(masks) if masks else np.zeros((0, h, w), np.uint8), h, w),
            instances_ids=torch.tensor(ids, dtype=torch.long),
            bboxes=torch.zeros(len(labels), 4))
        frames.append(torch.from_numpy(img))
        samples.append(frame)
    sample = TrackDataSample()
    sample.video_data_samples = samples
    return dict(inputs=torch.stack(frames), data_samples=sample)


def write_square_videos(root: str, num_videos: int = 3, num_frames: int = 3,
                        size: int = 16) -> str:
    """Videos of a bright 6x6 square moving on a dark ``size`` x ``size`` background, one
    category (``square``), PNG frames and ``annotations.json`` under ``root``.

    Video ``v`` (1-based) has its square at row ``2 + v``, moving 3 pixels right per frame from
    column 1, with brightness ``190 + 60 v // num_videos``.

    Returns:
        str: The path of ``annotations.json``.
    """
    if size < 6 + 2 + num_videos or size < 7 + 3 * (num_frames - 1):
        raise ValueError(f'write_square_videos: a {size}x{size} frame cannot hold the square of '
                         f'{num_videos} videos x {num_frames} frames')
    videos, annotations = [], []
    for video_id in range(1, num_videos + 1):
        names, rles = [], []
        for frame_id in range(num_frames):
            image = np.full((size, size, 3), 25, np.uint8)
            mask = np.zeros((size, size), np.uint8)
            y, x = 2 + video_id, 1 + 3 * frame_id
            image[y:y + 6, x:x + 6] = 190 + 60 * video_id // num_videos  # one brightness a video
            mask[y:y + 6, x:x + 6] = 1
            name = f'video{video_id}/{frame_id:05d}.png'
            mmcv.imwrite(image, osp.join(root, name))
            names.append(name)
            rles.append(rle_of(mask))
        videos.append(dict(id=video_id, width=size, height=size, length=num_frames,
                           file_names=names))
        annotations.append(dict(id=video_id, video_id=video_id, category_id=1, iscrowd=0,
                                segmentations=rles, areas=[36.0] * num_frames,
                                bboxes=[[1.0 + 3 * t, 2.0 + video_id, 6.0, 6.0]
                                        for t in range(num_frames)]))
    path = osp.join(root, 'annotations.json')
    with open(path, 'w') as f:
        json.dump(dict(videos=videos, annotations=annotations,
                       categories=[dict(id=1, name='square')]), f)
    return path
