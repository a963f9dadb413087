"""Command line: every sub-command has help; predict/evaluate run end to end on a tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ml.cli import build_parser, main


@pytest.mark.parametrize("command", ["train", "evaluate", "predict", "export", "bench"])
def test_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([command, "--help"])
    assert exc.value.code == 0
    assert "--model" in capsys.readouterr().out or command == "train"


def test_predict_and_evaluate_on_tiny_model(tiny_model: Path, synthetic_manifest: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    image = synthetic_manifest.parent / "synth" / "images" / "c16.png"
    out = tmp_path / "mask.png"
    assert main(["predict", "--model", str(tiny_model), "--input", str(image), "--output", str(out)]) == 0
    mask = np.asarray(Image.open(out))
    assert mask.shape == np.asarray(Image.open(image)).shape[:2]
    capsys.readouterr()
    eval_dir = tmp_path / "eval"
    assert main(["evaluate", "--model", str(tiny_model), "--manifest", str(synthetic_manifest),
                 "--split", "test", "--out", str(eval_dir), "--no-progress"]) == 0
    summary = json.loads((eval_dir / "summary.json").read_text())
    for key in ("dice_mean", "dice_median", "dice_p05", "iou_mean", "pixel_accuracy_mean", "hd95_mean", "n_cases"):
        assert key in summary
    assert summary["n_cases"] == 3
    rows = (eval_dir / "per_case.csv").read_text().strip().splitlines()
    assert len(rows) == 4 and "right_lung_dice" in rows[0]


def test_unknown_model_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", "--model", "nope", "--input", "x.png", "--output", str(tmp_path / "m.png")]) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err


def test_predict_reads_monochrome1_dicom(tiny_model: Path, tmp_path: Path, make_case,  # noqa: ANN001
                                         capsys: pytest.CaptureFixture[str]) -> None:
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    image = make_case(64, seed=5)[0].astype(np.uint16) * 16
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(tmp_path / "x.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.Rows, ds.Columns = "DX", 64, 64
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME1"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelSpacing = [0.5, 0.5]
    ds.PixelData = (4095 - image).astype(np.uint16).tobytes()
    ds.save_as(tmp_path / "x.dcm", enforce_file_format=True)
    out = tmp_path / "mask.png"
    assert main(["predict", "--model", str(tiny_model), "--input", str(tmp_path / "x.dcm"), "--output", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["shape"] == [64, 64] and printed["areas_mm2"] is not None
    png = tmp_path / "plain.png"
    Image.fromarray((image // 16).astype(np.uint8)).save(png)
    main(["predict", "--model", str(tiny_model), "--input", str(png), "--output", str(tmp_path / "m2.png")])
    same = np.asarray(Image.open(out)) == np.asarray(Image.open(tmp_path / "m2.png"))
    assert same.mean() > 0.99


def test_unreadable_inputs_are_clear_errors(tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            make_case) -> None:  # noqa: ANN001
    from PIL import Image

    (tmp_path / "notes.png").write_text("not an image")
    Image.fromarray(make_case(64)[0]).save(tmp_path / "whole.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "whole.png").read_bytes()[:200])
    (tmp_path / "README").write_text("neither an image nor DICOM")
    for name in ("notes.png", "cut.png", "README"):
        code = main(["predict", "--model", str(tiny_model), "--input", str(tmp_path / name),
                     "--output", str(tmp_path / "m.png")])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("error: ") and name in err, (name, err)


def test_evaluate_names_a_case_whose_label_does_not_fit_its_image(tiny_model: Path, synthetic_manifest: Path,
                                                                  tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    label = synthetic_manifest.parent / "synth" / "labels" / "c16.png"
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(label)
    code = main(["evaluate", "--model", str(tiny_model), "--manifest", str(synthetic_manifest), "--split", "test",
                 "--out", str(tmp_path / "e"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "synth/c16" in err and "10x10" in err


def test_manifest_pixel_spacing_adds_distances_in_mm(tiny_model: Path, synthetic_manifest: Path,
                                                     tmp_path: Path) -> None:
    import csv

    from ml.cxr.data import ManifestError, read_manifest
    from ml.cxr.evaluation import evaluate_model

    text = synthetic_manifest.read_text().splitlines()
    rows = [text[0] + ",pixel_spacing_mm"] + [line + (",0.5" if i % 2 else ",0.5 0.25") for i, line in enumerate(text[1:])]
    synthetic_manifest.write_text("\n".join(rows) + "\n")
    assert read_manifest(synthetic_manifest, ["train"])[0].spacing_mm == (0.5, 0.25)
    summary = evaluate_model(str(tiny_model), synthetic_manifest, "test", tmp_path / "e")
    assert summary["hd95_mm_mean"] <= summary["hd95_mean"] * 0.5 + 1e-9
    with (tmp_path / "e" / "per_case.csv").open() as handle:
        assert "right_lung_hd95_mm" in next(csv.DictReader(handle))
    synthetic_manifest.write_text("\n".join([rows[0], rows[1].rsplit(",", 1)[0] + ",-1"]) + "\n")
    with pytest.raises(ManifestError, match="pixel_spacing_mm must be"):
        read_manifest(synthetic_manifest)


def test_help_does_not_load_torch_or_the_ct_stack() -> None:
    import subprocess
    import sys

    code = ("import sys\nfrom ml.cli import main\ntry:\n    main(['predict', '--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'SimpleITK', 'pydicom') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def _xray_png(tmp_path: Path, make_case) -> Path:  # noqa: ANN001
    path = tmp_path / "chest.png"
    Image.fromarray(make_case(64, seed=3)[0]).save(path)
    return path


def test_predict_refuses_outputs_that_lose_or_overwrite(tiny_model: Path, tmp_path: Path, make_case,  # noqa: ANN001
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    image = _xray_png(tmp_path, make_case)
    before = image.read_bytes()
    for output, words in ((tmp_path / "m.jpg", "written as .png"), (image, "is the input itself"),
                          (tmp_path / "mask", "e.g. mask.png")):
        code = main(["predict", "--model", str(tiny_model), "--input", str(image), "--output", str(output)])
        assert code == 2 and words in capsys.readouterr().err, output
    assert image.read_bytes() == before and not (tmp_path / "m.jpg").exists() and not (tmp_path / "mask").exists()


def test_a_ct_slice_is_not_taken_for_a_chest_xray(tiny_model: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(tmp_path / "ct.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = "CT", 32, 32, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.PixelData = np.zeros((32, 32), np.int16).tobytes()
    ds.save_as(tmp_path / "ct.dcm", enforce_file_format=True)
    code = main(["predict", "--model", str(tiny_model), "--input", str(tmp_path / "ct.dcm"),
                 "--output", str(tmp_path / "m.png")])
    assert code == 2 and "CT image, not a chest X-ray" in capsys.readouterr().err
    assert not (tmp_path / "m.png").exists()


@pytest.mark.parametrize(("argv", "words"), [
    (["predict", "--model", "ct", "--tta", "--input", "ct.nii.gz", "--output", "m.nii.gz"], "--tta/--no-tta"),
    (["predict", "--model", "ct", "--input", "ct.nii.gz", "--output", "m.png"], "CT label volumes are written as"),
    (["evaluate", "--model", "ct", "--threads", "2", "--manifest", "m.csv", "--split", "val", "--out", "o"],
     "--threads does not apply to CT models"),
    (["bench", "--model", "ct", "--repeats", "3"], "--repeats does not apply to CT models"),
])
def test_options_a_ct_model_cannot_honour_are_refused(argv: list[str], words: str, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert words in capsys.readouterr().err
    assert not any(tmp_path.iterdir()), "nothing written"


@pytest.mark.parametrize("argv", [["bench", "--repeats", "0"], ["evaluate", "--model", "cxr", "--manifest", "m",
                                                                  "--split", "val", "--out", "o", "--threads", "0"]])
def test_counts_below_one_are_refused_by_the_parser(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2 and "must be at least 1" in capsys.readouterr().err


def test_evaluate_finds_missing_files_before_scoring_any(tiny_model: Path, synthetic_manifest: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    (synthetic_manifest.parent / "synth" / "images" / "c18.png").unlink()
    code = main(["evaluate", "--model", str(tiny_model), "--manifest", str(synthetic_manifest), "--split", "test",
                 "--out", str(tmp_path / "e"), "--no-progress"])
    assert code == 2 and "1 file(s) of split 'test' missing" in capsys.readouterr().err
    assert not (tmp_path / "e").exists(), "no case was scored"


def test_train_config_mistakes_are_one_line_and_write_nothing(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("modality: cxr\ntrain: [unclosed\n")
    assert main(["train", "--config", str(broken)]) == 2
    assert "not valid YAML" in capsys.readouterr().err
    typo = tmp_path / "typo.yaml"
    typo.write_text("modality: cxr\nname: t\ntrain: {epochz: 3}\n")
    assert main(["train", "--config", str(typo), "--output-dir", str(tmp_path / "run")]) == 2
    assert "unknown train option(s): ['epochz']" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_predict_without_model_takes_a_volume_file_for_a_ct(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No --model: a NIfTI goes to the CT model (a small phantom), a PNG would go to the X-ray model."""
    import SimpleITK as sitk

    from ml.ct.phantom import make_phantom

    phantom = make_phantom(shape=(24, 64, 64), spacing=(6.0, 5.0, 5.0), seed=2)
    image = sitk.GetImageFromArray(phantom.volume_hu)
    image.SetSpacing(tuple(reversed(phantom.spacing)))
    sitk.WriteImage(image, str(tmp_path / "ct.nii.gz"))
    assert main(["predict", "--input", str(tmp_path / "ct.nii.gz"), "--output", str(tmp_path / "mask.nii.gz")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["method"].startswith("model:") and printed["total_volume_ml"] > 0
    assert (tmp_path / "mask.nii.gz").is_file()
