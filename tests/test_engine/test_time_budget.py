"""TrainingTimeBudget (ctvis/engine/time_budget.py): the schedule scaled to the time, on a tiny
in-process Runner whose iterations take a set time on a fake clock."""
import logging
import os
import os.path as osp
import re

import pytest
import torch
import torch.nn as nn
from mmengine.hooks import Hook
from mmengine.logging import MMLogger
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch.utils.data import Dataset

import ctvis.engine.time_budget as time_budget
from ctvis.engine import TrainingTimeBudget, parse_duration
from ctvis.utils import safe_checkpoint_loading
from mmdet.registry import HOOKS


class FakeClock:
    """Seconds that pass only when an iteration runs (``per_iteration``, changeable)."""

    def __init__(self, per_iteration: float = 1.0) -> None:
        self.now = 1000.0
        self.per_iteration = per_iteration

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(time_budget, '_clock', fake)
    return fake


class Points(Dataset):
    def __len__(self) -> int:
        return 10_000

    def __getitem__(self, index: int) -> dict:
        return dict(inputs=torch.ones(2) * (index % 7), targets=torch.tensor(float(index % 3)))


class Regressor(BaseModel):
    """A linear model; each training forward advances the fake clock by one iteration's time."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self.linear = nn.Linear(2, 1)
        self.clock = clock

    def forward(self, inputs, targets=None, mode='tensor'):
        outputs = self.linear(inputs).squeeze(-1)  # default_collate: batched tensors
        if mode == 'loss':
            self.clock.now += self.clock.per_iteration
            return dict(loss=((outputs - targets) ** 2).mean())
        return outputs


@HOOKS.register_module()
class RecordLearningRate(Hook):
    """The learning rate each training iteration ran with, and the validations' iterations."""
    priority = 'VERY_HIGH'

    def __init__(self) -> None:
        self.rates = []
        self.validations = []

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        self.rates.append(runner.optim_wrapper.get_lr()['lr'][0])

    def before_val(self, runner) -> None:
        self.validations.append(runner.iter)


def make_runner(tmp_path, clock, *, max_iters=100, budget=300.0, schedulers=None, hook_args=None,
                work_dir='run', load_from=None, resume=False, interval=None):
    from mmengine.evaluator import BaseMetric

    class Count(BaseMetric):
        def process(self, data_batch, data_samples) -> None:
            self.results.append(0)

        def compute_metrics(self, results) -> dict:
            return dict(count=len(results))

    hook_args = dict(measure_from=5, plan_at=25, check_every=10, round_to=10,
                     **(hook_args or {}))
    return Runner(
        model=Regressor(clock),
        work_dir=str(tmp_path / work_dir),
        train_dataloader=dict(dataset=Points(), sampler=dict(type='InfiniteSampler', shuffle=False),
                              batch_size=2, num_workers=0,
                              collate_fn=dict(type='default_collate')),
        val_dataloader=dict(dataset=torch.utils.data.Subset(Points(), range(2)),
                            sampler=dict(type='DefaultSampler', shuffle=False), batch_size=2,
                            num_workers=0, collate_fn=dict(type='default_collate')),
        val_evaluator=[Count()],
        val_cfg=dict(type='ValLoop'),
        train_cfg=dict(type='IterBasedTrainLoop', max_iters=max_iters,
                       val_interval=interval or max_iters),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=1.0)),
        param_scheduler=schedulers if schedulers is not None else [
            dict(type='LinearLR', start_factor=0.5, by_epoch=False, begin=0, end=10),
            dict(type='MultiStepLR', by_epoch=False, begin=0, end=max_iters, milestones=[80],
                 gamma=0.1)],
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=interval or max_iters,
                                           by_epoch=False),
                           logger=dict(type='LoggerHook', interval=1000)),
        custom_hooks=[dict(type='TrainingTimeBudget', seconds=budget, **hook_args),
                      dict(type='RecordLearningRate')],
        load_from=load_from, resume=resume,
        default_scope='mmdet',
        randomness=dict(seed=0))


def recorder(runner) -> RecordLearningRate:
    return next(h for h in runner.hooks if isinstance(h, RecordLearningRate))


