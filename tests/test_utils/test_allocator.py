"""glibc malloc tuning of the tools: when it applies, and that freed memory is reused."""
import os
import subprocess
import sys

import pytest

from conftest import REPO
from ctvis.utils import malloc_tuning_skipped

pytestmark = pytest.mark.skipif(not sys.platform.startswith('linux'), reason='glibc only')

# the last of four 64 MB allocations: page faults counted while it is filled
REUSE_PROBE = '''
import resource, sys
import torch
from ctvis.utils import tune_malloc
print(tune_malloc())
for _ in range(4):  # the heap settles after the first two
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = torch.ones(16 << 20)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    del block
print(faults)
'''


def probe(env: dict) -> tuple:
    base = {k: v for k, v in os.environ.items()
            if k != 'CTVIS_MALLOC_TUNING' and not k.startswith('MALLOC_')}
    base['PYTHONPATH'] = REPO
    out = subprocess.run([sys.executable, '-c', REUSE_PROBE], capture_output=True, text=True,
                         check=True, env=dict(base, **env)).stdout.split('\n')
    return out[0], int(out[1])


def test_tuned_malloc_reuses_freed_blocks_without_page_faults():
    message, faults = probe({})
    assert message == 'glibc malloc tuned'
    assert faults < 1000  # 16,384 pages of 4 KiB, none faulted in again


def test_opting_out_keeps_glibcs_fresh_mmap_per_large_block():
    message, faults = probe({'CTVIS_MALLOC_TUNING': '0'})
    assert message == 'glibc malloc left as is: CTVIS_MALLOC_TUNING=0'
    assert faults > 10000


@pytest.mark.parametrize('env, reason', [
    ({}, None),
    ({'CTVIS_MALLOC_TUNING': '1'}, None),
    ({'CTVIS_MALLOC_TUNING': 'off'}, 'CTVIS_MALLOC_TUNING=off'),
    ({'LD_PRELOAD': '/usr/lib/x86_64-linux-gnu/libjemalloc.so.2'}, 'jemalloc preloaded'),
    ({'LD_PRELOAD': 'libtcmalloc_minimal.so.4'}, 'tcmalloc preloaded'),
    ({'LD_PRELOAD': '/opt/libfoo.so'}, None),
    ({'GLIBC_TUNABLES': 'glibc.malloc.trim_threshold=0'}, 'GLIBC_TUNABLES sets glibc.malloc'),
    ({'GLIBC_TUNABLES': 'glibc.cpu.hwcaps=-AVX512F'}, None),
    ({'MALLOC_ARENA_MAX': '2'}, 'MALLOC_ARENA_MAX is set'),
    ({'MALLOC_TRIM_THRESHOLD_': '0'}, 'MALLOC_TRIM_THRESHOLD_ is set'),
])
def test_user_choices_are_respected(env, reason):
    skipped = malloc_tuning_skipped(env)
    if reason is None:
        assert skipped is None
    else:
        assert skipped is not None and skipped.startswith(reason)
