"""The promotion gate on constructed score sets (pure function, no database)."""

from __future__ import annotations

import numpy as np
import pytest

from retraining.gate import GateError, GateRule, decide, paired_bootstrap_ci


def _scores(values: np.ndarray) -> dict[str, float]:
    return {f"case{i:03d}": float(v) for i, v in enumerate(values)}


@pytest.fixture
def champion() -> np.ndarray:
    return np.clip(np.random.default_rng(1).normal(0.90, 0.03, 60), 0, 1)


def test_clearly_better_candidate_is_promoted(champion):
    gain = np.random.default_rng(2).normal(0.02, 0.005, champion.size)
    decision = decide(_scores(champion + gain), _scores(champion))
    assert decision.promote and decision.stats["diff_ci"][0] > 0 and "no reference set" in decision.reason


def test_worse_candidate_is_refused(champion):
    decision = decide(_scores(champion - 0.01), _scores(champion))
    assert not decision.promote and "does not lie above 0" in decision.reason


def test_gain_within_noise_is_refused(champion):
    noise = np.random.default_rng(3).normal(0.0, 0.02, champion.size)
    noise -= noise.mean() - 0.001  # mean gain 0.001, far inside the noise
    decision = decide(_scores(champion + noise), _scores(champion))
    low, high = decision.stats["diff_ci"]
    assert not decision.promote and low <= 0 < high


def test_better_on_project_but_worse_on_reference_is_refused(champion):
    reference = np.full(40, 0.96)
    decision = decide(_scores(champion + 0.02), _scores(champion),
                      _scores(reference - 0.005), _scores(reference))
    assert not decision.promote and "reference set" in decision.reason
    assert decision.stats["reference_loss"] == pytest.approx(0.005)
    within = decide(_scores(champion + 0.02), _scores(champion), _scores(reference - 0.001), _scores(reference))
    assert within.promote  # a loss inside the margin (0.002) is allowed


def test_better_mean_but_worse_tail_is_refused(champion):
    candidate = champion + 0.03
    worst = np.argsort(champion)[:5]
    candidate[worst] = champion[worst] - 0.2  # the hardest cases get much worse
    decision = decide(_scores(candidate), _scores(champion), rule=GateRule(n_boot=500))
    assert not decision.promote and "p05 worse" in decision.reason


def test_different_cases_cannot_be_compared(champion):
    scores = _scores(champion)
    with pytest.raises(GateError, match="different cases"):
        decide({**scores, "extra": 0.9}, scores)


def test_bootstrap_ci_of_a_constant_difference_is_that_constant():
    low, high = paired_bootstrap_ci(np.full(10, 0.25), n_boot=100, seed=0, confidence=0.95)
    assert low == pytest.approx(0.25) and high == pytest.approx(0.25)
