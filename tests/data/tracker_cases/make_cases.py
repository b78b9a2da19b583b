"""Adversarial tracker cases: synthetic per-frame outputs that reach the tracker's boundary rules.

usage: python tests/data/tracker_cases/make_cases.py [OUT_DIR]   (default: this folder)

Each case is a seeded, hand-designed video of per-frame class logits, stride-4 mask logits and
re-id embeddings that drives the tracker into what the 8-frame official reference never reaches:
several empty masks per frame, exact score ties, scores and IoUs exactly at the thresholds, tracks
unseen for exactly 20 and for more than 20 frames, suppression after frame 8, a 48-frame video. The
expected stages come from :mod:`official_rules` (a literal transcription of the official rules, not
the official code itself) and are written in the layout of the official parity reference, so
``tools/analysis_tools/parity_official.py CASE.npz`` checks ctvis on them. ``REACHES`` lists, per
case, the events the case was built to reach; ``tests/test_models/test_tracker.py`` checks that it
does.
"""
import json
import os.path as osp
import sys
from typing import Callable, Dict, List, Optional

import numpy as np

HERE = osp.dirname(osp.abspath(__file__))
sys.path.insert(0, HERE)
from official_rules import run_official_rules  # noqa: E402

# The official tracker settings (configs/ytvis_2019/CTVIS_R50.yaml), in its key names
OFFICIAL_TRACKER_CFG = dict(
    TRACKER_NAME='SimpleTracker', MATCH_METRIC='bisoftmax', MATCH_SCORE_THR=0.3,
    TEMPORAL_SCORE_TYPE='mean', MATCH_TYPE='greedy', INFERENCE_SELECT_THR=0.01,
    INIT_SCORE_THR=0.01, MASK_NMS_THR=0.6, FRAME_WEIGHT=True, NOISE_FRAME_NUM=8,
    SUPPRESS_FRAME_NUM=3, NONE_FRAME_NUM=2,
    MEMORY_BANK=dict(NUM_DEAD_FRAMES=20, EMBED_TYPE='similarity_guided', maximum_cache=10))
FAR = -1e4  # a logit whose exp underflows to exactly 0 beside logits near 0


class Clip:
    """Per-frame tracker inputs: background queries everywhere, objects put on chosen queries.

    Background queries score ~1e-4 (far below 0.01) and have empty masks. An object has one-hot
    (or given) embedding ``20 * e_k``, so different objects have dot product exactly 0 and the
    bi-softmax of a designed frame is exact. Mask logits are -6 / +6, plus Gaussian noise of
    ``mask_noise`` on the objects' masks (background masks are constant: the stored case stays
    small).
    """

    def __init__(self, seed: int, num_frames: int, num_queries: int, num_classes: int,
                 size=(16, 12), embed_dim: int = 32, mask_noise: float = 0.0) -> None:
        self.rng = np.random.RandomState(seed)
        self.num_classes = num_classes
        self.size = size
        self.mask_noise = mask_noise
        shape = (num_frames, num_queries)
        self.logits = np.concatenate(
            [self.rng.normal(-4, 0.3, shape + (num_classes,)),
             self.rng.normal(4, 0.3, shape + (1,))], -1).astype(np.float32)
        self.masks = np.full(shape + size, -6, np.float32)
        self.embeds = self.rng.normal(0, 0.2, shape + (embed_dim,)).astype(np.float32)

    def onehot(self, k: int) -> np.ndarray:
        embed = np.zeros(self.embeds.shape[-1], np.float32)
        embed[k] = 20
        return embed

    def band(self, k: int, rows: int = 2) -> np.ndarray:
        region = np.zeros(self.size, bool)
        region[rows * k:rows * (k + 1)] = True
        return region

    def pixels(self, start: int, stop: int) -> np.ndarray:
        """Pixels ``start:stop`` of the frame in row-major order."""
        region = np.zeros(self.size[0] * self.size[1], bool)
        region[start:stop] = True
        return region.reshape(self.size)

    def class_row(self, label: int, strength: float) -> np.ndarray:
        row = self.rng.normal(-2, 0.3, self.num_classes + 1).astype(np.float32)
        row[label] = strength
        row[-1] = 0
        return row

    def put(self, t: int, q: int, obj: int, region: Optional[np.ndarray] = None,
            logits: Optional[np.ndarray] = None, embed: Optional[np.ndarray] = None,
            mask: Optional[np.ndarray] = None, strength: float = 6.0) -> None:
        """Object ``obj`` on query ``q`` of frame ``t`` (band and one-hot ``obj`` unless given)."""
        self.logits[t, q] = (self.class_row(obj % self.num_classes, strength)
                             if logits is None else logits)
        if mask is None:
            region = self.band(obj) if region is None else region
            noise = self.rng.normal(0, self.mask_noise, self.size)
            mask = np.where(region, 6 + noise, -6 + noise)
        self.masks[t, q] = mask
        self.embeds[t, q] = self.onehot(obj) if embed is None else embed

    def free_queries(self, t: int, used: List[int]) -> List[int]:
        return [q for q in range(self.logits.shape[1]) if q not in used]


