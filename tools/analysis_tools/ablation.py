"""What consistent training buys: the CTVIS ablation on the toy and the association sets (issue 12).

Rows (``ROWS``): CTVIS with memory-bank negatives and noise 0.05, without noise, the released
recipe (``prev_queries`` negatives, no noise), MinVIS (single-frame training, frame-to-frame
Hungarian tracker, projects/minvis) and the no-tracking control (the first row's checkpoint with
``RandomIdentityTracker``). Every trained row x dataset x seed is trained by tools/train.py and
tested by tools/test.py (``--out``), with the quickstart recipe shortened by ``--cfg-options``;
each results file is scored by tools/analysis_tools/eval_ytvis.py ``--tracking-metrics``.

Two jobs run at a time (``--jobs``), each on one thread (``OMP_NUM_THREADS=1``) and on the CPU
(GPUs hidden), so the two cores are both used and every run computes the same numbers on any
machine. The user+sys CPU seconds of every step are measured (``os.wait4``), so the time on two
quiet cores can be estimated on a shared machine as (total CPU seconds) / 2.

Resumable: every step writes ``<step>.done.json`` (its times) on success and is skipped when that
file exists, so an interrupted ablation continues where it stopped; a finished run has
``run.json``. The settings are recorded in ``OUT/settings.json``; continuing with other settings is
refused. Outputs::

    OUT/data/{toy,association}/            the generated datasets
    OUT/<dataset>/<row>/seed<k>/           train/ (checkpoint, logs), results.json, metrics.json,
                                           <step>.log, <step>.done.json, run.json
    OUT/ablation.json                      settings, every run's numbers and times, the summary
    OUT/ablation.md, OUT/ablation.png      the table (mean +- std over seeds) and the plot
    OUT/invocations.json                   wall time and steps run of every invocation (resumed
                                           ablations report the sum)

With ``--docs DOCS.md`` the table and the timing replace the marked blocks of that file
(``<!-- ablation:table -->`` ... ``<!-- /ablation:table -->``, the same for ``timing``) and the
plot is copied next to it (same name, ``.png``). Usage: tools/analysis_tools/run_ablation.sh.
"""
import argparse
import json
import os
import os.path as osp
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Callable, Dict, List, Optional, Sequence, Tuple

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CTVIS_CONFIG = 'configs/ctvis/ctvis_quickstart.py'
MINVIS_CONFIG = 'projects/minvis/configs/minvis_quickstart.py'
METRICS = ('AP', 'AP50', 'HOTA', 'AssA', 'IDF1', 'IDSW')  # the table's columns
COUNT_METRICS = ('IDSW',)  # counts, not percent
# docs/ablation.md was measured with the quickstart model of 2026-12-02: stride-4 masks with
# mmdet's output convolution on that level, no position prior, 10 queries all decoded in every
# training frame, and no motion cue in the CTVIS tracker. The ablation keeps that model whatever
# the quickstart's, so that its figures reproduce.
ABLATION_MODEL = ('model.backbone.stem_out=False', 'model.track_head.in_channels=[32,64,128,256]',
                  'model.track_head.pixel_decoder.strides=[4,8,16,32]',
                  'model.track_head.pixel_decoder.finest_output_conv=dense',
                  'model.track_head.position_prior=False', 'model.track_head.num_queries=10',
                  '+model.track_head.query_dropout=0.0')
ABLATION_CTVIS_TRACKER = ('model.tracker.motion_weight=0.0',)  # MinVIS's tracker has no such cue


@dataclass(frozen=True)
class Row:
    """One row of the ablation: how it is trained (or whose checkpoint it tests) and tested."""
    label: str
    config: str
    train_options: Tuple[str, ...] = ()
    test_options: Tuple[str, ...] = ()
    checkpoint_of: Optional[str] = None  # test another row's checkpoint instead of training
    short: str = ''  # the plot's tick label


def _contrastive(negatives: str, noise_prob: float) -> Tuple[str, ...]:
    # Both keys always set: the rows must not follow the base config's default
    return (f'model.contrastive_loss.negatives={negatives}',
            f'model.contrastive_loss.noise_prob={noise_prob}')


