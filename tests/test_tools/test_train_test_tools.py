"""tools/train.py, tools/test.py and tools/dist_train.sh end to end on a tiny config.

The config (tests/data/configs/toy_vis_tools.py) uses the toy model, dataset and hook registered
below; the tools import this module through the config's ``custom_imports`` (the tests put
tests/ on PYTHONPATH), so the tools run exactly as they would on a real config.
"""
import json
import os
import os.path as osp
import re
import shlex
import shutil
import subprocess
import uuid
import sys

import mmcv
import numpy as np
import pycocotools.mask as mask_utils
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.dataset import BaseDataset
from mmengine.dist import get_dist_info
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.runner import EpochBasedTrainLoop, IterBasedTrainLoop
from mmengine.structures import InstanceData

from ctvis.datasets.synthetic import write_square_videos
from conftest import (REPO, TESTS, free_port, load_module, logged_messages, loopback_env,
                      pythonpath_for, run_process_group)
from ctvis.engine import TrainingTimeBudget
from ctvis.evaluation import YTVISMetric
from ctvis.models import VideoPrediction
from mmdet.registry import DATASETS, HOOKS, MODELS
from mmdet.structures import DetDataSample, TrackDataSample

# pycocotools 2.0.11 + numpy 2 (see docs/troubleshooting.md); the tools filter it in their runs
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")

CONFIG = osp.join(TESTS, 'data', 'configs', 'toy_vis_tools.py')
PYTHON = sys.executable

# ----------------------------------------------------------------------------------------------
# Toy components (registered on import, in pytest and in the tool subprocesses alike)
# ----------------------------------------------------------------------------------------------


@DATASETS.register_module()
class ToolsTestVideos(BaseDataset):
    """Videos of a raw YouTube-VIS JSON; one item is a whole video.

    Item: ``inputs`` uint8 (T, 3, H, W) BGR frames, ``data_samples`` a TrackDataSample whose
    frames carry ``img_path``, ``frame_id``, ``ori_shape``, ``ori_video_length``, ``video_id`` and,
    in training, ``gt_instances.masks`` float (N, H, W).
    """
    METAINFO = dict(classes=('square', ))

    def load_data_list(self) -> list:
        with open(self.ann_file) as f:
            annotations = json.load(f)
        masks = {a['video_id']: a['segmentations'] for a in annotations['annotations']}
        return [
            dict(video_id=video['id'],
                 img_paths=[osp.join(self.data_root, name) for name in video['file_names']],
                 masks=masks.get(video['id'], [None] * video['length']))
            for video in annotations['videos']
        ]

    def prepare_data(self, idx: int) -> dict:
        info = self.get_data_info(idx)
        frames, samples = [], []
        for frame_id, (path, rle) in enumerate(zip(info['img_paths'], info['masks'])):
            image = mmcv.imread(path)
            frames.append(torch.from_numpy(image).permute(2, 0, 1))
            sample = DetDataSample(metainfo=dict(
                img_path=path, frame_id=frame_id, video_id=info['video_id'],
                ori_shape=image.shape[:2], ori_video_length=len(info['img_paths'])))
            if not self.test_mode:
                mask = mask_utils.decode(rle) if rle else np.zeros(image.shape[:2], np.uint8)
                sample.gt_instances = InstanceData(masks=torch.from_numpy(mask)[None].float())
            samples.append(sample)
        video = TrackDataSample(metainfo=dict(video_id=info['video_id']))
        video.video_data_samples = samples
        return dict(inputs=torch.stack(frames), data_samples=video)