def step_at(rates) -> int:
    """The first iteration (0-based) that ran at a tenth of the peak learning rate."""
    return next(i for i, rate in enumerate(rates) if rate < 0.5)


def test_the_schedule_stretches_to_the_budget(tmp_path, clock):
    runner = make_runner(tmp_path, clock, budget=300.0)
    runner.train()
    rates = recorder(runner).rates
    # 1 s per iteration, 300 s: 300 iterations; the step decay at 80 % as in the config
    assert runner.iter == 300 and len(rates) == 300
    assert step_at(rates) == 240
    assert rates[0] == pytest.approx(0.5) and rates[10] == pytest.approx(1.0)  # warm-up kept
    # one validation and one checkpoint, at the end (not also at the config's 100)
    assert recorder(runner).validations == [300]
    assert [f for f in os.listdir(runner.work_dir) if f.endswith('.pth')] == ['iter_300.pth']


def test_the_schedule_shrinks_to_the_budget(tmp_path, clock):
    clock.per_iteration = 2.0
    runner = make_runner(tmp_path, clock, budget=100.0)
    runner.train()
    rates = recorder(runner).rates
    assert runner.iter == 50 and step_at(rates) == 40


def test_the_first_plan_is_rounded_down_and_the_checks_fit_the_end(tmp_path, clock):
    runner = make_runner(tmp_path, clock, budget=309.0)  # 309 iterations fit; round_to 10
    watch = MaxItersAfterIter()
    runner.register_hook(watch)
    runner.train()
    assert watch.seen[25] == 300  # the plan at iteration 25
    # at the check at 35 the plan ends 9 s early, more than 3 % of the 274 s left: lengthened
    assert watch.seen[34] == 300 and watch.seen[35] == 309 and runner.iter == 309


def test_at_most_max_factor_times_the_config(tmp_path, clock):
    runner = make_runner(tmp_path, clock, budget=10_000.0, hook_args=dict(max_factor=2.0))
    runner.train()
    assert runner.iter == 200 and step_at(recorder(runner).rates) == 160


class SlowDownAfter(Hook):
    def __init__(self, clock, iteration, per_iteration) -> None:
        self.clock, self.iteration, self.per_iteration = clock, iteration, per_iteration

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if runner.iter + 1 == self.iteration:
            self.clock.per_iteration = self.per_iteration


def test_a_run_that_slows_down_is_shortened_and_one_that_speeds_up_lengthened(tmp_path, clock):
    runner = make_runner(tmp_path, clock, budget=300.0)
    runner.register_hook(SlowDownAfter(clock, 100, 3.0))
    runner.train()
    # planned 300 at 1 s; 3 s each from iteration 101 on; at the check at 105, 200 s gone and
    # 1.8 s per iteration since the last check: 105 + 55 = 160; at 115 (3 s): 115 + 25 = 140 ...
    assert runner.iter < 300
    assert clock.now - 1000.0 <= 300.0 + 3.0 * 10  # late by at most one check's iterations
    # the milestone moved with the first shortened plan (80 % of it), not left at 240
    assert step_at(recorder(runner).rates) < runner.iter
    clock.per_iteration = 1.0
    runner2 = make_runner(tmp_path, clock, budget=300.0, work_dir='faster')
    start = clock.now
    runner2.register_hook(SlowDownAfter(clock, 100, 0.5))
    runner2.train()
    # 0.5 s per iteration from 101 on: 100 + 200 / 0.5 = 500 would fit; lengthened up to
    # max_factor (4) times the config's 100
    assert runner2.iter == 400 and clock.now - start < 300.0


class Jitter(Hook):
    """From the plan on, iterations alternately ``spread`` slower and faster, ``every``
    iterations each."""

    def __init__(self, clock, spread, every, start=25) -> None:
        self.clock, self.spread, self.every, self.start = clock, spread, every, start

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        done = runner.iter + 1
        if done >= self.start:
            slow = (done - self.start) // self.every % 2 == 0
            self.clock.per_iteration = 1.0 + (self.spread if slow else -self.spread)


