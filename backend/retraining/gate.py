"""The promotion gate: a pure decision on per-case scores (no Django, no ml).

A candidate replaces the champion only when all three hold:

1. on the project's frozen test split, the paired bootstrap 95 % lower bound of
   mean(candidate Dice − champion Dice) over the same cases is above 0;
2. its 5th percentile of case Dice (p05) is not below the champion's;
3. on the reference set its mean Dice is at most ``margin`` (default 0.002) below the champion's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

DEFAULT_MARGIN = 0.002


class GateError(ValueError):
    """The score sets cannot be compared (different cases, empty)."""


@dataclass(frozen=True)
class GateRule:
    """Parameters of the gate."""

    margin: float = DEFAULT_MARGIN
    n_boot: int = 2000
    seed: int = 0
    confidence: float = 0.95


@dataclass(frozen=True)
class GateDecision:
    """The outcome: ``promote`` and a reason a person can read, with the numbers behind it."""

    promote: bool
    reason: str
    stats: dict[str, Any] = field(default_factory=dict)


def _paired(candidate: Mapping[str, float], champion: Mapping[str, float], what: str) -> tuple[np.ndarray, np.ndarray]:
    """The two score arrays over the same cases, in a fixed order."""
    if not candidate:
        raise GateError(f"{what}: no scored case")
    if set(candidate) != set(champion):
        missing = sorted(set(candidate) ^ set(champion))[:5]
        raise GateError(f"{what}: candidate and champion were scored on different cases (e.g. {missing})")
    cases = sorted(candidate)
    return (np.array([candidate[c] for c in cases], np.float64), np.array([champion[c] for c in cases], np.float64))


def paired_bootstrap_ci(diff: np.ndarray, n_boot: int, seed: int, confidence: float) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of paired differences ``diff`` (N,)."""
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(n_boot, len(diff)))].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    return float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


def decide(candidate: Mapping[str, float], champion: Mapping[str, float],
           reference_candidate: Mapping[str, float] | None = None,
           reference_champion: Mapping[str, float] | None = None, rule: GateRule = GateRule()) -> GateDecision:
    """Whether the candidate replaces the champion.

    Args:
        candidate, champion: case Dice on the project's test split, ``{case: dice}``, same cases.
        reference_candidate, reference_champion: the same on the reference set, or both ``None``
            when the modality has none (the reference check is then skipped and said so).
        rule: margin and bootstrap settings.

    Raises:
        GateError: the score sets do not cover the same cases.
    """
    cand, champ = _paired(candidate, champion, "project test split")
    low, high = paired_bootstrap_ci(cand - champ, rule.n_boot, rule.seed, rule.confidence)
    p05_cand, p05_champ = float(np.percentile(cand, 5)), float(np.percentile(champ, 5))
    stats: dict[str, Any] = {
        "n_cases": len(cand), "candidate_mean": float(cand.mean()), "champion_mean": float(champ.mean()),
        "diff_mean": float((cand - champ).mean()), "diff_ci": [low, high],
        "candidate_p05": p05_cand, "champion_p05": p05_champ, "margin": rule.margin,
    }
    reasons: list[str] = []
    if low <= 0:
        reasons.append(f"test-split gain not shown: 95 % CI of mean Dice difference [{low:+.4f}, {high:+.4f}] "
                       "does not lie above 0")
    if p05_cand < p05_champ:
        reasons.append(f"p05 worse: {p05_cand:.4f} < champion {p05_champ:.4f}")
    if (reference_candidate is None) != (reference_champion is None):
        raise GateError("reference set: give both score sets or neither")
    if reference_candidate is not None and reference_champion is not None:
        ref_cand, ref_champ = _paired(reference_candidate, reference_champion, "reference set")
        loss = float(ref_champ.mean() - ref_cand.mean())
        stats.update(reference_candidate_mean=float(ref_cand.mean()), reference_champion_mean=float(ref_champ.mean()),
                     reference_loss=loss, reference_cases=len(ref_cand))
        if loss > rule.margin:
            reasons.append(f"reference set: mean Dice {loss:.4f} below the champion (allowed {rule.margin:.4f})")
    else:
        stats["reference_loss"] = None
    if reasons:
        return GateDecision(False, "; ".join(reasons), stats)
    summary = f"mean Dice {stats['candidate_mean']:.4f} vs {stats['champion_mean']:.4f}, CI of gain [{low:+.4f}, {high:+.4f}]"
    if stats["reference_loss"] is None:
        summary += "; no reference set for this modality"
    return GateDecision(True, f"better on the test split: {summary}", stats)
