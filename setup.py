from setuptools import find_packages, setup

setup(
    name='resnest_mm',
    version='0.1.0',
    description='ResNeSt backbone for mmdetection 3.x and mmsegmentation 1.x',
    packages=find_packages(include=['resnest_mm', 'resnest_mm.*']),
    python_requires='>=3.11,<3.12',
    # The stack that works together (see README). mmcv must be built from source with
    # --no-build-isolation after torch; tools/setup.sh does that in the right order.
    install_requires=[
        'torch==2.13.0',
        'mmengine==0.10.7',
        'mmcv==2.1.0',
        'mmdet==3.3.0',
        'mmsegmentation==1.2.2',
        'ftfy',  # imported by mmseg 1.2.2 without being declared
        'regex',  # likewise
        'cityscapesscripts==2.3.0',  # tools/convert_cityscapes.py, Cityscapes demo data
    ],
    extras_require={
        'tests': ['pytest', 'resnest==0.0.5', 'mmpretrain==1.2.0'],
        'onnx': ['onnx==1.23.2', 'onnxruntime==1.31.1', 'onnxscript==0.7.2'],
    },
)
