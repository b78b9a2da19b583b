"""CTVIS model: per-frame detector head, consistent contrastive loss, memory bank and tracker.

Layout: ``ctvis`` (the segmenter), ``fused_resnet``, ``ctvis_head`` and ``pixel_decoder`` (the
per-frame detector; ``fused_resnet``, ``fused_layers`` and ``pixel_decoder`` give mmdet's and mmcv's
modules a fused CPU inference),
``data_preprocessor`` (mmdet's track preprocessor without copies of data samples already on the
device), ``contrastive_loss`` and ``memory_bank`` (consistent training), ``base_tracker`` (the
tracker interface), ``tracker`` (the CTVIS tracker), ``motion`` (its optional motion cue),
``video_tracks`` (video-level output and its result structure) and ``mask_utils`` (mask IoU, NMS,
centroids, resizing, RLE).
"""
from .base_tracker import BaseVideoTracker
from .contrastive_loss import ConsistentContrastiveLoss
from .ctvis import CTVIS
from .ctvis_head import CTVISHead
from .data_preprocessor import CTVISDataPreprocessor
from .fused_resnet import FusedResNet
from .mask_utils import (encode_masks, mask_centroids, mask_iou, mask_nms, output_binary_masks,
                         resize_mask_logits, tracker_binary_masks)
from .memory_bank import MemoryBank, TrackMemory, similarity_guided_fusion
from .motion import MotionHistory, mask_geometry
from .pixel_decoder import FusedMSDeformAttnPixelDecoder, FusedMultiScaleDeformableAttention
from .tracker import CTVISTracker, RandomIdentityTracker, bisoftmax_scores
from .video_tracks import VideoPrediction, VideoTracks

__all__ = [
    'CTVIS', 'CTVISHead', 'CTVISDataPreprocessor', 'ConsistentContrastiveLoss', 'BaseVideoTracker',
    'CTVISTracker', 'RandomIdentityTracker', 'VideoTracks', 'VideoPrediction',
    'FusedMSDeformAttnPixelDecoder', 'FusedMultiScaleDeformableAttention', 'FusedResNet',
    'MemoryBank', 'MotionHistory',
    'TrackMemory', 'similarity_guided_fusion', 'bisoftmax_scores', 'mask_iou', 'mask_nms',
    'mask_centroids', 'mask_geometry', 'resize_mask_logits', 'encode_masks',
    'tracker_binary_masks', 'output_binary_masks'
]
