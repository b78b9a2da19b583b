"""Random number generator states in checkpoints, so that a resumed run continues exactly.

mmengine 0.10.7 saves the seed but not the generators' states: a run resumed at iteration k
re-seeds, replays the data of the k finished iterations (``IterBasedTrainLoop`` advances its
data iterator k times) and then trains on with generators that are wherever seeding plus the
replay left them, not where the interrupted run had them. Clip sampling, flips and the mask
loss's point sampling then differ, and the weights drift apart (about 1 % after a few
iterations of the quickstart). :class:`RNGStateHook` closes that gap.
"""
import logging
import random
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from mmengine.dist import all_gather_object, get_dist_info
from mmengine.hooks import CheckpointHook, Hook
from mmengine.logging import print_log
from mmengine.runner import IterBasedTrainLoop

from mmdet.registry import HOOKS

CHECKPOINT_KEY = 'rng_states'
"""Checkpoint entry: one dict of generator states per rank (a list indexed by rank)."""
SAMPLER_SEED_KEY = 'train_sampler_seed'
"""Checkpoint entry: the seed of the training sampler (the order of the data follows from it)."""


def index_sampler(dataloader) -> Any:
    """The sampler that orders a dataloader's data: the one its batch sampler reads (a
    dataloader built with ``batch_sampler`` holds a default sequential ``sampler`` beside it)."""
    batch_sampler = getattr(dataloader, 'batch_sampler', None)
    return getattr(batch_sampler, 'sampler', None) or dataloader.sampler


def capture_rng_states() -> Dict[str, Any]:
    """The states of Python's, numpy's and torch's global generators (and CUDA's, if used)."""
    states = dict(python=random.getstate(), numpy=np.random.get_state(),
                  torch=torch.get_rng_state())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states['cuda'] = torch.cuda.get_rng_state_all()
    return states


def checkpoint_due(runner, by_epoch: bool) -> bool:
    """Whether a ``CheckpointHook`` of ``runner`` saves at the end of the current training
    iteration (``by_epoch=False``) or epoch (``by_epoch=True``), by that hook's own rule."""
    for hook in runner.hooks:
        if not isinstance(hook, CheckpointHook) or hook.by_epoch != by_epoch:
            continue
        if by_epoch:
            due = (hook.every_n_epochs(runner, hook.interval, hook.save_begin)
                   or (hook.save_last and hook.is_last_train_epoch(runner)))
        else:
            due = (hook.every_n_train_iters(runner, hook.interval, hook.save_begin)
                   or (hook.save_last and hook.is_last_train_iter(runner)))
        if due:
            return True
    return False


def gather_rng_states(states: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Every rank's ``states``, indexed by rank: a collective, so every rank must call it."""
    _, world_size = get_dist_info()
    return all_gather_object(states) if world_size > 1 else [states]


def restore_rng_states(states: Dict[str, Any]) -> None:
    """Put the global generators back into ``states`` (from :func:`capture_rng_states`)."""
    random.setstate(states['python'])
    np.random.set_state(states['numpy'])
    torch.set_rng_state(states['torch'])
    if 'cuda' in states and torch.cuda.is_available():
        if len(states['cuda']) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states['cuda'])
        else:
            print_log(f'RNGStateHook: the checkpoint holds {len(states["cuda"])} CUDA generator '
                      f'states for {torch.cuda.device_count()} visible devices; CUDA generators '
                      'not restored', logger='current', level=logging.WARNING)


class _RestoreBeforeNewData:
    """Stands in for ``IterBasedTrainLoop.dataloader_iterator`` on resume.

    Lets the loop's replay of the ``replayed`` finished iterations through, then calls
    ``restore`` just before the first new batch is fetched (with ``num_workers=0`` the data
    pipeline draws from the generators of this process), and steps out of the loop's way.
    """

    def __init__(self, loop: IterBasedTrainLoop, replayed: int,
                 restore: Callable[[], None]) -> None:
        self._loop = loop
        self._inner = loop.dataloader_iterator
        self._replayed = replayed
        self._restore = restore

    def __iter__(self) -> '_RestoreBeforeNewData':
        return self

    def __next__(self) -> Any:
        if self._replayed > 0:
            self._replayed -= 1
            return next(self._inner)
        self._restore()
        self._loop.dataloader_iterator = self._inner
        return next(self._inner)