@MODELS.register_module()
class ToolsTestPixelVIS(BaseModel):
    """Per-pixel foreground logits from a 1x1 conv; one video-level prediction per video.

    Predictions have the layout of ctvis' online model once a video is complete (what the
    YTVISMetric consumes): one TrackDataSample per video with ``video_complete=True``, one frame
    per video frame, ``pred_track_instances`` with RLE ``masks``, ``labels``, ``scores``,
    ``instances_id``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.pixel_logit = nn.Conv2d(3, 1, 1)
        with torch.no_grad():  # bright pixels (the squares) start out as foreground
            self.pixel_logit.weight.fill_(10 / 3)
            self.pixel_logit.bias.fill_(-5.)

    def forward(self, inputs, data_samples, mode: str = 'tensor'):
        frames = torch.stack(inputs).float() / 255  # (N, T, 3, H, W)
        logits = self.pixel_logit(frames.flatten(0, 1)).squeeze(1)  # (N*T, H, W)
        if mode == 'tensor':
            return logits
        if mode == 'loss':
            targets = torch.cat([
                frame.gt_instances.masks for video in data_samples for frame in video
            ])
            return dict(loss_mask=F.binary_cross_entropy_with_logits(logits, targets))
        return [self.video_prediction(video_logits, video)
                for video_logits, video in zip(logits.split(frames.shape[1]), data_samples)]

    @staticmethod
    def video_prediction(logits: torch.Tensor, video: TrackDataSample) -> TrackDataSample:
        """(T, H, W) logits of one video -> its video-complete prediction sample."""
        foreground = logits > 0
        score = torch.sigmoid(logits[foreground].mean()) if foreground.any() else torch.zeros(())
        frames = []
        for frame_id, mask in enumerate(foreground):
            rle = mask_utils.encode(np.asfortranarray(mask.numpy().astype(np.uint8)))
            frame = DetDataSample(metainfo=dict(frame_id=frame_id,
                                                ori_shape=video[frame_id].ori_shape))
            frame.pred_track_instances = InstanceData(
                masks=[rle if mask.any() else None], labels=torch.tensor([0]),
                scores=score.detach().reshape(1), instances_id=torch.tensor([0]))
            frames.append(frame)
        result = TrackDataSample(metainfo=dict(video_id=video.video_id, video_complete=True,
                                               ori_video_length=len(frames)))
        result.video_data_samples = frames
        return result


@HOOKS.register_module()
class ToolsTestRankMarker(Hook):
    """After training, each rank writes its rank, world size and a weight checksum."""

    def after_train(self, runner) -> None:
        rank, world_size = get_dist_info()
        checksum = sum(float(p.detach().double().sum()) for p in runner.model.parameters())
        with open(osp.join(runner.work_dir, f'finished_rank{rank}.json'), 'w') as f:
            json.dump(dict(rank=rank, world_size=world_size, checksum=checksum,
                           iters=runner.iter), f)


@HOOKS.register_module()
class ToolsTestRankClock(Hook):
    """Gives TrainingTimeBudget on each rank a clock of its own: ``seconds_per_iter[rank]``
    seconds per iteration, whatever the run really takes."""
    priority = 'VERY_HIGH'  # before TrainingTimeBudget reads the clock at the start

    def __init__(self, seconds_per_iter: list) -> None:
        self.seconds_per_iter = seconds_per_iter

    def before_train(self, runner) -> None:
        from ctvis.engine import time_budget
        step = self.seconds_per_iter[get_dist_info()[0]]
        time_budget._clock = lambda: runner.iter * step


# ----------------------------------------------------------------------------------------------
# Data and helpers
# ----------------------------------------------------------------------------------------------

NUM_VIDEOS, NUM_FRAMES, SIZE = 3, 3, 16


def data_options(root: str) -> list:
    return [
        f'train_dataloader.dataset.data_root={root}', f'test_dataloader.dataset.data_root={root}',
        f'test_evaluator.ann_file={osp.join(root, "annotations.json")}'
    ]


def run_tool(args: list, cwd: str, timeout: int = 120, **env) -> subprocess.CompletedProcess:
    environment = loopback_env(PYTHONPATH=pythonpath_for(__file__), **env)
    return run_process_group(args, cwd, environment, timeout)


def load_tool(name: str):
    """Import tools/<name>.py as a module (to call its functions in-process)."""
    return load_module(osp.join(REPO, 'tools', f'{name}.py'), f'ctvis_tool_{name}')


@pytest.fixture(scope='module')
def toy_data(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp('toy_videos'))
    write_square_videos(root, NUM_VIDEOS, NUM_FRAMES, SIZE)
    return root


@pytest.fixture(scope='module')
def trained(toy_data, tmp_path_factory) -> dict:
    """tools/train.py for 4 iterations (checkpoints at 2 and 4)."""
    work_dir = str(tmp_path_factory.mktemp('train'))
    result = run_tool([PYTHON, 'tools/train.py', CONFIG, '--work-dir', work_dir,
                       '--cfg-options', *data_options(toy_data)], cwd=REPO)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return dict(work_dir=work_dir, log=result.stdout + result.stderr)


# ----------------------------------------------------------------------------------------------
# train.py
# ----------------------------------------------------------------------------------------------

def test_train_writes_checkpoints_and_honours_cfg_options(trained):
    work_dir = trained['work_dir']
    assert osp.isfile(osp.join(work_dir, 'iter_2.pth'))
    assert osp.isfile(osp.join(work_dir, 'iter_4.pth'))
    assert 'Iter(train) [4/4]' in trained['log']
    with open(osp.join(work_dir, 'finished_rank0.json')) as f:
        assert json.load(f)['world_size'] == 1
    # the dumped config carries the --cfg-options values
    dumped = [n for n in os.listdir(work_dir) if n.endswith('.py')]
    assert dumped == ['toy_vis_tools.py']
    with open(osp.join(work_dir, dumped[0])) as f:
        assert 'annotations.json' in f.read()


def test_resume_from_a_given_checkpoint(trained):
    train = load_tool('train')
    args = train.parse_args([CONFIG, '--work-dir', trained['work_dir'], '--resume',
                             osp.join(trained['work_dir'], 'iter_2.pth')])
    cfg = train.configure_training(args)
    assert cfg.resume is True and cfg.load_from.endswith('iter_2.pth')
    assert cfg.work_dir == trained['work_dir']
    # a checkpoint of a run fitted to a time budget keeps its plan without --time-budget
    budgets = [h for h in cfg.custom_hooks if h['type'] == 'TrainingTimeBudget']
    assert budgets == [dict(type='TrainingTimeBudget', seconds=None)]
    cfg = train.configure_training(train.parse_args(
        [CONFIG, '--work-dir', trained['work_dir'], '--time-budget', '60', '--resume',
         osp.join(trained['work_dir'], 'iter_2.pth')]))
    assert [h for h in cfg.custom_hooks if h['type'] == 'TrainingTimeBudget'] == [
        dict(type='TrainingTimeBudget', seconds=60.0)]
    assert not any(h['type'] == 'TrainingTimeBudget' for h in train.configure_training(
        train.parse_args([CONFIG])).custom_hooks)

    missing = train.parse_args([CONFIG, '--resume', 'no/such/iter_9.pth'])
    with pytest.raises(train.ConfigError, match=r'no/such/iter_9\.pth: --resume checkpoint not'):
        train.configure_training(missing)


def test_resume_without_a_path_falls_back_to_the_newest_intact_checkpoint(trained, tmp_path):
    """A kill -9 during a save leaves a cut-short newest checkpoint (and maybe an empty or
    dangling last_checkpoint): --resume continues from the newest intact one and says why."""
    train = load_tool('train')
    work_dir = tmp_path / 'work'
    work_dir.mkdir()
    for name in ('iter_2.pth', 'iter_4.pth'):
        shutil.copy(osp.join(trained['work_dir'], name), work_dir / name)
    intact = (work_dir / 'iter_4.pth').read_bytes()
    (work_dir / 'iter_6.pth').write_bytes(intact[:len(intact) // 2])
    record = work_dir / 'last_checkpoint'
    args = train.parse_args([CONFIG, '--work-dir', str(work_dir), '--resume'])

    record.write_text(str(work_dir / 'iter_4.pth'))  # intact: used as recorded
    assert train.configure_training(args).load_from == str(work_dir / 'iter_4.pth')
    # weights only (no training state), with a larger number: never a --resume candidate
    shutil.copy(osp.join(trained['work_dir'], 'iter_4.pth'), work_dir / 'r18_coco_90000.pth')
    for content, why in ((str(work_dir / 'iter_6.pth'), 'cut short'), ('', 'is empty'),
                         (str(work_dir / 'iter_8.pth'), 'does not exist')):
        record.write_text(content)
        with logged_messages() as messages:
            cfg = train.configure_training(args)
        log = '\n'.join(messages)
        assert cfg.resume is True and cfg.load_from == str(work_dir / 'iter_4.pth'), why
        assert why in log
        assert f'skipping {work_dir / "iter_6.pth"}: not a readable checkpoint' in log

    (work_dir / 'iter_4.pth').write_bytes(b'')
    (work_dir / 'iter_2.pth').write_bytes(b'')
    with pytest.raises(train.ConfigError, match=r'no intact checkpoint in .*iter_6\.pth'):
        train.configure_training(args)
    with pytest.raises(train.ConfigError, match=r'iter_2\.pth: --resume checkpoint is not '
                       r'readable \(the file is empty\)'):
        train.configure_training(train.parse_args(
            [CONFIG, '--resume', str(work_dir / 'iter_2.pth')]))
    test = load_tool('test')
    with pytest.raises(test.ConfigError, match=r'iter_6\.pth: not a readable checkpoint \(a zip '
                       r'\(torch\) checkpoint without the directory at its end: it was cut short'):
        test.configure_testing(test.parse_args([CONFIG, str(work_dir / 'iter_6.pth')]))


def test_resume_refuses_weights_of_another_model_before_training(trained, toy_data, tmp_path):
    """mmengine resumes a checkpoint whose weights do not fit with a log line, then steps an
    optimizer state of the old shapes (the fused AdamW grew the memory until the kernel killed
    the process): refused before any iteration, naming the file and the shapes."""
    from ctvis.utils import safe_load_file
    checkpoint = safe_load_file(osp.join(trained['work_dir'], 'iter_2.pth'))
    checkpoint['state_dict']['pixel_logit.weight'] = torch.zeros(1, 4, 1, 1)
    other = str(tmp_path / 'other_model.pth')
    torch.save(checkpoint, other)
    result = run_tool([PYTHON, 'tools/train.py', CONFIG, '--work-dir', str(tmp_path / 'work'),
                       '--resume', other, '--cfg-options', *data_options(toy_data)], cwd=REPO)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and 'Iter(train)' not in output, output[-3000:]
    assert (f'{other}: the weights do not fit the model: 1 have another shape (checkpoint vs '
            'model, e.g. pixel_logit.weight: (1, 4, 1, 1) vs (1, 3, 1, 1))') in output
    assert '(nothing was trained)' in output


def test_keeping_one_checkpoint_is_warned_about(monkeypatch):
    """mmengine deletes the older checkpoint before writing the newer: with one kept, a kill
    during the save left nothing to resume from."""
    train = load_tool('train')
    for keep, warned in ((1, True), (2, False)):
        logged = []
        monkeypatch.setattr(train, '_warn', logged.append)
        train.configure_training(train.parse_args(
            [CONFIG, '--cfg-options', f'+default_hooks.checkpoint.max_keep_ckpts={keep}']))
        assert any('max_keep_ckpts=1: mmengine deletes the previous checkpoint' in m
                   for m in logged) == warned


def test_resume_refuses_a_weights_only_checkpoint(trained, toy_data, tmp_path):
    """A converted or official checkpoint holds weights only: mmengine's resume failed on it
    with KeyError: 'meta'. Refused naming the file and the way to start from its weights."""
    from ctvis.utils import safe_load_file
    checkpoint = safe_load_file(osp.join(trained['work_dir'], 'iter_2.pth'))
    weights = str(tmp_path / 'weights_only.pth')
    torch.save(dict(state_dict=checkpoint['state_dict']), weights)
    train = load_tool('train')
    cfg = train.configure_training(train.parse_args(
        [CONFIG, '--work-dir', str(tmp_path / 'work'), '--resume', weights, '--cfg-options',
         *data_options(toy_data)]))
    runner = train.build_training_runner(cfg)
    with pytest.raises(train.ConfigError, match=re.escape(
            f'{weights}: holds weights only, no training state to resume') + '.*' +
            re.escape(f'--cfg-options load_from={weights} instead of --resume')):
        runner.train()
    assert runner.iter == 0


def test_a_checkpoint_hook_typo_is_refused_before_training(toy_data, tmp_path):
    """mmengine's CheckpointHook keeps unknown keywords for its first save: the run failed there,
    after every iteration before it."""
    train = load_tool('train')
    cfg = train.configure_training(train.parse_args(
        [CONFIG, '--work-dir', str(tmp_path), '--cfg-options', *data_options(toy_data),
         '+default_hooks.checkpoint.intervall=2']))
    with pytest.raises(train.ConfigError, match=r'default_hooks.checkpoint: unknown arguments '
                       r'intervall \(did you mean interval\?\); CheckpointHook takes interval'):
        train.build_training_runner(cfg)


@pytest.mark.parametrize('option, message', [
    ('train_cfg.max_iters=-3', 'train_cfg.max_iters must be a whole number >= 1, got -3'),
    ('train_cfg.val_interval=0', 'train_cfg.val_interval must be a whole number >= 1, got 0'),
    ('train_cfg.max_iters=abc', "train_cfg.max_iters must be a whole number >= 1, got 'abc'"),
    ('+optim_wrapper.paramwise_cfg.norm_decay_mul=0.0', 'optim_wrapper.paramwise_cfg has '
     'unknown keys norm_decay_mul (did you mean norm_decay_mult?)'),
])
def test_unusable_schedules_are_refused(option, message):
    """max_iters=-3 trained nothing and exited 0; val_interval=0 divided by zero after the first
    iteration; a misspelled paramwise_cfg key left the norms' weight decay on."""
    train = load_tool('train')
    with pytest.raises(train.ConfigError, match=re.escape(message)):
        train.configure_training(train.parse_args([CONFIG, '--cfg-options', option]))


