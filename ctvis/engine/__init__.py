"""Training-engine components: the CTVIS optimizer parameter groups and mixed precision that
falls back to fp32 where there is no CUDA."""
from .amp import (AutoAmpTestLoop, AutoAmpValLoop, amp_available,  # noqa: F401
                  auto_amp_optim_wrapper)
from .optim_constructor import CTVISOptimWrapperConstructor  # noqa: F401
from .rng_state_hook import RNGStateHook  # noqa: F401

__all__ = ['AutoAmpTestLoop', 'AutoAmpValLoop', 'CTVISOptimWrapperConstructor', 'amp_available',
           'auto_amp_optim_wrapper']
