"""Audit log of administrative actions (role and membership changes, project settings, deletions).

Every app writes through :func:`record`; nothing else creates :class:`~accounts.models.AuditEntry`
rows. Call it inside the same transaction as the change it describes, so that a change that rolls
back leaves no record and a recorded change cannot be lost.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import models

from .models import AuditEntry

logger = logging.getLogger(__name__)

#: What the log keeps of a membership (user and project as ids).
MEMBERSHIP_FIELDS = ["user", "project", "role"]


def snapshot(instance: models.Model, fields: list[str] | None = None) -> dict[str, Any]:
    """JSON-safe copy of a model instance's concrete field values (foreign keys as ids).

    Args:
        instance: the object to copy.
        fields: field names to keep (default: every concrete field).
    """
    values: dict[str, Any] = {}
    for field in instance._meta.concrete_fields:
        if fields is not None and field.name not in fields:
            continue
        value = field.value_from_object(instance)
        values[field.name] = value if isinstance(value, (str, int, float, bool, type(None), list, dict)) else str(value)
    return values


def changed(before: dict[str, Any], after: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Only the keys whose values differ, as ``(before, after)``."""
    keys = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    return {k: before.get(k) for k in keys}, {k: after.get(k) for k in keys}


def record(
    actor: Any,
    action: str,
    target: models.Model | None = None,
    *,
    target_type: str = "",
    target_id: str | int = "",
    target_repr: str = "",
    project_id: int | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    reason: str = "",
) -> AuditEntry:
    """Write one audit entry.

    Args:
        actor: the user who acted (``None`` or an anonymous user for the system itself).
        action: dotted verb, e.g. ``"membership.update"``.
        target: the object acted on; its type, id and ``str()`` are copied. Give
            ``target_type``/``target_id``/``target_repr`` instead for an object already deleted.
        project_id: the project concerned (taken from ``target.project_id`` when it has one).
        before, after: the state before and after (``None`` for creation / deletion).
        reason: free text the actor gave.
    """
    if target is not None:
        target_type = target_type or target._meta.label_lower
        target_id = target_id or target.pk
        target_repr = target_repr or str(target)
        if project_id is None:
            project_id = getattr(target, "project_id", None)
    user = actor if getattr(actor, "is_authenticated", False) else None
    entry = AuditEntry.objects.create(
        actor=user,
        actor_name=user.get_username() if user else "system",
        action=action,
        target_type=target_type,
        target_id=str(target_id),
        target_repr=target_repr[:300],
        project_id=project_id,
        before=before,
        after=after,
        reason=reason,
    )
    logger.info("audit %s by %s on %s#%s", action, entry.actor_name, target_type, target_id)
    return entry
