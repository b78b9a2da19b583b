"""Fit an iteration-based training into a wall-clock budget.

A CPU recipe written for N iterations takes 12 minutes on one machine and 30 on another (the
quickstart's iteration measured 0.25-0.71 s on machines of one kind). :class:`TrainingTimeBudget`
measures the speed of the run itself and stretches or shrinks the schedule to the budget: the
number of iterations and, in proportion, every part of the learning-rate (or momentum) schedule
that is tied to the end of the training (a step decay's milestones, a cosine's length), so the
schedule keeps its shape at any length. Warm-ups and other parts that end before the config's
last iteration keep their iterations.

mmengine has no such setting: ``max_iters`` is fixed, and stopping a run early (as a time limit
alone would) leaves the learning-rate decay out.
"""
import logging
import math
import re
import time
from typing import Any, Dict, List, Optional

from mmengine.dist import broadcast_object_list
from mmengine.hooks import CheckpointHook, Hook
from mmengine.logging import print_log
from mmengine.optim.scheduler.param_scheduler import (ConstantParamScheduler,
                                                      CosineAnnealingParamScheduler,
                                                      LinearParamScheduler,
                                                      MultiStepParamScheduler,
                                                      PolyParamScheduler, _ParamScheduler)
from mmengine.runner import IterBasedTrainLoop

from mmdet.registry import HOOKS

CHECKPOINT_KEY = 'time_budget'
"""Checkpoint entry: the plan and the training time spent, so a resumed run keeps to both."""

# the parts of a schedule tied to its end that are stretched with it; other schedulers tied to
# the end are refused (their stretched behaviour would be a guess)
_STRETCHABLE = (MultiStepParamScheduler, CosineAnnealingParamScheduler, LinearParamScheduler,
                PolyParamScheduler, ConstantParamScheduler)

_clock = time.perf_counter  # the time measured (tests replace it)

_DURATION = re.compile(r'^\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*$')


def parse_duration(text: str) -> float:
    """Seconds of ``'900'``, ``'900s'``, ``'15m'`` or ``'1.5h'``; ValueError otherwise."""
    match = _DURATION.match(str(text))
    if match is None:
        raise ValueError(f'not a duration: {text!r} (write e.g. 900, 900s, 15m or 1.5h)')
    value = float(match.group(1)) * {'': 1, 's': 1, 'm': 60, 'h': 3600}[match.group(2)]
    if not value > 0:
        raise ValueError(f'a duration must be positive, got {text!r}')
    return value


def _schedulers(runner) -> List[_ParamScheduler]:
    schedulers = runner.param_schedulers or []
    if isinstance(schedulers, dict):  # one list per optimizer wrapper
        return [s for group in schedulers.values() for s in group]
    return list(schedulers)


