"""``tools/benchmark.py``'s parts, one concern a module.

- :mod:`.models`: what is compared (ours, upstream mmdet, the authors',
  ResNet);
- :mod:`.measure`: timing in turns, peak memory, the matmul peak, the machine;
- :mod:`.backbones`: the backbones in each memory layout;
- :mod:`.detector`: a Faster R-CNN with our backbone and with upstream's;
- :mod:`.report`: the table.
"""
