"""Tune the online tracker on a validation split without re-running the network for each setting.

Example::

    python tools/analysis_tools/tracker_sweep.py configs/ctvis/ctvis_quickstart.py \\
        work_dirs/quickstart/iter_3000.pth \\
        --set score_thr=0.1,0.2,0.3 --set match_score_thr=0.2,0.3,0.4 --out sweep.csv

The network runs once over the config's test split: tools/test.py's run, evaluated with the
config's own tracker settings. Meanwhile each frame's candidates are cached: the queries whose score
passes the lowest score threshold of the sweep, and the best query (the tracker keeps it when none
passes), with what the tracker and the video-level output need of them (class logits, embeddings,
their pairwise mask IoUs, their mask centroids and areas for the motion cue, their masks as RLE at
the original size and their mask-score sums). Every
combination of the swept values then replays the tracker over the cache and is scored with the
YouTube-VIS metric on the test evaluator's ground truth. The replay of the config's own settings
is checked against the test run's results file, entry for entry, so the table shows what real runs
with those settings give.

Sweepable: the arguments of the config's tracker (a ``CTVISTracker`` or a subclass; e.g.
``score_thr``, ``init_score_thr``, ``mask_nms_thr``, ``match_score_thr``, ``match_metric``,
``frame_weight``, ``max_cache``, ``num_dead_frames``, ``noise_frame_num``, ``none_frame_num``,
``suppress_frame_num``, ``motion_weight``, ``motion_sigma``, ``motion_history``) and the model's
``max_per_video``. The cache grows with the number of candidates: lower ``score_thr`` values keep
more queries per frame.
"""
import argparse
import ast
import csv
import importlib.util
import inspect
import itertools
import json
import os
import os.path as osp
import tempfile
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from mmengine.config import Config, ConfigDict
from mmengine.model import is_model_wrapper
from torch import Tensor

import ctvis  # noqa: F401  (registration)
from ctvis.datasets.ytvis_format import YTVISFormatError
from ctvis.engine import CheckpointFitsModel
from ctvis.evaluation import YTVISMetric
from ctvis.models import (CTVISTracker, mask_geometry, mask_iou, resize_mask_logits,
                          tracker_binary_masks)
from ctvis.models.video_tracks import encode_detections
from ctvis.utils import ConfigError, build_runner, parse_tool_args, tool_run
from mmdet.registry import MODELS

#: Metrics of the table, in column order.
METRICS = ('AP', 'AP50', 'AP75', 'AR1', 'AR10')
MODEL_KEYS = ('max_per_video', )


def _load_test_tool():
    """tools/test.py as a module: the sweep's network run is exactly that tool's run."""
    path = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'test.py')
    spec = importlib.util.spec_from_file_location('ctvis_tools_test', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parse_value(text: str) -> Any:
    """A swept value: a Python literal (``0.3``, ``10``, ``None``), ``true``/``false``, or a
    bare word (``det2track``)."""
    if text.lower() in ('true', 'false'):
        return text.lower() == 'true'
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_sweep(items: Sequence[str]) -> Dict[str, List[Any]]:
    """``['score_thr=0.1,0.2', ...]`` -> ``{'score_thr': [0.1, 0.2], ...}``; ValueError on a
    malformed item or a key given twice."""
    sweep: Dict[str, List[Any]] = {}
    for item in items:
        key, sep, values = item.partition('=')
        key = key.strip()
        texts = [v.strip() for v in values.split(',')]
        if not sep or not key or not all(texts):
            raise ValueError(f'--set {item!r}: expected KEY=VALUE[,VALUE...] with no empty value')
        if key in sweep:
            raise ValueError(f'--set {key}: given twice; put all its values in one --set')
        sweep[key] = [parse_value(t) for t in texts]
    return sweep


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Sweep tracker settings over a validation split, running the network once.')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--set', dest='sweep', action='append', default=[], metavar='KEY=V1,V2',
                        help='a tracker argument (or max_per_video) and its values; repeat for '
                        'more keys: every combination is evaluated')
    parser.add_argument('--out', help='also write the table here (.csv or .json)')
    parser.add_argument('--work-dir', help='where the test run writes its logs (default: the '
                        'config\'s work_dir, else ./work_dirs/<config name>)')
    args = parse_tool_args(parser, argv)
    if args.launcher != 'none':
        parser.error('the sweep runs in one process: use --launcher none')
    if args.out is not None and osp.splitext(args.out)[1] not in ('.csv', '.json'):
        parser.error(f'--out {args.out}: the table is written as .csv or .json')
    try:
        args.sweep = parse_sweep(args.sweep)
    except ValueError as error:
        parser.error(str(error))
    return args


