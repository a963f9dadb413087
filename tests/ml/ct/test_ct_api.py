"""CT entry points end to end on synthetic files: predict, evaluate (classical), preprocessing."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from ml.ct import api
from ml.ct.inference import upsample_labels
from ml.ct.phantom import make_phantom
from ml.ct.preprocessing import Box, crop, pool_slices, to_model_grid, uncrop, z_factor
from ml.registry import resolve


def _write(array: np.ndarray, spacing_dhw: tuple[float, float, float], path: Path) -> Path:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(reversed(spacing_dhw)))
    image.SetOrigin((-120.0, -90.0, -300.0))
    sitk.WriteImage(image, str(path))
    return path


@pytest.fixture(scope="module")
def phantom_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    folder = tmp_path_factory.mktemp("phantom")
    phantom = make_phantom(shape=(48, 96, 96), spacing=(5.0, 3.3, 3.3), seed=1)
    _write(phantom.volume_hu, phantom.spacing, folder / "ct.nii.gz")
    _write(phantom.labels, phantom.spacing, folder / "lungs.nii.gz")
    (folder / "manifest.csv").write_text(
        "case,ct,labels,lr_labels,split\nphantom1,ct.nii.gz,lungs.nii.gz,1,test\n"
    )
    return folder, phantom


def test_predict_writes_mask_in_input_geometry_and_returns_volumes(phantom_files, tmp_path: Path) -> None:
    folder, phantom = phantom_files
    result = api.predict("classical", folder / "ct.nii.gz", tmp_path / "out")
    mask = sitk.ReadImage(result["mask"])
    source = sitk.ReadImage(str(folder / "ct.nii.gz"))
    assert mask.GetSize() == source.GetSize() and np.allclose(mask.GetOrigin(), source.GetOrigin())
    assert result["method"] == "classical"
    assert result["right_volume_ml"] == pytest.approx(phantom.volume_right_ml, rel=0.03)
    assert result["total_volume_ml"] == pytest.approx(result["right_volume_ml"] + result["left_volume_ml"])


def test_evaluate_writes_per_case_and_summary(phantom_files, tmp_path: Path) -> None:
    folder, _ = phantom_files
    summary = api.evaluate("classical", folder / "manifest.csv", "test", tmp_path)
    for key in ("dice_right_mean", "dice_left_mean", "dice_mean", "hd95_mm_mean", "volume_error_pct_mean", "n_cases"):
        assert key in summary
    assert summary["n_cases"] == 1 and summary["dice_mean"] > 0.95
    assert json.loads((tmp_path / "summary.json").read_text())["n_cases"] == 1
    with (tmp_path / "per_case.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert rows[0]["case"] == "phantom1" and float(rows[0]["hd95_right_mm"]) < 10.0


def test_slice_pooling_and_crop_round_trip() -> None:
    block = np.arange(5 * 2 * 2, dtype=np.float32).reshape(5, 2, 2)
    pooled = pool_slices(block, 2)
    assert pooled.shape == (3, 2, 2)
    assert pooled[0, 0, 0] == pytest.approx((0 + 4) / 2) and pooled[2, 0, 0] == pytest.approx(16.0)
    assert z_factor(1.0) == 3 and z_factor(3.0) == 1 and z_factor(5.0) == 1
    volume = np.random.default_rng(0).normal(size=(2, 6, 8)).astype(np.float32)
    box = Box(-2, 8, -1, 9)  # extends past the image on every side
    assert np.array_equal(uncrop(crop(volume, box, fill=0.0), box, volume.shape), volume)


def test_upsampling_keeps_sides_and_scales_back() -> None:
    volume = np.full((4, 64, 64), 40.0, np.float32)
    volume[:, 16:48, 8:28] = -850.0
    volume[:, 16:48, 36:56] = -850.0
    image, hu_small, box = to_model_grid(volume, 32)
    small = np.zeros(hu_small.shape, np.uint8)
    small[hu_small < -400] = 1
    small[:, :, 16:][small[:, :, 16:] == 1] = 2
    probability = (hu_small < -400).astype(np.float32)
    labels = upsample_labels(probability, small, box, volume.shape)
    assert labels.shape == volume.shape
    truth_right = np.zeros(volume.shape, bool)
    truth_right[:, 16:48, 8:28] = True
    dice = 2 * ((labels == 1) & truth_right).sum() / ((labels == 1).sum() + truth_right.sum())
    assert dice > 0.95 and not (labels[:, :, 36:] == 1).any()


def test_cli_evaluate_accepts_the_classical_baseline(phantom_files, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from ml.cli import main

    folder, _ = phantom_files
    code = main(["evaluate", "--model", "classical", "--manifest", str(folder / "manifest.csv"),
                 "--split", "test", "--out", str(tmp_path)])
    printed = json.loads(capsys.readouterr().out)
    assert code == 0 and printed["n_cases"] == 1
    assert {"dice_right_mean", "dice_left_mean", "volume_error_pct_mean"} <= printed.keys()


def test_shipped_model_measures_the_phantom_volumes(phantom_files, tmp_path: Path) -> None:
    folder, phantom = phantom_files
    result = api.predict("ct", folder / "ct.nii.gz", tmp_path / "model")
    assert result["method"].startswith("model:")
    assert result["right_volume_ml"] == pytest.approx(phantom.volume_right_ml, rel=0.02)
    assert result["left_volume_ml"] == pytest.approx(phantom.volume_left_ml, rel=0.02)
    assert result["warnings"] == []


def test_cli_predict_ct_writes_the_mask_in_the_input_geometry(phantom_files, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    from ml.cli import main

    folder, phantom = phantom_files
    code = main(["predict", "--model", "classical", "--input", str(folder / "ct.nii.gz"),
                 "--output", str(tmp_path / "mask.nii.gz")])
    printed = json.loads(capsys.readouterr().out)  # strict JSON
    assert code == 0 and printed["mask"] == str(tmp_path / "mask.nii.gz")
    mask, source = sitk.ReadImage(printed["mask"]), sitk.ReadImage(str(folder / "ct.nii.gz"))
    assert mask.GetSize() == source.GetSize()
    for get in ("GetOrigin", "GetSpacing", "GetDirection"):
        assert np.allclose(getattr(mask, get)(), getattr(source, get)())
    labels = sitk.GetArrayFromImage(mask)
    assert 2 * ((labels == 1) & (phantom.labels == 1)).sum() / ((labels == 1).sum() + (phantom.labels == 1).sum()) > 0.95


def test_a_lung_cut_by_the_scan_is_reported_and_an_empty_lung_is_null(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from ml.cli import main

    phantom = make_phantom(shape=(48, 96, 96), spacing=(5.0, 3.3, 3.3), seed=2)
    cut = phantom.volume_hu[20:].copy()  # the scan starts inside both lungs
    cut[:, :, 48:][cut[:, :, 48:] < -500] = 40  # and the left lung is filled in
    path = _write(cut, phantom.spacing, tmp_path / "cut.nii.gz")
    assert main(["predict", "--model", "classical", "--input", str(path), "--output", str(tmp_path / "m")]) == 0
    text = capsys.readouterr().out
    assert "NaN" not in text
    printed = json.loads(text)
    assert printed["left_volume_ml"] == 0.0 and printed["left_mean_hu"] is None
    assert any("right lung reaches the first slice" in w for w in printed["warnings"])
    assert any("no left lung found" in w for w in printed["warnings"])


def test_cli_reports_bad_ct_inputs_as_errors(phantom_files, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    from ml.cli import main

    folder, _ = phantom_files
    (tmp_path / "empty").mkdir()
    cases = [
        (["predict", "--model", "ct", "--input", str(tmp_path / "empty"), "--output", str(tmp_path / "m")], "empty"),
        (["predict", "--model", "ct", "--input", str(tmp_path / "nothing.nii.gz"), "--output", str(tmp_path / "m")],
         "nothing.nii.gz"),
        # the X-ray model asked for a volume or a folder points to the CT model
        (["predict", "--model", "cxr", "--input", str(folder / "ct.nii.gz"), "--output", str(tmp_path / "m.png")],
         "--model ct"),
        (["predict", "--model", "cxr", "--input", str(tmp_path / "empty"), "--output", str(tmp_path / "m.png")],
         "--model ct"),
        # without --model a volume goes to the CT model, which writes volumes only
        (["predict", "--input", str(folder / "ct.nii.gz"), "--output", str(tmp_path / "m.png")],
         "CT label volumes are written as"),
        (["evaluate", "--model", "classical", "--manifest", str(folder / "manifest.csv"), "--split", "val",
          "--out", str(tmp_path / "e")], "val"),
        (["evaluate", "--model", "classical", "--manifest", str(tmp_path / "missing.csv"), "--split", "all",
          "--out", str(tmp_path / "e")], "missing.csv"),
    ]
    for argv, needle in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and needle in err and "Traceback" not in err


def test_bench_times_a_given_volume_from_file_to_mask(phantom_files, tmp_path: Path) -> None:
    folder, _ = phantom_files
    report = api.bench("classical", tmp_path / "bench.json", input_path=folder / "ct.nii.gz", threads=1)
    assert report["shape_dhw"] == [48, 96, 96] and report["threads"] == 1
    assert report["total_s"] >= report["read_s"] + report["segment_s"]
    assert report["startup_s"] > 0 and report["cli_total_s"] == pytest.approx(report["startup_s"] + report["total_s"],
                                                                             abs=2e-3)
    assert report["peak_rss_mb"] > 0 and report["volumes"]["total_volume_ml"] > 0
    assert json.loads((tmp_path / "bench.json").read_text())["input"] == str(folder / "ct.nii.gz")


def test_a_missed_lung_costs_the_diagonal_of_the_whole_volume() -> None:
    from ml.ct.evaluation import case_metrics

    truth = np.zeros((10, 40, 40), np.uint8)
    truth[2:8, 5:35, 5:18], truth[2:8, 5:35, 22:35] = 1, 2
    prediction = truth.copy()
    prediction[prediction == 2] = 0
    row = case_metrics(prediction, truth, (3.0, 1.0, 1.0), lr_labels=True)
    assert row["hd95_left_mm"] == pytest.approx(np.sqrt(30.0 ** 2 + 40.0 ** 2 + 40.0 ** 2))
    assert row["hd95_right_mm"] == 0.0 and row["dice_left"] == 0.0


def _candidate(folder: Path, name: str, training: dict) -> Path:
    """Copy the shipped CT weights into ``folder`` as a candidate ``name`` with its own card."""
    shipped = json.loads((resolve("ct").weights_path.with_suffix(".json")).read_text())
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / f"{name}.pt"
    weights.write_bytes(resolve("ct").weights_path.read_bytes())
    card = dict(shipped, name=name, aliases=[], weights_file=weights.name, training=training)
    (folder / f"{name}.json").write_text(json.dumps(card))
    return weights


def test_a_candidate_is_scored_with_its_own_fold_never_the_shipped_ones(phantom_files, tmp_path: Path) -> None:
    """A case the candidate trained on is scored by the fold beside it; without one it is flagged."""
    folder, _ = phantom_files
    shipped_name = resolve("ct").name
    # same name as the shipped model: the shipped folds (loco_of = that name) must not be borrowed
    with_fold = _candidate(tmp_path / "with_fold", shipped_name, {"cases": ["phantom1"]})
    _candidate(tmp_path / "with_fold", "cand_fold", {"cases": [], "loco_of": shipped_name,
                                                   "excluded_cases": ["phantom1"]})
    alone = _candidate(tmp_path / "alone", shipped_name, {"cases": ["phantom1"]})

    api.evaluate(str(with_fold), folder / "manifest.csv", "all", tmp_path / "eval_fold")
    api.evaluate(str(alone), folder / "manifest.csv", "all", tmp_path / "eval_alone")

    row = next(csv.DictReader((tmp_path / "eval_fold" / "per_case.csv").open()))
    assert (row["evaluated_with"], row["trained_on_case"]) == ("cand_fold (loco)", "0")
    row = next(csv.DictReader((tmp_path / "eval_alone" / "per_case.csv").open()))
    assert (row["evaluated_with"], row["trained_on_case"]) == (shipped_name, "1")
    assert api._loco_partners(resolve(str(alone))) == {}, "the shipped model's folds were borrowed"