def test_time_budget_adds_one_hook_and_refuses_bad_durations():
    train = load_tool('train')
    cfg = train.configure_training(train.parse_args([CONFIG, '--time-budget', '15m']))
    budgets = [h for h in cfg.custom_hooks if h['type'] == 'TrainingTimeBudget']
    assert budgets == [dict(type='TrainingTimeBudget', seconds=900.0)]
    # one that the config has is replaced, not doubled, also under its registry-scoped name
    for name in ('TrainingTimeBudget', 'mmdet.TrainingTimeBudget'):
        cfg = train.configure_training(train.parse_args(
            [CONFIG, '--time-budget', '60', '--cfg-options',
             f"custom_hooks=[dict(type='{name}',seconds=5)]"]))
        assert [h for h in cfg.custom_hooks if 'TrainingTimeBudget' in h['type']] == [
            dict(type='TrainingTimeBudget', seconds=60.0)]
    with pytest.raises(train.ConfigError,
                       match=re.escape("--time-budget: not a duration: '15 min'")):
        train.configure_training(train.parse_args([CONFIG, '--time-budget', '15 min']))
    with pytest.raises(train.ConfigError, match='scales an iteration-based schedule'):
        train.configure_training(train.parse_args(
            [CONFIG, '--time-budget', '15m', '--cfg-options',
             "train_cfg=dict(type='EpochBasedTrainLoop',max_epochs=2)"]))