def tracker_arguments(tracker_type: type) -> Dict[str, Any]:
    """The keyword arguments a tracker class takes (through ``**kwargs`` to its bases too) and
    their defaults (``inspect.Parameter.empty`` where none), ``num_classes`` excepted."""
    arguments: Dict[str, Any] = {}
    for cls in tracker_type.__mro__:
        if '__init__' not in vars(cls):
            continue
        params = inspect.signature(vars(cls)['__init__']).parameters.values()
        for p in params:
            if (p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
                    and p.name not in ('self', 'num_classes')):
                arguments.setdefault(p.name, p.default)
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            break
    return arguments


def settings_grid(sweep: Dict[str, List[Any]]) -> List[Dict[str, Any]]:
    """Every combination of the swept values, the first key varying slowest (one empty setting
    for an empty sweep)."""
    keys = list(sweep)
    return [dict(zip(keys, values)) for values in itertools.product(*sweep.values())]


def tracker_overrides(settings: Dict[str, Any]) -> Dict[str, Any]:
    """The part of a setting that goes to the tracker (all but :data:`MODEL_KEYS`)."""
    return {key: value for key, value in settings.items() if key not in MODEL_KEYS}


@dataclass
class FrameCandidates:
    """What the tracker and the video-level output need of one frame's candidate queries."""

    frame_id: int
    logits: Tensor  # (N, C + 1), the model's dtype and device
    embeds: Tensor  # (N, E)
    mask_ious: Tensor  # (N, N): mask_iou of the binary stride-4 masks
    geometry: Tensor  # (N, 3): their mask_geometry (centroids and areas)
    rles: List[dict]  # masks at the original size
    score_num: Tensor  # (N,) float64: mask-score sums (encode_detections)
    score_den: Tensor
    ori_shape: Tuple[int, int]


class CandidateCache:
    """Records the candidates of every frame a CTVIS model tracks (wraps its ``track_frame``).

    Args:
        model: The CTVIS model (unwrapped).
        min_score_thr (float): Queries whose score is above this are candidates, plus each
            frame's best query.
    """

    def __init__(self, model: torch.nn.Module, min_score_thr: float) -> None:
        self.min_score_thr = min_score_thr
        self.videos: List[Tuple[Optional[int], List[FrameCandidates]]] = []
        self._track_frame = model.track_frame
        model.track_frame = self.track_frame

    def track_frame(self, meta: dict, logits: Tensor, mask_logits: Tensor, embeds: Tensor):
        self.record(meta, logits, mask_logits, embeds)
        return self._track_frame(meta, logits, mask_logits, embeds)

    def record(self, meta: dict, logits: Tensor, mask_logits: Tensor, embeds: Tensor) -> None:
        # in float32, as CTVIS.track_frame tracks them (an fp16 test loop's network outputs
        # would otherwise be replayed in fp16, and the replay check would fail)
        logits, mask_logits, embeds = logits.float(), mask_logits.float(), embeds.float()
        scores = logits.softmax(-1)[:, :-1].max(-1).values
        chosen = scores > self.min_score_thr
        # the query the tracker keeps when none passes (first of its sort, ties included)
        chosen[torch.sort(scores, dim=0, descending=True).indices[0]] = True
        index = chosen.nonzero().flatten()
        masks = mask_logits[index]
        binary = tracker_binary_masks(masks)  # as the tracker's NMS and motion cue see them
        rles, score_num, score_den = encode_detections(resize_mask_logits(
            masks, meta['batch_input_shape'], meta['img_shape'][:2], meta['ori_shape'][:2]))
        if meta['frame_id'] == 0:
            self.videos.append((meta.get('video_id'), []))
        elif not self.videos:
            raise ValueError(f'tracker_sweep: the first frame seen is frame {meta["frame_id"]} '
                             'of its video; videos must be tracked from frame 0')
        # on the model's device, so that the replayed tracker computes as the model's does
        self.videos[-1][1].append(FrameCandidates(
            meta['frame_id'], logits[index].detach(), embeds[index].detach(),
            mask_iou(binary), mask_geometry(binary), rles, score_num, score_den,
            tuple(meta['ori_shape'][:2])))

    @property
    def num_candidates(self) -> int:
        return sum(len(f.rles) for _, frames in self.videos for f in frames)

    @property
    def num_bytes(self) -> int:
        """Size of the cached tensors and RLE strings."""
        return sum(sum(t.numel() * t.element_size() for t in (
            f.logits, f.embeds, f.mask_ious, f.geometry, f.score_num, f.score_den))
            + sum(len(rle['counts']) for rle in f.rles)
            for _, frames in self.videos for f in frames)


