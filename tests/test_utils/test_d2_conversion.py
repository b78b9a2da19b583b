"""tools/model_converters/ctvis_d2_to_mmdet.py on state dicts with the official key names/shapes."""
import os.path as osp
import pickle
import subprocess
import sys

import numpy as np
import torch

from conftest import PARITY, REPO, load_module
from mmengine.config import Config
from mmengine.registry import init_default_scope

from ctvis.utils.d2_conversion import (_swin_norm_order, _swin_reduction_order,
                                       check_against_model, convert_state_dict)
from mmdet.registry import MODELS

TOOL = osp.join(REPO, 'tools', 'model_converters', 'ctvis_d2_to_mmdet.py')
R50_YTVIS19 = osp.join(REPO, 'configs', 'ctvis', 'ctvis_r50_8xb2-16k_ytvis19.py')
SWIN_OVIS = osp.join(REPO, 'configs', 'ctvis', 'ctvis_swin-l-p4-w12-384-in21k_8xb2-16k_ovis.py')


def official_keys():
    return load_module(osp.join(PARITY, 'ctvis_d2_keys.py'), 'ctvis_d2_keys')


def official_state_dict(backbone: str, queries: int, classes: int) -> dict:
    keys = official_keys()
    shapes, channels = getattr(keys, backbone)()
    shapes.update(keys.head(channels, queries, classes))
    rng = np.random.RandomState(0)
    return {k: torch.from_numpy(rng.standard_normal(v).astype(np.float32))
            for k, v in shapes.items()}


