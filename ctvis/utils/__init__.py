"""ctvis.utils: the stack compatibility fixes, checkpoint conversion, and the config set-up of
the tools."""
# compat first: it silences import-time noise of the mmengine modules imported below.
from .compat import (TRUSTED_CHECKPOINTS_ENV, CorruptCheckpointError,  # isort:skip
                     UnsafeCheckpointError, checkpoint_problem, safe_load_file, safe_load_url,
                     trust_checkpoint)
from .tool_config import (RUNNER_KEYS, ConfigError, apply_cfg_options,  # noqa: E402
                          build_runner, choose_dist_backend, load_tool_config,
                          parse_tool_args, run_and_release_process_group)

__all__ = [
    'TRUSTED_CHECKPOINTS_ENV', 'CorruptCheckpointError', 'UnsafeCheckpointError',
    'checkpoint_problem', 'safe_load_file', 'safe_load_url', 'trust_checkpoint', 'ConfigError',
    'RUNNER_KEYS', 'load_tool_config', 'apply_cfg_options', 'choose_dist_backend', 'build_runner',
    'parse_tool_args', 'run_and_release_process_group'
]