ROWS: Dict[str, Row] = {
    'ctvis_memory_noise': Row('CTVIS: memory negatives, noise 0.05', CTVIS_CONFIG,
                              _contrastive('memory', 0.05), short='memory\n+ noise'),
    'ctvis_memory': Row('CTVIS: memory negatives, no noise', CTVIS_CONFIG,
                        _contrastive('memory', 0.0), short='memory'),
    'ctvis_prev_queries': Row('CTVIS: prev_queries, no noise (released)', CTVIS_CONFIG,
                              _contrastive('prev_queries', 0.0),
                              short='prev_queries\n(released)'),
    'minvis': Row('MinVIS', MINVIS_CONFIG, short='MinVIS'),
    'no_tracking': Row('no tracking (random identities)', CTVIS_CONFIG,
                       test_options=('model.tracker.type=RandomIdentityTracker',),
                       checkpoint_of='ctvis_memory_noise', short='no tracking\n(control)'),
}
DATASETS = ('toy', 'association')


@dataclass
class Settings:
    """Everything that determines the numbers (recorded; resuming needs the same)."""
    iters: int = 900
    clip_frames: int = 5  # frames per training clip (MinVIS: as many single frames)
    clips_per_batch: int = 2
    lr_step: int = 720  # the learning rate drops 10-fold here
    train_videos: int = 48
    val_videos: int = 16
    video_frames: int = 12
    size: Tuple[int, int] = (48, 64)
    data_seed: int = 0
    seeds: Tuple[int, ...] = (0, 1, 2)
    rows: Tuple[str, ...] = tuple(ROWS)
    datasets: Tuple[str, ...] = DATASETS


QUICK = dict(iters=2, lr_step=1, train_videos=2, val_videos=1, video_frames=8, size=(32, 48),
             seeds=(0,), rows=('ctvis_memory_noise', 'no_tracking'))


# ----------------------------------------------------------------------------- aggregation
def summarize(values: Sequence[float]) -> Dict[str, Optional[float]]:
    """Mean and sample standard deviation (n - 1) over seeds; std is None for fewer than 2."""
    n = len(values)
    if n == 0:
        return dict(mean=None, std=None, n=0)
    mean = sum(values) / n
    std = (sum((v - mean)**2 for v in values) / (n - 1))**0.5 if n > 1 else None
    return dict(mean=mean, std=std, n=n)


def format_cell(summary: Dict[str, Optional[float]], count: bool = False) -> str:
    """``mean ± std`` (one decimal; counts: mean with one decimal, std too), ``mean`` for one
    seed, ``n/a`` for none."""
    if summary['mean'] is None:
        return 'n/a'
    text = f'{summary["mean"]:.1f}'
    return text if summary['std'] is None else f'{text} ± {summary["std"]:.1f}'


def aggregate(runs: Sequence[dict]) -> Dict[str, Dict[str, Dict[str, dict]]]:
    """Per dataset, row and metric: :func:`summarize` over the runs' seeds."""
    grouped: Dict[str, Dict[str, Dict[str, List[float]]]] = {}
    for run in runs:
        by_metric = grouped.setdefault(run['dataset'], {}).setdefault(run['row'], {})
        for metric in METRICS:
            by_metric.setdefault(metric, []).append(float(run['metrics'][metric]))
    return {dataset: {row: {metric: summarize(values) for metric, values in metrics.items()}
                      for row, metrics in rows.items()}
            for dataset, rows in grouped.items()}


def render_table(summary: dict, rows: Sequence[str], datasets: Sequence[str]) -> str:
    """Markdown: one table per dataset, a line per row, the columns of ``METRICS``."""
    lines = []
    for dataset in datasets:
        lines += [f'**{dataset}**', '', '| row | ' + ' | '.join(METRICS) + ' |',
                  '|---|' + '---:|' * len(METRICS)]
        for row in rows:
            cells = summary.get(dataset, {}).get(row)
            values = [format_cell(cells[m], m in COUNT_METRICS) if cells else 'n/a'
                      for m in METRICS]
            lines.append(f'| {ROWS[row].label} | ' + ' | '.join(values) + ' |')
        lines.append('')
    return '\n'.join(lines).rstrip() + '\n'


