"""The memory tracker: hand-made embeddings, the official arithmetic conventions, and the
adversarial cases of tests/data/tracker_cases (the parity tool replays them:
tests/test_tools/test_parity.py).

Each convention test names the rule it pins; it fails when the rule is flipped (``>`` for ``>=``,
the epsilon dropped, a stable sort for the official one), as docs/parity.md lists.
"""
import json
import inspect
import re
import os.path as osp

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch

from conftest import PARITY, REPO, load_module
from ctvis.evaluation.ytvis_metric import results2json
from ctvis.models import (CTVISTracker, MemoryBank, TrackMemory, VideoPrediction, VideoTracks,
                          bisoftmax_scores, mask_iou, mask_nms, resize_mask_logits,
                          similarity_guided_fusion)
from mmdet.structures import TrackDataSample

NUM_CLASSES = 3
CASES_DIR = osp.join(REPO, 'tests', 'data', 'tracker_cases')
cases = load_module(osp.join(CASES_DIR, 'make_cases.py'), 'make_cases')


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


def run_frame(tracker, t, present):
    """Track one ``present`` dict at frame ``t``; return {object: track_id}."""
    queries, ids = tracker.track(t, *frame_outputs(present))
    query_to_obj = {q: obj for obj, (q, _) in present.items()}
    return {query_to_obj[q]: i for q, i in zip(queries.tolist(), ids.tolist())
            if q in query_to_obj}


def run(tracker, frames):
    """Track a list of ``present`` dicts; return {frame: {object: track_id}}."""
    return {t: run_frame(tracker, t, present) for t, present in enumerate(frames)}


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


def test_a_frame_below_the_score_threshold_keeps_its_best_query():
    tracker = CTVISTracker(NUM_CLASSES, num_dead_frames=1)
    run(tracker, [{0: (0, 0)}])
    # nothing above the score threshold: the best query is still kept (reference behaviour), and
    # a single detection against a single track has bi-softmax score 1, so it continues it
    logits, masks, embeds = frame_outputs({})
    queries, track_ids = tracker.track(1, logits, masks, embeds)
    assert len(queries) == 1 and track_ids.tolist() == [0]


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
    opposite = similarity_guided_fusion(memory, history, torch.tensor([-3.0, 0]))
    assert torch.equal(opposite, memory)  # cos = -1: beta = max(0, cos) = 0, memory unchanged
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
    assert pred.labels.tolist()[0] == 0 and len(pred.masks[0]) == 5
    expected = torch.softmax(torch.tensor([4.0, 0, 0, 0]), 0)[0] * torch.sigmoid(torch.tensor(5.))
    assert float(pred.scores[0]) == pytest.approx(float(expected), rel=1e-5)
    assert mask_util.decode(pred.masks[0][3]).all()


def test_resize_mask_logits_crops_the_padding():
    logits = torch.zeros(1, 4, 6)
    logits[0, :, 4:] = 10  # the padded area
    out = resize_mask_logits(logits, (16, 24), (16, 16), (32, 32))
    assert out.shape == (1, 32, 32)
    assert (out[0, :, :28] < 1).all()  # padding cropped before the resize


def test_random_identity_control_scrambles_the_association():
    from ctvis.models import RandomIdentityTracker
    frames = [{0: (0, 0), 1: (1, 1), 2: (2, 2)}] * 6
    tracked = run(CTVISTracker(NUM_CLASSES), frames)
    scrambled = run(RandomIdentityTracker(NUM_CLASSES, seed=1), frames)
    assert all(tracked[t] == tracked[0] for t in tracked)
    assert any(scrambled[t] != scrambled[0] for t in scrambled)
    assert all(sorted(s.values()) == [0, 1, 2] for s in scrambled.values())  # same track set
    # a video's identities do not depend on the videos tracked before it
    control = RandomIdentityTracker(NUM_CLASSES, seed=1)
    assert run(control, frames) == run(control, frames) == scrambled


# The official arithmetic conventions ("Tracker conventions" in docs/parity.md)


def test_mask_iou_has_the_official_epsilon_in_float32():
    masks = torch.zeros(6, 40, dtype=torch.bool)
    masks[2, 0:4] = masks[3, 1:5] = True  # intersection 3, union 5
    masks[4, 10:26] = masks[5, 14:30] = True  # intersection 12, union 20
    iou = mask_iou(masks.view(6, 5, 8))
    assert iou.dtype == torch.float32
    assert iou[0, 1] == 1  # two empty masks: (0 + 1e-6) / (0 + 1e-6)
    assert 0 < iou[0, 2] < 1e-6
    assert iou[2, 3] > 0.6  # 3/5: the epsilons lift it one float32 step above 0.6
    assert iou[4, 5] < 0.6  # 12/20: one float32 step below (above in float64)


