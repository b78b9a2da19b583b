"""Compiled operators of ctvis (built by ``pip install -e .``, see setup.py)."""
from .multi_scale_deform_attn import (extension_available, load_extension, ms_deform_attn,
                                      multi_scale_deformable_attn_cpu)
from .rle_check import RLECheck, check_rle_strings, rle_check_compiled

__all__ = [
    'extension_available', 'load_extension', 'ms_deform_attn', 'multi_scale_deformable_attn_cpu',
    'RLECheck', 'check_rle_strings', 'rle_check_compiled'
]
