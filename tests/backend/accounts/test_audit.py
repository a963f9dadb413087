"""The audit log service: what it copies, and that it rolls back with the change it records."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import transaction

from accounts import audit
from accounts.models import AuditEntry, Membership, Role


def test_record_copies_target_project_and_actor(project: Any, make_member: Any) -> None:
    admin = make_member(project, Role.ADMIN, "lead")
    member = make_member(project, Role.ANNOTATOR, "ann")
    membership = Membership.objects.get(user=member)
    before = audit.snapshot(membership, ["role"])
    membership.role = Role.REVIEWER
    membership.save()
    old, new = audit.changed(before, audit.snapshot(membership, ["role"]))
    entry = audit.record(admin, "membership.update", membership, before=old, after=new)
    entry.refresh_from_db()
    assert entry.actor_name == "lead"
    assert entry.target_type == "accounts.membership"
    assert entry.target_id == str(membership.pk)
    assert entry.project_id == project.pk
    assert entry.before == {"role": "annotator"} and entry.after == {"role": "reviewer"}


def test_record_survives_actor_deletion_and_system_actor(project: Any, make_member: Any) -> None:
    admin = make_member(project, Role.ADMIN, "gone")
    entry = audit.record(admin, "project.update", project, before={"a": 1}, after={"a": 2})
    admin.delete()
    entry.refresh_from_db()
    assert entry.actor is None and entry.actor_name == "gone"
    assert audit.record(None, "series.delete", target_type="imaging.series", target_id=7).actor_name == "system"


def test_record_rolls_back_with_the_change(project: Any) -> None:
    with pytest.raises(RuntimeError), transaction.atomic():
        audit.record(None, "project.update", project)
        raise RuntimeError("the change failed")
    assert not AuditEntry.objects.exists()
