"""``tools/benchmark.py``'s parts, one concern a module.

- :mod:`.models`: what is compared (ours, upstream mmdet, the authors',
  ResNet; fused variants; a config's model with either backbone);
- :mod:`.measure`: timing in turns, peak memory, the matmul peak, the machine;
- :mod:`.backbones`: the backbones in each memory layout;
- :mod:`.detector`: a Faster R-CNN with our backbone and with upstream's;
- :mod:`.onnx_runtime`: the exported segmentor and detector (to its neck) in
  ONNX Runtime against PyTorch eager;
- :mod:`.report`: the table.
"""
