"""A slow, literal transcription of the official CTVIS tracker rules, for the adversarial cases.

Written from the facts of the official code (KainingYing/CTVIS at c1ed15c:
``ctvis/modeling/tracker/simple_tracker.py``, ``memory_bank.py``, ``ctvis/utils/utils.py``,
``ctvis/ctvis_model.py``), never from ctvis's tracker: one explicit loop per rule, per pair and
per frame, with the arithmetic each decision depends on kept as the official code has it:

- scores are compared with thresholds as float32 tensors against Python floats, strictly (``>``);
- candidates are ordered by ``torch.sort(descending=True)`` (the official call, default
  ``stable=False``), the top-1 is kept when no score passes the threshold;
- the NMS binarises ``sigmoid(logit) > 0.5`` and scores a pair by
  ``(intersection + 1e-6) / (union + 1e-6)`` from integer pixel counts, the ratio in float32, so two
  empty masks have IoU 1; a later mask is dropped when its IoU with a kept one is ``> thr``;
- "no track yet" is judged by the number of tracks ever created; the official code would then fail
  on an empty memory bank, which the bi-softmax rules below can never reach (one detection always
  scores at least 0.5 against every track) and which is guarded here as ctvis guards it;
- greedy matching in candidate order, first maximum on ties, frame weighting only when more than
  one track passes, acceptance ``> thr``; a track unseen for ``> num_dead_frames`` frames is
  deleted after the frame's update;
- suppression runs when ``frame > noise_frame_num`` on tracks whose last ``>= none_frame_num``
  frames are missing and which have ``< suppress_frame_num`` detections;
- track logits are the float32 mean of the per-frame logits, top-k over the flattened
  (track x class) probabilities, mask score ``num / (den + 1e-6)``.

Masks here are already at the output resolution (the cases set the padded, resized and original
image sizes to the mask size), so the official resizing is the identity and is left out.
"""
from collections import OrderedDict
from typing import Dict, List

import numpy as np
import torch
import torch.nn.functional as F


def official_mask_iou(mask_a: torch.Tensor, mask_b: torch.Tensor) -> torch.Tensor:
    """IoU of two boolean masks (H, W) the official way: counts as integers, eps 1e-6, float32."""
    a = mask_a.to(torch.int8)
    b = mask_b.to(torch.int8)
    intersection = (a * b).sum()
    union = (a + b - a * b).sum()
    return (intersection + 1e-6) / (union + 1e-6)


class _Track:
    """One memory-bank entry: fused embedding, raw-embedding cache, observation count."""

    def __init__(self, embed: torch.Tensor, frame_id: int) -> None:
        self.embed = embed
        self.cache = [embed]
        self.count = 1
        self.last_frame = frame_id

    def observe(self, embed: torch.Tensor, frame_id: int, max_cache: int) -> None:
        previous = torch.stack(self.cache)
        cos = (F.normalize(previous, dim=-1) * F.normalize(embed, dim=-1)[None]).sum(-1)
        similarity = cos.sum() / len(self.cache)
        beta = similarity if similarity > 0 else 0  # Python's max(0, similarity)
        self.embed = (1 - beta) * self.embed + beta * embed
        self.cache.append(embed)
        if len(self.cache) > max_cache:
            self.cache.pop(0)
        self.count += 1
        self.last_frame = frame_id