def test_nms_drops_later_empty_masks_binarised_by_sigmoid():
    tracker = CTVISTracker(NUM_CLASSES)
    logits = torch.full((4, NUM_CLASSES + 1), -5.0)
    logits[:, 0] = torch.tensor([5.0, 4.0, 3.0, 2.0])
    logits[:, -1] = 0
    masks = torch.full((4, 6, 6), -10.0)
    masks[0] = 1e-8  # sigmoid rounds to 0.5: empty for the NMS (full for the video output)
    masks[2, :3] = 10.0
    # queries 1 and 3 are empty too: IoU 1 with query 0, dropped; query 2 overlaps nothing
    assert tracker.select_candidates(logits, masks)[0].tolist() == [0, 2]


def uniform_frame(num_queries=5, num_classes=99):
    """Every class probability exactly 1/100 = float32(0.01), the default thresholds."""
    masks = torch.full((num_queries, num_queries, 4), -10.0)
    for q in range(num_queries):
        masks[q, q] = 10.0
    return (torch.zeros(num_queries, num_classes + 1), masks,
            torch.eye(num_queries, 8) * 10)


def test_score_and_init_thresholds_are_strict():
    tracker = CTVISTracker(num_classes=99)
    logits, masks, embeds = uniform_frame()
    assert float(logits.softmax(-1)[0, 0]) == np.float32(0.01)
    above = logits.clone()
    above[3, 7] = 5.0
    assert tracker.select_candidates(above, masks)[0].tolist() == [3]  # 0.01 is not above 0.01
    # nothing above: the top-1 is kept, but at 0.01 it does not start a track
    assert tracker.select_candidates(logits, masks)[0].tolist() == [0]
    queries, ids = tracker.track(0, logits, masks, embeds)
    assert queries.tolist() == [] and ids.tolist() == [] and len(tracker.memory) == 0
    queries, ids = tracker.track(1, above, masks, embeds)  # still "no track yet": a new track
    assert queries.tolist() == [3] and ids.tolist() == [0]


def test_tied_scores_follow_the_official_sort():
    """The official ``torch.sort(descending=True)`` is not stable: on the CPU (torch 2.13, the
    reference's version) tied queries 3, 50 and 70 of 100 come as 50, 3, 70."""
    tracker = CTVISTracker(num_classes=40)
    logits = torch.full((100, 41), -4.0)
    logits[:, -1] = 4.0
    logits[[3, 50, 70], 5] = 6.0
    logits[[3, 50, 70], -1] = 0.0
    masks = torch.full((100, 8, 8), -10.0)
    for k, q in enumerate((3, 50, 70)):
        masks[q, 2 * k:2 * k + 2] = 10.0
    keep, scores = tracker.select_candidates(logits, masks)
    assert len(set(scores.tolist())) == 1
    assert keep.tolist() == [50, 3, 70]  # a stable sort gives 3, 50, 70


def test_match_threshold_is_strict_in_float32():
    tracker = CTVISTracker(NUM_CLASSES)
    at_thr = torch.tensor([[0.3]])  # float32(0.3) = 0.30000001: above 0.3 only in float64
    assert tracker.assign(at_thr, torch.tensor([1.0])) == [-1]
    above = torch.nextafter(at_thr, torch.tensor(1.0))
    assert tracker.assign(above, torch.tensor([1.0])) == [0]
    # a track exactly at the threshold does not pass: one passing track, no frame weighting
    assert tracker.assign(torch.tensor([[0.3, 0.5]]), torch.tensor([10.0, 1.0])) == [1]
    # tied scores: the first track in memory order
    assert tracker.assign(torch.tensor([[0.5, 0.5]]), torch.tensor([2.0, 2.0])) == [0]


def test_a_track_unseen_for_exactly_num_dead_frames_is_kept():
    bank = MemoryBank(num_dead_frames=20)
    bank.update([4], torch.ones(1, 3), frame_id=2)
    assert bank.remove_dead(22) == []  # unseen at frames 3-22: 20 frames
    assert bank.remove_dead(23) == [4]