@HOOKS.register_module()
class RNGStateHook(Hook):
    """Save every rank's generator states with each checkpoint; restore them on resume.

    Saved: Python's ``random``, numpy's global ``RandomState``, torch's CPU generator and, where
    CUDA is in use, every CUDA device's generator, one set per rank; and the training sampler's
    seed, which the resumed sampler gets back before the replay. Restored: on resume, at the
    moment the interrupted run was at when it saved: for ``IterBasedTrainLoop`` right after
    mmengine's replay of the finished iterations' data (the replay reproduces the samplers'
    positions, which follow from their seed, and the data workers' generators), for epoch loops
    at the start of the first resumed epoch. Validation is made neutral to the training
    generators (their states are put back after it), so a validation right after a checkpoint
    does not make the uninterrupted run differ from the resumed one.

    With ``randomness=dict(seed=..., deterministic=True)`` a run killed after a checkpoint and
    resumed ends with the same weights, bit for bit, as a run that was never interrupted.
    A checkpoint saved with another number of ranks restores nothing (warning).

    In a distributed run the states are gathered from every rank at the end of each iteration
    (epoch) a ``CheckpointHook`` saves at, by that hook's rule, and at the start of each
    validation (for ``save_best``): mmengine writes checkpoints on rank 0 alone, so a collective
    while saving would pair with whatever the other ranks do next and deadlock the run.
    """
    priority = 'VERY_HIGH'

    def __init__(self) -> None:
        self._saved: Optional[List[Dict[str, Any]]] = None  # every rank's, from a checkpoint
        self._sampler_seed: Optional[int] = None
        self._pending_epoch: Optional[Dict[str, Any]] = None  # restored at the next epoch
        self._before_val: Optional[List[Dict[str, Any]]] = None  # every rank's, in validation
        # every rank's states for the checkpoint due now, keyed by (epoch, iteration)
        self._gathered: Optional[Tuple[Tuple[int, int], List[Dict[str, Any]]]] = None

    def _gather_if_checkpoint_due(self, runner, by_epoch: bool) -> None:
        # Runs on every rank (before CheckpointHook, which has a lower priority); the
        # checkpoint itself is written by rank 0 alone (mmengine's save_checkpoint is
        # master-only), so the collective cannot happen there.
        if checkpoint_due(runner, by_epoch):
            self._gathered = ((runner.epoch, runner.iter), gather_rng_states(capture_rng_states()))

    def after_train_iter(self, runner, batch_idx: int, data_batch: Any = None,
                         outputs: Any = None) -> None:
        self._gather_if_checkpoint_due(runner, by_epoch=False)

    def after_train_epoch(self, runner) -> None:
        self._gather_if_checkpoint_due(runner, by_epoch=True)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        gathered, self._gathered = self._gathered, None
        if self._before_val is not None:  # saved during validation (save_best): training states
            states = self._before_val
        elif gathered is not None and gathered[0] == (runner.epoch, runner.iter):
            states = gathered[1]
        elif get_dist_info()[1] == 1:
            states = [capture_rng_states()]
        else:
            states = None
        if states is None:
            print_log('RNGStateHook: a checkpoint saved outside the CheckpointHook schedule of a '
                      'distributed run holds no generator states (gathering them needs every '
                      'rank); a resume from it will not continue the run exactly',
                      logger='current', level=logging.WARNING)
        else:
            checkpoint[CHECKPOINT_KEY] = states
        checkpoint[SAMPLER_SEED_KEY] = getattr(index_sampler(runner.train_dataloader), 'seed',
                                               None)

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        self._saved = checkpoint.get(CHECKPOINT_KEY)
        self._sampler_seed = checkpoint.get(SAMPLER_SEED_KEY)

    @staticmethod
    def _restore_sampler_seed(runner, seed: Optional[int]) -> None:
        """Give the training sampler the interrupted run's seed, so the replay and the data after
        it follow the same order. mmengine re-seeds the generators with the checkpoint's seed on
        resume, but builds the sampler before, with the seed of the new run (another one when
        ``randomness.seed`` is None or was changed)."""
        loop = runner.train_loop
        sampler = index_sampler(loop.dataloader)
        if seed is None or getattr(sampler, 'seed', seed) == seed:
            return
        print_log(f'RNGStateHook: training sampler seed {sampler.seed} -> {seed} (the '
                  'interrupted run\'s)', logger='current')
        sampler.seed = seed
        # what loader workers drew ahead from the old stream is dropped with the old iterator
        # and the batch sampler's waiting clips
        reset = getattr(loop.dataloader.batch_sampler, 'reset', None)
        if callable(reset):
            reset()
        loop.dataloader_iterator = type(loop.dataloader_iterator)(loop.dataloader)

    def before_train(self, runner) -> None:
        saved, self._saved = self._saved, None
        if saved is None or runner.iter == 0:  # not a resume (load_from only loads weights)
            return
        rank, world_size = get_dist_info()
        if len(saved) != world_size:
            print_log(f'RNGStateHook: the checkpoint holds generator states of {len(saved)} '
                      f'ranks, this run has {world_size}; the resumed run will not continue '
                      'the interrupted one exactly', logger='current', level=logging.WARNING)
            return
        states = saved[rank]
        self._restore_sampler_seed(runner, self._sampler_seed)
        if isinstance(runner.train_loop, IterBasedTrainLoop):
            loop = runner.train_loop
            loop.dataloader_iterator = _RestoreBeforeNewData(
                loop, runner.iter, lambda: restore_rng_states(states))
        else:
            self._pending_epoch = states

    def before_train_epoch(self, runner) -> None:
        states, self._pending_epoch = self._pending_epoch, None
        if states is not None:
            restore_rng_states(states)

    def before_val(self, runner) -> None:
        self._before_val = gather_rng_states(capture_rng_states())  # every rank is here

    def after_val(self, runner) -> None:
        if self._before_val is not None:
            rank, _ = get_dist_info()
            restore_rng_states(self._before_val[rank])
            self._before_val = None
