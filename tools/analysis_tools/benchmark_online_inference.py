"""Measure online inference: frames per second and how memory evolves over a long video; or, with
``--side-by-side``, where the time of a frame goes, next to mmdet's image Mask2Former.

usage: benchmark_online_inference.py CONFIG [--checkpoint CKPT] [--frames 1000] [--size H W]
                                     [--report-every 100] [--threads N] [--compile]
       benchmark_online_inference.py CONFIG --side-by-side [--frames 20] [--warmup 2] ...
       benchmark_online_inference.py CONFIG --compare-compile [--frames 12] [--warmup 2] ...

Streams a synthetic toy video (moving, occluding shapes; see ``ctvis.datasets.synthetic.toy``)
through :class:`ctvis.apis.OnlineVideoSegmenter` frame by frame and prints a table: frames done,
frames per second, resident memory (RSS) of the process, tracks in the memory bank, tracks recorded
for the video output and the bytes their RLE masks take. Without a checkpoint the model keeps its
random initialisation (the tracker then keeps many low-score tracks: a stress case for memory).

``--side-by-side`` builds, beside the CTVIS model, mmdet's image ``Mask2Former`` with the same
backbone and head (mmdet's ``MSDeformAttnPixelDecoder``, i.e. mmcv's pure-PyTorch deformable
attention on the CPU) and the same weights, and runs both on every frame, alternating, at the same
input size and thread count. It prints the median time per frame of each stage (pre-processing,
backbone, deformable encoder, rest of the pixel decoder, transformer decoder, rest of the head,
tracking or post-processing) and the compute floor measured in the same run: the frame's FLOPs
(``torch.utils.flop_counter``) divided by the GEMM rate of this machine at this thread count (best
of several float32 matrix products), once for torch's ``mm`` (MKL) and once for oneDNN, which
ctvis' CPU inference and torch's convolutions use: on AMD processors MKL runs at about half
oneDNN's rate, so only the oneDNN floor bounds what a frame can reach there.

``--compile`` streams through the ``torch.compile`` path (``CTVIS.compile_detector``; the first
frame's time, which includes compiling, is printed on its own). ``--compare-compile`` runs the same
frames through an eager and a compiled copy of the model, alternating, and prints the median wall
and process CPU time per frame of each after the warm-up frames, the one-off compile time (first
compiled frame minus the compiled median), and how far the outputs differ: the network outputs
(largest absolute difference) and the tracks of every frame (ids, labels and RLE masks equal or
not, largest score difference).
"""
import argparse
import copy
import os
import statistics
import time
from collections import Counter, defaultdict
from math import prod
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import pycocotools.mask as mask_util
import torch
from mmengine.config import Config, ConfigDict
from mmengine.dataset import pseudo_collate
from mmengine.structures import InstanceData
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count

import ctvis  # noqa: F401
from ctvis.apis import OnlineVideoSegmenter
from ctvis.ops.onednn import onednn_fusion_available
from ctvis.datasets.synthetic.toy import render_toy_video
from ctvis.utils import tune_malloc
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample

# (name, module path in CTVIS, module path in mmdet's Mask2Former); the model-level stages are
# timed around calls, the module stages with forward hooks
MODULE_STAGES = (
    ('backbone', 'backbone', 'backbone'),
    ('pixel decoder', 'track_head.pixel_decoder', 'panoptic_head.pixel_decoder'),
    ('deformable encoder', 'track_head.pixel_decoder.encoder',
     'panoptic_head.pixel_decoder.encoder'),
    ('transformer decoder', 'track_head.transformer_decoder',
     'panoptic_head.transformer_decoder'),
    # CTVIS infers through the head's predict_final (a method: timed by wrapping it)
    ('head', 'track_head.predict_final', 'panoptic_head'),
)
# printed rows: (label, stage or (stage, minus stages...))
ROWS = (
    ('pre-processing (pipeline, normalisation)', 'preprocess'),
    ('backbone', 'backbone'),
    ('deformable encoder', 'deformable encoder'),
    ('pixel decoder, rest (convolutions, FPN)', ('pixel decoder', 'deformable encoder')),
    ('transformer decoder layers (masked attention)', 'transformer decoder'),
    ('head, rest (mask and class predictions)', ('head', 'pixel decoder', 'transformer decoder')),
    ('tracking + masks (CTVIS) / post-processing (mmdet)', 'postprocess'),
    ('frame total', 'total'),
)


