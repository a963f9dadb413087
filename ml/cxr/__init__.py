"""Chest X-ray lung segmentation: ``data`` (manifests, datasets, reading files), ``preprocessing``
(intensity and letterbox geometry), ``inference`` (``CXRPredictor``), ``postprocess``, ``evaluation``,
``train`` (run driver over the generic trainer), ``classical`` baseline, ``packaging`` of shipped
weights, ``bench``, and ``api`` (the verbs the CLI and :mod:`ml` call: train, evaluate, predict, bench).
"""
