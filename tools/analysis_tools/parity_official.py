"""Check ctvis, stage by stage, against what the official CTVIS code computed.

usage: parity_official.py REFERENCE_NPZ [OFFICIAL_WEIGHTS] [--config CONFIG] [--frames-dir DIR]
                          [--tracker-only] [--json OUT]

The official detectron2 weights are converted with the project's converter, loaded strictly into
the R50 YouTube-VIS 2019 model, and the reference's network input is fed frame by frame through the
same online ``CTVIS.predict`` path users run. Every stage is compared with the reference (see
``tests/data/parity/README.md`` for what it holds); the exit code is 0 only when all stages are
within tolerance. The network stages run with torch's own linear layers, the arithmetic of the
official code (CPU inference otherwise multiplies on oneDNN, ``ctvis.ops.onednn``, whose
last-bit differences can flip a pixel of the decoder's attention masks and move raw logits by more
than the tolerance). With ``--frames-dir`` the JPEG frames also go through the project's own test
pipeline (image loading, resizing to the reference's test scale, normalisation, padding) with the
default arithmetic, and the final tracks and labels are compared.

With ``--tracker-only``, or for a reference without network input (the adversarial tracker cases
of ``tests/data/tracker_cases/``), no weights are needed: the reference's per-frame outputs go
straight into a ``CTVISTracker`` with the reference's tracker settings and every tracker stage is
compared.
"""
import argparse
import copy
import json
import os.path as osp
import sys
from typing import Dict, List

import numpy as np
import pycocotools.mask as mask_util
import torch
from mmengine.config import Config
from mmengine.dataset import Compose, pseudo_collate
from mmengine.registry import init_default_scope

import ctvis  # noqa: F401  (registers ctvis components)
from ctvis.utils.checkpoint import safe_load_file
from ctvis.utils.known_noise import known_noise_filtered
from ctvis.utils.d2_conversion import convert_state_dict, unwrap_d2_checkpoint
from ctvis.models import CTVISTracker
from ctvis.models.mask_utils import resize_mask_logits
from ctvis.ops.onednn import onednn_fusion_flags
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample, TrackDataSample

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEFAULT_CONFIG = osp.join(ROOT, 'configs', 'ctvis', 'ctvis_r50_8xb2-16k_ytvis19.py')
RAW_TOL = 1e-4
SCORE_TOL = 1e-4
MIN_MASK_IOU = 0.999


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('reference',
                        help='official_r50_seed2_8f.npz or a tracker case '
                             '(tests/data/tracker_cases)')
    parser.add_argument('weights', nargs='?',
                        help='official-format weights (tests/data/parity/gen_weights.py); '
                             'not used with --tracker-only or for a tracker case')
    parser.add_argument('--config', default=DEFAULT_CONFIG, help='R50 YTVIS19 config')
    parser.add_argument('--frames-dir', help='also run these JPEG frames through the test pipeline')
    parser.add_argument('--tracker-only', action='store_true',
                        help="replay the reference's per-frame outputs through the tracker only")
    parser.add_argument('--json', help='write the per-stage table here')
    return parser.parse_args()


class Recorder:
    """Observe what a tracker computes, frame by frame, without changing it."""

    def __init__(self, tracker) -> None:
        self.frames: List[Dict] = []
        select, track = tracker.select_candidates, tracker.track

        def record_select(logits, mask_logits, mask_ious=None):
            keep, scores = select(logits, mask_logits, mask_ious)
            self.frames[-1].update(cand_query=keep, cand_score=scores)
            return keep, scores

        def record_track(frame_id, *args, **kwargs):
            queries, ids = track(frame_id, *args, **kwargs)
            bank = tracker.memory
            embed_dim = self.frames[-1]['embeds'].shape[-1]
            self.frames[-1].update(
                assign_query=queries, assign_track_id=ids,
                bank_track_id=torch.tensor(sorted(bank.tracks), dtype=torch.long),
                bank_embeds=torch.stack([bank.tracks[i].embed for i in sorted(bank.tracks)])
                if len(bank) else torch.zeros(0, embed_dim))
            return queries, ids

        tracker.select_candidates = record_select
        tracker.track = record_track

    def start_frame(self, logits: torch.Tensor, masks: torch.Tensor,
                    embeds: torch.Tensor) -> None:
        """A new frame's per-frame outputs, before the tracker sees them."""
        self.frames.append(dict(logits=logits, masks=masks, embeds=embeds))

    def watch_model(self, model: torch.nn.Module) -> None:
        """Start a frame whenever the model hands one to its tracker."""
        track_frame = model.track_frame

        def record_track_frame(meta, logits, mask_logits, embeds):
            self.start_frame(logits, mask_logits, embeds)
            instances = track_frame(meta, logits, mask_logits, embeds)
            self.end_frame(model.tracker.video)
            return instances

        model.track_frame = record_track_frame

    def end_frame(self, video) -> None:
        """The tracks in the video record after the frame (short-track suppression done)."""
        self.frames[-1]['record_track_id'] = torch.tensor(video.track_ids, dtype=torch.long)

    def stacked(self, key: str) -> np.ndarray:
        return torch.cat([f[key] for f in self.frames]).detach().cpu().numpy()

    def framed(self, key: str) -> np.ndarray:
        return np.concatenate([np.full(len(f[key]), t) for t, f in enumerate(self.frames)])