def rss_mib() -> float:
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024
    return float('nan')


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config')
    parser.add_argument('--checkpoint')
    parser.add_argument('--frames', type=int, default=None,
                        help='frames to stream (default 1000; 20 with --side-by-side)')
    parser.add_argument('--size', type=int, nargs=2, default=(96, 128), metavar=('H', 'W'))
    parser.add_argument('--report-every', type=int, default=100)
    parser.add_argument('--threads', type=int, default=None)
    parser.add_argument('--device', default='cpu',
                        help='device of the streamed model (e.g. cuda; the default mode only)')
    parser.add_argument('--side-by-side', action='store_true',
                        help='time each stage of CTVIS and of mmdet\'s Mask2Former, alternating '
                        'frame by frame, against the compute floor')
    parser.add_argument('--warmup', type=int, default=2,
                        help='--side-by-side, --compare-compile: untimed frames of each model '
                        'first')
    parser.add_argument('--no-video-result', action='store_true',
                        help='stream without the record of the video-level result (per-frame '
                        'tracks only, as the demo without --json)')
    parser.add_argument('--compile', action='store_true',
                        help='stream through the torch.compile path (the per-frame network)')
    parser.add_argument('--compare-compile', action='store_true',
                        help='eager against torch.compile on the same frames: time per frame, '
                        'compile time, output differences')
    args = parser.parse_args()
    if args.compare_compile and args.warmup < 1:
        parser.error('--compare-compile: --warmup must be at least 1 (the first frame compiles)')
    if args.side_by_side and (args.compile or args.compare_compile):
        parser.error('--side-by-side times the stages with module hooks, which a compiled '
                     'network does not run: use it without --compile / --compare-compile')
    if args.device != 'cpu' and (args.side_by_side or args.compare_compile):
        parser.error('--device: --side-by-side and --compare-compile measure the CPU (the '
                     'compute floor, oneDNN); stream on another device without them')
    if args.frames is None:
        args.frames = 20 if args.side_by_side else 12 if args.compare_compile else 1000
    return args


def toy_frames(num_frames: int, size: Tuple[int, int]):
    """BGR frames of a toy clip played forwards and backwards (smooth motion at any length)."""
    clip = render_toy_video((0, 0), min(num_frames, 200), tuple(size)).frames
    period = max(2 * len(clip) - 2, 1)
    for t in range(num_frames):
        k = t % period
        yield np.ascontiguousarray(clip[k if k < len(clip) else period - k])


