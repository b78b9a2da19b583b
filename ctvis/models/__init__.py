"""CTVIS model: per-frame detector head, consistent contrastive loss, memory bank and tracker."""
from .contrastive_loss import ConsistentContrastiveLoss
from .ctvis import CTVIS
from .ctvis_head import CTVISHead
from .memory_bank import MemoryBank, TrackMemory, similarity_guided_fusion
from .pixel_decoder import FusedMSDeformAttnPixelDecoder, FusedMultiScaleDeformableAttention
from .tracker import (CTVISTracker, RandomIdentityTracker, VideoTracks, bisoftmax_scores,
                      mask_nms)

__all__ = [
    'CTVIS', 'CTVISHead', 'ConsistentContrastiveLoss', 'CTVISTracker', 'RandomIdentityTracker',
    'VideoTracks', 'FusedMSDeformAttnPixelDecoder', 'FusedMultiScaleDeformableAttention',
    'MemoryBank', 'TrackMemory', 'similarity_guided_fusion', 'bisoftmax_scores', 'mask_nms'
]