def reference_meta(ref) -> dict:
    return json.loads(str(ref['meta_json']))


def tracker_from_reference(ref, path: str) -> CTVISTracker:
    """A ``CTVISTracker`` with the settings the reference was computed with (official key names)."""
    meta = reference_meta(ref)
    cfg = meta['tracker_cfg']
    bank = cfg['MEMORY_BANK']
    fixed = dict(MATCH_METRIC='bisoftmax', MATCH_TYPE='greedy', TEMPORAL_SCORE_TYPE='mean')
    for key, value in list(fixed.items()) + [('EMBED_TYPE', 'similarity_guided')]:
        found = bank.get(key) if key == 'EMBED_TYPE' else cfg.get(key)
        if found != value:
            raise SystemExit(f'parity_official: {path}: tracker setting {key}={found!r} has no '
                             f'ctvis counterpart (only {value!r})')
    return CTVISTracker(
        num_classes=meta['num_classes'], score_thr=cfg['INFERENCE_SELECT_THR'],
        init_score_thr=cfg['INIT_SCORE_THR'], mask_nms_thr=cfg['MASK_NMS_THR'],
        match_score_thr=cfg['MATCH_SCORE_THR'], frame_weight=cfg['FRAME_WEIGHT'],
        max_cache=bank['maximum_cache'], num_dead_frames=bank['NUM_DEAD_FRAMES'],
        noise_frame_num=cfg['NOISE_FRAME_NUM'], none_frame_num=cfg['NONE_FRAME_NUM'],
        suppress_frame_num=cfg['SUPPRESS_FRAME_NUM'])


def build_model(config: str, weights: str) -> torch.nn.Module:
    cfg = Config.fromfile(config)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    model = MODELS.build(cfg.model)
    conversion = convert_state_dict(unwrap_d2_checkpoint(safe_load_file(weights), weights))
    if conversion.unmapped:
        raise SystemExit(f'{weights}: {len(conversion.unmapped)} keys have no ctvis counterpart, '
                         f'e.g. {conversion.unmapped[:5]}')
    model.load_state_dict(conversion.state_dict, strict=True)
    return model.eval()


def video_sample(frame_id: int, num_frames: int, shapes: Dict) -> TrackDataSample:
    frame = DetDataSample(metainfo=dict(frame_id=frame_id, ori_video_length=num_frames,
                                        video_id=0, **shapes))
    sample = TrackDataSample()
    sample.video_data_samples = [frame]
    return sample


def run_reference_input(model, ref) -> tuple:
    """Feed the reference's normalised, padded input one frame at a time."""
    inputs = torch.from_numpy(ref['input_normalized_padded'])
    num_frames = inputs.shape[0]
    shapes = dict(img_shape=tuple(ref['image_size_resized'].tolist()),
                  ori_shape=tuple(ref['image_size_original'].tolist()),
                  batch_input_shape=tuple(inputs.shape[-2:]))
    recorder = Recorder(model.tracker)
    recorder.watch_model(model)
    with torch.no_grad():
        for t in range(num_frames):
            result = model.predict(inputs[None, t:t + 1], [video_sample(t, num_frames, shapes)])
    return recorder, result[0]


