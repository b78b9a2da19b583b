"""Install ctvis: ``pip install -e .`` (tools/setup_env.sh does this inside .venv/).

Builds one C++ extension, ``ctvis.ops._C`` (ctvis/ops/csrc/: the CPU kernel of multi-scale
deformable attention and the check of compressed RLE strings), against the torch found in the build
environment: install torch first and pass ``--no-build-isolation`` so that the extension matches it.
"""
import os.path as osp
import re

from setuptools import find_packages, setup

ROOT = osp.dirname(osp.abspath(__file__))


def read_version() -> str:
    with open(osp.join(ROOT, 'ctvis', 'version.py'), encoding='utf-8') as f:
        return re.search(r"__version__ = '([^']+)'", f.read()).group(1)


def read_requirements(name: str) -> list:
    """Requirement lines of ``requirements/<name>.txt`` without comments."""
    with open(osp.join(ROOT, 'requirements', f'{name}.txt'), encoding='utf-8') as f:
        lines = (line.split('#')[0].strip() for line in f)
        return [line for line in lines if line and not line.startswith('-')]


def cpu_extensions() -> tuple:
    """``(ext_modules, cmdclass)`` building ``ctvis.ops._C`` against the installed torch."""
    try:
        import torch
        from torch.utils.cpp_extension import BuildExtension, CppExtension
    except ImportError as error:
        raise SystemExit('ctvis builds a C++ extension against torch: install torch first, then '
                         'pip install --no-build-isolation -e . (tools/setup_env.sh does both)'
                         ) from error
    # at::parallel_for is inlined from ATen's headers: with torch's OpenMP backend the extension
    # must be compiled with OpenMP, or its loops would run on one thread.
    openmp = 'OpenMP' in torch.__config__.parallel_info()
    flags = ['-O3', '-fopenmp' if openmp else '-fopenmp-simd']
    sources = ['ms_deform_attn_cpu.cpp', 'rle_check.cpp', 'module.cpp']
    headers = ['ms_deform_attn_kernels.h', 'rle_check.h']
    extension = CppExtension(
        'ctvis.ops._C', [f'ctvis/ops/csrc/{name}' for name in sources],
        depends=[f'ctvis/ops/csrc/{name}' for name in headers],
        extra_compile_args=dict(cxx=flags), extra_link_args=['-fopenmp'] if openmp else [])
    return [extension], dict(build_ext=BuildExtension)


ext_modules, cmdclass = cpu_extensions()

setup(
    name='ctvis',
    version=read_version(),
    description='CTVIS: consistent training for online video instance '
    'segmentation, as an OpenMMLab plugin',
    long_description=open(osp.join(ROOT, 'README.md'), encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    python_requires='>=3.9',
    packages=find_packages(include=['ctvis', 'ctvis.*']),
    install_requires=['torch'] + read_requirements('runtime'),
    extras_require=dict(tests=read_requirements('tests')),
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    zip_safe=False,
)