def test_time_budget_recognises_the_loop_and_its_hook_under_any_spelling():
    train = load_tool('train')
    for loop in ('IterBasedTrainLoop', 'mmengine.IterBasedTrainLoop', IterBasedTrainLoop):
        for hook in ('TrainingTimeBudget', 'mmdet.TrainingTimeBudget', TrainingTimeBudget):
            cfg = Config(dict(train_cfg=dict(type=loop, max_iters=10),
                              custom_hooks=[dict(type=hook, seconds=5), dict(type='EMAHook')]))
            train.add_time_budget(cfg, 'c.py', '60')
            assert cfg.custom_hooks == [dict(type='EMAHook'),
                                        dict(type='TrainingTimeBudget', seconds=60.0)]
    for loop in ('mmdet.IterBasedTrainLoop', 'EpochBasedTrainLoop', EpochBasedTrainLoop):
        with pytest.raises(train.ConfigError, match='scales an iteration-based schedule'):
            train.add_time_budget(Config(dict(train_cfg=dict(type=loop))), 'c.py', '60')


def test_out_finds_the_ytvis_metric_under_any_spelling_that_builds_it(tmp_path):
    test = load_tool('test')
    out = str(tmp_path / 'r.json')
    for spelling in ('YTVISMetric', 'mmdet.YTVISMetric', YTVISMetric):
        metrics = [dict(type='CocoVideoMetric'), dict(type=spelling, ann_file='a.json')]
        cfg = Config(dict(test_evaluator=metrics))
        test.write_results_with_metric(cfg, out, 'c.py')
        assert cfg.test_evaluator[1].results_file == out and 'results_file' not in metrics[0]
    for spelling in ('ctvis.YTVISMetric', 'YouTubeVISMetric'):  # no such scope; mmdet's own
        with pytest.raises(test.ConfigError, match='test_evaluator has none'):
            test.write_results_with_metric(
                Config(dict(test_evaluator=dict(type=spelling, ann_file='a.json'))), out, 'c.py')


def test_top_level_variables_without_a_config_variable_are_refused():
    """This config has no ``classes`` variable (its dataset class fixes them): a clear error."""
    train = load_tool('train')
    with pytest.raises(train.ConfigError, match="'classes' is not in the config"):
        train.configure_training(train.parse_args([CONFIG, '--cfg-options', 'classes=[a,b]']))


def test_work_dir_precedence_and_option_errors(tmp_path, monkeypatch):
    train = load_tool('train')
    blocker = tmp_path / 'file'
    blocker.write_text('')
    with pytest.raises(train.ConfigError, match=re.escape(
            f'{blocker}/run: cannot be the work_dir: {blocker} is a file, not a folder')):
        train.configure_training(train.parse_args([CONFIG, '--work-dir', str(blocker / 'run')]))
    # a read-only folder (a read-only checkout's ./work_dirs) failed in mmengine with a traceback
    # (root writes anywhere, so access() is told the folder is read-only)
    import os
    monkeypatch.setattr(os, 'access', lambda path, mode: str(path) != str(tmp_path))
    with pytest.raises(train.ConfigError, match=re.escape(
            f'{tmp_path}/run: cannot be the work_dir: {tmp_path} is not writable')):
        train.configure_training(train.parse_args([CONFIG, '--work-dir', str(tmp_path / 'run')]))
    monkeypatch.undo()
    cfg = train.configure_training(train.parse_args([CONFIG]))
    assert cfg.work_dir == osp.join('./work_dirs', 'toy_vis_tools')
    cfg = train.configure_training(train.parse_args([CONFIG, '--cfg-options', 'work_dir=a/b']))
    assert cfg.work_dir == 'a/b'
    cfg = train.configure_training(train.parse_args(
        [CONFIG, '--work-dir', 'c', '--cfg-options', 'work_dir=a/b']))
    assert cfg.work_dir == 'c'

    cfg = train.configure_training(train.parse_args(
        [CONFIG, '--auto-scale-lr', '--cfg-options', 'optim_wrapper.optimizer.lr=0.25',
         'train_dataloader.sampler.shuffle=False', '+model.note=added']))
    assert cfg.auto_scale_lr.enable is True
    assert cfg.optim_wrapper.optimizer.lr == 0.25 and cfg.train_dataloader.sampler.shuffle is False
    assert cfg.model.note == 'added'

    with pytest.raises(train.ConfigError, match=r"'optimiser' is not in 'optim_wrapper' "
                       r"\(did you mean 'optimizer'\?\)"):
        train.configure_training(train.parse_args(
            [CONFIG, '--cfg-options', 'optim_wrapper.optimiser.lr=0.1']))
    with pytest.raises(train.ConfigError, match=r'nope\.py: config file not found'):
        train.configure_training(train.parse_args([str(tmp_path / 'nope.py')]))
    # mmengine parses configs without their name: its SyntaxError says File "<unknown>"
    broken = tmp_path / 'broken.py'
    broken.write_text("model = dict(type='X',\n")
    with pytest.raises(train.ConfigError, match=rf"{broken}, line 1: invalid Python syntax: "
                       r"'\(' was never closed: model = dict\(type='X',"):
        train.configure_training(train.parse_args([str(broken)]))
    child = tmp_path / 'child.py'
    child.write_text("_base_ = ['./broken.py']\n")
    with pytest.raises(train.ConfigError, match=rf'{child}: in a config it inherits \(_base_\), '
                       'line 1: invalid Python syntax'):
        train.configure_training(train.parse_args([str(child)]))
    if not torch.cuda.is_available():
        with pytest.raises(train.ConfigError, match='--amp needs a CUDA GPU'):
            train.configure_training(train.parse_args([CONFIG, '--amp']))
    else:
        cfg = train.configure_training(train.parse_args([CONFIG, '--amp']))
        assert cfg.optim_wrapper.type == 'AmpOptimWrapper'


def test_deterministic_training_on_cuda_is_refused_up_front(monkeypatch):
    """grid_sample's CUDA backward is not deterministic: say so before the run, not at its first
    backward (what a CUDA machine reports is patched in)."""
    train = load_tool('train')
    deterministic = [CONFIG, '--cfg-options', '+randomness.deterministic=True']
    assert train.configure_training(train.parse_args(deterministic)).randomness.deterministic
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    with pytest.raises(train.ConfigError, match='randomness.deterministic=True cannot train on '
                       'CUDA: .* grid_sample'):
        train.configure_training(train.parse_args(deterministic))
    assert not train.configure_training(train.parse_args([CONFIG])).get('randomness', {}).get(
        'deterministic')  # the default config trains on CUDA


