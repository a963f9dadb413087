"""Every export format re-read with the field's own tools: highdicom/pydicom, nibabel, pycocotools, nnU-Net, MONAI."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image

from annotation import labelmaps
from annotation.services import read_labels
from exports import manifest, pixels, services
from exports.selection import parse_selection
from export_helpers import add_ct, add_xray

pytestmark = pytest.mark.django_db


def _export(project: Any, fmt: str, **selection: Any) -> tuple[zipfile.ZipFile, Any]:
    parsed = parse_selection({"kind": "filter", "project_id": project.pk, **selection})
    buffer = io.BytesIO()
    result = services.write_archive(project, parsed, fmt, services.resolve(parsed, fmt), buffer)
    return zipfile.ZipFile(buffer), result


def _extract(archive: zipfile.ZipFile, folder: Path) -> Path:
    archive.extractall(folder)
    return folder


def test_ct_seg_round_trips_labels_segments_and_geometry(project, django_capture_on_commit_callbacks):
    revision = add_ct(project, django_capture_on_commit_callbacks, depth=6, size=32)
    archive, _ = _export(project, "seg", modality="CT", test_fraction=0)
    seg = hd.seg.segread(io.BytesIO(archive.read(f"seg/ct_{revision.series_id:06d}.dcm")))
    series = revision.series
    instances = pixels.ordered_instances(series)
    # segments: labels and SNOMED codes as OHIF / 3D Slicer read them
    described = {int(s.SegmentNumber): (s.SegmentLabel, s.SegmentedPropertyTypeCodeSequence[0].CodeValue)
                 for s in seg.SegmentSequence}
    assert described == {1: ("Right Lung", "3341006"), 2: ("Left Lung", "44029006")}
    # references: the de-identified series, its frame of reference, every instance
    assert seg.FrameOfReferenceUID == series.frame_of_reference_uid
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series.series_instance_uid
    assert seg.StudyInstanceUID == series.study.study_instance_uid
    uids = [i.sop_instance_uid for i in instances]
    assert {u for _, _, u in seg.get_source_image_uids()} == set(uids)
    # the mask comes back voxel for voxel, slice by slice in instance order
    back = seg.get_pixels_by_source_instance(uids, combine_segments=True)
    assert np.array_equal(back, read_labels(revision))
    # geometry: each frame sits at its instance's position (pydicom view of the functional groups)
    raw = pydicom.dcmread(io.BytesIO(archive.read(f"seg/ct_{revision.series_id:06d}.dcm")))
    positions = [[float(v) for v in f.PlanePositionSequence[0].ImagePositionPatient]
                 for f in raw.PerFrameFunctionalGroupsSequence]
    assert set(map(tuple, positions)) == {tuple(i.image_position) for i in instances}  # a frame per segment and slice
    # the de-identified source images travel with it
    assert sorted(n for n in archive.namelist() if n.startswith("dicom/")) == sorted(
        f"dicom/ct_{series.pk:06d}/{u}.dcm" for u in uids)


def test_xray_seg_references_its_image(project, django_capture_on_commit_callbacks):
    revision = add_xray(project, django_capture_on_commit_callbacks)
    archive, _ = _export(project, "seg", modality="xray")
    seg = hd.seg.segread(io.BytesIO(archive.read(f"seg/xr_{revision.instance_id:06d}.dcm")))
    back = seg.get_pixels_by_source_instance([revision.instance.sop_instance_uid], combine_segments=True)
    assert np.array_equal(back[0], read_labels(revision))


def test_ct_nifti_has_the_series_affine_and_platform_label_values(project, django_capture_on_commit_callbacks):
    revision = add_ct(project, django_capture_on_commit_callbacks, depth=5, size=24)
    archive, _ = _export(project, "nifti", test_fraction=0)
    case = f"ct_{revision.series_id:06d}"
    image = nib.Nifti1Image.from_bytes(__import__("gzip").decompress(archive.read(f"images/{case}.nii.gz")))
    label = nib.Nifti1Image.from_bytes(__import__("gzip").decompress(archive.read(f"labels/{case}.nii.gz")))
    instances = pixels.ordered_instances(revision.series)
    assert np.allclose(image.affine, label.affine)
    # voxel (0, 0, k) is instance k's ImagePositionPatient, LPS → RAS
    for k, instance in enumerate(instances):
        x, y, z = instance.image_position
        assert np.allclose(label.affine @ [0, 0, k, 1], [-x, -y, z, 1], atol=1e-4)
    labels = np.transpose(np.asarray(label.dataobj), (2, 1, 0))
    assert labels.dtype == np.uint8 and set(np.unique(labels)) == {0, 1, 2}
    assert np.array_equal(labels, read_labels(revision))
    hu = np.transpose(np.asarray(image.dataobj), (2, 1, 0))
    assert np.array_equal(hu, pixels.ct_volume(instances))
    assert hu.min() <= -800 and hu.max() >= 0  # air and soft tissue in HU


def test_png_is_full_resolution_8bit_with_label_values(project, django_capture_on_commit_callbacks):
    revision = add_xray(project, django_capture_on_commit_callbacks, size=(96, 80))
    archive, _ = _export(project, "png")
    case = f"xr_{revision.instance_id:06d}"
    image = np.asarray(Image.open(io.BytesIO(archive.read(f"images/{case}.png"))))
    label = np.asarray(Image.open(io.BytesIO(archive.read(f"labels/{case}.png"))))
    stored = pydicom.dcmread(revision.instance.file.path).pixel_array
    assert image.dtype == np.uint8 and image.shape == (80, 96) and np.array_equal(image, stored)
    assert np.array_equal(label, read_labels(revision))


def test_coco_rle_reads_back_with_pycocotools(project, django_capture_on_commit_callbacks, tmp_path):
    from pycocotools.coco import COCO

    revisions = [add_xray(project, django_capture_on_commit_callbacks, seed=i) for i in range(4)]
    archive, _ = _export(project, "coco", test_fraction=0.5)
    folder = _extract(archive, tmp_path / "coco")
    seen = 0
    for split in ("train", "test"):
        coco = COCO(str(folder / "annotations" / f"{split}.json"))
        assert {c["name"] for c in coco.loadCats(coco.getCatIds())} == {"right lung", "left lung"}
        for image_id in coco.getImgIds():
            revision = next(r for r in revisions if r.pk == image_id)
            labels = read_labels(revision)
            info = coco.loadImgs(image_id)[0]
            assert (folder / "images" / info["file_name"]).is_file()
            for ann in coco.loadAnns(coco.getAnnIds(imgIds=image_id)):
                assert np.array_equal(coco.annToMask(ann), (labels == ann["category_id"]).astype(np.uint8))
                assert ann["area"] == np.count_nonzero(labels == ann["category_id"])
            seen += 1
    assert seen == 4


def _nnunet_schema(root: Path, cases: list[str], ending: str) -> None:
    """The nnU-Net v2 raw-dataset contract (documentation/dataset_format.md), checked by hand."""
    spec = json.loads((root / "dataset.json").read_text())
    assert spec["channel_names"] in ({"0": "CT"}, {"0": "xray"})
    assert spec["labels"] == {"background": 0, "right_lung": 1, "left_lung": 2}
    assert spec["file_ending"] == ending
    training = sorted(p.name[: -len(ending)] for p in (root / "labelsTr").iterdir())
    assert spec["numTraining"] == len(training)
    assert sorted(p.name for p in (root / "imagesTr").iterdir()) == [f"{c}_0000{ending}" for c in training]
    test = sorted(p.name[: -len("_0000" + ending)] for p in (root / "imagesTs").iterdir()) if (root / "imagesTs").exists() else []
    assert sorted(training + test) == sorted(cases)
    splits = json.loads((root / "splits_final.json").read_text())
    assert len(splits) == 5
    for fold in splits:
        assert set(fold["train"]) | set(fold["val"]) == set(training) and not set(fold["train"]) & set(fold["val"])


def test_nnunet_xray_dataset_passes_nnunets_own_checks(project, django_capture_on_commit_callbacks, tmp_path):
    revisions = [add_xray(project, django_capture_on_commit_callbacks, seed=i) for i in range(6)]
    archive, _ = _export(project, "nnunet", test_fraction=0.3)
    root = _extract(archive, tmp_path) / "Dataset501_Alpha"
    _nnunet_schema(root, [f"xr_{r.instance_id:06d}" for r in revisions], ".png")
    manifest_cases = json.loads(archive.read("manifest.json"))["cases"]
    by_patient: dict[str, set[str]] = {}
    for case in manifest_cases:  # folds are patient-level
        by_patient.setdefault(case["patient"], set()).add(f'{case["split"]}:{case["fold"]}')
    assert all(len(v) == 1 for v in by_patient.values())
    verify = pytest.importorskip("nnunetv2.experiment_planning.verify_dataset_integrity",
                                 reason="nnunetv2 not installed (requirements-nnunet.txt)")
    verify.verify_dataset_integrity(str(root), num_processes=1)


def test_nnunet_ct_dataset_passes_nnunets_own_checks(project, django_capture_on_commit_callbacks, tmp_path):
    revision = add_ct(project, django_capture_on_commit_callbacks, depth=5, size=24)
    archive, _ = _export(project, "nnunet", test_fraction=0)
    root = _extract(archive, tmp_path) / "Dataset501_Alpha"
    _nnunet_schema(root, [f"ct_{revision.series_id:06d}"], ".nii.gz")
    verify = pytest.importorskip("nnunetv2.experiment_planning.verify_dataset_integrity",
                                 reason="nnunetv2 not installed (requirements-nnunet.txt)")
    verify.verify_dataset_integrity(str(root), num_processes=1)


def test_monai_datalist_loads_with_monai(project, django_capture_on_commit_callbacks, tmp_path):
    from monai.data import load_decathlon_datalist
    from monai.transforms import LoadImage

    revision = add_ct(project, django_capture_on_commit_callbacks, depth=4, size=24)
    archive, _ = _export(project, "monai", test_fraction=0)
    folder = _extract(archive, tmp_path)
    items = load_decathlon_datalist(str(folder / "datalist.json"), data_list_key="training", base_dir=str(folder))
    assert len(items) == 1 and items[0]["case_id"] == f"ct_{revision.series_id:06d}"
    label = LoadImage(image_only=True)(items[0]["label"])
    assert np.array_equal(np.transpose(np.asarray(label), (2, 1, 0)), read_labels(revision))


def test_manifest_and_dataset_hash_are_reproducible(project, django_capture_on_commit_callbacks):
    first = add_xray(project, django_capture_on_commit_callbacks, seed=1)
    add_xray(project, django_capture_on_commit_callbacks, seed=2)
    archive, result = _export(project, "png")
    again, repeat = _export(project, "png")
    assert result.dataset_hash == repeat.dataset_hash
    assert _export(project, "coco")[1].dataset_hash == result.dataset_hash  # the hash is about data, not layout
    data = json.loads(archive.read("manifest.json"))
    provenance = [{k: v for k, v in c.items() if k != "files"} for c in data["cases"]]
    assert manifest.dataset_hash(data["label_schema"], provenance) == data["dataset_hash"] == result.dataset_hash
    case = next(c for c in data["cases"] if c["label"]["revision_id"] == first.pk)
    assert case["label"]["sha256"] == first.checksum == labelmaps.checksum(read_labels(first))
    assert case["patient"].startswith("PLR-") and case["study_uid"] == first.series.study.study_instance_uid
    assert case["chain"][-1]["revision_id"] == first.pk and case["split"] in ("train", "test")
    assert set(case["qc"]) == {"flagged", "flags"} and case["qc"]["flags"]
    assert {"README.md", "LICENSE.txt"} <= set(archive.namelist())
    # a new curated revision changes the data, so the hash
    from annotation.services import create_revision

    create_revision(series=first.series, instance=first.instance, labels=np.zeros(tuple(first.shape), np.uint8) + 1,
                    source="person", status="approved", spacing=(0.5, 0.5))
    assert _export(project, "png")[1].dataset_hash != result.dataset_hash


def test_manifest_names_the_reviewer_who_curated_the_label(project, make_member, django_capture_on_commit_callbacks):
    """A label submitted by an annotator and approved in review carries its reviewer in the manifest."""
    from accounts.models import Role
    from annotation import workflow
    from annotation.review import services as review_services
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "annotation"))
    from workflow_helpers import model_labels, xray_task  # the annotation tests' task helpers

    annotator, reviewer = make_member(project, Role.ANNOTATOR, "ann"), make_member(project, Role.REVIEWER, "rev")
    task, proposal = xray_task(project, django_capture_on_commit_callbacks)
    labels = model_labels(tuple(proposal.shape[-2:]))
    labels[0:4, 0:4] = 2  # an edit, so the submission is a person's revision
    workflow.claim(task.pk, annotator)
    upload = workflow.MaskUpload(shape=(1, *labels.shape), data=labels.tobytes())
    submitted = workflow.submit(task.pk, annotator, proposal.pk, upload)
    revision_id = submitted.revision.pk
    review_services.approve(task.pk, reviewer, revision_id)
    archive, _ = _export(project, "png")
    (case,) = json.loads(archive.read("manifest.json"))["cases"]
    assert case["label"]["revision_id"] == revision_id and case["label"]["status"] == "approved"
    assert case["reviewer"]["by"] == "rev" and case["reviewer"]["decision"] == "approve"
    assert "ann" in case["annotators"]


@pytest.mark.django_db(transaction=True)  # committed rows: the export's reader threads use their own connections
def test_seg_of_an_edited_model_proposal_names_the_proposing_model(project, django_capture_on_commit_callbacks):
    """A person's edit of a proposal is SEMIAUTOMATIC: the SEG names the model that proposed it."""
    from annotation.services import create_revision
    from modeling.models import ModelVersion

    model = ModelVersion.objects.filter(modality="cxr").first()
    if model is None:
        pytest.skip("no X-ray model version registered in the test database")
    edited = add_xray(project, django_capture_on_commit_callbacks, seed=3)
    proposal = create_revision(series=edited.series, instance=edited.instance, labels=read_labels(edited),
                               source="model", status="proposed", spacing=(0.5, 0.5), method="model", model_version=model)
    final = create_revision(series=edited.series, instance=edited.instance, labels=read_labels(edited),
                            source="person", status="approved", spacing=(0.5, 0.5), method="manual", parent=proposal)
    archive, _ = _export(project, "seg", modality="xray")
    seg = hd.seg.segread(io.BytesIO(archive.read(f"seg/xr_{final.instance_id:06d}.dcm")))
    segment = seg.SegmentSequence[0]
    assert segment.SegmentAlgorithmType == "SEMIAUTOMATIC"
    assert segment.SegmentAlgorithmName == model.name
