"""Training: a generic :class:`Trainer` plus the chest X-ray run driver."""

from ml.training.trainer import TrainConfig, Trainer, TrainingConfigError, per_case_dice, plot_curves, seed_everything

__all__ = ["TrainConfig", "Trainer", "TrainingConfigError", "per_case_dice", "plot_curves", "seed_everything"]
