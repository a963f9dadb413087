"""Quality of the shipped default chest X-ray model on the external test split (real data)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ml.registry import ModelNotFoundError, resolve

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def external_summary(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    import torch

    from ml.cxr.evaluation import evaluate_model

    try:
        resolve("cxr")
    except ModelNotFoundError as exc:
        pytest.fail(f"no shipped default chest X-ray model: {exc}")
    torch.set_num_threads(2)
    out = tmp_path_factory.mktemp("eval_test")
    return evaluate_model("cxr", shared_data / "cxr" / "manifest.csv", "test", out)


def test_external_test_dice(external_summary: dict) -> None:
    assert external_summary["n_cases"] == 72
    assert external_summary["dice_mean"] >= 0.96


def test_external_test_sides_correct(external_summary: dict) -> None:
    assert external_summary["sides_correct_fraction"] == 1.0


def test_evaluate_cli_writes_required_keys(shared_data: Path, tmp_path: Path) -> None:
    import json

    from ml.cli import main

    manifest = tmp_path / "manifest.csv"
    rows = (shared_data / "cxr" / "manifest.csv").read_text().splitlines()
    montgomery = [r for r in rows[1:] if r.startswith("montgomery")][:3]
    manifest.write_text("\n".join([rows[0], *montgomery]) + "\n")
    for ds in ("montgomery",):
        (tmp_path / ds).symlink_to(shared_data / "cxr" / ds)
    out = tmp_path / "eval"
    assert main(["evaluate", "--model", "cxr", "--manifest", str(manifest), "--split", "test",
                 "--out", str(out), "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    for key in ("dice_mean", "dice_median", "dice_p05", "iou_mean", "pixel_accuracy_mean", "hd95_mean", "n_cases"):
        assert key in summary
    assert summary["n_cases"] == 3
    assert len((out / "per_case.csv").read_text().strip().splitlines()) == 4
