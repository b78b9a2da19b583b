"""The official-parity tool: on the reference it passes and fails on wrong weights; on the
adversarial tracker cases (tests/data/tracker_cases) it passes and fails on a broken rule."""
import argparse
import glob
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
import torch

import ctvis.models.tracker as tracker_module
from conftest import PARITY, REPO, load_module

TOOL = osp.join(REPO, 'tools', 'analysis_tools', 'parity_official.py')
REFERENCE = osp.join(PARITY, 'official_r50_seed2_8f.npz')
TRACKER_CASES = sorted(glob.glob(osp.join(REPO, 'tests', 'data', 'tracker_cases', '*.npz')))
parity = load_module(TOOL, 'parity_official')


@pytest.fixture(scope='module')
def official_weights(tmp_path_factory):
    path = tmp_path_factory.mktemp('parity') / 'official_r50_seed2.pth'
    subprocess.run([sys.executable, osp.join(PARITY, 'gen_weights.py'), str(path), '--seed', '2'],
                   check=True, capture_output=True)
    return path


def run_tool(*args):
    return subprocess.run([sys.executable, TOOL, REFERENCE, *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def test_every_stage_matches_the_official_reference(official_weights, tmp_path):
    table = tmp_path / 'stages.json'
    result = run_tool(official_weights, '--frames-dir', osp.join(PARITY, 'frames'),
                      '--json', table)
    assert result.returncode == 0, result.stdout + result.stderr
    assert 'every stage matches' in result.stdout
    for stage in ('per-frame class logits', 'track assignments', 'memory-bank embeddings',
                  'final masks', 'test pipeline from JPEG: final labels'):
        assert stage in result.stdout
    assert 'MISMATCH' not in result.stdout


def test_perturbed_weights_fail_loudly(official_weights, tmp_path):
    checkpoint = torch.load(official_weights, weights_only=True)
    weights = checkpoint['model']['sem_seg_head.predictor.reid_embed.layers.2.weight']
    weights.add_(0.05 * torch.randn(weights.shape, generator=torch.Generator().manual_seed(0)))
    perturbed = tmp_path / 'perturbed.pth'
    torch.save(checkpoint, perturbed)
    result = run_tool(perturbed)
    assert result.returncode == 1
    assert 'MISMATCH' in result.stdout
    assert 're-id embeddings' in result.stderr  # the failing stage is named
    # the class head is untouched, so the stages before the embeddings still match
    assert [line for line in result.stdout.splitlines()
            if line.startswith('per-frame class logits')][0].endswith('ok')


def test_missing_reference_is_a_clear_error(official_weights, tmp_path):
    result = subprocess.run([sys.executable, TOOL, str(tmp_path / 'nope.npz'),
                             str(official_weights)], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 2 and 'no such file' in result.stderr


def tool_args(reference, **kwargs):
    return argparse.Namespace(reference=reference, weights=None, tracker_only=False,
                              config=parity.DEFAULT_CONFIG, frames_dir=None, json=None,
                              **kwargs)


def failing_stages(rows):
    return [r['stage'] for r in rows if not r['ok']]


def test_tracker_alone_reproduces_the_official_reference():
    """Fed the official per-frame outputs, every tracker decision equals the reference's."""
    args = tool_args(REFERENCE)
    args.tracker_only = True
    rows = parity.check_reference(args)
    assert failing_stages(rows) == []
    assert {r['stage'] for r in rows} >= {'candidates (score filter + mask NMS)',
                                          'track assignments', 'final masks'}


def test_tracker_cases_are_there():
    names = {osp.basename(p)[:-4] for p in TRACKER_CASES}
    assert names == {'empty_masks', 'ties', 'thresholds', 'dead_tracks', 'suppression',
                     'random'}


@pytest.mark.parametrize('case', TRACKER_CASES, ids=lambda p: osp.basename(p)[:-4])
def test_every_stage_matches_on_the_tracker_case(case):
    assert failing_stages(parity.check_reference(tool_args(case))) == []


def test_tracker_case_from_the_command_line(tmp_path):
    table = tmp_path / 'stages.json'
    result = subprocess.run([sys.executable, TOOL, TRACKER_CASES[0], '--json', str(table)],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert 'every stage matches' in result.stdout and table.exists()


def test_a_broken_tracker_rule_fails_the_cases(monkeypatch):
    """Without the official epsilon two empty masks have IoU 0: the empty-mask case fails from
    the candidate stage on."""

    def iou_without_epsilon(masks):
        flat = masks.flatten(1).float()
        inter = flat @ flat.T
        area = flat.sum(1)
        return inter / (area[:, None] + area[None] - inter).clamp(min=1e-6)

    monkeypatch.setattr(tracker_module, 'mask_iou', iou_without_epsilon)
    case = [c for c in TRACKER_CASES if c.endswith('empty_masks.npz')][0]
    failed = failing_stages(parity.check_reference(tool_args(case)))
    assert failed[0] == 'candidates (score filter + mask NMS)'
    assert 'final labels and source tracks' in failed


def test_network_reference_without_weights_is_a_clear_error():
    with pytest.raises(SystemExit, match='give the official weights'):
        parity.check_reference(tool_args(REFERENCE))


def test_reference_with_settings_ctvis_lacks_is_a_clear_error(tmp_path):
    case = dict(np.load(TRACKER_CASES[0]))
    case['meta_json'] = np.array(str(case['meta_json']).replace('"greedy"', '"hungarian"'))
    path = tmp_path / 'hungarian.npz'
    np.savez(path, **case)
    with pytest.raises(SystemExit, match='MATCH_TYPE=.hungarian. has no ctvis counterpart'):
        parity.check_reference(tool_args(str(path)))
