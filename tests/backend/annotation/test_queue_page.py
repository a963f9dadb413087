"""The annotator's queue page: which study each task is, without a query per row."""

from __future__ import annotations

import datetime as dt

from django.test import Client

from accounts.models import Role
from imaging.models import Study
from workflow_helpers import xray_task


def test_queue_rows_name_the_study_and_do_not_query_per_row(project, make_member, django_capture_on_commit_callbacks,
                                                            django_assert_max_num_queries) -> None:
    tasks = [xray_task(project, django_capture_on_commit_callbacks, confidence=c, seed=i)[0]
             for i, c in enumerate((0.9461, 0.9523, 0.9519))]
    Study.objects.filter(series__annotation_tasks=tasks[0]).update(study_date=dt.date(2024, 5, 17))
    client = Client()
    client.force_login(make_member(project, Role.ANNOTATOR, "reader"))
    client.get("/queue/")  # warm the session and the content types
    with django_assert_max_num_queries(8):
        page = client.get("/queue/").content.decode()
    for task in tasks:
        assert f'data-task="{task.pk}"' in page
        assert task.series.study.patient.pseudonym in page
    assert "2024-05-17" in page and project.name in page
    # three decimals: the order by confidence can be seen (two decimals showed "0.95" three times)
    assert "0.946" in page and page.count("0.952") == 2