def run_pipeline(model, cfg: Config, frames_dir: str, ref) -> TrackDataSample:
    """Feed the JPEG frames through the config's test pipeline at the reference's test scale."""
    short_side = int(min(ref['image_size_resized']))
    pipeline = copy.deepcopy(cfg.test_dataloader.dataset.pipeline)
    for transform in pipeline[0]['transforms']:
        if transform['type'] == 'Resize':
            transform['scale'] = (1333, short_side)
    pipeline = Compose(pipeline)
    names = sorted(n for n in json.loads(str(ref['meta_json']))['frame_files'])
    result = None
    with torch.no_grad():
        for t, name in enumerate(names):
            data = pipeline(dict(img_path=[osp.join(frames_dir, name)], frame_id=[t],
                                 img_id=[t], video_id=[0], ori_video_length=[len(names)]))
            result = model.test_step(pseudo_collate([data]))[0]
    return result


def replay_tracker(ref, path: str) -> tuple:
    """Feed the reference's per-frame outputs to a tracker as ``CTVIS.track_frame`` does."""
    tracker = tracker_from_reference(ref, path)
    recorder = Recorder(tracker)
    sizes = reference_meta(ref)['preprocessing']
    for t in range(ref['pred_logits'].shape[0]):
        logits, masks, embeds = (torch.from_numpy(ref[k][t])
                                 for k in ('pred_logits', 'pred_masks', 'pred_embeds'))
        recorder.start_frame(logits, masks, embeds)
        queries, ids = tracker.track(t, logits, masks, embeds)
        tracker.video.add_frame(t, ids.tolist(), logits[queries], resize_mask_logits(
            masks[queries], sizes['padded_hw'], sizes['resized_hw'], sizes['original_hw']))
        recorder.end_frame(tracker.video)
    pred = tracker.video.video_predictions(tracker.num_classes)
    masks = np.array([[mask_util.decode(rle) for rle in track] for track in pred.masks],
                     dtype=bool).reshape(len(pred), pred.num_frames, *pred.ori_shape)
    return recorder, dict(scores=pred.scores.numpy(), labels=pred.labels.numpy(),
                          track_ids=pred.track_ids.numpy(), masks=masks), tracker.video


def final_predictions(result: TrackDataSample) -> dict:
    first = result[0].pred_track_instances
    masks = np.stack([np.stack([mask_util.decode(f.pred_track_instances.masks[k])
                                for f in result]) for k in range(len(first))]).astype(bool)
    return dict(scores=first.scores.double().numpy(), labels=first.labels.numpy(),
                track_ids=first.instances_id.numpy(), masks=masks)


def worst_iou(a: np.ndarray, b: np.ndarray) -> float:
    """The lowest IoU of paired masks (two empty masks agree: IoU 1); 0 if the shapes differ."""
    if a.shape != b.shape:
        return 0.0
    inter = (a & b).reshape(a.shape[0], -1).sum(1)
    union = (a | b).reshape(a.shape[0], -1).sum(1)
    return float(np.where(union == 0, 1.0, inter / np.maximum(union, 1)).min(initial=1.0))


class StageTable:
    """Rows of (stage, measure, value, ok)."""

    def __init__(self) -> None:
        self.rows: List[dict] = []

    def raw(self, stage: str, ours: np.ndarray, theirs: np.ndarray, tol: float = RAW_TOL) -> None:
        same_shape = ours.shape == theirs.shape
        diff = float(np.abs(ours - theirs).max(initial=0.0)) if same_shape else float('inf')
        self.rows.append(dict(stage=stage, measure='max |diff|', value=diff, ok=diff <= tol))

    def exact(self, stage: str, pairs) -> None:
        mismatches = sum(int(a.shape != b.shape or not np.array_equal(a, b)) for a, b in pairs)
        self.rows.append(dict(stage=stage, measure='mismatching arrays', value=mismatches,
                              ok=mismatches == 0))


def compare_network(table: StageTable, recorder: Recorder, ref) -> None:
    for key, name in (('logits', 'class logits'), ('masks', 'mask logits'),
                      ('embeds', 're-id embeddings')):
        table.raw(f'per-frame {name}', torch.stack([f[key] for f in recorder.frames]).numpy(),
                  ref[f'pred_{key}'])