def case_empty_masks() -> Clip:
    """Issue 9's 12-frame class of cause: 2-5 low-score candidates with empty masks at frames 6-11.

    Two empty binarised masks have official IoU 1, so only the best of them survives the NMS. Two
    of them have logits 1e-8: empty after ``sigmoid > 0.5`` (the NMS) but full after ``> 0`` (the
    video output). At frame 9 the best-scoring candidate of the frame has an empty mask.
    """
    clip = Clip(seed=11, num_frames=12, num_queries=20, num_classes=40)
    extras = {6: 3, 7: 4, 8: 5, 9: 6, 10: 4, 11: 3}
    for t in range(12):
        queries = list(clip.rng.permutation(20))
        for obj in range(4):
            clip.put(t, queries[obj], obj)
        for k in range(extras.get(t, 0)):
            q = queries[4 + k]
            mask = np.full(clip.size, -6.0, np.float32)
            if (t, k) in ((8, 1), (11, 2)):  # dropped at frame 8, kept at frame 11
                mask[:] = 1e-8
            strength = 9.0 if (t == 9 and k == 0) else 1.0 + 0.3 * k
            clip.put(t, q, 8 + k, mask=mask, strength=strength)
    return clip


def case_ties() -> Clip:
    """Exact ties: equal scores (candidate order, NMS survivor), equal match scores, equal track
    logits (final top-k).

    Objects 0-2 share one logits row in every frame; at frame 0 two more queries share a row and a
    mask; twins 3 and 4 share a logits row and an embedding in every frame, so their tracks have
    the same memory and the same mean logits. With 24 queries the official ``torch.sort`` (not
    stable) does not keep tied queries in query order on the CPU.
    """
    clip = Clip(seed=12, num_frames=10, num_queries=24, num_classes=4)
    for t in range(10):
        shared = clip.class_row(1, 5.0)
        twin_row = clip.class_row(2, 4.0)
        queries = list(clip.rng.permutation(24))
        for obj in range(3):
            clip.put(t, queries[obj], obj, logits=shared)
        for obj, q in zip((3, 4), queries[3:5]):
            clip.put(t, q, obj, logits=twin_row, embed=clip.onehot(3))
        if t == 0:
            row, mask = clip.class_row(0, 3.0), np.where(clip.band(6), 5.0, -5.0)
            clip.put(t, queries[5], 6, logits=row, mask=mask)
            clip.put(t, queries[6], 7, logits=row, mask=mask)
    return clip


