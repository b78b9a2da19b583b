"""Video-level output of an online tracker: per-track records and the top-k video predictions.

:class:`VideoTracks` keeps, per track, what the video-level output needs (per-detection class
logits, masks as RLE at original resolution, mask-score sums), so memory does not grow with dense
per-frame tensors however long the video is. :class:`VideoPrediction` is the one video-result
structure: the model returns it as a ``TrackDataSample`` (:meth:`VideoPrediction.to_data_sample`),
a metric reads it back (:meth:`VideoPrediction.from_data_sample`) and it turns into the standard
YouTube-VIS results (:meth:`VideoPrediction.to_ytvis_results`).
"""
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from mmengine.structures import InstanceData
from torch import Tensor

from mmdet.structures import DetDataSample, TrackDataSample
from .mask_utils import encode_masks, json_rle, output_binary_masks


@dataclass
class VideoPrediction:
    """The K video-level predictions of one video (spec §4.3).

    Attributes:
        scores (Tensor): Scores, float64, shape (K,), descending.
        labels (Tensor): Contiguous class labels (index into the sorted category ids), long, (K,).
        track_ids (Tensor): Track each prediction comes from, long, shape (K,).
        masks (list[list[dict]]): K lists of ``num_frames`` RLE dicts (``counts`` as str), an
            empty mask where the track is absent (None where a data sample read back had none).
        ori_shape (tuple[int, int], optional): (H, W) of the masks; None if unknown.
        num_frames (int): Number of frames of the video.
        track_index (Tensor, optional): Row of each track in :meth:`VideoTracks.track_logits`,
            long, (K,); None when read back from a data sample.
        video_id (int, optional): Id of the video, when known.
    """

    scores: Tensor
    labels: Tensor
    track_ids: Tensor
    masks: List[List[Optional[dict]]]
    ori_shape: Optional[Tuple[int, int]]
    num_frames: int
    track_index: Optional[Tensor] = None
    video_id: Optional[int] = None

    def __len__(self) -> int:
        return len(self.labels)

    def frame_instances(self, frame_id: int) -> InstanceData:
        """The K predictions as seen in one frame: ``instances_id``, ``labels``, ``scores``
        (float32) and ``masks`` (K RLE dicts of that frame)."""
        return InstanceData(instances_id=self.track_ids, labels=self.labels,
                            scores=self.scores.float(),
                            masks=[per_frame[frame_id] for per_frame in self.masks])

    def to_data_sample(self, video_id: Optional[int] = None) -> TrackDataSample:
        """The model's output for a finished video, as :class:`~ctvis.evaluation.YTVISMetric`
        reads it: metainfo ``video_id`` (``video_id`` or else :attr:`video_id`),
        ``video_complete=True``, ``ori_video_length``, and one ``DetDataSample`` per frame whose
        ``pred_track_instances`` is :meth:`frame_instances`."""
        if video_id is None:
            video_id = self.video_id
        frames = []
        for t in range(self.num_frames):
            frame = DetDataSample(metainfo=dict(frame_id=t, ori_shape=self.ori_shape))
            frame.pred_track_instances = self.frame_instances(t)
            frames.append(frame)
        result = TrackDataSample(metainfo=dict(video_id=video_id, video_complete=True,
                                               ori_video_length=self.num_frames))
        result.video_data_samples = frames
        return result

    @classmethod
    def from_data_sample(cls, sample: Union[TrackDataSample, dict]) -> Optional['VideoPrediction']:
        """Read back what :meth:`to_data_sample` wrote; None for a sample that is not
        ``video_complete`` (an intermediate frame).

        Args:
            sample (TrackDataSample | dict): The sample or its ``to_dict()`` (what
                ``mmengine.evaluator.Evaluator`` passes to metrics).

        Returns:
            VideoPrediction, optional: With ``video_id``, float32 ``scores`` (as the sample
            carries them) in float64, JSON-ready RLE masks, no ``track_index``; ``track_ids``
            is -1 where the sample has no ``instances_id``.

        Raises:
            KeyError: No ``video_id`` in the metainfo of the sample or of its first frame.
            ValueError: No frames, or frames that do not list the same predictions (labels,
                scores, instances_id) with one mask each.
        """
        meta = sample.metainfo if isinstance(sample, TrackDataSample) else sample
        if not meta.get('video_complete', False):
            return None
        frames = (sample.video_data_samples if isinstance(sample, TrackDataSample) else
                  sample.get('video_data_samples', []))
        video_id = meta.get('video_id')
        if video_id is None and frames:
            video_id = frames[0].metainfo.get('video_id')
        if video_id is None:
            raise KeyError('a video_complete sample needs metainfo video_id')
        where = f'video {video_id}'
        if not frames:
            raise ValueError(f'{where}: a video_complete sample has no frames')
        instances = [frame.pred_track_instances for frame in frames]

        def fields(frame: Any) -> tuple:
            ids = getattr(frame, 'instances_id', None)
            return (_as_list(frame.labels), _as_list(frame.scores),
                    None if ids is None else _as_list(ids))

        labels, scores, ids = fields(instances[0])
        for index, frame in enumerate(instances):
            if fields(frame) != (labels, scores, ids) or len(frame.masks) != len(labels):
                raise ValueError(f'{where}, frame {index}: every frame must list the same '
                                 'video-level predictions (labels, scores, instances_id) and '
                                 'one mask per prediction')
        masks = [[json_rle(frame.masks[k], f'{where}, frame {index}')
                  for index, frame in enumerate(instances)] for k in range(len(labels))]
        ori_shape = frames[0].metainfo.get('ori_shape')
        return cls(scores=torch.tensor([float(s) for s in scores], dtype=torch.float64),
                   labels=torch.tensor([int(label) for label in labels], dtype=torch.long),
                   track_ids=torch.tensor([-1] * len(labels) if ids is None else
                                          [int(i) for i in ids], dtype=torch.long),
                   masks=masks, ori_shape=None if ori_shape is None else tuple(ori_shape[:2]),
                   num_frames=len(frames), video_id=int(video_id))

    def to_ytvis_results(self, video_id: int, category_ids: Sequence[int]) -> List[dict]:
        """The standard YouTube-VIS results entries of this video.

        Args:
            video_id (int): Id of the video in the annotation file.
            category_ids (Sequence[int]): Sorted category ids: label ``i`` is ``category_ids[i]``.

        Returns:
            list[dict]: K ``{video_id, category_id, score, segmentations}`` dicts; ``score`` is
            the float32 value the data sample carries (:meth:`frame_instances`), so both routes
            give the same results file.

        Raises:
            ValueError: A label is outside ``category_ids``.
        """
        results = []
        for label, score, masks in zip(self.labels.tolist(), self.scores.float().tolist(),
                                       self.masks):
            if not 0 <= label < len(category_ids):
                raise ValueError(f'video {video_id}: label {label} is outside the '
                                 f'{len(category_ids)} categories')
            results.append(dict(video_id=int(video_id), category_id=int(category_ids[label]),
                                score=float(score), segmentations=list(masks)))
        return results


