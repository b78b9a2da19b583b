"""projects/minvis: the MinVIS baseline as a plugin project (tracker, video output, configs, tools).

The project uses ctvis only through its registry and public API; these tests check the Hungarian
association on hand-made embeddings, the video-level scores, that the configs differ from the CTVIS
recipes they inherit exactly where MinVIS differs, and a tiny train + test through the tools.
"""
import itertools
import json
import math
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.registry import init_default_scope

from conftest import REPO, frame_sample, run_in_repo
from ctvis.datasets.synthetic import square_clip
from ctvis.models import VideoTracks
from mmdet.registry import MODELS
from projects.minvis.minvis import MinVISTracker, MinVISVideoTracks, match_embeddings

CONFIGS = osp.join(REPO, 'projects', 'minvis', 'configs')
QUICKSTART = osp.join(CONFIGS, 'minvis_quickstart.py')
ZOO = osp.join(CONFIGS, 'minvis_r50_8xb20-16k_ytvis19.py')
CTVIS_WITH_MINVIS_TRACKER = osp.join(CONFIGS, 'ctvis_quickstart_minvis-tracker.py')
CTVIS_CONFIGS = osp.join(REPO, 'configs', 'ctvis')


def at_angles(*degrees: float) -> torch.Tensor:
    """Unit 2-d embeddings at the given angles, shape (len(degrees), 2)."""
    rad = torch.tensor(degrees, dtype=torch.float64) * math.pi / 180
    return torch.stack([rad.cos(), rad.sin()], dim=1)


def total_cosine(prev: torch.Tensor, cur: torch.Tensor, perm) -> float:
    return float(torch.cosine_similarity(prev, cur[list(perm)], dim=1).sum())


def track_video(tracker, frames):
    """``tracker.track`` over a list of (Q, E) embeddings; the per-frame query orders."""
    orders = []
    for t, embeds in enumerate(frames):
        q = embeds.shape[0]
        queries, track_ids = tracker.track(t, torch.zeros(q, 3), torch.zeros(q, 4, 4), embeds)
        assert torch.equal(track_ids, torch.arange(q))  # slot i is track i in every frame
        orders.append(queries.tolist())
    return orders


# ------------------------------------------------------------------------- association
def test_a_shuffle_of_the_queries_is_undone():
    torch.manual_seed(0)
    prev = torch.randn(6, 8)
    perm = torch.randperm(6)
    scale = torch.rand(6, 1) * 5 + 0.1  # norms differ: only directions matter
    cur = prev[perm] * scale + 0.01 * torch.randn(6, 8)
    queries = match_embeddings(prev, cur)
    assert queries.dtype == torch.long
    assert torch.equal(queries, torch.argsort(perm))  # cur[queries] lines up with prev


@pytest.mark.parametrize('seed', range(10))
def test_the_assignment_maximises_the_summed_cosine(seed):
    """Checked against brute force over all 120 one-to-one assignments of 5 queries."""
    generator = torch.Generator().manual_seed(seed)
    prev, cur = torch.randn(2, 5, 4, generator=generator, dtype=torch.float64)
    best = max(itertools.permutations(range(5)), key=lambda p: total_cosine(prev, cur, p))
    queries = match_embeddings(prev, cur).tolist()
    assert sorted(queries) == list(range(5))
    assert total_cosine(prev, cur, queries) == pytest.approx(total_cosine(prev, cur, best),
                                                             abs=1e-12)


def test_the_cost_is_cosine_not_dot_product():
    # Slot 0 is closer in angle to query 1, slot 1 to query 0; query 0 is long, so raw dot
    # products would give it to slot 0 instead.
    prev = at_angles(0, 90)
    cur = torch.cat([10 * at_angles(43), at_angles(40)])
    assert match_embeddings(prev, cur).tolist() == [1, 0]
    assert match_embeddings(prev * 7, cur / 3).tolist() == [1, 0]


def test_ties_still_give_each_slot_its_own_query():
    # queries 0 and 1 are identical and equally close to slots 0 and 1: a per-slot argmax would
    # give both slots the same query
    prev = at_angles(0, 90, 180)
    cur = at_angles(45, 45, 180)
    queries = match_embeddings(prev, cur).tolist()
    assert sorted(queries[:2]) == [0, 1] and queries[2] == 2
    assert match_embeddings(prev, cur).tolist() == queries  # and the same choice every time


