"""The CTVIS video instance segmenter: a per-frame Mask2Former, consistent training, online
tracking."""
from typing import Callable, Dict, List, Optional, Tuple, Union

import torch
from mmengine.structures import InstanceData
from torch import Tensor

from mmdet.models.mot import BaseMOTModel
from mmdet.registry import MODELS
from mmdet.structures import TrackDataSample, TrackSampleList
from mmdet.utils import ConfigType, OptConfigType, OptMultiConfig
from .base_tracker import BaseVideoTracker
from .mask_utils import encode_masks, output_binary_masks, resize_mask_logits
from .tracker import check_settings


def clip_slot_queries(instance_ids: List[Tensor], query_of_gt: List[Tensor]) -> Tensor:
    """Per-clip instance slots: which query holds each instance in each frame.

    Args:
        instance_ids (list[Tensor]): Per frame, the instance ids of its ground truth (G_t,).
        query_of_gt (list[Tensor]): Per frame, the query matched to each ground truth (G_t,).

    Returns:
        Tensor: Shape (T, S) for the S instances of the clip (sorted by id): the matched query,
        or -1 where the instance is absent from the frame.
    """
    slot_ids = sorted({int(i) for ids in instance_ids for i in ids})
    slot_of_id = {instance_id: s for s, instance_id in enumerate(slot_ids)}
    slots = torch.full((len(instance_ids), len(slot_ids)), -1, dtype=torch.long)
    for t, (ids, queries) in enumerate(zip(instance_ids, query_of_gt)):
        if len(set(ids.tolist())) != len(ids):
            raise ValueError(f'frame {t} of a clip has duplicated instance ids {ids.tolist()}: '
                             'instance ids must be unique within a frame')
        for instance_id, query in zip(ids.tolist(), queries.tolist()):
            slots[t, slot_of_id[instance_id]] = query
    return slots