def stream(args: argparse.Namespace) -> None:
    """Frames per second and memory over a long video."""
    try:
        segmenter = OnlineVideoSegmenter.from_config(Config.fromfile(args.config),
                                                     args.checkpoint, device=args.device,
                                                     compile=args.compile,
                                                     video_result=not args.no_video_result)
    except ValueError as error:  # an unusable device, a checkpoint that does not fit
        raise SystemExit(f'benchmark_online_inference: error: {error}') from None
    print(f'{"frames":>7} {"fps":>7} {"RSS MiB":>8} {"memory tracks":>13} '
          f'{"output tracks":>13} {"RLE KiB":>8}')
    start = last = time.time()
    for t, frame in enumerate(toy_frames(args.frames, args.size)):
        segmenter.step(frame)
        if t == 0 and args.compile:
            print(f'first frame (compiling included): {time.time() - start:.1f} s')
        if (t + 1) % args.report_every == 0 or t + 1 == args.frames:
            now = time.time()
            video = segmenter.model.tracker.video  # a VideoTracks, replaced at every reset
            print(f'{t + 1:>7} {args.report_every / (now - last):>7.2f} {rss_mib():>8.0f} '
                  f'{len(segmenter.model.tracker.memory):>13} {len(video.track_ids):>13} '
                  f'{video.rle_bytes / 1024:>8.0f}')
            last = now
    gpu = (f', peak CUDA memory {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB'
           if args.device.startswith('cuda') else '')
    output = 'none kept'
    if not args.no_video_result:
        result = segmenter.finish()
        output = f'{len(result[0].pred_track_instances)} predictions x {len(result)} frames'
    print(f'{args.frames} frames in {time.time() - start:.1f} s; video output: {output}; '
          f'RSS {rss_mib():.0f} MiB{gpu}')


# ---------------------------------------------------------------------------------- compile
def cpu_seconds() -> float:
    """User + system CPU time of this process so far."""
    times = os.times()
    return times.user + times.system


