"""``manage.py demo_loop`` at a tiny scale on the real data: every round is scored, the gate decides each candidate."""

from __future__ import annotations

import json

import pytest
from django.core.management import call_command

pytestmark = [pytest.mark.realdata, pytest.mark.django_db(transaction=True), pytest.mark.timeout(900)]


def test_demo_loop_runs_rounds_through_the_gate(shared_data, settings, tmp_path):
    settings.PLEURA_REFERENCE_SETS = {}
    call_command("demo_loop", "--rounds", "2", "--per-round", "12", "--test-pool", "12", "--adult", "12",
                 "--size", "64", "--epochs", "2", "--minutes", "1", "--out", str(tmp_path / "out"))
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [r["round"] for r in results] == [0, 1, 2]
    assert all(0.0 <= r["dice_mean"] <= 1.0 and len(r["dice_ci"]) == 2 for r in results)
    decided = [r for r in results[1:] if r["candidate"]]
    assert decided and all(r["promoted"] is not None and r["reason"] for r in decided)
    assert (tmp_path / "out" / "dice_per_round.png").stat().st_size > 0
