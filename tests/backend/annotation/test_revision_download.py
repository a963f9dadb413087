"""The single-revision download names its real query parameter (``kind``) in its error messages."""

from __future__ import annotations

import numpy as np
import pytest

from accounts.models import Role
from annotation import services
from annotation.models import RevisionSource, RevisionStatus
from imaging.models import Series
from imaging.services import ingest
from imaging.sources import SourceFile
from proposal_helpers import ct_series_files


@pytest.mark.django_db
def test_download_errors_name_the_kind_parameter(project, make_member, client_for, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):  # no model proposal
        result = ingest(project, [SourceFile(n, d) for n, d in ct_series_files(depth=4, size=16)])
    series = Series.objects.get(pk=result.series[0].pk)
    labels = np.zeros((series.num_instances, series.rows, series.columns), np.uint8)
    labels[:, 2:6, 2:6] = 1
    revision = services.create_revision(series=series, instance=None, labels=labels, source=RevisionSource.PERSON,
                                        status=RevisionStatus.SUBMITTED, spacing=(5.0, 1.0, 1.0))
    client = client_for(make_member(project, Role.ANNOTATOR))
    png = client.get(f"/api/revisions/{revision.pk}/download/", {"kind": "png"})
    assert png.status_code == 400
    assert "kind=nifti" in png.json()["detail"] and "format" not in png.json()["detail"]
    unknown = client.get(f"/api/revisions/{revision.pk}/download/", {"kind": "tiff"})
    assert unknown.status_code == 400
    assert "unknown kind 'tiff'" in unknown.json()["detail"] and "format" not in unknown.json()["detail"]
    assert client.get(f"/api/revisions/{revision.pk}/download/", {"kind": "nifti"}).status_code == 200
