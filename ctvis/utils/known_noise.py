"""Deprecation noise of the pinned stack that tools/train.py and tools/test.py silence.

Each entry is one exact message from one module inside torch/mmengine/mmdet/pycocotools that a
user cannot change and that names no problem in user code; filters match message and module,
never a whole category. ``import ctvis`` installs none of them (importing a library must not
change the process' warning filters or loggers): the tools enter :func:`known_noise_filtered`
for their run and add :class:`KnownLogNoiseFilter` to their Runner's logger. The test suite has
the same warning entries in setup.cfg (``filterwarnings``).
"""
import contextlib
import logging
import warnings
from typing import Iterator

__all__ = ['KNOWN_DEPRECATION_WARNINGS', 'KNOWN_LOG_NOISE', 'KnownLogNoiseFilter',
           'known_noise_filtered']

# (message regex, category, module regex)
KNOWN_DEPRECATION_WARNINGS = (
    # mmengine's package lookup for `mmdet::` config bases imports, then reloads, pkg_resources.
    (r'pkg_resources is deprecated as an API', DeprecationWarning,
     r'mmengine\.utils\.package_utils\Z'),
    (r'pkg_resources is deprecated as an API', DeprecationWarning, r'importlib\Z'),
    # mmengine AmpOptimWrapper (--amp on CUDA) builds torch.cuda.amp.GradScaler.
    (r'`torch\.cuda\.amp\.GradScaler\(args\.\.\.\)` is deprecated', FutureWarning,
     r'mmengine\.optim\.optimizer\.amp_optimizer_wrapper\Z'),
    # mmengine.runner.amp.autocast on CUDA asks torch.get_autocast_gpu_dtype().
    (r'torch\.get_autocast_gpu_dtype\(\) is deprecated', DeprecationWarning,
     r'mmengine\.runner\.amp\Z'),
    # three mmdet modules still enter torch.cuda.amp.autocast(enabled=False).
    (r'`torch\.cuda\.amp\.autocast\(args\.\.\.\)` is deprecated', FutureWarning,
     r'mmdet\.models\.(backbones\.csp_darknet|task_modules\.assigners\.sim_ota_assigner'
     r'|layers\.se_layer)\Z'),
    # mmdet imports MultiScaleDeformableAttention from its old mmcv location.
    (r'``MultiScaleDeformableAttention`` has been moved to ``mmcv\.ops\.multi_scale_deform_attn``',
     ImportWarning, r'mmcv\.cnn\.bricks\.transformer\Z'),
    # pycocotools' Cython Masks.__array__ predates numpy 2's copy keyword; every mask.decode()
    # warns (numpy falls back to the old call, results are right).
    (r"__array__ implementation doesn't accept a copy keyword", DeprecationWarning,
     r'pycocotools\.mask\Z'),
    # mmdet's deformable-attention encoder (CTVIS' pixel decoder) and four other mmdet modules
    # call torch.meshgrid without `indexing` (they mean today's default, 'ij'). torch warns once
    # per process, from torch.functional, at whichever call comes first: inside a tool run a
    # meshgrid call of your own is not reported either.
    (r'torch\.meshgrid: in an upcoming release, it will be required to pass the indexing',
     UserWarning, r'torch\.functional\Z'),
)

# mmengine's CheckpointHook and LoggerHook build a FileClient on every run, even when the config
# never mentions one; mmengine then logs these two WARNING lines about its own internals.
KNOWN_LOG_NOISE = frozenset({
    '"FileClient" will be deprecated in future. Please use io functions in '
    'https://mmengine.readthedocs.io/en/latest/api/fileio.html#file-io',
    '"HardDiskBackend" is the alias of "LocalBackend" and the former will be deprecated in '
    'future.',
})


class KnownLogNoiseFilter(logging.Filter):
    """Drops the log records of :data:`KNOWN_LOG_NOISE` (exact messages); add it to a logger."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg not in KNOWN_LOG_NOISE


@contextlib.contextmanager
def known_noise_filtered() -> Iterator[None]:
    """While active, :data:`KNOWN_DEPRECATION_WARNINGS` are ignored; on exit the warning filters
    are back as they were (``warnings.catch_warnings``)."""
    with warnings.catch_warnings():
        for message, category, module in KNOWN_DEPRECATION_WARNINGS:
            warnings.filterwarnings('ignore', message=message, category=category, module=module)
        yield
