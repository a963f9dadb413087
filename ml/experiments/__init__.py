"""Measurements behind the shipped models' choices; the product (backend, CLI, ``ml.cxr``,
``ml.ct``) imports nothing from here.

Each module runs as ``python -m ml.experiments.<name> --help`` and states in its docstring the
question it answers; the findings, their numbers and the commands that reproduce them are in
``docs/ml-experiments.md``.

* ``ceiling``: how much of the X-ray error is the 256-pixel working resolution.
* ``ablation``: what each X-ray post-processing step is worth.
* ``compare``: architectures trained under the same budget (U-Net, residual U-Net, attention U-Net).
* ``shape_prior``: what a learned lung-shape prior adds to the X-ray model.
* ``ct_ceiling``: how far a CT reference surface follows the image (a ceiling for HU-boundary
  methods such as the rim refinement).
"""
