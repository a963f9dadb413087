"""CT training end to end on synthetic phantoms: train, resume, export a candidate, evaluate it."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
import yaml

from ml.ct import api
from ml.ct.packaging import ExportError, export_checkpoint
from ml.ct.packaging import main as export_main
from ml.ct.phantom import make_phantom
from ml.ct.train import TrainConfigError, train


def _write(array: np.ndarray, spacing_dhw: tuple[float, float, float], path: Path) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(reversed(spacing_dhw)))
    sitk.WriteImage(image, str(path))


@pytest.fixture(scope="module")
def phantom_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three small phantoms (two train, one val) in the CT manifest format."""
    folder = tmp_path_factory.mktemp("ct_train")
    rows = ["case,ct,labels,lr_labels,split"]
    for seed, split in ((1, "train"), (2, "train"), (3, "val")):
        phantom = make_phantom(shape=(20, 64, 64), spacing=(6.0, 5.0, 5.0), seed=seed)
        _write(phantom.volume_hu, phantom.spacing, folder / f"p{seed}_ct.nii.gz")
        _write(phantom.labels, phantom.spacing, folder / f"p{seed}_lungs.nii.gz")
        rows.append(f"phantom{seed},p{seed}_ct.nii.gz,p{seed}_lungs.nii.gz,1,{split}")
    (folder / "manifest.csv").write_text("\n".join(rows) + "\n")
    return folder / "manifest.csv"


def _config(tmp_path: Path, manifest: Path, **changes: object) -> Path:
    config = {
        "modality": "ct", "name": "ct_tiny", "manifest": str(manifest), "train_splits": ["train"],
        "val_splits": ["val"], "pseudo_label": [], "size": 64, "context": 1,
        "network": {"channels": [8, 16, 32], "strides": [2, 2], "num_res_units": 1},
        "batch_size": 8, "lr": 0.003, "epochs": 4, "samples_per_epoch": 48, "max_minutes": 30, "threads": 1,
        "seed": 0, "cache_dir": str(tmp_path / "cache"), "out_dir": str(tmp_path / "run"),
    }
    config.update(changes)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _rows(run: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((run / "metrics.csv").open()))


def test_training_lowers_the_loss_and_records_its_config_file(phantom_manifest: Path, tmp_path: Path) -> None:
    best = train(_config(tmp_path, phantom_manifest))
    rows = _rows(tmp_path / "run")
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    checkpoint = torch.load(best, map_location="cpu", weights_only=False)
    assert checkpoint["config_path"] == str(tmp_path / "config.yaml")
    assert checkpoint["val_dice"] == pytest.approx(max(float(r["val_dice"]) for r in rows), abs=1e-4)


def test_a_run_started_again_continues_from_its_last_epoch(phantom_manifest: Path, tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    train(_config(tmp_path, phantom_manifest, epochs=2))
    first = torch.load(tmp_path / "run" / "last.pt", map_location="cpu", weights_only=False)
    with caplog.at_level(logging.INFO, logger="ml.ct.train"):
        train(_config(tmp_path, phantom_manifest, epochs=3))  # the epoch limit may be raised
    assert "resuming" in caplog.text
    rows = _rows(tmp_path / "run")
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3], "one header, the earlier epochs kept, one more added"
    last = torch.load(tmp_path / "run" / "last.pt", map_location="cpu", weights_only=False)
    assert last["epoch"] == 3 and last["elapsed_s"] > first["elapsed_s"]
    assert last["best_val_dice"] == pytest.approx(max(float(r["val_dice"]) for r in rows), abs=1e-4)
    with pytest.raises(TrainConfigError, match="lr differ"):
        train(_config(tmp_path, phantom_manifest, epochs=4, lr=0.01))
    # starting again on purpose: a fresh metrics file from epoch 1
    train(_config(tmp_path, phantom_manifest, epochs=1, lr=0.01), resume=False)
    assert [int(r["epoch"]) for r in _rows(tmp_path / "run")] == [1]
    assert not list((tmp_path / "run").glob("*.tmp")), "checkpoints are written whole, then renamed"


def test_an_exported_candidate_is_evaluated_with_its_own_card(phantom_manifest: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    best = train(_config(tmp_path, phantom_manifest, epochs=1))
    card = export_checkpoint(best, "ct_tiny", [], weights_dir=tmp_path / "candidates")
    assert card.training["command"] == f"python -m ml train --config {tmp_path / 'config.yaml'}"
    assert card.weights_path == tmp_path / "candidates" / "ct_tiny.pt"
    summary = api.evaluate(str(card.weights_path), phantom_manifest, "val", tmp_path / "eval")
    assert summary["n_cases"] == 1 and summary["model"] == "ct_tiny"
    assert json.loads((tmp_path / "eval" / "summary.json").read_text())["n_cases"] == 1
    assert export_main(["--attach-metrics", str(tmp_path / "eval"), "--name", str(card.weights_path)]) == 0
    metrics = json.loads(card.weights_path.with_suffix(".json").read_text())["metrics"]
    assert metrics["all_cases"]["dice_mean"] == summary["dice_mean"]
    assert set(metrics["per_case_dice"]) == {"phantom3"} and "right" in metrics["per_case_dice"]["phantom3"]

    # a checkpoint that does not say which config it came from needs --config
    old = torch.load(best, map_location="cpu", weights_only=False)
    del old["config_path"]
    torch.save(old, tmp_path / "old.pt")
    with pytest.raises(ExportError, match="--config"):
        export_checkpoint(tmp_path / "old.pt", "ct_old", [], weights_dir=tmp_path / "candidates")
    assert export_main(["--checkpoint", str(tmp_path / "old.pt"), "--name", "ct_old",
                        "--weights-dir", str(tmp_path / "candidates")]) == 2
    assert "--config" in capsys.readouterr().err
    assert not (tmp_path / "candidates" / "ct_old.pt").exists(), "nothing half-written"
