"""Distributed runs of the tools, on GPUs and on a CPU-only torch (gloo).

On a machine without CUDA, plain mmengine 0.10.7 fails three ways under a launcher: configs ask
for the nccl backend; its launcher calls ``torch.cuda.set_device(local_rank)`` unconditionally
(``AttributeError: module 'torch._C' has no attribute '_cuda_setDevice'``); and its Runner hands
``device_ids=[LOCAL_RANK]`` to every DDP wrapper, which torch refuses for CPU modules. The tools
answer each in their own config and process, changing nothing inside mmengine:
:func:`choose_dist_backend` picks gloo, :func:`use_cpu_model_wrapper` selects
:class:`CPUDistributedDataParallel` through the config's ``model_wrapper_cfg``, and
:func:`init_cpu_process_group` creates the process group before the Runner does (the Runner skips
``init_dist`` when the process is already distributed).
"""
import datetime
import gc
import logging
import os
import sys
from typing import Any, Callable, Dict, Optional

import torch
import torch.distributed as torch_dist
from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.model.wrappers import MMDistributedDataParallel

from mmdet.registry import MODEL_WRAPPERS

__all__ = ['CPU_MODEL_WRAPPER', 'CPUDistributedDataParallel', 'choose_dist_backend',
           'use_cpu_model_wrapper', 'init_cpu_process_group', 'run_and_release_process_group',
           'release_process_group']

CPU_MODEL_WRAPPER = 'mmdet.CPUDistributedDataParallel'
"""``model_wrapper_cfg.type`` of :class:`CPUDistributedDataParallel` (with its registry's scope:
mmengine's Runner looks the type up in mmengine's root registry first)."""


@MODEL_WRAPPERS.register_module()
class CPUDistributedDataParallel(MMDistributedDataParallel):
    """``MMDistributedDataParallel`` that takes a model on the CPU (gloo).

    mmengine's Runner passes ``device_ids=[LOCAL_RANK]`` to every DDP subclass; torch's DDP
    accepts ``device_ids`` only for a module on one GPU, so they are dropped when every parameter
    of ``module`` is on the CPU. Anything else is MMDistributedDataParallel's.
    """

    def __init__(self, module: torch.nn.Module, device_ids: Optional[list] = None,
                 **kwargs: Any) -> None:
        if device_ids and all(p.device.type == 'cpu' for p in module.parameters()):
            device_ids = None
        super().__init__(module=module, device_ids=device_ids, **kwargs)


def choose_dist_backend(cfg: Config) -> None:
    """Use gloo where the config asks for nccl but this machine has no CUDA.

    mmengine passes ``env_cfg.dist_cfg.backend`` (default ``nccl``) to
    ``init_process_group`` as is, and nccl needs CUDA devices.
    """
    if torch.cuda.is_available() or cfg.get('env_cfg', {}).get('dist_cfg', {}).get(
            'backend', 'nccl') != 'nccl':
        return
    # merge_from_dict: Config.setdefault would hand back a copy for a missing key
    cfg.merge_from_dict({'env_cfg.dist_cfg.backend': 'gloo'})
    print_log('No CUDA device: using the gloo backend for distributed runs '
              '(env_cfg.dist_cfg.backend).', logger='current')


def use_cpu_model_wrapper(cfg: Config) -> None:
    """Without CUDA, wrap the model in :class:`CPUDistributedDataParallel` for distributed runs.

    A config without ``model_wrapper_cfg`` gets what the Runner would build by default
    (``broadcast_buffers=False``, the config's ``find_unused_parameters``) with that type; one
    whose wrapper is MMDistributedDataParallel (named or by default) gets the type only; a
    wrapper of another type is the config's own choice and stays.
    """
    if torch.cuda.is_available():
        return
    wrapper = cfg.get('model_wrapper_cfg')
    if wrapper is None:
        cfg.model_wrapper_cfg = dict(
            type=CPU_MODEL_WRAPPER, broadcast_buffers=False,
            find_unused_parameters=cfg.get('find_unused_parameters', False))
    elif wrapper.get('type', 'MMDistributedDataParallel') in (
            'MMDistributedDataParallel', 'mmengine.MMDistributedDataParallel'):
        wrapper['type'] = CPU_MODEL_WRAPPER
    else:
        return
    print_log(f'No CUDA device: model_wrapper_cfg.type={CPU_MODEL_WRAPPER} (DDP without '
              'device_ids) for distributed runs.', logger='current')


def init_cpu_process_group(launcher: str, dist_cfg: Dict[str, Any]) -> None:
    """Create the process group, as mmengine's ``init_dist`` would, where torch has no CUDA.

    Only for the ``pytorch`` (torchrun) and ``mpi`` launchers and the plain torch init backend;
    with CUDA, or once the process is distributed, this does nothing and the Runner initialises
    as usual. ``dist_cfg`` is the config's ``env_cfg.dist_cfg`` (``backend``, ``timeout`` in
    seconds, other ``init_process_group`` arguments).
    """
    if (launcher not in ('pytorch', 'mpi') or torch.cuda.is_available()
            or not torch_dist.is_available() or torch_dist.is_initialized()):
        return
    kwargs = dict(dist_cfg)
    if kwargs.pop('init_backend', 'torch') != 'torch':
        return
    backend = kwargs.pop('backend', 'gloo')
    if kwargs.get('timeout') is not None:
        kwargs['timeout'] = datetime.timedelta(seconds=kwargs['timeout'])
    if launcher == 'mpi':  # the environment mmengine's _init_dist_mpi derives from Open MPI's
        os.environ.setdefault('MASTER_PORT', '29500')
        if 'MASTER_ADDR' not in os.environ:
            raise KeyError('The environment variable MASTER_ADDR is not set')
        os.environ['WORLD_SIZE'] = os.environ['OMPI_COMM_WORLD_SIZE']
        os.environ['RANK'] = os.environ['OMPI_COMM_WORLD_RANK']
    torch_dist.init_process_group(backend=backend, **kwargs)


def run_and_release_process_group(work: Callable[[], None]) -> None:
    """Run a tool's work, then release the process group a launcher made, threads included.

    Why: with gloo, a worker thread can still be freeing the last collective's tensors when the
    interpreter shuts down; it then aborts a finished run ('terminate called without an active
    exception', exit code -6). Destroying the group only unregisters it: its threads stop when
    the last reference to it goes, and the Runner's DDP wrapper holds one. ``work`` builds and
    runs the Runner in its own frame, so once it returns the Runner is garbage to collect, and
    dropping the group joins its threads while the interpreter is fully alive.
    """
    try:
        work()
    finally:
        release_process_group()


def release_process_group() -> None:
    """Destroy the default process group and drop it, so its backend threads are joined now."""
    if not (torch_dist.is_available() and torch_dist.is_initialized()):
        return
    group = torch_dist.group.WORLD
    torch_dist.destroy_process_group()
    gc.collect()  # Runner -> model wrapper -> group, held in reference cycles
    other_holders = sys.getrefcount(group) - 2  # minus `group` and getrefcount's argument
    if other_holders > 0:
        print_log(f'the process group is still referenced {other_holders} times after the run; '
                  'its threads stay until exit (a gloo run may then abort at shutdown)',
                  logger='current', level=logging.WARNING)
    del group  # the last reference: torch joins the backend threads without the GIL