def record_network_outputs(model: torch.nn.Module) -> List[Tuple[torch.Tensor, ...]]:
    """The list to which, from now on, every ``model.detect`` call appends its outputs (the
    method is wrapped on this instance only)."""
    outputs: List[Tuple[torch.Tensor, ...]] = []
    detect = model.detect

    def recording_detect(frames: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        outputs.append(detect(frames))
        return outputs[-1]

    model.detect = recording_detect
    return outputs


def timed_step(segmenter: OnlineVideoSegmenter, frame: np.ndarray
               ) -> Tuple[InstanceData, float, float]:
    """:meth:`OnlineVideoSegmenter.step` and its wall and process CPU seconds."""
    wall, cpu = time.perf_counter(), cpu_seconds()
    tracks = segmenter.step(frame)
    return tracks, time.perf_counter() - wall, cpu_seconds() - cpu


def tracks_differ(a: InstanceData, b: InstanceData) -> Optional[str]:
    """What differs between two frames' tracks (ids, labels, RLE masks), or None."""
    if not torch.equal(a.instances_id, b.instances_id):
        return f'track ids {a.instances_id.tolist()} vs {b.instances_id.tolist()}'
    if not torch.equal(a.labels, b.labels):
        return f'labels {a.labels.tolist()} vs {b.labels.tolist()}'
    pixels = {int(track): int((mask_util.decode(m) != mask_util.decode(n)).sum())
              for track, m, n in zip(a.instances_id, a.masks, b.masks) if m != n}
    return f'differing mask pixels of tracks {pixels}' if pixels else None


def compare_compile(args: argparse.Namespace) -> None:
    """Eager and compiled copies of one model on the same frames, alternating."""
    cfg = Config.fromfile(args.config)
    eager = OnlineVideoSegmenter.from_config(cfg, args.checkpoint)
    compiled = OnlineVideoSegmenter(copy.deepcopy(eager.model),
                                    cfg.test_dataloader.dataset.pipeline, compile=True)
    outputs = dict(eager=record_network_outputs(eager.model),
                   compiled=record_network_outputs(compiled.model))
    times: Dict[str, List[Tuple[float, float]]] = dict(eager=[], compiled=[])
    first_compiled = (0.0, 0.0)
    max_diff = [0.0, 0.0, 0.0]
    max_score_diff, differences = 0.0, []
    for t, frame in enumerate(toy_frames(args.warmup + args.frames, args.size)):
        order = (('eager', eager), ('compiled', compiled))
        results = {}
        for name, segmenter in (order if t % 2 == 0 else order[::-1]):
            results[name] = timed_step(segmenter, frame)
        if t == 0:
            first_compiled = results['compiled'][1:]
        elif t >= args.warmup:
            for name in times:
                times[name].append(results[name][1:])
        for i, (x, y) in enumerate(zip(outputs['eager'][-1], outputs['compiled'][-1])):
            max_diff[i] = max(max_diff[i], float((x - y).abs().max()))
        tracks_e, tracks_c = results['eager'][0], results['compiled'][0]
        difference = tracks_differ(tracks_e, tracks_c)
        if difference is not None:
            differences.append(f'frame {t}: {difference}')
        elif len(tracks_e):
            max_score_diff = max(max_score_diff,
                                 float((tracks_e.scores - tracks_c.scores).abs().max()))
    video_e, video_c = eager.finish(), compiled.finish()
    same_video = len(video_e) == len(video_c) and all(
        tracks_differ(e.pred_track_instances, c.pred_track_instances) is None
        for e, c in zip(video_e, video_c))

    print(f'{args.frames} frames of {args.size[0]}x{args.size[1]}, {torch.get_num_threads()} '
          f'threads, after {args.warmup} warm-up frames; median per frame:')
    print(f'{"":<10} {"wall ms":>9} {"CPU ms":>9}')
    medians = {}
    for name, values in times.items():
        medians[name] = [1e3 * statistics.median(v[i] for v in values) for i in (0, 1)]
        print(f'{name:<10} {medians[name][0]:>9.1f} {medians[name][1]:>9.1f}')
    print(f'compiled / eager: wall {medians["compiled"][0] / medians["eager"][0]:.3f}, '
          f'CPU {medians["compiled"][1] / medians["eager"][1]:.3f}')
    print(f'first compiled frame: wall {first_compiled[0]:.1f} s, CPU {first_compiled[1]:.1f} s '
          f'(one-off compile time about {first_compiled[0] - medians["compiled"][0] / 1e3:.1f} '
          's wall)')
    print('largest |eager - compiled| of the network outputs: class logits '
          f'{max_diff[0]:.2e}, mask logits {max_diff[1]:.2e}, embeddings {max_diff[2]:.2e}')
    print(f'tracks of all {args.warmup + args.frames} frames equal (ids, labels, RLE masks): '
          f'{not differences}; largest score difference {max_score_diff:.2e}; video output '
          f'equal: {same_video}')
    for line in differences:
        print('  ' + line)


# ---------------------------------------------------------------------------------- side by side
def mask2former_config(model_cfg: ConfigDict) -> ConfigDict:
    """mmdet's image Mask2Former with the backbone and head of a CTVIS model config, as mmdet
    builds them (its ResNet and pixel decoder, not ctvis' fused ones)."""
    backbone = copy.deepcopy(model_cfg.backbone)
    if backbone.type == 'FusedResNet':
        backbone.type = 'ResNet'
    head = copy.deepcopy(model_cfg.track_head)
    head.type = 'Mask2FormerHead'
    head.pop('num_reid_layers', None)
    head.pixel_decoder.type = 'MSDeformAttnPixelDecoder'
    train_cfg = head.pop('train_cfg', None)
    preprocessor = copy.deepcopy(model_cfg.data_preprocessor)
    preprocessor.type = 'DetDataPreprocessor'
    return ConfigDict(
        type='Mask2Former', data_preprocessor=preprocessor,
        backbone=backbone, panoptic_head=head,
        panoptic_fusion_head=dict(type='MaskFormerFusionHead',
                                  num_things_classes=head.num_things_classes,
                                  num_stuff_classes=head.num_stuff_classes, loss_panoptic=None),
        train_cfg=train_cfg,
        test_cfg=dict(panoptic_on=False, semantic_on=False, instance_on=True,
                      max_per_image=head.num_queries, iou_thr=0.8, filter_low_score=True))


def build_mask2former(model_cfg: ConfigDict, ctvis_model: torch.nn.Module) -> torch.nn.Module:
    """Mask2Former carrying the CTVIS model's detector weights (all but the re-id MLP)."""
    model = MODELS.build(mask2former_config(model_cfg))
    state = {}
    for key, value in ctvis_model.state_dict().items():
        if key.startswith('track_head.reid_embed.'):
            continue
        state[key.replace('track_head.', 'panoptic_head.', 1)] = value
    model.load_state_dict(state, strict=True)
    return model.eval()


class StageTimer:
    """Wall time of named stages in one frame: around calls (:meth:`time`) and, through forward
    hooks, of modules."""

    def __init__(self) -> None:
        self.frame: Dict[str, float] = defaultdict(float)
        self.frames: List[Dict[str, float]] = []
        self._starts: Dict[str, float] = {}

    def hook(self, model: torch.nn.Module, stages: Dict[str, str]) -> None:
        for stage, path in stages.items():
            owner_path, _, name = path.rpartition('.')
            owner = model.get_submodule(owner_path)
            method = getattr(owner, name, None)
            if not isinstance(method, torch.nn.Module) and callable(method):
                setattr(owner, name, lambda *a, s=stage, m=method, **k: self.time(s, m, *a, **k))
                continue
            module = model.get_submodule(path)
            # Mask2Former's head calls its decoder's layers one by one, not the decoder
            for part in (module.layers if hasattr(module, 'post_norm') else [module]):
                part.register_forward_pre_hook(lambda *_, s=stage: self._start(s))
                part.register_forward_hook(lambda *_, s=stage: self._stop(s))

    def _start(self, stage: str) -> None:
        self._starts[stage] = time.perf_counter()

    def _stop(self, stage: str) -> None:
        self.frame[stage] += time.perf_counter() - self._starts.pop(stage)

    def time(self, stage: str, fn: Callable, *args, **kwargs):
        self._start(stage)
        result = fn(*args, **kwargs)
        self._stop(stage)
        return result

    def end_frame(self, record: bool) -> None:
        if record:
            self.frames.append(dict(self.frame))
        self.frame = defaultdict(float)

    def median_ms(self, row) -> float:
        stage, *minus = (row,) if isinstance(row, str) else row
        return 1e3 * statistics.median(
            f.get(stage, 0.0) - sum(f.get(m, 0.0) for m in minus) for f in self.frames)


GEMM_SIZE, GEMM_REPEATS, GEMM_REPEATS_PER_FRAME = 2048, 12, 2


def gemm_operands(size: int = GEMM_SIZE) -> Tuple[torch.Tensor, torch.Tensor]:
    """Two random float32 (size, size) matrices, multiplied once (untimed first touch)."""
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(size, size, generator=gen), torch.randn(size, size, generator=gen)
    torch.mm(a, b)
    return a, b


def gemm_backends() -> Dict[str, Callable]:
    """The float32 products a frame can use: torch's ``mm`` (MKL) and, where torch has it,
    oneDNN's (what ``ctvis.ops.onednn`` and the convolutions run on). On AMD processors
    MKL runs its AVX2 code, so the two rates can differ by 2x."""
    backends = {'torch.mm': torch.mm}
    if onednn_fusion_available():
        backends['oneDNN'] = lambda a, b: torch.ops.mkldnn._linear_pointwise(
            a, b, None, 'none', [], '')  # a @ b.T: the same FLOPs
    return backends


def gemm_flops_per_s(operands: Tuple[torch.Tensor, torch.Tensor],
                     repeats: int = GEMM_REPEATS) -> Dict[str, float]:
    """Best float32 GEMM rate (FLOP/s) of each backend at the current thread count."""
    a, b = operands
    size = a.shape[0]
    rates = {}
    for name, multiply in gemm_backends().items():
        best = float('inf')
        for _ in range(repeats):
            start = time.perf_counter()
            multiply(a, b)
            best = min(best, time.perf_counter() - start)
        rates[name] = 2 * size ** 3 / best
    return rates


def ms_deform_attn_flops(value_shape, shapes_shape, starts_shape, locations_shape, weights_shape,
                         out_shape=None, **kwargs) -> int:
    """Multiply-adds of the sampling: 4 neighbours x channels per point, 2 FLOPs each."""
    bs, queries, heads, levels, points, _ = locations_shape
    return 2 * 4 * bs * queries * heads * levels * points * value_shape[-1]


def ms_deform_attn_from_offsets_flops(value_shape, shapes_shape, starts_shape, points_shape,
                                      offsets_shape, logits_shape, out_shape=None,
                                      **kwargs) -> int:
    """The sampling of the inference op (its softmax and locations are not counted)."""
    return ms_deform_attn_flops(value_shape, shapes_shape, starts_shape, offsets_shape, None)


def onednn_linear_flops(*args, out_shape=None, **kwargs) -> int:
    """``mkldnn::_linear_pointwise`` (X, W, ...) and its ``.binary`` (X, other, W, ...)."""
    x_shape, w_shape = args[0], args[2] if len(args) == 5 else args[1]
    return 2 * prod(x_shape[:-1]) * w_shape[0] * w_shape[1]


def onednn_conv_flops(*args, out_shape=None, **kwargs) -> int:
    """``mkldnn::_convolution_pointwise`` (X, W, ...) and its ``.binary`` (X, other, W, ...)."""
    x_shape, w_shape = args[0], args[2] if len(args) == 13 else args[1]
    return conv_flop_count(x_shape, w_shape, out_shape, transposed=False)


def frame_flops(fn: Callable, *args) -> int:
    """FLOPs of ``fn(*args)`` (convolutions, matrix products, ctvis' deformable attention,
    oneDNN's fused linear layers and convolutions)."""
    custom = {}
    for name, count in (('ms_deform_attn', ms_deform_attn_flops),
                        ('ms_deform_attn_from_offsets', ms_deform_attn_from_offsets_flops)):
        if hasattr(torch.ops, 'ctvis') and hasattr(torch.ops.ctvis, name):
            custom[getattr(torch.ops.ctvis, name)] = count
    if onednn_fusion_available():
        custom[torch.ops.mkldnn._linear_pointwise] = onednn_linear_flops
        custom[torch.ops.mkldnn._convolution_pointwise] = onednn_conv_flops
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=custom) as counter:
        fn(*args)
    return counter.get_total_flops()


