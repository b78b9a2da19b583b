"""The online-inference benchmark: the per-stage timer sees every stage of both models; the
streaming mode runs and refuses an unusable device clearly."""
import os.path as osp

import pytest
import torch

from conftest import REPO, build_tiny_model


def test_stage_timer_times_every_ctvis_stage_including_the_heads_method(benchmark):
    model = build_tiny_model().eval()
    timer = benchmark.StageTimer()
    timer.hook(model, {stage: path for stage, path, _ in benchmark.MODULE_STAGES})
    with torch.no_grad():
        outputs = model.detect(torch.randn(1, 3, 64, 96))
    assert len(outputs) == 3  # the wrapped predict_final still returns the head's outputs
    frame = dict(timer.frame)
    assert set(frame) == {stage for stage, _, _ in benchmark.MODULE_STAGES}
    assert all(seconds > 0 for seconds in frame.values())
    # nested stages: the head contains the pixel decoder and the transformer decoder layers
    assert frame['head'] > frame['pixel decoder'] + frame['transformer decoder']
    assert frame['pixel decoder'] > frame['deformable encoder']



def test_frame_flops_count_the_sampling_of_the_inference_op(benchmark):
    """Inference runs ms_deform_attn_from_offsets: its sampling counts as ms_deform_attn's."""
    bs, heads, channels, queries, levels, points = 2, 3, 5, 7, 2, 4
    shapes = torch.tensor([[3, 4], [2, 2]])
    value = torch.randn(bs, 16, heads, channels)
    inputs = (value, shapes, torch.tensor([0, 12]), torch.rand(bs, queries, levels, 2),
              torch.randn(bs, queries, heads, levels, points, 2),
              torch.randn(bs, queries, heads, levels * points))
    flops = benchmark.frame_flops(torch.ops.ctvis.ms_deform_attn_from_offsets, *inputs)
    assert flops == 2 * 4 * (bs * queries * heads * levels * points) * channels


def test_stream_reports_memory_and_an_unusable_device_is_a_clear_error(benchmark, monkeypatch,
                                                                       capsys):
    config = osp.join(REPO, 'configs', 'ctvis', 'ctvis_quickstart.py')  # random weights
    monkeypatch.setattr('sys.argv', ['b', config, '--frames', '3', '--size', '32', '48',
                                     '--report-every', '3'])
    benchmark.stream(benchmark.parse_args())
    out = capsys.readouterr().out
    assert '3 frames in ' in out and 'RSS ' in out and 'CUDA' not in out
    monkeypatch.setattr('sys.argv', ['b', config, '--frames', '1', '--device', 'cuda:7'])
    with pytest.raises(SystemExit, match="benchmark_online_inference: error: device 'cuda:7' "
                       'cannot be used'):
        benchmark.stream(benchmark.parse_args())
    monkeypatch.setattr('sys.argv', ['b', config, '--device', 'cuda', '--side-by-side'])
    with pytest.raises(SystemExit):
        benchmark.parse_args()
    assert '--device: --side-by-side and --compare-compile measure the CPU' in (
        capsys.readouterr().err)