def render_plot(summary: dict, rows: Sequence[str], datasets: Sequence[str], path: str,
                runs: Sequence[dict] = ()) -> None:
    """AP and HOTA per row (bars: mean, error bars: std over seeds, dots: the ``runs``' seeds),
    one bar colour per dataset."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    width = 0.8 / max(len(datasets), 1)
    for ax, metric in zip(axes, ('AP', 'HOTA')):
        for d, dataset in enumerate(datasets):
            cells = [summary.get(dataset, {}).get(row, {}).get(metric) for row in rows]
            means = [c['mean'] if c and c['mean'] is not None else 0.0 for c in cells]
            stds = [c['std'] if c and c['std'] is not None else 0.0 for c in cells]
            positions = [i + (d - (len(datasets) - 1) / 2) * width for i in range(len(rows))]
            ax.bar(positions, means, width, yerr=stds, capsize=3, label=dataset)
            for position, row in zip(positions, rows):
                seeds = [r['metrics'][metric] for r in runs
                         if r['dataset'] == dataset and r['row'] == row]
                ax.plot([position] * len(seeds), seeds, 'k.', markersize=4)
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels([ROWS[row].short or ROWS[row].label for row in rows], fontsize=8)
        ax.set_ylabel(f'{metric} (%)')
        ax.set_title(f'{metric}: mean ± std over seeds (dots: seeds)')
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def replace_block(text: str, name: str, content: str, path: str) -> str:
    """Replace what lies between ``<!-- ablation:NAME -->`` and ``<!-- /ablation:NAME -->``."""
    start, end = f'<!-- ablation:{name} -->', f'<!-- /ablation:{name} -->'
    if text.count(start) != 1 or text.count(end) != 1 or text.index(start) > text.index(end):
        raise ValueError(f'{path}: needs exactly one {start} ... {end} block')
    head, rest = text.split(start)
    return head + start + '\n' + content + end + rest.split(end, 1)[1]


# ----------------------------------------------------------------------------- running
@dataclass
class Step:
    """One command of a run; ``done`` records its times once it succeeded."""
    name: str
    command: List[str]
    done: str = field(init=False, default='')


def timed_call(command: List[str], log_path: str, env: Dict[str, str]) -> Tuple[int, float, float]:
    """Run ``command`` with output to ``log_path``: (exit code, wall s, user+sys CPU s of it and
    its children, measured by ``os.wait4`` for that process alone)."""
    start = time.perf_counter()
    with open(log_path, 'w') as log:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log,
                                   stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return process.returncode, time.perf_counter() - start, usage.ru_utime + usage.ru_stime


def write_json(path: str, content: object) -> None:
    """Write atomically: an interrupted write never leaves a half file that looks finished."""
    tmp = f'{path}.tmp{os.getpid()}.{threading.get_ident()}'
    with open(tmp, 'w') as f:
        json.dump(content, f, indent=2)
    os.replace(tmp, path)


def read_json(path: str) -> Optional[object]:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


class Ablation:
    """Builds, runs (resumably) and summarizes the runs of one settings record."""

    def __init__(self, settings: Settings, out_dir: str, jobs: int = 2, retries: int = 1,
                 log: Callable[[str], None] = partial(print, flush=True)) -> None:
        unknown = [r for r in settings.rows if r not in ROWS]
        unknown += [d for d in settings.datasets if d not in DATASETS]
        if unknown:
            raise ValueError(f'unknown rows or datasets {unknown}; rows: {", ".join(ROWS)}; '
                             f'datasets: {", ".join(DATASETS)}')
        for row in settings.rows:
            source = ROWS[row].checkpoint_of
            if source and source not in settings.rows:
                raise ValueError(f'row {row} tests the checkpoints of {source}: select it too')
        if not settings.seeds:
            raise ValueError('no seeds selected')
        self.settings, self.out_dir, self.jobs, self.retries = settings, out_dir, jobs, retries
        self.log = log
        self._lock = threading.Lock()
        self.steps_run = 0  # steps this invocation ran (not skipped as done)
        # CPU runs, deterministic (tools/train.py refuses deterministic training on CUDA)
        self.env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1',
                        CUDA_VISIBLE_DEVICES='',
                        PYTHONPATH=os.pathsep.join(filter(None, [REPO,
                                                                 os.environ.get('PYTHONPATH')])))

    # -- paths and data
    def run_dir(self, dataset: str, row: str, seed: int) -> str:
        return osp.join(self.out_dir, dataset, row, f'seed{seed}')

    def data_root(self, dataset: str) -> str:
        return osp.join(self.out_dir, 'data', dataset)

    def check_settings(self) -> None:
        """Record the settings, or refuse to continue a directory made with other ones."""
        os.makedirs(self.out_dir, exist_ok=True)
        path = osp.join(self.out_dir, 'settings.json')
        current = json.loads(json.dumps(asdict(self.settings)))
        recorded = read_json(path)
        keys = [k for k in current if k not in ('seeds', 'rows', 'datasets')]
        if recorded is not None and any(recorded.get(k) != current[k] for k in keys):
            changed = [k for k in keys if recorded.get(k) != current[k]]
            raise ValueError(f'{path}: this directory holds an ablation with other settings '
                             f'({", ".join(changed)} differ); use another --out-dir')
        write_json(path, current)

    def make_data(self) -> Dict[str, float]:
        """Generate the selected datasets (skipped when done); CPU seconds per dataset."""
        sys.path.insert(0, REPO)
        from ctvis.datasets.synthetic.association import make_association_vis
        from ctvis.datasets.synthetic.toy import make_toy_vis
        makers = dict(toy=make_toy_vis, association=make_association_vis)
        s, times = self.settings, {}
        for dataset in s.datasets:
            done = osp.join(self.data_root(dataset), 'done.json')
            record = read_json(done)
            if record is None:
                start = time.process_time()
                makers[dataset](self.data_root(dataset), s.train_videos, s.video_frames,
                                seed=s.data_seed, size=tuple(s.size),
                                num_val_videos=s.val_videos)
                record = dict(cpu_s=time.process_time() - start)
                write_json(done, record)
            times[dataset] = record['cpu_s']
        return times

    # -- commands
    def _common_options(self, dataset: str) -> List[str]:
        options = [f'data_root={self.data_root(dataset)}/', *ABLATION_MODEL]
        for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
            options += [f'{loader}.num_workers=0', f'{loader}.persistent_workers=False']
        return options

    def steps(self, dataset: str, row_name: str, seed: int) -> List[Step]:
        """The commands of one run, in order."""
        s, row = self.settings, ROWS[row_name]
        run_dir = self.run_dir(dataset, row_name, seed)
        python = sys.executable
        checkpoint_dir = osp.join(self.run_dir(dataset, row.checkpoint_of or row_name, seed),
                                  'train')
        checkpoint = osp.join(checkpoint_dir, f'iter_{s.iters}.pth')
        steps = []
        if row.checkpoint_of is None:
            frames = s.clip_frames * s.clips_per_batch
            shape = ([f'train_dataloader.batch_size={frames}'] if row.config == MINVIS_CONFIG
                     else [f'num_frames={s.clip_frames}',
                           f'train_dataloader.batch_size={s.clips_per_batch}'])
            options = self._common_options(dataset) + shape + [
                f'max_iters={s.iters}', f'param_scheduler.1.milestones=[{s.lr_step}]',
                f'randomness.seed={seed}', '+randomness.deterministic=True',
                f'+train_cfg.val_begin={s.iters + 1}', 'default_hooks.logger.interval=100',
                *row.train_options]
            steps.append(Step('train', [python, 'tools/train.py', row.config, '--work-dir',
                                        checkpoint_dir, '--cfg-options', *options]))
        results = osp.join(run_dir, 'results.json')
        options = self._common_options(dataset) + list(row.train_options + row.test_options)
        if row.config == CTVIS_CONFIG:
            options += ABLATION_CTVIS_TRACKER
        steps.append(Step('test', [python, 'tools/test.py', row.config, checkpoint, '--work-dir',
                                   osp.join(run_dir, 'test'), '--out', results,
                                   '--cfg-options', *options]))
        steps.append(Step('eval', [python, 'tools/analysis_tools/eval_ytvis.py',
                                   osp.join(self.data_root(dataset), 'valid.json'), results,
                                   '--tracking-metrics', '--json',
                                   osp.join(run_dir, 'metrics.json')]))
        for step in steps:
            step.done = osp.join(run_dir, f'{step.name}.done.json')
        return steps

    def execute(self, dataset: str, row: str, seed: int) -> dict:
        """Run (or resume) one run; its record (metrics, times), also written to run.json."""
        run_dir = self.run_dir(dataset, row, seed)
        os.makedirs(run_dir, exist_ok=True)
        record = read_json(osp.join(run_dir, 'run.json'))
        if record is not None:
            self.log(f'[ablation] {dataset}/{row}/seed{seed}: done before, skipped')
            return record
        times = {}
        for step in self.steps(dataset, row, seed):
            done = read_json(step.done)
            for attempt in range(self.retries + 1):
                if done is not None:
                    break
                code, wall, cpu = timed_call(step.command,
                                             osp.join(run_dir, f'{step.name}.log'), self.env)
                if code == 0:
                    with self._lock:
                        self.steps_run += 1
                    done = dict(wall_s=wall, cpu_s=cpu, command=step.command)
                    write_json(step.done, done)
                    self.log(f'[ablation] {dataset}/{row}/seed{seed} {step.name}: '
                             f'{wall:.0f} s wall, {cpu:.0f} s CPU')
                elif attempt < self.retries:
                    self.log(f'[ablation] {dataset}/{row}/seed{seed} {step.name} failed '
                             f'(exit {code}); retrying in 20 s')
                    time.sleep(20)
            if done is None:
                raise RuntimeError(f'{dataset}/{row}/seed{seed}: {step.name} failed (exit '
                                   f'{code}); see {osp.join(run_dir, step.name + ".log")}')
            times[step.name] = dict(wall_s=done['wall_s'], cpu_s=done['cpu_s'])
        metrics = read_json(osp.join(run_dir, 'metrics.json'))
        missing = [m for m in METRICS if not isinstance(metrics, dict) or m not in metrics]
        if missing:
            raise RuntimeError(f'{run_dir}/metrics.json: no {", ".join(missing)}')
        record = dict(dataset=dataset, row=row, seed=seed,
                      metrics={m: metrics[m] for m in METRICS}, times=times,
                      wall_s=sum(t['wall_s'] for t in times.values()),
                      cpu_s=sum(t['cpu_s'] for t in times.values()))
        write_json(osp.join(run_dir, 'run.json'), record)
        return record

    def units(self) -> List[List[Tuple[str, str, int]]]:
        """Runs grouped so that a checkpoint's tests follow its training in the same job."""
        s = self.settings
        units = []
        for seed in s.seeds:
            for dataset in s.datasets:
                for row in s.rows:
                    if ROWS[row].checkpoint_of is None:
                        followers = [r for r in s.rows if ROWS[r].checkpoint_of == row]
                        units.append([(dataset, r, seed) for r in [row] + followers])
        return units

    def run(self) -> List[dict]:
        """Every selected run (2 jobs at a time by default); raises after all if any failed."""
        records, failures = [], []

        def work(unit):
            out = []
            for dataset, row, seed in unit:
                try:
                    out.append(self.execute(dataset, row, seed))
                except RuntimeError as error:  # the unit's later runs need this one
                    with self._lock:
                        failures.append(str(error))
                    break
            return out

        with ThreadPoolExecutor(max_workers=self.jobs) as pool:
            for out in pool.map(work, self.units()):
                records.extend(out)
        if failures:
            raise RuntimeError('runs failed (rerun the same command to resume):\n  ' +
                               '\n  '.join(failures))
        return records


