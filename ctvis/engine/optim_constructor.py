"""Parameter groups of the CTVIS recipe (spec §2.5): the learning rate and weight decay of each
parameter as the official ``train_ctvis.py`` (``Trainer.build_optimizer``) sets them.

The official rules apply together, per parameter:

* learning rate: ``base_lr * backbone_lr_mult`` for the parameters of every module whose name
  contains ``'backbone'`` (its norms and Swin's relative-position tables included), else
  ``base_lr``;
* weight decay 0 (``base_wd * mult``) for the parameters of normalization layers, for
  ``nn.Embedding`` weights and for parameters named in ``no_decay_keys``, else ``base_wd``;
* parameters that do not require gradients are left out.

mmengine's ``DefaultOptimWrapperConstructor`` cannot express them: a parameter matching a
``custom_keys`` entry takes only the longest matching entry and skips ``norm_decay_mult``, so a
``'backbone'`` key gives Swin's LayerNorms weight decay, and a ``'relative_position_bias_table'``
key drops the backbone's learning-rate multiplier.
"""
from collections import defaultdict
from typing import Dict, Iterator, List, Optional, Tuple

from mmengine.logging import print_log
from mmengine.optim import OptimWrapper
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm

from mmdet.registry import OPTIM_WRAPPER_CONSTRUCTORS, OPTIM_WRAPPERS, OPTIMIZERS

