"""Resume continues a run exactly: RNGStateHook (ctvis/engine/rng_state_hook.py).

A run interrupted after a checkpoint and resumed must end with the weights of the same run left
alone, bit for bit. Two checks: a tiny in-process Runner whose data and model draw from all three
global generators (Python, numpy, torch), with a validation right after each checkpoint; and the
real thing, tools/train.py on the toy CTVIS config, killed with SIGKILL and resumed with
``--resume`` in a fresh process.
"""
import logging
import os
import os.path as osp
import random
import signal
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn as nn
from mmengine.evaluator import BaseMetric
from mmengine.hooks import CheckpointHook, Hook
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch.utils.data import BatchSampler, Dataset

from conftest import REPO, loopback_env, pythonpath_for
from ctvis.engine.rng_state_hook import CHECKPOINT_KEY, RNGStateHook, checkpoint_due
from ctvis.utils import safe_checkpoint_loading, safe_load_file
from mmdet.registry import DATA_SAMPLERS, HOOKS

E2E_CONFIG = osp.join(REPO, 'tests', 'data', 'configs', 'ctvis_toy_e2e.py')
KILL_ENV = 'CTVIS_TEST_KILL_AFTER_ITER'


@HOOKS.register_module()
class KillAfterIteration(Hook):
    """SIGKILL this process after the iteration named by $CTVIS_TEST_KILL_AFTER_ITER (1-based),
    once the checkpoint hook has run: what ``kill -9`` does to a training job."""
    priority = 'LOWEST'

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if os.environ.get(KILL_ENV) == str(runner.iter + 1):
            os.kill(os.getpid(), signal.SIGKILL)


@pytest.fixture(autouse=True)
def tool_like_checkpoint_loading():
    """The in-process Runners resume as tools/train.py's do: inside safe_checkpoint_loading
    (``import ctvis`` does not change mmengine's checkpoint loading)."""
    with safe_checkpoint_loading():
        yield


# ----------------------------------------------------------------------------------------------
# In-process: every generator in use, validation after each checkpoint
# ----------------------------------------------------------------------------------------------

class NoisyRegressionSet(Dataset):
    """Items jittered with Python's and numpy's generators (like random flips and clip picks)."""

    def __len__(self) -> int:
        return 16  # 8 iterations per epoch: no epoch restart (mmengine sleeps 2 s there)

    def __getitem__(self, index: int) -> dict:
        features = torch.arange(3.) * 0.1 * (index + 1) + np.random.rand() + random.random()
        return dict(inputs=features, targets=features.sum() * 2 - 1)


