"""Project administration services: projects and their settings, members and roles, assignment, leases.

Every change is written to the audit log (:func:`accounts.audit.record`) in the transaction that
makes it. Pages (:mod:`administration.views`) and commands (``manage.py create_project``,
``manage.py add_member``) stay thin over these functions.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.utils import timezone

from accounts import audit
from accounts.models import AuditEntry, Membership, Role
from accounts.permissions import MANAGE_ROLES, has_role
from annotation.models import AnnotationTask, TaskStatus
from annotation.review.models import ReviewPolicy
from annotation.review.routing import policy_for
from annotation.workflow import lease_is_active
from imaging.models import Project

from .models import ProjectModality, ProjectProfile

logger = logging.getLogger(__name__)

#: Project fields a project admin edits, beside the profile's and the review policy's.
PROJECT_FIELDS = ("name", "description", "deidentify")
PROFILE_FIELDS = ("modality",)
POLICY_FIELDS = ReviewPolicy.SETTINGS


class AdministrationError(Exception):
    """A change that cannot be made as asked; the message says what to do instead."""


class NotAllowedError(AdministrationError):
    """The actor's role does not allow the change."""


class ConfirmationRequired(AdministrationError):
    """A change with consequences (switching de-identification) needs an explicit confirmation."""


def profile_for(project: Project) -> ProjectProfile:
    """The project's profile, created with the defaults on first use."""
    profile, _ = ProjectProfile.objects.get_or_create(project=project)
    return profile


def check_admin(actor: Any, project: Project) -> None:
    """Raise :class:`NotAllowedError` unless ``actor`` is an admin of ``project``."""
    if not has_role(actor, project.pk, MANAGE_ROLES):
        raise NotAllowedError("Only the project's admins can change its settings, members and tasks.")


def managed_projects(user: Any) -> QuerySet:
    """Projects the user administers (site staff: all of them)."""
    if getattr(user, "is_staff", False):
        return Project.objects.all()
    return Project.objects.filter(memberships__user=user, memberships__role=Role.ADMIN)


def settings_of(project: Project) -> dict[str, Any]:
    """Every editable setting of a project, flat: project fields, profile, review policy."""
    values = audit.snapshot(project, list(PROJECT_FIELDS))
    values.update(audit.snapshot(profile_for(project), list(PROFILE_FIELDS)))
    values.update(audit.snapshot(policy_for(project.pk), list(POLICY_FIELDS)))
    return values


