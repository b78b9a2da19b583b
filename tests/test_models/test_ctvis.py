"""The CTVIS model: head outputs, losses, online predict (contrastive items: test_contrastive)."""
import re

import pycocotools.mask as mask_util
import pytest
import torch
from mmengine.dataset import pseudo_collate
from mmengine.registry import init_default_scope

from conftest import build_tiny_model, frame_sample, tiny_model_cfg
from ctvis.datasets.synthetic import square_clip
from ctvis.models import BaseVideoTracker, CTVISHead, VideoTracks
from ctvis.models.ctvis import clip_slot_queries
from mmdet.registry import MODELS


def batch(model, clips, training=True):
    return model.data_preprocessor(pseudo_collate(clips), training)


def test_head_outputs_shapes(tiny_model):
    assert isinstance(tiny_model.track_head, CTVISHead)
    frames = torch.randn(2, 3, 64, 96)
    cls_list, mask_list, embeds, queries = tiny_model.track_head(tiny_model.backbone(frames), [])
    assert len(cls_list) == len(mask_list) == 3  # initial queries + 2 decoder layers
    assert cls_list[-1].shape == (2, 6, 4)
    assert mask_list[-1].shape == (2, 6, 16, 24)  # stride 4
    assert embeds.shape == queries.shape == (2, 6, 32)
    # the re-id head is a 3-layer MLP on the normalised queries, not the identity
    assert not torch.allclose(embeds, queries)
    logits, masks, detect_embeds = tiny_model.detect(frames)
    assert torch.allclose(detect_embeds, embeds) and torch.allclose(logits, cls_list[-1])


def test_loss_is_finite_and_trains_the_reid_head(tiny_model):
    data = batch(tiny_model, [square_clip(seed=0), square_clip(seed=1)])
    losses = tiny_model(**data, mode='loss')
    expected = {'loss_cls', 'loss_mask', 'loss_dice', 'd0.loss_cls', 'd1.loss_dice',
                'loss_reid', 'loss_aux_reid'}
    assert expected <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses['loss_reid'] > 0 and losses['loss_aux_reid'] > 0
    (losses['loss_reid'] + losses['loss_aux_reid']).backward()
    reid_grad = tiny_model.track_head.reid_embed[0].weight.grad
    assert reid_grad is not None and reid_grad.abs().sum() > 0
    # the class head gets no gradient from the contrastive terms alone
    cls_grad = tiny_model.track_head.cls_embed.weight.grad
    assert cls_grad is None or cls_grad.abs().sum() == 0


@pytest.mark.parametrize('negatives', ['memory', 'prev_queries'])
@pytest.mark.parametrize('noise_prob', [0.0, 1.0])
def test_negative_modes_and_noise_run(negatives, noise_prob):
    model = build_tiny_model(negatives=negatives, noise_prob=noise_prob)
    clip = square_clip(num_frames=4, absent={(1, 9), (2, 9)})
    losses = model(**batch(model, [clip]), mode='loss')
    assert torch.isfinite(losses['loss_reid']) and losses['loss_reid'] > 0


def test_losses_with_query_dropout_match_and_contrast_the_kept_queries():
    """Half of the 6 queries left out of each frame: matching, the detection losses and the
    contrastive items work on the 3 kept ones (a frame may then leave ground truth unmatched)."""
    cfg = tiny_model_cfg()
    cfg.track_head.query_dropout = 0.5
    init_default_scope('mmdet')
    torch.manual_seed(0)
    model = MODELS.build(cfg)
    model.init_weights()
    losses = model(**batch(model, [square_clip(num_frames=4, seed=2)]), mode='loss')
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses['loss_reid'] > 0
    sum(losses.values()).backward()
    assert model.track_head.query_feat.weight.grad.abs().sum(1).gt(0).sum() > 3


def test_overfitting_one_clip_lowers_the_loss():
    model = build_tiny_model(seed=1)
    data = batch(model, [square_clip(num_frames=3, seed=3)])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    history = []
    for _ in range(25):
        torch.manual_seed(0)  # same sampled points every step
        losses = model(**data, mode='loss')
        total = sum(losses.values())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        history.append(total.item())
    assert history[-1] < 0.6 * history[0], history


