"""ctvis.engine.visualization_hook: test-time drawing of video predictions."""
from types import SimpleNamespace

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch

from ctvis.engine import VideoMaskVisualizationHook, track_color
from ctvis.models import VideoPrediction
from mmdet.structures import DetDataSample, TrackDataSample


def test_visualization_hook_draws_each_frame_of_the_video_prediction(tmp_path):
    """Masks scoring above ``score_thr`` are blended with their track's colour into
    ``out_dir/<video_id>/<frame file>``; a score equal to the threshold is not drawn."""
    height, width, grey = 40, 48, 100
    masks = np.zeros((2, height, width), np.uint8)
    masks[0, 20:35, 8:30] = 1
    masks[1, 30:38, 36:46] = 1
    rles = []
    for mask in masks:
        rle = mask_util.encode(np.asfortranarray(mask))
        rles.append(dict(rle, counts=rle['counts'].decode()))
    prediction = VideoPrediction(
        scores=torch.tensor([0.75, 0.25], dtype=torch.float64), labels=torch.tensor([1, 0]),
        track_ids=torch.tensor([5, 7]), masks=[[rles[0], rles[0]], [rles[1], None]],
        ori_shape=(height, width), num_frames=2)
    frames = []
    for frame_id in range(2):
        path = str(tmp_path / f'{frame_id:05d}.png')
        cv2.imwrite(path, np.full((height, width, 3), grey, np.uint8))
        frames.append(DetDataSample(metainfo=dict(img_path=path, frame_id=frame_id, video_id=9)))
    video = TrackDataSample(metainfo=dict(video_id=9))
    video.video_data_samples = frames
    runner = SimpleNamespace(test_dataloader=SimpleNamespace(
        dataset=SimpleNamespace(metainfo=dict(classes=('cat', 'dog')))))
    hook = VideoMaskVisualizationHook(str(tmp_path / 'painted'), score_thr=0.25)
    hook.after_test_iter(runner, 0, dict(data_samples=[video]),
                         [prediction.to_data_sample(video_id=9)])
    blended = (0.5 * grey + 0.5 * np.array(track_color(5))).astype(np.uint8)
    for frame_id in range(2):
        painted = cv2.imread(str(tmp_path / 'painted' / '9' / f'{frame_id:05d}.png'))
        assert (painted[28, 20] == blended).all()  # inside track 5's mask, off its box and label
        assert (painted[30:38, 36:46] == grey).all()  # track 7 scores the threshold: not drawn
    assert hook.frame_paths == {}  # every frame drawn once
    with pytest.raises(KeyError, match='no img_path was seen for frame 0 of video 9'):
        hook.draw_video(prediction.to_data_sample(video_id=9), None)
