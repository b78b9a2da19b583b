"""Install ctvis: ``pip install -e .`` (tools/setup_env.sh does this inside .venv/)."""
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
    zip_safe=False,
)