def test_clip_slots_follow_instance_ids():
    slots = clip_slot_queries(
        [torch.tensor([9, 7]), torch.tensor([7]), torch.tensor([])],
        [torch.tensor([4, 1]), torch.tensor([3]), torch.tensor([])])
    assert slots.tolist() == [[1, 4], [3, -1], [-1, -1]]  # slots sorted by id: 7, 9
    with pytest.raises(ValueError, match='duplicated instance ids'):
        clip_slot_queries([torch.tensor([7, 7])], [torch.tensor([0, 1])])


def test_online_predict_returns_the_video_when_complete(tiny_model):
    tiny_model.eval()
    torch.manual_seed(0)
    frames = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        outs = [tiny_model.predict(frames[None, t:t + 1], [frame_sample(t, 4)])[0]
                for t in range(4)]
    for out in outs[:3]:
        assert not out.metainfo.get('video_complete', False)
        current = out[0].pred_track_instances
        assert len(current) >= 1 and len(current.masks) == len(current)
    video = outs[-1]
    assert video.metainfo['video_complete'] and video.metainfo['video_id'] == 3
    assert len(video) == 4
    preds = video[0].pred_track_instances
    assert 0 < len(preds) <= 3  # top-k with k = number of classes
    for frame in video:
        p = frame.pred_track_instances
        assert torch.equal(p.labels, preds.labels) and torch.equal(p.scores, preds.scores)
        assert all(rle['size'] == [96, 96] for rle in p.masks)
        assert all(mask_util.decode(rle).shape == (96, 96) for rle in p.masks)
    assert preds.labels.min() >= 0 and preds.labels.max() < 3
    assert torch.all(preds.scores[:-1] >= 0) and torch.all(preds.scores <= 1)


def test_predict_of_a_whole_clip_and_single_frame_videos(tiny_model):
    tiny_model.eval()
    clip = square_clip(num_frames=3)
    data = batch(tiny_model, [clip], training=False)
    with torch.no_grad():
        video = tiny_model.predict(**data)[0]
    assert video.metainfo['video_complete'] and len(video) == 3
    single = batch(tiny_model, [square_clip(num_frames=1)], training=False)
    with torch.no_grad():
        video = tiny_model.predict(**single)[0]
    assert video.metainfo['video_complete'] and len(video) == 1
    assert len(video[0].pred_track_instances) >= 1


def test_predict_rejects_batches_of_videos(tiny_model):
    tiny_model.eval()
    data = batch(tiny_model, [square_clip(), square_clip()], training=False)
    with pytest.raises(ValueError, match='one video at a time'):
        tiny_model.predict(**data)


class QueryIndexTracker(BaseVideoTracker):
    """A new tracker is one class: every query kept (last query first), query i is track i."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.reset()

    def reset(self) -> None:
        self.video = VideoTracks(self.num_classes)

    def track(self, frame_id, logits, mask_logits, embeds):
        if frame_id == 0:
            self.reset()
        queries = torch.arange(logits.shape[0]).flip(0)
        return queries, queries.clone()


def model_with_tracker(tracker: dict):
    init_default_scope('mmdet')
    cfg = tiny_model_cfg()
    cfg.tracker = tracker
    return MODELS.build(cfg)


def test_any_base_video_tracker_plugs_into_the_model():
    model = model_with_tracker(dict(type=QueryIndexTracker, num_classes=3)).eval()
    frames = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        outs = [model.predict(frames[None, t:t + 1], [frame_sample(t, 2)])[0] for t in range(2)]
    first = outs[0][0].pred_track_instances
    assert first.instances_id.tolist() == [5, 4, 3, 2, 1, 0]
    video = outs[1]
    assert video.metainfo['video_complete'] and len(video) == 2
    top = video[0].pred_track_instances
    assert len(top) == 3  # top-k = number of classes, of 6 tracks
    mask_of_track = dict(zip(first.instances_id.tolist(), first.masks))
    assert len({rle['counts'] for rle in first.masks}) > 1  # masks that tell tracks apart
    assert [mask_of_track[i] for i in top.instances_id.tolist()] == top.masks  # same frame 0


def test_frames_report_tracks_the_short_track_rule_drops_at_once():
    """``none_frame_num=0`` drops every short track from the video record in the frame it is
    seen; the frame's output still has its detections (it crashed reading their masks)."""
    model = model_with_tracker(dict(type='CTVISTracker', num_classes=3, noise_frame_num=0,
                                    none_frame_num=0, suppress_frame_num=100)).eval()
    frames = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        outs = [model.predict(frames[None, t:t + 1], [frame_sample(t, 3)])[0] for t in range(3)]
    for out in outs[:2]:
        current = out[0].pred_track_instances
        assert len(current) >= 1 and len(current.masks) == len(current)
    assert len(outs[2][0].pred_track_instances) == 0  # every track suppressed in the video