def replay(videos: Sequence[Tuple[Optional[int], List[FrameCandidates]]], tracker_cfg: dict,
           max_per_video: Optional[int], category_ids: Sequence[int]) -> List[dict]:
    """The YouTube-VIS results of a tracker built from ``tracker_cfg`` over cached candidates."""
    tracker = MODELS.build(tracker_cfg)
    results = []
    for video_id, frames in videos:
        for frame in frames:
            keep, track_ids = tracker.track(frame.frame_id, frame.logits, None, frame.embeds,
                                            mask_ious=frame.mask_ious, geometry=frame.geometry)
            tracker.video.add_encoded(
                frame.frame_id, track_ids.tolist(), frame.logits[keep],
                [frame.rles[k] for k in keep.tolist()], frame.score_num[keep],
                frame.score_den[keep], frame.ori_shape)
        prediction = tracker.video.video_predictions(max_per_video)
        results += prediction.to_ytvis_results(video_id, category_ids)
    return results


def format_table(rows: List[Dict[str, Any]], keys: Sequence[str]) -> str:
    """The sweep as a Markdown table, best AP first (metrics in percent)."""
    header = [*keys, *METRICS, '']
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(keys) + '---:|' * len(METRICS)
             + '---|']
    for row in sorted(rows, key=lambda r: -r['AP']):
        cells = [str(row[k]) for k in keys] + [f'{100 * row[m]:.2f}' for m in METRICS]
        lines.append('| ' + ' | '.join(cells + ['config' if row['config'] else '']) + ' |')
    return '\n'.join(lines)


def write_table(rows: List[Dict[str, Any]], path: str) -> None:
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    if path.endswith('.json'):
        with open(path, 'w') as f:
            json.dump(rows, f, indent=1)
        return
    with open(path, 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if is_model_wrapper(model) else model


def _same_kind(value: Any, default: Any) -> bool:
    """Whether a swept value can stand where the argument's default does."""
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, (int, float)):
        return isinstance(value, (int, float))
    return default is None or default is inspect.Parameter.empty or isinstance(
        value, type(default))


def check_sweep(sweep: Dict[str, List[Any]], tracker_cfg: dict, tracker_type: type,
                config_path: str) -> None:
    """ConfigError, before anything runs, unless every swept key is an argument of the tracker
    (or ``max_per_video``), every value is of the kind of the argument's default, and the
    tracker can be built with every setting."""
    arguments = tracker_arguments(tracker_type)
    allowed = list(arguments) + list(MODEL_KEYS)
    unknown = [key for key in sweep if key not in allowed]
    if unknown:
        raise ConfigError(f'{config_path}: --set {", ".join(unknown)}: not an argument of '
                          f'{tracker_type.__name__} nor a model key; sweepable: '
                          f'{", ".join(allowed)}')
    for key, values in sweep.items():
        default = arguments.get(key, 1)  # max_per_video: a number (or None)
        for value in values:
            if not (_same_kind(value, default) or (key in MODEL_KEYS and value is None)):
                raise ConfigError(f'--set {key}={value!r}: expected a value like the default '
                                  f'{default!r}')
            if key in MODEL_KEYS and value is not None and (type(value) is not int or value < 1):
                raise ConfigError(f'--set {key}={value!r}: must be a whole number >= 1 (or None: '
                                  'the number of classes)')
    for settings in settings_grid(sweep):
        tracker = tracker_overrides(settings)
        try:
            MODELS.build(dict(tracker_cfg, **tracker))
        except (ValueError, TypeError) as error:
            raise ConfigError(f'--set {tracker}: {tracker_type.__name__} refuses it: '
                              f'{error}') from None