#: Normalization layers whose parameters get ``norm_decay_mult`` (the official list: batch, sync
#: batch, group, instance and layer norms).
NORM_LAYERS = (_BatchNorm, _InstanceNorm, nn.GroupNorm, nn.LayerNorm)


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class CTVISOptimWrapperConstructor:
    """Build an optimizer wrapper with the official CTVIS per-parameter rules.

    Parameters with equal (lr, weight decay) share one param group; groups are ordered by
    decreasing lr, then decreasing weight decay, so the first group (the one mmengine logs as
    ``lr``) holds the base settings.

    Args:
        optim_wrapper_cfg (dict): The ``optim_wrapper`` config without ``constructor`` and
            ``paramwise_cfg``: ``type`` (default ``'OptimWrapper'``), ``optimizer`` (with ``lr``
            and ``weight_decay``) and the wrapper's own arguments (``clip_grad`` ...).
        paramwise_cfg (dict, optional): Any of

            - ``backbone_lr_mult`` (float): lr multiplier of the parameters of modules whose
              name contains ``'backbone'``. Defaults to 1.
            - ``norm_decay_mult`` (float): weight-decay multiplier of the parameters of
              :data:`NORM_LAYERS`. Defaults to 1.
            - ``embed_decay_mult`` (float): weight-decay multiplier of ``nn.Embedding``
              weights. Defaults to 1.
            - ``no_decay_keys`` (Sequence[str]): parameters whose own name (the attribute,
              e.g. ``'relative_position_bias_table'``) is one of these get weight decay 0.
            - ``decayed_embeddings`` (Sequence[str]): ``nn.Embedding`` modules whose full name
              ends with one of these keep ``base_wd``: where an mmdet module holds in an
              embedding what the official module holds in a plain ``nn.Parameter``.
    """

    PARAMWISE_KEYS = ('backbone_lr_mult', 'norm_decay_mult', 'embed_decay_mult',
                      'no_decay_keys', 'decayed_embeddings')

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: Optional[dict] = None) -> None:
        name = type(self).__name__
        if not isinstance(optim_wrapper_cfg, dict) or 'optimizer' not in optim_wrapper_cfg:
            raise TypeError(f'{name}: optim_wrapper_cfg must be a dict with an optimizer, got '
                            f'{optim_wrapper_cfg!r}')
        self.optim_wrapper_cfg = dict(optim_wrapper_cfg)
        self.optimizer_cfg = dict(self.optim_wrapper_cfg.pop('optimizer'))
        for key in ('lr', 'weight_decay'):
            if not isinstance(self.optimizer_cfg.get(key), (int, float)):
                raise ValueError(f'{name}: the optimizer config needs a numeric {key}, got '
                                 f'{self.optimizer_cfg!r}')
        self.base_lr = float(self.optimizer_cfg['lr'])
        self.base_wd = float(self.optimizer_cfg['weight_decay'])
        paramwise_cfg = dict(paramwise_cfg or {})
        unknown = sorted(set(paramwise_cfg) - set(self.PARAMWISE_KEYS))
        if unknown:
            raise ValueError(f'{name}: unsupported paramwise_cfg keys {unknown}; it takes '
                             f'{list(self.PARAMWISE_KEYS)} (mmengine\'s custom_keys, bias_*, '
                             "dwconv_* ... belong to 'DefaultOptimWrapperConstructor')")
        self.backbone_lr_mult = float(paramwise_cfg.get('backbone_lr_mult', 1.0))
        self.norm_decay_mult = float(paramwise_cfg.get('norm_decay_mult', 1.0))
        self.embed_decay_mult = float(paramwise_cfg.get('embed_decay_mult', 1.0))
        self.no_decay_keys = self._names(paramwise_cfg, 'no_decay_keys')
        self.decayed_embeddings = self._names(paramwise_cfg, 'decayed_embeddings')

    def _names(self, paramwise_cfg: dict, key: str) -> Tuple[str, ...]:
        names = paramwise_cfg.get(key, ())
        if isinstance(names, str) or not all(isinstance(n, str) and n for n in names):
            raise TypeError(f'{type(self).__name__}: paramwise_cfg.{key} must be a sequence of '
                            f'non-empty names, got {names!r}')
        return tuple(names)

    def _settings(self, model: nn.Module) -> Iterator[Tuple[str, nn.Parameter, float, float]]:
        """(full name, parameter, lr, weight decay) of each trainable parameter, once each."""
        seen = set()
        for module_name, module in model.named_modules():
            is_norm = isinstance(module, NORM_LAYERS)
            is_embedding = (isinstance(module, nn.Embedding)
                            and not module_name.endswith(self.decayed_embeddings))
            lr = self.base_lr * (self.backbone_lr_mult if 'backbone' in module_name else 1.0)
            for param_name, param in module.named_parameters(recurse=False):
                if not param.requires_grad or id(param) in seen:
                    continue
                seen.add(id(param))
                decay_mult = 0.0 if param_name in self.no_decay_keys else 1.0
                if is_norm:
                    decay_mult *= self.norm_decay_mult
                if is_embedding:
                    decay_mult *= self.embed_decay_mult
                full_name = f'{module_name}.{param_name}' if module_name else param_name
                yield full_name, param, lr, self.base_wd * decay_mult

    def param_settings(self, model: nn.Module) -> Dict[str, Tuple[float, float]]:
        """Full parameter name -> (lr, weight_decay) of every trainable parameter of ``model``
        (a parameter shared by several modules is listed once, under its first name)."""
        return {name: (lr, wd) for name, _, lr, wd in self._settings(model)}

    def param_groups(self, model: nn.Module) -> List[dict]:
        """The optimizer's param groups: one per distinct (lr, weight_decay)."""
        grouped: Dict[Tuple[float, float], List[nn.Parameter]] = defaultdict(list)
        for _, param, lr, wd in self._settings(model):
            grouped[(lr, wd)].append(param)
        if not grouped:
            raise ValueError(f'{type(self).__name__}: {type(model).__name__} has no parameter '
                             'that requires a gradient')
        groups = [dict(params=group, lr=lr, weight_decay=wd)
                  for (lr, wd), group in sorted(grouped.items(), reverse=True)]
        print_log(f'{type(self).__name__}: ' + '; '.join(
            f"lr {g['lr']:g} weight decay {g['weight_decay']:g}: {len(g['params'])} tensors, "
            f"{sum(p.numel() for p in g['params']):,} values" for g in groups),
            logger='current')
        return groups

    def __call__(self, model: nn.Module) -> OptimWrapper:
        if hasattr(model, 'module'):  # a DDP / FSDP wrapper
            model = model.module
        optimizer_cfg = dict(self.optimizer_cfg, params=self.param_groups(model))
        optimizer = OPTIMIZERS.build(optimizer_cfg)
        optim_wrapper_cfg = dict(self.optim_wrapper_cfg)
        optim_wrapper_cfg.setdefault('type', 'OptimWrapper')
        return OPTIM_WRAPPERS.build(optim_wrapper_cfg, default_args=dict(optimizer=optimizer))


__all__ = ['CTVISOptimWrapperConstructor', 'NORM_LAYERS']