def plans(watch: 'MaxItersAfterIter') -> list:
    """The successive lengths of a run, from its first plan on."""
    lengths = [watch.seen[i] for i in sorted(watch.seen)]
    return [n for i, n in enumerate(lengths) if i == 0 or n != lengths[i - 1]][1:]


def test_speed_that_only_jitters_keeps_the_plan_and_ends_on_time(tmp_path, clock):
    runner = make_runner(tmp_path, clock, budget=300.0)
    runner.register_hook(Jitter(clock, 0.05, 50))  # +-5 % for 50 iterations each
    watch = MaxItersAfterIter()
    runner.register_hook(watch)
    start = clock.now
    runner.train()
    # the speed since the plan moves by a few %: a projection within 3 % of the time left keeps
    # the plan, so it changes now and then, and the run ends within 1 % of the budget
    tolerant = plans(watch)
    assert tolerant[0] == 300 and runner.iter == tolerant[-1]
    assert 297.0 <= clock.now - start <= 300.0
    # without the tolerance the same run re-plans whenever the projection moves
    clock.per_iteration = 1.0
    strict = make_runner(tmp_path, clock, budget=300.0, work_dir='strict',
                         hook_args=dict(tolerance=0.0))
    strict.register_hook(Jitter(clock, 0.05, 50))
    strict_watch = MaxItersAfterIter()
    strict.register_hook(strict_watch)
    strict.train()
    assert len(plans(strict_watch)) > 2 * len(tolerant)


@pytest.mark.parametrize('slower', [1.03, 1.06, 1.1])
def test_a_run_that_slows_down_a_little_still_ends_on_time(tmp_path, clock, slower):
    """The band is measured against the time left: a slow-down within 3 % of the budget
    shortens the plan (with a band of the whole budget it ended 4.5-9 s late)."""
    runner = make_runner(tmp_path, clock, budget=300.0)
    runner.register_hook(SlowDownAfter(clock, 150, slower))
    runner.train()
    assert runner.iter < 300 and -0.01 * 300 <= clock.now - 1000.0 - 300.0 <= 1.0