def run_official_rules(pred_logits: np.ndarray, pred_masks: np.ndarray,
                       pred_embeds: np.ndarray, cfg: Dict, num_classes: int) -> Dict:
    """Track a whole video and return every stage in the layout of the parity reference.

    Args:
        pred_logits (ndarray): (T, Q, C + 1) class logits.
        pred_masks (ndarray): (T, Q, H, W) mask logits (already at output resolution).
        pred_embeds (ndarray): (T, Q, E) re-id embeddings.
        cfg (dict): The official tracker settings (``tracker_cfg`` of the reference's meta).
        num_classes (int): C, also the number of video-level predictions.

    Returns:
        dict: ``cand_*``, ``assign_*``, ``bank_*``, ``track_logits``, ``video_*`` arrays (see
        ``tests/data/parity/README.md``), ``record_frame`` / ``record_track_id`` (the tracks in
        the video record, in its order, after each frame's suppression) and ``events``: what each
        frame's rules did, so the cases can check that they reach the boundaries they were built
        for.
    """
    num_frames = pred_logits.shape[0]
    select_thr = cfg['INFERENCE_SELECT_THR']
    init_thr = cfg['INIT_SCORE_THR']
    nms_thr = cfg['MASK_NMS_THR']
    match_thr = cfg['MATCH_SCORE_THR']
    dead_frames = cfg['MEMORY_BANK']['NUM_DEAD_FRAMES']
    max_cache = cfg['MEMORY_BANK']['maximum_cache']
    out = {k: [] for k in ('cand_frame', 'cand_query', 'cand_score', 'assign_frame',
                           'assign_query', 'assign_track_id', 'bank_frame', 'bank_track_id',
                           'bank_embeds', 'record_frame', 'record_track_id')}
    events: List[tuple] = []
    bank: 'OrderedDict[int, _Track]' = OrderedDict()
    video: 'OrderedDict[int, List]' = OrderedDict()  # id -> per-frame (logits, mask) or None
    created = 0
    for t in range(num_frames):
        logits = torch.from_numpy(pred_logits[t])
        masks = torch.from_numpy(pred_masks[t])
        embeds = torch.from_numpy(pred_embeds[t])

        # 1. score filter, in the official sort order
        scores = logits.softmax(-1)[:, :-1].max(1).values
        sorted_scores, order = torch.sort(scores, dim=0, descending=True)
        chosen = [i for i in range(len(order)) if bool(sorted_scores[i] > select_thr)]
        if not chosen:
            chosen = [0]
            events.append((t, 'top1_fallback', int(order[0])))
        queries = [int(order[i]) for i in chosen]
        query_scores = [sorted_scores[i] for i in chosen]

        # 2. mask NMS, pair by pair
        binary = [masks[q].sigmoid() > 0.5 for q in queries]
        keep = [True] * len(queries)
        for i in range(len(queries)):
            if not keep[i]:
                continue
            for j in range(i + 1, len(queries)):
                if keep[j]:
                    iou = official_mask_iou(binary[i], binary[j])
                    if bool(iou > nms_thr):
                        keep[j] = False
                        events.append((t, 'nms', queries[j], queries[i], float(iou),
                                       int(binary[i].sum()), int(binary[j].sum())))
        queries = [q for q, k in zip(queries, keep) if k]
        query_scores = [s for s, k in zip(query_scores, keep) if k]
        out['cand_frame'] += [t] * len(queries)
        out['cand_query'] += queries
        out['cand_score'] += [float(s) for s in query_scores]

        # 3-4. greedy bi-softmax matching against the memory
        ids = [-1] * len(queries)
        if created > 0 and not bank:
            events.append((t, 'empty_memory'))
        if created > 0 and bank:
            track_ids = list(bank)
            memory = torch.stack([bank[i].embed for i in track_ids])
            counts = torch.tensor([bank[i].count for i in track_ids]).to(torch.float32)
            sim = torch.mm(embeds[queries], memory.t())
            match = (sim.softmax(dim=1) + sim.softmax(dim=0)) / 2
            for d in range(len(queries)):
                row = match[d].clone()
                passing = [j for j in range(len(track_ids)) if bool(row[j] > match_thr)]
                if cfg['FRAME_WEIGHT'] and len(passing) > 1:
                    mean_weight = counts[passing].mean()
                    for j in range(len(track_ids)):
                        row[j] = row[j] * (counts[j] if j in passing else mean_weight)
                    events.append((t, 'frame_weight', queries[d], len(passing)))
                best = 0
                for j in range(1, len(track_ids)):
                    if bool(row[j] > row[best]):
                        best = j
                tied = [j for j in range(len(track_ids)) if bool(row[j] == row[best])]
                if len(tied) > 1:
                    events.append((t, 'match_tie', queries[d], [track_ids[j] for j in tied]))
                if bool(row[best] > match_thr):
                    ids[d] = track_ids[best]
                    for other in range(len(queries)):
                        if other != d:
                            match[other, best] = 0
                elif bool(row[best] == match_thr):
                    events.append((t, 'match_at_thr', queries[d]))

        # 5. unmatched candidates above the init threshold start tracks
        for d in range(len(queries)):
            if ids[d] == -1:
                if bool(query_scores[d] > init_thr):
                    ids[d] = created
                    created += 1
                elif bool(query_scores[d] == init_thr):
                    events.append((t, 'init_at_thr', queries[d]))

        # 6. memory update, then dead-track removal
        for d in range(len(queries)):
            if ids[d] < 0:
                continue
            out['assign_frame'].append(t)
            out['assign_query'].append(queries[d])
            out['assign_track_id'].append(ids[d])
            if ids[d] in bank:
                gap = t - bank[ids[d]].last_frame
                if gap > 1:
                    events.append((t, 'rematched', ids[d], gap - 1))
                bank[ids[d]].observe(embeds[queries[d]], t, max_cache)
            else:
                bank[ids[d]] = _Track(embeds[queries[d]], t)
        for track_id in list(bank):
            if t - bank[track_id].last_frame > dead_frames:
                events.append((t, 'dead', track_id, t - bank[track_id].last_frame))
                del bank[track_id]
        out['bank_frame'] += [t] * len(bank)
        out['bank_track_id'] += sorted(bank)
        out['bank_embeds'] += [bank[i].embed.numpy() for i in sorted(bank)]

        # 7. video record and short-track suppression
        for d in range(len(queries)):
            if ids[d] < 0:
                continue
            if ids[d] not in video:
                video[ids[d]] = [None] * t
            video[ids[d]].append((logits[queries[d]], masks[queries[d]]))
        for entries in video.values():
            if len(entries) < t + 1:
                entries.append(None)
        if t > cfg['NOISE_FRAME_NUM']:
            for track_id in list(video):
                entries = video[track_id]
                detections = sum(e is not None for e in entries)
                missing = 0
                for e in reversed(entries):
                    if e is not None:
                        break
                    missing += 1
                if missing >= cfg['NONE_FRAME_NUM'] and detections < cfg['SUPPRESS_FRAME_NUM']:
                    events.append((t, 'suppressed', track_id, missing, detections))
                    del video[track_id]
        out['record_frame'] += [t] * len(video)
        out['record_track_id'] += list(video)

    out = {k: np.asarray(v) for k, v in out.items()}
    out['cand_score'] = out['cand_score'].astype(np.float32)
    embed_dim = pred_embeds.shape[-1]
    out['bank_embeds'] = np.asarray(out['bank_embeds'], np.float32).reshape(-1, embed_dim)
    out.update(_video_output(video, pred_masks.shape[-2:], num_frames, num_classes,
                             pred_logits.shape[-1]))
    out['events'] = events
    return out