def side_by_side(args: argparse.Namespace) -> None:
    """Alternate CTVIS and mmdet's Mask2Former on every frame; per-stage medians and the floor."""
    cfg = Config.fromfile(args.config)
    segmenter = OnlineVideoSegmenter.from_config(cfg, args.checkpoint)
    ctvis_model = segmenter.model
    mask2former = build_mask2former(cfg.model, ctvis_model)
    timers = dict(ctvis=StageTimer(), mmdet=StageTimer())
    timers['ctvis'].hook(ctvis_model, {s: c for s, c, _ in MODULE_STAGES})
    timers['mmdet'].hook(mask2former, {s: m for s, _, m in MODULE_STAGES})

    def run_ctvis(frame: np.ndarray) -> InstanceData:
        # OnlineVideoSegmenter.step, split into its stages
        timer = timers['ctvis']
        start = time.perf_counter()
        data, meta = timer.time('preprocess', preprocess, frame)
        logits, mask_logits, embeds = ctvis_model.detect(data['inputs'][0])
        tracks = timer.time('postprocess', ctvis_model.track_frame, meta, logits[0],
                            mask_logits[0], embeds[0])
        segmenter.frame_id += 1
        timer.frame['total'] = time.perf_counter() - start
        return tracks

    def run_mmdet(frame: np.ndarray) -> List[DetDataSample]:
        timer = timers['mmdet']
        start = time.perf_counter()
        data, meta = timer.time('preprocess', preprocess, frame)
        samples = [DetDataSample(metainfo=meta)]
        feats = mask2former.extract_feat(data['inputs'][0])
        cls_results, mask_results = mask2former.panoptic_head.predict(feats, samples)
        results = timer.time('postprocess', mask2former.panoptic_fusion_head.predict,
                             cls_results, mask_results, samples, True)
        timer.frame['total'] = time.perf_counter() - start
        return results

    def preprocess(frame: np.ndarray):
        data = segmenter.pipeline(dict(img=[frame], img_id=[segmenter.frame_id],
                                       frame_id=[segmenter.frame_id], video_id=[0]))
        data = ctvis_model.data_preprocessor(pseudo_collate([data]), False)
        return data, data['data_samples'][0][0].metainfo

    frames = list(toy_frames(args.warmup + args.frames, args.size))
    # the GEMM rate is sampled between frames all through the run and the best kept: one
    # measurement at the end can land on a slow moment of a shared or virtual machine
    rates, gemm = Counter(), gemm_operands()
    with torch.no_grad():
        for t, frame in enumerate(frames):
            rates |= Counter(gemm_flops_per_s(gemm, repeats=GEMM_REPEATS_PER_FRAME))
            # alternate which model goes first, so neither always runs on a warm cache
            order = (run_ctvis, run_mmdet) if t % 2 == 0 else (run_mmdet, run_ctvis)
            for run in order:
                run(frame)
            for timer in timers.values():
                timer.end_frame(record=t >= args.warmup)
        data, _ = preprocess(frames[0])
        inputs = data['inputs'][0]
    flops = dict(ctvis=frame_flops(ctvis_model.detect, inputs),
                 mmdet=frame_flops(mask2former.extract_feat, inputs))
    with torch.no_grad():
        feats = mask2former.extract_feat(inputs)
    flops['mmdet'] += frame_flops(mask2former.panoptic_head.predict, feats,
                                  [DetDataSample(metainfo=data['data_samples'][0][0].metainfo)])
    rates |= Counter(gemm_flops_per_s(gemm))

    h, w = inputs.shape[-2:]
    print(f'{args.frames} frames of {args.size[0]}x{args.size[1]} (network input {h}x{w}), '
          f'{torch.get_num_threads()} threads, after {args.warmup} warm-up frames; median ms '
          'per frame')
    print(f'{"stage":<52} {"CTVIS":>9} {"Mask2Former":>12}')
    for label, row in ROWS:
        print(f'{label:<52} {timers["ctvis"].median_ms(row):>9.1f} '
              f'{timers["mmdet"].median_ms(row):>12.1f}')
    print(f'GEMM rate (float32, {GEMM_SIZE}^3, best of {GEMM_REPEATS_PER_FRAME} per frame and '
          f'{GEMM_REPEATS} at the end): ' + ', '.join(
              f'{name} {rate / 1e9:.1f} GFLOP/s' for name, rate in rates.items()))
    for name, label in (('ctvis', 'CTVIS'), ('mmdet', 'Mask2Former')):
        total = timers[name].median_ms('total')
        floors = ', '.join(f'{1e3 * flops[name] / rate:.1f} ms at the {backend} rate = '
                           f'{total * rate / (1e3 * flops[name]):.2f}x'
                           for backend, rate in rates.items())
        print(f'{label}: {flops[name] / 1e9:.1f} GFLOP per frame, frame total {total:.1f} ms; '
              f'compute floor {floors}')
    speedup = timers['mmdet'].median_ms('total') / timers['ctvis'].median_ms('total')
    print(f'CTVIS is {speedup:.2f}x as fast as Mask2Former per frame')


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.side_by_side:
        side_by_side(args)
    elif args.compare_compile:
        compare_compile(args)
    else:
        stream(args)


if __name__ == '__main__':
    print(tune_malloc())  # as the tools do; CTVIS_MALLOC_TUNING=0 measures glibc's defaults
    main()