def _as_list(values: Any) -> list:
    return values.tolist() if hasattr(values, 'tolist') else list(values)


def encode_detections(mask_logits: Tensor,
                      with_rles: bool = True) -> Tuple[List[dict], Tensor, Tensor]:
    """What the video-level output keeps of each detection: its binary mask
    (:func:`~ctvis.models.mask_utils.output_binary_masks`) as RLE, and the sums behind its mask
    score (sigmoid inside the mask, and the mask's area).

    Args:
        mask_logits (Tensor): Mask logits at original resolution, shape (N, H, W).
        with_rles (bool): Encode the masks (no RLEs when False).

    Returns:
        tuple[list[dict], Tensor, Tensor]: RLEs, and the two sums, float64 (N,) on the CPU.
    """
    binary = output_binary_masks(mask_logits)
    probs = mask_logits.sigmoid()
    score_num = (probs * binary).flatten(1).sum(1).double().cpu()
    score_den = binary.flatten(1).sum(1).double().cpu()
    return (encode_masks(binary) if with_rles else []), score_num, score_den


class _TrackRecord:
    """What the video-level output needs of one track, accumulated frame by frame."""

    __slots__ = ('logits', 'frames', 'masks', 'mask_score_num', 'mask_score_den')

    def __init__(self) -> None:
        self.logits: List[Tensor] = []  # (C + 1,) float32 per detection: kept for the mean
        self.frames: List[int] = []
        self.masks: List[dict] = []
        self.mask_score_num = 0.0
        self.mask_score_den = 0.0


