"""ctvis.utils: safe checkpoint loading, checkpoint conversion, and the set-up of the tools.

Importing it changes nothing outside ctvis: it registers :class:`CPUDistributedDataParallel` in
mmdet's ``MODEL_WRAPPERS`` and defines functions. Safe checkpoint loading for mmengine is entered
explicitly (:func:`safe_checkpoint_loading`); docs/plugin.md says what ``import ctvis`` does.
"""
from .allocator import malloc_tuning_skipped, tune_malloc
from .checkpoint import (CorruptCheckpointError, UnsafeCheckpointError,
                         checkpoint_file_error, checkpoint_globals_allowed, checkpoint_problem,
                         checkpoint_safe_globals, safe_load_file, safe_load_url, safe_torch_load,
                         url_cache_file, weights_problem)
from .checkpoint_loaders import safe_checkpoint_loading
from .checkpoint_trust import TRUSTED_CHECKPOINTS_ENV, file_sha256, trust_checkpoint
from .config_tools import builds_class, update_step
from .distributed import (CPU_MODEL_WRAPPER, CPUDistributedDataParallel, choose_dist_backend,
                          init_cpu_process_group, run_and_release_process_group,
                          use_cpu_model_wrapper)
from .known_noise import KnownLogNoiseFilter, known_noise_filtered
from .tool_config import (RUNNER_KEYS, ConfigError, apply_cfg_options, build_runner,
                          load_tool_config, output_file_problem, output_folder_problem,
                          parse_tool_args, preview, read_config, tool_run, unknown_names)

__all__ = [
    'malloc_tuning_skipped', 'tune_malloc', 'builds_class', 'update_step',
    'TRUSTED_CHECKPOINTS_ENV', 'CorruptCheckpointError', 'UnsafeCheckpointError',
    'checkpoint_file_error', 'checkpoint_globals_allowed', 'checkpoint_problem',
    'checkpoint_safe_globals', 'file_sha256',
    'safe_checkpoint_loading', 'safe_load_file', 'safe_load_url', 'safe_torch_load',
    'trust_checkpoint', 'url_cache_file', 'weights_problem', 'CPU_MODEL_WRAPPER',
    'CPUDistributedDataParallel', 'choose_dist_backend', 'init_cpu_process_group',
    'run_and_release_process_group', 'use_cpu_model_wrapper', 'KnownLogNoiseFilter',
    'known_noise_filtered', 'ConfigError', 'RUNNER_KEYS', 'load_tool_config', 'apply_cfg_options',
    'build_runner', 'parse_tool_args', 'read_config', 'tool_run', 'unknown_names',
    'output_file_problem', 'output_folder_problem', 'preview'
]
