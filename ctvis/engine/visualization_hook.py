"""Test-time drawing of every finished video's predicted masks on its frames, and the one colour
per track that this hook and ``demo/video_demo.py`` draw with."""
import os.path as osp
from typing import Dict, Optional, Sequence, Tuple

import cv2
import mmcv
import numpy as np
import pycocotools.mask as mask_utils
import torch
from mmengine.hooks import Hook
from mmengine.structures import InstanceData

from mmdet.registry import HOOKS
from mmdet.structures import TrackDataSample
from mmdet.structures.mask import mask2bbox
from ..models.video_tracks import VideoPrediction

_GOLDEN_RATIO_CONJUGATE = 0.61803398875


def track_color(track_id: int) -> Tuple[int, int, int]:
    """A vivid BGR colour that depends only on the track id, so a track keeps its colour.

    Hues step by the golden ratio, so consecutive ids (the usual neighbours) get far-apart hues;
    saturation 200 and value 255 keep every colour bright enough to read over a frame.
    """
    hue = (int(track_id) * _GOLDEN_RATIO_CONJUGATE) % 1.0
    hsv = np.uint8([[[int(hue * 179), 200, 255]]])  # OpenCV hue range: 0..179
    return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0])


@HOOKS.register_module()
class VideoMaskVisualizationHook(Hook):
    """Draw every finished video's predicted masks on its frames (test time).

    Why not mmdet's TrackVisualizationHook: it draws only ``outputs[0][0]`` of a step, expects
    bitmap masks, names folders by ``img_path.split('/')[-3]`` (``JPEGImages`` for every
    YouTube-VIS video) and its TrackLocalVisualizer needs seaborn for colours. ctvis' online model
    returns, once a video is complete, one sample with the whole video's predictions as RLE
    (``video_complete=True``); this hook remembers each frame's ``img_path`` as the frames go by
    and then draws masks, boxes and ``class id | score`` into
    ``out_dir/<video_id>/<frame file name>``. It draws with OpenCV, on every rank (mmengine's
    visualizers draw on rank 0 only, and each rank tests its own videos).

    Args:
        out_dir (str): Where the drawn frames go.
        score_thr (float): Predictions scoring at most this are not drawn.
    """
    priority = 'NORMAL'

    def __init__(self, out_dir: str, score_thr: float = 0.3) -> None:
        self.out_dir = out_dir
        self.score_thr = score_thr
        self.frame_paths: Dict[tuple, str] = {}

    def after_test_iter(self, runner, batch_idx: int, data_batch: Optional[dict] = None,
                        outputs: Optional[list] = None) -> None:
        for video in (data_batch or {}).get('data_samples', []):
            for frame in video:
                if 'img_path' in frame:
                    self.frame_paths[(frame.get('video_id', video.get('video_id')),
                                      frame.frame_id)] = frame.img_path
        classes = (runner.test_dataloader.dataset.metainfo or {}).get('classes')
        for result in outputs or []:
            if result.get('video_complete', False):
                self.draw_video(result, classes)

    def draw_video(self, result: TrackDataSample, classes: Optional[Sequence[str]]) -> None:
        """Draw one finished video, read as a :class:`~ctvis.models.VideoPrediction`.

        Args:
            result (TrackDataSample): The model's ``video_complete`` sample
                (:meth:`VideoPrediction.to_data_sample`); frame ``t`` of the prediction is
                drawn on the image seen with ``frame_id`` t.
            classes (Sequence[str], optional): Class names; labels are drawn as ``class i``
                without them.
        """
        video = VideoPrediction.from_data_sample(result)
        for frame_id in range(video.num_frames):
            path = self.frame_paths.pop((video.video_id, frame_id), None)
            if path is None:
                raise KeyError(f'--show-dir: no img_path was seen for frame {frame_id} of '
                               f'video {video.video_id}; the test pipeline must pack img_path')
            canvas = mmcv.imread(path)  # BGR
            instances = self.decoded(video.frame_instances(frame_id), canvas.shape)
            shown = instances[(instances.scores > self.score_thr)
                              & torch.from_numpy(instances.masks.any(axis=(1, 2)))]
            for mask, box, label, track_id, score in zip(shown.masks, shown.bboxes.int().tolist(),
                                                         shown.labels.tolist(),
                                                         shown.instances_id.tolist(),
                                                         shown.scores.tolist()):
                color = track_color(track_id)
                canvas[mask] = (0.5 * canvas[mask] + 0.5 * np.array(color)).astype(np.uint8)
                cv2.rectangle(canvas, tuple(box[:2]), tuple(box[2:]), color, 1)
                name = classes[label] if classes else f'class {label}'
                cv2.putText(canvas, f'{name} {track_id} | {score:.2f}',
                            (box[0], max(box[1] - 3, 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.4, color,
                            1, cv2.LINE_AA)
            mmcv.imwrite(canvas, osp.join(self.out_dir, str(video.video_id),
                                          osp.basename(path)))

    @staticmethod
    def decoded(instances: InstanceData, image_shape: tuple) -> InstanceData:
        """RLE (or None) masks -> bool (K, H, W) masks and their (K, 4) boxes."""
        height, width = image_shape[:2]
        masks = np.stack([
            mask_utils.decode(rle).astype(bool) if rle is not None else
            np.zeros((height, width), bool) for rle in instances.masks
        ]) if len(instances) else np.zeros((0, height, width), bool)
        return InstanceData(
            masks=masks, bboxes=mask2bbox(torch.from_numpy(masks)).float(),
            labels=torch.as_tensor(instances.labels), scores=torch.as_tensor(instances.scores),
            instances_id=torch.as_tensor(instances.instances_id))