def test_each_frame_is_matched_to_the_previous_frame_only():
    # Two identities turn by 50 degrees a frame (A: 0, 50, 100; B: 90, 140, 190). Frame 1 comes
    # with its queries swapped. Matched to frame 0, frame 2 would swap A and B (100 is 10 degrees
    # from B's first position); MinVIS matches it to frame 1, where the order is right.
    frames = [at_angles(0, 90), at_angles(140, 50), at_angles(100, 190)]
    assert track_video(MinVISTracker(num_classes=2), frames) == [[0, 1], [1, 0], [0, 1]]
    assert match_embeddings(frames[0], frames[2]).tolist() == [1, 0]


def test_every_query_is_tracked_whatever_its_score():
    tracker = MinVISTracker(num_classes=2)
    logits = torch.tensor([[5.0, 0.0, 0.0], [-9.0, -9.0, 9.0], [0.0, 4.0, 0.0]])
    assert logits.softmax(-1)[1, :2].max() < 1e-7  # query 1 is surely background
    embeds = at_angles(0, 120, 240)
    for t in range(2):
        queries, track_ids = tracker.track(t, logits, torch.zeros(3, 4, 4), embeds)
        assert queries.tolist() == [0, 1, 2] and track_ids.tolist() == [0, 1, 2]


def test_frames_must_be_tracked_in_order_from_frame_0():
    tracker = MinVISTracker(num_classes=2)
    logits, masks = torch.zeros(2, 3), torch.zeros(2, 4, 4)
    with pytest.raises(ValueError, match='frame 1 follows frame -1'):
        tracker.track(1, logits, masks, at_angles(0, 90))
    tracker.track(0, logits, masks, at_angles(0, 90))
    tracker.track(1, logits, masks, at_angles(0, 90))
    with pytest.raises(ValueError, match='frame 3 follows frame 1'):
        tracker.track(3, logits, masks, at_angles(0, 90))
    with pytest.raises(ValueError, match=r'\(2, 2\) and \(3, 2\)'):
        tracker.track(2, torch.zeros(3, 3), torch.zeros(3, 4, 4), at_angles(0, 90, 180))
    # frame 0 starts a new video, whatever came before
    tracker.track(0, torch.zeros(3, 3), torch.zeros(3, 4, 4), at_angles(0, 90, 180))
    assert tracker.prev_embeds.shape == (3, 2) and tracker.video.num_video_frames == 0


# ------------------------------------------------------------------------- video output
def two_frame_video(mask_rescore: bool) -> MinVISVideoTracks:
    """Two slots over two frames; masks 1.0 inside (sigmoid 0.731), -1.0 outside."""
    video = MinVISVideoTracks(num_classes=2, mask_rescore=mask_rescore)
    masks = torch.full((2, 4, 4), -1.0)
    masks[:, :2] = 1.0
    video.add_frame(0, [0, 1], torch.tensor([[4.0, 0.0, 0.0], [0.0, 1.0, 2.0]]), masks)
    video.add_frame(1, [0, 1], torch.tensor([[0.0, 0.0, 0.0], [0.0, 3.0, 2.0]]), masks)
    return video


def test_video_scores_are_class_probabilities_of_the_mean_logits():
    pred = two_frame_video(mask_rescore=False).video_predictions(max_per_video=3)
    mean_logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, 2.0]])
    probs = mean_logits.softmax(-1)[:, :2]
    # (slot 0, class 0) 0.787, (slot 1, class 1) 0.468, (slot 0, class 1) 0.106
    assert pred.track_ids.tolist() == [0, 1, 0] and pred.labels.tolist() == [0, 1, 1]
    expected = torch.stack([probs[0, 0], probs[1, 1], probs[0, 1]]).double()
    assert torch.allclose(pred.scores, expected, atol=1e-7)
    # the mean of the per-frame probabilities would differ (0.649 for the first)
    assert abs(float(pred.scores[0]) - 0.649) > 0.1
    assert len(pred.masks) == 3 and all(len(m) == 2 for m in pred.masks)