def main(argv: Optional[List[str]] = None) -> List[Dict[str, Any]]:
    args = parse_args(argv)
    with tool_run('tracker_sweep.py', reported=(YTVISFormatError, )):
        with tempfile.TemporaryDirectory() as tmp:
            return sweep_tracker(args, tmp)


def sweep_tracker(args: argparse.Namespace, tmp: str) -> List[Dict[str, Any]]:
    """:func:`main` inside :func:`ctvis.utils.tool_run`; returns the table's rows."""
    test_tool = _load_test_tool()
    sweep, table_path = args.sweep, args.out
    args.out = osp.join(tmp, 'config_results.json')  # tools/test.py's --out: the check's reference
    cfg: Config = test_tool.configure_testing(args)
    tracker_cfg = ConfigDict(cfg.model.get('tracker') or {})
    tracker_type = MODELS.get(tracker_cfg.get('type', '')) if tracker_cfg else None
    if tracker_type is None or not issubclass(tracker_type, CTVISTracker):
        raise ConfigError(f'{args.config}: the sweep replays a CTVISTracker (or a subclass); '
                          f'the model\'s tracker is {tracker_cfg.get("type")!r}')
    check_sweep(sweep, tracker_cfg, tracker_type, args.config)
    defaults = tracker_arguments(tracker_type)
    min_score_thr = min([tracker_cfg.get('score_thr', defaults['score_thr']),
                         *sweep.get('score_thr', [])])

    runner = build_runner(cfg)
    loop = runner.test_loop
    test_tool.check_ground_truth(loop.dataloader.dataset, loop.evaluator.metrics)
    metric = next((m for m in loop.evaluator.metrics if isinstance(m, YTVISMetric)), None)
    if metric is None or not metric.evaluator.has_annotations:
        raise ConfigError(f'{args.config}: the sweep scores each setting with the YTVISMetric of '
                          'test_evaluator on annotated videos; '
                          + ('there is no such metric' if metric is None else
                             f'{metric.ann_file} has no annotations'))
    runner.register_hook(CheckpointFitsModel(args.checkpoint))
    model = unwrap(runner.model)
    cache = CandidateCache(model, min_score_thr)
    runner.test()
    evaluator = metric.evaluator
    frames = sum(len(f) for _, f in cache.videos)
    print(f'tracker_sweep: cached {cache.num_candidates} candidates of {frames} frames in '
          f'{len(cache.videos)} videos (score above {min_score_thr}, or each frame\'s best), '
          f'{cache.num_bytes / 2 ** 20:.1f} MiB')

    def evaluate(settings: Dict[str, Any]) -> Tuple[List[dict], Dict[str, float]]:
        tracker = dict(tracker_cfg, **tracker_overrides(settings))
        max_per_video = settings.get('max_per_video', model.max_per_video)
        results = replay(cache.videos, tracker, max_per_video, evaluator.category_ids)
        return results, evaluator.evaluate(results)

    own = {key: tracker_cfg.get(key, defaults.get(key)) for key in tracker_overrides(sweep)}
    own.update({key: model.max_per_video for key in sweep if key in MODEL_KEYS})
    results, _ = evaluate({})
    with open(args.out) as f:
        expected = json.load(f)
    if json.dumps(results, sort_keys=True) != json.dumps(expected, sort_keys=True):
        raise RuntimeError(
            'tracker_sweep: replaying the config\'s own tracker settings over the cache did not '
            'give the test run\'s results (the candidate cache misses something the tracker '
            'used); the sweep would not show what real runs give, so it stops here')
    rows = []
    for settings in settings_grid(sweep):
        _, metrics = evaluate(settings)
        rows.append(dict(settings, **{m: metrics[m] for m in METRICS},
                         config=all(settings[k] == own[k] for k in settings)))
    print(format_table(rows, list(sweep)))
    best = max(rows, key=lambda r: (r['AP'], r['config']))  # on a tie, keep the config's
    options = ' '.join(f'model.{"test_cfg" if k in MODEL_KEYS else "tracker"}.{k}={v}'
                       for k, v in best.items() if k in sweep)
    if options:
        print(f'best AP {100 * best["AP"]:.2f}: --cfg-options {options}')
    if table_path is not None:
        write_table(rows, table_path)
        print(f'tracker_sweep: wrote {table_path}')
    return rows


if __name__ == '__main__':
    main()
