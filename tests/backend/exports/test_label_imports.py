"""Import of existing labels (DICOM SEG, RTSTRUCT, NIfTI) as revisions with source ``import``."""

from __future__ import annotations

import gzip
import io
from typing import Any

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.sr.coding import Code
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from accounts.models import Role
from annotation.models import MaskRevision
from annotation.services import read_labels
from exports import formats, imports, pixels
from exports.errors import ImportLabelsError
from exports.selection import Case
from export_helpers import add_ct, two_lungs
from proposal_helpers import ct_series_files

pytestmark = pytest.mark.django_db


def _original_ct(project: Any, capture: Any, depth: int = 4, size: int = 16) -> tuple[list[Dataset], Any]:
    """A CT series as the site has it (original UIDs) and the project's de-identified copy of it."""
    files = ct_series_files(depth=depth, size=size)
    originals = sorted((formats.with_type2(pydicom.dcmread(io.BytesIO(d))) for _, d in files),
                       key=lambda ds: float(ds.ImagePositionPatient[2]))
    add_ct(project, capture, files=files)
    from imaging.models import Series

    return originals, Series.objects.get(project=project)


def _seg_over(datasets: list[Dataset], labels: np.ndarray, names: tuple[str, str]) -> bytes:
    descriptions = [hd.seg.SegmentDescription(
        segment_number=n, segment_label=names[n - 1], segmented_property_category=Code("91723000", "SCT", "Anatomical Structure"),
        segmented_property_type=Code("39607008", "SCT", "Lung"), algorithm_type="MANUAL") for n in (1, 2)]
    seg = hd.seg.Segmentation(
        source_images=datasets, pixel_array=labels, segmentation_type="BINARY", segment_descriptions=descriptions,
        series_instance_uid=generate_uid(), series_number=5, sop_instance_uid=generate_uid(), instance_number=1,
        manufacturer="Site", manufacturer_model_name="Site TPS", software_versions="1", device_serial_number="1")
    buffer = io.BytesIO()
    seg.save_as(buffer)
    return buffer.getvalue()


def test_a_seg_made_on_the_original_images_is_matched_after_deidentification(project, make_member,
                                                                              django_capture_on_commit_callbacks):
    originals, series = _original_ct(project, django_capture_on_commit_callbacks)
    assert series.series_instance_uid != originals[0].SeriesInstanceUID  # the project stores remapped UIDs
    labels = two_lungs((len(originals), series.rows, series.columns))
    user = make_member(project, Role.ML_ENGINEER)
    (revision,) = imports.import_labels(project_id=project.pk, name="site.dcm", user=user,
                                        data=_seg_over(originals, labels, ("Lung R", "Lung L")))
    assert revision.source == "import" and revision.author == user and revision.series_id == series.pk
    assert np.array_equal(read_labels(revision), labels)
    assert "Lung R" in revision.note


def test_an_exported_seg_imports_back_to_the_same_mask(project, django_capture_on_commit_callbacks):
    source = add_ct(project, django_capture_on_commit_callbacks, depth=5, size=16)
    instances = pixels.ordered_instances(source.series)
    datasets = [formats.with_type2(pixels.read_dataset(i, pixels=False)) for i in instances]
    seg = formats.seg_dataset(Case("ct", source, "train", 0), datasets, read_labels(source), project.deid_secret)
    buffer = io.BytesIO()
    seg.save_as(buffer)
    (revision,) = imports.import_labels(project_id=project.pk, name="export.dcm", data=buffer.getvalue(), user=None)
    assert revision.number == source.number + 1 and np.array_equal(read_labels(revision), read_labels(source))


def test_unmapped_segments_and_unknown_references_are_clear_errors(project, other_project,
                                                                   django_capture_on_commit_callbacks):
    originals, series = _original_ct(project, django_capture_on_commit_callbacks)
    labels = two_lungs((len(originals), series.rows, series.columns))
    data = _seg_over(originals, labels, ("Lung R", "Heart"))
    with pytest.raises(ImportLabelsError, match=r"segment\(s\) 'Heart' not mapped to a lung; pass a mapping"):
        imports.import_labels(project_id=project.pk, name="site.dcm", data=data, user=None)
    (revision,) = imports.import_labels(project_id=project.pk, name="site.dcm", data=data, user=None, mapping={"HEART": 0})
    assert set(np.unique(read_labels(revision))) == {0, 1}
    with pytest.raises(ImportLabelsError, match="none of which is in project beta"):
        imports.import_labels(project_id=other_project.pk, name="site.dcm", data=data, user=None, mapping={"Heart": 0})
    with pytest.raises(ImportLabelsError, match="neither DICOM"):
        imports.import_labels(project_id=project.pk, name="notes.txt", data=b"hello", user=None)
    assert MaskRevision.objects.filter(source="import").count() == 1