def case_thresholds() -> Clip:
    """Scores, match scores and mask IoUs exactly at the official thresholds.

    With 99 classes, equal logits give every class probability 1/100 = float32(0.01): frames 0-2
    hold only such queries (top-1 kept, not above the init threshold: no track), later frames
    keep some beside the objects (dropped by the score filter). Twin tracks A and B share one
    embedding (A is seen twice, B once); at frame 5 ten candidates have that embedding: against
    A and B each scores (1/2 + 1/10) / 2 = float32(0.3), the match threshold, so neither passes
    (and no frame weighting applies). Frames 6-9 hold pairs of masks with IoU 3k/5k = 0.6 for
    several k, where the official epsilon and float32 decide.
    """
    clip = Clip(seed=13, num_frames=11, num_queries=16, num_classes=99, size=(32, 24))
    clip.logits[:] = clip.rng.normal(-4, 0.3, clip.logits.shape)
    clip.logits[..., -1] = 4
    clip.logits[:3] = 0  # frames 0-2: every query scores exactly 0.01
    for t in range(3, 11):
        for q in clip.rng.choice(16, 4, replace=False):
            clip.logits[t, q] = 0
    twin = clip.onehot(0)
    # frames 3-4: twin tracks A (frames 3, 4) and B (frame 3), object P
    clip.put(3, 3, 10, embed=twin, region=clip.band(0))
    clip.put(3, 4, 11, embed=twin, region=clip.band(1))
    clip.put(4, 7, 10, embed=twin, region=clip.band(0))
    # frame 5: ten candidates with the twin embedding
    for q in range(10):
        clip.put(5, q, 12 + q, embed=twin, region=clip.pixels(24 * q, 24 * q + 12))
    for t in range(3, 11):
        clip.put(t, 15 if t >= 6 else 10, 1, region=clip.band(15))
    # frames 6-9: mask pairs with IoU exactly 0.6
    for t, ks in zip(range(6, 10), ((1, 2, 3), (4, 5, 7), (6, 8, 10), (12, 16, 20))):
        start, q = 0, 0
        for k in ks:
            first, second = clip.pixels(start, start + 4 * k), clip.pixels(start + k, start + 5 * k)
            clip.put(t, q, 2 + q, region=first, strength=7.0)
            clip.put(t, q + 1, 3 + q, region=second, strength=6.0)
            start, q = start + 5 * k + 3, q + 2
    return clip


def case_dead_tracks() -> Clip:
    """48 frames: tracks unseen for exactly 20 frames (still matched) and for 21 (forgotten).

    Objects 0-3 are always present. Objects 4, 5 and 6 are seen at frames 0-3; 4 returns at frame
    24 (unseen 20 frames, frames 4-23), 5 at frame 25 (unseen 21: dead at 24, a new id), 6 at
    frame 40 (unseen 36).
    """
    clip = Clip(seed=14, num_frames=48, num_queries=10, num_classes=4)
    for t in range(48):
        present = list(range(4))
        present += [4, 5, 6] if t < 4 else []
        present += [4] if t >= 24 else []
        present += [5] if t >= 25 else []
        present += [6] if t >= 40 else []
        queries = clip.rng.permutation(10)
        for obj, q in zip(present, queries):
            clip.put(t, q, obj)
    return clip


def case_suppression() -> Clip:
    """Short-track suppression around frame 8, with exactly 2 missing frames and 3 detections.

    Objects 0-3 are always present; the others are present at:
    4 (X): 6, 7, 12   5 (Y): 5, 6, 7   6 (Z): 7, 8   7 (W): 0   8 (V): 1, 2, 9   9 (U): 8.
    """
    schedule = {4: (6, 7, 12), 5: (5, 6, 7), 6: (7, 8), 7: (0,), 8: (1, 2, 9), 9: (8,)}
    clip = Clip(seed=15, num_frames=16, num_queries=14, num_classes=4, size=(24, 12))
    for t in range(16):
        present = list(range(4)) + [obj for obj, frames in schedule.items() if t in frames]
        for obj, q in zip(present, clip.rng.permutation(14)):
            clip.put(t, q, obj)
    return clip