def test_short_track_suppression_boundaries():
    """After frame 8 (not at it), tracks missing from their last >= 2 frames with < 3
    detections are dropped."""
    schedule = {0: (6, 7), 1: (5, 6, 7), 2: (7, 8), 3: (0,)}
    video = VideoTracks(NUM_CLASSES)
    alive = []
    for t in range(12):
        ids = [i for i, frames in schedule.items() if t in frames]
        video.add_frame(t, ids, torch.zeros(len(ids), 4), torch.full((len(ids), 2, 2), 3.0))
        alive.append(set(video.records))
    assert alive[8] == {0, 1, 2, 3}  # 3: one detection, 8 frames missing, but frame 8 is not > 8
    assert alive[9] == {1, 2}  # 0: two detections, exactly 2 frames missing
    assert alive[10] == alive[11] == {1}  # 1 has exactly 3 detections; 2 misses 2 frames at 10


def test_track_logits_are_the_float32_mean():
    logits = torch.randn(7, 5, generator=torch.Generator().manual_seed(0)) * 3
    video = VideoTracks(4)
    for t in range(7):
        video.add_frame(t, [0], logits[t:t + 1], torch.full((1, 2, 2), 3.0))
    assert torch.equal(video.track_logits()[0], logits.mean(0))  # the official stack().mean(0)
    assert not torch.equal(logits.mean(0), (logits.double().sum(0) / 7).float())


def test_final_top_k_ties_follow_torch_topk():
    video = VideoTracks(2)
    video.add_frame(0, [0, 1], torch.tensor([[1.0, 2.0, 0.0], [1.0, 2.0, 0.0]]),
                    torch.full((2, 4, 4), 5.0))
    pred = video.video_predictions(4)
    # the official topk over (track x class); a stable order would give tracks 0, 1, 0, 1
    assert pred.track_index.tolist() == [0, 1, 1, 0]
    assert pred.labels.tolist() == [1, 1, 0, 0]


def test_a_track_with_only_empty_masks_scores_zero():
    video = VideoTracks(NUM_CLASSES)
    video.add_frame(0, [0], torch.tensor([[4.0, 0, 0, 0]]), torch.full((1, 4, 4), -3.0))
    assert video.video_predictions(1).scores.tolist() == [0.0]  # 0 / (0 + 1e-6)


def test_output_masks_keep_positive_logits_only_and_score_inside_them():
    """The output's masks are ``logit > 0`` (a logit of exactly 0 is outside, unlike the
    tracker's ``sigmoid > 0.5`` would say of a tiny positive one) and the mask score averages
    the sigmoid over them."""
    logits = torch.tensor([[[0.0, 1e-30], [2.0, -1.0]]])
    video = VideoTracks(NUM_CLASSES)
    rles = video.add_frame(0, [0], torch.tensor([[4.0, 0, 0, 0]]), logits)
    assert mask_util.decode(rles[0]).tolist() == [[0, 1], [1, 0]]
    inside = (torch.sigmoid(torch.tensor(1e-30)) + torch.sigmoid(torch.tensor(2.0))) / 2
    class_score = torch.tensor([4.0, 0, 0, 0]).softmax(0)[0]
    score = video.video_predictions(1).scores[0]
    assert score == pytest.approx(float(class_score * inside), rel=1e-6)


def test_matching_after_every_track_died_starts_new_tracks():
    """ctvis checks the memory itself; the official code would stack an empty memory and fail.

    Bi-softmax never empties the memory (one candidate scores >= 0.5 against every track), so
    det2track is used: a background query scores 1/4 against each of four tracks."""
    tracker = CTVISTracker(NUM_CLASSES, match_metric='det2track')
    frames = [{0: (0, 0), 1: (1, 1), 2: (2, 2), 3: (3, 0)}] + [{}] * 21
    ids = run(tracker, frames)
    assert ids[0] == {0: 0, 1: 1, 2: 2, 3: 3} and len(tracker.memory) == 0
    assert run_frame(tracker, 22, {0: (0, 0), 1: (4, 1)}) == {0: 4, 1: 5}


def test_a_frame_without_queries():
    tracker = CTVISTracker(NUM_CLASSES)
    run(tracker, [{0: (0, 0)}])
    queries, ids = tracker.track(1, torch.zeros(0, 4), torch.zeros(0, 8, 8), torch.zeros(0, 16))
    assert queries.tolist() == [] and ids.tolist() == []
    tracker.video.add_frame(1, [], torch.zeros(0, 4), torch.zeros(0, 8, 8))
    assert tracker.video.num_video_frames == 2



