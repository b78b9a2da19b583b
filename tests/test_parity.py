"""The official-parity tool on the reference: it passes, and it fails on wrong weights."""
import os.path as osp
import subprocess
import sys

import pytest
import torch

from conftest import PARITY, REPO

TOOL = osp.join(REPO, 'tools', 'analysis_tools', 'parity_official.py')
REFERENCE = osp.join(PARITY, 'official_r50_seed2_8f.npz')


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
