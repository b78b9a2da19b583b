"""CTVISDataPreprocessor: mmdet's TrackDataPreprocessor without copying samples on the device."""
import numpy as np
import pytest
import torch
from mmengine.dataset import pseudo_collate
from mmengine.structures import InstanceData

from ctvis.datasets.synthetic import square_clip
from ctvis.models import CTVISDataPreprocessor
from ctvis.models.data_preprocessor import on_device
from mmdet.models.data_preprocessors import TrackDataPreprocessor
from mmdet.structures.bbox import HorizontalBoxes

ARGS = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], bgr_to_rgb=True,
            pad_size_divisor=32, pad_mask=True)


def clips():
    # 40 x 56 frames: padded to 64 x 64, so the masks are padded too
    return pseudo_collate([square_clip(num_frames=2, size=(40, 56), seed=s) for s in (0, 1)])


@pytest.mark.parametrize('training', [True, False])
def test_outputs_equal_the_parents_on_cpu(training):
    data = clips()
    ours = CTVISDataPreprocessor(**ARGS)(data, training)
    theirs = TrackDataPreprocessor(**ARGS)(clips(), training)
    assert torch.equal(ours['inputs'], theirs['inputs'])
    for clip, clip_expected, given in zip(ours['data_samples'], theirs['data_samples'],
                                          data['data_samples']):
        assert clip is given  # no copy: the samples given, completed in place
        assert clip.metainfo == clip_expected.metainfo
        for frame, expected in zip(clip, clip_expected):
            assert frame.metainfo == expected.metainfo
            assert frame.metainfo['batch_input_shape'] == (64, 64)
            gt, gt_expected = frame.gt_instances, expected.gt_instances
            assert set(gt.keys()) == set(gt_expected.keys())
            for key in ('labels', 'instances_ids', 'bboxes'):
                assert torch.equal(gt[key], gt_expected[key])
            assert np.array_equal(gt.masks.masks, gt_expected.masks.masks)
            assert gt.masks.masks.shape[1:] == ((64, 64) if training else (40, 56))


def test_samples_elsewhere_are_moved():
    """Off the target device the parent's cast runs: new samples, tensors moved."""
    preprocessor = CTVISDataPreprocessor(**ARGS).to('meta')
    sample = clips()['data_samples'][0]
    moved = preprocessor.cast_data(sample)
    assert moved is not sample
    for frame in moved:
        assert frame.gt_instances.labels.device.type == 'meta'
        assert frame.gt_instances.instances_ids.device.type == 'meta'
    assert sample[0].gt_instances.labels.device.type == 'cpu'  # the given one is untouched


def test_on_device_looks_at_every_tensor_and_box():
    cpu, meta = torch.device('cpu'), torch.device('meta')
    sample = clips()['data_samples'][0]
    assert on_device(sample, cpu) and not on_device(sample, meta)
    sample[1].gt_instances.labels = sample[1].gt_instances.labels.to('meta')  # one tensor, deep
    assert not on_device(sample, cpu)
    boxes = InstanceData(bboxes=HorizontalBoxes(torch.zeros(1, 4)))
    assert on_device(boxes, cpu) and not on_device(boxes, meta)
    assert on_device(InstanceData(names=['a'], counts=np.zeros(1)), meta)  # nothing to move

    class Movable:
        """An object with its own ``to``: not known to be on any device."""

        def to(self, *args, **kwargs):
            return self

    assert not on_device([torch.zeros(1), Movable()], cpu)