def band_masks(rows, size=6):
    """Mask logits (N, size, size): +5 on the given row band of each mask, -5 elsewhere."""
    logits = torch.full((len(rows), size, size), -5.0)
    for k, (top, bottom) in enumerate(rows):
        logits[k, top:bottom] = 5.0
    return logits


def test_add_frame_returns_the_frames_masks_even_of_tracks_suppressed_at_once():
    """With ``none_frame_num=0`` the short-track rule drops a short track from the record in
    the frame it is seen; the frame's output read its mask back from the record (KeyError)."""
    video = VideoTracks(NUM_CLASSES, noise_frame_num=0, none_frame_num=0, suppress_frame_num=3)
    video.add_frame(0, [0], torch.zeros(1, 4), band_masks([(0, 2)]))
    rles = video.add_frame(1, [1, 0], torch.zeros(2, 4), band_masks([(2, 4), (4, 6)]))
    rows = [mask_util.decode(rle).any(1).nonzero()[0].tolist() for rle in rles]
    assert rows == [[2, 3], [4, 5]]  # in the order given
    assert video.track_ids == []  # both had fewer than 3 detections: suppressed


def test_a_frame_of_another_size_is_refused_within_a_video():
    """Its masks came out at another size than the rest, and the video's filler masks took the
    last frame's size."""
    video = VideoTracks(NUM_CLASSES)
    video.add_frame(0, [0], torch.zeros(1, 4), band_masks([(0, 2)]))
    with pytest.raises(ValueError, match=r"frame 1 is 8x6 but the video's earlier frames are "
                       r'6x6: the video-level masks have one size'):
        video.add_frame(1, [0], torch.zeros(1, 4), torch.zeros(1, 8, 6))
    assert video.num_video_frames == 1
    video.add_frame(0, [0], torch.zeros(1, 4), torch.zeros(1, 8, 6))  # a new video may differ


def two_track_prediction():
    """Track 0 in frames 0 and 1 (rows 0-1, then 4-5), track 1 in frame 1 only (rows 2-3)."""
    video = VideoTracks(NUM_CLASSES)
    video.add_frame(0, [0], torch.tensor([[3.0, 0, 0, 0]]), band_masks([(0, 2)]))
    video.add_frame(1, [0, 1], torch.tensor([[3.0, 0, 0, 0], [0, 0, 2.0, 0]]),
                    band_masks([(4, 6), (2, 4)]))
    return video.video_predictions(2)


def test_video_prediction_reads_the_same_through_the_metric():
    """The model's data sample, read by the metric, gives what ``to_ytvis_results`` gives."""
    pred = two_track_prediction()
    assert pred.track_ids.tolist() == [0, 1] and pred.labels.tolist() == [0, 2]
    assert pred.ori_shape == (6, 6) and pred.num_frames == 2 and len(pred) == 2
    sample = pred.to_data_sample(video_id=7)
    assert sample.metainfo == dict(video_id=7, video_complete=True, ori_video_length=2)
    assert [frame.metainfo['frame_id'] for frame in sample] == [0, 1]
    track1 = [mask_util.decode(frame.pred_track_instances.masks[1]).sum() for frame in sample]
    assert track1 == [0, 12]  # empty where the track is absent
    category_ids = [10, 20, 30]
    expected = results2json([VideoPrediction.from_data_sample(sample)], category_ids)
    assert pred.to_ytvis_results(7, category_ids) == expected
    assert [r['category_id'] for r in expected] == [10, 30]
    assert expected[0]['score'] != float(pred.scores[0])  # float32, as the sample carries it



def test_video_prediction_reads_back_from_its_data_sample():
    pred = two_track_prediction()
    sample = pred.to_data_sample(video_id=7)
    for given in (sample, sample.to_dict()):  # the metric gets the dict from the Evaluator
        back = VideoPrediction.from_data_sample(given)
        assert back.video_id == 7 and back.num_frames == 2 and back.ori_shape == (6, 6)
        assert back.track_index is None and torch.equal(back.track_ids, pred.track_ids)
        assert torch.equal(back.labels, pred.labels) and back.masks == pred.masks
        assert torch.equal(back.scores, pred.scores.float().double())
        assert back.to_ytvis_results(7, [1, 2, 3]) == pred.to_ytvis_results(7, [1, 2, 3])
    assert VideoPrediction.from_data_sample(TrackDataSample(metainfo=dict(video_id=7))) is None
    sample.set_metainfo(dict(video_id=None))
    sample[0].set_metainfo(dict(video_id=8))  # the first frame's id when the video has none
    assert VideoPrediction.from_data_sample(sample).video_id == 8


