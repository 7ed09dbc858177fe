"""Install resnest_mm into an existing OpenMMLab environment.

As mmdet ships: install_requires is only what ``import resnest_mm`` needs
and no OpenMMLab stack provides (requirements/runtime.txt: torch, numpy), mmcv
and mmengine are left to ``mim install`` (requirements/mminstall.txt) and
checked at import, and mmdet, mmseg, the tools' and the tests' packages are
extras: ``det``/``seg`` for OpenMMLab's distributions, ``onedl-det``/
``onedl-seg`` for OneDL's forks (the same modules under other names), so that
pip never installs one family over the other. The quickstart's exact stack
is requirements/lock.txt, which tools/setup.sh installs as constraints.
"""
import os.path as osp
from setuptools import find_packages, setup

HERE = osp.dirname(osp.abspath(__file__))


def get_version():
    """Read ``__version__`` without importing the package (needs torch)."""
    scope = {}
    with open(osp.join(HERE, 'resnest_mm', 'version.py')) as f:
        exec(compile(f.read(), 'version.py', 'exec'), scope)
    return scope['__version__']


def parse_requirements(name):
    """The requirement lines of ``requirements/<name>``, comments dropped."""
    with open(osp.join(HERE, 'requirements', name)) as f:
        lines = (line.split('#', 1)[0].strip() for line in f)
        return [line for line in lines if line]


with open(osp.join(HERE, 'README.md'), encoding='utf-8') as f:
    long_description = f.read()

extras = {
    'det': parse_requirements('det.txt'),
    'seg': parse_requirements('seg.txt'),
    'onedl-det': parse_requirements('onedl-det.txt'),
    'onedl-seg': parse_requirements('onedl-seg.txt'),
    'tools': parse_requirements('tools.txt'),
    'tests': parse_requirements('tests.txt'),
    'mim': parse_requirements('mminstall.txt'),
}
# all: OpenMMLab's family, everything except mmcv (mim) and the --no-deps
# references
extras['all'] = (
    extras['det'] + extras['seg'] + extras['tools'] + extras['tests'])

setup(
    name='resnest_mm',
    version=get_version(),
    description='ResNeSt backbone for mmdetection 3.x and mmsegmentation 1.x',
    long_description=long_description,
    long_description_content_type='text/markdown',
    packages=find_packages(include=['resnest_mm', 'resnest_mm.*']),
    python_requires='>=3.10',  # zip(strict=True) in backbone.py (vermin)
    install_requires=parse_requirements('runtime.txt'),
    extras_require=extras,
    classifiers=[
        'Operating System :: OS Independent',
        'Programming Language :: Python :: 3',
    ],
    zip_safe=False,
)
