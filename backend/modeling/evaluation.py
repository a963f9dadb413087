"""Scoring a registered model version on a manifest split with ``ml.evaluate`` (the only ml call of evaluation).

Returns the summary (``summary.json``) and the per-case Dice (``per_case.csv``) keyed
``<dataset>/<case>`` (X-ray) or ``<case>`` (CT), which the promotion gate pairs across models.
"""

from __future__ import annotations

import csv
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .inference import card_reference
from .models import ModelVersion

logger = logging.getLogger(__name__)


class EvaluationError(ValueError):
    """A model could not be scored (unreadable manifest, unknown model); names the model and manifest."""


@dataclass(frozen=True)
class Scores:
    """What one evaluation produced: ``summary`` (mean / median / p05 Dice with CIs, HD95, ...) and case Dice."""

    summary: dict[str, Any]
    case_dice: dict[str, float]
    out_dir: Path


def _case_dice(row: dict[str, str]) -> float:
    """Case Dice of a per-case row: ``dice`` (X-ray), or the mean of right and left (CT), lung Dice without sides."""
    if row.get("dice") not in (None, ""):
        return float(row["dice"])
    sides = [float(row[k]) for k in ("dice_right", "dice_left") if row.get(k) not in (None, "")]
    sides = [v for v in sides if not math.isnan(v)]
    return sum(sides) / len(sides) if sides else float(row.get("dice_lung") or "nan")


def read_case_dice(per_case_csv: Path) -> dict[str, float]:
    """``{case key: Dice}`` from an ``ml evaluate`` ``per_case.csv``."""
    with per_case_csv.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {(f"{r['dataset']}/{r['case']}" if r.get("dataset") else r["case"]): _case_dice(r) for r in rows}


def evaluate_version(version: ModelVersion, manifest: str | Path, split: str, out_dir: str | Path) -> Scores:
    """Score ``version`` on ``split`` of ``manifest``; writes ``per_case.csv`` and ``summary.json`` in ``out_dir``.

    Raises:
        EvaluationError: ml refused the model or the manifest.
    """
    import ml

    out = Path(out_dir)
    reference = card_reference(version.name, version.weights_file)
    try:
        summary = ml.evaluate(reference, manifest, split, out)
    except (LookupError, ValueError, FileNotFoundError) as exc:
        raise EvaluationError(f"model {version.name} on {manifest} ({split}): {exc}") from exc
    scores = Scores(summary=summary, case_dice=read_case_dice(out / "per_case.csv"), out_dir=out)
    logger.info("evaluated %s on %s (%s): %d cases, Dice %.4f", version.name, manifest, split, len(scores.case_dice),
                float(summary.get("dice_mean", float("nan"))))
    return scores