class VideoTracks:
    """Video-level track records with IDOL-style short-track suppression.

    Args:
        num_classes (int): Number of object classes C (logits have C + 1 entries).
        noise_frame_num (int): Suppression starts after this many frames.
        none_frame_num (int): A track missing from its last ``none_frame_num`` frames...
        suppress_frame_num (int): ...with fewer than this many detections is suppressed.
    """

    def __init__(self, num_classes: int, noise_frame_num: int = 8, none_frame_num: int = 2,
                 suppress_frame_num: int = 3) -> None:
        self.num_classes = num_classes
        self.noise_frame_num = noise_frame_num
        self.none_frame_num = none_frame_num
        self.suppress_frame_num = suppress_frame_num
        self.records: Dict[int, _TrackRecord] = {}
        self.num_video_frames = 0
        self.ori_shape: Optional[Tuple[int, int]] = None

    def add_frame(self, frame_id: int, track_ids: Sequence[int], logits: Tensor,
                  mask_logits: Tensor) -> List[dict]:
        """Record one frame.

        Args:
            frame_id (int): Index of the frame in the video (0-based, consecutive).
            track_ids (Sequence[int]): Track id of each detection kept this frame, length N.
            logits (Tensor): Class logits of those detections, shape (N, C + 1).
            mask_logits (Tensor): Their mask logits at original resolution, shape (N, H, W).

        Returns:
            list[dict]: The detections' binary masks as RLE, in the order given (also those of
            tracks the short-track rule drops from the record in this very frame, as it does
            with ``none_frame_num=0``).
        """
        rles, score_num, score_den = encode_detections(mask_logits, with_rles=len(track_ids) > 0)
        self.add_encoded(frame_id, track_ids, logits, rles, score_num, score_den,
                         tuple(mask_logits.shape[-2:]))
        return rles

    def add_encoded(self, frame_id: int, track_ids: Sequence[int], logits: Tensor,
                    rles: Sequence[dict], score_num: Tensor, score_den: Tensor,
                    ori_shape: Tuple[int, int]) -> None:
        """Record one frame of detections already encoded by :func:`encode_detections`.

        What :meth:`add_frame` does after encoding; tools that replay a tracker over cached
        detections (tools/analysis_tools/tracker_sweep.py) call it directly.

        Args:
            frame_id, track_ids, logits: As in :meth:`add_frame`.
            rles (Sequence[dict]): RLE mask of each detection, length N.
            score_num, score_den (Tensor): Mask-score sums of each detection, float64 (N,).
            ori_shape (tuple[int, int]): (H, W) of the video's frames.
        """
        if frame_id > 0 and self.ori_shape is not None and tuple(ori_shape) != self.ori_shape:
            raise ValueError(f'frame {frame_id} is {ori_shape[0]}x{ori_shape[1]} but the '
                             f'video\'s earlier frames are {self.ori_shape[0]}x'
                             f'{self.ori_shape[1]}: the video-level masks have one size (resize '
                             'the frames, or start a new video)')
        self.num_video_frames = frame_id + 1
        self.ori_shape = tuple(ori_shape)
        logits = logits.detach().float().cpu()
        for k, track_id in enumerate(track_ids):
            record = self.records.get(int(track_id))
            if record is None:
                record = self.records[int(track_id)] = _TrackRecord()
            record.logits.append(logits[k])
            record.frames.append(frame_id)
            record.masks.append(rles[k])
            record.mask_score_num += float(score_num[k])
            record.mask_score_den += float(score_den[k])
        self._suppress_short_tracks(frame_id)

    def _suppress_short_tracks(self, frame_id: int) -> None:
        if frame_id <= self.noise_frame_num:
            return
        first_missing = frame_id - self.none_frame_num + 1
        for track_id in [i for i, r in self.records.items()
                         if r.frames[-1] < first_missing
                         and len(r.frames) < self.suppress_frame_num]:
            del self.records[track_id]

    @property
    def track_ids(self) -> List[int]:
        """Ids of the recorded (not suppressed) tracks, in creation order."""
        return list(self.records)

    @property
    def rle_bytes(self) -> int:
        """Length of the RLE ``counts`` strings of every recorded mask: the part of the video-level
        output that grows with the video (one character per byte)."""
        return sum(len(rle['counts']) for record in self.records.values() for rle in record.masks)

    def track_logits(self) -> Tensor:
        """Mean class logits of every recorded track, shape (K, C + 1), in creation order.

        The float32 mean of the stacked per-frame logits, as the official code takes it: a sum in
        another precision can move a mean by one float32 step and reorder exact top-k ties.
        """
        return torch.stack([torch.stack(r.logits).mean(0) for r in self.records.values()])

    def video_predictions(self, max_per_video: Optional[int] = None) -> VideoPrediction:
        """Top-k (track, class) pairs of the video.

        Scores are class probability (softmax over the mean logits) times the track's mask score
        (mean sigmoid inside its binary masks over all frames).

        Args:
            max_per_video (int, optional): K; defaults to the number of classes.

        Returns:
            VideoPrediction: At most K predictions, in descending class probability.
        """
        k = max_per_video or self.num_classes
        if not self.records:
            return VideoPrediction(
                scores=torch.zeros(0, dtype=torch.float64),
                labels=torch.zeros(0, dtype=torch.long),
                track_ids=torch.zeros(0, dtype=torch.long),
                masks=[], ori_shape=self.ori_shape, num_frames=self.num_video_frames,
                track_index=torch.zeros(0, dtype=torch.long))
        probs = self.track_logits().softmax(-1)[:, :-1]
        k = min(k, probs.numel())
        top_scores, top_idx = probs.flatten().topk(k, sorted=True)
        track_index = torch.div(top_idx, self.num_classes, rounding_mode='floor')
        labels = top_idx % self.num_classes
        records = list(self.records.values())
        track_ids = list(self.records)
        empty = encode_masks(torch.zeros((1, *self.ori_shape), dtype=torch.bool))[0]
        scores, masks = [], []
        for score, row in zip(top_scores.tolist(), track_index.tolist()):
            record = records[row]
            mask_score = record.mask_score_num / (record.mask_score_den + 1e-6)
            scores.append(score * mask_score)
            per_frame = [empty] * self.num_video_frames
            for frame, rle in zip(record.frames, record.masks):
                per_frame[frame] = rle
            masks.append(per_frame)
        return VideoPrediction(
            scores=torch.tensor(scores, dtype=torch.float64), labels=labels,
            track_ids=torch.tensor([track_ids[r] for r in track_index.tolist()]),
            masks=masks, ori_shape=self.ori_shape, num_frames=self.num_video_frames,
            track_index=track_index)