def case_random() -> Clip:
    """40 frames of random identities, scores, masks (some empty, some overlapping), distractors.

    Nothing is designed; it checks that the rules agree on an unstructured video, including
    frames where only background queries exist (top-1 kept).
    """
    clip = Clip(seed=16, num_frames=40, num_queries=16, num_classes=6, size=(12, 10),
                embed_dim=16, mask_noise=1.0)
    rng = clip.rng
    identities = rng.normal(size=(8, 16))
    identities = (5 * identities / np.linalg.norm(identities, axis=1, keepdims=True))
    present = rng.rand(8) < 0.5
    h, w = clip.size
    for t in range(40):
        present = np.where(present, rng.rand(8) < 0.85, rng.rand(8) < 0.15)
        if t % 7 == 6:
            continue  # background only
        queries = list(rng.permutation(16))
        for obj in np.flatnonzero(present):
            region = np.zeros(clip.size, bool)
            if rng.rand() > 0.1:
                y, x = rng.randint(0, h - 3), rng.randint(0, w - 3)
                region[y:y + rng.randint(2, 6), x:x + rng.randint(2, 6)] = True
            clip.put(t, queries.pop(), obj, region=region, strength=float(rng.normal(2, 2)),
                     embed=(identities[obj] + rng.normal(0, 0.3, 16)).astype(np.float32))
        for _ in range(rng.randint(0, 4)):
            region = np.zeros(clip.size, bool)
            y, x = rng.randint(0, h - 3), rng.randint(0, w - 3)
            region[y:y + 4, x:x + 4] = rng.rand() > 0.3
            clip.put(t, queries.pop(), 8, region=region, strength=float(rng.normal(0, 1.5)),
                     embed=rng.normal(0, 2, 16).astype(np.float32))
    return clip


CASES: Dict[str, Callable[[], Clip]] = dict(
    empty_masks=case_empty_masks, ties=case_ties, thresholds=case_thresholds,
    dead_tracks=case_dead_tracks, suppression=case_suppression, random=case_random)


def _events(events: List, kind: str, frame: Optional[int] = None) -> List:
    return [e for e in events if e[1] == kind and (frame is None or e[0] == frame)]


def _frame(stages: Dict, key: str, t: int) -> List[int]:
    prefix = key.split('_')[0]
    return stages[key][stages[f'{prefix}_frame'] == t].tolist()


def _stable_order(stages: Dict, t: int) -> List[int]:
    """Frame ``t``'s candidates as a stable sort by descending score would order them."""
    scores = stages['cand_score'][stages['cand_frame'] == t]
    return [q for _, q in sorted(zip(-scores, _frame(stages, 'cand_query', t)))]


