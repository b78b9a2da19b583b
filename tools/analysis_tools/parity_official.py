"""Check ctvis, stage by stage, against what the official CTVIS code computed.

usage: parity_official.py REFERENCE_NPZ OFFICIAL_WEIGHTS [--config CONFIG] [--frames-dir DIR]

The official detectron2 weights are converted with the project's converter, loaded strictly into
the R50 YouTube-VIS 2019 model, and the reference's network input is fed frame by frame through the
same online ``CTVIS.predict`` path users run. Every stage is compared with the reference (see
``tests/data/parity/README.md`` for what it holds); the exit code is 0 only when all stages are
within tolerance. With ``--frames-dir`` the JPEG frames also go through the project's own test
pipeline (image loading, resizing to the reference's test scale, normalisation, padding) and the
final tracks and labels are compared.
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

import ctvis  # noqa: F401  (registers ctvis components, applies compat fixes)
from ctvis.utils.compat import safe_load_file
from ctvis.utils.d2_conversion import convert_state_dict, unwrap_d2_checkpoint
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample, TrackDataSample

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEFAULT_CONFIG = osp.join(ROOT, 'configs', 'ctvis', 'ctvis_r50_8xb2-16k_ytvis19.py')
RAW_TOL = 1e-4
SCORE_TOL = 1e-4
MIN_MASK_IOU = 0.999


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('reference', help='official_r50_seed2_8f.npz')
    parser.add_argument('weights',
                        help='official-format weights (tests/data/parity/gen_weights.py)')
    parser.add_argument('--config', default=DEFAULT_CONFIG, help='R50 YTVIS19 config')
    parser.add_argument('--frames-dir', help='also run these JPEG frames through the test pipeline')
    parser.add_argument('--json', help='write the per-stage table here')
    return parser.parse_args()


class Recorder:
    """Observe what the model computes on the online path, without changing it."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.frames: List[Dict] = []
        tracker = model.tracker
        select, track, track_frame = (tracker.select_candidates, tracker.track,
                                      model.track_frame)

        def record_track_frame(meta, logits, mask_logits, embeds):
            self.frames.append(dict(logits=logits, masks=mask_logits, embeds=embeds))
            return track_frame(meta, logits, mask_logits, embeds)

        def record_select(logits, mask_logits):
            keep, scores = select(logits, mask_logits)
            self.frames[-1].update(cand_query=keep, cand_score=scores)
            return keep, scores

        def record_track(frame_id, *args):
            queries, ids = track(frame_id, *args)
            bank = tracker.memory
            self.frames[-1].update(assign_query=queries, assign_track_id=ids,
                                   bank_track_id=torch.tensor(sorted(bank.tracks)),
                                   bank_embeds=torch.stack([bank.tracks[i].embed
                                                            for i in sorted(bank.tracks)]))
            return queries, ids

        model.track_frame = record_track_frame
        tracker.select_candidates = record_select
        tracker.track = record_track

    def stacked(self, key: str) -> np.ndarray:
        return torch.cat([f[key] for f in self.frames]).detach().cpu().numpy()

    def framed(self, key: str) -> np.ndarray:
        return np.concatenate([np.full(len(f[key]), t) for t, f in enumerate(self.frames)])


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
    recorder = Recorder(model)
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


def final_predictions(result: TrackDataSample) -> dict:
    first = result[0].pred_track_instances
    masks = np.stack([np.stack([mask_util.decode(f.pred_track_instances.masks[k])
                                for f in result]) for k in range(len(first))]).astype(bool)
    return dict(scores=first.scores.double().numpy(), labels=first.labels.numpy(),
                track_ids=first.instances_id.numpy(), masks=masks)


def worst_iou(a: np.ndarray, b: np.ndarray) -> float:
    inter = (a & b).reshape(a.shape[0], -1).sum(1)
    union = (a | b).reshape(a.shape[0], -1).sum(1)
    return float(np.where(union == 0, 1.0, inter / np.maximum(union, 1)).min())


def compare(recorder: Recorder, result: TrackDataSample, model, ref) -> List[dict]:
    rows = []

    def raw(stage, ours, theirs):
        diff = float(np.abs(ours - theirs).max()) if ours.shape == theirs.shape else float('inf')
        rows.append(dict(stage=stage, measure='max |diff|', value=diff, ok=diff <= RAW_TOL))

    def exact(stage, pairs):
        mismatches = sum(int(a.shape != b.shape or not np.array_equal(a, b)) for a, b in pairs)
        rows.append(dict(stage=stage, measure='mismatching arrays', value=mismatches,
                         ok=mismatches == 0))

    for key, name in (('logits', 'class logits'), ('masks', 'mask logits'),
                      ('embeds', 're-id embeddings')):
        raw(f'per-frame {name}', torch.stack([f[key] for f in recorder.frames]).numpy(),
            ref[f'pred_{key}'])
    exact('candidates (score filter + mask NMS)',
          [(recorder.framed('cand_query'), ref['cand_frame']),
           (recorder.stacked('cand_query'), ref['cand_query'])])
    raw('candidate scores', recorder.stacked('cand_score'), ref['cand_score'])
    exact('track assignments', [(recorder.stacked('assign_query'), ref['assign_query']),
                                (recorder.stacked('assign_track_id'), ref['assign_track_id']),
                                (recorder.framed('assign_query'), ref['assign_frame'])])
    exact('memory-bank track ids', [(recorder.stacked('bank_track_id'), ref['bank_track_id']),
                                    (recorder.framed('bank_track_id'), ref['bank_frame'])])
    raw('memory-bank embeddings', recorder.stacked('bank_embeds'), ref['bank_embeds'])
    raw('track logits', model.tracker.video.track_logits().numpy(), ref['track_logits'])
    pred = final_predictions(result)
    track_order = list(model.tracker.video.records)
    exact('final labels and source tracks',
          [(pred['labels'], ref['video_labels']),
           (np.array([track_order.index(i) for i in pred['track_ids']]),
            ref['video_track_index'])])
    raw('final scores', pred['scores'], ref['video_scores'])
    iou = worst_iou(pred['masks'], ref['video_masks']) \
        if pred['masks'].shape == ref['video_masks'].shape else 0.0
    rows.append(dict(stage='final masks', measure='worst IoU', value=iou,
                     ok=iou >= MIN_MASK_IOU))
    return rows


def main() -> int:
    args = parse_args()
    for path in (args.reference, args.weights, args.config):
        if not osp.isfile(path):
            print(f'parity_official: no such file: {path}', file=sys.stderr)
            return 2
    torch.set_num_threads(1)  # the reference was computed on one thread
    ref = np.load(args.reference)
    model = build_model(args.config, args.weights)
    recorder, result = run_reference_input(model, ref)
    rows = compare(recorder, result, model, ref)
    if args.frames_dir:
        pred = final_predictions(run_pipeline(model, Config.fromfile(args.config),
                                              args.frames_dir, ref))
        same = np.array_equal(pred['labels'], ref['video_labels'])
        rows.append(dict(stage='test pipeline from JPEG: final labels',
                         measure='identical', value=int(same), ok=same))
        iou = worst_iou(pred['masks'], ref['video_masks'])
        rows.append(dict(stage='test pipeline from JPEG: final masks', measure='worst IoU',
                         value=iou, ok=iou >= MIN_MASK_IOU))
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
