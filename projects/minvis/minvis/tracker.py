"""MinVIS association: Hungarian matching of consecutive frames' query embeddings.

MinVIS (Huang et al., NeurIPS 2022) tracks every query of a per-frame Mask2Former through the
whole video. Frame t's queries are put in the order that best matches frame t-1's (already
re-ordered) queries: a one-to-one assignment minimising the summed cosine distance of their
embeddings. Query slot i then holds one identity from the first frame to the last. There is no
memory beyond the previous frame, no score threshold, and no track is ever started or ended.

The video-level output (:class:`MinVISVideoTracks`) averages each slot's class logits over the
frames and keeps the top-k (slot, class) pairs by class probability.
"""
from dataclasses import replace
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from ctvis.models import BaseVideoTracker, VideoPrediction, VideoTracks
from mmdet.registry import MODELS


def match_embeddings(prev_embeds: Tensor, cur_embeds: Tensor) -> Tensor:
    """Order the current queries so that each lines up with a previous frame's slot.

    Hungarian matching (``scipy.optimize.linear_sum_assignment``) on the cost
    ``1 - cos(prev_i, cur_j)``, computed in float64 on the CPU so that ties break the same way on
    every device.

    Args:
        prev_embeds (Tensor): The previous frame's embeddings in slot order, shape (Q, E).
        cur_embeds (Tensor): The current frame's embeddings in query order, shape (Q, E).

    Returns:
        Tensor: Long tensor ``perm`` of shape (Q,) on ``cur_embeds.device``, a permutation of
        ``0..Q-1``: ``cur_embeds[perm]`` is the current frame in slot order.

    Raises:
        ValueError: the two frames do not have the same number of queries and channels.
    """
    if prev_embeds.dim() != 2 or prev_embeds.shape != cur_embeds.shape:
        raise ValueError('match_embeddings: both frames need (Q, E) embeddings of one shape, got '
                         f'{tuple(prev_embeds.shape)} and {tuple(cur_embeds.shape)}')
    prev = F.normalize(prev_embeds.detach().cpu().double(), dim=1)
    cur = F.normalize(cur_embeds.detach().cpu().double(), dim=1)
    cost = 1 - prev @ cur.T  # (Q slots, Q current queries)
    _, queries = linear_sum_assignment(cost.numpy())  # rows come back as 0..Q-1
    return torch.as_tensor(queries, dtype=torch.long, device=cur_embeds.device)


class MinVISVideoTracks(VideoTracks):
    """Video-level records scored as MinVIS scores them.

    As :class:`~ctvis.models.VideoTracks` (per-slot mean logits, RLE masks, top-k over
    slot x class), with two differences:

    - a prediction's score is the class probability of its slot's mean logits; the factor of
      mask confidence that CTVIS applies is left out unless ``mask_rescore``;
    - no short-track suppression: every slot is recorded in every frame, so suppression could
      never apply, and switching it off keeps it that way whatever the defaults become.

    Args:
        num_classes (int): Number of object classes C.
        mask_rescore (bool): Multiply each score by the slot's mask score (mean sigmoid inside
            its binary masks), as CTVIS does. Defaults to False (MinVIS).
    """

    def __init__(self, num_classes: int, mask_rescore: bool = False) -> None:
        super().__init__(num_classes, suppress_frame_num=0)
        self.mask_rescore = mask_rescore

    def video_predictions(self, max_per_video: Optional[int] = None) -> VideoPrediction:
        """Top-k (slot, class) pairs of the video; see :meth:`VideoTracks.video_predictions`.

        Returns:
            VideoPrediction: At most K predictions in descending class probability, ``scores``
            (K,) float64 the class probabilities (times the mask scores if ``mask_rescore``).
        """
        pred = super().video_predictions(max_per_video)
        if not self.mask_rescore and len(pred) > 0:
            probs = self.track_logits().softmax(-1)[:, :-1]
            pred = replace(pred, scores=probs[pred.track_index, pred.labels].double())
        return pred


@MODELS.register_module()
class MinVISTracker(BaseVideoTracker):
    """Memory-free tracker of MinVIS: all Q queries, matched frame to frame.

    A :class:`~ctvis.models.BaseVideoTracker`, so a drop-in for
    :class:`~ctvis.models.CTVISTracker` in the ``CTVIS`` model. Frame 0 defines the slots
    (query i -> track i); every later frame is matched to the previous frame only
    (:func:`match_embeddings`), never to older frames, and every query is kept whatever its
    score.

    Args:
        num_classes (int): Number of object classes C.
        mask_rescore (bool): See :class:`MinVISVideoTracks`. Defaults to False (MinVIS).
    """

    def __init__(self, num_classes: int, mask_rescore: bool = False) -> None:
        self.num_classes = num_classes
        self.mask_rescore = mask_rescore
        self.reset()

    def reset(self) -> None:
        """Forget the video: called at frame 0 of each video."""
        self.video = MinVISVideoTracks(self.num_classes, self.mask_rescore)
        self.prev_embeds: Optional[Tensor] = None  # (Q, E), slot order
        self.last_frame_id = -1

    def track(self, frame_id: int, logits: Tensor, mask_logits: Tensor,
              embeds: Tensor) -> Tuple[Tensor, Tensor]:
        """Put one frame's queries in slot order.

        Args:
            frame_id (int): Index of the frame in the video; 0 resets the tracker. Frames must
                come in order, without gaps.
            logits (Tensor): Class logits, shape (Q, C + 1) (not used: MinVIS associates on
                embeddings alone).
            mask_logits (Tensor): Mask logits, shape (Q, h, w) (not used).
            embeds (Tensor): Query embeddings, shape (Q, E).

        Returns:
            tuple[Tensor, Tensor]: The query filling each slot (Q,), on ``embeds.device``, and
            the slots' track ids ``0..Q-1`` (Q,) on the CPU.

        Raises:
            ValueError: ``frame_id`` is not 0 and does not follow the previous frame, or the
                number of queries changed within the video.
        """
        if frame_id == 0:
            self.reset()
        elif frame_id != self.last_frame_id + 1:
            raise ValueError(
                f'MinVISTracker: frame {frame_id} follows frame {self.last_frame_id}; MinVIS '
                'matches each frame to the one before it, so every frame of a video must be '
                'tracked in order, from frame 0')
        num_queries = embeds.shape[0]
        if self.prev_embeds is None:
            queries = torch.arange(num_queries, device=embeds.device)
        else:
            queries = match_embeddings(self.prev_embeds, embeds)
        self.prev_embeds = embeds[queries].detach()
        self.last_frame_id = frame_id
        return queries, torch.arange(num_queries)
