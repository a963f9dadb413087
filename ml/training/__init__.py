"""Generic training (modality-free): :class:`Trainer` over any dataset of ``(image, labels)`` pairs.

The modality run drivers are :mod:`ml.cxr.train` and :mod:`ml.ct.train`; deep supervision
(:mod:`ml.training.deep_supervision`) is a trainer option a config switches on.
"""

from ml.training.trainer import TrainConfig, Trainer, TrainingConfigError, per_case_dice, plot_curves, seed_everything

__all__ = ["TrainConfig", "Trainer", "TrainingConfigError", "per_case_dice", "plot_curves", "seed_everything"]
