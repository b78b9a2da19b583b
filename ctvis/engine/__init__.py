"""Training-engine components: the CTVIS optimizer parameter groups, mixed precision that falls
back to fp32 where there is no CUDA, and the random-state hook that makes resumed runs exact."""
from .amp import AutoAmpTestLoop, AutoAmpValLoop, amp_available, auto_amp_optim_wrapper
from .optim_constructor import CTVISOptimWrapperConstructor
from .rng_state_hook import RNGStateHook

__all__ = ['AutoAmpTestLoop', 'AutoAmpValLoop', 'CTVISOptimWrapperConstructor', 'RNGStateHook',
           'amp_available', 'auto_amp_optim_wrapper']
