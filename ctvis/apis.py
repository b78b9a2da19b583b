"""Frame-by-frame inference: feed a frame, get the tracks in it; finish to get the video result."""
import copy
import os.path as osp
import weakref
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch
from mmcv.transforms import LoadImageFromFile
from mmengine.config import Config
from mmengine.dataset import Compose, pseudo_collate
from mmengine.registry import init_default_scope
from mmengine.runner import load_checkpoint
from mmengine.structures import InstanceData

from mmdet.registry import MODELS, TRANSFORMS
from mmdet.structures import TrackDataSample

from .utils.checkpoint import checkpoint_problem, weights_problem
from .utils.checkpoint_loaders import safe_checkpoint_loading
from .utils.config_tools import builds_class
from .utils.tool_config import read_config

# model -> the live segmenter that drives it (kept off the model: copies and pickles stay clean)
_SEGMENTER_OF_MODEL: 'weakref.WeakKeyDictionary[torch.nn.Module, weakref.ref]' = \
    weakref.WeakKeyDictionary()
_GREY_TO_BGR = 'cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)'
_BGRA_TO_BGR = 'cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)'


def check_frame(frame: np.ndarray, frame_index: int,
                video_size: Optional[Tuple[int, int]] = None) -> None:
    """Raise a ValueError naming the frame and the problem unless it is an (H, W, 3) uint8 image.

    Nothing is converted silently: a float frame in [0, 1] would be read as black and a uint16
    frame as saturated, so each message says how to convert instead.

    Args:
        frame (np.ndarray): The frame as given to :meth:`OnlineVideoSegmenter.step`.
        frame_index (int): Its index in the video, for the message.
        video_size (tuple[int, int], optional): (H, W) of the video's earlier frames.
    """
    where = f'OnlineVideoSegmenter.step: frame {frame_index}'
    if not isinstance(frame, np.ndarray):
        raise ValueError(f'{where}: expected a numpy array (H, W, 3), got {type(frame).__name__}')
    if frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] == 1):
        raise ValueError(f'{where}: single-channel image of shape {frame.shape}; the model takes '
                         f'(H, W, 3) BGR: convert with {_GREY_TO_BGR}')
    if frame.ndim == 3 and frame.shape[2] == 4:
        raise ValueError(f'{where}: 4-channel image of shape {frame.shape}; the model takes '
                         f'(H, W, 3) BGR: convert with {_BGRA_TO_BGR}')
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f'{where}: expected an (H, W, 3) BGR image, got shape {frame.shape}')
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise ValueError(f'{where}: empty image of shape {frame.shape}')
    if np.issubdtype(frame.dtype, np.floating):
        if not np.isfinite(frame).all():
            raise ValueError(f'{where}: {frame.dtype} image with NaN or infinite values')
        raise ValueError(
            f'{where}: {frame.dtype} image with values in [{frame.min():.3g}, '
            f'{frame.max():.3g}]; the model takes uint8 (0..255): convert with '
            '(frame * 255).round().astype(np.uint8) for values in [0, 1], or '
            'frame.clip(0, 255).round().astype(np.uint8) for values in [0, 255]')
    if frame.dtype == np.uint16:
        raise ValueError(f'{where}: uint16 image (values up to {frame.max()}); the model takes '
                         'uint8 (0..255): convert with (frame // 257).astype(np.uint8) for '
                         'the full 16-bit range')
    if frame.dtype != np.uint8:
        raise ValueError(f'{where}: {frame.dtype} image; the model takes uint8 (0..255) BGR')
    if video_size is not None and frame.shape[:2] != video_size:
        raise ValueError(
            f'{where}: size {frame.shape[0]}x{frame.shape[1]} differs from this video\'s '
            f'{video_size[0]}x{video_size[1]} (its first frame); resize the frame, or call '
            'reset() to start a new video')


def in_memory_test_pipeline(pipeline: Sequence[dict]) -> list:
    """A copy of a config's test pipeline that takes decoded frames instead of file paths."""
    pipeline = copy.deepcopy(list(pipeline))

    def swap(transforms):
        for t in transforms:
            if builds_class(TRANSFORMS, t['type'], LoadImageFromFile):
                t['type'] = 'mmdet.LoadImageFromNDArray'
            swap(t.get('transforms', []))

    swap(pipeline)
    return pipeline


