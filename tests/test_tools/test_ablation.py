"""The ablation driver (tools/analysis_tools/ablation.py): end to end in --quick mode on tiny data,
and its aggregation (mean +- std over seeds) and resumability (a finished step is not re-run)."""
import glob
import json
import os
import os.path as osp
import sys
import time

import pytest

from conftest import REPO

sys.path.insert(0, osp.join(REPO, 'tools', 'analysis_tools'))
import ablation  # noqa: E402

DOCS = """# Ablation

<!-- ablation:table -->
old table
<!-- /ablation:table -->

text in between stays

<!-- ablation:timing -->
old timing
<!-- /ablation:timing -->
"""


def test_quick_mode_end_to_end_then_resumes_without_rerunning(tmp_path, capsys):
    """Two iterations, one seed, the first row and the no-tracking control, association set."""
    out, docs = tmp_path / 'out', tmp_path / 'docs' / 'ablation.md'
    docs.parent.mkdir()
    docs.write_text(DOCS)
    argv = ['--quick', '--datasets', 'association', '--out-dir', str(out), '--jobs', '1',
            '--docs', str(docs)]
    assert ablation.main(argv) == 0

    result = json.loads((out / 'ablation.json').read_text())
    assert [(r['dataset'], r['row'], r['seed']) for r in result['runs']] == [
        ('association', 'ctvis_memory_noise', 0), ('association', 'no_tracking', 0)]
    for run in result['runs']:
        assert list(run['metrics']) == list(ablation.METRICS)
        assert run['cpu_s'] > 0 and run['wall_s'] > 0
    assert set(result['runs'][0]['times']) == {'train', 'test', 'eval'}
    assert set(result['runs'][1]['times']) == {'test', 'eval'}  # tests the first row's model
    # the model of docs/ablation.md's figures, whatever the quickstart's: stride-4 masks, no
    # position prior, every query in every frame, no motion cue in the tracker
    from mmengine.config import Config
    trained, = glob.glob(str(out / '**' / 'train' / 'ctvis_quickstart.py'), recursive=True)
    model = Config.fromfile(trained).model
    assert model.backbone.stem_out is False and model.track_head.in_channels == [32, 64, 128, 256]
    assert model.track_head.pixel_decoder.strides == [4, 8, 16, 32]
    assert model.track_head.pixel_decoder.finest_output_conv == 'dense'
    assert model.track_head.position_prior is False
    assert (model.track_head.num_queries, model.track_head.query_dropout) == (10, 0.0)
    tested = glob.glob(str(out / '**' / 'test' / '*' / 'vis_data' / 'config.py'), recursive=True)
    assert tested and all(Config.fromfile(path).model.tracker.motion_weight == 0.0
                          for path in tested)
    summary = result['summary']['association']
    assert set(summary) == {'ctvis_memory_noise', 'no_tracking'}
    assert summary['no_tracking']['AP']['n'] == 1

    table = (out / 'ablation.md').read_text()
    header = '| row | AP | AP50 | HOTA | AssA | IDF1 | IDSW |'
    assert header in table
    assert '| CTVIS: memory negatives, noise 0.05 |' in table
    assert '| no tracking (random identities) |' in table
    assert (out / 'ablation.png').read_bytes()[:4] == b'\x89PNG'
    text = docs.read_text()
    assert header in text and 'old table' not in text and 'old timing' not in text
    assert 'text in between stays' in text and 'estimate on 2 quiet cores' in text
    assert (docs.parent / 'ablation.png').is_file()

    # Resume: every run is finished, nothing runs again
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob('*.done.json')}
    capsys.readouterr()
    start = time.perf_counter()
    assert ablation.main(argv) == 0
    assert time.perf_counter() - start < 10
    assert capsys.readouterr().out.count('done before, skipped') == 2
    assert {p: p.stat().st_mtime_ns for p in out.rglob('*.done.json')} == stamps
    invocations = json.loads((out / 'invocations.json').read_text())
    assert [i['steps_run'] for i in invocations] == [5, 0]  # train, test, eval, test, eval
    assert '(2 invocation(s)' in (out / 'ablation.md').read_text()


def test_timing_sums_the_invocations():
    records = [dict(cpu_s=100.0, times=dict(train=dict(cpu_s=80.0))), dict(cpu_s=20.0, times={})]
    text = ablation.timing_text(records, dict(toy=0.0), [dict(wall_s=60.0), dict(wall_s=30.0)], 2)
    assert 'CPU time of all steps: 120 s (2.0 min)' in text
    assert 'estimate on 2 quiet cores (CPU time / 2): 1.0 min' in text
    assert 'measured wall time (2 invocation(s), 2 jobs at a time, shared machine): 1.5 min' in text


def test_summarize_is_mean_and_sample_std():
    assert ablation.summarize([1.0, 2.0, 3.0]) == dict(mean=2.0, std=1.0, n=3)
    assert ablation.summarize([4.0, 6.0]) == dict(mean=5.0, std=pytest.approx(2**0.5), n=2)
    assert ablation.summarize([5.0]) == dict(mean=5.0, std=None, n=1)  # no spread from one seed
    assert ablation.summarize([]) == dict(mean=None, std=None, n=0)