def _rtstruct(originals: list[Dataset], rois: dict[str, list[tuple[int, tuple[float, float, float, float]]]]) -> bytes:
    """An RTSTRUCT with one closed planar square contour (x0, y0, x1, y1 mm) per (slice, box)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.481.3"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID, "RTSTRUCT"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = originals[0].StudyInstanceUID, generate_uid()
    ds.StructureSetROISequence, ds.ROIContourSequence = Sequence(), Sequence()
    for number, (name, boxes) in enumerate(rois.items(), start=1):
        roi = Dataset()
        roi.ROINumber, roi.ROIName = number, name
        ds.StructureSetROISequence.append(roi)
        contours = Dataset()
        contours.ReferencedROINumber = number
        contours.ContourSequence = Sequence()
        for k, (x0, y0, x1, y1) in boxes:
            z = float(originals[k].ImagePositionPatient[2])
            contour = Dataset()
            contour.ContourGeometricType = "CLOSED_PLANAR"
            image = Dataset()
            image.ReferencedSOPClassUID, image.ReferencedSOPInstanceUID = originals[k].SOPClassUID, originals[k].SOPInstanceUID
            contour.ContourImageSequence = Sequence([image])
            contour.ContourData = [x0, y0, z, x1, y0, z, x1, y1, z, x0, y1, z]
            contour.NumberOfContourPoints = 4
            contours.ContourSequence.append(contour)
        ds.ROIContourSequence.append(contours)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_rtstruct_contours_by_name_become_a_label_map(project, django_capture_on_commit_callbacks):
    originals, series = _original_ct(project, django_capture_on_commit_callbacks, depth=4, size=16)
    x0, y0 = (float(v) for v in originals[0].ImagePositionPatient[:2])
    step = float(originals[0].PixelSpacing[0])
    box = lambda c0, r0, c1, r1: (x0 + c0 * step, y0 + r0 * step, x0 + c1 * step, y0 + r1 * step)  # noqa: E731
    data = _rtstruct(originals, {"RT LUNG": [(1, box(2, 3, 5, 9)), (2, box(2, 3, 5, 9))],
                                 "LT LUNG": [(1, box(10, 3, 13, 9))], "BODY": [(1, box(0, 0, 15, 15))]})
    with pytest.raises(ImportLabelsError, match=r"ROI\(s\) 'BODY' not mapped"):
        imports.import_labels(project_id=project.pk, name="rt.dcm", data=data, user=None)
    (revision,) = imports.import_labels(project_id=project.pk, name="rt.dcm", data=data, user=None, mapping={"body": 0})
    labels = read_labels(revision)
    assert labels.shape == (4, 16, 16) and not labels[0].any() and not labels[3].any()
    assert (labels[1, 3:10, 2:6] == 1).all() and (labels[1, 3:10, 10:14] == 2).all()
    assert np.count_nonzero(labels[1] == 1) == 7 * 4 and np.count_nonzero(labels[2] == 2) == 0
    assert (labels[2, 3:10, 2:6] == 1).all()


def test_nifti_label_volume_on_the_series_grid(project, django_capture_on_commit_callbacks):
    source = add_ct(project, django_capture_on_commit_callbacks, depth=4, size=16)
    case = Case("ct", source, "train", 0)
    volume = formats.volume_of(case, formats.case_instances(case))
    data = formats.nifti_bytes(volume.labels, volume.affine)
    (revision,) = imports.import_labels(project_id=project.pk, name="labels.nii.gz", data=data, user=None,
                                        series_id=source.series_id)
    assert np.array_equal(read_labels(revision), read_labels(source)) and revision.source == "import"
    shifted = nib.Nifti1Image(np.asarray(nib.Nifti1Image.from_bytes(gzip.decompress(data)).dataobj), volume.affine.copy())
    shifted.affine[0, 3] += 5.0
    with pytest.raises(ImportLabelsError, match="affine does not put it on series"):
        imports.import_labels(project_id=project.pk, name="moved.nii", data=shifted.to_bytes(), user=None,
                              series_id=source.series_id)
    other = nib.Nifti1Image(np.zeros((16, 16, 3), np.uint8), volume.affine)
    with pytest.raises(ImportLabelsError, match=r"does not match series .* \(Columns x Rows x instances = \(16, 16, 4\)\)"):
        imports.import_labels(project_id=project.pk, name="short.nii", data=other.to_bytes(), user=None,
                              series_id=source.series_id)
    with pytest.raises(ImportLabelsError, match="needs the id of a series"):
        imports.import_labels(project_id=project.pk, name="labels.nii.gz", data=data, user=None)


def test_import_api_needs_an_export_role(project, make_member, client_for, django_capture_on_commit_callbacks):
    from django.core.files.uploadedfile import SimpleUploadedFile

    originals, series = _original_ct(project, django_capture_on_commit_callbacks)
    data = _seg_over(originals, two_lungs((len(originals), series.rows, series.columns)), ("Lung R", "Lung L"))
    annotator = client_for(make_member(project, Role.ANNOTATOR))
    denied = annotator.post("/api/exports/imports/", {"project": project.pk, "file": SimpleUploadedFile("s.dcm", data)},
                            format="multipart")
    assert denied.status_code == 403
    admin = client_for(make_member(project, Role.ADMIN))
    done = admin.post("/api/exports/imports/", {"project": project.pk, "file": SimpleUploadedFile("s.dcm", data)},
                      format="multipart")
    assert done.status_code == 201 and done.json()["revisions"][0]["source"] == "import"
    bad = admin.post("/api/exports/imports/", {"project": project.pk, "file": SimpleUploadedFile("s.dcm", data),
                                               "mapping": '{"Lung R": 7}'}, format="multipart")
    assert bad.status_code == 400 and "must be 1 (right lung), 2 (left lung) or 0" in bad.json()["detail"]
