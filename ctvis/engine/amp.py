"""Mixed precision as the official recipe trains and evaluates (spec §2.5), decided at build time.

The official code trains with detectron2's ``AMPTrainer`` (fp16 autocast, a dynamic
``GradScaler``, the gradients unscaled before clipping) and evaluates under fp16 autocast. The
same in mmengine is ``AmpOptimWrapper(dtype='float16', loss_scale='dynamic')`` and the loops'
``fp16=True``; but ``AmpOptimWrapper`` refuses to run without a GPU, and mmengine's loops would
autocast a CPU run to bfloat16. The components below use mixed precision where the model runs
on CUDA and plain fp32 elsewhere, saying so in one log line per run.
"""
from typing import Dict, List, Union

import torch
from mmengine.device import get_device
from mmengine.evaluator import Evaluator
from mmengine.logging import MMLogger
from mmengine.optim import AmpOptimWrapper, OptimWrapper
from mmengine.runner import TestLoop, ValLoop
from torch.utils.data import DataLoader

from mmdet.registry import LOOPS, OPTIM_WRAPPERS

FALLBACK_MESSAGE = ('mixed precision (fp16 autocast) needs CUDA, and the device here is {}: '
                    'training and evaluation run in fp32')
_warned_loggers = set()  # names of the loggers (one per Runner) that logged the fallback


def amp_available() -> bool:
    """Whether the model runs on CUDA, where fp16 mixed precision applies.

    Where it does not, logs :data:`FALLBACK_MESSAGE` once per current ``MMLogger`` instance
    (mmengine's Runner creates one per run), however many components ask.
    """
    device = get_device()
    if device == 'cuda':
        return True
    logger = MMLogger.get_current_instance()
    if logger.instance_name not in _warned_loggers:
        _warned_loggers.add(logger.instance_name)
        logger.warning(FALLBACK_MESSAGE.format(device))
    return False


def auto_amp_optim_wrapper(optimizer: torch.optim.Optimizer,
                           loss_scale: Union[str, float, dict] = 'dynamic',
                           dtype: Union[str, torch.dtype, None] = 'float16',
                           **kwargs) -> OptimWrapper:
    """``AmpOptimWrapper(loss_scale, dtype, **kwargs)`` on CUDA, else ``OptimWrapper(**kwargs)``.

    Registered as ``type='AutoAmpOptimWrapper'``. ``kwargs`` are those of ``OptimWrapper``
    (``clip_grad``, ``accumulative_counts``); mmengine unscales the gradients before clipping.
    """
    if amp_available():
        return AmpOptimWrapper(optimizer=optimizer, loss_scale=loss_scale, dtype=dtype, **kwargs)
    return OptimWrapper(optimizer=optimizer, **kwargs)


OPTIM_WRAPPERS.register_module(name='AutoAmpOptimWrapper', module=auto_amp_optim_wrapper)


@LOOPS.register_module()
class AutoAmpValLoop(ValLoop):
    """mmengine's ``ValLoop`` under fp16 autocast on CUDA, in fp32 elsewhere."""

    def __init__(self, runner, dataloader: Union[DataLoader, Dict],
                 evaluator: Union[Evaluator, Dict, List]) -> None:
        super().__init__(runner, dataloader, evaluator, fp16=amp_available())


@LOOPS.register_module()
class AutoAmpTestLoop(TestLoop):
    """mmengine's ``TestLoop`` under fp16 autocast on CUDA, in fp32 elsewhere."""

    def __init__(self, runner, dataloader: Union[DataLoader, Dict],
                 evaluator: Union[Evaluator, Dict, List]) -> None:
        super().__init__(runner, dataloader, evaluator, fp16=amp_available())


__all__ = ['AutoAmpTestLoop', 'AutoAmpValLoop', 'FALLBACK_MESSAGE', 'amp_available',
           'auto_amp_optim_wrapper']