def _video_output(video: Dict, size, num_frames: int, num_classes: int,
                  num_logits: int) -> Dict:
    """Official top-k video predictions from the per-track records."""
    if not video:
        return dict(track_logits=np.zeros((0, num_logits), np.float32),
                    video_track_index=np.zeros(0, np.int64),
                    video_labels=np.zeros(0, np.int64),
                    video_scores=np.zeros(0, np.float32),
                    video_masks=np.zeros((0, num_frames, *size), bool))
    track_logits = torch.stack([torch.stack([e[0] for e in entries if e is not None]).mean(0)
                                for entries in video.values()])
    probs = track_logits.softmax(-1)[:, :-1]
    top_scores, top_index = probs.flatten(0, 1).topk(num_classes, sorted=True)
    rows = top_index // num_classes
    labels = top_index % num_classes
    scores, masks = [], []
    records = list(video.values())
    for score, row in zip(top_scores, rows.tolist()):
        frames = [e[1] if e is not None else torch.zeros(tuple(size)) for e in records[row]]
        numerator = torch.zeros((), dtype=torch.float32)
        denominator = torch.zeros((), dtype=torch.float32)
        for start in range(0, num_frames, 5):  # the official chunks of 5 frames
            chunk = torch.stack(frames[start:start + 5])
            binary = (chunk > 0.).float()
            numerator += (chunk.sigmoid() * binary).sum()
            denominator += binary.sum()
        scores.append(score * (numerator / (denominator + 1e-6)))
        masks.append(torch.stack(frames) > 0.)
    return dict(track_logits=track_logits.numpy(), video_track_index=rows.numpy(),
                video_labels=labels.numpy(), video_scores=torch.stack(scores).numpy(),
                video_masks=torch.stack(masks).numpy())