class Records(logging.Handler):
    """The log records of the current MMLogger, as (level, message)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = []

    def emit(self, record) -> None:
        self.seen.append((record.levelno, record.getMessage()))

    def __enter__(self) -> 'Records':
        MMLogger.get_current_instance().addHandler(self)
        return self

    def __exit__(self, *exc) -> None:
        MMLogger.get_current_instance().removeHandler(self)

    def plans(self) -> list:
        """(planned iterations, log level) of each plan the hook logged."""
        return [(int(re.search(r'-> (\d+) iterations', message).group(1)), level)
                for level, message in self.seen
                if message.startswith('TrainingTimeBudget') and ' -> ' in message]


def test_a_plan_below_the_configs_length_is_warned_once_each_time_it_falls_there(
        tmp_path, clock):
    clock.per_iteration = 2.0  # the first plan: 150 of the config's 200 iterations
    runner = make_runner(tmp_path, clock, max_iters=200, budget=300.0)
    runner.register_hook(SlowDownAfter(clock, 30, 3.0))  # shortened, still below 200
    runner.register_hook(SlowDownAfter(clock, 45, 0.01))  # lengthened step by step beyond 200
    runner.register_hook(SlowDownAfter(clock, 110, 20.0))  # shortened below 200 again
    with Records() as records:
        runner.train()
    logged = records.plans()
    lengths = [length for length, _ in logged]
    assert lengths[0] == 150 and lengths[1] < 150 and max(lengths) > 200 and lengths[-1] < 200
    # a warning where the plan falls below the config's 200 (the first plan, after the
    # lengthening), information at the other re-plans
    falls = [i for i, length in enumerate(lengths)
             if length < 200 and (i == 0 or lengths[i - 1] >= 200)]
    assert len(falls) == 2
    assert [level for _, level in logged] == [
        logging.WARNING if i in falls else logging.INFO for i in range(len(logged))]
    # from a plan of exactly the config's length, too
    clock.per_iteration = 1.0
    exact = make_runner(tmp_path, clock, max_iters=200, budget=200.0, work_dir='exact')
    exact.register_hook(SlowDownAfter(clock, 50, 2.0))
    with Records() as records:
        exact.train()
    levels = records.plans()
    assert levels[:2] == [(200, logging.INFO), (levels[1][0], logging.WARNING)]
    assert levels[1][0] < 200


def test_a_slow_spell_costs_its_time_and_no_more(tmp_path, clock):
    runner = make_runner(tmp_path, clock, budget=300.0)
    runner.register_hook(SlowDownAfter(clock, 50, 2.0))
    runner.register_hook(SlowDownAfter(clock, 90, 1.0))
    runner.train()
    # 40 iterations at 2 s cost 40 iterations: the plan shrinks during the spell and grows
    # again after it, ending on time with about 260
    assert abs(runner.iter - 260) <= 10
    assert abs(clock.now - 1000.0 - 300.0) <= 0.03 * 300.0 + 10


def test_a_milestone_the_shorter_plan_puts_in_the_past_comes_at_once(tmp_path, clock):
    runner = make_runner(tmp_path, clock, budget=300.0)
    runner.register_hook(SlowDownAfter(clock, 230, 10.0))
    runner.train()
    rates = recorder(runner).rates
    # planned 300 (step at 240); 10 s each from 231 on: at the check at 235, 280 s gone and
    # 1.21 s per iteration since the plan: the plan shrinks to 251, whose 80 % (201) is
    # past: the step comes after iteration 235; at 245 the time is up
    assert runner.iter == 245
    assert step_at(rates) == 235


def test_a_passed_milestone_stays_when_the_plan_shrinks(tmp_path, clock):
    runner = make_runner(tmp_path, clock, budget=300.0)
    runner.register_hook(SlowDownAfter(clock, 250, 2.0))
    runner.train()
    rates = recorder(runner).rates
    # the step came at 240 as planned; the plan shrinks at 255 (to 281): the decay is not
    # applied a second time
    assert 255 < runner.iter < 300 and step_at(rates) == 240
    assert min(rates) == pytest.approx(0.1)


def test_a_cosine_schedule_is_stretched_whole(tmp_path, clock):
    runner = make_runner(tmp_path, clock, budget=200.0, schedulers=[
        dict(type='LinearLR', start_factor=0.5, by_epoch=False, begin=0, end=10),
        dict(type='CosineAnnealingLR', by_epoch=False, begin=10, end=100, eta_min=0.0)])
    runner.train()
    rates = recorder(runner).rates
    assert runner.iter == 200
    # half way between 10 and 200 (the plan at 25 continues the curve from its value there)
    assert rates[105] == pytest.approx(0.5, abs=0.03)
    assert all(a >= b for a, b in zip(rates[10:], rates[11:])) and rates[-1] < 0.01


@pytest.mark.parametrize('end', [None, 10 ** 9])
def test_milestones_are_stretched_and_an_end_beyond_the_training_kept(tmp_path, clock, end):
    scheduler_cfg = dict(type='MultiStepLR', by_epoch=False, milestones=[50, 80], gamma=0.5)
    if end is not None:
        scheduler_cfg['end'] = end
    runner = make_runner(tmp_path, clock, budget=200.0, schedulers=[scheduler_cfg])
    runner.train()
    rates = recorder(runner).rates
    assert runner.iter == 200
    assert rates[99] == 1.0 and rates[100] == 0.5 and rates[159] == 0.5 and rates[160] == 0.25
    # mmengine gives a scheduler without an end the training's (stretched with it); an end
    # beyond the training stays
    assert runner.param_schedulers[0].end == (200 if end is None else end)


def test_milestones_count_from_the_schedulers_begin(tmp_path, clock):
    """mmengine counts a multi-step scheduler's milestones from its begin: milestone 60 of a
    scheduler that begins at 20 is iteration 80, stretched to 160 (it came at 140)."""
    runner = make_runner(tmp_path, clock, budget=200.0, schedulers=[
        dict(type='MultiStepLR', by_epoch=False, begin=20, end=100, milestones=[60], gamma=0.1)])
    runner.train()
    assert runner.iter == 200 and step_at(recorder(runner).rates) == 160
    # shrunk below the begin: the milestone comes at the begin, not never
    clock.per_iteration = 1.0
    runner = make_runner(tmp_path, clock, budget=80.0, work_dir='shrunk', schedulers=[
        dict(type='MultiStepLR', by_epoch=False, begin=40, end=100, milestones=[5], gamma=0.1)])
    runner.train()
    assert runner.iter == 80 and step_at(recorder(runner).rates) == 40


def test_periodic_intervals_stay_periodic_when_a_plan_equals_them(tmp_path, clock):
    """Validation and checkpoints every 50 of 100 iterations; the first plan is 50, a later one
    longer: the interval is the config's period, not the end of the training (the validation
    and checkpoint at 50 were lost when the second plan moved them to its end)."""
    clock.per_iteration = 2.0
    runner = make_runner(tmp_path, clock, budget=100.0, interval=50)
    runner.register_hook(SlowDownAfter(clock, 30, 0.5))
    runner.train()
    assert runner.iter > 100 and runner.iter % 50
    assert recorder(runner).validations == [50, 100, runner.iter]
    checkpoints = sorted(f for f in os.listdir(runner.work_dir) if f.endswith('.pth'))
    assert checkpoints == sorted(['iter_50.pth', 'iter_100.pth', f'iter_{runner.iter}.pth'])


def test_schedules_it_cannot_stretch_and_other_loops_are_refused(tmp_path, clock):
    runner = make_runner(tmp_path, clock, schedulers=[
        dict(type='ExponentialLR', gamma=0.99, by_epoch=False, begin=0, end=100)])
    with pytest.raises(TypeError, match='cannot stretch a ExponentialLR'):
        runner.train()
    # one that ends before the training's end is left alone
    runner = make_runner(tmp_path, clock, work_dir='early', budget=200.0, schedulers=[
        dict(type='ExponentialLR', gamma=0.9, by_epoch=False, begin=0, end=50)])
    runner.train()
    assert runner.iter == 200


@pytest.mark.parametrize('kwargs, message', [
    (dict(seconds=0), 'seconds must be a positive number'),
    (dict(seconds=float('nan')), 'seconds must be a positive number'),
    (dict(seconds='10'), 'seconds must be a positive number'),
    (dict(seconds=10, plan_at=5, measure_from=5), 'must come after'),
    (dict(seconds=10, check_every=0), 'check_every must be a whole number >= 1'),
    (dict(seconds=10, round_to=2.5), 'round_to must be a whole number >= 1'),
    (dict(seconds=10, max_factor=0), 'max_factor must be positive'),
    (dict(seconds=10, tolerance=1.0), r'tolerance must be in \[0, 1\)'),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TrainingTimeBudget(**kwargs)


@pytest.mark.parametrize('text, seconds', [('900', 900), ('900s', 900), ('15m', 900),
                                           ('1.5h', 5400), (' 2 m ', 120)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize('text', ['', 'abc', '-5m', '0', '0s', '15 min', '1e3'])
def test_parse_duration_refuses(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_a_resumed_run_keeps_the_plan_and_the_time_spent(tmp_path, clock):
    with safe_checkpoint_loading():
        whole = make_runner(tmp_path, clock, budget=300.0, work_dir='whole')
        whole.train()
        full_rates = recorder(whole).rates

        clock.now = 1000.0
        first = make_runner(tmp_path, clock, budget=300.0, work_dir='cut')
        first.register_hook(StopAfter(150))
        first.train()
        assert osp.exists(osp.join(first.work_dir, 'iter_150.pth'))

        resumed = make_runner(tmp_path, clock, budget=300.0, work_dir='cut',
                              load_from=osp.join(first.work_dir, 'iter_150.pth'), resume=True)
        resumed.train()
    # the resumed run trains to the plan (not the config's 100) with the same schedule
    assert resumed.iter == 300
    assert recorder(first).rates[:150] + recorder(resumed).rates == full_rates


def test_a_run_resumed_without_a_budget_keeps_the_plan(tmp_path, clock):
    """tools/train.py --resume without --time-budget adds TrainingTimeBudget(seconds=None): the
    resumed run trained nothing more (it stopped at the config's 100 of a 300-iteration plan,
    before the stretched step decay at 240)."""
    with safe_checkpoint_loading():
        whole = make_runner(tmp_path, clock, budget=300.0, work_dir='whole')
        whole.train()
        clock.now = 1000.0
        first = make_runner(tmp_path, clock, budget=300.0, work_dir='cut')
        first.register_hook(StopAfter(150))
        first.train()
        checkpoint = osp.join(first.work_dir, 'iter_150.pth')
        resumed = make_runner(tmp_path, clock, budget=None, work_dir='cut', load_from=checkpoint,
                              resume=True)
        resumed.train()
        assert resumed.iter == 300
        assert recorder(first).rates[:150] + recorder(resumed).rates == recorder(whole).rates
        control = make_runner(tmp_path, clock, budget=None, work_dir='control',
                              load_from=checkpoint, resume=True)
        control.hooks[:] = [h for h in control.hooks if not isinstance(h, TrainingTimeBudget)]
        control.train()
        assert control.iter == 150 and recorder(control).rates == []  # nothing trained
    # a run that was never budgeted is left alone
    clock.now = 1000.0
    plain = make_runner(tmp_path, clock, budget=None, work_dir='plain')
    plain.train()
    assert plain.iter == 100 and step_at(recorder(plain).rates) == 80


class StopAfter(Hook):
    """Save a checkpoint and stop after ``iteration`` iterations (a run that is cut short)."""
    priority = 'LOWEST'

    def __init__(self, iteration: int) -> None:
        self.iteration = iteration

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if runner.iter + 1 == self.iteration:
            runner.save_checkpoint(runner.work_dir, f'iter_{self.iteration}.pth',
                                   by_epoch=False, save_optimizer=True,
                                   save_param_scheduler=True)
            runner.train_loop.stop_training = True


class MaxItersAfterIter(Hook):
    priority = 'LOWEST'

    def __init__(self) -> None:
        self.seen = {}

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self.seen[runner.iter + 1] = runner.train_loop.max_iters


def test_the_first_plan_is_made_at_plan_at_and_counts_of_one_are_accepted(tmp_path, clock):
    TrainingTimeBudget(100, measure_from=1, plan_at=2, check_every=1, round_to=1)
    runner = make_runner(tmp_path, clock, budget=200.0)
    watch = MaxItersAfterIter()
    runner.register_hook(watch)
    runner.train()
    assert watch.seen[24] == 100 and watch.seen[25] == 200


def test_a_plan_rounded_below_the_current_iteration_ends_there_with_a_checkpoint(
        tmp_path, clock):
    """At iteration 25 (1 s each) 3 s are left: 28 iterations fit, rounded down to 20, behind
    the run: it ends at 25, saved and validated (not at a length it has passed)."""
    runner = make_runner(tmp_path, clock, budget=28.0)
    runner.train()
    assert runner.iter == 25 and recorder(runner).validations == [25]
    assert osp.isfile(osp.join(runner.work_dir, 'iter_25.pth'))


def test_a_linear_decay_to_the_end_still_reaches_its_end_factor(tmp_path, clock):
    runner = make_runner(tmp_path, clock, budget=200.0, schedulers=[
        dict(type='LinearLR', start_factor=1.0, end_factor=0.0, by_epoch=False, begin=0,
             end=100)])
    runner.train()
    rates = recorder(runner).rates
    assert len(rates) == 200 and abs(rates[-1]) < 1e-9


def test_a_milestone_at_the_planning_iteration_is_stretched(tmp_path, clock):
    runner = make_runner(tmp_path, clock, budget=200.0, schedulers=[
        dict(type='MultiStepLR', by_epoch=False, begin=0, end=100, milestones=[25], gamma=0.1)])
    runner.train()
    rates = recorder(runner).rates
    assert rates[30] == 1.0 and abs(rates[60] - 0.1) < 1e-9  # the decay at 50, not at 25