def test_mask_rescoring_is_ctvis_s_option_not_minvis_s():
    plain = two_frame_video(mask_rescore=False).video_predictions(max_per_video=3)
    rescored = two_frame_video(mask_rescore=True).video_predictions(max_per_video=3)
    mask_score = torch.sigmoid(torch.tensor(1.0)).double()
    assert torch.allclose(rescored.scores, plain.scores * mask_score, atol=1e-6)
    assert torch.equal(rescored.labels, plain.labels)


def test_no_short_track_suppression():
    """A track seen once stays (VideoTracks, with its IDOL suppression, drops it)."""
    minvis, ctvis_tracks = MinVISVideoTracks(num_classes=2), VideoTracks(num_classes=2)
    for video in (minvis, ctvis_tracks):
        video.add_frame(0, [0, 1], torch.zeros(2, 3), torch.ones(2, 4, 4))
        for t in range(1, 12):
            video.add_frame(t, [0], torch.zeros(1, 3), torch.ones(1, 4, 4))
    assert set(minvis.records) == {0, 1} and set(ctvis_tracks.records) == {0}


# ------------------------------------------------------------------------- configs
def flatten(node, prefix=''):
    """{dotted key: leaf value} of a config (list items by index)."""
    if hasattr(node, 'items'):
        items = node.items()
    elif isinstance(node, (list, tuple)):
        items = enumerate(node)
    else:
        return {prefix: node}
    flat = {}
    for key, value in items:
        flat.update(flatten(value, f'{prefix}.{key}' if prefix else str(key)))
    return flat


def config_differences(path: str, base_path: str) -> dict:
    """Keys whose values differ between a config and the CTVIS config it inherits."""
    cfg = flatten(Config.fromfile(path).to_dict())
    base = flatten(Config.fromfile(base_path).to_dict())
    return {key: (base.get(key), cfg.get(key)) for key in set(cfg) | set(base)
            if cfg.get(key, '<none>') != base.get(key, '<none>')}


def without_helpers(changes: dict, *helpers: str) -> dict:
    """The changes without the config's helper variables and the arguments of the CTVIS tracker
    (which the MinVIS tracker replaces, ``_delete_``)."""
    return {key: value for key, value in changes.items()
            if not key.startswith(helpers + ('model.tracker.', )) or key == 'model.tracker.type'}


# What MinVIS changes in the CTVIS recipes, and nothing else (helper variables aside).
MODEL_CHANGES = {
    'custom_imports.imports.1': (None, 'projects.minvis.minvis'),
    'model.track_head.num_reid_layers': (3, 0),
    'model.contrastive_loss.loss_weight': (2.0, 0.0),
    'model.contrastive_loss.aux_loss_weight': (3.0, 0.0),
    'model.tracker.type': ('CTVISTracker', 'MinVISTracker'),
}


def test_quickstart_differs_from_ctvis_s_only_where_minvis_does():
    changes = config_differences(QUICKSTART, osp.join(CTVIS_CONFIGS, 'ctvis_quickstart.py'))
    changes = without_helpers(changes, 'train_pipeline.')
    assert changes == dict(
        MODEL_CHANGES, **{
            'train_dataloader.batch_size': (4, 20),  # 4 clips x 5 frames -> 20 frames
            'train_dataloader.dataset.pipeline.0.num_frames': (5, 1),
            'model.track_head.query_dropout': (2 / 12, 0.0),  # every query in every frame
        })
    cfg = Config.fromfile(QUICKSTART)
    assert cfg.model.tracker == dict(type='MinVISTracker', num_classes=4)
    assert cfg.model.test_cfg.max_per_video == 10  # as MinVIS (and the CTVIS quickstart)


def test_the_ctvis_model_with_the_minvis_tracker_differs_only_in_the_tracker():
    changes = config_differences(CTVIS_WITH_MINVIS_TRACKER,
                                 osp.join(CTVIS_CONFIGS, 'ctvis_quickstart.py'))
    assert without_helpers(changes) == {
        key: MODEL_CHANGES[key] for key in ('custom_imports.imports.1', 'model.tracker.type')}
    assert Config.fromfile(CTVIS_WITH_MINVIS_TRACKER).model.tracker == dict(
        type='MinVISTracker', num_classes=4)


