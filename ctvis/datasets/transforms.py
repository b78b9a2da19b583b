"""Training-clip transforms for real videos: clip sampling and empty-instance removal.

Clip-consistent augmentation itself needs no new code: mmcv's
``TransformBroadcaster(share_random_params=True)`` around mmdet's ``RandomCrop``,
``RandomChoiceResize`` and ``RandomFlip`` (crop wrapped in ``RandomApply``) draws each random
parameter once per clip, because all of them are ``@cache_randomness`` methods
(``tests/test_datasets/test_ytvis.py`` checks this). ``RandomCrop`` must be given
``allow_negative_crop=True``: otherwise a frame whose crop holds no box returns ``None`` and the
broadcaster fails on the whole clip. See ``docs/dataset_prepare.md`` for the full pipeline.
"""
from typing import Dict, List, Optional, Sequence

import numpy as np
from mmcv.transforms import BaseTransform

from mmdet.datasets.transforms import BaseFrameSample
from mmdet.registry import TRANSFORMS


@TRANSFORMS.register_module()
class VideoClipSample(BaseFrameSample):
    """Sample a training clip of ``num_frames`` frames around a random reference frame.

    CTVIS clip sampling: the reference frame r is uniform over the video (or the ``key_frame_id``
    given by a frame-level sampler); the other ``num_frames - 1`` frames are drawn **with
    replacement** from ``[r - frame_range, r + frame_range] \\ {r}`` clipped to the video, so a
    clip may repeat frames; a 1-frame video repeats its only frame. Indices are sorted (temporal
    order). mmdet's ``UniformRefFrameSample`` samples without replacement, hence this class.

    Required Keys:

    - images (list[dict]): the per-frame infos of the video
    - video_length
    - video_id
    - key_frame_id (optional, int)

    Added Keys (every value is a list with one entry per sampled frame):

    - the keys of each sampled frame info (img_path, img_id, frame_id, instances, ...)
    - video_id, video_length (= num_frames), ori_video_length
    - key_frame_flags (list[bool]): True at the reference frame

    Args:
        num_frames (int): Clip length T. Defaults to 10.
        frame_range (int): Half-width R of the window around the reference frame.
            Defaults to 20.
        collect_video_keys (Sequence[str]): Video-level keys copied to every frame.
    """

    def __init__(self,
                 num_frames: int = 10,
                 frame_range: int = 20,
                 collect_video_keys: Sequence[str] = ('video_id', 'video_length')) -> None:
        if not isinstance(num_frames, int) or num_frames < 1:
            raise ValueError(f'VideoClipSample: num_frames must be an int >= 1, got {num_frames}')
        if not isinstance(frame_range, int) or frame_range < 1:
            raise ValueError(
                f'VideoClipSample: frame_range must be an int >= 1, got {frame_range}')
        super().__init__(collect_video_keys=list(collect_video_keys))
        self.num_frames = num_frames
        self.frame_range = frame_range

    def sample_frame_indices(self, video_length: int, reference: int) -> List[int]:
        """Sorted indices of a clip: ``reference`` plus ``num_frames - 1`` frames drawn with
        replacement from its ±``frame_range`` window (the reference itself excluded)."""
        low = max(0, reference - self.frame_range)
        high = min(video_length - 1, reference + self.frame_range)
        candidates = [index for index in range(low, high + 1) if index != reference]
        if candidates:
            others = np.random.choice(candidates, self.num_frames - 1, replace=True).tolist()
        else:
            others = [reference] * (self.num_frames - 1)
        return sorted([reference] + others)

    def transform(self, video_infos: dict) -> Optional[Dict[str, List]]:
        """Sample the clip and collate its frame infos into lists (see class docstring)."""
        video_length = video_infos['video_length']
        if video_length < 1 or len(video_infos['images']) != video_length:
            raise ValueError(
                f"VideoClipSample: video {video_infos.get('video_id')} has video_length="
                f"{video_length} but {len(video_infos['images'])} frame infos")
        reference = video_infos.get('key_frame_id')
        if reference is None:
            reference = int(np.random.randint(video_length))
        elif not 0 <= reference < video_length:
            raise ValueError(f'VideoClipSample: key_frame_id {reference} is outside video '
                             f"{video_infos.get('video_id')} of length {video_length}")
        indices = self.sample_frame_indices(video_length, reference)
        results = self.prepare_data(video_infos, indices)
        key_frame_flags = [False] * len(indices)
        key_frame_flags[indices.index(reference)] = True
        results['key_frame_flags'] = key_frame_flags
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(num_frames={self.num_frames}, '
                f'frame_range={self.frame_range}, '
                f'collect_video_keys={self.collect_video_keys})')


@TRANSFORMS.register_module()
class DropEmptyMaskInstances(BaseTransform):
    """Remove the instances whose mask has fewer than ``min_mask_area`` pixels from one frame.

    Used per frame (inside ``TransformBroadcaster``) after augmentation: an instance cropped or
    shrunk away becomes absent from that frame, which is how the model sees absent instances.
    mmdet's ``FilterAnnotations`` does not filter ``gt_instances_ids``, so it would misalign ids
    and masks in a tracking pipeline.

    Required Keys:

    - gt_masks (BitmapMasks | PolygonMasks)

    Modified Keys (each filtered with the same mask, when present):

    - gt_masks
    - gt_bboxes
    - gt_bboxes_labels
    - gt_ignore_flags
    - gt_instances_ids

    Args:
        min_mask_area (int): Smallest mask area (pixels) that is kept. Defaults to 1.
    """

    filtered_keys = ('gt_masks', 'gt_bboxes', 'gt_bboxes_labels', 'gt_ignore_flags',
                     'gt_instances_ids')

    def __init__(self, min_mask_area: int = 1) -> None:
        self.min_mask_area = min_mask_area

    def transform(self, results: dict) -> dict:
        """Filter the instance keys of one frame by mask area."""
        if 'gt_masks' not in results:
            raise KeyError('DropEmptyMaskInstances needs gt_masks; load annotations with '
                           "LoadTrackAnnotations(with_mask=True) first")
        masks = results['gt_masks']
        keep = np.asarray(masks.areas) >= self.min_mask_area
        if keep.all():
            return results
        for key in self.filtered_keys:
            if results.get(key) is None:
                continue
            if len(results[key]) != len(keep):
                raise ValueError(f'DropEmptyMaskInstances: {key} has {len(results[key])} '
                                 f'entries but gt_masks has {len(keep)} '
                                 f"({results.get('img_path')})")
            results[key] = results[key][keep]
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}(min_mask_area={self.min_mask_area})'
