"""StopOnNonFiniteWeights on a tiny in-process Runner: a NaN update stops the run before the
checkpoint hook saves it; a non-finite loss whose step left the weights finite does not."""
import os
import warnings

import pytest
import torch
import torch.nn as nn
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch.utils.data import Dataset

import ctvis.engine.checkpoint_hooks as checkpoint_hooks
from ctvis.engine import StopOnNonFiniteWeights


class Ones(Dataset):
    def __len__(self) -> int:
        return 100

    def __getitem__(self, index: int) -> dict:
        return dict(inputs=torch.ones(2))


class BreaksAt(BaseModel):
    """A linear model whose loss turns ``bad`` at iteration ``at`` (1-based): NaN (its gradient
    is NaN, so SGD makes the weights NaN) or inf that does not depend on the weights (gradient
    0: the weights stay finite, as in a step the fp16 loss scaler skips)."""

    def __init__(self, at: int, bad: str) -> None:
        super().__init__()
        self.linear = nn.Linear(2, 1)
        self.at, self.bad, self.calls = at, bad, 0

    def forward(self, inputs, data_samples=None, mode='tensor'):
        out = self.linear(inputs).mean()
        if mode != 'loss':
            return out
        self.calls += 1
        loss = out ** 2
        if self.calls == self.at:
            loss = loss * float('nan') if self.bad == 'nan' else loss * 0 + float('inf')
        return dict(loss_main=loss, loss_aux=out.detach() * 0)


def run(tmp_path, bad: str, at: int = 3) -> Runner:
    runner = Runner(
        model=BreaksAt(at, bad), work_dir=str(tmp_path),
        train_dataloader=dict(dataset=Ones(), sampler=dict(type='InfiniteSampler'),
                              batch_size=2, num_workers=0,
                              collate_fn=dict(type='default_collate')),
        train_cfg=dict(type='IterBasedTrainLoop', max_iters=5),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1, by_epoch=False),
                           logger=dict(type='LoggerHook', interval=1000)),
        custom_hooks=[dict(type=StopOnNonFiniteWeights)], default_scope='mmdet')
    runner.train()
    return runner


def checkpoints(tmp_path) -> list:
    return sorted(f for f in os.listdir(tmp_path) if f.endswith('.pth'))


def test_a_nan_update_stops_the_run_before_it_is_saved(tmp_path):
    with pytest.raises(RuntimeError, match=r'iteration 3: non-finite loss \(loss_main nan\), '
                       r'and the update made 2 parameters non-finite \(e\.g\. linear\.weight\): '
                       r'training stopped before saving them'):
        run(tmp_path, 'nan')
    assert checkpoints(tmp_path) == ['iter_1.pth', 'iter_2.pth']


def test_finite_iterations_pass_without_a_warning(tmp_path):
    """The total loss reaches the hook attached to the graph; reading it warned at every
    iteration of every run ('Converting a tensor with requires_grad=True to a scalar')."""
    warn_always = torch.is_warn_always_enabled()
    torch.set_warn_always(True)  # torch warns of it once per process otherwise
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            runner = run(tmp_path, 'nan', at=0)  # never
    finally:
        torch.set_warn_always(warn_always)
    assert runner.iter == 5
    assert not [w for w in caught if 'requires_grad=True to a scalar' in str(w.message)]


def test_a_skipped_step_with_finite_weights_goes_on(tmp_path, monkeypatch):
    logged = []
    monkeypatch.setattr(checkpoint_hooks, 'print_log', lambda message, **_: logged.append(message))
    runner = run(tmp_path, 'inf')
    assert runner.iter == 5 and len(checkpoints(tmp_path)) == 5
    assert all(torch.isfinite(p).all() for p in runner.model.parameters())
    assert any('iteration 3: non-finite loss (loss_main inf); the weights stayed finite' in m
               for m in logged)