def test_zoo_config_differs_from_ctvis_s_only_where_minvis_does():
    changes = config_differences(ZOO, osp.join(CTVIS_CONFIGS, 'ctvis_r50_8xb2-16k_ytvis19.py'))
    changes = without_helpers(changes, 'frames_per_gpu', 'real_video_pipeline.',
                              'pseudo_video_pipeline.', 'train_datasets.')
    datasets = 'train_dataloader.dataset.datasets'
    assert changes == dict(
        MODEL_CHANGES, **{
            'model.test_cfg.max_per_video': (40, 10),
            'train_dataloader.batch_size': (2, 20),  # 2 clips x 10 frames -> 20 frames
            f'{datasets}.0.pipeline.2.num_frames': (10, 1),  # a COCO image: one frame
            f'{datasets}.1.pipeline.0.num_frames': (10, 1),
            'auto_scale_lr.base_batch_size': (16, 160),  # 8 GPUs x 20 frames
            'val_evaluator.outfile_prefix': (
                './work_dirs/ctvis_r50_8xb2-16k_ytvis19/results',
                './work_dirs/minvis_r50_8xb20-16k_ytvis19/results'),
            'test_evaluator.outfile_prefix': (
                './work_dirs/ctvis_r50_8xb2-16k_ytvis19/results',
                './work_dirs/minvis_r50_8xb20-16k_ytvis19/results'),
        })
    cfg = Config.fromfile(ZOO)
    assert cfg.train_dataloader.dataset.datasets[0].pipeline[2].type == 'PseudoVideoFromImage'
    assert cfg.model.tracker == dict(type='MinVISTracker', num_classes=40)


BUILD_SCRIPT = '''
import sys
from mmengine.config import Config
from mmengine.registry import init_default_scope
for path in sys.argv[1:]:
    cfg = Config.fromfile(path)
    assert 'projects.minvis.minvis' in sys.modules, 'custom_imports did not import the project'
    init_default_scope(cfg.default_scope)
    from mmdet.registry import MODELS
    model = MODELS.build(cfg.model)
    print(type(model).__name__, type(model.tracker).__name__,
          type(model.tracker.video).__name__, type(model.track_head.reid_embed).__name__)
'''