class NoisyRegressor(BaseModel):
    """y = w.x + b plus torch noise in training (like the mask loss's random points)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)  # built before the Runner seeds: the same start for every run
        self.linear = nn.Linear(3, 1)

    def forward(self, inputs, targets=None, mode='tensor'):
        outputs = self.linear(torch.stack(inputs)).squeeze(-1)
        if mode == 'loss':
            noise = 0.1 * torch.rand_like(outputs)
            return dict(loss=((outputs + noise - torch.stack(targets))**2).mean())
        return outputs


class MeanSquaredError(BaseMetric):
    default_prefix = 'noisy'

    def process(self, data_batch, data_samples) -> None:
        predictions = torch.stack(list(data_samples))
        self.results.append(float(((predictions - torch.stack(data_batch['targets']))**2).mean()))

    def compute_metrics(self, results) -> dict:
        return dict(mse=float(np.mean(results)))


class CrashAfterIteration(Hook):
    priority = 'LOWEST'  # after CheckpointHook

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if runner.iter + 1 == 3:
            raise KeyboardInterrupt('simulated crash after iteration 3')


@DATA_SAMPLERS.register_module()
class PairBatchSampler(BatchSampler):
    """Plain batches through a registered batch sampler (as the zoo configs batch their clips)."""

    def __init__(self, sampler, batch_size: int) -> None:
        super().__init__(sampler, batch_size, drop_last=False)


def noisy_runner(work_dir: str, name: str, hooks: list, batch_sampler: bool = False,
                 **runner_args) -> Runner:
    loader = dict(dataset=NoisyRegressionSet(), batch_size=2, num_workers=0,
                  sampler=dict(type='DefaultSampler', shuffle=True),
                  collate_fn=dict(type='pseudo_collate'))
    if batch_sampler:
        loader['batch_sampler'] = dict(type=PairBatchSampler)
    return Runner(
        model=NoisyRegressor(), work_dir=work_dir, experiment_name=name,
        train_dataloader=loader, val_dataloader=loader, val_evaluator=[MeanSquaredError()],
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9)),
        val_cfg=dict(type='ValLoop'),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False),
                           logger=dict(type='LoggerHook', interval=1)),
        custom_hooks=hooks, default_scope='mmdet',
        **{'randomness': dict(seed=0),
           'train_cfg': dict(type='IterBasedTrainLoop', max_iters=6, val_interval=2),
           **runner_args})


def interrupted_and_resumed(work_dir: str, name: str, with_hook: bool,
                            resumed_seed: int = 0, batch_sampler: bool = False) -> dict:
    hooks = [RNGStateHook()] if with_hook else []
    with pytest.raises(KeyboardInterrupt, match='simulated crash'):
        noisy_runner(work_dir, f'{name}_crash', hooks + [CrashAfterIteration()],
                     batch_sampler).train()
    runner = noisy_runner(work_dir, f'{name}_resume', [RNGStateHook()] if with_hook else [],
                          batch_sampler, resume=True, randomness=dict(seed=resumed_seed))
    runner.train()
    assert runner.iter == 6
    return runner.model.state_dict()


def test_resumed_run_equals_the_uninterrupted_one_in_process(tmp_path):
    reference = noisy_runner(str(tmp_path / 'reference'), 'rng_reference', [RNGStateHook()])
    reference.train()
    expected = reference.model.state_dict()
    checkpoint = safe_load_file(tmp_path / 'reference' / 'iter_2.pth')
    assert len(checkpoint[CHECKPOINT_KEY]) == 1  # one rank
    assert set(checkpoint[CHECKPOINT_KEY][0]) >= {'python', 'numpy', 'torch'}

    resumed = interrupted_and_resumed(str(tmp_path / 'run'), 'rng_run', with_hook=True)
    for key, value in expected.items():
        assert torch.equal(resumed[key], value), key

    # resumed under another seed: mmengine re-seeds with the checkpoint's, the hook gives the
    # sampler (built before, with the new seed) the interrupted run's seed back
    resumed = interrupted_and_resumed(str(tmp_path / 'seed5'), 'rng_seed5', with_hook=True,
                                      resumed_seed=5)
    for key, value in expected.items():
        assert torch.equal(resumed[key], value), key
    # also when a batch sampler reads the sampler (the dataloader's own .sampler is then a
    # default sequential one, whose seed means nothing)
    resumed = interrupted_and_resumed(str(tmp_path / 'batched'), 'rng_batched', with_hook=True,
                                      resumed_seed=5, batch_sampler=True)
    for key, value in expected.items():
        assert torch.equal(resumed[key], value), key

    # the control: the same interruption without the hook does not continue the run
    without = interrupted_and_resumed(str(tmp_path / 'without'), 'rng_without', with_hook=False)
    assert not all(torch.equal(without[key], value) for key, value in expected.items())


def test_states_are_gathered_exactly_when_the_checkpoint_hook_saves():
    """The ranks gather their states where mmengine's CheckpointHook saves (it saves on rank 0
    only, so the gather cannot happen inside the save): its interval, save_begin and save_last,
    by iteration and by epoch, and not for the other kind of loop."""
    def due(hook, by_epoch, **position):
        runner = SimpleNamespace(hooks=[hook], max_iters=10, max_epochs=5, **position)
        return checkpoint_due(runner, by_epoch)

    by_iter = CheckpointHook(interval=3, by_epoch=False, save_last=True)
    assert [i + 1 for i in range(10) if due(by_iter, False, iter=i, epoch=0)] == [3, 6, 9, 10]
    assert not any(due(by_iter, True, iter=i, epoch=0) for i in range(10))
    late = CheckpointHook(interval=2, by_epoch=False, save_begin=5, save_last=False)
    assert [i + 1 for i in range(10) if due(late, False, iter=i, epoch=0)] == [5, 7, 9]
    by_epoch = CheckpointHook(interval=2, by_epoch=True, save_last=False)
    assert [e + 1 for e in range(5) if due(by_epoch, True, iter=0, epoch=e)] == [2, 4]
    assert not any(due(by_epoch, False, iter=i, epoch=1) for i in range(10))


def test_loading_weights_only_restores_no_generator_state(tmp_path):
    """``load_from`` (fine-tuning) starts at iteration 0: the saved states stay unused."""
    noisy_runner(str(tmp_path / 'first'), 'rng_first', [RNGStateHook()]).train()
    hook = RNGStateHook()
    fresh = noisy_runner(str(tmp_path / 'second'), 'rng_second', [hook],
                         load_from=str(tmp_path / 'first' / 'iter_6.pth'))
    loop = fresh.train_loop  # built first: making its data iterator draws from torch
    torch.manual_seed(123)
    before = torch.get_rng_state()
    fresh.load_or_resume()
    assert hook._saved is not None  # the states were read ...
    hook.before_train(fresh)
    assert torch.equal(torch.get_rng_state(), before)  # ... and not applied
    assert type(loop.dataloader_iterator).__name__ == '_InfiniteDataloaderIterator'


def test_states_of_another_number_of_ranks_are_not_restored(tmp_path):
    """A checkpoint of 2 ranks resumed by 1: a warning, the generators stay as seeded."""
    noisy_runner(str(tmp_path / 'first'), 'rng_two_first', [RNGStateHook()]).train()
    checkpoint = safe_load_file(tmp_path / 'first' / 'iter_2.pth')
    checkpoint[CHECKPOINT_KEY] = checkpoint[CHECKPOINT_KEY] * 2
    work_dir = tmp_path / 'second'
    work_dir.mkdir()
    torch.save(checkpoint, work_dir / 'iter_2.pth')
    (work_dir / 'last_checkpoint').write_text(str(work_dir / 'iter_2.pth'))
    hook = RNGStateHook()
    runner = noisy_runner(str(work_dir), 'rng_two_second', [hook], resume=True)
    loop = runner.train_loop
    messages = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    runner.logger.addHandler(handler)
    try:
        runner.load_or_resume()
        hook.before_train(runner)
    finally:
        runner.logger.removeHandler(handler)
    assert runner.iter == 2
    assert any('generator states of 2 ranks, this run has 1' in m for m in messages), messages
    assert type(loop.dataloader_iterator).__name__ == '_InfiniteDataloaderIterator'


# ----------------------------------------------------------------------------------------------
# tools/train.py on the toy CTVIS config, kill -9, --resume in a fresh process
# ----------------------------------------------------------------------------------------------

def train(config: str, work_dir: str, small_toy_root: str, *extra: str, **env: str):
    options = [f'data_root={small_toy_root}/', 'max_iters=4', 'default_hooks.checkpoint.interval=2',
               'train_cfg.val_interval=2', '+randomness.deterministic=True']
    environment = loopback_env(PYTHONPATH=pythonpath_for(__file__),
                               OMP_NUM_THREADS='1', **env)
    environment.pop('CTVIS_TOY_DATA', None)
    return subprocess.run([sys.executable, 'tools/train.py', config, '--work-dir', work_dir,
                           *extra, '--cfg-options', *options], cwd=REPO, env=environment,
                          capture_output=True, text=True, timeout=600)


def test_kill_9_then_resume_gives_the_uninterrupted_weights_bit_for_bit(small_toy_root, tmp_path):
    config = tmp_path / 'resume_toy.py'
    config.write_text(f"_base_ = '{E2E_CONFIG}'\n"
                      "custom_imports = dict(imports=['ctvis', 'test_resume'], "
                      "allow_failed_imports=False)\n"
                      "custom_hooks = _base_.custom_hooks + [dict(type='KillAfterIteration')]\n")
    uninterrupted = train(str(config), str(tmp_path / 'whole'), small_toy_root)
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-3000:]

    work_dir = str(tmp_path / 'killed')
    killed = train(str(config), work_dir, small_toy_root, **{KILL_ENV: '3'})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert osp.isfile(osp.join(work_dir, 'iter_2.pth'))
    assert not osp.exists(osp.join(work_dir, 'iter_4.pth'))

    resumed = train(str(config), work_dir, small_toy_root, '--resume')
    log = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, log[-3000:]
    assert 'resumed epoch: 0, iter: 2' in log and 'Iter(train) [3/4]' in log

    expected = safe_load_file(tmp_path / 'whole' / 'iter_4.pth')['state_dict']
    final = safe_load_file(osp.join(work_dir, 'iter_4.pth'))['state_dict']
    assert expected.keys() == final.keys()
    different = [key for key, value in expected.items() if not torch.equal(final[key], value)]
    assert not different, f'{len(different)} of {len(expected)} tensors differ: {different[:5]}'


# ----------------------------------------------------------------------------------------------
# Resuming where a validation was due, or from weights of another model
# ----------------------------------------------------------------------------------------------

class ValidationLog(Hook):
    def __init__(self) -> None:
        self.iterations = []

    def after_val_epoch(self, runner, metrics=None) -> None:
        self.iterations.append(runner.iter)


@pytest.mark.parametrize('resume_at, val_interval, with_hook, validated, val_begin', [
    (4, 2, True, [4, 6], 1),  # killed during iteration 4's validation: it runs on resume
    (4, 2, False, [6], 1),  # mmengine alone: iteration 4 is never validated
    (6, 2, True, [6], 1),  # killed in the last validation: the run ends with its metrics
    (6, 2, False, [], 1),  # mmengine alone: exits with no metrics at all
    (2, 4, True, [4, 6], 1),  # no validation due at iteration 2: none added
    (6, 4, True, [6], 1),  # the last iteration is always validated, off the interval too
    (4, 2, True, [4, 6], 4),  # due at val_begin itself
])
def test_a_validation_due_at_the_resumed_iteration_runs(tmp_path, resume_at, val_interval,
                                                        with_hook, validated, val_begin):
    from ctvis.engine import ValidateResumedCheckpoint
    noisy_runner(str(tmp_path / 'first'), 'val_first', []).train()
    log = ValidationLog()
    hooks = [log] + ([ValidateResumedCheckpoint()] if with_hook else [])
    runner = noisy_runner(str(tmp_path / 'second'), 'val_second', hooks, resume=True,
                          load_from=str(tmp_path / 'first' / f'iter_{resume_at}.pth'),
                          train_cfg=dict(type='IterBasedTrainLoop', max_iters=6,
                                         val_interval=val_interval, val_begin=val_begin))
    runner.train()
    assert log.iterations == validated


def test_resuming_weights_that_do_not_fit_is_refused_before_any_iteration(tmp_path):
    from ctvis.engine import CheckpointFitsModel
    from ctvis.utils import ConfigError
    noisy_runner(str(tmp_path / 'first'), 'fit_first', []).train()
    checkpoint = safe_load_file(tmp_path / 'first' / 'iter_2.pth')
    checkpoint['state_dict']['linear.weight'] = torch.zeros(1, 4)
    path = str(tmp_path / 'other.pth')
    torch.save(checkpoint, path)
    log = ValidationLog()
    runner = noisy_runner(str(tmp_path / 'second'), 'fit_second',
                          [CheckpointFitsModel(path, 'nothing was trained'), log],
                          resume=True, load_from=path)
    with pytest.raises(ConfigError, match=rf'^{path}: the weights do not fit the model: 1 have '
                       r'another shape .*linear.weight: \(1, 4\) vs \(1, 3\).*\(nothing was '
                       r'trained\)$'):
        runner.train()
    assert runner.iter == 0 and log.iterations == []