def _apply(instance: Any, fields: Iterable[str], changes: dict[str, Any]) -> None:
    touched = [f for f in fields if f in changes]
    if not touched:
        return
    for name in touched:
        setattr(instance, name, changes[name])
    try:
        instance.full_clean(validate_unique=True, exclude=[f.name for f in instance._meta.fields if f.name not in touched])
    except DjangoValidationError as exc:
        raise AdministrationError("; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())) from exc
    instance.save()


@transaction.atomic
def create_project(actor: Any, name: str, *, description: str = "", modality: str = ProjectModality.MIXED,
                   deidentify: bool = True, admin: Any = None, **policy: Any) -> Project:
    """Create a project (site staff, or ``actor=None`` for a command run by the site operator).

    ``admin`` (default: the actor) becomes its first project admin; ``policy`` sets review settings.

    Raises:
        NotAllowedError: the actor is not site staff. AdministrationError: bad or taken name, bad setting.
    """
    if actor is not None and not getattr(actor, "is_staff", False):
        raise NotAllowedError("Only site staff can create projects.")
    if Project.objects.filter(name=name).exists():
        raise AdministrationError(f"A project named {name!r} exists already; choose another name.")
    project = Project(name=name, description=description, deidentify=deidentify)
    try:
        project.full_clean()
    except DjangoValidationError as exc:
        raise AdministrationError("; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())) from exc
    project.save()
    _apply(profile_for(project), PROFILE_FIELDS, {"modality": modality})
    _apply(policy_for(project.pk), POLICY_FIELDS, policy)
    audit.record(actor, "project.create", project, project_id=project.pk, after=settings_of(project))
    first_admin = admin if admin is not None else actor
    if first_admin is not None:
        set_member(None, project, first_admin, Role.ADMIN, audited_by=actor)
    logger.info("project %s created by %s", project, actor or "the operator")
    return project


@transaction.atomic
def update_project(actor: Any, project: Project, changes: dict[str, Any], confirm_deidentify: bool = False) -> dict[str, Any]:
    """Change a project's settings; returns ``{setting: (before, after)}`` of what changed.

    Raises:
        NotAllowedError: the actor is not a project admin.
        ConfirmationRequired: de-identification would switch without ``confirm_deidentify``.
        AdministrationError: a bad value.
    """
    check_admin(actor, project)
    project = Project.objects.select_for_update().get(pk=project.pk)
    before = settings_of(project)
    unknown = set(changes) - set(before)
    if unknown:
        raise AdministrationError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    if "deidentify" in changes and bool(changes["deidentify"]) != project.deidentify and not confirm_deidentify:
        state = "on" if changes["deidentify"] else "off"
        raise ConfirmationRequired(
            f"Switching de-identification {state} changes how every later upload is stored; confirm to go on.")
    _apply(project, PROJECT_FIELDS, changes)
    _apply(profile_for(project), PROFILE_FIELDS, changes)
    _apply(policy_for(project.pk), POLICY_FIELDS, changes)
    old, new = audit.changed(before, settings_of(project))
    if new:
        audit.record(actor, "project.update", project, project_id=project.pk, before=old, after=new)
    return {k: (old[k], new[k]) for k in new}


def _user(user_or_name: Any) -> Any:
    if not isinstance(user_or_name, str):
        return user_or_name
    user = get_user_model().objects.filter(username=user_or_name).first()
    if user is None:
        raise AdministrationError(f"There is no user named {user_or_name!r}; create the account first.")
    return user


@transaction.atomic
def set_member(actor: Any, project: Project, user_or_name: Any, role: str, audited_by: Any = None) -> Membership:
    """Add a member with a role, or change their role (project admins; ``actor=None`` for the operator).

    Raises:
        NotAllowedError, AdministrationError: unknown user or role, or the last admin demoted.
    """
    if actor is not None:
        check_admin(actor, project)
    if role not in Role.values:
        raise AdministrationError(f"unknown role {role!r}: use one of {', '.join(Role.values)}")
    user = _user(user_or_name)
    membership = Membership.objects.select_for_update().filter(project=project, user=user).first()
    who = actor if actor is not None else audited_by
    if membership is None:
        membership = Membership.objects.create(project=project, user=user, role=role)
        audit.record(who, "membership.create", membership, project_id=project.pk,
                     after={"user": user.get_username(), "role": role})
        return membership
    if membership.role != role:
        _keep_an_admin(project, membership, role)
        old = membership.role
        membership.role = role
        membership.save(update_fields=["role"])
        audit.record(who, "membership.update", membership, project_id=project.pk,
                     before={"user": user.get_username(), "role": old}, after={"user": user.get_username(), "role": role})
    return membership


def _keep_an_admin(project: Project, membership: Membership, new_role: str | None) -> None:
    if membership.role == Role.ADMIN and new_role != Role.ADMIN and \
            not Membership.objects.filter(project=project, role=Role.ADMIN).exclude(pk=membership.pk).exists():
        raise AdministrationError("A project needs at least one admin; make someone else admin first.")


@transaction.atomic
def remove_member(actor: Any, project: Project, user_id: int) -> None:
    """Remove a member (their tasks' assignments and claims are released).

    Raises:
        NotAllowedError, AdministrationError: not a member, or the last admin.
    """
    check_admin(actor, project)
    membership = Membership.objects.select_for_update().filter(project=project, user_id=user_id).select_related("user").first()
    if membership is None:
        raise AdministrationError("That user is not a member of this project.")
    _keep_an_admin(project, membership, None)
    snapshot = {"user": membership.user.get_username(), "role": membership.role}
    target = {"target_type": "accounts.membership", "target_id": membership.pk, "target_repr": str(membership)}
    membership.delete()
    AnnotationTask.objects.filter(project=project, assignee_id=user_id).update(assignee=None)
    AnnotationTask.objects.filter(project=project, claimed_by_id=user_id).update(claimed_by=None, lease_expires_at=None)
    audit.record(actor, "membership.delete", None, project_id=project.pk, before=snapshot, **target)


@transaction.atomic
def assign_tasks(actor: Any, project: Project, task_ids: Iterable[int], assignee: Any, priority: int = 0) -> int:
    """Assign open tasks of the project to an annotator (``None``: unassign) with a priority; returns how many.

    Raises:
        NotAllowedError, AdministrationError: the assignee may not annotate in the project, or a task is
        not an open task of the project.
    """
    from annotation.workflow import ANNOTATE_ROLES

    check_admin(actor, project)
    ids = sorted({int(i) for i in task_ids})
    if not ids:
        raise AdministrationError("Choose at least one task.")
    if assignee is not None and not has_role(assignee, project.pk, ANNOTATE_ROLES):
        raise AdministrationError(f"{assignee} cannot annotate in this project; give them a role first.")
    assignable = [TaskStatus.OPEN, TaskStatus.IN_PROGRESS, TaskStatus.RETURNED]
    found = AnnotationTask.objects.filter(project=project, pk__in=ids, status__in=assignable)
    if found.count() != len(ids):
        raise AdministrationError("Only open tasks of this project can be assigned; reload the list.")
    count = found.update(assignee=assignee, priority=priority, updated_at=timezone.now())
    audit.record(actor, "task.assign", None, target_type="annotation.annotationtask", target_id=",".join(map(str, ids))[:64],
                 target_repr=f"{count} task(s)", project_id=project.pk,
                 after={"tasks": ids, "assignee": assignee.get_username() if assignee else None, "priority": priority})
    return count


@dataclass
class Lease:
    """A task somebody holds (or held: an expired lease is stale)."""

    task: AnnotationTask
    holder: str
    expires_at: Any
    active: bool


def leases(project: Project) -> list[Lease]:
    """Tasks of the project with a claim, live or stale, newest claim first."""
    now = timezone.now()
    tasks = (AnnotationTask.objects.filter(project=project, claimed_by__isnull=False)
             .select_related("claimed_by").order_by("-claimed_at"))
    return [Lease(t, t.claimed_by.get_username(), t.lease_expires_at, lease_is_active(t, now)) for t in tasks]


@transaction.atomic
def release_lease(actor: Any, project: Project, task_id: int) -> None:
    """Free a task's claim (a stale or abandoned one): it is open to everybody again.

    Raises:
        NotAllowedError, AdministrationError: no such claimed task in the project.
    """
    check_admin(actor, project)
    task = AnnotationTask.objects.select_for_update().filter(project=project, pk=task_id, claimed_by__isnull=False).first()
    if task is None:
        raise AdministrationError("That task is not claimed (any more).")
    before = {"claimed_by": task.claimed_by.get_username(), "lease_expires_at": task.lease_expires_at.isoformat()
              if task.lease_expires_at else None}
    task.claimed_by, task.lease_expires_at = None, None
    if task.status == TaskStatus.IN_PROGRESS:
        task.status = TaskStatus.OPEN
    task.save(update_fields=["claimed_by", "lease_expires_at", "status", "updated_at"])
    audit.record(actor, "task.release_lease", task, project_id=project.pk, before=before, after={"claimed_by": None})


def audit_log(project: Project, limit: int = 100) -> QuerySet:
    """The project's audit entries, newest first."""
    return AuditEntry.objects.filter(project_id=project.pk)[:limit]


def create_user(username: str, password: str | None, *, email: str = "", staff: bool = False) -> Any:
    """Create an account (the operator's command); no password = cannot log in until one is set.

    Raises:
        AdministrationError: the username is taken.
    """
    model = get_user_model()
    try:
        with transaction.atomic():
            user = model.objects.create_user(username, email=email, password=password, is_staff=staff)
    except IntegrityError as exc:
        raise AdministrationError(f"A user named {username!r} exists already.") from exc
    audit.record(None, "user.create", user, after={"username": username, "staff": staff})
    return user