def test_bad_cfg_options_key_exits_with_a_clear_message(tmp_path):
    train = load_tool('train')
    with pytest.raises(SystemExit) as exit_info:
        train.main([CONFIG, '--work-dir', str(tmp_path), '--cfg-options', 'train_cfg.max_iter=2'])
    message = str(exit_info.value.code)
    assert message.startswith('train.py: error: ')
    assert "'max_iter' is not in 'train_cfg' (did you mean 'max_iters'?)" in message
    assert not os.listdir(tmp_path)  # nothing ran


# ----------------------------------------------------------------------------------------------
# dist_train.sh
# ----------------------------------------------------------------------------------------------

def test_dist_launch_refuses_more_processes_than_gpus(tmp_path):
    """One GPU per process with CUDA: 2 processes on a 1-GPU machine stop before any starts
    (a machine with one GPU is faked by a sitecustomize module)."""
    (tmp_path / 'sitecustomize.py').write_text(
        'import torch\ntorch.cuda.is_available = lambda: True\n'
        'torch.cuda.device_count = lambda: 1\n')
    work_dir = tmp_path / 'work'
    result = subprocess.run(
        ['bash', 'tools/dist_train.sh', CONFIG, '2', '--work-dir', str(work_dir)], cwd=REPO,
        capture_output=True, text=True, timeout=120,
        env=dict(os.environ, PYTHONPATH=str(tmp_path)))
    assert result.returncode == 1
    assert ('dist_launch.sh: 2 processes per node, but 1 CUDA GPU(s) are visible here: start at '
            'most 1, or hide the GPUs (CUDA_VISIBLE_DEVICES=)') in result.stderr
    assert 'torch.distributed.run' not in result.stderr and not work_dir.exists()
    # as many processes as GPUs, or torchrun's 'auto', pass the check (and torchrun then fails
    # on the missing tool)
    for nproc in ('1', 'auto'):
        result = subprocess.run(
            ['bash', 'tools/dist_launch.sh', nproc, str(tmp_path / 'no_tool.py')], cwd=REPO,
            capture_output=True, text=True, timeout=120,
            env=dict(os.environ, PYTHONPATH=str(tmp_path)))
        assert result.returncode != 0 and 'no_tool.py' in result.stderr
        assert 'dist_launch.sh:' not in result.stderr
    # 0 or a word: refused naming the argument (torchrun raised a bare AssertionError)
    for nproc in ('0', 'two'):
        result = subprocess.run(
            ['bash', 'tools/dist_launch.sh', nproc, str(tmp_path / 'no_tool.py')], cwd=REPO,
            capture_output=True, text=True, timeout=120)
        assert result.returncode == 1 and (
            f"dist_launch.sh: NPROC_PER_NODE must be a whole number >= 1 (or auto, gpu, cpu), got "
            f"'{nproc}'") in result.stderr


def test_dist_train_resumes_latest_on_two_gloo_processes(trained, toy_data, tmp_path,
                                                         loopback_gloo):
    """``--resume`` without a path under dist_train.sh: 2 CPU processes continue iteration 2."""
    work_dir = tmp_path / 'dist'
    work_dir.mkdir()
    shutil.copy(osp.join(trained['work_dir'], 'iter_2.pth'), work_dir / 'iter_2.pth')
    (work_dir / 'last_checkpoint').write_text(str(work_dir / 'iter_2.pth'))
    result = run_tool(['bash', 'tools/dist_train.sh', CONFIG, '2', '--work-dir', str(work_dir),
                       '--resume', '--cfg-options', *data_options(toy_data)], cwd=REPO,
                      PORT=str(free_port()))
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    assert '--resume: resuming from the latest intact checkpoint' in log
    assert 'resumed epoch: ' in log
    assert 'iter: 2' in log and 'Iter(train) [3/4]' in log and 'Iter(train) [1/4]' not in log
    assert (work_dir / 'iter_4.pth').is_file()
    markers = [json.loads((work_dir / f'finished_rank{rank}.json').read_text()) for rank in (0, 1)]
    assert [m['world_size'] for m in markers] == [2, 2]
    assert markers[0]['checksum'] == markers[1]['checksum']  # DDP kept the replicas in sync
    if not torch.cuda.is_available():
        assert "backend='gloo'" in (work_dir / 'toy_vis_tools.py').read_text()


def test_dist_train_saves_generator_states_mid_run_and_validates(toy_data, tmp_path,
                                                                 loopback_gloo):
    """2 CPU processes with RNGStateHook, a checkpoint and a validation at iterations 2 and 4.

    mmengine writes checkpoints on rank 0 alone: the hook once gathered the ranks' generator
    states while saving, rank 1 paired that gather with the metric's and the run deadlocked.
    A resume from the mid-run checkpoint ends with the uninterrupted run's weights.
    """
    config = tmp_path / 'toy_vis_tools_rng.py'
    config.write_text('\n'.join([
        f'_base_ = [{CONFIG!r}]',
        "custom_hooks = [dict(type='ToolsTestRankMarker'), dict(type='RNGStateHook')]",
        'val_dataloader = {{_base_.test_dataloader}}',
        'val_evaluator = {{_base_.test_evaluator}}',
        "val_cfg = dict(type='ValLoop')",
        'train_cfg = dict(val_interval=2)', '']))
    options = [*data_options(toy_data), f'val_dataloader.dataset.data_root={toy_data}',
               f'val_evaluator.ann_file={osp.join(toy_data, "annotations.json")}']
    runs = {}
    for name, resume in (('uninterrupted', []), ('resumed', ['--resume'])):
        work_dir = tmp_path / name
        work_dir.mkdir()
        if resume:
            shutil.copy(tmp_path / 'uninterrupted' / 'iter_2.pth', work_dir / 'iter_2.pth')
            (work_dir / 'last_checkpoint').write_text(str(work_dir / 'iter_2.pth'))
        result = run_tool(['bash', 'tools/dist_train.sh', str(config), '2', '--work-dir',
                           str(work_dir), *resume, '--cfg-options', *options], cwd=REPO,
                          timeout=180, PORT=str(free_port()))
        log = result.stdout + result.stderr
        assert result.returncode == 0, log[-4000:]
        runs[name] = [json.loads((work_dir / f'finished_rank{rank}.json').read_text())
                      for rank in (0, 1)]
    log_of_first = (tmp_path / 'uninterrupted').rglob('*.log')
    assert sum(open(path).read().count('youtube_vis/AP:') for path in log_of_first) == 2
    from ctvis.utils import safe_load_file
    checkpoint = safe_load_file(str(tmp_path / 'uninterrupted' / 'iter_2.pth'))
    assert len(checkpoint['rng_states']) == 2  # one set per rank
    checksums = {name: {m['checksum'] for m in markers} for name, markers in runs.items()}
    assert len(checksums['uninterrupted']) == 1
    assert checksums['resumed'] == checksums['uninterrupted']


