"""Frame-by-frame inference: feed a frame, get the tracks in it; finish to get the video result."""
import copy
from typing import Optional, Sequence, Union

import numpy as np
import torch
from mmengine.config import Config
from mmengine.dataset import Compose, pseudo_collate
from mmengine.registry import init_default_scope
from mmengine.runner import load_checkpoint
from mmengine.structures import InstanceData

from mmdet.registry import MODELS
from mmdet.structures import TrackDataSample


def in_memory_test_pipeline(pipeline: Sequence[dict]) -> list:
    """A copy of a config's test pipeline that takes decoded frames instead of file paths."""
    pipeline = copy.deepcopy(list(pipeline))

    def swap(transforms):
        for t in transforms:
            if t['type'] in ('LoadImageFromFile', 'mmdet.LoadImageFromFile'):
                t['type'] = 'mmdet.LoadImageFromNDArray'
            swap(t.get('transforms', []))

    swap(pipeline)
    return pipeline


class OnlineVideoSegmenter:
    """Run a CTVIS model on a stream of frames (a video file, a camera, a folder of images).

    Memory does not grow with the number of frames: the tracker keeps per-track RLE masks and
    running sums only.

    Example:
        >>> segmenter = OnlineVideoSegmenter.from_config(config, checkpoint)
        >>> for frame in frames:  # BGR uint8 arrays (H, W, 3)
        ...     tracks = segmenter.step(frame)  # tracks.instances_id / labels / scores / masks
        >>> video = segmenter.finish()  # video-level top-k predictions (TrackDataSample)

    Args:
        model (torch.nn.Module): A built :class:`~ctvis.models.CTVIS` with its weights.
        test_pipeline (Sequence[dict]): The config's test pipeline (file loading is replaced
            by in-memory loading).
    """

    def __init__(self, model: torch.nn.Module, test_pipeline: Sequence[dict]) -> None:
        self.model = model.eval()
        self.pipeline = Compose(in_memory_test_pipeline(test_pipeline))
        self.class_names = None
        self.reset()

    @classmethod
    def from_config(cls, config: Union[str, Config], checkpoint: Optional[str] = None,
                    device: str = 'cpu') -> 'OnlineVideoSegmenter':
        """Build the model of ``config``, load ``checkpoint`` (safely) and wrap it."""
        cfg = Config.fromfile(config) if isinstance(config, str) else config
        init_default_scope(cfg.get('default_scope', 'mmdet'))
        model = MODELS.build(cfg.model)
        if checkpoint is not None:
            load_checkpoint(model, checkpoint, map_location='cpu')
        model.to(device)
        segmenter = cls(model, cfg.test_dataloader.dataset.pipeline)
        classes = cfg.test_dataloader.dataset.get('metainfo', {}).get('classes')
        segmenter.class_names = tuple(classes) if classes else None
        return segmenter

    def reset(self) -> None:
        """Start a new video."""
        self.frame_id = 0
        self.last_meta: Optional[dict] = None

    @torch.no_grad()
    def step(self, frame: np.ndarray) -> InstanceData:
        """Track one frame.

        Args:
            frame (np.ndarray): BGR uint8 image (H, W, 3).

        Returns:
            InstanceData: The tracks present in the frame: ``instances_id`` (N,), ``labels`` (N,),
            ``scores`` (N,) of this frame's detection, ``masks``: N RLE dicts at frame size.
        """
        if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError('OnlineVideoSegmenter.step expects an (H, W, 3) BGR image, got '
                             f'{getattr(frame, "shape", type(frame))}')
        data = self.pipeline(dict(img=[frame], img_id=[self.frame_id], frame_id=[self.frame_id],
                                  video_id=[0]))
        data = self.model.data_preprocessor(pseudo_collate([data]), False)
        meta = data['data_samples'][0][0].metainfo
        logits, mask_logits, embeds = self.model.detect(data['inputs'][0])
        tracks = self.model.track_frame(meta, logits[0], mask_logits[0], embeds[0])
        self.last_meta = meta
        self.frame_id += 1
        return tracks

    def finish(self) -> TrackDataSample:
        """Video-level predictions of everything seen since :meth:`reset` (then reset)."""
        if self.last_meta is None:
            raise RuntimeError('OnlineVideoSegmenter.finish: no frame was given')
        result = self.model.video_result(self.last_meta)
        self.reset()
        return result