def test_format_and_table():
    assert ablation.format_cell(dict(mean=12.345, std=0.96, n=3)) == '12.3 ± 1.0'
    assert ablation.format_cell(dict(mean=12.345, std=None, n=1)) == '12.3'
    assert ablation.format_cell(dict(mean=None, std=None, n=0)) == 'n/a'
    runs = [dict(dataset='toy', row='minvis', seed=s,
                 metrics=dict(AP=10.0 + s, AP50=20.0, HOTA=30.0, AssA=40.0, IDF1=50.0, IDSW=s))
            for s in range(3)]
    summary = ablation.aggregate(runs)
    assert summary['toy']['minvis']['AP'] == dict(mean=11.0, std=1.0, n=3)
    table = ablation.render_table(summary, ['minvis', 'ctvis_memory'], ['toy'])
    lines = table.splitlines()
    assert lines[0] == '**toy**'
    assert lines[2] == '| row | AP | AP50 | HOTA | AssA | IDF1 | IDSW |'
    assert lines[4] == '| MinVIS | 11.0 ± 1.0 | 20.0 ± 0.0 | 30.0 ± 0.0 | 40.0 ± 0.0 | ' \
        '50.0 ± 0.0 | 1.0 ± 1.0 |'
    assert lines[5].startswith('| CTVIS: memory negatives, no noise | n/a |')


def test_replace_block_needs_one_marked_block():
    assert ablation.replace_block('a<!-- ablation:x -->old<!-- /ablation:x -->b', 'x', 'new\n',
                                  'f.md') == 'a<!-- ablation:x -->\nnew\n<!-- /ablation:x -->b'
    with pytest.raises(ValueError, match='f.md: needs exactly one'):
        ablation.replace_block('no markers', 'x', 'new', 'f.md')


def _settings(**kwargs) -> ablation.Settings:
    return ablation.Settings(**dict(ablation.QUICK, **kwargs))


def test_finished_steps_are_not_rerun_and_failures_name_the_log(tmp_path, monkeypatch):
    runner = ablation.Ablation(_settings(datasets=('toy',)), str(tmp_path), retries=1,
                               log=lambda message: None)
    calls = []

    def fake_call(command, log_path, env):
        calls.append(osp.basename(log_path))
        # one thread, and the CPU also where there is a GPU (deterministic trainings)
        assert (env['OMP_NUM_THREADS'], env['CUDA_VISIBLE_DEVICES']) == ('1', '')
        if 'eval_ytvis.py' in command[1]:
            metrics = {m: 1.0 for m in ablation.METRICS}
            ablation.write_json(command[command.index('--json') + 1], metrics)
        return 0, 1.0, 2.0

    monkeypatch.setattr(ablation, 'timed_call', fake_call)
    monkeypatch.setattr(ablation.time, 'sleep', lambda seconds: None)
    run_dir = runner.run_dir('toy', 'ctvis_memory_noise', 0)
    os.makedirs(run_dir)
    # an interrupted run: training finished, testing not
    ablation.write_json(osp.join(run_dir, 'train.done.json'), dict(wall_s=5.0, cpu_s=9.0))
    record = runner.execute('toy', 'ctvis_memory_noise', 0)
    assert calls == ['test.log', 'eval.log']
    assert record['times']['train'] == dict(wall_s=5.0, cpu_s=9.0)
    assert record['cpu_s'] == 9.0 + 2.0 + 2.0
    runner.execute('toy', 'ctvis_memory_noise', 0)  # finished: run.json, nothing runs
    assert calls == ['test.log', 'eval.log']

    calls.clear()
    monkeypatch.setattr(ablation, 'timed_call',
                        lambda command, log_path, env: calls.append(1) or (1, 1.0, 1.0))
    with pytest.raises(RuntimeError, match=r'train failed \(exit 1\); see .*train\.log'):
        runner.execute('toy', 'ctvis_memory_noise', 1)
    assert len(calls) == 2  # the first try and one retry


def test_settings_are_checked(tmp_path):
    with pytest.raises(ValueError, match='unknown rows or datasets'):
        ablation.Ablation(_settings(rows=('nope',)), str(tmp_path))
    with pytest.raises(ValueError, match='tests the checkpoints of ctvis_memory_noise'):
        ablation.Ablation(_settings(rows=('no_tracking',)), str(tmp_path))
    ablation.Ablation(_settings(), str(tmp_path)).check_settings()
    ablation.Ablation(_settings(seeds=(1, 2)), str(tmp_path)).check_settings()  # more seeds: ok
    with pytest.raises(ValueError, match='iters differ'):
        ablation.Ablation(_settings(iters=3), str(tmp_path)).check_settings()
    # a value listed twice: two runs in one folder, their one result counted twice in the mean
    for option, value in (('--seeds', '0,1,0'), ('--rows', 'minvis,minvis'),
                          ('--datasets', 'toy,toy')):
        with pytest.raises(SystemExit, match=f'{option} lists [a-z0-9]+ more than once'):
            ablation.settings_from_args(ablation.parse_args([option, value]))
    assert ablation.settings_from_args(ablation.parse_args(['--seeds', '2,0'])).seeds == (2, 0)


def test_every_row_sets_the_contrastive_options_it_compares():
    """The rows must not follow the base config's defaults (which the ablation's winner sets)."""
    runner = ablation.Ablation(ablation.Settings(), '/nonexistent')
    for row, expected in (('ctvis_memory_noise', ('memory', '0.05')),
                          ('ctvis_memory', ('memory', '0.0')),
                          ('ctvis_prev_queries', ('prev_queries', '0.0'))):
        train = runner.steps('toy', row, 0)[0].command
        assert f'model.contrastive_loss.negatives={expected[0]}' in train
        assert f'model.contrastive_loss.noise_prob={expected[1]}' in train
    control = runner.steps('toy', 'no_tracking', 0)
    assert [step.name for step in control] == ['test', 'eval']
    assert 'model.tracker.type=RandomIdentityTracker' in control[0].command
    assert control[0].command[3].endswith('ctvis_memory_noise/seed0/train/iter_900.pth')
    minvis = runner.steps('toy', 'minvis', 0)[0].command
    assert 'train_dataloader.batch_size=10' in minvis and not any(
        option.startswith('num_frames=') for option in minvis)