def compare_tracker(table: StageTable, recorder: Recorder, pred: dict, video, ref) -> None:
    """Every tracker stage: candidates, assignments, memory, track logits, final top-k."""
    table.exact('candidates (score filter + mask NMS)',
                [(recorder.framed('cand_query'), ref['cand_frame']),
                 (recorder.stacked('cand_query'), ref['cand_query'])])
    table.raw('candidate scores', recorder.stacked('cand_score'), ref['cand_score'], SCORE_TOL)
    table.exact('track assignments', [(recorder.stacked('assign_query'), ref['assign_query']),
                                      (recorder.stacked('assign_track_id'),
                                       ref['assign_track_id']),
                                      (recorder.framed('assign_query'), ref['assign_frame'])])
    table.exact('memory-bank track ids',
                [(recorder.stacked('bank_track_id'), ref['bank_track_id']),
                 (recorder.framed('bank_track_id'), ref['bank_frame'])])
    table.raw('memory-bank embeddings', recorder.stacked('bank_embeds'), ref['bank_embeds'])
    if 'record_track_id' in ref.files:  # the tracker cases record the suppression per frame
        table.exact('video records after suppression',
                    [(recorder.stacked('record_track_id'), ref['record_track_id']),
                     (recorder.framed('record_track_id'), ref['record_frame'])])
    ours_logits = (video.track_logits().numpy() if video.track_ids
                   else np.zeros((0, ref['track_logits'].shape[-1]), np.float32))
    table.raw('track logits', ours_logits, ref['track_logits'])
    track_order = video.track_ids
    table.exact('final labels and source tracks',
                [(pred['labels'], ref['video_labels']),
                 (np.array([track_order.index(i) for i in pred['track_ids']], dtype=np.int64),
                  ref['video_track_index'])])
    table.raw('final scores', pred['scores'], ref['video_scores'], SCORE_TOL)
    iou = worst_iou(pred['masks'], ref['video_masks'])
    table.rows.append(dict(stage='final masks', measure='worst IoU', value=iou,
                           ok=iou >= MIN_MASK_IOU))


def check_reference(args: argparse.Namespace) -> List[dict]:
    """Run the checks the reference and the arguments ask for; return the stage rows."""
    ref = np.load(args.reference)
    table = StageTable()
    if args.tracker_only or 'input_normalized_padded' not in ref.files:
        recorder, pred, video = replay_tracker(ref, args.reference)
        compare_tracker(table, recorder, pred, video, ref)
        return table.rows
    if not args.weights:
        raise SystemExit(f'parity_official: {args.reference} holds network input: give the '
                         'official weights too (or --tracker-only)')
    model = build_model(args.config, args.weights)
    with onednn_fusion_flags(enabled=False):
        recorder, result = run_reference_input(model, ref)
    compare_network(table, recorder, ref)
    compare_tracker(table, recorder, final_predictions(result), model.tracker.video, ref)
    if args.frames_dir:
        pred = final_predictions(run_pipeline(model, Config.fromfile(args.config),
                                              args.frames_dir, ref))
        same = np.array_equal(pred['labels'], ref['video_labels'])
        table.rows.append(dict(stage='test pipeline from JPEG: final labels',
                               measure='identical', value=int(same), ok=same))
        iou = worst_iou(pred['masks'], ref['video_masks'])
        table.rows.append(dict(stage='test pipeline from JPEG: final masks', measure='worst IoU',
                               value=iou, ok=iou >= MIN_MASK_IOU))
    return table.rows


def main() -> int:
    args = parse_args()
    for path in (args.reference, args.weights, args.config):
        if path and not osp.isfile(path):
            print(f'parity_official: no such file: {path}', file=sys.stderr)
            return 2
    torch.set_num_threads(1)  # the reference was computed on one thread
    try:
        with known_noise_filtered():  # mmdet's meshgrid calls, as in tools/test.py
            rows = check_reference(args)
    except SystemExit as error:
        print(error, file=sys.stderr)
        return 2
    width = max(len(r['stage']) for r in rows)
    print(f"{'stage':<{width}}  {'measure':<20} {'value':>12}  result")
    for r in rows:
        value = f"{r['value']:.3g}" if isinstance(r['value'], float) else str(r['value'])
        print(f"{r['stage']:<{width}}  {r['measure']:<20} {value:>12}  "
              f"{'ok' if r['ok'] else 'MISMATCH'}")
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(rows, f, indent=1)
    failed = [r['stage'] for r in rows if not r['ok']]
    if failed:
        print(f'parity_official: {len(failed)} stage(s) do not match the reference: '
              f"{', '.join(failed)}", file=sys.stderr)
        return 1
    print('parity_official: every stage matches the official reference')
    return 0


if __name__ == '__main__':
    sys.exit(main())