def timing_text(records: Sequence[dict], data_cpu: Dict[str, float],
                invocations: Sequence[dict], jobs: int) -> str:
    """How long the ablation took: measured CPU, the quiet two-core estimate, and the measured
    wall time summed over the invocations (an interrupted ablation and its resumptions)."""
    cpu = sum(r['cpu_s'] for r in records) + sum(data_cpu.values())
    wall_s = sum(i['wall_s'] for i in invocations)
    train = [r['times']['train']['cpu_s'] for r in records if 'train' in r['times']]
    return (f'- runs: {len(records)} ({len(train)} trainings); user+sys CPU time of all steps: '
            f'{cpu:.0f} s ({cpu / 60:.1f} min),\n  of which training {sum(train):.0f} s '
            f'(mean {sum(train) / max(len(train), 1):.0f} s per training)\n'
            f'- estimate on 2 quiet cores (CPU time / 2): {cpu / 2 / 60:.1f} min\n'
            f'- measured wall time ({len(invocations)} invocation(s), {jobs} jobs at a time, '
            f'shared machine): {wall_s / 60:.1f} min\n')


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out-dir', default=osp.join(REPO, 'work_dirs', 'ablation'))
    parser.add_argument('--quick', action='store_true',
                        help='tiny plumbing check: 2 iterations, 1 seed, 2 rows, tiny data')
    parser.add_argument('--seeds', help='comma-separated training seeds (default 0,1,2)')
    parser.add_argument('--rows', help=f'comma-separated, from {",".join(ROWS)}')
    parser.add_argument('--datasets', help=f'comma-separated, from {",".join(DATASETS)}')
    parser.add_argument('--iters', type=int, help='training iterations (default 900)')
    parser.add_argument('--jobs', type=int, default=2, help='runs at a time (one thread each)')
    parser.add_argument('--retries', type=int, default=1, help='retries of a failed step')
    parser.add_argument('--docs', help='markdown file whose ablation blocks get the table and '
                        'the timing; the plot is copied next to it')
    return parser.parse_args(argv)


