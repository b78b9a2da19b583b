"""The memory tracker, on hand-made embeddings and on the official reference's recorded outputs."""
import os.path as osp

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch

from conftest import PARITY
from ctvis.models import (CTVISTracker, MemoryBank, TrackMemory, VideoTracks, bisoftmax_scores,
                          mask_nms, similarity_guided_fusion)
from ctvis.models.tracker import resize_mask_logits

NUM_CLASSES = 3
REFERENCE = osp.join(PARITY, 'official_r50_seed2_8f.npz')


def frame_outputs(present, num_queries=6, size=8):
    """Queries 0..: one per object in ``present`` ({object: (query, label)}), the rest background.

    Object k has embedding 10 * e_k and a mask in its own band of rows, so masks never overlap.
    """
    logits = torch.full((num_queries, NUM_CLASSES + 1), -5.0)
    logits[:, -1] = 5.0  # background: "no object"
    masks = torch.full((num_queries, size, size), -10.0)
    embeds = torch.zeros(num_queries, 16)
    for q in range(num_queries):
        embeds[q, 8 + q] = 1.0  # background queries: distinct, weak embeddings
    for obj, (q, label) in present.items():
        logits[q] = -5.0
        logits[q, label] = 5.0
        masks[q, 2 * obj:2 * obj + 2] = 10.0
        embeds[q] = 0
        embeds[q, obj] = 10.0
    return logits, masks, embeds


def run(tracker, frames):
    """Track a list of ``present`` dicts; return {frame: {object: track_id}}."""
    result = {}
    for t, present in enumerate(frames):
        logits, masks, embeds = frame_outputs(present)
        queries, ids = tracker.track(t, logits, masks, embeds)
        query_to_obj = {q: obj for obj, (q, _) in present.items()}
        result[t] = {query_to_obj[q]: i for q, i in zip(queries.tolist(), ids.tolist())
                     if q in query_to_obj}
    return result


def test_identities_survive_occlusion_and_reappearance():
    tracker = CTVISTracker(NUM_CLASSES)
    frames = [{0: (0, 0), 1: (1, 1)}, {0: (2, 0), 1: (0, 1)}, {0: (3, 0)}, {0: (1, 0)},
              {0: (4, 0), 1: (5, 1)}]  # object 1 hidden in frames 2-3, queries shuffle
    ids = run(tracker, frames)
    assert ids[0][0] != ids[0][1]
    assert all(ids[t][0] == ids[0][0] for t in range(5))
    assert ids[4][1] == ids[0][1]


def test_new_identity_after_the_dead_frame_limit():
    tracker = CTVISTracker(NUM_CLASSES, num_dead_frames=2, score_thr=0.5, init_score_thr=0.5)
    frames = [{0: (0, 0), 1: (1, 1)}] + [{0: (0, 0)}] * 3 + [{0: (0, 0), 1: (1, 1)}]
    ids = run(tracker, frames)
    assert ids[4][0] == ids[0][0]
    assert ids[4][1] not in (ids[0][0], ids[0][1])  # forgotten after 3 unseen frames
    assert len(tracker.memory) == 2


def test_frames_without_detections_and_an_emptied_memory():
    tracker = CTVISTracker(NUM_CLASSES, num_dead_frames=1)
    run(tracker, [{0: (0, 0)}])
    # nothing above the score threshold: the best query is still kept (reference behaviour), and
    # a single detection against a single track has bi-softmax score 1, so it continues it
    logits, masks, embeds = frame_outputs({})
    queries, track_ids = tracker.track(1, logits, masks, embeds)
    assert len(queries) == 1 and track_ids.tolist() == [0]
    # every track died: matching against an empty memory must not fail, new ids start
    tracker.memory.tracks.clear()
    queries, track_ids = tracker.track(2, *frame_outputs({0: (0, 0), 1: (3, 1)}))
    assert track_ids.tolist() == [1, 2]


def test_greedy_assignment_weights_by_observed_frames():
    tracker = CTVISTracker(NUM_CLASSES, match_score_thr=0.3)
    scores = torch.tensor([[0.4, 0.5], [0.35, 0.1]])
    # without weights detection 0 would take track 1; track 0 was seen 5 times, track 1 once
    assert tracker.assign(scores, torch.tensor([5.0, 1.0])) == [0, -1]
    tracker.frame_weight = False
    assert tracker.assign(scores, torch.tensor([5.0, 1.0])) == [1, 0]


def test_mask_nms_and_bisoftmax():
    masks = torch.zeros(3, 4, 4, dtype=torch.bool)
    masks[0, :2] = True
    masks[1, :2, :3] = True  # IoU with mask 0: 6 / 8 = 0.75
    masks[2, 2:] = True
    assert mask_nms(masks, 0.7).tolist() == [0, 2]
    assert mask_nms(masks, 0.8).tolist() == [0, 1, 2]
    scores = bisoftmax_scores(torch.eye(2) * 5, torch.eye(2) * 5)
    assert scores.shape == (2, 2) and torch.allclose(scores.sum(0), torch.ones(2))
    assert scores[0, 0] > 0.99