def test_video_prediction_from_a_data_sample_checks_it():
    sample = two_track_prediction().to_data_sample(video_id=7)
    sample[1].pred_track_instances.masks = [sample[1].pred_track_instances.masks[0], None]
    rle = sample[0].pred_track_instances.masks[0]
    sample[0].pred_track_instances.masks[0] = dict(rle, counts=rle['counts'].encode())
    back = VideoPrediction.from_data_sample(sample)
    assert back.masks[0][0] == rle and back.masks[1][1] is None  # bytes counts as str
    sample[1].pred_track_instances.masks = ['not an RLE', None]
    with pytest.raises(TypeError, match='video 7, frame 1: masks must be pycocotools RLE'):
        VideoPrediction.from_data_sample(sample)
    sample[1].pred_track_instances.scores = torch.tensor([0.5, 0.25])
    with pytest.raises(ValueError, match='video 7, frame 1: every frame must list the same'):
        VideoPrediction.from_data_sample(sample)
    sample.set_metainfo(dict(video_id=None))
    with pytest.raises(KeyError, match='needs metainfo video_id'):
        VideoPrediction.from_data_sample(sample)

def test_video_prediction_rejects_labels_outside_the_categories():
    pred = two_track_prediction()
    with pytest.raises(ValueError, match='video 7: label 2 is outside the 2 categories'):
        pred.to_ytvis_results(7, [10, 20])


def test_results2json_names_a_video_without_id():
    pred = two_track_prediction()
    with pytest.raises(ValueError, match='video 0 of the list has no video_id'):
        results2json([pred], [1, 2, 3])
    pred.video_id = 7
    assert results2json([pred], [1, 2, 3]) == pred.to_ytvis_results(7, [1, 2, 3])


def test_a_video_without_tracks_gives_an_empty_prediction_per_frame():
    video = VideoTracks(NUM_CLASSES)
    video.add_frame(0, [], torch.zeros(0, 4), torch.zeros(0, 5, 7))
    pred = video.video_predictions()
    assert len(pred) == 0 and pred.ori_shape == (5, 7) and pred.scores.dtype == torch.float64
    sample = pred.to_data_sample(video_id=3)
    assert len(sample) == 1 and len(sample[0].pred_track_instances) == 0
    back = VideoPrediction.from_data_sample(sample)
    assert back.video_id == 3 and len(back) == 0
    assert pred.to_ytvis_results(3, [1]) == []

# The adversarial cases (tests/data/tracker_cases): stored as built, reaching their boundaries


def test_cases_use_the_official_tracker_settings():
    meta = json.loads(str(np.load(osp.join(PARITY, 'official_r50_seed2_8f.npz'))['meta_json']))
    official = {k: v for k, v in meta['tracker_cfg'].items() if k in cases.OFFICIAL_TRACKER_CFG}
    assert official == cases.OFFICIAL_TRACKER_CFG


@pytest.mark.parametrize('name', list(cases.CASES))
def test_case_is_stored_as_built_and_reaches_its_boundaries(name):
    stored = np.load(osp.join(CASES_DIR, f'{name}.npz'))
    built = cases.build_case(name)
    assert sorted(stored.files) == sorted(built)
    for key, value in built.items():
        np.testing.assert_array_equal(stored[key], value, err_msg=f'{name}: {key}')
    events = json.loads(str(stored['events_json']))
    for what, reached in cases.REACHES[name]:
        assert reached(events, stored), f'{name}: {what}'


def test_the_rules_transcription_reproduces_the_official_reference():
    """The transcription behind the cases, on the official 8-frame outputs: every decision and the
    final top-k equal what the official code computed (masks: the official resizing is left out,
    so final masks and scores are not compared)."""
    ref = np.load(osp.join(PARITY, 'official_r50_seed2_8f.npz'))
    meta = json.loads(str(ref['meta_json']))
    rules = cases.run_official_rules(ref['pred_logits'], ref['pred_masks'], ref['pred_embeds'],
                                     meta['tracker_cfg'], meta['num_classes'])
    for key in ('cand_frame', 'cand_query', 'assign_frame', 'assign_query', 'assign_track_id',
                'bank_frame', 'bank_track_id', 'video_track_index', 'video_labels'):
        np.testing.assert_array_equal(rules[key], ref[key], err_msg=key)
    for key in ('cand_score', 'bank_embeds', 'track_logits'):
        np.testing.assert_allclose(rules[key], ref[key], atol=1e-5, err_msg=key)