def listed(option: str, text: str, convert=str) -> tuple:
    """The comma-separated values of ``option``; SystemExit for one given twice (two runs would
    share a folder, and their one result would count twice in the mean)."""
    values = tuple(convert(value) for value in text.split(','))
    repeated = sorted({str(v) for v in values if values.count(v) > 1})
    if repeated:
        raise SystemExit(f'ablation: {option} lists {", ".join(repeated)} more than once')
    return values


def settings_from_args(args: argparse.Namespace) -> Settings:
    settings = Settings(**(QUICK if args.quick else {}))
    if args.seeds:
        settings.seeds = listed('--seeds', args.seeds, int)
    if args.rows:
        settings.rows = listed('--rows', args.rows)
    if args.datasets:
        settings.datasets = listed('--datasets', args.datasets)
    if args.iters:
        settings.iters = args.iters
        settings.lr_step = min(settings.lr_step, args.iters)
    return settings


def main(argv=None) -> int:
    args = parse_args(argv)
    start, wall_start = time.perf_counter(), time.time()
    try:
        settings = settings_from_args(args)
        ablation = Ablation(settings, osp.abspath(args.out_dir), args.jobs, args.retries)
        ablation.check_settings()
        data_cpu = ablation.make_data()
        records = ablation.run()
    except (ValueError, RuntimeError) as error:
        print(f'ablation: error: {error}', file=sys.stderr)
        return 1
    summary = aggregate(records)
    rows = [r for r in ROWS if r in settings.rows]
    table = render_table(summary, rows, settings.datasets)
    out = osp.abspath(args.out_dir)
    invocations_path = osp.join(out, 'invocations.json')
    invocations = read_json(invocations_path) or []
    invocations.append(dict(started=time.strftime('%Y-%m-%dT%H:%M:%S', time.localtime(wall_start)),
                            wall_s=time.perf_counter() - start, steps_run=ablation.steps_run))
    write_json(invocations_path, invocations)
    timing = timing_text(records, data_cpu, invocations, args.jobs)
    write_json(osp.join(out, 'ablation.json'),
               dict(settings=asdict(settings), runs=records, summary=summary,
                    data_cpu_s=data_cpu))
    with open(osp.join(out, 'ablation.md'), 'w') as f:
        f.write(table + '\n' + timing)
    render_plot(summary, rows, settings.datasets, osp.join(out, 'ablation.png'), records)
    if args.docs:
        with open(args.docs) as f:
            text = f.read()
        try:
            text = replace_block(replace_block(text, 'table', table, args.docs), 'timing',
                                 timing, args.docs)
        except ValueError as error:
            print(f'ablation: error: {error}', file=sys.stderr)
            return 1
        with open(args.docs, 'w') as f:
            f.write(text)
        shutil.copyfile(osp.join(out, 'ablation.png'), osp.splitext(args.docs)[0] + '.png')
    print(table + '\n' + timing + f'outputs: {out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
