"""glibc malloc settings for CPU runs: freed memory stays in the process for the next frame.

By default glibc serves every block above a few MiB with a fresh ``mmap`` and returns it to the
system on free, so each large activation of every frame (an R50 encoder's feed-forward layer alone
allocates 35 MB) is faulted in page by page and zeroed again by the kernel: 56,000 to 120,000
page faults per 360x640 frame. With the settings below the heap keeps those pages and the next
frame reuses them (no faults after the first frame): measured 6 % less time per R50 frame at
360x640 and 2 threads (docs/benchmarks.md). The price: the process keeps its peak heap instead of
returning it, which is what a video stream or a training loop needs again at the next step anyway.

The tools apply it at start-up (:func:`tune_malloc`), once per process and never on import; it is
skipped when the user chose otherwise: ``CTVIS_MALLOC_TUNING=0``, glibc's own malloc variables
(``GLIBC_TUNABLES`` with ``glibc.malloc.*``, ``MALLOC_*_``), or another allocator preloaded
(jemalloc, tcmalloc, mimalloc through ``LD_PRELOAD``).
"""
import ctypes
import ctypes.util
import os
import sys
from typing import Mapping, Optional

ENV = 'CTVIS_MALLOC_TUNING'
# mallopt parameters (malloc.h) and the values ctvis sets
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_MAX = -1, -2, -4
SETTINGS = (
    (M_MMAP_MAX, 0),              # every block from the heap, none mmap'ed per allocation
    (M_TRIM_THRESHOLD, 1 << 30),  # return free heap to the system only above 1 GiB
    (M_TOP_PAD, 64 << 20),        # grow the heap 64 MiB at a time
)
GLIBC_MALLOC_ENV = ('MALLOC_ARENA_MAX', 'MALLOC_MMAP_MAX_', 'MALLOC_MMAP_THRESHOLD_',
                    'MALLOC_TOP_PAD_', 'MALLOC_TRIM_THRESHOLD_')
OTHER_ALLOCATORS = ('jemalloc', 'tcmalloc', 'mimalloc')


def malloc_tuning_skipped(environ: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """Why :func:`tune_malloc` leaves malloc alone in this environment, or None if it applies."""
    environ = os.environ if environ is None else environ
    if environ.get(ENV, '1').strip().lower() in ('0', 'false', 'no', 'off'):
        return f'{ENV}={environ[ENV]}'
    if not sys.platform.startswith('linux'):
        return f'not glibc ({sys.platform})'
    preloaded = [name for name in OTHER_ALLOCATORS if name in environ.get('LD_PRELOAD', '')]
    if preloaded:
        return f'{preloaded[0]} preloaded (LD_PRELOAD)'
    if 'glibc.malloc.' in environ.get('GLIBC_TUNABLES', ''):
        return 'GLIBC_TUNABLES sets glibc.malloc.*'
    chosen = [name for name in GLIBC_MALLOC_ENV if name in environ]
    if chosen:
        return f'{chosen[0]} is set'
    return None


def tune_malloc() -> str:
    """Apply :data:`SETTINGS` to glibc's malloc of this process unless the user chose otherwise.

    Returns:
        str: What happened, for the tool's log: ``'glibc malloc tuned'`` or
        ``'glibc malloc left as is: <reason>'``.
    """
    reason = malloc_tuning_skipped()
    if reason is None:
        libc_name = ctypes.util.find_library('c')
        try:
            mallopt = ctypes.CDLL(libc_name).mallopt if libc_name else None
        except (OSError, AttributeError):
            mallopt = None
        if mallopt is None:
            reason = 'no glibc mallopt in this process'
        elif not all(mallopt(param, value) == 1 for param, value in SETTINGS):
            reason = 'mallopt refused the settings'
    return 'glibc malloc tuned' if reason is None else f'glibc malloc left as is: {reason}'