def convert(tmp_path, source, *args):
    dst = tmp_path / 'converted.pth'
    result = subprocess.run([sys.executable, TOOL, str(source), str(dst), *map(str, args)],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    return result, dst


def test_official_r50_release_converts_and_loads_strictly(tmp_path):
    state = official_state_dict('resnet50', 100, 40)
    assert len(state) == 564
    source = tmp_path / 'ctvis_r50_ytvis19.pth'
    torch.save({'model': state}, source)
    result, dst = convert(tmp_path, source, '--config', R50_YTVIS19)
    assert result.returncode == 0, result.stderr
    assert 'strict=True' in result.stdout and 'criterion.empty_weight' in result.stdout
    converted = torch.load(dst, weights_only=True)['state_dict']
    assert torch.equal(converted['track_head.reid_embed.4.weight'],
                       state['sem_seg_head.predictor.reid_embed.layers.2.weight'])
    assert torch.equal(converted['backbone.layer3.5.bn2.running_var'],
                       state['backbone.res4.5.conv2.norm.running_var'])
    assert torch.equal(converted['track_head.pixel_decoder.level_encoding.weight'],
                       state['sem_seg_head.pixel_decoder.transformer.level_embed'])


def test_official_swin_l_release_converts_and_loads_strictly():
    keys = official_keys()
    shapes, channels = keys.swinl()
    shapes.update(keys.head(channels, 200, 25))
    assert len(shapes) == 656
    state = {k: torch.zeros(v) for k, v in shapes.items()}  # values do not matter here
    conversion = convert_state_dict(state)
    assert not conversion.unmapped
    cfg = Config.fromfile(SWIN_OVIS)
    init_default_scope('mmdet')
    model = MODELS.build(cfg.model)
    assert check_against_model(conversion.state_dict, model) == ([], [], [])
    model.load_state_dict(conversion.state_dict, strict=True)


def test_swin_patch_merging_reorder():
    # official unfold order (x0, x1, x2, x3) = ((0,0), (1,0), (0,1), (1,1)); mmdet's nn.Unfold
    # gives per channel ((0,0), (0,1), (1,0), (1,1)) interleaved over channels
    channels = 2
    weight = torch.arange(4 * channels, dtype=torch.float32)[None]
    reordered = _swin_reduction_order(weight)[0]
    assert reordered.tolist() == [0, 4, 2, 6, 1, 5, 3, 7]
    assert torch.equal(_swin_norm_order(torch.arange(8.)), reordered)


def test_mask2former_coco_pickle_initialises_training(tmp_path):
    state = official_state_dict('resnet50', 100, 80)
    state = {k: v.numpy() for k, v in state.items() if 'reid_embed' not in k}
    source = tmp_path / 'model_final_3c8ec9.pkl'
    with open(source, 'wb') as f:
        pickle.dump({'model': state, '__author__': 'Mask2Former'}, f)
    result, dst = convert(tmp_path, source, '--config', R50_YTVIS19)
    assert result.returncode == 1 and 'shape mismatch track_head.cls_embed.weight' in result.stderr
    result, dst = convert(tmp_path, source, '--config', R50_YTVIS19, '--init')
    assert result.returncode == 0, result.stderr
    assert 'dropped (shape differs' in result.stdout and 'reid_embed' in result.stdout
    converted = torch.load(dst, weights_only=True)['state_dict']
    assert 'track_head.cls_embed.weight' not in converted
    assert 'track_head.mask_embed.0.weight' in converted


def test_unknown_keys_are_reported(tmp_path):
    state = official_state_dict('resnet50', 100, 40)
    state['sem_seg_head.predictor.some_new_head.weight'] = torch.zeros(3)
    source = tmp_path / 'odd.pth'
    torch.save({'model': state}, source)
    result, _ = convert(tmp_path, source)
    assert result.returncode == 1
    assert 'sem_seg_head.predictor.some_new_head.weight' in result.stderr
    assert convert_state_dict(state).unmapped == ['sem_seg_head.predictor.some_new_head.weight']


def test_code_executing_checkpoint_is_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (open, (str(tmp_path / 'pwned'), 'w'))

    source = tmp_path / 'evil.pkl'
    with open(source, 'wb') as f:
        pickle.dump({'model': {'x': Payload()}}, f)
    result, _ = convert(tmp_path, source)
    assert result.returncode == 2 and 'evil.pkl' in result.stderr
    assert not (tmp_path / 'pwned').exists()


def test_command_line_mistakes_are_one_line_errors(tmp_path):
    """A non-tensor value, a missing --config and an output folder that cannot exist were
    tracebacks (the first without the key); an output folder that does not exist yet is made."""
    state = official_state_dict('resnet50', 100, 40)
    source = tmp_path / 'model.pth'
    torch.save({'model': state}, source)
    blocker = tmp_path / 'file'
    blocker.write_text('')
    cases = [([], 'sem_seg_head.predictor.query_embed.weight: expected a tensor or numpy '
                  'array, got str'),
             (['--config', tmp_path / 'missing.py'], 'missing.py: --config file not found')]
    for extra, message in cases:
        if not extra:
            odd = dict(state, **{'sem_seg_head.predictor.query_embed.weight': 'text'})
            torch.save({'model': odd}, tmp_path / 'odd.pth')
        result, _ = convert(tmp_path, tmp_path / 'odd.pth' if not extra else source, *extra)
        assert result.returncode == 2 and message in result.stderr, result.stderr
        assert 'Traceback' not in result.stderr
    result = subprocess.run([sys.executable, TOOL, str(source), str(blocker / 'out.pth')],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 2
    assert f'{blocker}/out.pth: its folder {blocker} cannot be created' in result.stderr
    result = subprocess.run([sys.executable, TOOL, str(source), str(tmp_path / 'new' / 'o.pth')],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0 and (tmp_path / 'new' / 'o.pth').is_file(), result.stderr


def test_damaged_sources_are_refused_before_converting(tmp_path):
    """torch does not check a zip checkpoint's CRCs: a byte flipped in a download converted into
    a clean file of wrong weights, which the tools then accepted; a legacy (non-zip) file cut
    short in its tensor data was a traceback."""
    import zipfile
    state = {'sem_seg_head.predictor.query_feat.weight': torch.zeros(100, 256)}
    intact = tmp_path / 'intact.pth'
    torch.save({'model': state}, intact)
    data = bytearray(intact.read_bytes())
    with zipfile.ZipFile(intact) as archive:
        member = next(i for i in archive.infolist() if '/data/' in i.filename)
    name_length, extra_length = np.frombuffer(
        bytes(data[member.header_offset + 26:member.header_offset + 30]), '<u2')
    data[member.header_offset + 30 + name_length + extra_length + 3] ^= 0x40
    flipped = tmp_path / 'flipped.pth'
    flipped.write_bytes(bytes(data))
    torch.save({'model': state}, tmp_path / 'legacy.pth', _use_new_zipfile_serialization=False)
    legacy = (tmp_path / 'legacy.pth').read_bytes()
    cut = tmp_path / 'cut.pth'
    cut.write_bytes(legacy[:len(legacy) * 3 // 4])
    for source, problem in ((flipped, 'fails its CRC check'), (cut, 'unexpected EOF')):
        result, dst = convert(tmp_path, source)
        assert result.returncode == 2 and 'Traceback' not in result.stderr, result.stderr
        assert f'{source}: not a readable checkpoint (' in result.stderr
        assert problem in result.stderr and not dst.exists()
    result, _ = convert(tmp_path, tmp_path / 'typo.pth')  # not "damaged in the download"
    assert result.returncode == 2
    assert f'{tmp_path}/typo.pth: checkpoint not found\n' in result.stderr


def test_a_state_dict_saved_inside_ddp_loses_its_module_prefix():
    """A model saved inside DistributedDataParallel has every key under ``module.``: the
    converter listed all of them as unknown, with no hint."""
    from ctvis.utils.d2_conversion import unwrap_d2_checkpoint
    state = official_state_dict('resnet50', 100, 40)
    wrapped = {'model': {f'module.{key}': value for key, value in state.items()}}
    assert unwrap_d2_checkpoint(wrapped, 'x.pth') == state
    assert list(convert_state_dict(unwrap_d2_checkpoint(wrapped, 'x.pth')).unmapped) == []
    # a prefix on some keys only is not a wrapper's: left as it is
    partly = dict(state, **{'module.extra': torch.zeros(1)})
    assert unwrap_d2_checkpoint(partly, 'x.pth') is partly
