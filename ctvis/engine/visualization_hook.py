"""Test-time drawing of every finished video's predicted masks on its frames."""
import os.path as osp
from typing import Dict, Optional, Sequence

import mmcv
from mmengine.hooks import Hook

from mmdet.registry import HOOKS
from mmdet.structures import TrackDataSample
from ..models.video_tracks import VideoPrediction
from .track_drawing import draw_tracks


@HOOKS.register_module()
class VideoMaskVisualizationHook(Hook):
    """Draw every finished video's predicted masks on its frames (test time).

    Why not mmdet's TrackVisualizationHook: it draws only ``outputs[0][0]`` of a step, expects
    bitmap masks, names folders by ``img_path.split('/')[-3]`` (``JPEGImages`` for every
    YouTube-VIS video) and its TrackLocalVisualizer needs seaborn for colours. ctvis' online model
    returns, once a video is complete, one sample with the whole video's predictions as RLE
    (``video_complete=True``); this hook remembers each frame's ``img_path`` as the frames go by
    and then draws them with :func:`~ctvis.engine.track_drawing.draw_tracks` (masks, outlines
    and ``track class score`` labels, as the demo) into ``out_dir/<video_id>/<frame file name>``.
    It draws with OpenCV, on every rank (mmengine's visualizers draw on rank 0 only, and each rank
    tests its own videos).

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
            classes (Sequence[str], optional): Class names; labels are drawn as their index
                without them.
        """
        video = VideoPrediction.from_data_sample(result)
        for frame_id in range(video.num_frames):
            path = self.frame_paths.pop((video.video_id, frame_id), None)
            if path is None:
                raise KeyError(f'--show-dir: no img_path was seen for frame {frame_id} of '
                               f'video {video.video_id}; the test pipeline must pack img_path')
            canvas = draw_tracks(mmcv.imread(path), video.frame_instances(frame_id), classes,
                                 self.score_thr)  # BGR
            mmcv.imwrite(canvas, osp.join(self.out_dir, str(video.video_id),
                                          osp.basename(path)))