def test_memory_fusion_and_bank():
    memory, history, embed = torch.tensor([1.0, 0]), torch.tensor([[1.0, 0]]), torch.tensor([0., 1])
    assert torch.allclose(similarity_guided_fusion(memory, history, embed), memory)  # cos = 0
    same = similarity_guided_fusion(memory, history, torch.tensor([2.0, 0]))
    assert torch.allclose(same, torch.tensor([2.0, 0]))  # cos = 1: memory jumps to the new one
    track = TrackMemory(max_cache=2)
    for k in range(4):
        track.update(torch.randn(3), k)
    assert len(track.history) == 2 and track.num_updates == 4
    bank = MemoryBank(num_dead_frames=1)
    bank.update([5, 6], torch.randn(2, 3), frame_id=0)
    bank.update([6], torch.randn(1, 3), frame_id=2)
    assert bank.remove_dead(2) == [5] and bank.track_ids == [6]


def test_video_output_top_k_and_short_track_suppression():
    video = VideoTracks(NUM_CLASSES, noise_frame_num=2, none_frame_num=2, suppress_frame_num=3)
    full = torch.full((1, 6, 6), 5.0)
    for t in range(5):
        ids = [0] if t > 0 else [0, 1]  # track 1: one detection, then gone
        logits = torch.tensor([[4.0, 0, 0, 0], [0, 0, 4.0, 0]])[:len(ids)]
        video.add_frame(t, ids, logits, full.expand(len(ids), 6, 6))
        if t == 2:
            assert set(video.records) == {0, 1}
    assert set(video.records) == {0}  # suppressed from frame 3 on
    pred = video.video_predictions(max_per_video=2)
    assert pred['labels'].tolist()[0] == 0 and len(pred['masks'][0]) == 5
    expected = torch.softmax(torch.tensor([4.0, 0, 0, 0]), 0)[0] * torch.sigmoid(torch.tensor(5.))
    assert float(pred['scores'][0]) == pytest.approx(float(expected), rel=1e-5)
    assert mask_util.decode(pred['masks'][0][3]).all()


def test_resize_mask_logits_crops_the_padding():
    logits = torch.zeros(1, 4, 6)
    logits[0, :, 4:] = 10  # the padded area
    out = resize_mask_logits(logits, (16, 24), (16, 16), (32, 32))
    assert out.shape == (1, 32, 32)
    assert (out[0, :, :28] < 1).all()  # padding cropped before the resize


def test_replays_the_official_tracker_exactly():
    """Fed the official per-frame outputs, every tracker decision equals the reference's."""
    ref = np.load(REFERENCE)
    tracker = CTVISTracker(num_classes=40)
    assignments, candidates = [], []
    for t in range(ref['pred_logits'].shape[0]):
        logits, masks, embeds = (torch.from_numpy(ref[k][t])
                                 for k in ('pred_logits', 'pred_masks', 'pred_embeds'))
        candidates.append(tracker.select_candidates(logits, masks)[0])
        queries, ids = tracker.track(t, logits, masks, embeds)
        assignments.append((queries, ids))
        tracker.video.add_frame(t, ids.tolist(), logits[queries],
                                resize_mask_logits(masks[queries], (128, 160), (128, 160),
                                                   (128, 160)))
    assert torch.cat(candidates).tolist() == ref['cand_query'].tolist()
    assert torch.cat([q for q, _ in assignments]).tolist() == ref['assign_query'].tolist()
    assert torch.cat([i for _, i in assignments]).tolist() == ref['assign_track_id'].tolist()
    bank = tracker.memory
    last = ref['bank_frame'] == ref['bank_frame'].max()
    np.testing.assert_allclose(torch.stack([bank.tracks[i].embed for i in sorted(bank.tracks)]),
                               ref['bank_embeds'][last], atol=1e-5)
    pred = tracker.video.video_predictions()
    assert pred['track_index'].tolist() == ref['video_track_index'].tolist()
    assert pred['labels'].tolist() == ref['video_labels'].tolist()
    np.testing.assert_allclose(pred['scores'].numpy(), ref['video_scores'], atol=1e-5)
    ours = np.stack([[mask_util.decode(rle) for rle in track] for track in pred['masks']])
    assert (ours.astype(bool) == ref['video_masks']).mean() > 0.9999


def test_random_identity_control_scrambles_the_association():
    from ctvis.models import RandomIdentityTracker
    frames = [{0: (0, 0), 1: (1, 1), 2: (2, 2)}] * 6
    tracked = run(CTVISTracker(NUM_CLASSES), frames)
    scrambled = run(RandomIdentityTracker(NUM_CLASSES, seed=1), frames)
    assert all(tracked[t] == tracked[0] for t in tracked)
    assert any(scrambled[t] != scrambled[0] for t in scrambled)
    assert all(sorted(s.values()) == [0, 1, 2] for s in scrambled.values())  # same track set