def test_dist_train_time_budget_follows_rank_0s_plan(toy_data, tmp_path, loopback_gloo):
    """Two ranks that measure different speeds train the same number of iterations: rank 0's
    plan (rank 1 alone, 4x faster, would plan 16 and fail in the gradient all-reduce once rank
    0 is done at 9)."""
    config = tmp_path / 'toy_vis_tools_budget.py'
    config.write_text('\n'.join([
        f'_base_ = [{CONFIG!r}]',
        "custom_imports = dict(imports=['test_train_test_tools', 'ctvis'])",
        "custom_hooks = [dict(type='ToolsTestRankMarker'),",
        "                dict(type='ToolsTestRankClock', seconds_per_iter=[1.0, 0.25]),",
        "                dict(type='TrainingTimeBudget', seconds=8, measure_from=1, plan_at=3,",
        "                     check_every=2, round_to=1)]",
        'default_hooks = dict(checkpoint=dict(interval=1000))', '']))
    work_dir = tmp_path / 'budget'
    result = run_tool(['bash', 'tools/dist_train.sh', str(config), '2', '--work-dir',
                       str(work_dir), '--cfg-options', *data_options(toy_data)], cwd=REPO,
                      timeout=180, PORT=str(free_port()))
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    # rank 0: 1 s per iteration, 2 s spent at iteration 3, 6 s left -> 9 (config 4)
    assert 'TrainingTimeBudget: 1.000 s per iteration -> 9 iterations (config 4)' in log
    markers = [json.loads((work_dir / f'finished_rank{rank}.json').read_text()) for rank in (0, 1)]
    assert [m['iters'] for m in markers] == [9, 9]
    assert markers[0]['checksum'] == markers[1]['checksum']


# ----------------------------------------------------------------------------------------------
# test.py
# ----------------------------------------------------------------------------------------------

def expected_video_scores(checkpoint: str, toy_data: str) -> dict:
    """Scores the toy model gives each video with the checkpoint's weights, computed here."""
    from ctvis.utils import safe_load_file
    model = ToolsTestPixelVIS()
    model.load_state_dict(safe_load_file(checkpoint)['state_dict'])
    dataset = ToolsTestVideos(data_root=toy_data, ann_file='annotations.json', test_mode=True)
    scores = {}
    with torch.no_grad():
        for index in range(len(dataset)):
            item = dataset[index]
            result = model([item['inputs']], [item['data_samples']], mode='predict')[0]
            scores[result.video_id] = float(result[0].pred_track_instances.scores[0])
    return scores


def test_test_py_evaluates_writes_results_and_draws(trained, toy_data, tmp_path):
    checkpoint = osp.join(trained['work_dir'], 'iter_4.pth')
    out_file = tmp_path / 'results' / 'toy_results.json'
    show_dir = tmp_path / 'painted'
    result = run_tool([PYTHON, 'tools/test.py', CONFIG, checkpoint, '--work-dir',
                       str(tmp_path / 'test'), '--out', str(out_file), '--show-dir',
                       str(show_dir), '--cfg-options', *data_options(toy_data)], cwd=REPO)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    assert 'Load checkpoint from' in log and checkpoint in log
    assert 'youtube_vis/AP: 1.0000' in log  # the masks are the ground truth

    # the standard YouTube-VIS results JSON, with the checkpoint's (trained) scores
    results = json.loads(out_file.read_text())
    assert sorted(r['video_id'] for r in results) == [1, 2, 3]
    scores = expected_video_scores(checkpoint, toy_data)
    assert len(set(round(s, 6) for s in scores.values())) == 3  # the scores tell videos apart
    with open(osp.join(toy_data, 'annotations.json')) as f:
        truth = {a['video_id']: a['segmentations'] for a in json.load(f)['annotations']}
    for entry in results:
        assert entry['category_id'] == 1
        assert entry['score'] == pytest.approx(scores[entry['video_id']], abs=1e-6)
        assert len(entry['segmentations']) == NUM_FRAMES
        for predicted, expected in zip(entry['segmentations'], truth[entry['video_id']]):
            np.testing.assert_array_equal(mask_utils.decode(predicted),
                                          mask_utils.decode(expected))

    # every frame drawn, into one folder per video, with the mask painted over the square
    for video_id in range(1, NUM_VIDEOS + 1):
        for frame_id in range(NUM_FRAMES):
            painted = mmcv.imread(str(show_dir / str(video_id) / f'{frame_id:05d}.png'))
            original = mmcv.imread(osp.join(toy_data, f'video{video_id}/{frame_id:05d}.png'))
            assert painted.shape == original.shape
            y, x = 2 + video_id, 1 + 3 * frame_id
            assert not np.array_equal(painted[y + 2:y + 4, x + 2:x + 4],
                                      original[y + 2:y + 4, x + 2:x + 4])


def test_test_py_option_errors(trained, tmp_path):
    test = load_tool('test')
    checkpoint = osp.join(trained['work_dir'], 'iter_4.pth')
    cfg = test.configure_testing(test.parse_args([CONFIG, checkpoint]))
    assert cfg.load_from == checkpoint and cfg.work_dir == osp.join('./work_dirs', 'toy_vis_tools')
    with pytest.raises(test.ConfigError, match=r'nope\.pth: checkpoint not found'):
        test.configure_testing(test.parse_args([CONFIG, str(tmp_path / 'nope.pth')]))
    with pytest.raises(test.ConfigError, match=r'must end in \.json'):
        test.configure_testing(test.parse_args([CONFIG, checkpoint, '--out', 'r.pkl']))
    with pytest.raises(test.ConfigError, match=r'needs a YTVISMetric|has none \(metrics: '
                       r'CocoVideoMetric\)'):
        test.configure_testing(test.parse_args(
            [CONFIG, checkpoint, '--out', str(tmp_path / 'r.json'), '--cfg-options',
             'test_evaluator.type=CocoVideoMetric']))
    with pytest.raises(SystemExit, match="'test_evaluater' is not in the config"):
        test.main([CONFIG, checkpoint, '--cfg-options', 'test_evaluater.type=X'])
    # outputs written after the whole inference are refused before it
    blocker = tmp_path / 'a_file'
    blocker.write_text('')
    with pytest.raises(test.ConfigError, match=f'--out {blocker}/r.json: its folder {blocker} '
                       'cannot be created'):
        test.configure_testing(test.parse_args([CONFIG, checkpoint, '--out',
                                                str(blocker / 'r.json')]))
    with pytest.raises(test.ConfigError, match=f'--out {tmp_path}.json: is a folder'):
        (tmp_path.parent / f'{tmp_path.name}.json').mkdir()
        test.configure_testing(test.parse_args([CONFIG, checkpoint, '--out', f'{tmp_path}.json']))
    with pytest.raises(test.ConfigError, match=f'--show-dir {blocker}/show: the folder '
                       f'{blocker}/show cannot be created'):
        test.configure_testing(test.parse_args([CONFIG, checkpoint, '--show-dir',
                                                str(blocker / 'show')]))