def test_the_tracker_runs_in_float32_outside_autocast():
    """The fp16 test loops run the model under autocast on CUDA; the tracker's raw re-id dot
    products overflow fp16 above 65504 (NaN scores, no association). Checked with the CPU's
    bfloat16 autocast: the tracker gets float32 and autocast off."""
    model = model_with_tracker(dict(type='CTVISTracker', num_classes=3)).eval()
    seen = []
    track = model.tracker.track

    def spy(frame_id, logits, mask_logits, embeds, *args):
        seen.append((embeds.dtype, logits.dtype, torch.is_autocast_enabled('cpu')))
        return track(frame_id, logits, mask_logits, embeds, *args)

    model.tracker.track = spy
    frames = torch.randn(1, 1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        model.predict(frames, [frame_sample(0, 1)])
    assert seen == [(torch.float32, torch.float32, False)]


def test_a_tracker_outside_the_interface_is_refused():
    with pytest.raises(TypeError, match='builds a VideoTracks, which is not a '
                                        'ctvis.models.BaseVideoTracker'):
        model_with_tracker(dict(type=VideoTracks, num_classes=3))


def test_video_tracks_report_the_size_of_their_recorded_masks():
    """``rle_bytes`` counts every recorded RLE (what grows with the video), not only the output's
    top k; a suppressed track's masks no longer count."""
    video = VideoTracks(num_classes=2, noise_frame_num=1, none_frame_num=1, suppress_frame_num=2)
    masks = torch.full((2, 6, 6), -1.0)
    masks[0, :3] = masks[1, 3:] = 1.0
    video.add_frame(0, [0, 1], torch.zeros(2, 3), masks)
    video.add_frame(1, [0], torch.zeros(1, 3), masks[:1])
    rles = mask_util.encode((masks > 0).permute(1, 2, 0).numpy().astype('uint8').copy('F'))
    assert video.track_ids == [0, 1]
    assert video.rle_bytes == 2 * len(rles[0]['counts']) + len(rles[1]['counts'])
    video.add_frame(2, [0], torch.zeros(1, 3), masks[:1])  # track 1: 1 detection, gone: suppressed
    assert video.track_ids == [0] and video.rle_bytes == 3 * len(rles[0]['counts'])


@pytest.mark.parametrize('test_cfg, message', [
    (dict(max_per_vid=5), "test_cfg has unknown keys ['max_per_vid']; it takes max_per_video "
                          'and chunk_size'),
    (dict(max_per_video=0), 'test_cfg.max_per_video must be a whole number >= 1, got 0'),
    (dict(chunk_size=2.0), 'test_cfg.chunk_size must be a whole number >= 1, got 2.0'),
])
def test_test_cfg_typos_and_unusable_values_are_refused(test_cfg, message):
    """A misspelled key kept the default silently; max_per_video=0 became the number of
    classes."""
    cfg = tiny_model_cfg()
    cfg.test_cfg = test_cfg
    init_default_scope('mmdet')
    with pytest.raises(ValueError, match=re.escape(f'CTVIS: {message}')):
        MODELS.build(cfg)
    cfg.test_cfg = dict(max_per_video=None)  # the number of classes
    assert MODELS.build(cfg).max_per_video == 3


def test_an_instance_whose_mask_is_empty_in_a_frame_is_absent_from_it():
    """Its contrastive slot in that frame is -1 (no anchor, no positive from an empty mask)."""
    model = build_tiny_model()
    clip = square_clip(seed=0)
    frame = clip['data_samples'].video_data_samples[1]
    row = frame.gt_instances.instances_ids.tolist().index(7)
    frame.gt_instances.masks.masks[row][:] = 0
    seen = []
    forward = model.contrastive_loss.forward

    def spy(clip_embeds, clip_slot_queries):
        seen.extend(clip_slot_queries)
        return forward(clip_embeds, clip_slot_queries)

    model.contrastive_loss.forward = spy
    model(**model.data_preprocessor(pseudo_collate([clip]), True), mode='loss')
    slots = seen[0]  # (frames, instances sorted by id: 7 then 9)
    assert slots[1, 0] == -1 and (slots[[0, 2], 0] >= 0).all() and (slots[:, 1] >= 0).all()
