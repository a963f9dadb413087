"""Longitudinal lung measures: per study date, volumes from the curated (else latest) mask, mean HU and
emphysema index from the stored CT pixels, change since the first study; API permissions."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest

from accounts.models import Role
from annotation import services
from annotation.models import RevisionSource, RevisionStatus
from backend_factories import make_dicom
from imaging.models import Patient, Series
from imaging.services import ingest
from imaging.sources import SourceFile
from quality import longitudinal

pytestmark = pytest.mark.django_db

SPACING = (2.5, 0.7, 0.7)  # mm per (D, H, W) axis: 1.225 mm³ per voxel


def ct_dicom(study: str, z: float, hu: np.ndarray) -> bytes:
    """An 8×8 CT slice of the test patient with given HU values (intercept -1024, slope 1)."""
    ds = pydicom.dcmread(io.BytesIO(make_dicom(study_uid=study, series_uid=f"{study}.1", z=z)))
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    ds.PixelData = (hu + 1024).astype("<i2").tobytes()
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def ct_study(project, study: str, date: str, hu: np.ndarray) -> Series:
    files = [SourceFile(f"{study}-{z}.dcm", ct_dicom(study, float(z) * 2.5, hu[z])) for z in range(hu.shape[0])]
    result = ingest(project, files)
    series = Series.objects.get(pk=result.series[0].pk)
    series.study.study_date = date
    series.study.save(update_fields=["study_date"])
    return series


def mask(depth: int, right: int, left: int) -> np.ndarray:
    """``(D, 8, 8)``: ``right`` voxels of label 1 and ``left`` of label 2 on each slice (row-major from the top)."""
    labels = np.zeros((depth, 8, 8), np.uint8)
    flat = labels.reshape(depth, -1)
    flat[:, :right] = 1
    flat[:, 32:32 + left] = 2
    return labels


def test_volumes_hu_emphysema_and_change_per_study(project, make_member, client_for):
    hu = np.full((3, 8, 8), -800.0)
    hu[:, 0, :4] = -980.0  # 4 voxels per slice below -950 HU inside the right lung
    first = ct_study(project, "1.5.1", "2024-01-10", hu)
    second = ct_study(project, "1.5.2", "2025-01-10", hu)
    assert first.study.patient_id == second.study.patient_id
    patient = Patient.objects.get(pk=first.study.patient_id)
    common = {"source": RevisionSource.PERSON, "spacing": SPACING, "instance": None}
    # first study: a proposal, then a curated revision (10 right + 8 left voxels per slice)
    services.create_revision(series=first, labels=mask(3, 12, 12), status=RevisionStatus.PROPOSED,
                             **{**common, "source": RevisionSource.MODEL})
    services.create_revision(series=first, labels=mask(3, 10, 8), status=RevisionStatus.APPROVED, **common)
    # a later, not curated revision of the first study does not replace the curated one
    services.create_revision(series=first, labels=mask(3, 2, 2), status=RevisionStatus.SUBMITTED, **common)
    # second study: no curated mask: its latest (a proposal) counts; 12 + 12 voxels per slice
    services.create_revision(series=second, labels=mask(3, 12, 12), status=RevisionStatus.PROPOSED,
                             **{**common, "source": RevisionSource.MODEL})
    voxel_ml = 2.5 * 0.7 * 0.7 / 1000.0
    (figure,) = longitudinal.figures(patient)
    assert figure.name == "lungs_ct"
    rows = {r[0]: r for r in figure.rows}
    one, two = rows["2024-01-10"], rows["2025-01-10"]
    assert one[3] == "curated" and two[3] == "latest"
    assert one[4:7] == [round(30 * voxel_ml, 2), round(24 * voxel_ml, 2), round(54 * voxel_ml, 2)]
    assert two[4:7] == [round(36 * voxel_ml, 2), round(36 * voxel_ml, 2), round(72 * voxel_ml, 2)]
    assert one[7:9] == [0.0, 0.0]
    assert two[7] == round(72 * voxel_ml - 54 * voxel_ml, 2) and two[8] == round((72 - 54) * 100 / 54, 2)
    # mean HU and emphysema index over the lung voxels: 4 of the 10 right voxels per slice are -980
    assert one[9] == round((12 * -980 + 42 * -800) / 54, 1) and one[10] == round(12 * 100 / 54, 2)
    assert two[9] == round((12 * -980 + 60 * -800) / 72, 1) and two[10] == round(12 * 100 / 72, 2)

    member = client_for(make_member(project, Role.ANNOTATOR, "ann"))
    body = member.get(f"/api/quality/patients/{patient.pk}/lungs/").json()
    assert body["figures"][0]["rows"] == figure.rows
    csv = member.get(f"/api/quality/patients/{patient.pk}/lungs/lungs_ct.csv").content.decode().splitlines()
    assert csv[0].startswith("study_date,study,revision,mask,right_mL") and len(csv) == 3
    assert member.get(f"/api/quality/patients/{patient.pk}/lungs/lungs_cxr.csv").status_code == 404


def test_other_projects_patients_are_not_found(project, other_project, make_member, client_for):
    patient = Patient.objects.create(project=project, pseudonym="P1")
    stranger = client_for(make_member(other_project, Role.ADMIN, "stranger"))
    assert stranger.get(f"/api/quality/patients/{patient.pk}/lungs/").status_code == 404
    assert stranger.get("/api/quality/patients/999999/lungs/").status_code == 404
    assert client_for(None).get(f"/api/quality/patients/{patient.pk}/lungs/").status_code in (401, 403)
    assert client_for(make_member(project, Role.REVIEWER, "rev")).get(
        f"/api/quality/patients/{patient.pk}/lungs/").json()["figures"] == []


def test_lung_page_for_members_only(project, other_project, make_member):
    from django.test import Client

    patient = Patient.objects.create(project=project, pseudonym="P1")
    member, stranger = Client(), Client()
    member.force_login(make_member(project, Role.REVIEWER, "rev"))
    stranger.force_login(make_member(other_project, Role.ADMIN, "stranger"))
    page = member.get(f"/patients/{patient.pk}/lungs/")
    assert page.status_code in (200, 503)  # 503 only where the viewer bundle is not built
    if page.status_code == 200:
        assert b"mountFigures" in page.content and f"/api/quality/patients/{patient.pk}/lungs/".encode() in page.content
    assert stranger.get(f"/patients/{patient.pk}/lungs/").status_code == 404


def test_xray_projected_area_in_square_centimetres(project):
    from target_factories import make_target

    task, proposal = make_target(project, 1, None, 0.9)  # 200 + 200 lung pixels of 4 × 4 mm
    (figure,) = longitudinal.figures(proposal.series.study.patient)
    assert figure.name == "lungs_cxr" and figure.columns[4:7] == ["right_cm2", "left_cm2", "total_cm2"]
    assert figure.rows[0][3:9] == ["latest", 32.0, 32.0, 64.0, 0.0, 0.0]