def test_configs_build_through_custom_imports():
    """In a fresh interpreter: the configs' custom_imports alone bring the tracker in."""
    result = subprocess.run(
        [sys.executable, '-c', BUILD_SCRIPT, QUICKSTART, ZOO, CTVIS_WITH_MINVIS_TRACKER],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    built = ['CTVIS', 'MinVISTracker', 'MinVISVideoTracks']
    assert result.stdout.split() == (built + ['Identity']) * 2 + built + ['Sequential']


# ------------------------------------------------------------------------- the model
@pytest.fixture(scope='module')
def quickstart_model():
    init_default_scope('mmdet')
    torch.manual_seed(0)
    model = MODELS.build(Config.fromfile(QUICKSTART).model)
    model.init_weights()
    return model


def test_single_frame_training_has_no_contrastive_loss(quickstart_model):
    model = quickstart_model.train()
    assert not [name for name, _ in model.named_parameters() if 'reid' in name]
    clips = [square_clip(num_frames=1, seed=s) for s in range(2)]
    losses = model(**model.data_preprocessor(pseudo_collate(clips), True), mode='loss')
    assert losses['loss_reid'] == 0 and losses['loss_aux_reid'] == 0
    assert losses['loss_cls'] > 0 and losses['loss_mask'] > 0
    # longer clips would make contrastive items, but their weights are 0
    clips = [square_clip(num_frames=3, seed=s) for s in range(2)]
    losses = model(**model.data_preprocessor(pseudo_collate(clips), True), mode='loss')
    assert losses['loss_reid'] == 0 and losses['loss_aux_reid'] == 0


def test_online_predict_follows_minvis(quickstart_model):
    """Frame by frame through the CTVIS model: every query in every frame, and the video output
    is the top 10 of softmax(mean over frames of the matched queries' logits)."""
    model = quickstart_model.eval()
    torch.manual_seed(1)
    frames = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        outs = [model.predict(frames[None, t:t + 1], [frame_sample(t, 3)])[0] for t in range(3)]
        detections = [model.detect(frames[t:t + 1]) for t in range(3)]  # as predict ran them
    logits = [d[0][0] for d in detections]
    embeds = [d[2][0] for d in detections]
    num_queries = model.track_head.num_queries
    assert num_queries > 10  # the top 10 below are a choice among the queries
    for out in outs[:2]:
        assert not out.metainfo.get('video_complete', False)
        assert out[0].pred_track_instances.instances_id.tolist() == list(range(num_queries))
    orders = [torch.arange(num_queries)]
    for t in (1, 2):
        orders.append(match_embeddings(embeds[t - 1][orders[-1]], embeds[t]))
    mean_logits = torch.stack([logits[t][orders[t]] for t in range(3)]).double().mean(0)
    probs = mean_logits.float().softmax(-1)[:, :-1]  # (slot, class)
    video = outs[2]
    assert video.metainfo['video_complete'] and len(video) == 3
    pred = video[0].pred_track_instances
    # each prediction scored by its class probability, and they are the 10 best (the random
    # model's near-ties may come in another order)
    assert torch.allclose(pred.scores, probs[pred.instances_id, pred.labels], atol=1e-6)
    assert torch.allclose(pred.scores.sort().values, probs.flatten().topk(10).values.sort().values,
                          atol=1e-6)
    assert len(set(zip(pred.instances_id.tolist(), pred.labels.tolist()))) == 10


# ------------------------------------------------------------------------- the tools
E2E_CONFIG = osp.join(REPO, 'tests', 'data', 'configs', 'ctvis_toy_e2e.py')
SHRINK_MARKER = '# --- toy shrink:'


def toy_config_text(base: str) -> str:
    """``base`` with the end-to-end test's shrink (the toy data under $CTVIS_TOY_DATA, no
    workers, 2 iterations, validation at the end), read from tests/data/configs/ctvis_toy_e2e.py;
    4 single frames per iteration."""
    with open(E2E_CONFIG) as f:
        e2e = f.read()
    assert SHRINK_MARKER in e2e, f'{E2E_CONFIG}: the line {SHRINK_MARKER!r} is gone'
    shrink = SHRINK_MARKER + e2e.split(SHRINK_MARKER, 1)[1]
    return (f'_base_ = [{base!r}]\n'
            'train_pipeline = _base_.train_pipeline  # MinVIS: one frame per sample\n'
            f'{shrink}\n'
            'train_dataloader.update(batch_size=4)\n')


@pytest.fixture(scope='module')
def toy_config(tmp_path_factory):
    """The MinVIS quickstart shrunk to 2 iterations of 4 frames on the tiny toy set (the tools
    find it through $CTVIS_TOY_DATA, which ``run`` sets)."""
    path = tmp_path_factory.mktemp('minvis_config') / 'minvis_toy.py'
    path.write_text(toy_config_text(QUICKSTART))
    return str(path)


def test_trains_and_tests_through_the_tools(toy_config, small_toy_root, tmp_path):
    work_dir = str(tmp_path / 'train')
    result = run_in_repo([sys.executable, 'tools/train.py', toy_config, '--work-dir', work_dir],
                         small_toy_root)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    assert 'Iter(train) [2/2]' in log and 'loss_reid: 0.0000' in log
    assert 'youtube_vis/AP' in log  # validation at the end of training

    out = tmp_path / 'results.json'
    result = run_in_repo([sys.executable, 'tools/test.py', toy_config,
                          osp.join(work_dir, 'iter_2.pth'), '--work-dir', str(tmp_path / 'test'),
                          '--out', str(out)], small_toy_root)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    assert 'youtube_vis/AP' in log
    with open(osp.join(small_toy_root, 'valid.json')) as f:
        lengths = {v['id']: v['length'] for v in json.load(f)['videos']}
    per_video = {}
    for entry in json.loads(out.read_text()):
        per_video[entry['video_id']] = per_video.get(entry['video_id'], 0) + 1
        assert len(entry['segmentations']) == lengths[entry['video_id']]
    # every video, with MinVIS's top 10 (query, class) pairs
    assert per_video == {video_id: 10 for video_id in lengths}