@pytest.mark.parametrize('setting, message', [
    (dict(score_thr='high'), "score_thr must be a finite number, got 'high'"),
    (dict(match_score_thr=float('nan')), 'match_score_thr must be a finite number, got nan'),
    (dict(mask_nms_thr=True), 'mask_nms_thr must be a finite number, got True'),
    (dict(max_cache=0), 'max_cache must be a whole number >= 1, got 0'),
    (dict(max_cache=2.5), 'max_cache must be a whole number >= 1, got 2.5'),
    (dict(num_dead_frames=-1), 'num_dead_frames must be a whole number >= 0, got -1'),
    (dict(num_classes=0), 'num_classes must be a whole number >= 1, got 0'),
    (dict(frame_weight=1), 'frame_weight must be True or False, got 1'),
    (dict(motion_weight=-0.1), 'motion_weight must be in [0, 1], got -0.1'),
    (dict(motion_weight=1.5), 'motion_weight must be in [0, 1], got 1.5'),
    (dict(motion_sigma=0.0), 'motion_sigma must be > 0, got 0.0'),
    (dict(motion_history=0), 'motion_history must be a whole number >= 1, got 0'),
])
def test_unusable_settings_are_refused_when_the_tracker_is_built(setting, message):
    """A string threshold passed the config and failed at the first validation frame; NaN
    filtered every detection; a cache of 0 or 2.5 failed or acted as 3 (mutants caught: each
    check removed)."""
    with pytest.raises(ValueError, match=re.escape(f'CTVISTracker: {message}')):
        CTVISTracker(**{'num_classes': 3, **setting})
    CTVISTracker(num_classes=3, score_thr=0, max_cache=1, num_dead_frames=0, frame_weight=False,
                 motion_weight=0, motion_history=1)
    CTVISTracker(num_classes=3, motion_weight=1)


def test_nms_keeps_a_mask_of_iou_exactly_at_the_threshold():
    """Masks of 400 cells overlapping in 300: the 1e-6 vanishes in float32, the IoU is
    float32(0.6) exactly, and the official NMS suppresses above it only (strict ``>``)."""
    masks = torch.zeros(2, 40, 20, dtype=torch.bool)
    masks[0, 0:20] = True
    masks[1, 5:25] = True
    assert mask_iou(masks)[0, 1] == np.float32(0.6)
    assert mask_nms(masks, 0.6).tolist() == [0, 1]
    logits = torch.full((2, 4), -5.0)
    logits[:, 0] = torch.tensor([5.0, 4.0])
    keep, _ = CTVISTracker(3).select_candidates(logits, torch.where(masks, 10.0, -10.0))
    assert keep.tolist() == [0, 1]


def test_resize_crops_the_height_padding_too():
    """The bottom padding rows of a padded batch are cut before the resize to the original
    size (a 360-row frame padded to 384 kept them: masks at IoU 0.71 with the right ones)."""
    logits = torch.zeros(1, 6, 4)
    logits[0, 4:] = 10.0  # stride-4 rows of the padding (the frame is 16 of 24 rows)
    out = resize_mask_logits(logits, (24, 16), (16, 16), (32, 32))
    assert out.shape == (1, 32, 32)
    # only the bilinear upsampling's reach across the edge remains (one padded row kept: the
    # last row would read 6.25 and row 25 0.06)
    assert (out[0, :27] == 0).all() and torch.allclose(out[0, -1], torch.tensor(3.75))


def test_defaults_are_the_official_tracker_settings():
    """The shipped configs set them; a tracker built in code gets the defaults."""
    official = dict(score_thr=0.01, init_score_thr=0.01, mask_nms_thr=0.6, match_score_thr=0.3,
                    match_metric='bisoftmax', frame_weight=True, max_cache=10,
                    num_dead_frames=20, noise_frame_num=8, none_frame_num=2,
                    suppress_frame_num=3, motion_weight=0.0)
    params = inspect.signature(CTVISTracker).parameters
    assert {key: params[key].default for key in official} == official
    bank = inspect.signature(MemoryBank).parameters
    assert (bank['max_cache'].default, bank['num_dead_frames'].default) == (10, 20)