@MODELS.register_module()
class CTVIS(BaseMOTModel):
    """CTVIS: consistent training for online video instance segmentation.

    Training runs every frame of every clip through the detector independently, applies the
    Mask2Former losses per frame and the consistent contrastive loss per clip. Inference is
    online: frames arrive one at a time (or in short chunks), the tracker associates their queries
    with its memory bank, and when a video's last frame has been seen the video-level predictions
    (top-k over track x class) are returned.

    Args:
        backbone (dict): Backbone config (mmdet ``ResNet``, ``SwinTransformer``, ...).
        track_head (dict): :class:`~ctvis.models.CTVISHead` config.
        contrastive_loss (dict): :class:`~ctvis.models.ConsistentContrastiveLoss` config.
        tracker (dict): Config of a :class:`~ctvis.models.BaseVideoTracker`
            (:class:`~ctvis.models.CTVISTracker` by default).
        data_preprocessor (dict, optional): ``TrackDataPreprocessor`` config.
        test_cfg (dict, optional): ``max_per_video`` (top-k, default: number of classes) and
            ``chunk_size`` (frames per detector forward at test time, default 5).
        init_cfg (dict, optional): Initialisation config.
    """

    def __init__(self, backbone: ConfigType, track_head: ConfigType,
                 contrastive_loss: ConfigType, tracker: ConfigType,
                 data_preprocessor: OptConfigType = None, train_cfg: OptConfigType = None,
                 test_cfg: OptConfigType = None, init_cfg: OptMultiConfig = None) -> None:
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.backbone = MODELS.build(backbone)
        self.track_head = MODELS.build(track_head)
        self.contrastive_loss = MODELS.build(contrastive_loss)
        self.tracker = MODELS.build(tracker)
        if not isinstance(self.tracker, BaseVideoTracker):
            raise TypeError(f'CTVIS: the tracker config builds a {type(self.tracker).__name__}, '
                            'which is not a ctvis.models.BaseVideoTracker')
        self.test_cfg = dict(test_cfg or {})
        unknown = sorted(set(self.test_cfg) - {'max_per_video', 'chunk_size'})
        if unknown:
            raise ValueError(f'CTVIS: test_cfg has unknown keys {unknown}; it takes max_per_video '
                             'and chunk_size')
        max_per_video = self.test_cfg.get('max_per_video')  # None: the number of classes
        self.max_per_video = self.track_head.num_classes if max_per_video is None else max_per_video
        self.chunk_size = self.test_cfg.get('chunk_size', 5)
        check_settings('CTVIS', {'test_cfg.max_per_video': (self.max_per_video, 1),
                                 'test_cfg.chunk_size': (self.chunk_size, 1)}, {}, {})
        self._compiled_network: Optional[Callable] = None  # see compile_detector
        # Whether track_frame keeps the video-level record that video_result reads (each
        # detection's RLE mask and class logits, about 1 KiB): a stream that never asks for the
        # video result (a camera) turns it off, and its memory then stays flat.
        self.record_video = True

    # ----------------------------------------------------------------------------------- common
    def detect(self, frames: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """Final-layer outputs for a batch of independent frames.

        Runs :meth:`_network`, through ``torch.compile`` after :meth:`compile_detector`.

        Args:
            frames (Tensor): Normalised, padded frames (B, 3, H, W).

        Returns:
            tuple[Tensor, Tensor, Tensor]: Class logits (B, Q, C + 1), mask logits at the
            stride of the highest-resolution feature (B, Q, H/4, W/4 with Mask2Former's
            backbones) and re-id embeddings (B, Q, E).
        """
        if self._compiled_network is None:
            return self._network(frames)
        try:
            return self._compiled_network(self, frames)
        except torch._dynamo.exc.BackendCompilerFailed as error:
            cause = getattr(error, 'inner_exception', None) or error
            first_line = (str(cause).strip().splitlines() or [''])[0]
            raise RuntimeError(
                f'CTVIS.detect: torch.compile could not compile the network for frames of '
                f'shape {tuple(frames.shape)} ({type(cause).__name__}: {first_line}). '
                'Inductor needs a working C++ compiler on the CPU (g++, or the one $CXX '
                'names, and the Python headers) and Triton on CUDA: install them, or run '
                'without compiling (drop --compile / pass compile=False)') from error

    def _network(self, frames: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """The per-frame network of :meth:`detect`: backbone, pixel decoder, transformer decoder
        and re-id MLP, final layer only (what ``torch.compile`` compiles)."""
        return self.track_head.predict_final(self.backbone(frames))

    def compile_detector(self, dynamic: Optional[bool] = False,
                         backend: Union[str, Callable] = 'inductor',
                         mode: Optional[str] = None) -> None:
        """Run the per-frame network of :meth:`detect` through ``torch.compile`` from now on.

        Only the network is compiled; the tracker, the mask resizing and the video output stay
        eager Python, since they are data-dependent and cheap. The network traces as one graph
        (no graph breaks; tested). Compiling happens at the first frame of each new input shape
        (and grad mode); with the default ``dynamic=False`` every shape gets its own specialised
        graph, up to torch's recompile limit (``torch._dynamo.config.recompile_limit``), after
        which new shapes run eagerly.
        The module's parameters and state-dict keys are unchanged: weights loaded later are
        used.

        Args:
            dynamic (bool, optional): ``torch.compile``'s ``dynamic`` (False: one graph per
                input shape, the fastest for a video stream whose frames share one size).
            backend (str or callable): ``torch.compile`` backend (``'inductor'``;
                ``'aot_eager'`` traces without generating code).
            mode (str, optional): ``torch.compile`` mode (e.g. ``'max-autotune'``).

        Raises:
            RuntimeError: If this Python / platform has no ``torch.compile`` (checked now), or,
                at the first frame, if the backend cannot compile (e.g. no C++ compiler).
        """
        if not torch._dynamo.is_dynamo_supported():
            raise RuntimeError(
                f'CTVIS.compile_detector: torch.compile is not supported with torch '
                f'{torch.__version__} on this Python / platform; run without compiling')
        # the function, not the bound method: a copy of the model compiles for itself
        self._compiled_network = torch.compile(type(self)._network, dynamic=dynamic,
                                               backend=backend, mode=mode)

    def _forward(self, inputs: Tensor, data_samples: Optional[TrackSampleList] = None,
                 **kwargs) -> Tuple[Tensor, Tensor, Tensor]:
        """Network outputs for (N, T, 3, H, W) inputs, flattened to N*T frames (see
        :meth:`detect`)."""
        return self.detect(inputs.flatten(0, 1))

    # ----------------------------------------------------------------------------------- train
    def loss(self, inputs: Tensor, data_samples: TrackSampleList, **kwargs) -> Dict[str, Tensor]:
        """Detection and consistent contrastive losses of a batch of clips.

        Args:
            inputs (Tensor): Clips (N, T, 3, H, W), normalised and padded.
            data_samples (list[TrackDataSample]): N clips of T frames with ``gt_instances``
                (``labels``, ``masks``, ``instances_ids``).

        Returns:
            dict[str, Tensor]: Mask2Former losses of every decoder layer plus ``loss_reid`` and
            ``loss_aux_reid``.
        """
        num_clips, num_frames = inputs.shape[:2]
        frame_samples = [frame for clip in data_samples for frame in clip]
        for frame in frame_samples:
            gt = frame.gt_instances
            if len(gt) > 0:  # an instance cropped out of a frame is absent from it
                frame.gt_instances = gt[torch.from_numpy(gt.masks.areas > 0)]
        losses, outputs, gt_instances = self.track_head.loss_and_outputs(
            self.backbone(inputs.flatten(0, 1)), frame_samples)
        cls_preds, mask_preds, embeds = outputs[0][-1], outputs[1][-1], outputs[2]
        query_of_gt = self.track_head.match_final_layer(
            cls_preds, mask_preds, gt_instances, [frame.metainfo for frame in frame_samples])
        clip_embeds, clip_slots = [], []
        for c in range(num_clips):
            frames = range(c * num_frames, (c + 1) * num_frames)
            clip_embeds.append(embeds[frames.start:frames.stop])
            clip_slots.append(clip_slot_queries(
                [frame_samples[i].gt_instances.instances_ids for i in frames],
                [query_of_gt[i] for i in frames]))
        losses.update(self.contrastive_loss(clip_embeds, clip_slots))
        return losses

    # ----------------------------------------------------------------------------------- test
    def predict(self, inputs: Tensor, data_samples: TrackSampleList, rescale: bool = True,
                **kwargs) -> TrackSampleList:
        """Track the frames of one video online.

        Frames are fed in order, usually one per call (mmdet's ``TrackImgSampler``); a frame with
        ``frame_id == 0`` starts a new video. When the video's last frame has been seen
        (``frame_id == ori_video_length - 1``, or the last given frame when the metainfo has no
        ``ori_video_length``) the returned sample holds the whole video's predictions.

        Args:
            inputs (Tensor): Frames (1, T, 3, H, W), normalised and padded.
            data_samples (list[TrackDataSample]): One sample with T frames' metainfo.

        Returns:
            list[TrackDataSample]: One sample. Each given frame carries ``pred_track_instances``
            (the tracks present in it: ``instances_id``, ``labels``, ``scores`` and ``masks`` as
            RLE at original size). Once the video is complete, the sample instead has one frame
            per video frame, metainfo ``video_complete=True``, and each frame's
            ``pred_track_instances`` holds the K video-level predictions (``masks``: that frame's
            RLE of each; ``labels``, ``scores`` and ``instances_id`` the same on every frame).
        """
        if inputs.shape[0] != 1:
            raise ValueError(
                f'CTVIS predicts one video at a time, got a batch of {inputs.shape[0]}: set '
                'batch_size=1 in test_dataloader and val_dataloader')
        video = data_samples[0]
        frames = inputs[0]
        for start in range(0, len(video), self.chunk_size):
            logits, mask_logits, embeds = self.detect(frames[start:start + self.chunk_size])
            for j in range(logits.shape[0]):
                frame = video[start + j]
                frame.pred_track_instances = self.track_frame(
                    frame.metainfo, logits[j], mask_logits[j], embeds[j])
        last_meta = video[len(video) - 1].metainfo
        video_length = last_meta.get('ori_video_length', last_meta['frame_id'] + 1)
        if last_meta['frame_id'] == video_length - 1:
            return [self.video_result(last_meta)]
        return [video]

    def track_frame(self, meta: dict, logits: Tensor, mask_logits: Tensor,
                    embeds: Tensor) -> InstanceData:
        """Track one frame and record it for the video-level output.

        Args:
            meta (dict): Frame metainfo with ``frame_id``, ``batch_input_shape``, ``img_shape``,
                ``ori_shape``.
            logits (Tensor): Class logits (Q, C + 1).
            mask_logits (Tensor): Stride-4 mask logits (Q, h, w).
            embeds (Tensor): Re-id embeddings (Q, E).

        Returns:
            InstanceData: The tracks present in this frame, with the query each track's
            detection comes from (``queries``).
        """
        # float32 outside autocast: the fp16 test loops on CUDA would otherwise compute the raw
        # re-id dot products in fp16, which overflow above 65504 (the softmax then gives NaN)
        logits, mask_logits, embeds = logits.float(), mask_logits.float(), embeds.float()
        with torch.autocast(embeds.device.type, enabled=False):
            queries, track_ids = self.tracker.track(meta['frame_id'], logits, mask_logits,
                                                    embeds)
        masks = resize_mask_logits(mask_logits[queries], meta['batch_input_shape'],
                                   meta['img_shape'][:2], meta['ori_shape'][:2])
        if self.record_video:
            rles = self.tracker.video.add_frame(meta['frame_id'], track_ids.tolist(),
                                                logits[queries], masks)
        else:
            rles = encode_masks(output_binary_masks(masks)) if len(track_ids) else []
        scores, labels = logits[queries].softmax(-1)[:, :-1].max(-1)
        return InstanceData(
            instances_id=track_ids, labels=labels.cpu(), scores=scores.cpu(),
            queries=queries.cpu(), masks=rles)

    def video_result(self, meta: dict) -> TrackDataSample:
        """The video-level predictions of the video tracked so far (spec §4.3).

        Args:
            meta (dict): Metainfo of the video's last frame (``video_id``).

        Returns:
            TrackDataSample: :meth:`~ctvis.models.VideoPrediction.to_data_sample` of the top
            ``max_per_video`` predictions.
        """
        if not self.record_video:
            raise RuntimeError('CTVIS.video_result: the video was tracked with record_video off, '
                               'so there is no video-level record to read')
        pred = self.tracker.video.video_predictions(self.max_per_video)
        return pred.to_data_sample(meta.get('video_id'))
