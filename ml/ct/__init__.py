"""CT lung segmentation: reading (``io``), ``data``, ``preprocessing``, the slice-wise ``network``,
``inference`` (``CTPredictor``), 3-D ``postprocess``, ``quantify``, ``evaluation``, ``train``,
``classical`` baseline, ``packaging`` of shipped weights, ``report``, and ``api`` (the verbs the CLI
and :mod:`ml` call: train, evaluate, predict, bench).
"""

from ml.formats import VOLUME_SUFFIXES

__all__ = ["VOLUME_SUFFIXES"]