# What each case was built to reach: (what, check(events, stages) -> bool)
REACHES: Dict[str, List] = dict(
    empty_masks=[
        ('frames 6-11: 2-5 candidates dropped because two empty masks have IoU 1',
         lambda ev, st: [sum(e[5] == e[6] == 0 for e in _events(ev, 'nms', t))
                         for t in range(6, 12)] == [2, 3, 4, 5, 3, 2]),
        ('frame 11: a mask empty for the NMS (logits 1e-8) is full in the video output',
         lambda ev, st: bool(st['video_masks'][:, 11].reshape(len(st['video_masks']), -1)
                             .all(1).any()))],
    ties=[
        ('tied scores in torch.sort order, which is not query order',
         lambda ev, st: any(_frame(st, 'cand_query', t) != _stable_order(st, t)
                            for t in range(10))),
        ('frame 0: of two equal masks with equal scores one survives the NMS',
         lambda ev, st: [e[4] for e in _events(ev, 'nms', 0)] == [1.0]),
        ('equal match scores: the first track in memory order wins',
         lambda ev, st: len(_events(ev, 'match_tie')) >= 9),
        ('equal mean logits: exactly tied track logits reach the final top-k',
         lambda ev, st: len(np.unique(st['track_logits'], axis=0)) < len(st['track_logits']))],
    thresholds=[
        ('frames 0-2: every score exactly 0.01: top-1 kept, not above the init threshold',
         lambda ev, st: [e[0] for e in _events(ev, 'top1_fallback')] == [0, 1, 2]
         and [e[0] for e in _events(ev, 'init_at_thr')] == [0, 1, 2]
         and len(st['assign_frame']) and st['assign_frame'].min() == 3),
        ('frame 5: ten match scores exactly 0.3 (tracks seen 2 and 1 times), none accepted',
         lambda ev, st: len(_events(ev, 'match_at_thr', 5)) == 10
         and not _events(ev, 'frame_weight', 5)),
        ('frames 6-9: IoU 3k/5k pairs; the epsilon suppresses some (k = 1, 7), not the others',
         lambda ev, st: [e[5] for e in _events(ev, 'nms') if 6 <= e[0] <= 9] == [4, 28])],
    dead_tracks=[
        ('frame 24: a track unseen for exactly 20 frames is matched again',
         lambda ev, st: [(e[0], e[3]) for e in _events(ev, 'rematched')] == [(24, 20)]),
        ('frame 24: tracks unseen for 21 frames are forgotten',
         lambda ev, st: [(e[0], e[3]) for e in _events(ev, 'dead')] == [(24, 21), (24, 21)]),
        ('a video of more than 30 frames', lambda ev, st: st['cand_frame'].max() == 47)],
    suppression=[
        ('suppressed at frames 9 (W, X), 10 (Z, U), 14 (X again) only: (frame, missing, '
         'detections); Y (3 detections) and V (back at frame 9) are kept',
         lambda ev, st: [(e[0], e[3], e[4]) for e in _events(ev, 'suppressed')]
         == [(9, 9, 1), (9, 2, 2), (10, 2, 2), (10, 2, 1), (14, 2, 1)])],
    random=[
        ('frames with background only keep their top-1',
         lambda ev, st: len(_events(ev, 'top1_fallback')) >= 5),
        ('frame weighting and NMS both reached',
         lambda ev, st: bool(_events(ev, 'frame_weight')) and bool(_events(ev, 'nms')))])


def build_case(name: str) -> Dict[str, np.ndarray]:
    """The case's inputs and the official rules' stages, in the parity reference's layout."""
    clip = CASES[name]()
    num_frames, num_queries = clip.logits.shape[:2]
    stages = run_official_rules(clip.logits, clip.masks, clip.embeds, OFFICIAL_TRACKER_CFG,
                                clip.num_classes)
    events = stages.pop('events')
    meta = dict(case=name, purpose=' '.join(CASES[name].__doc__.split()),
                expected_from='tests/data/tracker_cases/official_rules.py, a transcription of '
                              'the official rules (not output of the official code)',
                tracker_cfg=OFFICIAL_TRACKER_CFG, num_frames=num_frames,
                num_queries=num_queries, num_classes=clip.num_classes,
                preprocessing=dict(resized_hw=list(clip.size), padded_hw=list(clip.size),
                                   original_hw=list(clip.size)))
    return dict(pred_logits=clip.logits, pred_masks=clip.masks, pred_embeds=clip.embeds,
                image_size_resized=np.array(clip.size), image_size_original=np.array(clip.size),
                events_json=np.array(json.dumps(events)), meta_json=np.array(json.dumps(meta)),
                **stages)


def main() -> None:
    out_dir = sys.argv[1] if len(sys.argv) > 1 else HERE
    for name in CASES:
        np.savez_compressed(osp.join(out_dir, f'{name}.npz'), **build_case(name))
        print(f'wrote {name}.npz')


if __name__ == '__main__':
    main()