def write_ground_truth(path, toy_data: str, edit=None) -> str:
    """A copy of the toy ground truth, changed by ``edit(content)`` if given."""
    with open(osp.join(toy_data, 'annotations.json')) as f:
        content = json.load(f)
    if edit is not None:
        edit(content)
    path.write_text(json.dumps(content))
    return str(path)


def drop_video_3(content: dict) -> None:
    content['videos'] = [v for v in content['videos'] if v['id'] != 3]
    content['annotations'] = [a for a in content['annotations'] if a['video_id'] != 3]


def add_video_9(content: dict) -> None:
    content['videos'].append(dict(content['videos'][0], id=9))


@pytest.mark.parametrize('case, expected', [
    ('missing', r'no such file'),
    ('cut_short', r'not valid JSON'),
    ('no_annotations', r'has no annotations, so it cannot be evaluated'),
    ('video_missing', r"1 of the dataset's 3 videos are missing from it \(3\) and 0 of its 2 "),
    ('extra_video', r"0 of the dataset's 3 videos are missing from it \(none\) and 1 of its 4 "
     r'videos are not in the dataset \(9\)'),
])
def test_test_py_checks_the_ground_truth_before_inference(trained, toy_data, tmp_path, case,
                                                          expected, monkeypatch):
    """A wrong metric ann_file costs seconds: test.py stops before the inference starts."""
    from mmengine.runner import Runner
    test = load_tool('test')
    monkeypatch.setattr(Runner, 'test', lambda runner: pytest.fail('the inference started'))
    gt = tmp_path / 'gt.json'
    if case == 'cut_short':
        gt.write_text(open(osp.join(toy_data, 'annotations.json')).read()[:500])
    elif case == 'no_annotations':
        write_ground_truth(gt, toy_data, lambda content: content.pop('annotations'))
    elif case == 'video_missing':
        write_ground_truth(gt, toy_data, drop_video_3)
    elif case == 'extra_video':
        write_ground_truth(gt, toy_data, add_video_9)
    # In-process runs a second apart would share mmengine's timestamped instance names (and warn)
    run_name = f'gt_check_{uuid.uuid4().hex}'
    options = data_options(toy_data)[:2] + [f'test_evaluator.ann_file={gt}',
                                            f'+experiment_name={run_name}',
                                            f'visualizer.name={run_name}']
    out = tmp_path / 'out.json'
    with pytest.raises(SystemExit) as exit_info:
        test.main([CONFIG, osp.join(trained['work_dir'], 'iter_4.pth'), '--work-dir',
                   str(tmp_path / 'work'), '--out', str(out), '--cfg-options', *options])
    message = str(exit_info.value.code)
    assert message.startswith('test.py: error: ') and str(gt) in message
    assert re.search(expected, message), message
    assert not out.exists()


def test_test_py_reports_metric_settings_that_cannot_be_used_in_one_line(trained, toy_data,
                                                                        tmp_path, monkeypatch):
    """A submission (format_only) with long video ids or identity metrics was a traceback from
    the metric's constructor."""
    from mmengine.runner import Runner
    test = load_tool('test')
    monkeypatch.setattr(Runner, 'test', lambda runner: pytest.fail('the inference started'))
    run_name = f'metric_settings_{uuid.uuid4().hex}'
    options = data_options(toy_data)[:2] + [
        '+test_evaluator.format_only=True', f'+test_evaluator.outfile_prefix={tmp_path}/sub',
        '+test_evaluator.long_video_ids=[1]', f'+experiment_name={run_name}',
        f'visualizer.name={run_name}']
    with pytest.raises(SystemExit) as exit_info:
        test.main([CONFIG, osp.join(trained['work_dir'], 'iter_4.pth'), '--work-dir',
                   str(tmp_path / 'work'), '--cfg-options', *options])
    assert str(exit_info.value.code) == (
        'test.py: error: YTVISMetric: long_video_ids split the metrics by video length, '
        'format_only=True computes no metrics (the evaluation server splits them itself): set '
        'one of them to None')


def test_test_py_refuses_a_checkpoint_that_does_not_fit_the_model(trained, toy_data, tmp_path,
                                                                  monkeypatch):
    """mmengine loads weights with strict=False: a checkpoint of another model (here: one
    parameter of another name and one of another shape) would be evaluated with random weights
    and only a warning. test.py stops before the inference, naming the file."""
    from mmengine.runner import TestLoop
    test = load_tool('test')
    monkeypatch.setattr(TestLoop, 'run', lambda loop: pytest.fail('the inference started'))
    state = torch.load(osp.join(trained['work_dir'], 'iter_4.pth'), weights_only=False)
    state = state['state_dict']
    first, second = list(state)[:2]
    state['renamed'] = state.pop(first)
    state[second] = torch.zeros(7)
    checkpoint = tmp_path / 'other_model.pth'
    torch.save(dict(state_dict=state), checkpoint)
    run_name = f'fit_check_{uuid.uuid4().hex}'
    out = tmp_path / 'out.json'
    with pytest.raises(SystemExit) as exit_info:
        test.main([CONFIG, str(checkpoint), '--work-dir', str(tmp_path / 'work'), '--out',
                   str(out), '--cfg-options', *data_options(toy_data),
                   f'+experiment_name={run_name}', f'visualizer.name={run_name}'])
    message = str(exit_info.value.code)
    assert message.startswith(f'test.py: error: {checkpoint}: the weights do not fit the model: '
                              f'1 of the model\'s {len(state)} weights are not in it '
                              f'(e.g. {first}) and 1 have another shape (checkpoint vs model, '
                              f'e.g. {second}: (7,) vs '), message
    assert not out.exists()