class OnlineVideoSegmenter:
    """Run a CTVIS model on a stream of frames (a video file, a camera, a folder of images).

    The tracker's memory bank forgets tracks unseen for ``num_dead_frames``, so the association's
    work does not grow with the stream. What grows with it is the record behind
    :meth:`finish`'s video-level result (each detection's RLE mask and class logits, about 1 KiB
    a detection plus the mask's runs); a stream that never asks for it (a camera) passes
    ``video_result=False``, and its memory then stays flat.

    Example:
        >>> segmenter = OnlineVideoSegmenter.from_config(config, checkpoint)
        >>> for frame in frames:  # BGR uint8 arrays (H, W, 3), all of one size
        ...     tracks = segmenter.step(frame)  # tracks.instances_id / labels / scores / masks
        >>> video = segmenter.finish()  # video-level top-k predictions (TrackDataSample)

    The tracker's state lives on the model, so a model serves one segmenter (one stream) at a
    time: wrapping a model that another live segmenter drives raises ``ValueError`` (two
    interleaved streams would mix their tracks); build a model per stream.

    Args:
        model (torch.nn.Module): A built :class:`~ctvis.models.CTVIS` with its weights.
        test_pipeline (Sequence[dict]): The config's test pipeline (file loading is replaced
            by in-memory loading).
        compile (bool): Run the per-frame network through ``torch.compile``
            (:meth:`~ctvis.models.CTVIS.compile_detector`; the tracker stays eager). The first
            frame then takes the compile time; see docs/benchmarks.md for when it pays.
        video_result (bool): Keep the record :meth:`finish` needs (``False``: per-frame tracks
            only, flat memory on endless streams; :meth:`finish` then raises). Defaults to True.
    """

    def __init__(self, model: torch.nn.Module, test_pipeline: Sequence[dict],
                 compile: bool = False, video_result: bool = True) -> None:
        owner = _SEGMENTER_OF_MODEL.get(model)
        if owner is not None and owner() is not None:
            raise ValueError('OnlineVideoSegmenter: this model already drives another live '
                             'OnlineVideoSegmenter; the tracker state lives on the model, so two '
                             'streams would mix their tracks: build one model per stream')
        _SEGMENTER_OF_MODEL[model] = weakref.ref(self)
        self.model = model.eval()
        self.model.record_video = video_result
        if compile:
            self.model.compile_detector()
        self.pipeline = Compose(in_memory_test_pipeline(test_pipeline))
        self.class_names = None
        self.reset()

    @classmethod
    def from_config(cls, config: Union[str, Config], checkpoint: Optional[str] = None,
                    device: str = 'cpu', compile: bool = False,
                    video_result: bool = True) -> 'OnlineVideoSegmenter':
        """Build the model of ``config``, load ``checkpoint`` (safely) and wrap it (``compile``
        and ``video_result``: as in the constructor).

        Raises:
            ValueError: the config has invalid syntax or lacks ``model`` or
                ``test_dataloader.dataset.pipeline``; the checkpoint file is damaged
                (:func:`ctvis.utils.checkpoint_problem`: a flipped byte would load silently) or
                cannot give the model all its weights, finite ones
                (:func:`ctvis.utils.weights_problem`); ``device`` cannot be used.
        """
        cfg = read_config(config) if isinstance(config, str) else config
        name = config if isinstance(config, str) else 'the config'
        pipeline = cfg.get('test_dataloader', {}).get('dataset', {}).get('pipeline')
        if 'model' not in cfg or pipeline is None:
            raise ValueError(f'{name}: needs model and test_dataloader.dataset.pipeline (a CTVIS '
                             'test config), has ' + (', '.join(cfg.keys()) or 'nothing'))
        init_default_scope(cfg.get('default_scope', 'mmdet'))
        model = MODELS.build(cfg.model)
        if checkpoint is not None:
            if osp.isdir(checkpoint):
                raise ValueError(f'{checkpoint}: is a folder, not a checkpoint file')
            problem = checkpoint_problem(checkpoint) if osp.isfile(checkpoint) else None
            if problem is not None:
                raise ValueError(f'{checkpoint}: {problem}')
            with safe_checkpoint_loading():  # no code from the file runs; URLs too
                problem = weights_problem(model, load_checkpoint(model, checkpoint,
                                                                 map_location='cpu'))
            if problem is not None:
                raise ValueError(f'{checkpoint}: {problem}')
        try:
            model.to(device)
        except (AssertionError, RuntimeError) as error:  # torch: no CUDA, bad ordinal ...
            raise ValueError(f'device {device!r} cannot be used: {error}') from None
        segmenter = cls(model, pipeline, compile=compile, video_result=video_result)
        classes = cfg.test_dataloader.dataset.get('metainfo', {}).get('classes')
        segmenter.class_names = tuple(classes) if classes else None
        return segmenter

    def reset(self) -> None:
        """Start a new video."""
        self.frame_id = 0
        self.frame_size: Optional[Tuple[int, int]] = None  # (H, W) of this video's frames
        self.last_meta: Optional[dict] = None

    @torch.no_grad()
    def step(self, frame: np.ndarray) -> InstanceData:
        """Track one frame.

        Args:
            frame (np.ndarray): BGR uint8 image (H, W, 3), of the same size as the video's first
                frame (the video-level masks share one size).

        Returns:
            InstanceData: The tracks present in the frame: ``instances_id`` (N,), ``labels`` (N,),
            ``scores`` (N,) of this frame's detection, ``queries`` (N,) the detector's query
            each detection comes from, ``masks``: N RLE dicts at frame size.

        Raises:
            ValueError: For any other frame (float, uint16, NaN, empty, other channel counts,
                another size), naming the frame index, the problem and the conversion; the
                segmenter is unchanged and takes the next frame.
        """
        check_frame(frame, self.frame_id, self.frame_size)
        data = self.pipeline(dict(img=[frame], img_id=[self.frame_id], frame_id=[self.frame_id],
                                  video_id=[0]))
        data = self.model.data_preprocessor(pseudo_collate([data]), False)
        meta = data['data_samples'][0][0].metainfo
        logits, mask_logits, embeds = self.model.detect(data['inputs'][0])
        tracks = self.model.track_frame(meta, logits[0], mask_logits[0], embeds[0])
        self.last_meta = meta
        self.frame_size = frame.shape[:2]
        self.frame_id += 1
        return tracks

    def finish(self) -> TrackDataSample:
        """Video-level predictions of everything seen since :meth:`reset` (then reset)."""
        if self.last_meta is None:
            raise RuntimeError('OnlineVideoSegmenter.finish: no frame was given')
        if not self.model.record_video:
            raise RuntimeError('OnlineVideoSegmenter.finish: this segmenter was made with '
                               'video_result=False and keeps no video-level record; call reset() '
                               'to start a new video')
        result = self.model.video_result(self.last_meta)
        self.reset()
        return result