@HOOKS.register_module()
class TrainingTimeBudget(Hook):
    """Stretch or shrink an ``IterBasedTrainLoop``'s schedule so that training takes ``seconds``.

    The time counts from the start of the training loop (not the model building and data
    loading before it; validations during it count) and, on resume, goes on from the time the
    checkpoint's run had spent. After ``measure_from`` iterations (the first ones are slower:
    the quickstart's first 100 by 10-30 %) the speed is measured until iteration ``plan_at``;
    then the iterations that fit are planned, rounded down to a multiple of ``round_to``, at
    most ``max_factor`` times the config's. Every ``check_every`` iterations after that the end
    is projected at the mean speed since ``measure_from`` (the speed of 100 iterations varied
    by 7 % on a quiet machine, which made a plan on it jump): a run that would end late or
    early by more than ``tolerance`` of the time left is shortened or lengthened to end on
    time. The band keeps the plan of a run whose speed only jitters, and shrinks with the time
    left, so the run ends close to the budget (a band of the whole budget let a run end up to
    3 % early: 34 s of the quickstart's training). A run that slows down is shortened a little
    at each check until it ends on time.

    Scaled with the plan: ``max_iters``; of each parameter scheduler whose ``end`` is at or after
    the config's last iteration, its end and its iterations tied to it (a multi-step's
    milestones, scaled from 0; a cosine's ``T_max``; a linear, poly or constant scheduler's
    length); a ``val_interval`` or ``CheckpointHook`` interval equal to the config's
    ``max_iters`` (so that the one validation and checkpoint stay at the end). Milestones
    already passed stay; one that the shorter plan would put in the past comes at once. A
    schedule tied to the end that has begun before the plan (a cosine from iteration 0) goes on
    from its current value along the stretched curve (mmengine's schedulers are recursive).

    A run resumed from a checkpoint of a budgeted run keeps its plan (its length, intervals and
    schedule) even without a budget: ``seconds=None`` does only that (tools/train.py adds it to
    every resumed run without ``--time-budget``); the run otherwise stopped at the config's
    length, before a stretched schedule's decay, or ran past a shrunk one's.

    Args:
        seconds (float, optional): The training time; None: no budget, keep a resumed plan.
        measure_from (int): Iterations run before the speed is measured.
        plan_at (int): The iteration at which the plan is made.
        check_every (int): Iterations between checks of the plan.
        round_to (int): The first plan is a multiple of this many iterations.
        max_factor (float): At most this many times the config's iterations.
        tolerance (float): How late or early, as a fraction of the time left, the projected
            end may be before the plan changes.
    """
    priority = 'NORMAL'  # before the schedulers step and the checkpoint is written

    def __init__(self, seconds: Optional[float], measure_from: int = 100, plan_at: int = 300,
                 check_every: int = 100, round_to: int = 100, max_factor: float = 4.0,
                 tolerance: float = 0.03) -> None:
        if seconds is not None and not (isinstance(seconds, (int, float))
                                        and math.isfinite(seconds) and seconds > 0):
            raise ValueError(f'TrainingTimeBudget: seconds must be a positive number or None, '
                             f'got {seconds!r}')
        for name, value in (('measure_from', measure_from), ('plan_at', plan_at),
                            ('check_every', check_every), ('round_to', round_to)):
            if type(value) is not int or value < 1:
                raise ValueError(f'TrainingTimeBudget: {name} must be a whole number >= 1, '
                                 f'got {value!r}')
        if plan_at <= measure_from:
            raise ValueError(f'TrainingTimeBudget: plan_at ({plan_at}) must come after '
                             f'measure_from ({measure_from})')
        if not (isinstance(max_factor, (int, float)) and max_factor > 0):
            raise ValueError(f'TrainingTimeBudget: max_factor must be positive, got '
                             f'{max_factor!r}')
        if not (isinstance(tolerance, (int, float)) and 0 <= tolerance < 1):
            raise ValueError(f'TrainingTimeBudget: tolerance must be in [0, 1), got '
                             f'{tolerance!r}')
        self.seconds = None if seconds is None else float(seconds)
        self.measure_from = measure_from
        self.plan_at = plan_at
        self.check_every = check_every
        self.round_to = round_to
        self.max_factor = float(max_factor)
        self.tolerance = float(tolerance)
        self._config_iters: Optional[int] = None
        self._planned: Optional[int] = None
        self._spent_before = 0.0  # training seconds of the runs before a resume
        self._start: Optional[float] = None
        self._mark: Optional[tuple] = None  # (iteration, time) the speed is measured from
        self._measure_from = measure_from
        self._plan_at = plan_at
        self._originals: Optional[List[Optional[Dict[str, Any]]]] = None
        self._tied: Optional[Dict[str, Any]] = None  # intervals that end with the training

    # ----------------------------------------------------------------------------------------
    # the state a resumed run needs
    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        state = checkpoint.get(CHECKPOINT_KEY)
        if not state:
            return
        self._config_iters = state['config_iters']
        self._planned = state['planned']
        self._spent_before = state['spent']
        self._originals = state['originals']
        if self._planned is not None:
            self._set_length(runner, self._planned)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if self.seconds is None and self._planned is None:
            return  # no budget, no plan: nothing to keep
        checkpoint[CHECKPOINT_KEY] = dict(config_iters=self._config_iters, planned=self._planned,
                                          spent=self._spent(),
                                          originals=self._originals)

    # ----------------------------------------------------------------------------------------
    def before_train(self, runner) -> None:
        loop = runner.train_loop
        if self.seconds is None:
            if self._planned is not None:
                print_log(f'TrainingTimeBudget: resumed a run fitted to a time budget: keeping '
                          f'its plan of {self._planned} iterations (config {self._config_iters}) '
                          'and its schedule; give --time-budget to go on fitting one',
                          logger='current')
            return
        if not isinstance(loop, IterBasedTrainLoop):
            raise TypeError('TrainingTimeBudget needs an IterBasedTrainLoop (train_cfg '
                            f"type='IterBasedTrainLoop'), got {type(loop).__name__}")
        if self._config_iters is None:
            self._config_iters = loop.max_iters
            self._originals = [self._capture(s) for s in _schedulers(runner)]
        self._start = _clock()
        self._mark = None
        # on resume, measured afresh from the resumed iteration on
        self._measure_from = runner.iter + self.measure_from
        self._plan_at = runner.iter + self.plan_at
        print_log(f'TrainingTimeBudget: {self.seconds:.0f} s of training'
                  + (f' ({self._spent_before:.0f} s spent before the resume)'
                     if self._spent_before else '')
                  + ('' if self._planned is not None else
                     f'; the plan follows at iteration {self._plan_at}'), logger='current')

    def _capture(self, scheduler: _ParamScheduler) -> Optional[Dict[str, Any]]:
        """What of ``scheduler`` scales with the plan (None: nothing, it ends earlier)."""
        if scheduler.end < self._config_iters:
            return None
        if not isinstance(scheduler, _STRETCHABLE):
            raise TypeError(f'TrainingTimeBudget cannot stretch a {type(scheduler).__name__} '
                            f'that runs to the end of the training (end={scheduler.end}); '
                            'it stretches MultiStep, CosineAnnealing, Linear, Poly and Constant '
                            'schedulers')
        original = dict(end=scheduler.end)
        if isinstance(scheduler, MultiStepParamScheduler):
            original['milestones'] = sorted(scheduler.milestones.elements())
        if isinstance(scheduler, CosineAnnealingParamScheduler):
            original['T_max'] = scheduler.T_max
        return original

    @property
    def _most(self) -> int:
        return int(self.max_factor * self._config_iters)

    def _spent(self) -> float:
        if self._start is None:
            return self._spent_before
        return self._spent_before + _clock() - self._start

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if self.seconds is None:
            return
        done = runner.iter + 1  # iterations completed (the schedulers step after this hook)
        if self._mark is None:
            if done >= self._measure_from:
                self._mark = (done, _clock())
            return
        first_plan = self._planned is None and done >= self._plan_at
        check = self._planned is not None and (done - self._mark[0]) % self.check_every == 0
        if not (first_plan or check):
            return
        now = _clock()
        mark_done, mark_time = self._mark
        seconds_per_iter = (now - mark_time) / (done - mark_done)
        left = self.seconds - self._spent()
        fitting = done + int(max(0.0, left) / seconds_per_iter)
        if first_plan:
            planned = fitting // self.round_to * self.round_to
            planned = max(done, min(planned, self._most))
        else:
            late = (self._planned - done) * seconds_per_iter - left  # seconds beyond the budget
            band = self.tolerance * max(left, 0.0)
            if -band <= late <= band:
                planned = self._planned
            else:
                planned = max(done, min(fitting, self._most))
        planned = self._agree(planned)
        if planned == self._planned:
            return
        fewer = planned < self._config_iters
        # warned once as the plan falls below the config's length, not at every re-plan there
        newly_fewer = fewer and (self._planned is None or self._planned >= self._config_iters)
        level = logging.WARNING if newly_fewer else logging.INFO
        change = ('' if first_plan else f'; planned {self._planned}, '
                  + ('shortened as the run slowed down' if planned < self._planned
                     else 'lengthened as the run sped up'))
        print_log(f'TrainingTimeBudget: {seconds_per_iter:.3f} s per iteration -> '
                  f'{planned} iterations (config {self._config_iters}{change}); '
                  f'{self._apply(runner, planned, done)}'
                  + ('; fewer iterations than the config\'s: expect a weaker model' if fewer
                     else ''), logger='current', level=level)
        self._planned = planned

    @staticmethod
    def _agree(planned: int) -> int:
        """Rank 0's plan on every rank (they measured their own speeds; a single process
        keeps its own: mmengine's broadcast is a no-op there)."""
        shared = [planned]
        broadcast_object_list(shared, src=0)
        return shared[0]

    def _set_length(self, runner, planned: int) -> None:
        """``max_iters`` and the intervals that end with the training to ``planned``.

        Which intervals end with it is decided once, at the first call, while they hold the
        config's values (an interval equal to the config's ``max_iters``): a periodic interval
        that a later plan happens to equal stays periodic."""
        loop = runner.train_loop
        checkpoint_hooks = [hook for hook in runner.hooks
                            if isinstance(hook, CheckpointHook) and not hook.by_epoch]
        if self._tied is None:
            ends = self._config_iters
            self._tied = dict(val=loop.val_interval == ends,
                              dynamic=[interval == ends for interval in loop.dynamic_intervals],
                              checkpoint=[hook.interval == ends for hook in checkpoint_hooks])
        loop._max_iters = planned
        if self._tied['val']:
            loop.val_interval = planned
        # the loop resets val_interval from these before every validation check
        loop.dynamic_intervals = [planned if tied else interval for tied, interval in
                                  zip(self._tied['dynamic'], loop.dynamic_intervals)]
        for tied, hook in zip(self._tied['checkpoint'], checkpoint_hooks):
            if tied:
                hook.interval = planned

    def _apply(self, runner, planned: int, done: int) -> str:
        """Scale the loop, the schedulers and the end-of-training intervals to ``planned``."""
        self._set_length(runner, planned)
        scale = planned / self._config_iters
        described = []
        for scheduler, original in zip(_schedulers(runner), self._originals):
            if original is None:
                continue
            if original['end'] == self._config_iters:  # else it runs on beyond the training
                scheduler.end = planned
            if 'milestones' in original:
                # the i-th current milestone is the i-th original one scaled (scaling keeps the
                # order); passed ones stay, one the plan puts in the past comes at once. mmengine
                # counts milestones from the scheduler's begin: they are scaled as iterations
                begin = scheduler.begin
                current = sorted(scheduler.milestones.elements())
                milestones = [
                    now if begin + now < done else
                    max(done, begin, round((begin + first) * scale)) - begin
                    for first, now in zip(original['milestones'], current)]
                scheduler.milestones.clear()
                scheduler.milestones.update(milestones)
                described.append(f'{type(scheduler).__name__} milestones at iterations '
                                 f'{[begin + m for m in milestones]}')
            if 'T_max' in original:
                whole = original['T_max'] == original['end'] - scheduler.begin
                scheduler.T_max = (scheduler.end - scheduler.begin if whole
                                   else max(1, round(original['T_max'] * scale)))
            if hasattr(scheduler, 'total_iters'):  # linear, poly, constant: their length
                scheduler.total_iters = scheduler.end - scheduler.begin - 1
        return ', '.join(described) or 'no schedule to scale'