@pytest.mark.parametrize('tool', ['train', 'test'])
def test_a_frame_found_bad_during_the_run_ends_the_tool_with_a_clear_message(
        tool, trained, toy_data, tmp_path, monkeypatch):
    """YTVISDataset checks a video's frames when the video is first loaded, so a bad frame can
    surface mid-run: the tool ends with the dataset's message (naming the file), no traceback."""
    from ctvis.datasets import YTVISFormatError
    problem = (f'{toy_data}/annotations.json: video id=2: frame 3 (JPEGImages/v2/00003.jpg) is '
               '10x10 (HxW) but the file says 32x32')

    def bad_frame(self, idx):
        raise YTVISFormatError(problem)

    monkeypatch.setattr(ToolsTestVideos, 'prepare_data', bad_frame)
    run_name = f'bad_frame_{uuid.uuid4().hex}'
    options = ['--cfg-options', *data_options(toy_data), f'+experiment_name={run_name}',
               f'visualizer.name={run_name}']
    work_dir = ['--work-dir', str(tmp_path / 'work')]
    checkpoint = [osp.join(trained['work_dir'], 'iter_4.pth')] if tool == 'test' else []
    with pytest.raises(SystemExit) as exit_info:
        load_tool(tool).main([CONFIG, *checkpoint, *work_dir, *options])
    assert str(exit_info.value.code) == f'{tool}.py: error: {problem}'


def test_out_is_written_before_the_evaluation(trained, toy_data, tmp_path, monkeypatch):
    """An error while evaluating (here: the evaluator raises) keeps the results file."""
    out = tmp_path / 'out.json'
    metric = YTVISMetric(ann_file=osp.join(toy_data, 'annotations.json'), results_file=str(out))
    rle = mask_utils.encode(np.asfortranarray(np.ones((SIZE, SIZE), np.uint8)))
    rle['counts'] = rle['counts'].decode()
    videos = [VideoPrediction(scores=torch.tensor([0.5 + v / 10], dtype=torch.float64),
                              labels=torch.tensor([0]), track_ids=torch.tensor([0]),
                              masks=[[rle] * NUM_FRAMES], ori_shape=(SIZE, SIZE),
                              num_frames=NUM_FRAMES, video_id=v)
              for v in range(1, NUM_VIDEOS + 1)]

    def failing_evaluation(*args, **kwargs):
        raise RuntimeError('evaluation failed')

    monkeypatch.setattr(metric.evaluator, 'evaluate', failing_evaluation)
    with pytest.raises(RuntimeError, match='evaluation failed'):
        metric.compute_metrics(videos)
    written = json.loads(out.read_text())
    assert [r['video_id'] for r in written] == [1, 2, 3]
    assert [r['score'] for r in written] == pytest.approx([0.6, 0.7, 0.8])  # float32 in JSON


def quickstart_tool_calls() -> list:
    """(tool name, argv) of every ``"$PY" tools/<name>.py ...`` line of tools/quickstart.sh."""
    with open(osp.join(REPO, 'tools', 'quickstart.sh')) as f:
        script = f.read().replace('\\\n', ' ')
    calls = []
    for line in script.splitlines():
        match = re.match(r'\s*"\$PY" tools/(train|test)\.py (.*)$', line)
        if match:
            calls.append((match.group(1), shlex.split(match.group(2))))
    return calls


def test_quickstart_tool_calls_are_accepted(tmp_path):
    """Every train/test call of the quickstart parses and configures: an option the tools refuse
    would otherwise stop the quickstart only after its 20-minute training."""
    checkpoint = str(tmp_path / 'iter_1.pth')
    torch.save(dict(state_dict={}), checkpoint)
    values = dict(CONFIG='configs/ctvis/ctvis_quickstart.py', WORK=str(tmp_path / 'work'),
                  CHECKPOINT=checkpoint, DATA='data/toy_vis')
    calls = quickstart_tool_calls()
    # the evaluation is the training's final validation; the control is the one test run
    assert sorted(name for name, _ in calls) == ['test', 'train']
    for name, argv in calls:
        # the training's time budget as the script computes it
        argv = [a for arg in argv for a in (
            ['--time-budget', '1000s'] if arg == '${BUDGET[@]}' else [arg])]
        argv = [re.sub(r'\$(\w+)', lambda m: values[m.group(1)], arg) for arg in argv]
        tool = load_tool(name)
        configure = tool.configure_training if name == 'train' else tool.configure_testing
        cfg = configure(tool.parse_args(argv))
        assert cfg.work_dir.startswith(values['WORK'])
        if name == 'train':
            assert [h for h in cfg.custom_hooks if h['type'] == 'TrainingTimeBudget'] == [
                dict(type='TrainingTimeBudget', seconds=1000.0)]
            # the results the error breakdown reads, written by the final validation
            assert cfg.val_evaluator.results_file == values['WORK'] + '/results.json'
            assert cfg.train_cfg.val_interval == cfg.train_cfg.max_iters


@pytest.mark.parametrize('minutes, message', [
    ('abc', "must be a number of minutes (0: no limit), got 'abc'"),
    ('-1', 'must be a number of minutes'),
    ('4.9', 'CTVIS_QUICKSTART_MINUTES=4.9 is too short'),
])
def test_quickstart_refuses_an_unusable_time_before_any_work(minutes, message, tmp_path):
    env = dict(os.environ, CTVIS_QUICKSTART_MINUTES=minutes,
               CTVIS_QUICKSTART_DIR=str(tmp_path / 'work'))
    done = subprocess.run(['bash', osp.join(REPO, 'tools', 'quickstart.sh')], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and message in done.stderr
    assert done.stdout == '' and not (tmp_path / 'work').exists()  # no setup, no training


def test_test_time_pieces_live_in_the_package():
    """--show-dir's hook can be built from a config; --out is a YTVISMetric option."""
    from ctvis.engine import VideoMaskVisualizationHook
    assert HOOKS.get('VideoMaskVisualizationHook') is VideoMaskVisualizationHook
    hook = HOOKS.build(dict(type='VideoMaskVisualizationHook', out_dir='painted', score_thr=0.5))
    assert (hook.out_dir, hook.score_thr) == ('painted', 0.5)
    assert YTVISMetric(ann_file='unused.json', results_file='out.json').results_file == 'out.json'
