"""tools/analysis_tools/query_switches.py: steps of tracks classified by instance and query."""
import json
import os.path as osp
import sys
from collections import Counter

import numpy as np
import pycocotools.mask as mask_utils
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.structures import InstanceData

from ctvis.datasets.synthetic.toy import make_toy_vis
from mmdet.registry import MODELS
from conftest import REPO, load_module

sys.path.insert(0, osp.join(REPO, 'tools', 'analysis_tools'))  # its sibling vis_error_breakdown
tool = load_module(osp.join(REPO, 'tools', 'analysis_tools', 'query_switches.py'),
                   'query_switches')
CONFIG = osp.join(REPO, 'configs', 'ctvis', 'ctvis_quickstart.py')


def test_count_steps():
    frames = [
        {0: (3, 0), 1: (5, 1), 2: (7, None)},
        {0: (3, 0), 1: (3, 0), 2: (7, 1)},  # track 1 passes to instance 0 on another query
        {0: (3, 1), 1: (4, 0), 3: (7, 1)},  # track 0 switches on its query; 1 keeps on another
        {1: (4, None), 3: (7, 1)},  # track 0 gone; track 1 covers nothing
        {0: (3, 1), 1: (4, 0), 3: (2, 1)},  # 0 back (no step); 1 from no instance; 3 new query
        {1: (4, 0), 3: (2, 1)},
    ]
    counts = tool.count_steps(frames)
    assert counts == Counter({('kept', 'same_query'): 4, ('kept', 'other_query'): 2,
                              ('switch', 'other_query'): 1, ('switch', 'same_query'): 1})
    assert tool.count_steps([]) == Counter() and tool.count_steps(frames[:1]) == Counter()
    report = tool.report(counts)
    assert 'identity switch, same query: 1' in report
    assert 'track stays on its instance, another query: 2' in report
    assert 'identity switches with the same query: 1 of 2 (50.0%)' in report
    assert 'identity switches with' not in tool.report(Counter({('kept', 'same_query'): 4}))


class ScriptedSegmenter:
    """Gives, per frame, the ground-truth masks of chosen instances under chosen tracks and
    queries (the tool's plumbing, not a model, is under test)."""

    def __init__(self, masks, script):
        self.masks, self.script, self.frame_id = masks, script, 0

    def reset(self):
        self.frame_id = 0

    def step(self, frame):
        tracks = self.script[self.frame_id]  # [(track, query, instance, an RLE or None)]
        blank = mask_utils.encode(np.zeros(frame.shape[:2], dtype=np.uint8, order='F'))
        self.frame_id += 1
        return InstanceData(
            instances_id=torch.tensor([t for t, _, _ in tracks], dtype=torch.long),
            queries=torch.tensor([q for _, q, _ in tracks], dtype=torch.long),
            masks=[blank if i is None else i if isinstance(i, dict)
                   else self.masks[i][self.frame_id - 1] for _, _, i in tracks])


@pytest.fixture(scope='module')
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp('query_switches')
    make_toy_vis(str(root), num_videos=1, num_frames=3, seed=0, num_val_videos=2,
                 instances_per_video=(2, 2))
    return str(root)


def test_track_video_covers_instances_by_mask_iou(toy):
    gt = json.load(open(osp.join(toy, 'valid.json')))
    video = gt['videos'][0]
    instances = [a for a in gt['annotations'] if a['video_id'] == video['id']]
    masks = [a['segmentations'] for a in instances]
    visible = [all(s is not None for s in m) for m in masks]
    assert visible == [True, True], 'the seed should give two instances seen in every frame'
    script = [[(0, 4, 0), (1, 6, 1)], [(0, 4, 1), (1, 2, 0), (2, 9, None)],
              [(0, 4, 1), (1, 2, 0), (2, 9, 0)]]
    segmenter = ScriptedSegmenter(masks, script)
    records = tool.track_video(segmenter, video, instances, osp.join(toy, 'JPEGImages'), 0.5)
    assert records == [{0: (4, 0), 1: (6, 1)}, {0: (4, 1), 1: (2, 0), 2: (9, None)},
                       {0: (4, 1), 1: (2, 0), 2: (9, 0)}]
    # a mask of IoU exactly 0.5 with instance 0: covers it only below that threshold
    first = mask_utils.decode(mask_utils.frPyObjects(masks[0][0], video['height'],
                                                     video['width'])
                              if isinstance(masks[0][0]['counts'], list) else masks[0][0])
    union = first.copy()
    union.flat[np.flatnonzero(first == 0)[:int(first.sum())]] = 1  # as many pixels outside
    half = mask_utils.encode(np.asfortranarray(union))
    assert mask_utils.iou([half], [mask_utils.encode(np.asfortranarray(first))], [0])[0, 0] == 0.5
    for thr, covered in ((0.5, None), (0.4999, 0)):
        records = tool.track_video(ScriptedSegmenter(masks, [[(0, 1, half)]] * 3), video,
                                   instances, osp.join(toy, 'JPEGImages'), thr)
        assert records[0] == {0: (1, covered)}


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory) -> str:
    init_default_scope('mmdet')
    torch.manual_seed(0)
    model = MODELS.build(Config.fromfile(CONFIG).model)
    model.init_weights()
    path = str(tmp_path_factory.mktemp('query_switches_ckpt') / 'init.pth')
    torch.save(dict(state_dict=model.state_dict()), path)
    return path


def test_command_line_on_a_model(toy, checkpoint, capsys, tmp_path):
    status = tool.main([CONFIG, checkpoint, osp.join(toy, 'valid.json')])
    out = capsys.readouterr().out
    assert status == 0 and 'track stays on its instance, same query: ' in out
    assert 'identity switch, another query: ' in out
    gt = json.load(open(osp.join(toy, 'valid.json')))
    missing = osp.join(toy, 'JPEGImages', gt['videos'][1]['file_names'][2])
    video = gt['videos'][1]
    broken = dict(gt, videos=[dict(video, file_names=video['file_names'][:2]
                                   + ['nowhere/00002.jpg'])],
                  annotations=[a for a in gt['annotations'] if a['video_id'] == video['id']])
    path = tmp_path / 'broken.json'
    path.write_text(json.dumps(broken))
    assert osp.exists(missing)
    status = tool.main([CONFIG, checkpoint, str(path), '--img-dir', osp.join(toy, 'JPEGImages')])
    err = capsys.readouterr().err
    assert status == 1 and 'frame 2: cannot read' in err and 'nowhere/00002.jpg' in err
